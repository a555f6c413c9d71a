import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DemoServer, startDemoServer } from '../../src/demo/index.js';
import { runCli } from '../harness/cli.js';

let dir: string;
let server: DemoServer;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'bulwark-sigint-'));
  server = await startDemoServer({ port: 0 });
});
afterAll(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('Ctrl-C', () => {
  it('stops gracefully, exits 130 and still prints and writes every report (defect 6)', async () => {
    const file = join(dir, 'long.ts');
    writeFileSync(
      file,
      `import { scenario, user, constant } from 'bulwark';
export default scenario({
  users: [user('Slow', { wait: constant(0.05), tasks: [async (vu) => void (await vu.http.get('/api/products'))] })],
  load: { vus: 3, duration: '10m' },
});
`,
    );
    const out = join(dir, 'long.json');
    const reports = ['--html', 'long.html', '--junit', 'long.xml', '--csv', 'long.csv'];
    const r = await runCli(['load', file, '--host', server.url, '--summary-json', out, ...reports], {
      cwd: dir,
      onSpawn: (child) => {
        // Interrupt two seconds after the load has started (the "running ..." line on stderr).
        child.stderr!.on('data', (d: Buffer) => {
          if (d.toString().includes('running ')) setTimeout(() => child.kill('SIGINT'), 2000);
        });
      },
    });
    expect(r.stderr).toMatch(/running \S*long\.ts: constant-vus, up to 3 VUs, 10m/);
    expect(r.stderr).toMatch(/stopping gracefully/);
    expect(r.code).toBe(130);
    expect(r.stdout).toMatch(/stopped early/);
    for (const f of ['long.html', 'long.xml', 'long.csv']) expect(existsSync(join(dir, f))).toBe(true);
    const s = JSON.parse(readFileSync(out, 'utf8'));
    expect(s.aborted).toBe(true);
    expect(s.totals.requests).toBeGreaterThan(10);
    expect(s.durationSeconds).toBeLessThan(60);
  });
});
