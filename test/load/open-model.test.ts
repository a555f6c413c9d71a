import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DemoServer, startDemoServer } from '../../src/demo/index.js';
import { none, runLoad, scenario, user } from '../../src/load/index.js';

// Coordinated omission: a closed-model tool stops sending while the server stalls, so the stall
// never shows in its percentiles. The open model keeps starting iterations on schedule.
let stalling: DemoServer;
beforeAll(async () => {
  stalling = await startDemoServer({ port: 0, stallEveryMs: 2000, stallForMs: 1000 });
});
afterAll(async () => {
  await stalling.close();
});

describe('open model (arrival rate)', () => {
  it('keeps 200/s against a server that stalls 1 s every 2 s, and the stall shows in p99', async () => {
    const { summary } = await runLoad({
      scenario: scenario({
        host: stalling.url,
        users: [user('Reader', { wait: none(), tasks: [async (vu) => void (await vu.http.get('/api/products'))] })],
        load: {
          executor: 'constant-arrival-rate',
          rate: 200,
          timeUnit: '1s',
          duration: '10s',
          preAllocatedVUs: 50,
          maxVUs: 400,
        },
      }),
    });
    // 2000 iterations were due; all started, none dropped.
    expect(summary.droppedIterations).toBe(0);
    expect(summary.totals.requests).toBeGreaterThanOrEqual(1960);
    expect(summary.totals.requests).toBeLessThanOrEqual(2010);
    expect(summary.totals.failures).toBe(0);
    expect(summary.totals.latencyMs.p99).toBeGreaterThanOrEqual(900);
  });

  it('counts dropped_iterations when every VU is busy', async () => {
    const { summary } = await runLoad({
      scenario: scenario({
        host: stalling.url,
        users: [user('Reader', { tasks: [async (vu) => void (await vu.http.get('/api/products'))] })],
        load: { executor: 'constant-arrival-rate', rate: 100, duration: '3s', preAllocatedVUs: 2, maxVUs: 5 },
      }),
    });
    expect(summary.droppedIterations).toBeGreaterThan(0);
    expect(summary.totals.requests + summary.droppedIterations).toBeGreaterThanOrEqual(290);
  });

  it('ramps the arrival rate', async () => {
    const fast = await startDemoServer({ port: 0 });
    try {
      const { summary } = await runLoad({
        scenario: scenario({
          host: fast.url,
          users: [user('Reader', { tasks: [async (vu) => void (await vu.http.get('/api/products'))] })],
          load: {
            executor: 'ramping-arrival-rate',
            startRate: 0,
            maxVUs: 50,
            stages: [{ duration: '2s', target: 200 }],
          },
        }),
      });
      // The integral of a 0 -> 200/s ramp over 2 s is 200 iterations.
      expect(summary.totals.requests).toBeGreaterThanOrEqual(195);
      expect(summary.totals.requests).toBeLessThanOrEqual(201);
    } finally {
      await fast.close();
    }
  });
});
