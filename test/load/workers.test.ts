import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DemoServer, startDemoServer } from '../../src/demo/index.js';
import { runCli } from '../harness/cli.js';

let dir: string;
let server: DemoServer;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'bulwark-workers-'));
  server = await startDemoServer({ port: 0, latencyMs: 5 });
});
afterAll(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('worker threads', () => {
  it('splits VUs and arrivals across threads and merges every sample exactly', async () => {
    const file = join(dir, 'split.ts');
    writeFileSync(
      file,
      `import { scenario, user, Counter, Trend } from 'bulwark';
const calls = new Counter('calls');
const seen = new Trend('seen_ms');
export default scenario({
  users: [user('A', { weight: 1, tasks: [async (vu) => { const r = await vu.http.get('/api/products'); calls.add(1, { vu: String(vu.id % 2) }); seen.add(r.timings.duration); }] }),
          user('B', { weight: 1, tasks: [async (vu) => { const r = await vu.http.get('/api/critical'); calls.add(1); seen.add(r.timings.duration); }] })],
  load: { executor: 'constant-arrival-rate', rate: 300, duration: '2s', preAllocatedVUs: 20, maxVUs: 100 },
});
`,
    );
    const out = join(dir, 'split.json');
    const r = await runCli(['load', file, '--host', server.url, '--workers', '3', '--quiet', '--summary-json', out]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const s = JSON.parse(readFileSync(out, 'utf8'));
    // 600 arrivals in all, each started by exactly one of the 3 threads.
    expect(s.totals.requests + s.droppedIterations).toBe(600);
    expect(s.metrics.calls.count).toBe(s.totals.requests);
    expect(s.metrics.seen_ms.count).toBe(s.totals.requests);
    // Both user types ran (weights 1:1 over VUs spread round-robin across threads).
    expect(s.endpoints.map((e: { name: string }) => e.name).sort()).toEqual(['/api/critical', '/api/products']);
    // Latencies merged from histograms, never averaged: every percentile is within [min, max] and ordered.
    const l = s.totals.latencyMs;
    expect(l.min).toBeLessThanOrEqual(l.p50);
    expect(l.p50).toBeLessThanOrEqual(l.p99);
    expect(l.p99).toBeLessThanOrEqual(l.max);
    // The server adds 5 ms (Node timers may fire up to ~1 ms early against a stale loop clock).
    expect(l.min).toBeGreaterThanOrEqual(4);
  });
});
