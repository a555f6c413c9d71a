/** Public API of load testing: scenario authoring (`bulwark`) and running (`bulwark/load`). */
export {
  between,
  type CheckFn,
  type ConstantArrivalRateLoad,
  type ConstantVusLoad,
  constant,
  type LoadOptions,
  none,
  type RampingArrivalRateLoad,
  type RampingVusLoad,
  type ScenarioDefinition,
  type Stage,
  scenario,
  type Task,
  type Thresholds,
  type UserDefinition,
  type UserType,
  user,
  type VU,
  type Wait,
} from './api.js';
export { data } from './data.js';
export type { BatchRequest, HttpClient, HttpResponse, RequestOptions, Timings } from './http/types.js';
export { Counter, Gauge, Rate, Trend } from './metrics/custom.js';
export { uplotAssets } from './reporters/html.js';
export { formatSummary, liveView } from './reporters/terminal.js';
export { type LoadResult, type Progress, type RunLoadOptions, runLoad } from './runner.js';
export type { EndpointSummary, Summary } from './summary.js';

/** Environment of the run (process.env plus --env flags), for code outside a VU. */
export const env: Readonly<Record<string, string | undefined>> = process.env;
