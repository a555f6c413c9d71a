import type { Aggregate, EndpointPoint, TimelinePoint } from './aggregate.js';
import { type MetricType, type MetricView, viewStat } from './metrics/store.js';
import type { ErrorRow } from './recorder.js';
import type { ThresholdResult } from './thresholds.js';

export interface LatencyMs {
  min: number;
  avg: number;
  p50: number;
  p90: number;
  p95: number;
  p99: number;
  max: number;
}

export interface EndpointSummary {
  name: string;
  method: string;
  requests: number;
  failures: number;
  errorRate: number;
  rps: number;
  latencyMs: LatencyMs;
}

/** A worker (remote or thread) that died or disconnected mid-run; its metrics up to then are kept. */
export interface WorkerLoss {
  /** The remote worker's URL, or "worker thread N". */
  worker: string;
  /** Seconds into the run when the loss was noticed. */
  atSeconds: number;
  error: string;
}

/** Where and how the run was made (the report's "Run" section). */
export interface RunDetails {
  /** The base URL (credentials removed), if any. */
  host?: string;
  scenarioFile?: string;
  /** ISO 8601, when the load started. */
  startedAt: string;
  bulwarkVersion: string;
  /** The command line, with --env values and URL credentials masked. */
  commandLine?: string;
  /** The load host's name. */
  machine: string;
}

/** `--summary-json` (schema version 1, ARCHITECTURE.md). Fields may be added, never changed. */
export interface Summary {
  version: 1;
  durationSeconds: number;
  totals: { requests: number; failures: number; errorRate: number; rps: number; latencyMs: LatencyMs };
  endpoints: EndpointSummary[];
  checks: Array<{ name: string; passes: number; fails: number }>;
  metrics: Record<string, Record<string, number | string>>;
  thresholds: ThresholdResult[];
  droppedIterations: number;
  /** Requests abandoned when their VU's grace period ran out (ramp-down, end of run): not timed, not failures. */
  interruptedRequests: number;
  iterations: number;
  vusMax: number;
  errors: ErrorRow[];
  /** True when the run was stopped early (Ctrl-C, abortOnFail, a lost worker with --on-worker-loss abort). */
  aborted: boolean;
  workerLosses: WorkerLoss[];
  timeline: TimelinePoint[];
  /** Per endpoint ("GET /api/products"): requests/s and latency percentiles for each second it had requests. */
  endpointTimeline: Record<string, EndpointPoint[]>;
  run?: RunDetails;
}

const round = (n: number, digits = 3) => (Number.isFinite(n) ? Math.round(n * 10 ** digits) / 10 ** digits : 0);

function latency(view: MetricView | undefined): LatencyMs {
  if (!view || view.count === 0) return { min: 0, avg: 0, p50: 0, p90: 0, p95: 0, p99: 0, max: 0 };
  const s = (stat: string) => round(viewStat(view, stat, 0));
  return {
    min: s('min'),
    avg: s('avg'),
    p50: s('med'),
    p90: s('p(90)'),
    p95: s('p(95)'),
    p99: s('p(99)'),
    max: s('max'),
  };
}

function metricSummary(type: MetricType, view: MetricView, seconds: number): Record<string, number | string> {
  const s = (stat: string) => round(viewStat(view, stat, seconds));
  switch (type) {
    case 'trend':
      return {
        type,
        count: view.count,
        avg: s('avg'),
        min: s('min'),
        med: s('med'),
        p90: s('p(90)'),
        p95: s('p(95)'),
        p99: s('p(99)'),
        max: s('max'),
      };
    case 'counter':
      return { type, count: round(view.sum), rate: s('rate') };
    case 'rate':
      return { type, rate: s('rate'), passes: view.passes, fails: view.fails };
    case 'gauge':
      return { type, value: round(view.value), min: s('min'), max: s('max') };
  }
}

const HTTP_METRICS = new Set(['http_reqs', 'http_req_duration', 'http_req_failed', 'checks', 'interrupted_requests']);

export function buildSummary(
  agg: Aggregate,
  durationSeconds: number,
  thresholds: ThresholdResult[],
  aborted: boolean,
  workerLosses: WorkerLoss[] = [],
  run?: RunDetails,
): Summary {
  const store = agg.store;
  const seconds = Math.max(durationSeconds, 1e-9);
  // Endpoints: group http_req_duration series by (name, method), merging statuses and user types.
  const groups = new Map<string, { name: string; method: string }>();
  for (const s of store.series.values()) {
    if (s.metric !== 'http_req_duration') continue;
    const key = `${s.tags.name}\u0000${s.tags.method}`;
    if (!groups.has(key)) groups.set(key, { name: s.tags.name ?? '', method: s.tags.method ?? '' });
  }
  const endpoints: EndpointSummary[] = [...groups.values()]
    .map(({ name, method }) => {
      const failed = store.view('http_req_failed', { name, method });
      const requests = failed ? failed.passes + failed.fails : 0;
      const failures = failed?.passes ?? 0;
      return {
        name,
        method,
        requests,
        failures,
        errorRate: round(requests ? failures / requests : 0, 5),
        rps: round(requests / seconds, 2),
        latencyMs: latency(store.view('http_req_duration', { name, method })),
      };
    })
    .sort((a, b) => b.requests - a.requests || a.name.localeCompare(b.name));
  const failedAll = store.view('http_req_failed');
  const requests = failedAll ? failedAll.passes + failedAll.fails : 0;
  const failures = failedAll?.passes ?? 0;

  const checkNames = new Set<string>();
  for (const s of store.series.values()) if (s.metric === 'checks' && s.tags.check) checkNames.add(s.tags.check);
  const checks = [...checkNames].map((name) => {
    const v = store.view('checks', { check: name })!;
    return { name, passes: v.passes, fails: v.fails };
  });

  const metrics: Summary['metrics'] = {};
  for (const [name, type] of store.metrics()) {
    if (HTTP_METRICS.has(name)) continue;
    const v = store.view(name);
    if (v) metrics[name] = metricSummary(type, v, seconds);
  }
  agg.closeBuckets();
  return {
    version: 1,
    durationSeconds: round(durationSeconds, 2),
    totals: {
      requests,
      failures,
      errorRate: round(requests ? failures / requests : 0, 5),
      rps: round(requests / seconds, 2),
      latencyMs: latency(store.view('http_req_duration')),
    },
    endpoints,
    checks,
    metrics,
    thresholds,
    droppedIterations: Math.round(store.view('dropped_iterations')?.sum ?? 0),
    interruptedRequests: Math.round(store.view('interrupted_requests')?.sum ?? 0),
    iterations: Math.round(store.view('iterations')?.sum ?? 0),
    vusMax: agg.maxVus,
    errors: [...agg.errors.values()].sort((a, b) => b.count - a.count),
    aborted,
    workerLosses,
    timeline: agg.timeline,
    endpointTimeline: Object.fromEntries(agg.endpointTimeline),
    run,
  };
}
