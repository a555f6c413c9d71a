import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStorage, Repository } from '../../src/backup/index.js';
import { destroyCluster, initCluster, readSpec } from '../../src/cluster/index.js';
import { CLI, runCli } from '../harness/cli.js';

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
  let shopUrl: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'bulwark-drill-cfg-'));
    chmodSync(dir, 0o755); // PostgreSQL runs as the postgres user
    pgDir = join(dir, 'pg');
    await initCluster({ dir: pgDir, replicas: 1, name: 'drillcfg' });
    // the user's shop: the demo shop storing orders in that cluster, started by the test, not the drill
    shop = spawn(process.execPath, [CLI, 'demo-server', '--port', '0', '--label', 'staging', '--cluster-dir', pgDir], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    shopUrl = await new Promise<string>((resolve, reject) => {
      let out = '';
      shop!.stdout!.setEncoding('utf8').on('data', (d) => {
        out += d;
        const m = /listening on (http:\/\/\S+)/.exec(out);
        if (m) resolve(m[1]!);
      });
      shop!.on('exit', (code) => reject(new Error(`demo-server exited ${code}`)));
    });
  }, 120_000);

  afterAll(async () => {
    shop?.kill('SIGTERM');
    await destroyCluster(pgDir).catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  it('runs the backup step under load against the configured shop, database and repository (exit 0), starts and stops nothing of it', async () => {
    const primary = readSpec(pgDir).nodes[0]!;
    const repoDir = join(dir, 'repo');
    const file = writeConfig(dir, {
      backup: {
        // the password is ignored by the trust-auth test cluster; it must never be printed
        pg: `postgresql://postgres:never-printed@127.0.0.1:${primary.port}/postgres`,
        repo: `file://${repoDir}`,
      },
      drill: { url: shopUrl, rate: 20 },
    });
    const journalFile = join(dir, 'journal.json');
    const r = await runCli(['drill', '--config', file, '--duration', '2s', '--json', journalFile], {
      timeoutMs: 110_000,
    });
    expect(r.code, r.stderr + r.stdout).toBe(0);
    const journal = JSON.parse(readFileSync(journalFile, 'utf8'));
    expect(journal.status).toBe('completed');
    expect(journal.deviated).toBe(false);
    expect(journal.experiment.configuration.steps).toEqual(['backup']);
    expect(journal.experiment.configuration.target).toEqual({
      file,
      url: shopUrl,
      database: `127.0.0.1:${primary.port}`,
      repository: `file://${repoDir}`,
    });
    expect(journal.steps).toHaveLength(1);
    const step = journal.steps[0];
    expect(step.step).toBe('backup');
    expect(step.before.steady_state_met).toBe(true);
    expect(step.after.steady_state_met).toBe(true);
    expect(step.measured.failedRequests).toBe(0);
    expect(journal.measured.ordersAcknowledged).toBeGreaterThan(0);
    // the backup the journal names is in the configured repository
    const backups = await new Repository(openStorage(`file://${repoDir}`)).listBackups();
    expect(backups.map((b: { id: string }) => b.id)).toContain(step.measured.backupId);
    // the user's shop keeps running: the drill stops only what it started (nothing here)
    expect(journal.cleanup.join('\n')).toMatch(/nothing started/);
    const health = await fetch(`${shopUrl}/health`);
    expect(health.status).toBe(200);
    expect(((await health.json()) as { label: string }).label).toBe('staging');
    // the orders the drill's load placed went to the configured database
    const client = new pg.Client({ host: '127.0.0.1', port: primary.port, user: 'postgres', database: 'postgres' });
    await client.connect();
    try {
      const n = Number((await client.query('SELECT count(*) AS n FROM orders')).rows[0].n);
      expect(n).toBeGreaterThanOrEqual(journal.measured.ordersAcknowledged);
    } finally {
      await client.end();
    }
    expect(r.stderr + r.stdout + readFileSync(journalFile, 'utf8')).not.toContain('never-printed');
  }, 120_000);
});
