import { request } from 'undici';
import { DeployError } from './errors.js';
import type { Router, Slot, SlotWindow } from './types.js';

export type Verdict = 'pass' | 'fail' | 'inconclusive';

export interface AnalysisRules {
  /** Minimum samples per judgement: fewer requests than this in its window never pass (inconclusive, unless the errors are decisive). */
  minRequests: number;
  maxErrorRate: number;
  maxP99Ms?: number;
  maxP95Ms?: number;
  vsStable?: { maxErrorRateIncrease: number; maxP99Ratio: number; p99SlackMs: number };
}

export interface CheckResult {
  name: string;
  /**
   * `unavailable`: no comparison possible (the stable slot saw too little traffic); neither passes nor fails.
   * `unmeasured`: a latency threshold is set but the source has no such percentile: the judgement is
   * inconclusive, never a pass.
   */
  outcome: 'ok' | 'fail' | 'unavailable' | 'unmeasured' | 'insufficient';
  observed?: number;
  limit?: number;
  detail: string;
}

export interface Judgement {
  verdict: Verdict;
  /**
   * A fail the orchestrator acts on at once, whatever `failureLimit` says: the error count is so far
   * above the limit that chance cannot explain it (binomial tail below DECISIVE_P).
   */
  decisive?: boolean;
  /** One sentence saying what was decided and why (printed and stored). */
  reason: string;
  evidence: { candidate: SlotWindow; stable?: SlotWindow; checks: CheckResult[] };
}

const pct = (x: number) => `${(x * 100).toFixed(2)}%`;
const ms = (x: number) => `${x.toFixed(1)} ms`;

/**
 * Error counts are judged as evidence, not as point estimates (a single error in 60 requests is 1.7 %
 * but says little about a 1 % limit): over the limit beyond chance (binomial tail below SIGNIFICANT_P)
 * fails the judgement; far beyond (below DECISIVE_P) fails it decisively, on any sample size.
 */
export const SIGNIFICANT_P = 0.05;
export const DECISIVE_P = 0.001;

/**
 * P(X >= k) for X ~ Binomial(n, p): how likely `k` or more errors in `n` requests are when the true
 * error rate is `p`. Summed from k upwards in log space (no cancellation for tiny tails).
 */
export function binomialTail(n: number, k: number, p: number): number {
  if (k <= 0) return 1;
  if (k > n) return 0;
  if (p <= 0) return 0;
  if (p >= 1) return 1;
  if (k <= n * p) return 1; // at or below the mean: never evidence of a worse rate
  // log C(n, k) p^k (1-p)^(n-k)
  let logTerm = k * Math.log(p) + (n - k) * Math.log1p(-p);
  for (let i = 1; i <= k; i++) logTerm += Math.log((n - k + i) / i);
  let term = Math.exp(logTerm);
  let sum = term;
  const odds = p / (1 - p);
  for (let j = k; j < n && term > sum * 1e-12; j++) {
    term *= ((n - j) / (j + 1)) * odds;
    sum += term;
  }
  return Math.min(1, sum);
}

/**
 * Decide from measurements alone (pure: unit-tested without servers). `fail` when a threshold is
 * crossed on enough samples, or at once (decisive) when the errors are too many for chance on any
 * sample size; `inconclusive` when there is too little traffic to say, or when a latency threshold is
 * set that the source cannot measure (the caller pauses, it never promotes on silence); `pass` otherwise.
 */
