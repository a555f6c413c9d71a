import type { ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { destroyCluster, initCluster, readSpec } from '../../src/cluster/index.js';
import { archivingProblem, SCRATCH_ROWS, scratchTableName } from '../../src/drill/index.js';
import { isRoot } from '../../src/lib/child.js';
import { postgresIds } from '../../src/lib/postgres.js';
import { CLI, runCli } from '../harness/cli.js';
import { startTestS3, type TestS3 } from '../harness/s3.js';
import { startStagingShop } from './staging-shop.js';

const shellArg = (s: string) => `"${s.replace(/(["\\$`])/g, '\\$1')}"`;

describe('drill --config pitr: archiving check and scratch table name (pure)', () => {
  it('archive_command must be bulwark wal push into the configured repository', () => {
    const uri = 'file:///var/backups/shop';
    expect(archivingProblem('on', `"/usr/bin/node" "/x/main.js" wal push "%p" --repo "${uri}"`, uri)).toBeUndefined();
    expect(archivingProblem('on', `bulwark wal push %p --repo '${uri}/'`, uri)).toBeUndefined();
    expect(archivingProblem('off', `bulwark wal push %p --repo ${uri}`, uri)).toMatch(/archive_mode is off/);
    expect(archivingProblem('on', 'cp %p /archive/%f', uri)).toMatch(/not `bulwark wal push`/);
    // a repository whose URI merely starts like the configured one is another repository
    expect(archivingProblem('on', `bulwark wal push %p --repo ${uri}-old`, uri)).toMatch(/does not archive into/);
  });

  it("the only table the step drops is the drill's own, named from a hex run id", () => {
    expect(scratchTableName('a1b2c3d4e5f6')).toBe('bulwark_drill_oops_a1b2c3d4e5f6');
    expect(() => scratchTableName('x; DROP TABLE orders')).toThrow(/bad drill run id/);
  });
});

/**
 * The pitr step against a database named in the config: a local cluster (primary only) archiving into
 * a file repository with `bulwark wal push`, the demo shop writing orders into it (the "user's" system,
 * started by the test). The drill must drop only its own scratch table and restore into a new folder.
 */
describe('bulwark drill --config: pitr against the configured database and repository', () => {
  let dir: string;
  let pgDir: string;
  let repoDir: string;
  let shop: ChildProcess | undefined;
  let shopUrl: string;
  let pgUrl: string;
  const configs: string[] = [];

  const writeConfig = (body: object) => {
    const file = join(dir, `bulwark.config.${configs.length}.mjs`);
    writeFileSync(file, `export default ${JSON.stringify(body, null, 2)};\n`);
    configs.push(file);
    return file;
  };
  const tables = async (): Promise<string[]> => {
    const c = new pg.Client({ connectionString: pgUrl });
    await c.connect();
    try {
      const r = await c.query(`SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1`);
      return r.rows.map((x: { tablename: string }) => x.tablename);
    } finally {
      await c.end();
    }
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'bulwark-drill-pitr-'));
    chmodSync(dir, 0o755); // PostgreSQL runs as the postgres user
    pgDir = join(dir, 'pg');
    repoDir = join(dir, 'repo');
    mkdirSync(repoDir, { mode: 0o755 });
    if (isRoot()) chownSync(repoDir, postgresIds().uid, postgresIds().gid);
    await initCluster({
      dir: pgDir,
      replicas: 0,
      name: 'drillpitr',
      settings: {
        archive_mode: 'on',
        archive_command: `${shellArg(process.execPath)} ${shellArg(CLI)} wal push "%p" --repo ${shellArg(`file://${repoDir}`)}`,
      },
    });
    const primary = readSpec(pgDir).nodes[0]!;
    pgUrl = `postgresql://postgres@127.0.0.1:${primary.port}/postgres`;
    ({ child: shop, url: shopUrl } = await startStagingShop(pgDir));
  }, 120_000);

  afterAll(async () => {
    shop?.kill('SIGTERM');
    await destroyCluster(pgDir).catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  it('refuses up front (exit 2): no consent to a scratch table, an existing copy folder, WAL archived elsewhere', async () => {
    const base = { backup: { pg: pgUrl, repo: `file://${repoDir}` } };
    const noConsent = writeConfig({
      ...base,
      drill: { url: shopUrl, pitr: { dir: join(dir, 'copy-a'), table: 'orders' } },
    });
    const r1 = await runCli(['drill', '--config', noConsent, '--steps', 'pitr'], { timeoutMs: 30_000 });
    expect(r1.code, r1.stderr).toBe(2);
    expect(r1.stderr).toContain('drill.pitr.scratchTable is not true');

    mkdirSync(join(dir, 'exists'));
    const exists = writeConfig({
      ...base,
      drill: { url: shopUrl, pitr: { dir: join(dir, 'exists'), table: 'orders', scratchTable: true } },
    });
    const r2 = await runCli(['drill', '--config', exists, '--steps', 'pitr'], { timeoutMs: 30_000 });
    expect(r2.code, r2.stderr).toBe(2);
    expect(r2.stderr).toContain(`drill.pitr.dir: ${join(dir, 'exists')} exists`);

    const elsewhere = writeConfig({
      backup: { pg: pgUrl, repo: `file://${dir}/other-repo` },
      drill: { url: shopUrl, pitr: { dir: join(dir, 'copy-b'), table: 'orders', scratchTable: true } },
    });
    const r3 = await runCli(['drill', '--config', elsewhere, '--steps', 'pitr'], { timeoutMs: 30_000 });
    expect(r3.code, r3.stderr).toBe(2);
    expect(r3.stderr).toContain(`does not archive its WAL into file://${dir}/other-repo`);
    expect(existsSync(join(dir, 'copy-b'))).toBe(false);

    const badKey = writeConfig({
      ...base,
      drill: { url: shopUrl, pitr: { dir: join(dir, 'copy-c'), table: 'orders; drop', scratchTable: true } },
    });
    const r4 = await runCli(['drill', '--config', badKey, '--steps', 'pitr'], { timeoutMs: 30_000 });
    expect(r4.code, r4.stderr).toBe(2);
    expect(r4.stderr).toMatch(/drill\.pitr\.table: /);
    expect(await tables()).toEqual(['orders']); // nothing was created or dropped
  }, 120_000);

  it("drops only its own scratch table, restores to just before the drop into a new folder, and finds every row of it and the user's orders (exit 0)", async () => {
    const copyDir = join(dir, 'copy');
    const file = writeConfig({
      backup: { pg: pgUrl, repo: `file://${repoDir}` },
      drill: { url: shopUrl, rate: 20, pitr: { dir: copyDir, table: 'orders', scratchTable: true } },
    });
    const tablesBefore = await tables();
    const journalFile = join(dir, 'pitr.json');
    const r = await runCli(['drill', '--config', file, '--steps', 'pitr', '--duration', '2s', '--json', journalFile], {
      timeoutMs: 240_000,
    });
    expect(r.code, r.stderr + r.stdout).toBe(0);
    const journal = JSON.parse(readFileSync(journalFile, 'utf8'));
    expect(journal.experiment.configuration.steps).toEqual(['pitr']);
    const [step] = journal.steps;
    expect(step.step).toBe('pitr');
    expect(step.deviated).toBe(false);
    expect(step.measured.scratchTable).toMatch(/^bulwark_drill_oops_[a-f0-9]+$/);
    expect(step.measured.rowsRecovered).toBe(SCRATCH_ROWS);
    expect(step.measured.tableCountBeforeTarget).toBeGreaterThan(0); // the shop took orders under the drill's load
    expect(step.measured.tableCountInCopy).toBeGreaterThanOrEqual(step.measured.tableCountBeforeTarget);
    expect(step.measured.copyDir).toBe(copyDir);
    expect(journal.measured.pitrRowsRecovered).toBe(SCRATCH_ROWS);
    // the user's database: the same tables as before (the scratch table is gone), orders kept
    expect(await tables()).toEqual(tablesBefore);
    const c = new pg.Client({ connectionString: pgUrl });
    await c.connect();
    try {
      const n = Number((await c.query('SELECT count(*) AS n FROM orders')).rows[0].n);
      expect(n).toBeGreaterThanOrEqual(step.measured.tableCountInCopy);
    } finally {
      await c.end();
    }
    // the copy was the drill's: stopped and its folder removed at the end
    expect(existsSync(copyDir)).toBe(false);
    expect(journal.cleanup.join('\n')).toContain(`PITR copy stopped and ${copyDir} removed`);
  }, 300_000);
});

