import { describe, expect, it } from 'vitest';
import { type AnalysisRules, binomialTail, judge } from '../../src/deploy/analysis.js';

const rules: AnalysisRules = { minRequests: 100, maxErrorRate: 0.01, maxP99Ms: 500 };
const win = (requests: number, errors: number, p99?: number, extra: Record<string, number> = {}) => ({
  requests,
  errors,
  latencyMs: p99 === undefined ? { ...extra } : { p50: p99 / 4, p99, max: p99 * 1.2, ...extra },
});

describe('judge (pure analysis)', () => {
  it('passes a healthy slot with enough traffic and says why', () => {
    const j = judge({ candidate: win(1000, 2, 120), rules });
    expect(j.verdict).toBe('pass');
    expect(j.reason).toMatch(/0\.20% <= 1\.00%/);
    expect(j.evidence.checks.map((c) => c.outcome)).toEqual(['ok', 'ok']);
  });

  it('is inconclusive with too few requests, instead of passing on silence (the Flagger complaint)', () => {
    expect(judge({ candidate: win(0, 0), rules }).verdict).toBe('inconclusive');
    const j = judge({ candidate: win(40, 0, 100), rules });
    expect(j.verdict).toBe('inconclusive');
    expect(j.reason).toMatch(/40 requests.*100 needed/);
  });

  it('fails early on few requests when the errors alone already break the limit', () => {
    // 5 errors: even if the next 60 requests all succeeded, 5/100 > 1 %
    const j = judge({ candidate: win(40, 5, 100), rules });
    expect(j.verdict).toBe('fail');
    expect(j.evidence.checks[0]).toMatchObject({ name: 'error rate', outcome: 'fail' });
  });

  it('fails on error rate and on p99 latency over the thresholds', () => {
    expect(judge({ candidate: win(1000, 50, 100), rules }).verdict).toBe('fail');
    const slow = judge({ candidate: win(1000, 0, 900), rules });
    expect(slow.verdict).toBe('fail');
    expect(slow.reason).toMatch(/p99 900\.0 ms > 500\.0 ms/);
  });

  it('compares with the stable slot over the same window', () => {
    const vs = {
      ...rules,
      maxP99Ms: undefined,
      vsStable: { maxErrorRateIncrease: 0.01, maxP99Ratio: 1.5, p99SlackMs: 20 },
    };
    // both slow alike: pass; candidate twice as slow: fail
    expect(judge({ candidate: win(1000, 0, 300), stable: win(1000, 0, 280), rules: vs }).verdict).toBe('pass');
    const j = judge({ candidate: win(1000, 0, 600), stable: win(1000, 0, 280), rules: vs });
    expect(j.verdict).toBe('fail');
    expect(j.reason).toMatch(/vs stable 280\.0 ms/);
    // stable itself erroring at 3 %: candidate at 3.5 % is within +1 %
    const errs = { ...vs, maxErrorRate: 0.05 };
    expect(judge({ candidate: win(1000, 35, 100), stable: win(1000, 30, 100), rules: errs }).verdict).toBe('pass');
    expect(judge({ candidate: win(1000, 45, 100), stable: win(1000, 30, 100), rules: errs }).verdict).toBe('fail');
  });

  it('ignores latency noise below the slack when the stable slot is very fast', () => {
    const vs = {
      ...rules,
      maxP99Ms: undefined,
      vsStable: { maxErrorRateIncrease: 0.01, maxP99Ratio: 1.5, p99SlackMs: 20 },
    };
    expect(judge({ candidate: win(1000, 0, 6), stable: win(1000, 0, 2), rules: vs }).verdict).toBe('pass');
  });

  it('does not compare with a stable slot that saw too little traffic', () => {
    const vs = { ...rules, vsStable: { maxErrorRateIncrease: 0, maxP99Ratio: 1, p99SlackMs: 0 } };
    const j = judge({ candidate: win(1000, 5, 100), stable: win(3, 0, 1), rules: vs });
    expect(j.verdict).toBe('pass');
    expect(j.evidence.checks.find((c) => c.name === 'vs stable')?.outcome).toBe('unavailable');
  });

  it('a latency threshold the source cannot measure (HAProxy averages) is inconclusive, never pass; max can still decide', () => {
    const avgOnly = judge({ candidate: { requests: 1000, errors: 0, latencyMs: { avg: 20 } }, rules });
    expect(avgOnly.verdict).toBe('inconclusive');
    expect(avgOnly.reason).toMatch(/p99 latency not measured by this source/);
    expect(avgOnly.evidence.checks.find((c) => c.name === 'p99')?.outcome).toBe('unmeasured');
    const byMax = judge({ candidate: { requests: 1000, errors: 0, latencyMs: { max: 300 } }, rules });
    expect(byMax.evidence.checks.find((c) => c.name === 'p99')?.outcome).toBe('ok');
    expect(byMax.verdict).toBe('pass');
    // p99 vs stable without percentiles on either side: no silent skip either
    const vs = {
      minRequests: 100,
      maxErrorRate: 0.01,
      vsStable: { maxErrorRateIncrease: 0.01, maxP99Ratio: 1.5, p99SlackMs: 50 },
    };
    const cmp = judge({
      candidate: { requests: 1000, errors: 0, latencyMs: { avg: 320 } },
      stable: { requests: 1000, errors: 0, latencyMs: { avg: 20 } },
      rules: vs,
    });
    expect(cmp.verdict).toBe('inconclusive');
    expect(cmp.evidence.checks.find((c) => c.name === 'p99 vs stable')?.outcome).toBe('unmeasured');
  });

  it('one noisy error in a small window is no fail; errors chance cannot explain are decisive on any sample size', () => {
    const r = { minRequests: 50, maxErrorRate: 0.01 };
    // 1 error in 75 requests (a canary at 5 % of 150 req/s for 10 s) is 1.3 % as a point estimate, but
    // well within chance of a 1 % rate: it passes (the old rule rolled such a canary back)
    expect(judge({ candidate: win(75, 1, 10), rules: r }).verdict).toBe('pass');
    expect(judge({ candidate: win(20, 1, 10), rules: r }).verdict).toBe('inconclusive');
    // a release failing 20 %: 4 of 20 requests is already decisive (p < 0.001 at a true 1 %)
    const bad = judge({ candidate: win(20, 4, 10), rules: r });
    expect(bad).toMatchObject({ verdict: 'fail', decisive: true });
    // over the limit on enough samples but within chance: a plain (non-decisive) fail
    const over = judge({ candidate: win(300, 7, 10), rules: r });
    expect(over).toMatchObject({ verdict: 'fail', decisive: false });
  });

  it('binomialTail: exact small cases and tiny tails without cancellation', () => {
    expect(binomialTail(10, 0, 0.1)).toBe(1);
    expect(binomialTail(2, 2, 0.5)).toBeCloseTo(0.25, 10);
    expect(binomialTail(3, 2, 0.5)).toBeCloseTo(0.5, 10);
    expect(binomialTail(20, 4, 0.01)).toBeCloseTo(4.3e-5, 6);
    expect(binomialTail(100_000, 500, 0.001)).toBeLessThan(1e-100);
    expect(binomialTail(100, 1, 0)).toBe(0);
  });
});

