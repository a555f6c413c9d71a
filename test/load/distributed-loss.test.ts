import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DemoServer, startDemoServer } from '../../src/demo/index.js';
import { CLI, runCli } from '../harness/cli.js';
import { type GlobalInstall, installGlobally } from '../harness/global-install.js';

// `bulwark worker` processes stand in for load hosts. Defect 2 (issue #11): a worker must run the
// scenario against its own install, never the coordinator's path; the packed install in a temp
// prefix is "another host's" Bulwark. Defect 3: a worker that dies mid-run is named, its deltas kept.
const TOKEN = 'test-worker-token-8c2d';
let dir: string;
let server: DemoServer;
let install: GlobalInstall;
const children: ChildProcess[] = [];

function startWorker(command: string[], env: NodeJS.ProcessEnv = {}): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(command[0]!, [...command.slice(1), 'worker', '--listen', '127.0.0.1:0'], {
    env: { ...process.env, BULWARK_WORKER_TOKEN: TOKEN, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (d) => {
      out += d;
      const m = /worker listening on (http:\/\/\S+)/.exec(out);
      if (m) resolve({ url: m[1]!, child });
    });
    child.on('exit', (code) => reject(new Error(`worker exited with ${code}`)));
  });
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'bulwark-dist-loss-'));
  server = await startDemoServer({ port: 0 });
  install = installGlobally();
}, 300_000);
afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
  await server.close();
  install?.remove();
  rmSync(dir, { recursive: true, force: true });
});

const METRICS_SCENARIO = `import { scenario, user, Counter } from 'bulwark';
const hits = new Counter('hits');
export default scenario({
  users: [user('R', { tasks: [async (vu) => { await vu.http.get('/api/products'); hits.add(1); }] })],
  load: { executor: 'constant-arrival-rate', rate: 50, duration: '1s', preAllocatedVUs: 5, maxVUs: 20 },
});
`;

describe('workers resolve bulwark from their own install (defect 2)', () => {
  it("a worker from another install counts the scenario's custom metrics", async () => {
    const { url } = await startWorker([install.bin]);
    const file = join(dir, 'metrics.ts');
    writeFileSync(file, METRICS_SCENARIO);
    const out = join(dir, 'metrics.json');
    const r = await runCli(
      ['load', file, '--host', server.url, '--quiet', '--summary-json', out, '--remote-worker', url],
      { env: { BULWARK_WORKER_TOKEN: TOKEN }, timeoutMs: 60_000 },
    );
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const s = JSON.parse(readFileSync(out, 'utf8'));
    expect(s.totals.requests).toBeGreaterThan(0);
    expect(s.metrics.hits.count).toBe(s.totals.requests);
  });

  it('a worker of another Bulwark version refuses the run with a clear error', async () => {
    const pkgFile = join(install.prefix, 'lib', 'node_modules', 'bulwark', 'package.json');
    const pkg = JSON.parse(readFileSync(pkgFile, 'utf8'));
    writeFileSync(pkgFile, JSON.stringify({ ...pkg, version: '0.0.0-other' }));
    const { url } = await startWorker([install.bin]);
    writeFileSync(pkgFile, JSON.stringify(pkg));
    const file = join(dir, 'metrics.ts');
    writeFileSync(file, METRICS_SCENARIO);
    const r = await runCli(['load', file, '--host', server.url, '--quiet', '--remote-worker', url], {
      env: { BULWARK_WORKER_TOKEN: TOKEN },
      timeoutMs: 60_000,
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      new RegExp(`worker ${url}: version mismatch: coordinator runs bulwark ${pkg.version}, worker 0\\.0\\.0-other`),
    );
  });
});

// Two VUs on two workers: VU 1 runs on the first, VU 2 on the second, and each counts its own hits.
const LOSS_SCENARIO = `import { scenario, user, Counter, constant } from 'bulwark';
const hits = new Counter('hits');
export default scenario({
  users: [user('R', { wait: constant(0.05), tasks: [async (vu) => { await vu.http.get('/api/products'); hits.add(1, { vu: String(vu.id) }); }] })],
  load: { vus: 2, duration: '6s', gracefulStop: '1s' },
  thresholds: { 'hits{vu:1}': ['count>0'], 'hits{vu:2}': ['count>0'] },
});
`;

async function runAndKillSecond(extra: string[]) {
  const a = await startWorker([process.execPath, CLI]);
  const b = await startWorker([process.execPath, CLI]);
  const file = join(dir, 'loss.ts');
  writeFileSync(file, LOSS_SCENARIO);
  const out = join(dir, `loss${extra.join('')}.json`);
  const r = await runCli(
    [
      'load',
      file,
      '--host',
      server.url,
      '--summary-json',
      out,
      '--remote-worker',
      a.url,
      '--remote-worker',
      b.url,
      ...extra,
    ],
    {
      env: { BULWARK_WORKER_TOKEN: TOKEN },
      timeoutMs: 60_000,
      onSpawn: (child) => {
        // Kill the second worker 2.5 s into the load: it has flushed its metrics at least twice.
        child.stderr!.on('data', (d: Buffer) => {
          if (d.toString().includes('running ')) setTimeout(() => b.child.kill('SIGKILL'), 2500);
        });
      },
    },
  );
  return { r, b, out };
}

describe('a worker dying mid-run (defect 3)', () => {
  it('is named, its merged metrics are kept and the others finish the run (--on-worker-loss continue)', async () => {
    const { r, b, out } = await runAndKillSecond([]);
    expect(r.stderr).toMatch(new RegExp(`worker ${b.url} lost at \\d+\\.\\ds`));
    expect(r.code).toBe(0);
    const s = JSON.parse(readFileSync(out, 'utf8'));
    expect(s.aborted).toBe(false);
    expect(s.workerLosses).toHaveLength(1);
    expect(s.workerLosses[0].worker).toBe(b.url);
    // Both VUs' hits are in the totals: the lost worker's up to its last flush.
    expect(s.thresholds.map((t: { ok: boolean }) => t.ok)).toEqual([true, true]);
    expect(s.metrics.hits.count).toBe(s.totals.requests);
  });

  it('stops the run, still writing the summary, with --on-worker-loss abort (exit 1)', async () => {
    const { r, b, out } = await runAndKillSecond(['--on-worker-loss', 'abort']);
    expect(r.stderr).toMatch(new RegExp(`worker ${b.url} lost at \\d+\\.\\ds`));
    expect(r.code).toBe(1);
    const s = JSON.parse(readFileSync(out, 'utf8'));
    expect(s.aborted).toBe(true);
    expect(s.workerLosses[0].worker).toBe(b.url);
    expect(s.thresholds.map((t: { ok: boolean }) => t.ok)).toEqual([true, true]);
  });

  it('rejects an unknown --on-worker-loss policy as a usage error', async () => {
    const file = join(dir, 'loss.ts');
    writeFileSync(file, LOSS_SCENARIO);
    const r = await runCli(['load', file, '--on-worker-loss', 'retry']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--on-worker-loss: "retry" must be abort or continue/);
  });
});
