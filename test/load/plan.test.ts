import { describe, expect, it } from 'vitest';
import {
  arrivalsBy,
  planLoad,
  shareOf,
  stripeShare,
  targetAt,
  timeOfArrival,
  userTypePattern,
} from '../../src/load/executors/plan.js';

describe('planLoad', () => {
  it('turns stages into a closed plan', () => {
    const plan = planLoad({
      stages: [
        { duration: '10s', target: 100 },
        { duration: '20s', target: 100 },
        { duration: '5s', target: 0 },
      ],
    });
    expect(plan.kind).toBe('closed');
    expect(plan.totalMs).toBe(35_000);
    expect(targetAt(plan, 0)).toBe(0);
    expect(targetAt(plan, 5_000)).toBe(50);
    expect(targetAt(plan, 20_000)).toBe(100);
    expect(targetAt(plan, 32_500)).toBe(50);
    expect(targetAt(plan, 40_000)).toBe(0);
  });

  it('lets --users/--spawn-rate/--duration replace the file load, Locust style', () => {
    const plan = planLoad(
      { stages: [{ duration: '1h', target: 5000 }] },
      { users: 50, spawnRate: 10, duration: '30s' },
    );
    expect(plan.totalMs).toBe(30_000);
    expect(targetAt(plan, 2_500)).toBe(25);
    expect(targetAt(plan, 5_000)).toBe(50);
    expect(targetAt(plan, 29_000)).toBe(50);
  });

  it('plans arrival rates per second whatever the timeUnit', () => {
    const plan = planLoad({ executor: 'constant-arrival-rate', rate: 30, timeUnit: '1m', duration: '2m', maxVUs: 5 });
    expect(plan.kind).toBe('open');
    expect(arrivalsBy(plan, 60_000)).toBeCloseTo(30);
    expect(arrivalsBy(plan, 120_000)).toBeCloseTo(60);
  });

  it('integrates a ramping arrival rate exactly and finds arrival times', () => {
    const plan = planLoad({
      executor: 'ramping-arrival-rate',
      startRate: 0,
      maxVUs: 10,
      stages: [{ duration: '10s', target: 100 }],
    });
    // Rate climbs linearly 0 -> 100/s over 10 s: 500 arrivals in all, 125 in the first 5 s.
    expect(arrivalsBy(plan, 10_000)).toBeCloseTo(500);
    expect(arrivalsBy(plan, 5_000)).toBeCloseTo(125);
    expect(timeOfArrival(plan, 125)).toBeCloseTo(5_000, -1);
    expect(timeOfArrival(plan, 501)).toBe(Number.POSITIVE_INFINITY);
  });

  it('rejects bad options with the key that is wrong', () => {
    expect(() => planLoad({ stages: [{ duration: '10 parsecs', target: 1 }] })).toThrow(/load\.stages\[0\]\.duration/);
    expect(() => planLoad({ executor: 'constant-arrival-rate', rate: 10, duration: '1s' } as never)).toThrow(/maxVUs/);
    expect(() => planLoad({ vus: 2, duration: '1s', bogus: 1 } as never)).toThrow(/load\.bogus: unknown option/);
    expect(() => planLoad({ executor: 'warp-speed' } as never)).toThrow(/unknown executor/);
    expect(() => planLoad(undefined, { spawnRate: 3 })).toThrow(/--spawn-rate needs --users/);
  });
});

describe('splitting work across threads', () => {
  it('gives every VU or arrival to exactly one worker', () => {
    for (const total of [0, 1, 7, 100, 101]) {
      for (const n of [1, 2, 3, 4]) {
        let sum = 0;
        for (let w = 0; w < n; w++) sum += shareOf(total, w, n);
        expect(sum).toBe(total);
      }
    }
  });

  it("splits a fixed total by k6's execution-segment rule round(N*to) - round(N*from)", () => {
    for (let total = 0; total <= 200; total++)
      for (const n of [1, 2, 3, 4, 5, 7]) {
        let sum = 0;
        for (let w = 0; w < n; w++) {
          const share = shareOf(total, w, n);
          expect(share).toBe(Math.round((total * (w + 1)) / n + 1e-9) - Math.round((total * w) / n + 1e-9));
          sum += share;
        }
        expect(sum).toBe(total);
      }
    // 10 over 3 workers: [0, 1/3) -> 3, [1/3, 2/3) -> 4, [2/3, 1] -> 3.
    expect([0, 1, 2].map((w) => shareOf(10, w, 3))).toEqual([3, 4, 3]);
  });

  it('stripes a growing sequence so no worker loses an item as the total grows', () => {
    for (const n of [1, 2, 3, 4]) {
      for (let total = 0; total < 100; total++) {
        let sum = 0;
        for (let w = 0; w < n; w++) {
          sum += stripeShare(total, w, n);
          expect(stripeShare(total + 1, w, n)).toBeGreaterThanOrEqual(stripeShare(total, w, n));
        }
        expect(sum).toBe(total);
      }
    }
  });

  it('assigns user types in proportion to their weights, spread evenly', () => {
    const pattern = userTypePattern([3, 1], 400);
    expect(pattern.filter((t) => t === 0)).toHaveLength(300);
    // Any prefix of 8 VUs already has the 3:1 mix.
    expect(pattern.slice(0, 8).filter((t) => t === 1)).toHaveLength(2);
  });
});
