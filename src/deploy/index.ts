/** `bulwark/deploy`: blue-green and canary deployments with automatic rollback. */
export {
  type AnalysisRules,
  type CheckResult,
  formatJudgement,
  type Judgement,
  judge,
  type MetricsSource,
  prometheusSource,
  promQuery,
  routerSource,
  type Verdict,
} from './analysis.js';
export { type CheckOutcome, type HttpCheckSpec, runHttpChecks } from './checks.js';
export { DeployError, DeployErrorCodes } from './errors.js';
export {
  appConfigOf,
  deployerFromConfig,
  planFor,
  providerFor,
  routerFor,
  storeFor,
} from './from-config.js';
export { SlotMetrics } from './metrics.js';
export { Deployer, type DeployerOptions, type DeployPlan, type LoadHook } from './orchestrator.js';
export { EcsProvider, type EcsProviderOptions } from './providers/ecs.js';
export { ProcessProvider, type ProcessProviderOptions } from './providers/process.js';
export { AlbRouter, type AlbRouterOptions } from './routers/alb.js';
export {
  EmbeddedRouter,
  EmbeddedRouterClient,
  type EmbeddedRouterOptions,
  startEmbeddedRouter,
} from './routers/embedded.js';
export {
  HAPROXY_LOG_FORMAT,
  HaproxyRouter,
  type HaproxyRouterOptions,
  haproxyCommand,
  parseHaproxyLogLine,
  parseShowStat,
} from './routers/haproxy.js';
export { assertSafeBackends, assertSafeToStop, assertSafeWeights, changeOrder } from './safety.js';
export {
  type AppState,
  type ControlAction,
  type DeploymentRecord,
  type DeploymentStatus,
  StateStore,
} from './state.js';
export * from './types.js';
export { type DeployEventName, notifyWebhooks, type Webhook } from './webhooks.js';
