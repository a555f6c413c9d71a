import { parseDuration } from '../config/duration.js';
import { UsageError } from '../lib/errors.js';
import type { Thresholds } from './api.js';
import { type MetricsStore, type MetricType, viewStat } from './metrics/store.js';

/*
 * Threshold grammar (k6's, written down as k6 does in metrics/thresholds_parser.go):
 *   key        := metric [ '{' tag ':' value { ',' tag ':' value } '}' ]
 *   expression := aggregation operator number
 *   aggregation:= 'avg' | 'min' | 'max' | 'med' | 'count' | 'rate' | 'value' | 'p(' number ')'
 *   operator   := '<' | '<=' | '>' | '>=' | '==' | '===' | '!='
 * Which aggregations a metric supports depends on its type (see ALLOWED).
 */

export interface Threshold {
  /** The key as written: 'http_req_duration{name:/api/orders}'. */
  key: string;
  metric: string;
  filter: Record<string, string>;
  expression: string;
  stat: string;
  op: string;
  limit: number;
  abortOnFail: boolean;
  delayAbortEvalMs: number;
}

export interface ThresholdResult {
  metric: string;
  expression: string;
  ok: boolean;
  value: number;
}

const ALLOWED: Record<MetricType, RegExp> = {
  counter: /^(count|rate)$/,
  rate: /^rate$/,
  trend: /^(avg|min|max|med|count|p\(\d+(\.\d+)?\))$/,
  gauge: /^(value|min|max)$/,
};

/** Built-in metrics and their types. */
export const BUILTIN_METRICS: Record<string, MetricType> = {
  http_reqs: 'counter',
  http_req_duration: 'trend',
  http_req_failed: 'rate',
  iterations: 'counter',
  iteration_duration: 'trend',
  vus: 'gauge',
  data_sent: 'counter',
  data_received: 'counter',
  checks: 'rate',
  dropped_iterations: 'counter',
  interrupted_requests: 'counter',
};

const KEY_RE = /^([A-Za-z_][A-Za-z0-9_.-]*)(?:\{([^}]*)\})?$/;
const EXPR_RE =
  /^\s*(avg|min|max|med|count|rate|value|p\(\s*\d+(?:\.\d+)?\s*\))\s*(<=|>=|===|==|!=|<|>)\s*(-?\d+(?:\.\d+)?(?:e[+-]?\d+)?)\s*$/i;

function bad(where: string, message: string): never {
  throw new UsageError(`${where}: ${message}`, 'BULWARK_E_THRESHOLD');
}

/**
 * Parse and validate every threshold before any load: an expression that does not parse, a metric
 * that does not exist, or an aggregation its type does not have is an error naming the key.
 */
export function parseThresholds(
  input: Thresholds | undefined,
  metricTypes: Map<string, MetricType>,
  where = 'thresholds',
): Threshold[] {
  if (input === undefined) return [];
  if (typeof input !== 'object' || input === null || Array.isArray(input))
    bad(where, 'must be an object of metric -> [expressions]');
  const out: Threshold[] = [];
  for (const [key, raw] of Object.entries(input)) {
    const at = `${where}["${key}"]`;
    const m = KEY_RE.exec(key.trim());
    if (!m) bad(at, 'not a metric name with an optional {tag:value} filter');
    const metric = m[1]!;
    const type = metricTypes.get(metric) ?? BUILTIN_METRICS[metric];
    if (!type)
      bad(
        at,
        `unknown metric "${metric}" (built-ins: ${Object.keys(BUILTIN_METRICS).join(', ')}; custom metrics must be declared in the scenario)`,
      );
    const filter: Record<string, string> = {};
    if (m[2] !== undefined) {
      for (const part of m[2].split(',')) {
        const colon = part.indexOf(':');
        if (colon <= 0) bad(at, `tag filter "${part}" must be tag:value`);
        filter[part.slice(0, colon).trim()] = part.slice(colon + 1).trim();
      }
    }
    const list = Array.isArray(raw) ? raw : [raw];
    if (list.length === 0) bad(at, 'empty list of expressions');
    list.forEach((item, i) => {
      const itemAt = `${at}[${i}]`;
      const obj = typeof item === 'string' ? { threshold: item } : item;
      if (!obj || typeof obj.threshold !== 'string')
        bad(itemAt, 'must be a string like "p(95)<500" or { threshold, abortOnFail }');
      for (const k of Object.keys(obj))
        if (!['threshold', 'abortOnFail', 'delayAbortEval'].includes(k)) bad(itemAt, `unknown option "${k}"`);
      const e = EXPR_RE.exec(obj.threshold);
      if (!e) bad(itemAt, `cannot parse "${obj.threshold}" (expected e.g. "p(95)<500", "rate<0.01", "avg<=200")`);
      const stat = e[1]!.replace(/\s+/g, '').toLowerCase();
      if (!ALLOWED[type].test(stat)) bad(itemAt, `"${stat}" is not available for ${metric} (a ${type})`);
      const pm = /^p\((.*)\)$/.exec(stat);
      if (pm && !(Number(pm[1]) >= 0 && Number(pm[1]) <= 100)) bad(itemAt, 'percentile must be 0..100');
      out.push({
        key,
        metric,
        filter,
        expression: obj.threshold.trim(),
        stat,
        op: e[2]!,
        limit: Number(e[3]),
        abortOnFail: Boolean(obj.abortOnFail),
        delayAbortEvalMs:
          obj.delayAbortEval === undefined ? 0 : parseDuration(obj.delayAbortEval, `${itemAt}.delayAbortEval`),
      });
    });
  }
  return out;
}

function compare(value: number, op: string, limit: number): boolean {
  switch (op) {
    case '<':
      return value < limit;
    case '<=':
      return value <= limit;
    case '>':
      return value > limit;
    case '>=':
      return value >= limit;
    case '==':
    case '===':
      return value === limit;
    case '!=':
      return value !== limit;
    default:
      return false;
  }
}

/**
 * Evaluate thresholds on the run's aggregate. A metric with no samples yet evaluates its
 * aggregation as 0 (as k6), so "count>0" fails on an empty run and "p(99)<200" passes.
 */
export function evaluateThresholds(
  thresholds: Threshold[],
  store: MetricsStore,
  durationSeconds: number,
): ThresholdResult[] {
  return thresholds.map((t) => {
    const view = store.view(t.metric, t.filter);
    const value = view ? viewStat(view, t.stat, durationSeconds) : 0;
    return { metric: t.key, expression: t.expression, ok: compare(value, t.op, t.limit), value };
  });
}

/** Whether a metric (with its tag filter) has recorded anything yet. */
export function hasSamples(t: Threshold, store: MetricsStore): boolean {
  const view = store.view(t.metric, t.filter);
  return Boolean(view && view.count + view.passes + view.fails > 0);
}
