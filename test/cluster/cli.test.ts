import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GlobalInstall, installGlobally } from '../harness/global-install.js';
import { makePostgresOwnedTempDir } from '../harness/postgres.js';
import { queryNode } from './helpers.js';

// The CLI exactly as users get it: npm pack + npm install -g, run as root (PostgreSQL then runs as postgres).
let g: GlobalInstall;
let root: string;
let dir: string;

function bulwark(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(g.bin, args, { timeout: 120_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as any).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

beforeAll(async () => {
  g = installGlobally();
  root = makePostgresOwnedTempDir('bulwark-cli-');
  dir = join(root, 'c');
});

afterAll(async () => {
  if (dir) await bulwark('cluster', 'destroy', '--dir', dir);
  g?.remove();
  const { rmSync } = await import('node:fs');
  if (root) rmSync(root, { recursive: true, force: true });
});

describe('bulwark cluster from a global install', () => {
  it('rejects bad usage with exit code 2 and one line', async () => {
    const r1 = await bulwark('cluster', 'init', '--dir', join(root, 'x'), '--replicas', 'two');
    expect(r1.code).toBe(2);
    expect(r1.stderr).toMatch(/--replicas must be a whole number/);
    const r2 = await bulwark('cluster', 'init', '--dir', join(root, 'x'), '--auth', 'md5');
    expect(r2.code).toBe(2);
    expect(r2.stderr.trim().split('\n')).toHaveLength(1);
    const r4 = await bulwark('cluster', 'monitor', '--dir', root, '--log-format', 'xml');
    expect(r4.code).toBe(2);
    expect(r4.stderr).toMatch(/--log-format must be json or text/);
    const r3 = await bulwark('cluster', 'status', '--dir', root);
    expect(r3.code).toBe(2);
    expect(r3.stderr).toMatch(/not a Bulwark cluster/);
  });

  it('init --auth scram, status --json, switchover, history, stop/start, destroy', async () => {
    const init = await bulwark(
      'cluster',
      'init',
      '--dir',
      dir,
      '--replicas',
      '2',
      '--auth',
      'scram',
      '--set',
      'fsync=off',
      '--set',
      'shared_buffers=32MB',
    );
    expect(init.stderr).toBe(init.code === 0 ? init.stderr : '');
    expect(init.code).toBe(0);
    const status = JSON.parse((await bulwark('cluster', 'status', '--dir', dir, '--json')).stdout);
    expect(status.nodes).toHaveLength(3);
    for (const n of status.nodes)
      expect(Object.keys(n)).toEqual(
        expect.arrayContaining(['name', 'host', 'port', 'role', 'timeline', 'lsn', 'lagBytes', 'lagSeconds']),
      );
    expect(status.nodes.map((n: any) => n.role)).toEqual(['primary', 'replica', 'replica']);
    expect(status.nodes[1]).toMatchObject({ timeline: 1, lagBytes: 0, lagSeconds: 0, streaming: true });
    // scram: no password, no entry
    const url = `postgresql://postgres@127.0.0.1:${status.nodes[0].port}/postgres`;
    await expect(queryNode(url, 'SELECT 1')).rejects.toThrow(/password/);
    // a permanent slot named like a node would be dropped as the cluster's own: refused, exit 2, one line
    const slot = await bulwark('cluster', 'monitor', '--dir', dir, '--slot', 'node2');
    expect(slot.code).toBe(2);
    expect(slot.stderr.trim().split('\n')).toEqual([
      expect.stringMatching(/permanent slot "node2" is the name of a node/),
    ]);

    // cluster.dir from bulwark.config.ts when --dir is not given; a bad key names the file and the key
    const { writeFileSync } = await import('node:fs');
    const cfg = join(root, 'bulwark.config.ts');
    writeFileSync(cfg, `export default { cluster: { dir: ${JSON.stringify(dir)} } };\n`);
    const viaConfig = await bulwark('cluster', 'status', '--config', cfg, '--json');
    expect(JSON.parse(viaConfig.stdout).nodes).toHaveLength(3);
    writeFileSync(cfg, `export default { cluster: { dir: ${JSON.stringify(dir)}, monitor: { failures: 0 } } };\n`);
    const bad = await bulwark('cluster', 'monitor', '--config', cfg);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/bulwark\.config\.ts: cluster\.monitor\.failures/);

    const table = await bulwark('cluster', 'status', '--dir', dir);
    expect(table.stdout).toMatch(/^NODE\s+ADDRESS\s+ROLE/);
    expect(table.stdout).toMatch(/node2\s+127\.0\.0\.1:\d+\s+replica\s+1/);

    const sw = await bulwark('cluster', 'switchover', '--dir', dir, '--to', 'node2', '--json');
    expect(sw.code).toBe(0);
    expect(JSON.parse(sw.stdout)).toMatchObject({ kind: 'switchover', from: 'node1', to: 'node2', by: 'cli' });
    const after = JSON.parse((await bulwark('cluster', 'status', '--dir', dir, '--json')).stdout);
    expect(after.nodes.map((n: any) => n.role)).toEqual(['replica', 'primary', 'replica']);
    expect(after.nodes[1].timeline).toBe(2);
    const hist = await bulwark('cluster', 'history', '--dir', dir);
    expect(hist.stdout).toMatch(/switchover\s+node1 -> node2\s+2/);

    expect((await bulwark('cluster', 'stop', '--dir', dir)).code).toBe(0);
    const down = JSON.parse((await bulwark('cluster', 'status', '--dir', dir, '--json')).stdout);
    expect(down.nodes.map((n: any) => n.role)).toEqual(['down', 'down', 'down']);
    expect((await bulwark('cluster', 'start', '--dir', dir)).code).toBe(0);
    const up = JSON.parse((await bulwark('cluster', 'status', '--dir', dir, '--json')).stdout);
    expect(up.nodes.map((n: any) => n.role)).toEqual(['replica', 'primary', 'replica']);

    expect((await bulwark('cluster', 'destroy', '--dir', dir)).code).toBe(0);
    const { existsSync } = await import('node:fs');
    expect(existsSync(dir)).toBe(false);
  });
});
