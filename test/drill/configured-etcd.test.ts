import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EtcdDcs, initCluster, readSpec, readState } from '../../src/cluster/index.js';
import { CLI, runCli } from '../harness/cli.js';
import { startTestEtcd, type TestEtcd } from '../harness/etcd.js';
import { startStagingShop, stopStagingSystem } from './staging-shop.js';

// The user's monitors coordinate through etcd (`bulwark cluster monitor --etcd`): they publish the
// cluster state there, not in the folder, and hold no lock file in it. The drill must read the
// failover it tests from etcd.
describe('bulwark drill --config: failover of a cluster whose monitors coordinate through etcd', () => {
  let dir: string;
  let pgDir: string;
  let etcd: TestEtcd;
  let shop: ChildProcess | undefined;
  let monitor: ChildProcess | undefined;
  let shopUrl: string;
  const scope = 'drilletcd';

  const config = (name: string) => {
    const primary = readSpec(pgDir).nodes[0]!;
    const file = join(dir, `${name}.config.mjs`);
    const body = {
      backup: { pg: `postgresql://postgres@127.0.0.1:${primary.port}/postgres`, repo: `file://${dir}/repo` },
      cluster: { dir: pgDir, monitor: { etcd: { hosts: [etcd.url] } } },
      drill: { url: shopUrl, rate: 20 },
    };
    writeFileSync(file, `export default ${JSON.stringify(body, null, 2)};\n`);
    return file;
  };
  const etcdState = async () => {
    const dcs = new EtcdDcs({ hosts: [etcd.url], cluster: scope, name: 'test-reader' });
    try {
      return { leader: await dcs.leader(), state: await dcs.readState() };
    } finally {
      await dcs.close();
    }
  };

  beforeAll(async () => {
    etcd = await startTestEtcd();
    dir = mkdtempSync(join(tmpdir(), 'bulwark-drill-etcd-'));
    chmodSync(dir, 0o755); // PostgreSQL runs as the postgres user
    pgDir = join(dir, 'pg');
    await initCluster({ dir: pgDir, replicas: 1, name: scope });
    ({ child: shop, url: shopUrl } = await startStagingShop(pgDir));
  }, 120_000);

  afterAll(async () => {
    await stopStagingSystem({ shop, monitor, pgDir, dir });
    await etcd?.stop();
  }, 60_000);

  it('refuses the failover step up front while no monitor holds the leadership in etcd', async () => {
    const r = await runCli(['drill', '--config', config('none'), '--steps', 'failover'], { timeoutMs: 30_000 });
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toContain(`no failover monitor holds the leadership in etcd ${etcd.url} /bulwark/${scope}/`);
  });

  it('kills the primary and reads the promotion from etcd: write gap measured, 0 acknowledged orders lost (exit 0)', async () => {
    monitor = spawn(
      process.execPath,
      [CLI, 'cluster', 'monitor', '--dir', pgDir, '--etcd', etcd.url, '--interval', '500ms', '--failures', '3'],
      { stdio: 'ignore' },
    );
    const primary = readSpec(pgDir).nodes[0]!;
    for (let i = 0; i < 200 && !(await etcdState()).leader; i++) await new Promise((r) => setTimeout(r, 100));
    const before = await etcdState();
    expect(before.leader).not.toBeNull();
    // a new leader writes its state to etcd on its first change; until then the folder's is on record
    expect(before.state?.primary ?? readState(pgDir)?.primary).toBe(primary.name);
    const journalFile = join(dir, 'journal.json');
    const r = await runCli(
      ['drill', '--config', config('etcd'), '--steps', 'failover', '--duration', '2s', '--json', journalFile],
      { timeoutMs: 150_000 },
    );
    expect(r.code, r.stderr + r.stdout).toBe(0);
    const journal = JSON.parse(readFileSync(journalFile, 'utf8'));
    const [failover] = journal.steps;
    expect(failover.step).toBe('failover');
    expect(failover.measured.killedNode).toBe(primary.name);
    // the new primary the journal names is the one the monitors published in etcd
    const after = (await etcdState()).state?.primary;
    expect(after).toBeDefined();
    expect(after).not.toBe(primary.name);
    expect(failover.measured.newPrimary).toBe(after);
    // the folder's own state file was not what told the drill (etcd monitors do not write it)
    expect(readState(pgDir)?.primary).not.toBe(after);
    expect(failover.measured.rtoMs).toBeGreaterThan(0);
    expect(failover.measured.ordersAcknowledged).toBeGreaterThan(0);
    expect(failover.measured.lostOrders).toBe(0);
    expect(monitor.exitCode).toBeNull(); // the user's monitor keeps running
  }, 180_000);
});
