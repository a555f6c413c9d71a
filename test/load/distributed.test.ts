import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DemoServer, startDemoServer } from '../../src/demo/index.js';
import { CLI, runCli } from '../harness/cli.js';

// Two `bulwark worker` processes stand in for two hosts; the coordinator splits the arrivals between
// them and merges their histograms.
const TOKEN = 'test-worker-token-3b1f';
let dir: string;
let server: DemoServer;
const workers: ChildProcess[] = [];
const urls: string[] = [];

function startWorker(token: string): Promise<string> {
  const child = spawn(process.execPath, [CLI, 'worker', '--listen', '127.0.0.1:0'], {
    env: { ...process.env, BULWARK_WORKER_TOKEN: token },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  workers.push(child);
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (d) => {
      out += d;
      const m = /worker listening on (http:\/\/\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    child.on('exit', (code) => reject(new Error(`worker exited with ${code}`)));
  });
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'bulwark-dist-'));
  server = await startDemoServer({ port: 0 });
  urls.push(await startWorker(TOKEN), await startWorker(TOKEN));
});
afterAll(async () => {
  for (const w of workers) w.kill('SIGTERM');
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

const SCENARIO = `import { scenario, user, Counter } from 'bulwark';
const hits = new Counter('hits');
export default scenario({
  users: [user('R', { tasks: [async (vu) => { await vu.http.get('/api/products'); hits.add(1, { host: vu.env.WORKER_TAG ?? 'x' }); }] })],
  load: { executor: 'constant-arrival-rate', rate: 100, duration: '2s', preAllocatedVUs: 5, maxVUs: 50 },
  thresholds: { http_req_failed: ['rate<0.01'] },
});
`;

describe('distributed workers', () => {
  it('splits a run across remote workers and merges their metrics exactly', async () => {
    const file = join(dir, 'dist.ts');
    writeFileSync(file, SCENARIO);
    const out = join(dir, 'dist.json');
    const r = await runCli(
      [
        'load',
        file,
        '--host',
        server.url,
        '--quiet',
        '--summary-json',
        out,
        '--remote-worker',
        urls[0]!,
        '--remote-worker',
        urls[1]!,
        '-e',
        'WORKER_TAG=t',
      ],
      { env: { BULWARK_WORKER_TOKEN: TOKEN } },
    );
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const s = JSON.parse(readFileSync(out, 'utf8'));
    // 200 arrivals in all, each started by exactly one worker.
    expect(s.totals.requests + s.droppedIterations).toBe(200);
    expect(s.metrics.hits.count).toBe(s.totals.requests);
    expect(s.thresholds[0].ok).toBe(true);
  });

  it('refuses a coordinator without the token', async () => {
    const file = join(dir, 'dist.ts');
    writeFileSync(file, SCENARIO);
    const r = await runCli(['load', file, '--host', server.url, '--quiet', '--remote-worker', urls[0]!], {
      env: { BULWARK_WORKER_TOKEN: 'wrong' },
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/refused the run: HTTP 401/);
  });
});
