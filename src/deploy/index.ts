/** `bulwark/deploy`: blue-green and canary deployments with automatic rollback. */
export { DeployError, DeployErrorCodes } from './errors.js';
export { SlotMetrics } from './metrics.js';
export {
  EmbeddedRouter,
  EmbeddedRouterClient,
  type EmbeddedRouterOptions,
  startEmbeddedRouter,
} from './routers/embedded.js';
export { HaproxyRouter, type HaproxyRouterOptions, haproxyCommand, parseShowStat } from './routers/haproxy.js';
export { assertSafeBackends, assertSafeToStop, assertSafeWeights, changeOrder } from './safety.js';
export * from './types.js';
