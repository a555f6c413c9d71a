import { randomBytes } from 'node:crypto';
import { existsSync, rmSync } from 'node:fs';
import pg from 'pg';
import { physicalRestore, type Repository } from '../backup/index.js';
import { socketOnlySettings, socketPort } from '../backup/throwaway.js';
import { run } from '../lib/child.js';
import { POSTGRES_USER, pgBin } from '../lib/postgres.js';
import { bulwarkCommand, shellArg } from './environment.js';
import { DrillError } from './errors.js';
import { atMost, isTrue } from './hypothesis.js';
import type { DrillTarget } from './target.js';
import type { Probe } from './types.js';

/** Rows the drill writes into its scratch table before dropping it. */
export const SCRATCH_ROWS = 1000;

/** The drill-owned table of one run: the only table the pitr step ever drops. */
export function scratchTableName(runId: string): string {
  if (!/^[a-f0-9]{8,32}$/.test(runId)) throw new DrillError('BULWARK_E_DRILL', `bad drill run id ${runId}`);
  return `bulwark_drill_oops_${runId}`;
}

/**
 * Whether archive_command sends WAL into `repoUri` with bulwark (pure): PITR from that repository needs
 * every segment up to the drop in it. Returns the reason when it does not.
 */
export function archivingProblem(mode: string, command: string, repoUri: string): string | undefined {
  if (mode !== 'on' && mode !== 'always') return `archive_mode is ${mode || 'off'}`;
  if (!/\bwal push\b/.test(command))
    return `archive_command is not \`bulwark wal push\` (it is: ${command || 'empty'})`;
  const uri = repoUri.replace(/\/+$/, '');
  const named = [uri, `${uri}/`].some((u) =>
    [` ${u} `, ` '${u}'`, ` "${u}"`, `=${u} `, `='${u}'`, `="${u}"`].some((f) => ` ${command} `.includes(f)),
  );
  if (!named) return `archive_command does not archive into ${uri} (it is: ${command})`;
  return undefined;
}

async function withClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000 });
  c.on('error', () => {});
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => {});
  }
}

/**
 * Before the drill starts: the configured primary archives its WAL into the configured repository
 * (else the copy could never reach the drop). Connects to the database (the guard has passed).
 */
export async function requireArchivingIntoRepo(t: DrillTarget): Promise<void> {
  if (!t.pitr || !t.pg || !t.repo) return;
  const fail = (why: string) =>
    new DrillError(
      'BULWARK_E_DRILL_TARGET',
      `${t.file}: step pitr: the database of drill.pg (or backup.pg) does not archive its WAL into ${t.repo}: ${why} (set archive_mode = on and archive_command = 'bulwark wal push "%p" --repo ${t.repo}')`,
    );
  let row: { mode: string; command: string };
  try {
    row = await withClient(t.pg, async (c) => {
      const r = await c.query(
        `SELECT current_setting('archive_mode') AS mode, current_setting('archive_command') AS command`,
      );
      return r.rows[0] as { mode: string; command: string };
    });
  } catch (err) {
    throw new DrillError(
      'BULWARK_E_DRILL_TARGET',
      `${t.file}: step pitr: cannot read archive_mode and archive_command of the database: ${(err as Error).message}`,
    );
  }
  const why = archivingProblem(row.mode, row.command, t.repo);
  if (why) throw fail(why);
}

export interface ConfiguredPitrOutcome {
  probes: Probe[];
  measured: Record<string, number | string | boolean | null>;
  faultAt: number;
}

/**
 * The pitr step against the user's database: create and fill the drill's own scratch table, count the
 * user's table, take the recovery target, DROP the scratch table (the "oops"), wait until the WAL of the
 * drop is archived, restore into a new instance in drill.pitr.dir (socket only, trust on that socket,
 * never the user's server) and check the copy: every scratch row back, the user's count at least what
 * it was before the target. `onCleanup` registers stopping the copy and removing its folder.
 */
