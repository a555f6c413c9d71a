import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { runCli } from '../harness/cli.js';

// A real HTTP server that records what the load generator did: when each request arrived, how many
// were in flight at once, from which client ports. /slow?ms=N answers after N ms, /redirect?n=K
// redirects K times before answering /landed.
interface Seen {
  path: string;
  at: number;
  vu: string | undefined;
  port: number;
}
let seen: Seen[] = [];
let inFlight = 0;
let maxInFlight = 0;
// Requests left over from an earlier test (a 5 s /slow) must not count in the next one.
let generation = 0;
let dir: string;
let server: Server;
let url: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'bulwark-vu-'));
  server = createServer((req, res) => {
    const u = new URL(req.url!, 'http://x');
    const gen = generation;
    seen.push({
      path: u.pathname,
      at: Date.now(),
      vu: u.searchParams.get('vu') ?? undefined,
      port: req.socket.remotePort!,
    });
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    const finish = (status: number, headers: Record<string, string> = {}, body = 'ok') => {
      if (gen === generation) inFlight--;
      res.writeHead(status, { 'content-type': 'text/plain', ...headers }).end(body);
    };
    if (u.pathname === '/slow')
      setTimeout(() => finish(200, {}, `${req.method} /slow`), Number(u.searchParams.get('ms') ?? 0));
    else if (u.pathname === '/redirect') {
      const n = Number(u.searchParams.get('n'));
      finish(302, { location: n > 1 ? `/redirect?n=${n - 1}` : '/landed' }, '');
    } else if (u.pathname === '/see-other') finish(303, { location: `${url}/landed` }, '');
    else finish(200, {}, `${req.method} ${u.pathname}`);
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
  generation++;
  seen = [];
  inFlight = 0;
  maxInFlight = 0;
});

async function run(name: string, body: string, extra: string[] = []) {
  const file = join(dir, name);
  writeFileSync(file, body);
  const out = join(dir, `${name}.json`);
  const r = await runCli(['load', file, '--quiet', '--host', url, '--summary-json', out, ...extra], {
    timeoutMs: 60_000,
  });
  return { ...r, summary: r.code === 0 || r.code === 99 ? JSON.parse(readFileSync(out, 'utf8')) : undefined };
}

describe('think time (defect 7)', () => {
  it('vu.sleep() inside a task is not cut short at the end of the test', async () => {
    const r = await run(
      'sleep.ts',
      `import { scenario, user } from 'bulwark';
export default scenario({
  users: [user('S', { tasks: [async (vu) => {
    await vu.http.get('/a?vu=' + vu.id);
    await vu.sleep(2);
    await vu.http.get('/b?vu=' + vu.id);
  }] })],
  load: { vus: 2, duration: '1s', gracefulStop: '10s' },
});
`,
    );
    expect(r.code).toBe(0);
    const b = seen.filter((s) => s.path === '/b');
    expect(b.length).toBe(2);
    for (const x of b) {
      const a = seen.find((s) => s.path === '/a' && s.vu === x.vu)!;
      // The think time ends with the iteration: the second request comes a full 2 s after the first.
      expect(x.at - a.at).toBeGreaterThanOrEqual(1990);
    }
  });
});

describe('ramp-down (defect 4)', () => {
  it('requests abandoned by a ramp-down are counted as interrupted, not as timed failures', async () => {
    const r = await run(
      'rampdown.ts',
      `import { scenario, user } from 'bulwark';
export default scenario({
  users: [
    user('Sleeper', { tasks: [async (vu) => { await vu.http.get('/a'); await vu.sleep(5); await vu.http.get('/after-sleep'); }] }),
    user('Waiter', { tasks: [async (vu) => { await vu.http.get('/slow?ms=5000'); }] }),
  ],
  load: {
    stages: [{ duration: '300ms', target: 2 }, { duration: '700ms', target: 2 }, { duration: '100ms', target: 0 }, { duration: '1500ms', target: 0 }],
    gracefulRampDown: '300ms',
    gracefulStop: '1s',
  },
});
`,
    );
    expect(r.code).toBe(0);
    const s = r.summary;
    expect(s.totals.failures).toBe(0);
    expect(s.errors.filter((e: { error: string }) => e.error === 'aborted')).toEqual([]);
    // The Waiter's /slow in flight and the Sleeper's request after its interrupted sleep.
    expect(s.interruptedRequests).toBe(2);
    expect(s.endpoints.map((e: { name: string }) => e.name)).toEqual(['/a']);
  });
});