describe('SlotMetrics (per-second HDR windows)', () => {
  it('merges whole seconds for a window, including the current one, and exposes Prometheus counters', async () => {
    const { SlotMetrics, prometheusText } = await import('../../src/deploy/metrics.js');
    const m = new SlotMetrics(60_000);
    const t0 = 1_000_000_000_000;
    for (let i = 0; i < 100; i++) m.record(1 + (i % 10), false, t0 + 10);
    for (let i = 0; i < 100; i++) m.record(100, i < 5, t0 + 1010);
    m.record(5000, true, t0 + 2010); // current second
    const all = m.window(t0);
    expect(all.requests).toBe(201);
    expect(all.errors).toBe(6);
    expect(all.latencyMs.max).toBeCloseTo(5000, -1);
    expect(all.latencyMs.p50).toBeGreaterThanOrEqual(10);
    const last = m.window(t0 + 1500);
    expect(last).toMatchObject({ requests: 101, errors: 6 });
    expect(last.latencyMs.p50).toBeCloseTo(100, 0);
    const text = prometheusText({ blue: m });
    expect(text).toMatch(/bulwark_router_requests_total\{slot="blue"\} 201/);
    expect(text).toMatch(/bulwark_router_request_duration_seconds_bucket\{slot="blue",le="0.01"\} 100/);
    expect(text).toMatch(/bulwark_router_request_duration_seconds_bucket\{slot="blue",le="\+Inf"\} 201/);
  });

  it('forgets seconds older than the retention', async () => {
    const { SlotMetrics } = await import('../../src/deploy/metrics.js');
    const m = new SlotMetrics(10_000);
    const t0 = 1_000_000_000_000;
    m.record(1, false, t0);
    m.record(1, false, t0 + 30_000);
    expect(m.window(0).requests).toBe(1);
  });
});
