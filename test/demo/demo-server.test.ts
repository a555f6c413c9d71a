import { type ChildProcess, spawn } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { startDemoServer } from '../../src/demo/index.js';
import { CLI, runCli } from '../harness/cli.js';

const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) c.kill('SIGKILL');
});

/** Start `bulwark demo-server ...` and resolve with its URL from the "listening on" line. */
function startCliServer(args: string[]): Promise<string> {
  const child = spawn(process.execPath, [CLI, 'demo-server', '--port', '0', ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.push(child);
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (d) => {
      out += d;
      const m = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    child.on('exit', (code) => reject(new Error(`demo-server exited with ${code}`)));
  });
}

describe('demo shop API', () => {
  it('serves the shop contract with bearer tokens', async () => {
    const url = await startCliServer(['--label', 'blue']);
    const health = await fetch(`${url}/health`);
    expect(health.headers.get('x-served-by')).toBe('blue');
    expect(await health.json()).toEqual({ status: 'ok', label: 'blue' });
    const products = (await (await fetch(`${url}/api/products`)).json()) as any;
    expect(products.products.length).toBeGreaterThan(0);
    const search = (await (await fetch(`${url}/api/products/search?q=laptop`)).json()) as any;
    expect(search.products.every((p: { category: string }) => p.category === 'laptop')).toBe(true);
    expect((await fetch(`${url}/api/orders`, { method: 'POST', body: '{}' })).status).toBe(401);
    const login = (await (
      await fetch(`${url}/auth/login`, { method: 'POST', body: JSON.stringify({ email: 'a@b.c', password: 'pw' }) })
    ).json()) as any;
    const auth = { authorization: `Bearer ${login.access_token}` };
    const bad = await fetch(`${url}/api/orders`, {
      method: 'POST',
      headers: auth,
      body: JSON.stringify({ items: [] }),
    });
    expect(bad.status).toBe(400);
    const order = await fetch(`${url}/api/orders`, {
      method: 'POST',
      headers: auth,
      body: JSON.stringify({ items: [{ product_id: 3, quantity: 2 }] }),
    });
    expect(order.status).toBe(201);
    const { order_id } = (await order.json()) as any;
    const history = (await (await fetch(`${url}/api/orders/history`, { headers: auth })).json()) as any;
    expect(history.orders.map((o: { order_id: string }) => o.order_id)).toEqual([order_id]);
    expect((await fetch(`${url}/api/heavy-query`)).status).toBe(200);
    expect((await fetch(`${url}/api/critical`)).status).toBe(200);
  });

  it('injects errors and latency', async () => {
    const url = await startCliServer(['--error-rate', '1', '--latency-ms', '50']);
    const t0 = performance.now();
    const r = await fetch(`${url}/api/products`);
    const elapsed = performance.now() - t0;
    expect(r.status).toBe(500);
    expect(elapsed).toBeGreaterThanOrEqual(45); // the injected delay itself, not a performance bound
    expect((await fetch(`${url}/health`)).status).toBe(200);
  });

  it('stalls the whole server periodically', async () => {
    const server = await startDemoServer({ port: 0, stallEveryMs: 400, stallForMs: 200 });
    try {
      const waits: number[] = [];
      for (let i = 0; i < 16; i++) {
        const t0 = performance.now();
        await fetch(`${server.url}/health`);
        waits.push(performance.now() - t0);
        await new Promise((r) => setTimeout(r, 37));
      }
      // Some requests landed in a stall and were held; others were answered at once.
      expect(waits.filter((w) => w > 50).length).toBeGreaterThan(0);
      expect(waits.filter((w) => w < 50).length).toBeGreaterThan(0);
    } finally {
      await server.close();
    }
  });

  it('rejects bad fault flags with exit code 2', async () => {
    const r = await runCli(['demo-server', '--error-rate', '2']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--error-rate: "2" must be a number from 0 to 1/);
    expect((await runCli(['demo-server', '--stall-every', '1s'])).code).toBe(2);
    expect((await runCli(['demo-server', '--stall-every', '1s', '--stall-for', '2s'])).code).toBe(2);
  });
});

describe('bulwark demo', () => {
  it('runs the shop example against an embedded server and writes the HTML report', async () => {
    const { mkdtempSync, existsSync, readFileSync, rmSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { tmpdir } = await import('node:os');
    const dir = mkdtempSync(join(tmpdir(), 'bulwark-demo-'));
    try {
      const r = await runCli(['demo', '--users', '10', '--duration', '3s', '--quiet', '--summary-json', 'demo.json'], {
        cwd: dir,
      });
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/HTML report: .*bulwark-demo-report\.html/);
      expect(existsSync(join(dir, 'bulwark-demo-report.html'))).toBe(true);
      const s = JSON.parse(readFileSync(join(dir, 'demo.json'), 'utf8'));
      const names = s.endpoints.map((e: { name: string }) => e.name);
      expect(names).toContain('/auth/login');
      expect(names).toContain('/api/products');
      expect(s.totals.failures).toBe(0);
      expect(s.thresholds).toHaveLength(4);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