describe('connection pool per VU (defect 5)', () => {
  it('Promise.all of one VU runs its requests in parallel on several connections', async () => {
    const r = await run(
      'parallel.ts',
      `import { scenario, user } from 'bulwark';
export default scenario({
  users: [user('P', { tasks: [async (vu) => {
    if (vu.iteration > 1) return vu.sleep(0.3);
    await Promise.all([1, 2, 3, 4].map((i) => vu.http.get('/slow?ms=400&i=' + i, { name: '/slow' })));
  }] })],
  load: { vus: 1, duration: '1s', gracefulStop: '3s' },
});
`,
    );
    expect(r.code).toBe(0);
    expect(maxInFlight).toBe(4);
    expect(new Set(seen.map((s) => s.port)).size).toBe(4);
    expect(r.summary.totals.requests).toBe(4);
  });

  it('vu.http.batch sends its requests in parallel and returns responses in order', async () => {
    const r = await run(
      'batch.ts',
      `import { scenario, user } from 'bulwark';
export default scenario({
  users: [user('B', { tasks: [async (vu) => {
    if (vu.iteration > 1) return vu.sleep(0.3);
    const rs = await vu.http.batch([
      '/slow?ms=300',
      { method: 'POST', url: '/slow?ms=300', options: { json: { a: 1 } } },
      ['PUT', '/slow?ms=300'],
    ]);
    vu.check(rs, {
      'three responses in order': (x) => x.length === 3 && x[0].body === 'GET /slow' && x[1].body === 'POST /slow' && x[2].body === 'PUT /slow',
    });
  }] })],
  load: { vus: 1, duration: '1s', gracefulStop: '3s' },
});
`,
    );
    expect(r.code).toBe(0);
    expect(r.summary.checks).toEqual([{ name: 'three responses in order', passes: 1, fails: 0 }]);
    expect(maxInFlight).toBe(3);
  });
});

describe('time waiting for a free connection is not latency (defect 5)', () => {
  it('a request queued behind 6 busy connections records only its own exchange', async () => {
    // Six requests hold all 6 connections to the origin for 1 s; the seventh waits for one, then the
    // server answers it at once. Its duration must be its own exchange, not the 1 s in the queue.
    const r = await run(
      'queued.ts',
      `import { scenario, user } from 'bulwark';
export default scenario({
  users: [user('Q', { tasks: [async (vu) => {
    if (vu.iteration > 1) return vu.sleep(0.3);
    const held = Array.from({ length: 6 }, () => ({ url: '/slow?ms=1000', options: { name: 'held' } }));
    await vu.http.batch([...held, { url: '/slow?ms=0', options: { name: 'queued' } }]);
  }] })],
  load: { vus: 1, duration: '1s', gracefulStop: '5s' },
});
`,
    );
    expect(r.code).toBe(0);
    expect(maxInFlight).toBe(6);
    const byName = Object.fromEntries(r.summary.endpoints.map((e: { name: string }) => [e.name, e]));
    expect(byName.held.latencyMs.min).toBeGreaterThanOrEqual(1000);
    expect(byName.queued.requests).toBe(1);
    // shorter than the hold it queued behind: the wait for a connection is not in its duration
    expect(byName.queued.latencyMs.max).toBeLessThan(byName.held.latencyMs.min);
  });
});

describe('redirects (defect 7)', () => {
  it('are followed by default (each hop recorded), up to 10', async () => {
    const r = await run(
      'redirect.ts',
      `import { scenario, user } from 'bulwark';
export default scenario({
  users: [user('R', { tasks: [async (vu) => {
    if (vu.iteration > 1) return vu.sleep(0.3);
    const r = await vu.http.get('/redirect?n=3', { name: 'start' });
    vu.check(r, { 'landed': (x) => x.status === 200 && x.body === 'GET /landed' && x.url.endsWith('/landed') });
    const post = await vu.http.post('/see-other', { body: 'x' });
    vu.check(post, { '303 turns POST into GET': (x) => x.body === 'GET /landed' });
    const far = await vu.http.get('/redirect?n=11', { name: 'far' });
    vu.check(far, { 'stops after 10': (x) => x.status === 302 });
  }] })],
  load: { vus: 1, duration: '1s', gracefulStop: '3s' },
});
`,
    );
    expect(r.code).toBe(0);
    expect(r.summary.checks.every((c: { fails: number; passes: number }) => c.fails === 0 && c.passes === 1)).toBe(
      true,
    );
    // 4 + 2 requests, then the first and the 10 redirects it may follow.
    expect(seen.length).toBe(6 + 11);
  });

  it('redirects: 0 turns following off', async () => {
    const r = await run(
      'noredirect.ts',
      `import { scenario, user } from 'bulwark';
export default scenario({
  users: [user('R', { tasks: [async (vu) => {
    if (vu.iteration > 1) return vu.sleep(0.3);
    const r = await vu.http.get('/redirect?n=1', { redirects: 0 });
    vu.check(r, { 'not followed': (x) => x.status === 302 && x.headers.location === '/landed' });
  }] })],
  load: { vus: 1, duration: '1s', gracefulStop: '3s' },
});
`,
    );
    expect(r.code).toBe(0);
    expect(r.summary.checks[0].passes).toBe(1);
    expect(seen.map((s) => s.path)).toEqual(['/redirect']);
  });
});
