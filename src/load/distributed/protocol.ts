import type { EngineOptions } from '../engine.js';

/**
 * Coordinator <-> worker protocol over HTTP on a trusted network (or a tunnel):
 *   POST /run   body: RunRequest (JSON)      -> 200, NDJSON stream of WorkerEvent, ending with done|error
 *   POST /stop                                -> 202: graceful stop of the current run
 *   GET  /health                              -> 200 { busy }
 * Every request carries `authorization: Bearer <token>` when the worker has a token
 * (BULWARK_WORKER_TOKEN in both environments; never on a command line). Metrics travel as the same
 * mergeable deltas worker threads send (histograms, never percentiles).
 */
export type RunRequest = Omit<EngineOptions, 'scenario' | 'onFlush' | 'scenarioFile'> & {
  /** The bundled scenario (ESM); `bulwark` imports resolve to the worker's own install. */
  code: string;
  /** The scenario's file name, for error locations. */
  scenarioName: string;
  /** The coordinator's Bulwark version: a worker of another version refuses the run (HTTP 409). */
  bulwarkVersion?: string;
};

export type WorkerEvent =
  | { type: 'flush'; message: import('../recorder.js').FlushMessage }
  | { type: 'done' }
  | { type: 'error'; message: string };

export const PROTOCOL_VERSION = 1;