export function judge(input: { candidate: SlotWindow; stable?: SlotWindow; rules: AnalysisRules }): Judgement {
  const { candidate: c, stable: s, rules } = input;
  const checks: CheckResult[] = [];
  const enough = c.requests >= rules.minRequests;
  const errorRate = c.requests > 0 ? c.errors / c.requests : 0;

  // Error rate against the absolute limit: decisive on any sample size when chance cannot explain it,
  // a plain fail over the limit on enough samples (a noisy error or two on a small window is neither).
  const chance = binomialTail(c.requests, c.errors, rules.maxErrorRate);
  const decisive = c.errors > 0 && chance < DECISIVE_P;
  if (decisive)
    checks.push({
      name: 'error rate',
      outcome: 'fail',
      observed: errorRate,
      limit: rules.maxErrorRate,
      detail: `${c.errors} errors in ${c.requests} requests (${pct(errorRate)}) > ${pct(rules.maxErrorRate)} (p=${chance.toExponential(1)} at the limit)`,
    });
  else if (!enough)
    checks.push({
      name: 'error rate',
      outcome: 'insufficient',
      observed: errorRate,
      limit: rules.maxErrorRate,
      detail: `${c.requests} requests < ${rules.minRequests} needed`,
    });
  else {
    const over = errorRate > rules.maxErrorRate && chance < SIGNIFICANT_P;
    checks.push({
      name: 'error rate',
      outcome: over ? 'fail' : 'ok',
      observed: errorRate,
      limit: rules.maxErrorRate,
      detail: over
        ? `${pct(errorRate)} > ${pct(rules.maxErrorRate)} over ${c.requests} requests (p=${chance.toFixed(3)} at the limit)`
        : `${pct(errorRate)} ${errorRate <= rules.maxErrorRate ? '<=' : 'within chance of'} ${pct(rules.maxErrorRate)} over ${c.requests} requests`,
    });
  }

  const latency = (name: 'p99' | 'p95', limit: number | undefined) => {
    if (limit === undefined) return;
    const v = c.latencyMs[name];
    if (v === undefined) {
      // An upper bound still decides: if even the slowest request was under the limit, so was p99.
      const max = c.latencyMs.max;
      if (max !== undefined && max <= limit && enough)
        checks.push({ name, outcome: 'ok', observed: max, limit, detail: `max ${ms(max)} <= ${ms(limit)}` });
      else if (!enough) checks.push({ name, outcome: 'insufficient', limit, detail: 'too few requests' });
      else
        checks.push({
          name,
          outcome: 'unmeasured',
          limit,
          detail: `${name} latency not measured by this source: the ${ms(limit)} threshold cannot pass`,
        });
      return;
    }
    if (!enough) checks.push({ name, outcome: 'insufficient', observed: v, limit, detail: `too few requests` });
    else
      checks.push({
        name,
        outcome: v <= limit ? 'ok' : 'fail',
        observed: v,
        limit,
        detail: `${name} ${ms(v)} ${v <= limit ? '<=' : '>'} ${ms(limit)}`,
      });
  };
  latency('p99', rules.maxP99Ms);
  latency('p95', rules.maxP95Ms);

  // Versus the stable slot (its baseline before a blue-green switch, or the same window of a canary).
  if (rules.vsStable && s) {
    const v = rules.vsStable;
    if (s.requests < rules.minRequests)
      checks.push({
        name: 'vs stable',
        outcome: 'unavailable',
        detail: `stable slot had ${s.requests} requests (< ${rules.minRequests}): no comparison`,
      });
    else if (enough) {
      const stableRate = s.errors / s.requests;
      const limit = stableRate + v.maxErrorRateIncrease;
      checks.push({
        name: 'error rate vs stable',
        outcome: errorRate <= limit ? 'ok' : 'fail',
        observed: errorRate,
        limit,
        detail: `${pct(errorRate)} vs stable ${pct(stableRate)} (+${pct(v.maxErrorRateIncrease)} allowed)`,
      });
      const cp = c.latencyMs.p99;
      const sp = s.latencyMs.p99;
      if (cp !== undefined && sp !== undefined) {
        const lim = Math.max(sp * v.maxP99Ratio, sp + v.p99SlackMs);
        checks.push({
          name: 'p99 vs stable',
          outcome: cp <= lim ? 'ok' : 'fail',
          observed: cp,
          limit: lim,
          detail: `p99 ${ms(cp)} vs stable ${ms(sp)} (limit ${ms(lim)})`,
        });
      } else
        checks.push({
          name: 'p99 vs stable',
          outcome: 'unmeasured',
          detail: 'p99 not measured by this source: the comparison with stable cannot pass',
        });
    }
  }

  const failed = checks.filter((x) => x.outcome === 'fail');
  const evidence = { candidate: c, stable: s, checks };
  if (failed.length > 0)
    return { verdict: 'fail', decisive, reason: `failed: ${failed.map((f) => f.detail).join('; ')}`, evidence };
  if (!enough)
    return {
      verdict: 'inconclusive',
      reason: `inconclusive: ${c.requests} requests in the window, ${rules.minRequests} needed to decide`,
      evidence,
    };
  const unmeasured = checks.filter((x) => x.outcome === 'unmeasured');
  if (unmeasured.length > 0)
    return { verdict: 'inconclusive', reason: `inconclusive: ${unmeasured.map((u) => u.detail).join('; ')}`, evidence };
  return {
    verdict: 'pass',
    reason: `passed: ${checks
      .filter((x) => x.outcome === 'ok')
      .map((x) => x.detail)
      .join('; ')}`,
    evidence,
  };
}

