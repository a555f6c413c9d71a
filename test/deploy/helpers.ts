import { Agent, request } from 'undici';
import { startDemoServer } from '../../src/demo/index.js';
import type { DemoServer } from '../../src/demo/server.js';

/** Two labelled demo servers, the blue and green upstreams of router tests. */
export async function startUpstreams(): Promise<{ blue: DemoServer; green: DemoServer; close(): Promise<void> }> {
  const blue = await startDemoServer({ port: 0, label: 'blue' });
  const green = await startDemoServer({ port: 0, label: 'green' });
  return { blue, green, close: async () => void (await Promise.all([blue.close(), green.close()])) };
}

export interface TrafficTally {
  ok: number;
  failed: number;
  bySlot: Record<string, number>;
  failures: string[];
}

/**
 * A few keep-alive connections sending GETs in a loop until `stop` resolves: just enough traffic for
 * router conformance tests (the zero-failure deploy tests use `bulwark load`).
 */
export async function keepAliveTraffic(
  url: string,
  stop: Promise<unknown>,
  options: { connections?: number; path?: string } = {},
): Promise<TrafficTally> {
  const agent = new Agent({ connections: options.connections ?? 4, keepAliveTimeout: 30_000 });
  const tally: TrafficTally = { ok: 0, failed: 0, bySlot: {}, failures: [] };
  let stopped = false;
  stop.then(() => {
    stopped = true;
  });
  const loop = async () => {
    while (!stopped) {
      try {
        const r = await request(`${url}${options.path ?? '/api/products'}`, { dispatcher: agent });
        await r.body.dump();
        const by = String(r.headers['x-served-by'] ?? '?');
        tally.bySlot[by] = (tally.bySlot[by] ?? 0) + 1;
        if (r.statusCode < 500) tally.ok++;
        else {
          tally.failed++;
          tally.failures.push(`status ${r.statusCode}`);
        }
      } catch (err) {
        tally.failed++;
        tally.failures.push((err as Error).message);
      }
    }
  };
  await Promise.all(Array.from({ length: options.connections ?? 4 }, loop));
  await agent.close();
  return tally;
}

/** Send `n` sequential GETs and count who served them. */
export async function servedBy(
  url: string,
  n: number,
  headers: Record<string, string> = {},
): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const r = await request(`${url}/api/products`, { headers });
    await r.body.dump();
    const by = r.statusCode >= 500 ? `status-${r.statusCode}` : String(r.headers['x-served-by']);
    out[by] = (out[by] ?? 0) + 1;
  }
  return out;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
