import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStorage, Repository } from '../../src/backup/index.js';
import { initCluster, readSpec, readState } from '../../src/cluster/index.js';
import { CLI, runCli } from '../harness/cli.js';
import { startStagingShop, stopStagingSystem } from './staging-shop.js';

/** A loopback TCP server that only counts connections: proves the drill contacted nothing. */
async function connectionCounter(): Promise<{ server: Server; port: number; count: () => number }> {
  let n = 0;
  const server = createServer((s) => {
    n++;
    s.destroy();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return { server, port, count: () => n };
}

function writeConfig(dir: string, body: object): string {
  const file = join(dir, `bulwark.config.${Math.random().toString(36).slice(2)}.mjs`);
  writeFileSync(file, `export default ${JSON.stringify(body, null, 2)};\n`);
  return file;
}

describe('bulwark drill --config: safety guard (nothing contacted)', () => {
  let dir: string;
  let counter: Awaited<ReturnType<typeof connectionCounter>>;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'bulwark-drill-guard-'));
    counter = await connectionCounter();
  });
  afterAll(async () => {
    await new Promise((r) => counter.server.close(r));
    rmSync(dir, { recursive: true, force: true });
  });

  it('a non-loopback database in the config without --yes-i-mean-it: exit 2 naming the target, before any connection', async () => {
    // 192.0.2.10 is a documentation address: only ever a string here (refused before any connect)
    const file = writeConfig(dir, {
      drill: {
        url: `http://127.0.0.1:${counter.port}`,
        pg: 'postgresql://postgres:do-not-print@192.0.2.10:5432/postgres',
        repo: `file://${dir}/repo`,
      },
    });
    const r = await runCli(['drill', '--config', file, '--steps', 'backup'], { timeoutMs: 30_000 });
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toContain(file);
    expect(r.stderr).toContain('database (drill.pg) 192.0.2.10:5432');
    expect(r.stderr).toContain('--yes-i-mean-it');
    expect(r.stderr + r.stdout).not.toContain('do-not-print');
    expect(counter.count()).toBe(0); // the (local) shop was not contacted either
  });

  it('a non-loopback shop URL without --yes-i-mean-it: exit 2 naming it; the local database is not contacted', async () => {
    const file = writeConfig(dir, {
      backup: { pg: `postgresql://postgres@127.0.0.1:${counter.port}/postgres`, repo: `file://${dir}/repo` },
      drill: { url: 'http://192.0.2.10:8080' },
    });
    const r = await runCli(['drill', '--config', file], { timeoutMs: 30_000 });
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toContain('shop (drill.url) 192.0.2.10:8080');
    expect(counter.count()).toBe(0);
  });

  it('bad config and unsupported steps are refused with exit 2, naming the file and key or the step and why', async () => {
    const unknownKey = writeConfig(dir, { drill: { url: 'http://127.0.0.1:1', clusterDir: '/x' } });
    const r1 = await runCli(['drill', '--config', unknownKey], { timeoutMs: 30_000 });
    expect(r1.code).toBe(2);
    expect(r1.stderr).toMatch(new RegExp(`${unknownKey.replace(/\./g, '\\.')}: drill: .*clusterDir`));

    const noPg = writeConfig(dir, { drill: { url: `http://127.0.0.1:${counter.port}`, repo: `file://${dir}/r` } });
    const r2 = await runCli(['drill', '--config', noPg], { timeoutMs: 30_000 });
    expect(r2.code).toBe(2);
    expect(r2.stderr).toContain('drill.pg (or backup.pg): missing');

    const ok = writeConfig(dir, {
      drill: {
        url: `http://127.0.0.1:${counter.port}`,
        pg: `postgresql://postgres@127.0.0.1:${counter.port}/postgres`,
        repo: `file://${dir}/r`,
      },
    });
    const r3 = await runCli(['drill', '--config', ok, '--steps', 'backup,failover'], { timeoutMs: 30_000 });
    expect(r3.code).toBe(2);
    expect(r3.stderr).toContain('step failover cannot run with --config');
    const r4 = await runCli(['drill', '--config', ok, '--sync'], { timeoutMs: 30_000 });
    expect(r4.code).toBe(2);
    expect(r4.stderr).toContain('--sync applies to the embedded drill only');
    expect(counter.count()).toBe(0);
  });
});