export async function configuredPitr(o: {
  target: DrillTarget;
  repo: Repository;
  log: (line: string) => void;
  onCleanup: (what: string, fn: () => Promise<unknown>) => void;
  waitUntil: (what: () => Promise<boolean>, ms: number) => Promise<boolean>;
}): Promise<ConfiguredPitrOutcome> {
  const t = o.target;
  const p = t.pitr!;
  const pgUrl = t.pg!;
  const repoUri = t.repo!;
  if (existsSync(p.dir))
    throw new DrillError('BULWARK_E_DRILL', `${p.dir} exists: the copy goes into a new folder the drill creates`);
  const scratch = scratchTableName(randomBytes(6).toString('hex'));
  const readNumber = (r: pg.QueryResult) => {
    const v = r.rows[0] ? Object.values(r.rows[0])[0] : undefined;
    const n = Number(v);
    if (v === null || v === undefined || !Number.isFinite(n))
      throw new DrillError('BULWARK_E_DRILL', `drill.pitr.count must answer one number (it answered ${String(v)})`);
    return n;
  };
  const before = await withClient(pgUrl, async (c) => {
    await c.query(`CREATE TABLE ${scratch} (id bigint PRIMARY KEY, note text NOT NULL)`);
    await c.query(`INSERT INTO ${scratch} SELECT g, 'written by bulwark drill' FROM generate_series(1, $1::int) g`, [
      SCRATCH_ROWS,
    ]);
    o.log(`created ${scratch} with ${SCRATCH_ROWS} rows (the drill's own table: the only one it drops)`);
    const count = readNumber(await c.query(p.count));
    // the target is read after the count: everything counted committed before it
    const at = String(
      (await c.query(`SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00' AS t`))
        .rows[0].t,
    );
    return { count, at };
  });
  o.log(`${p.table}: ${before.count} (drill.pitr.count) before the recovery target ${before.at}`);
  await new Promise((r) => setTimeout(r, 20)); // the drop commits strictly after the target
  const { dropAt, segment } = await withClient(pgUrl, async (c) => {
    await c.query(`DROP TABLE ${scratch}`);
    const dropAt = Date.now();
    const seg = await c.query('SELECT pg_walfile_name(pg_switch_wal()) AS seg');
    return { dropAt, segment: String(seg.rows[0].seg) };
  });
  o.log(`DROP TABLE ${scratch} (the oops); waiting for WAL ${segment} to reach ${repoUri}`);
  const archived = await o.waitUntil(
    () =>
      withClient(pgUrl, async (c) => {
        const last = (await c.query('SELECT last_archived_wal FROM pg_stat_archiver')).rows[0].last_archived_wal as
          | string
          | null;
        return last !== null && last.slice(8) >= segment.slice(8);
      }),
    60_000,
  );
  if (!archived) throw new DrillError('BULWARK_E_DRILL', `WAL segment ${segment} was not archived within 60 s`);
  const port = await socketPort();
  o.onCleanup(`PITR copy stopped and ${p.dir} removed`, async () => {
    if (existsSync(p.dir)) {
      await run(pgBin('pg_ctl'), ['-D', p.dir, '-m', 'immediate', '-w', 'stop'], {
        asUser: POSTGRES_USER,
        check: false,
      });
      rmSync(p.dir, { recursive: true, force: true });
    }
  });
  const t0 = Date.now();
  const restored = await physicalRestore({
    repo: o.repo,
    pgdata: p.dir,
    target: { kind: 'time', time: before.at },
    // backup.s3 options (endpoint, region...) reach `wal fetch` through the config file, as they reach
    // `wal push` in an archive_command that names it
    restoreCommand: `${bulwarkCommand()} wal fetch "%f" "%p" --repo ${shellArg(repoUri)}${repoUri.startsWith('s3://') && t.s3 && Object.keys(t.s3).length ? ` --config ${shellArg(t.file)}` : ''}`,
    start: true,
    archiveMode: 'off',
    // the copy listens on a socket in its own folder only (no TCP), trust for that socket alone
    settings: socketOnlySettings(p.dir, port),
    trustLocalSocket: true,
    timeoutMs: 10 * 60_000,
  });
  // the copy is the user's cluster: same role and database as drill.pg, on the copy's own socket
  const u = new URL(pgUrl);
  const copyUrl = `postgresql://${u.username || 'postgres'}@${encodeURIComponent(p.dir)}:${port}/${u.pathname.slice(1) || 'postgres'}`;
  const after = await withClient(copyUrl, async (c) => ({
    scratch: Number((await c.query(`SELECT count(*) AS n FROM ${scratch}`)).rows[0].n),
    count: readNumber(await c.query(p.count)),
  }));
  const queryableMs = Date.now() - t0;
  o.log(
    `copy in ${p.dir} queryable ${(queryableMs / 1000).toFixed(1)} s after the restore began (${restored.started?.stoppedAt ?? 'end of archive'}): ${after.scratch} of ${SCRATCH_ROWS} rows of ${scratch}; ${p.table}: ${after.count}`,
  );
  return {
    faultAt: dropAt,
    probes: [
      atMost(`rows of the dropped ${scratch} missing from the copy`, SCRATCH_ROWS - after.scratch, 0),
      isTrue(
        `${p.table} in the copy holds what it held before the target (${before.count})`,
        after.count >= before.count,
        `${after.count} in the copy`,
      ),
      isTrue('copy is queryable', true),
    ],
    measured: {
      targetTime: before.at,
      scratchTable: scratch,
      scratchRowsWritten: SCRATCH_ROWS,
      rowsRecovered: after.scratch,
      tableCountBeforeTarget: before.count,
      tableCountInCopy: after.count,
      restoreMs: restored.restoreMs,
      recoveryMs: restored.started?.recoveryMs ?? null,
      timeToQueryableMs: queryableMs,
      backupUsed: restored.backup.id,
      copyDir: p.dir,
    },
  };
}
