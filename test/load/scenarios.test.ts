import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { runCli } from '../harness/cli.js';

// k6's `scenarios`, its iterations executors, Locust's LoadTestShape, and the execution-segment split
// across worker threads, run by real `bulwark load` processes against a real server that records
// every request (path, the VU id and iteration number the scenario put in the query, arrival time).
interface Seen {
  path: string;
  at: number;
  q: URLSearchParams;
}
let seen: Seen[] = [];
let dir: string;
let server: Server;
let url: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'bulwark-scenarios-'));
  server = createServer((req, res) => {
    const u = new URL(req.url!, 'http://x');
    seen.push({ path: u.pathname, at: Date.now(), q: u.searchParams });
    res.writeHead(200, { 'content-type': 'text/plain' }).end('ok');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
  rmSync(dir, { recursive: true, force: true });
});
beforeEach(() => {
  seen = [];
});

async function run(name: string, body: string, extra: string[] = []) {
  const file = join(dir, name);
  writeFileSync(file, body);
  const out = join(dir, `${name}.json`);
  const r = await runCli(['load', file, '--host', url, '--summary-json', out, ...extra]);
  return { ...r, summary: r.code === 0 || r.code === 99 ? JSON.parse(readFileSync(out, 'utf8')) : undefined };
}

const range = (n: number) => Array.from({ length: n }, (_, i) => String(i));
const sorted = (xs: string[]) => [...xs].sort((a, b) => Number(a) - Number(b));

describe('iterations executors across worker threads', () => {
  it('shared-iterations: exactly N iterations, each global number once, split over 3 threads', async () => {
    const r = await run(
      'shared.ts',
      `import { scenario, user } from 'bulwark';
export default scenario({
  users: [user('U', { tasks: [async (vu) => { await vu.http.get('/it?i=' + vu.globalIteration, { name: '/it' }); }] })],
  load: { executor: 'shared-iterations', vus: 4, iterations: 61 },
});
`,
      ['--workers', '3', '--quiet'],
    );
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(sorted(seen.map((s) => s.q.get('i')!))).toEqual(range(61));
    expect(r.summary.iterations).toBe(61);
  });

  it('per-vu-iterations: each of the VUs runs exactly its iterations', async () => {
    const r = await run(
      'pervu.ts',
      `import { scenario, user } from 'bulwark';
export default scenario({
  users: [user('U', { tasks: [async (vu) => { await vu.http.get('/it?vu=' + vu.id + '&i=' + vu.globalIteration, { name: '/it' }); }] })],
  load: { executor: 'per-vu-iterations', vus: 4, iterations: 3 },
});
`,
      ['--workers', '3', '--quiet'],
    );
    expect(r.code).toBe(0);
    const byVu = new Map<string, number>();
    for (const s of seen) byVu.set(s.q.get('vu')!, (byVu.get(s.q.get('vu')!) ?? 0) + 1);
    expect([...byVu.values()]).toEqual([3, 3, 3, 3]);
    expect(sorted(seen.map((s) => s.q.get('i')!))).toEqual(range(12));
  });

  it('arrival-rate iterations get unique global numbers across threads', async () => {
    const r = await run(
      'arrivals.ts',
      `import { scenario, user } from 'bulwark';
export default scenario({
  users: [user('U', { tasks: [async (vu) => { await vu.http.get('/it?i=' + vu.globalIteration, { name: '/it' }); }] })],
  load: { executor: 'constant-arrival-rate', rate: 40, duration: '1s', preAllocatedVUs: 10, maxVUs: 20 },
});
`,
      ['--workers', '3', '--quiet'],
    );
    expect(r.code).toBe(0);
    expect(r.summary.droppedIterations).toBe(0);
    expect(sorted(seen.map((s) => s.q.get('i')!))).toEqual(range(40));
  });
});

describe('named scenarios (k6 scenarios)', () => {
  it('runs several scenarios with their own executor, startTime, tags and user types', async () => {
    const r = await run(
      'named.ts',
      `import { scenario, user, constant } from 'bulwark';
export default scenario({
  users: [
    user('Browser', { wait: constant(0.1), tasks: [async (vu) => { await vu.http.get('/browse?s=' + vu.scenario); }] }),
    user('Buyer', { tasks: [async (vu) => { await vu.http.get('/buy?s=' + vu.scenario + '&after=' + (Date.now() - vu.data.setupAt)); }] }),
  ],
  scenarios: {
    browse: { executor: 'constant-vus', vus: 2, duration: '2s', users: ['Browser'], tags: { flow: 'browse' } },
    buy: { executor: 'per-vu-iterations', vus: 1, iterations: 2, startTime: '1s', users: ['Buyer'] },
  },
  setup: () => ({ setupAt: Date.now() }),
  thresholds: {
    'http_reqs{scenario:buy}': ['count==2'],
    'http_reqs{flow:browse}': ['count>2'],
    'http_reqs{scenario:browse,user:Buyer}': ['count==0'],
  },
});
`,
    );
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(
      /running \S*named\.ts: browse \(constant-vus, up to 2 VUs, 2s\); buy \(per-vu-iterations, 2 iterations per VU, 1 VUs, at most 10m, from 1s\)/,
    );
    expect(r.summary.thresholds.map((t: { ok: boolean }) => t.ok)).toEqual([true, true, true]);
    const buys = seen.filter((s) => s.path === '/buy');
    expect(buys.map((s) => s.q.get('s'))).toEqual(['buy', 'buy']);
    expect(seen.filter((s) => s.path === '/browse').every((s) => s.q.get('s') === 'browse')).toBe(true);
    // startTime: setup() runs before the load starts, so each purchase comes at least 1 s after it.
    for (const b of buys) expect(Number(b.q.get('after'))).toBeGreaterThanOrEqual(1000);
  });

  it('rejects a scenario naming an unknown user type, and load together with scenarios', async () => {
    const bad = await run(
      'bad.ts',
      `import { scenario, user } from 'bulwark';
export default scenario({
  users: [user('A', { tasks: [async () => {}] })],
  scenarios: { x: { executor: 'constant-vus', vus: 1, duration: '1s', users: ['B'] } },
});
`,
    );
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/scenarios\.x\.users: no user type "B" \(declared: A\)/);
    const both = await run(
      'both.ts',
      `import { scenario, user } from 'bulwark';
export default scenario({
  users: [user('A', { tasks: [async () => {}] })],
  load: { vus: 1, duration: '1s' },
  scenarios: { x: { executor: 'constant-vus', vus: 1, duration: '1s' } },
});
`,
    );
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/load and scenarios cannot be combined/);
  });
});

describe('shape (Locust LoadTestShape)', () => {
  it('follows the function of elapsed time and ends when it returns null', async () => {
    const r = await run(
      'shape.ts',
      `import { scenario, user, constant } from 'bulwark';
export default scenario({
  users: [user('U', { wait: constant(0.1), tasks: [async (vu) => { await vu.http.get('/s?vu=' + vu.id); }] })],
  load: {
    executor: 'shape',
    gracefulStop: '1s',
    shape: (t) => (t < 1 ? { users: 1 } : t < 2 ? { users: 3 } : null),
  },
});
`,
      ['--quiet'],
    );
    // Without the null ending it, the shape would run for its default maxDuration of an hour.
    expect(r.code).toBe(0);
    expect(r.summary.vusMax).toBe(3);
    expect(new Set(seen.map((s) => s.q.get('vu'))).size).toBe(3);
  });
});
