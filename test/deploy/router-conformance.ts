import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDemoServer } from '../../src/demo/index.js';
import type { Router } from '../../src/deploy/index.js';
import { keepAliveTraffic, newTally, servedAround, servedBy, sleep, startUpstreams, waitFor } from './helpers.js';

export interface RouterUnderTest {
  router: Router;
  frontendUrl: string;
  /** How many backends one slot can hold (HAProxy: pre-declared server lines). */
  maxPerSlot: number;
  cleanup(): Promise<void>;
}

/**
 * The contract every router driver keeps (src/deploy/types.ts, Router). Runs against real upstreams
 * (two demo servers labelled blue and green) and real traffic through the driver's frontend.
 */
export function routerConformance(name: string, make: () => Promise<RouterUnderTest>): void {
  describe(`router conformance: ${name}`, () => {
    let t: RouterUnderTest;
    let up: Awaited<ReturnType<typeof startUpstreams>>;
    const backend = (slot: 'blue' | 'green') => ({ id: `${slot}-1`, url: up[slot].url });

    beforeAll(async () => {
      up = await startUpstreams();
      t = await make();
      await t.router.setBackends('blue', [backend('blue')]);
      await t.router.setWeights({ blue: 100, green: 0 });
    });
    afterAll(async () => {
      await t?.cleanup();
      await up?.close();
    });

    it('sends all traffic to the only slot with weight', async () => {
      expect(await servedBy(t.frontendUrl, 20)).toEqual({ blue: 20 });
      const st = await t.router.state();
      expect(st.slots.blue.weight).toBe(100);
      expect(st.slots.green.weight).toBe(0);
    });

    it('refuses traffic to a slot with no ready backend (make-before-break), and traffic stays put', async () => {
      await expect(t.router.setWeights({ blue: 0, green: 100 })).rejects.toMatchObject({
        code: 'BULWARK_E_DEPLOY_UNSAFE',
      });
      await expect(t.router.setWeights({ blue: 50, green: 40 })).rejects.toMatchObject({
        code: 'BULWARK_E_DEPLOY_UNSAFE',
      });
      await expect(t.router.setBackends('blue', [])).rejects.toMatchObject({ code: 'BULWARK_E_DEPLOY_UNSAFE' });
      expect(await servedBy(t.frontendUrl, 10)).toEqual({ blue: 10 });
    });

    it('confirms a slot serving only when the router can reach it', async () => {
      expect(await t.router.confirmServing('green')).toBe(false);
      await t.router.setBackends('green', [{ id: 'green-dead', url: 'http://127.0.0.1:9' }]);
      expect(await t.router.confirmServing('green')).toBe(false);
      await t.router.setBackends('green', [backend('green')]);
      expect(await t.router.confirmServing('green')).toBe(true);
      // registering the idle slot's instances moves no traffic
      expect(await servedBy(t.frontendUrl, 10)).toEqual({ blue: 10 });
    });

    it('switches blue -> green under keep-alive load with zero failed requests', async () => {
      let release!: () => void;
      const stop = new Promise<void>((r) => {
        release = r;
      });
      const tally = newTally();
      const traffic = keepAliveTraffic(t.frontendUrl, stop, { tally });
      // Switch while traffic is observably flowing, and keep it flowing until the new slot answered.
      await waitFor(() => (tally.bySlot.blue ?? 0) >= 20, 20_000, 'traffic on blue');
      const switchStart = Date.now();
      await t.router.setWeights({ blue: 0, green: 100 });
      const switchEnd = Date.now();
      await waitFor(() => (tally.bySlot.green ?? 0) >= 20, 20_000, 'traffic on green');
      release();
      await traffic;
      expect(tally.failures).toEqual([]);
      // Both slots answered right around the switch: the zero above covers the switch itself.
      expect(servedAround(tally, switchStart, 500).before.blue ?? 0).toBeGreaterThan(0);
      expect(servedAround(tally, switchEnd, 500).after.green ?? 0).toBeGreaterThan(0);
      expect(await servedBy(t.frontendUrl, 10)).toEqual({ green: 10 });
    });

    it('splits traffic by weight', async () => {
      await t.router.setWeights({ blue: 70, green: 30 });
      const st = await t.router.state();
      expect(st.slots.green.weight).toBe(30);
      const seen = await servedBy(t.frontendUrl, 400);
      expect((seen.blue ?? 0) + (seen.green ?? 0)).toBe(400);
      // 30 % +- a wide margin: round-robin drivers are exact, random ones are within it with p > 1 - 1e-9
      expect(seen.green).toBeGreaterThan(60);
      expect(seen.green).toBeLessThan(180);
    });

    it('drains a slot that lost its traffic, then reports zero in flight', async () => {
      await t.router.setWeights({ blue: 100, green: 0 });
      expect(await t.router.drain('green', 10_000)).toBe(true);
      const st = await t.router.state();
      expect(st.slots.green.backends.reduce((n, b) => n + (b.inFlight ?? 0), 0)).toBe(0);
    });

    it('lets requests in flight on a slot that loses its traffic finish, and drain waits for them', async () => {
      const slow = await startDemoServer({ port: 0, label: 'slow', latencyMs: 600 });
      try {
        await t.router.setBackends('green', [{ id: 'green-slow', url: slow.url }]);
        await t.router.setWeights({ blue: 0, green: 100 });
        let finished = 0;
        const inFlight = Array.from({ length: 5 }, async () => {
          const r = await request(`${t.frontendUrl}/api/products`);
          await r.body.dump();
          finished++;
          return `${r.statusCode} ${r.headers['x-served-by']}`;
        });
        await sleep(200); // the five requests are now waiting on the slow instance
        await t.router.setWeights({ blue: 100, green: 0 });
        expect(await t.router.drain('green', 10_000)).toBe(true);
        expect(finished).toBe(5); // drain returned only after every in-flight request was answered
        expect(await Promise.all(inFlight)).toEqual(Array(5).fill('200 slow'));
        expect(await servedBy(t.frontendUrl, 5)).toEqual({ blue: 5 });
        await t.router.setBackends('green', [backend('green')]);
      } finally {
        await slow.close();
      }
    });

    it('counts each slot’s requests in a window', async () => {
      await sleep(1020 - (Date.now() % 1000)); // windows have whole-second resolution: start in a fresh second
      const since = Date.now();
      await t.router.window('blue', since); // drivers with cumulative counters take their baseline here
      await t.router.window('green', since);
      await sleep(20);
      await servedBy(t.frontendUrl, 30);
      const w = await t.router.window('blue', since);
      expect(w).toBeDefined();
      expect(w!.requests).toBeGreaterThanOrEqual(30);
      expect(w!.errors).toBe(0);
      expect((await t.router.window('green', since))!.requests).toBe(0);
    });
  });
}