describe('bulwark drill --config: against a local system named in the config', () => {
  let dir: string;
  let pgDir: string;
  let shop: ChildProcess | undefined;
  let monitor: ChildProcess | undefined;
  let shopUrl: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'bulwark-drill-cfg-'));
    chmodSync(dir, 0o755); // PostgreSQL runs as the postgres user
    pgDir = join(dir, 'pg');
    await initCluster({ dir: pgDir, replicas: 1, name: 'drillcfg' });
    // the user's shop: the demo shop storing orders in that cluster, started by the test, not the drill
    ({ child: shop, url: shopUrl } = await startStagingShop(pgDir));
  }, 120_000);

  afterAll(() => stopStagingSystem({ shop, monitor, pgDir, dir }), 60_000);

  it('refuses the failover step up front when no monitor runs on the configured cluster (the drill brings none)', async () => {
    const primary = readSpec(pgDir).nodes[0]!;
    const file = writeConfig(dir, {
      backup: { pg: `postgresql://postgres@127.0.0.1:${primary.port}/postgres`, repo: `file://${dir}/repo-x` },
      cluster: { dir: pgDir },
      drill: { url: shopUrl },
    });
    const r = await runCli(['drill', '--config', file, '--steps', 'failover'], { timeoutMs: 30_000 });
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toContain(`no failover monitor is running on ${pgDir}`);
  });

  it('runs backup and kill -9 of the primary under load against the configured shop, database, repository and cluster with its own monitor (exit 0), stopping nothing of it', async () => {
    // the user's own failover monitor, started by the test (as staging would run it), not by the drill
    monitor = spawn(
      process.execPath,
      [CLI, 'cluster', 'monitor', '--dir', pgDir, '--interval', '500ms', '--failures', '3', '--log-format', 'text'],
      { stdio: 'ignore' },
    );
    const lock = join(pgDir, 'monitor.lock');
    for (let i = 0; i < 100 && !existsSync(lock); i++) await new Promise((r) => setTimeout(r, 100));
    expect(existsSync(lock)).toBe(true);
    const primary = readSpec(pgDir).nodes[0]!;
    expect(readState(pgDir)?.primary).toBe(primary.name);
    const repoDir = join(dir, 'repo');
    const file = writeConfig(dir, {
      backup: {
        // the password is ignored by the trust-auth test cluster; it must never be printed
        pg: `postgresql://postgres:never-printed@127.0.0.1:${primary.port}/postgres`,
        repo: `file://${repoDir}`,
      },
      cluster: { dir: pgDir },
      drill: { url: shopUrl, rate: 20 },
    });
    const journalFile = join(dir, 'journal.json');
    const r = await runCli(['drill', '--config', file, '--duration', '2s', '--json', journalFile], {
      timeoutMs: 150_000,
    });
    expect(r.code, r.stderr + r.stdout).toBe(0);
    const journal = JSON.parse(readFileSync(journalFile, 'utf8'));
    expect(journal.status).toBe('completed');
    expect(journal.deviated).toBe(false);
    expect(journal.experiment.configuration.steps).toEqual(['backup', 'failover']);
    expect(journal.experiment.configuration.target).toEqual({
      file,
      url: shopUrl,
      database: `127.0.0.1:${primary.port}`,
      repository: `file://${repoDir}`,
    });
    const [backup, failover] = journal.steps;
    expect(backup.step).toBe('backup');
    expect(backup.before.steady_state_met).toBe(true);
    expect(backup.measured.failedRequests).toBe(0);
    // the backup the journal names is in the configured repository
    const backups = await new Repository(openStorage(`file://${repoDir}`)).listBackups();
    expect(backups.map((b: { id: string }) => b.id)).toContain(backup.measured.backupId);
    // failover: the user's monitor promoted the replica; the journal says which, with the measured RPO
    expect(failover.step).toBe('failover');
    expect(failover.measured.killedNode).toBe(primary.name);
    expect(failover.measured.newPrimary).toBe(readState(pgDir)?.primary);
    expect(failover.measured.newPrimary).not.toBe(primary.name);
    expect(failover.measured.lostOrders).toBe(0);
    expect(failover.measured.ordersAcknowledged).toBeGreaterThan(0);
    expect(failover.measured.rtoMs).toBeGreaterThan(0);
    expect(failover.after.steady_state_met).toBe(true);
    expect(journal.measured.ordersAcknowledged).toBeGreaterThan(0);
    // the user's shop and monitor keep running: the drill stops only what it started (its pool)
    expect(journal.cleanup.join('\n')).toMatch(/nothing started/);
    expect(monitor.exitCode).toBeNull();
    const health = await fetch(`${shopUrl}/health`);
    expect(health.status).toBe(200);
    expect(((await health.json()) as { label: string }).label).toBe('staging');
    // the orders the drill's load placed are on the (new) primary of the configured cluster
    const now = readSpec(pgDir).nodes.find((n) => n.name === readState(pgDir)?.primary)!;
    const client = new pg.Client({ host: '127.0.0.1', port: now.port, user: 'postgres', database: 'postgres' });
    await client.connect();
    try {
      const n = Number((await client.query('SELECT count(*) AS n FROM orders')).rows[0].n);
      expect(n).toBeGreaterThanOrEqual(journal.measured.ordersAcknowledged);
    } finally {
      await client.end();
    }
    expect(r.stderr + r.stdout + readFileSync(journalFile, 'utf8')).not.toContain('never-printed');
  }, 180_000);
});