/** The evidence of a judgement, one line per check, for terminals and logs. */
export function formatJudgement(j: Judgement): string[] {
  const c = j.evidence.candidate;
  const lat = (w: SlotWindow) =>
    Object.entries(w.latencyMs)
      .filter(([k]) => ['p50', 'p95', 'p99', 'avg', 'max'].includes(k))
      .map(([k, v]) => `${k} ${(v as number).toFixed(1)}`)
      .join(' ');
  const lines = [`new slot: ${c.requests} requests, ${c.errors} errors${lat(c) ? `, ms ${lat(c)}` : ''}`];
  const s = j.evidence.stable;
  if (s) lines.push(`stable:   ${s.requests} requests, ${s.errors} errors${lat(s) ? `, ms ${lat(s)}` : ''}`);
  for (const k of j.evidence.checks) lines.push(`[${k.outcome}] ${k.name}: ${k.detail}`);
  return lines;
}

/** Where analysis windows come from. */
export interface MetricsSource {
  window(slot: Slot, sinceMs: number, context: { version: string }): Promise<SlotWindow | undefined>;
}

/** The router's own measurements (embedded: HDR histograms; HAProxy: counters and averages). */
export function routerSource(router: Router): MetricsSource {
  return { window: (slot, since) => router.window(slot, since) };
}

export interface PrometheusSourceOptions {
  url: string;
  /** PromQL with {slot}, {version} and {window} substituted; each must return a single number. */
  queries: { requests: string; errors: string; p99Ms?: string; p95Ms?: string };
}

/** Run one instant query and return its single number (undefined on an empty result). */
export async function promQuery(baseUrl: string, query: string): Promise<number | undefined> {
  const url = new URL('/api/v1/query', baseUrl);
  url.searchParams.set('query', query);
  let body: {
    status?: string;
    error?: string;
    data?: { resultType: string; result: unknown };
  };
  try {
    const r = await request(url, { headersTimeout: 10_000, bodyTimeout: 10_000 });
    body = (await r.body.json()) as typeof body;
  } catch (err) {
    throw new DeployError('BULWARK_E_DEPLOY_FAILED', `Prometheus ${baseUrl}: ${(err as Error).message}`);
  }
  if (body.status !== 'success')
    throw new DeployError(
      'BULWARK_E_DEPLOY_FAILED',
      `Prometheus rejected "${query}": ${body.error ?? 'unknown error'}`,
    );
  const { resultType, result } = body.data!;
  let raw: string | undefined;
  if (resultType === 'scalar') raw = (result as [number, string])[1];
  else if (resultType === 'vector') {
    const v = result as Array<{ value: [number, string] }>;
    if (v.length > 1)
      throw new DeployError(
        'BULWARK_E_DEPLOY_FAILED',
        `Prometheus query "${query}" returned ${v.length} series, need one (use sum())`,
      );
    raw = v[0]?.value[1];
  }
  if (raw === undefined) return undefined;
  const n = Number(raw);
  return Number.isFinite(n) ? n : undefined; // NaN: e.g. a rate over no samples = no data
}

/** Analysis windows from a Prometheus HTTP API (Prometheus, Thanos, Mimir, VictoriaMetrics). */
export function prometheusSource(options: PrometheusSourceOptions): MetricsSource {
  return {
    async window(slot, sinceMs, ctx) {
      const seconds = Math.max(1, Math.ceil((Date.now() - sinceMs) / 1000));
      const fill = (q: string) =>
        q.replaceAll('{slot}', slot).replaceAll('{version}', ctx.version).replaceAll('{window}', `${seconds}s`);
      const [requests, errors, p99, p95] = await Promise.all([
        promQuery(options.url, fill(options.queries.requests)),
        promQuery(options.url, fill(options.queries.errors)),
        options.queries.p99Ms ? promQuery(options.url, fill(options.queries.p99Ms)) : undefined,
        options.queries.p95Ms ? promQuery(options.url, fill(options.queries.p95Ms)) : undefined,
      ]);
      if (requests === undefined) return { requests: 0, errors: 0, latencyMs: {} };
      return {
        requests: Math.round(requests),
        errors: Math.round(errors ?? 0),
        latencyMs: { ...(p99 === undefined ? {} : { p99 }), ...(p95 === undefined ? {} : { p95 }) },
      };
    },
  };
}