/**
 * The same step with the repository on S3 (s3rver over real HTTP), its endpoint in the config's
 * backup.s3 (not in the URI): the archive_command reads it through --config, and so must the copy's
 * restore_command.
 */
describe('bulwark drill --config: pitr with an S3 repository configured in backup.s3', () => {
  let dir: string;
  let pgDir: string;
  let s3: TestS3;
  let shop: ChildProcess | undefined;
  let shopUrl: string;
  let file: string;
  const repo = 's3://bulwark-test/drill-pitr';

  beforeAll(async () => {
    s3 = await startTestS3();
    dir = mkdtempSync(join(tmpdir(), 'bulwark-drill-pitr-s3-'));
    chmodSync(dir, 0o755);
    pgDir = join(dir, 'pg');
    file = join(dir, 'bulwark.config.mjs');
    await initCluster({
      dir: pgDir,
      replicas: 0,
      name: 'drillpitrs3',
      settings: {
        archive_mode: 'on',
        archive_command: `${shellArg(process.execPath)} ${shellArg(CLI)} wal push "%p" --repo ${shellArg(repo)} --config ${shellArg(file)}`,
      },
    });
    const primary = readSpec(pgDir).nodes[0]!;
    ({ child: shop, url: shopUrl } = await startStagingShop(pgDir, 'demo'));
    writeFileSync(
      file,
      `export default ${JSON.stringify(
        {
          backup: {
            pg: `postgresql://postgres@127.0.0.1:${primary.port}/postgres`,
            repo,
            s3: { endpoint: s3.endpoint, forcePathStyle: true, region: 'us-east-1' },
          },
          drill: { url: shopUrl, rate: 20, pitr: { dir: join(dir, 'copy'), table: 'orders', scratchTable: true } },
        },
        null,
        2,
      )};\n`,
    );
  }, 120_000);

  afterAll(async () => {
    shop?.kill('SIGTERM');
    await destroyCluster(pgDir).catch(() => {});
    await s3?.stop();
    rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  it('restores the copy from S3 with the endpoint of backup.s3 (exit 0: every scratch row back)', async () => {
    const journalFile = join(dir, 'pitr.json');
    const r = await runCli(['drill', '--config', file, '--steps', 'pitr', '--duration', '2s', '--json', journalFile], {
      timeoutMs: 240_000,
    });
    expect(r.code, r.stderr + r.stdout).toBe(0);
    const [step] = JSON.parse(readFileSync(journalFile, 'utf8')).steps;
    expect(step.measured.rowsRecovered).toBe(SCRATCH_ROWS);
    expect(step.measured.tableCountInCopy).toBeGreaterThanOrEqual(step.measured.tableCountBeforeTarget);
    expect(existsSync(join(dir, 'copy'))).toBe(false);
  }, 300_000);
});
