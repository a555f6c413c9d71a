import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DemoServer, startDemoServer } from '../../src/demo/index.js';
import { freePort } from '../../src/lib/net.js';
import { none, runLoad, scenario, user } from '../../src/load/index.js';
import { runCli } from '../harness/cli.js';

let dir: string;
let server: DemoServer;
let misbehaving: Server;
let misbehavingUrl: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'bulwark-faults-'));
  server = await startDemoServer({ port: 0 });
  // /reset destroys the socket without answering; /slow answers after 2 s; /cookie sets and echoes a cookie.
  misbehaving = createServer((req, res) => {
    if (req.url === '/reset') return req.socket.destroy();
    if (req.url === '/slow') return void setTimeout(() => res.end('late'), 2000);
    if (req.url === '/cookie/set') {
      res.setHeader('set-cookie', ['session=abc123; Path=/; HttpOnly', 'theme=dark']);
      return res.end('set');
    }
    if (req.url === '/cookie/echo') return res.end(req.headers.cookie ?? '');
    res.end('ok');
  });
  await new Promise<void>((r) => misbehaving.listen(0, '127.0.0.1', r));
  misbehavingUrl = `http://127.0.0.1:${(misbehaving.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await server.close();
  misbehaving.closeAllConnections();
  await new Promise((r) => misbehaving.close(r));
  rmSync(dir, { recursive: true, force: true });
});

describe('faults are failed requests with an error class, never a crash', () => {
  it('classifies connection refused, reset, timeouts and HTTP status classes', async () => {
    const closedPort = await freePort();
    const { summary } = await runLoad({
      scenario: scenario({
        host: misbehavingUrl,
        users: [
          user('Chaos', {
            wait: none(),
            tasks: [
              {
                name: 'refused',
                run: async (vu) => void (await vu.http.get(`http://127.0.0.1:${closedPort}/x`, { name: 'refused' })),
              },
              { name: 'reset', run: async (vu) => void (await vu.http.get('/reset')) },
              { name: 'timeout', run: async (vu) => void (await vu.http.get('/slow', { timeout: '200ms' })) },
              { name: '404', run: async (vu) => void (await vu.http.get(`${server.url}/nope`, { name: '/nope' })) },
            ],
          }),
        ],
        load: { vus: 2, duration: '2s' },
      }),
    });
    const errors = Object.fromEntries(summary.errors.map((e) => [`${e.error} @ ${e.where}`, e.count]));
    expect(errors['connection refused @ refused']).toBeGreaterThan(0);
    expect(errors['connection reset @ /reset']).toBeGreaterThan(0);
    expect(errors['timeout @ /slow']).toBeGreaterThan(0);
    expect(errors['HTTP 4xx @ /nope']).toBeGreaterThan(0);
    expect(summary.totals.failures).toBe(summary.totals.requests);
    expect(summary.errors.every((e) => e.kind === 'request')).toBe(true);
  });

  it('counts an exception thrown in a task with its file:line, and the VU goes on', async () => {
    const file = join(dir, 'throws.ts');
    writeFileSync(
      file,
      [
        "import { scenario, user, none } from 'bulwark';",
        'export default scenario({',
        "  users: [user('Flaky', { wait: none(), tasks: [",
        '    async (vu) => {',
        "      await vu.http.get('/api/products');",
        "      if (vu.iteration % 2 === 0) throw new Error('boom on even iterations');",
        '    },',
        '  ] })],',
        "  load: { vus: 1, duration: '1s' },",
        '});',
        '',
      ].join('\n'),
    );
    const out = join(dir, 'throws.json');
    const r = await runCli(['load', file, '--host', server.url, '--quiet', '--summary-json', out]);
    expect(r.code).toBe(0);
    const s = JSON.parse(readFileSync(out, 'utf8'));
    const row = s.errors.find((e: { kind: string }) => e.kind === 'exception');
    expect(row.error).toBe('boom on even iterations');
    expect(row.where).toMatch(/throws\.ts:6$/);
    // The VU kept going: many iterations, about half of them threw.
    expect(s.iterations).toBeGreaterThan(10);
    expect(row.count).toBeGreaterThanOrEqual(Math.floor(s.iterations / 2) - 1);
    expect(r.stdout).toMatch(/exception: boom on even iterations\s+\S*throws\.ts:6/);
  });

  it('keeps a cookie jar per VU', async () => {
    const seen: string[] = [];
    await runLoad({
      scenario: scenario({
        host: misbehavingUrl,
        users: [
          user('Cookie', {
            async onStart(vu) {
              await vu.http.get('/cookie/set');
            },
            tasks: [async (vu) => void seen.push((await vu.http.get('/cookie/echo')).body)],
          }),
        ],
        load: { vus: 1, duration: '300ms' },
      }),
    });
    expect(seen.length).toBeGreaterThan(0);
    expect(seen[0]).toBe('session=abc123; theme=dark');
  });

  it('applies expect (catch_response): a 200 can fail and a 404 can pass', async () => {
    const { summary } = await runLoad({
      scenario: scenario({
        host: server.url,
        users: [
          user('Picky', {
            wait: none(),
            tasks: [
              async (vu) =>
                void (await vu.http.get('/api/products', {
                  expect: (r) => r.json().products.length > 1000 || 'too few products',
                })),
              async (vu) => void (await vu.http.get('/nope', { expect: (r) => r.status === 404 })),
            ],
          }),
        ],
        load: { vus: 1, duration: '500ms' },
      }),
    });
    const products = summary.endpoints.find((e) => e.name === '/api/products')!;
    const nope = summary.endpoints.find((e) => e.name === '/nope')!;
    expect(products.failures).toBe(products.requests);
    expect(nope.failures).toBe(0);
    expect(summary.errors[0]).toMatchObject({ error: 'expect: too few products', where: '/api/products' });
  });
});
