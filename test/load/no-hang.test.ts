import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DemoServer, startDemoServer } from '../../src/demo/index.js';
import { runCli } from '../harness/cli.js';

// Issue #11, defect 1: user code that fails without ever awaiting real I/O used to keep the VU loop
// in the microtask queue forever: no timer fired, so neither the duration, nor gracefulStop, nor a
// signal could end the run. Each run here is bounded by runCli's timeout (a hang shows as exit 137).
let dir: string;
let server: DemoServer;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'bulwark-nohang-'));
  server = await startDemoServer({ port: 0 });
});
afterAll(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

function write(name: string, body: string): string {
  const path = join(dir, name);
  writeFileSync(path, body);
  return path;
}

describe('a run always ends (defect 1)', () => {
  it('a task throwing before its first await ends by its duration', async () => {
    const file = write(
      'throws.ts',
      `import { scenario, user } from 'bulwark';
export default scenario({
  users: [user('T', { tasks: [function boom() { throw new Error('boom before await'); }] })],
  load: { vus: 2, duration: '1s', gracefulStop: '1s' },
});
`,
    );
    const out = join(dir, 'throws.json');
    const r = await runCli(['load', file, '--quiet', '--summary-json', out], { timeoutMs: 90_000 });
    expect(r.code).toBe(0);
    const s = JSON.parse(readFileSync(out, 'utf8'));
    expect(s.aborted).toBe(false);
    expect(s.iterations).toBeGreaterThan(0);
    expect(s.errors[0].error).toBe('boom before await');
  });

  it('a relative URL without host ends by its duration and names the mistake', async () => {
    const file = write(
      'nohost.ts',
      `import { scenario, user } from 'bulwark';
export default scenario({
  users: [user('T', { tasks: [async (vu) => { await vu.http.get('/api/products'); }] })],
  load: { vus: 2, duration: '1s', gracefulStop: '1s' },
});
`,
    );
    const out = join(dir, 'nohost.json');
    const r = await runCli(['load', file, '--quiet', '--summary-json', out], { timeoutMs: 90_000 });
    expect(r.code).toBe(0);
    const s = JSON.parse(readFileSync(out, 'utf8'));
    expect(s.errors[0].error).toMatch(/relative URL "\/api\/products" but the scenario has no host/);
  });

  it('an onStop hook that never returns does not keep an arrival-rate run alive', async () => {
    const file = write(
      'onstop.ts',
      `import { scenario, user } from 'bulwark';
export default scenario({
  users: [user('T', {
    async onStop() { await new Promise(() => {}); },
    tasks: [async (vu) => { await vu.http.get('/api/products'); }],
  })],
  load: { executor: 'constant-arrival-rate', rate: 5, duration: '1s', preAllocatedVUs: 2, maxVUs: 2, gracefulStop: '1s' },
});
`,
    );
    const out = join(dir, 'onstop.json');
    const r = await runCli(['load', file, '--quiet', '--host', server.url, '--summary-json', out], {
      timeoutMs: 90_000,
    });
    expect(r.code).toBe(0);
    expect(JSON.parse(readFileSync(out, 'utf8')).totals.requests).toBe(5);
  });

  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    it(`${signal} stops a run whose tasks throw before any await, and the summary is written`, async () => {
      const file = write(
        `spin-${signal}.ts`,
        `import { scenario, user } from 'bulwark';
export default scenario({
  users: [user('T', { tasks: [() => { throw new Error('sync'); }] })],
  load: { vus: 2, duration: '10m' },
});
`,
      );
      const out = join(dir, `spin-${signal}.json`);
      const r = await runCli(['load', file, '--summary-json', out], {
        timeoutMs: 90_000,
        onSpawn: (child) => {
          child.stderr!.on('data', (d: Buffer) => {
            if (d.toString().includes('running ')) setTimeout(() => child.kill(signal), 1000);
          });
        },
      });
      expect(r.code).toBe(signal === 'SIGINT' ? 130 : 143);
      const s = JSON.parse(readFileSync(out, 'utf8'));
      expect(s.aborted).toBe(true);
      expect(s.iterations).toBeGreaterThan(0);
    });
  }
});

describe('abortOnFail (defect 6)', () => {
  it('makes no judgement on a metric before its first sample', async () => {
    // The first check happens after 1.5 s; the live evaluation runs every second from the start.
    const file = write(
      'late-check.ts',
      `import { scenario, user } from 'bulwark';
export default scenario({
  users: [user('T', { tasks: [async (vu) => {
    await vu.sleep(1.5);
    const r = await vu.http.get('/api/products');
    vu.check(r, { 'is 200': (x) => x.status === 200 });
  }] })],
  load: { vus: 1, duration: '3s' },
  thresholds: { checks: [{ threshold: 'rate>0.9', abortOnFail: true }] },
});
`,
    );
    const out = join(dir, 'late-check.json');
    const r = await runCli(['load', file, '--quiet', '--host', server.url, '--summary-json', out], {
      timeoutMs: 90_000,
    });
    expect(r.code).toBe(0);
    const s = JSON.parse(readFileSync(out, 'utf8'));
    expect(s.aborted).toBe(false);
    expect(s.thresholds[0].ok).toBe(true);
    expect(s.checks[0].passes).toBeGreaterThan(0);
  });
});
