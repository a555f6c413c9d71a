import { describe, expect, it } from 'vitest';
import { Histogram } from '../../src/lib/histogram.js';

function sortedPercentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

describe('HDR histogram', () => {
  it('matches exact percentiles within 3 significant digits over a wide range', () => {
    const h = new Histogram();
    const values: number[] = [];
    let seed = 42;
    for (let i = 0; i < 50_000; i++) {
      seed = (seed * 16807) % 2147483647;
      // Log-uniform from 1 µs to ~1 hour: every bucket size is exercised.
      const v = Math.round(Math.exp((seed / 2147483647) * Math.log(3.5e9)));
      values.push(v);
      h.record(v);
    }
    for (const p of [0, 1, 50, 90, 95, 99, 99.9, 100]) {
      const exact = sortedPercentile(values, p);
      const got = h.percentile(p);
      expect(got).toBeGreaterThanOrEqual(exact);
      expect(got).toBeLessThanOrEqual(exact * 1.001 + 1);
    }
    expect(h.totalCount).toBe(50_000);
  });

  it('is exact for small values and merges by adding counters', () => {
    const a = new Histogram();
    const b = new Histogram();
    const all = new Histogram();
    for (let v = 0; v < 2000; v++) {
      (v % 2 ? a : b).record(v);
      all.record(v);
    }
    const merged = Histogram.decode(a.encode());
    merged.addEncoded(b.encode());
    for (const p of [10, 50, 99]) expect(merged.percentile(p)).toBe(all.percentile(p));
    expect(all.percentile(50)).toBe(999);
    const viaAdd = new Histogram();
    viaAdd.add(a);
    viaAdd.add(b);
    expect(viaAdd.encode()).toEqual(all.encode());
  });

  it('clamps values beyond one hour and resets to empty', () => {
    const h = new Histogram();
    h.record(1e12);
    h.record(-5);
    expect(h.totalCount).toBe(2);
    expect(h.percentile(100)).toBeGreaterThanOrEqual(3_600_000_000);
    expect(h.percentile(0)).toBe(0);
    h.reset();
    expect(h.totalCount).toBe(0);
    expect(h.encode()).toEqual([]);
    expect(h.percentile(50)).toBe(0);
  });
});
