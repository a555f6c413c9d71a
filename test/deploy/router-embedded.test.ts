import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EmbeddedRouter } from '../../src/deploy/index.js';
import { EmbeddedRouterClient, startEmbeddedRouter } from '../../src/deploy/index.js';
import { servedBy, startUpstreams } from './helpers.js';
import { routerConformance } from './router-conformance.js';

// The embedded router driven through its admin API, as `bulwark deploy` drives `bulwark deploy router`.
routerConformance('embedded (admin API client)', async () => {
  const router = await startEmbeddedRouter({ port: 0, admin: { port: 0, token: 'conformance-token' } });
  return {
    router: new EmbeddedRouterClient(router.adminUrl!, 'conformance-token', router.url),
    frontendUrl: router.url,
    maxPerSlot: 64,
    cleanup: () => router.close(),
  };
});

describe('embedded router specifics', () => {
  let router: EmbeddedRouter;
  let up: Awaited<ReturnType<typeof startUpstreams>>;
  beforeAll(async () => {
    up = await startUpstreams();
    router = await startEmbeddedRouter({
      port: 0,
      admin: { port: 0, token: 'secret-token' },
      sticky: { header: 'x-user' },
    });
    await router.setBackends('blue', [{ id: 'b', url: up.blue.url }]);
    await router.setBackends('green', [{ id: 'g', url: up.green.url }]);
    await router.setWeights({ blue: 80, green: 20 });
  });
  afterAll(async () => {
    await router?.close();
    await up?.close();
  });

  it('rejects admin calls without the token', async () => {
    const r = await request(`${router.adminUrl}/v1/state`);
    expect(r.statusCode).toBe(401);
    await r.body.dump();
    const wrong = new EmbeddedRouterClient(router.adminUrl!, 'wrong-token');
    await expect(wrong.state()).rejects.toThrow(/admin token/);
  });

  it('answers 400 (not 500) to malformed JSON on the admin API, and the routing table is untouched', async () => {
    const before = await router.state();
    const r = await request(`${router.adminUrl}/v1/weights`, {
      method: 'PUT',
      headers: { authorization: 'Bearer secret-token', 'content-type': 'application/json' },
      body: '{"blue": 0, "green": 1',
    });
    const body = (await r.body.json()) as { message: string };
    expect(r.statusCode).toBe(400);
    expect(body.message).toMatch(/not valid JSON/);
    expect(await router.state()).toEqual(before);
  });

  it('keeps a sticky user on one slot, and canary users stay on the canary as its weight grows', async () => {
    const users = Array.from({ length: 60 }, (_, i) => `user-${i}`);
    const slotOf = async (u: string) => Object.keys(await servedBy(router.url, 3, { 'x-user': u }));
    const first = new Map<string, string[]>();
    for (const u of users) {
      const seen = await slotOf(u);
      expect(seen).toHaveLength(1); // three requests, one slot
      first.set(u, seen);
    }
    await router.setWeights({ blue: 50, green: 50 });
    for (const u of users) if (first.get(u)![0] === 'green') expect(await slotOf(u)).toEqual(['green']);
  });

  it('records per-slot latency percentiles from HDR histograms', async () => {
    const since = Date.now() - 60_000;
    const w = await router.window('blue', since);
    expect(w.requests).toBeGreaterThan(0);
    expect(w.latencyMs.p99).toBeGreaterThan(0);
    expect(w.latencyMs.p99!).toBeLessThanOrEqual(w.latencyMs.max!);
    expect(w.latencyMs.p50!).toBeLessThanOrEqual(w.latencyMs.p99!);
  });

  it('answers 502 and counts an error when a slot backend is unreachable', async () => {
    await router.setBackends('green', [{ id: 'dead', url: 'http://127.0.0.1:9' }]);
    await router.setWeights({ blue: 0, green: 100 });
    const since = Date.now();
    const r = await request(`${router.url}/api/products`);
    await r.body.dump();
    expect(r.statusCode).toBe(502);
    expect((await router.window('green', since)).errors).toBeGreaterThanOrEqual(1);
    await router.setBackends('green', [{ id: 'g', url: up.green.url }]);
  });

  it('sticky by cookie: assigns a bucket cookie once, then keeps the client on its slot', async () => {
    const sticky = await startEmbeddedRouter({ port: 0, sticky: { cookie: 'bw_slot' } });
    try {
      await sticky.setBackends('blue', [{ id: 'b', url: up.blue.url }]);
      await sticky.setBackends('green', [{ id: 'g', url: up.green.url }]);
      await sticky.setWeights({ blue: 50, green: 50 });
      const seen = new Set<string>();
      for (let client = 0; client < 20; client++) {
        const first = await request(`${sticky.url}/api/products`);
        await first.body.dump();
        const cookie = String(first.headers['set-cookie']).split(';')[0]!;
        expect(cookie).toMatch(/^bw_slot=\d{1,2}$/);
        const slot = String(first.headers['x-served-by']);
        seen.add(slot);
        for (let i = 0; i < 3; i++) {
          const again = await request(`${sticky.url}/api/products`, { headers: { cookie } });
          await again.body.dump();
          expect(again.headers['x-served-by']).toBe(slot);
          expect(again.headers['set-cookie']).toBeUndefined();
        }
      }
      expect(seen.size).toBe(2); // 20 clients at 50/50 land on both slots
    } finally {
      await sticky.close();
    }
  });

  it('retries a body-less request once on the next backend when a backend refuses the connection', async () => {
    const r2 = await startEmbeddedRouter({ port: 0 });
    try {
      await r2.setBackends('blue', [
        { id: 'dead', url: 'http://127.0.0.1:9' },
        { id: 'b', url: up.blue.url },
      ]);
      await r2.setWeights({ blue: 100, green: 0 });
      expect(await servedBy(r2.url, 10)).toEqual({ blue: 10 });
    } finally {
      await r2.close();
    }
  });

  it('a restarted router restores its routing table (backends and weights) from statePath', async () => {
    const { mkdtempSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dir = mkdtempSync(join(tmpdir(), 'bulwark-router-table-'));
    const statePath = join(dir, 'router.json');
    try {
      const first = await startEmbeddedRouter({ port: 0, statePath });
      await first.setBackends('green', [{ id: 'g', url: up.green.url }]);
      await first.setWeights({ blue: 0, green: 100 });
      await first.close();
      const second = await startEmbeddedRouter({ port: 0, statePath });
      try {
        expect(await servedBy(second.url, 5)).toEqual({ green: 5 });
        expect((await second.state()).slots.green.weight).toBe(100);
      } finally {
        await second.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
