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
  /** When each answer arrived (epoch ms) and who served it: proves traffic flowed at a given moment. */
  timeline: Array<{ at: number; by: string }>;
}

/** An empty tally: pass it to a traffic helper to watch it fill while the traffic runs. */
export function newTally(): TrafficTally {
  return { ok: 0, failed: 0, bySlot: {}, failures: [], timeline: [] };
}

/** Resolve once `what()` holds (polling), or fail after `ms`: wait for an observed state, not a guessed time. */
export async function waitFor(what: () => boolean, ms = 20_000, label = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!what()) {
    if (Date.now() > end) throw new Error(`${label} not reached within ${ms} ms`);
    await sleep(10);
  }
}

/** Answers per server in the `ms` before and the `ms` after `at` (e.g. a switch's recorded time). */
export function servedAround(
  tally: TrafficTally,
  at: number,
  ms: number,
): { before: Record<string, number>; after: Record<string, number> } {
  const before: Record<string, number> = {};
  const after: Record<string, number> = {};
  for (const e of tally.timeline) {
    if (e.at >= at - ms && e.at < at) before[e.by] = (before[e.by] ?? 0) + 1;
    else if (e.at >= at && e.at <= at + ms) after[e.by] = (after[e.by] ?? 0) + 1;
  }
  return { before, after };
}

/**
 * Open-loop traffic at a fixed rate (requests started every 1/rate s, whatever the answers take), on
 * keep-alive connections, until `stop` resolves. What the analysis sees at "150 req/s" is 150 req/s.
 */
export async function fixedRateTraffic(
  url: string,
  ratePerSecond: number,
  stop: Promise<unknown>,
  options: { path?: string; connections?: number; tally?: TrafficTally } = {},
): Promise<TrafficTally> {
  const agent = new Agent({ connections: options.connections ?? 32, keepAliveTimeout: 30_000 });
  const tally: TrafficTally = options.tally ?? newTally();
  const pending = new Set<Promise<void>>();
  const one = async () => {
    try {
      const r = await request(`${url}${options.path ?? '/api/products'}`, { dispatcher: agent });
      await r.body.dump();
      const by = String(r.headers['x-served-by'] ?? '?');
      tally.bySlot[by] = (tally.bySlot[by] ?? 0) + 1;
      tally.timeline.push({ at: Date.now(), by });
      if (r.statusCode < 500) tally.ok++;
      else {
        tally.failed++;
        tally.failures.push(`status ${r.statusCode} from ${by}`);
      }
    } catch (err) {
      tally.failed++;
      tally.failures.push((err as Error).message);
    }
  };
  let stopped = false;
  stop.then(() => {
    stopped = true;
  });
  const start = Date.now();
  let sent = 0;
  while (!stopped) {
    const due = Math.floor(((Date.now() - start) / 1000) * ratePerSecond);
    for (; sent < due; sent++) {
      const p = one().finally(() => pending.delete(p));
      pending.add(p);
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  await Promise.all(pending);
  await agent.close();
  return tally;
}

/**
 * A few keep-alive connections sending GETs in a loop until `stop` resolves: just enough traffic for
 * router conformance tests (the zero-failure deploy tests use `bulwark load`).
 */
export async function keepAliveTraffic(
  url: string,
  stop: Promise<unknown>,
  options: { connections?: number; path?: string; tally?: TrafficTally } = {},
): Promise<TrafficTally> {
  const agent = new Agent({ connections: options.connections ?? 4, keepAliveTimeout: 30_000 });
  const tally: TrafficTally = options.tally ?? newTally();
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
        tally.timeline.push({ at: Date.now(), by });
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
