import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DemoServer, startDemoServer } from '../../src/demo/index.js';
import { CLI, runCli } from '../harness/cli.js';

// Issue #11, defect 7: a scenario's test data lives next to it (users.csv). import.meta.url must name
// the scenario's own file, and data() loads it once for the whole run: worker threads and remote
// workers (which have no such file) get it from the coordinator.
let dir: string;
let server: DemoServer;
let worker: ChildProcess | undefined;
const TOKEN = 'data-test-token-51aa';

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'bulwark-data-'));
  server = await startDemoServer({ port: 0 });
  writeFileSync(join(dir, 'users.csv'), 'alice,pw1\nbob,pw2\ncarol,pw3\n');
  writeFileSync(
    join(dir, 'data.ts'),
    `import { appendFileSync, readFileSync } from 'node:fs';
import { scenario, user, data, Counter } from 'bulwark';
const rows = new Counter('rows_seen');
// Each call of the loader leaves a mark next to the scenario: it must run once per run.
const users = data('users', () => {
  appendFileSync(new URL('./loads.log', import.meta.url), 'x');
  return readFileSync(new URL('./users.csv', import.meta.url), 'utf8').trim().split('\\n').map((l) => l.split(','));
});
export default scenario({
  users: [user('U', { tasks: [async (vu) => {
    const [name] = users[vu.id % users.length];
    vu.check(users, {
      'three frozen rows': (u) => u.length === 3 && Object.isFrozen(u) && Object.isFrozen(u[0]),
      'next to the scenario': () => import.meta.dirname === ${JSON.stringify(dir)},
    });
    rows.add(users.length);
    await vu.http.get('/api/products?user=' + name, { name: '/api/products' });
    await vu.sleep(0.1);
  }] })],
  load: { vus: 4, duration: '1s' },
  thresholds: { checks: ['rate==1'] },
});
`,
  );
});
afterAll(async () => {
  worker?.kill('SIGTERM');
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

function loads(): number {
  try {
    const n = readFileSync(join(dir, 'loads.log'), 'utf8').length;
    rmSync(join(dir, 'loads.log'));
    return n;
  } catch {
    return 0;
  }
}

describe('files next to the scenario and data() (defect 7)', () => {
  it('reads them via import.meta.url and loads data() once for two worker threads', async () => {
    const out = join(dir, 'threads.json');
    const r = await runCli([
      'load',
      join(dir, 'data.ts'),
      '--quiet',
      '--host',
      server.url,
      '--workers',
      '2',
      '--summary-json',
      out,
    ]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const s = JSON.parse(readFileSync(out, 'utf8'));
    expect(s.checks.every((c: { fails: number }) => c.fails === 0)).toBe(true);
    expect(s.metrics.rows_seen.count).toBe(3 * s.iterations);
    expect(loads()).toBe(1);
  });

  it('sends data() to a remote worker, which has no file to read', async () => {
    worker = spawn(process.execPath, [CLI, 'worker', '--listen', '127.0.0.1:0'], {
      env: { ...process.env, BULWARK_WORKER_TOKEN: TOKEN },
      stdio: ['ignore', 'pipe', 'pipe'],
      cwd: tmpdir(),
    });
    const url = await new Promise<string>((resolve, reject) => {
      let text = '';
      worker!.stdout!.setEncoding('utf8').on('data', (d) => {
        text += d;
        const m = /worker listening on (http:\/\/\S+)/.exec(text);
        if (m) resolve(m[1]!);
      });
      worker!.on('exit', (code) => reject(new Error(`worker exited with ${code}`)));
    });
    const out = join(dir, 'remote.json');
    const r = await runCli(
      ['load', join(dir, 'data.ts'), '--quiet', '--host', server.url, '--remote-worker', url, '--summary-json', out],
      { env: { BULWARK_WORKER_TOKEN: TOKEN } },
    );
    expect(r.code).toBe(0);
    const s = JSON.parse(readFileSync(out, 'utf8'));
    expect(s.iterations).toBeGreaterThan(0);
    expect(s.metrics.rows_seen.count).toBe(3 * s.iterations);
    expect(loads()).toBe(1);
  });
});
