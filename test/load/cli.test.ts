import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DemoServer, startDemoServer } from '../../src/demo/index.js';
import { runCli } from '../harness/cli.js';

// Scenario files live in a temp folder outside the repository, with no node_modules next to them:
// `import ... from 'bulwark'` must resolve to the running package.
let dir: string;
let server: DemoServer;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'bulwark-scenario-'));
  server = await startDemoServer({ port: 0 });
});
afterAll(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

function scenarioFile(name: string, body: string): string {
  const path = join(dir, name);
  writeFileSync(path, body);
  return path;
}

const SHOP = `
import { scenario, user, none, Trend, Counter, Rate, Gauge } from 'bulwark';

const orderTime = new Trend('order_time');
const orders = new Counter('orders_ok');
const orderErrors = new Rate('order_errors');
const depth = new Gauge('queue_depth');

export default scenario({
  host: 'http://127.0.0.1:1',
  users: [
    user('Buyer', {
      weight: 1,
      wait: none(),
      async onStart(vu) {
        const r = await vu.http.post('/auth/login', { json: { email: 'u' + vu.id + '@x.io', password: 'pw' } });
        vu.state.h = { authorization: 'Bearer ' + r.json().access_token };
      },
      tasks: [
        { weight: 2, run: async (vu) => {
          const r = await vu.http.get('/api/products/search?q=' + vu.random.pick(['laptop', 'phone']), { name: '/api/products/search', headers: vu.state.h });
          vu.check(r, { 'search is 200': (res) => res.status === 200 });
        } },
        { weight: 1, run: async (vu) => {
          const r = await vu.http.post('/api/orders', { json: { items: [{ product_id: 1, quantity: 1 }] }, headers: vu.state.h });
          orderTime.add(r.timings.duration);
          orders.add(1);
          orderErrors.add(r.status !== 201);
          depth.add(vu.iteration);
        } },
      ],
    }),
  ],
  load: { vus: 4, duration: '2s' },
  thresholds: {
    http_req_failed: ['rate<0.01'],
    'http_req_duration{name:/api/products/search}': ['p(95)<5000'],
    order_time: ['max<5000'],
  },
});
`;

describe('bulwark load', () => {
  it('runs a scenario from any folder and writes the summary JSON', async () => {
    const file = scenarioFile('shop.ts', SHOP);
    const out = join(dir, 'summary.json');
    const r = await runCli(['load', file, '--host', server.url, '--summary-json', out, '--quiet']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const s = JSON.parse(readFileSync(out, 'utf8'));
    expect(s.version).toBe(1);
    expect(s.durationSeconds).toBeGreaterThan(1.5);
    expect(s.totals.requests).toBeGreaterThan(10);
    expect(s.totals.failures).toBe(0);
    expect(s.totals.latencyMs.p99).toBeGreaterThan(0);
    expect(s.totals.latencyMs.max).toBeGreaterThanOrEqual(s.totals.latencyMs.p99);
    const names = s.endpoints.map((e: { method: string; name: string }) => `${e.method} ${e.name}`).sort();
    // Searches with different query strings are grouped under the name given.
    expect(names).toEqual(['GET /api/products/search', 'POST /api/orders', 'POST /auth/login']);
    const sum = s.endpoints.reduce((a: number, e: { requests: number }) => a + e.requests, 0);
    expect(sum).toBe(s.totals.requests);
    const search = s.endpoints.find((e: { name: string }) => e.name === '/api/products/search');
    expect(s.checks).toEqual([{ name: 'search is 200', passes: search.requests, fails: 0 }]);
    const orders = s.endpoints.find((e: { name: string }) => e.name === '/api/orders');
    expect(s.metrics.order_time).toMatchObject({ type: 'trend', count: orders.requests });
    expect(s.metrics.orders_ok).toMatchObject({ type: 'counter', count: orders.requests });
    expect(s.metrics.order_errors).toMatchObject({ type: 'rate', rate: 0, fails: orders.requests });
    expect(s.metrics.queue_depth.type).toBe('gauge');
    expect(s.thresholds).toHaveLength(3);
    expect(s.thresholds.every((t: { ok: boolean }) => t.ok)).toBe(true);
    expect(s.thresholds[1]).toMatchObject({
      metric: 'http_req_duration{name:/api/products/search}',
      expression: 'p(95)<5000',
    });
    expect(s.droppedIterations).toBe(0);
    // The terminal summary shows the same endpoints.
    expect(r.stdout).toMatch(/GET \/api\/products\/search/);
    expect(r.stdout).toMatch(/all thresholds passed/);
  });

  it('exits 99 when a threshold is crossed', async () => {
    const file = scenarioFile(
      'impossible.ts',
      SHOP.replace("['rate<0.01']", "['rate<0.01'], http_req_duration: ['max<0.001']").replace(
        "duration: '2s'",
        "duration: '1s'",
      ),
    );
    const junit = join(dir, 'impossible.xml');
    const csv = join(dir, 'impossible.csv');
    const r = await runCli(['load', file, '--host', server.url, '--quiet', '--junit', junit, '--csv', csv]);
    expect(r.code).toBe(99);
    expect(r.stdout).toMatch(/✗\s+http_req_duration\s+max<0.001/);
    expect(r.stdout).toMatch(/1 threshold\(s\) crossed/);
    // CI artifacts: the crossed threshold is a failed JUnit test case; the endpoint table as CSV.
    const xml = readFileSync(junit, 'utf8');
    expect(xml).toMatch(/<testsuite name="bulwark load" tests="5" failures="1"/);
    expect(xml).toMatch(
      /<testcase classname="thresholds" name="http_req_duration max&lt;0.001"><failure message="http_req_duration max&lt;0.001: value [\d.]+"\/>/,
    );
    expect(xml).toMatch(/<testcase classname="checks" name="search is 200"\/>/);
    const lines = readFileSync(csv, 'utf8').trim().split('\n');
    expect(lines[0]).toBe('name,method,requests,failures,error_rate,rps,avg_ms,p50_ms,p90_ms,p95_ms,p99_ms,max_ms');
    expect(lines.at(-1)).toMatch(/^TOTAL,,\d+,0,0,/);
    expect(lines.some((l) => l.startsWith('/api/products/search,GET,'))).toBe(true);
  });

  it('aborts early on abortOnFail, still printing the summary', async () => {
    const file = scenarioFile(
      'abort.ts',
      SHOP.replace("load: { vus: 4, duration: '2s' }", "load: { vus: 2, duration: '60s' }").replace(
        "http_req_failed: ['rate<0.01'],",
        "http_req_failed: ['rate<0.01'], http_reqs: [{ threshold: 'count<20', abortOnFail: true }],",
      ),
    );
    const out = join(dir, 'abort.json');
    const r = await runCli(['load', file, '--host', server.url, '--quiet', '--summary-json', out]);
    expect(r.code).toBe(99);
    const s = JSON.parse(readFileSync(out, 'utf8'));
    expect(s.aborted).toBe(true);
    expect(s.durationSeconds).toBeLessThan(30);
  });

  it.each([
    ['syntax error', 'syntax.ts', 'export default scenario({ users: [ });', /syntax\.ts:1:\d+: /],
    [
      'type error',
      'types.ts',
      "import { scenario, user } from 'bulwark';\nconst n: number = 'nope';\nexport default scenario({ users: [user('A', { tasks: [async () => {}] })] });\n",
      /types\.ts:2:7: type error: .*not assignable/,
    ],
    [
      'no default export',
      'nodefault.ts',
      "import { scenario } from 'bulwark';\nexport const s = 1;\n",
      /nodefault\.ts: no default export/,
    ],
    [
      'bad duration',
      'duration.ts',
      "import { scenario, user } from 'bulwark';\nexport default scenario({\n  users: [user('A', { tasks: [async () => {}] })],\n  load: { vus: 1, duration: '10 parsecs' },\n});\n",
      /duration\.ts:4: load\.duration: "10 parsecs" is not a valid duration/,
    ],
    [
      'bad threshold',
      'threshold.ts',
      "import { scenario, user } from 'bulwark';\nexport default scenario({\n  users: [user('A', { tasks: [async () => {}] })],\n  thresholds: { http_req_duration: ['p95 < 200'] },\n});\n",
      /threshold\.ts:4: .*cannot parse "p95 < 200"/,
    ],
    [
      'unknown option',
      'unknown.ts',
      "import { scenario, user } from 'bulwark';\nexport default scenario({ users: [user('A', { tasks: [async () => {}] })], thresold: {} } as any);\n",
      /unknown\.ts: unknown option "thresold"/,
    ],
  ])('exits 2 before any load on a %s, naming the file', async (_what, name, body, message) => {
    const file = scenarioFile(name, body);
    const r = await runCli(['load', file, '--host', server.url, '--quiet']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stdout).toBe('');
  });

  it('exits 2 on bad flags', async () => {
    const file = scenarioFile('ok.ts', SHOP);
    expect((await runCli(['load', file, '--users', 'many'])).code).toBe(2);
    expect((await runCli(['load', file, '--workers', '0'])).code).toBe(2);
    expect((await runCli(['load', join(dir, 'missing.ts')])).stderr).toMatch(/missing\.ts: scenario file not found/);
  });

  it('has --help on every command and --version', async () => {
    const v = await runCli(['--version']);
    expect(v.code).toBe(0);
    expect(v.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
    for (const cmd of [['load'], ['demo'], ['demo-server']]) {
      const h = await runCli([...cmd, '--help']);
      expect(h.code).toBe(0);
      expect(h.stdout).toMatch(/Usage: bulwark/);
    }
  });
});
