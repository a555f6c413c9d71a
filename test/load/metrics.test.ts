import { describe, expect, it } from 'vitest';
import { MetricsStore, viewStat } from '../../src/load/metrics/store.js';

describe('metrics store', () => {
  it('merges thread deltas exactly: the same percentiles as one store that saw every sample', () => {
    const single = new MetricsStore();
    const threads = [new MetricsStore(), new MetricsStore(), new MetricsStore()];
    const merged = new MetricsStore();
    let seed = 7;
    const rnd = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    for (let round = 0; round < 5; round++) {
      for (let i = 0; i < 3000; i++) {
        // Each thread sees a different latency profile; averaging their p99s would be wrong.
        const t = i % 3;
        const v = t === 0 ? rnd() * 10 : t === 1 ? 50 + rnd() * 50 : 1000 + rnd() * 4000;
        single.get('lat', 'trend', {}).add(v);
        threads[t]!.get('lat', 'trend', {}).add(v);
      }
      for (const th of threads) merged.merge(th.takeDelta());
    }
    const a = single.view('lat')!;
    const b = merged.view('lat')!;
    for (const stat of ['count', 'avg', 'min', 'max', 'med', 'p(90)', 'p(99)', 'p(99.9)']) {
      expect(viewStat(b, stat, 1)).toBeCloseTo(viewStat(a, stat, 1), 6);
    }
    expect(b.count).toBe(15_000);
    // The recording side was reset by each delta: memory does not grow with the run.
    expect(threads[0]!.series.get('lat')!.count).toBe(0);
  });

  it('reports percentiles within HDR precision and never above the exact max', () => {
    const s = new MetricsStore();
    const series = s.get('x', 'trend', {});
    for (let i = 1; i <= 1000; i++) series.add(i);
    const v = s.view('x')!;
    expect(viewStat(v, 'p(99)', 1)).toBeGreaterThanOrEqual(990 * 0.999);
    expect(viewStat(v, 'p(99)', 1)).toBeLessThanOrEqual(990 * 1.001);
    expect(viewStat(v, 'p(100)', 1)).toBe(1000);
    expect(viewStat(v, 'avg', 1)).toBe(500.5);
  });

  it('refuses to record one metric name as two types', () => {
    const s = new MetricsStore();
    s.get('m', 'counter', {});
    expect(() => s.get('m', 'trend', { a: 'b' })).toThrow(/is a counter/);
  });
});
