import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chown, mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { asUserCommand, isRoot, run } from '../lib/child.js';
import { POSTGRES_USER, pgBin, postgresIds } from '../lib/postgres.js';
import { type DeltaResult, deltaExtract } from './delta.js';
import { BackupError } from './errors.js';
import { applyLayer } from './incremental/apply.js';
import { resolveChain } from './incremental/chain.js';
import type { BackupManifest } from './manifest.js';
import { chooseBackup, type RecoveryTarget, recoverySettings } from './pitr.js';
import { formatBytes, type ProgressListener, ProgressMeter } from './progress.js';
import type { Repository } from './repository.js';
import { writeTrustHba } from './throwaway.js';
import { continuedTimeline, resolveTargetTimeline, type TargetTimeline, walPlan } from './timelines.js';

export interface PhysicalRestoreOptions {
  repo: Repository;
  pgdata: string;
  backup?: string;
  target: RecoveryTarget;
  /** The command PostgreSQL runs to fetch WAL, e.g. `'/usr/bin/bulwark' wal fetch %f %p --repo s3://...`. */
  restoreCommand: string;
  force?: boolean;
  /** Start the server, wait until recovery reached its target and the server was promoted. */
  start?: boolean;
  action?: 'promote' | 'pause' | 'shutdown';
  /**
   * 'preserve' keeps the backup's archive_mode, so the restored server archives into the repository
   * its archive_command names (a real recovery that becomes the new primary). Default 'off': a copy
   * archiving into its source's repository adds a timeline there that later restores could follow.
   */
  archiveMode?: 'off' | 'preserve';
  /** recovery_target_timeline: default 'current' (the backup's own timeline), 'latest' or a number */
  timeline?: TargetTimeline;
  /**
   * Over an existing data folder (it must hold PG_VERSION and no running server): write only the files
   * whose content differs from the backup, remove those it does not hold. An empty folder is restored
   * normally.
   */
  delta?: boolean;
  /** to latest: restore up to a gap in the archived WAL instead of refusing (commits after it are lost) */
  acceptWalGap?: boolean;
  port?: number;
  /** more postgresql.conf settings (already quoted), e.g. a socket-only listener for throw-away copies */
  settings?: Record<string, string>;
  /** replace pg_hba.conf with `local all all trust` (throw-away copies reachable only by socket) */
  trustLocalSocket?: boolean;
  /** How long --start waits for recovery (ms). */
  timeoutMs?: number;
  onProgress?: ProgressListener;
  log?: (msg: string) => void;
}

export interface PhysicalRestoreResult {
  backup: BackupManifest;
  reason: string;
  pgdata: string;
  restoreMs: number;
  /** delta restore over an existing data folder: what was compared, rewritten, removed */
  delta?: DeltaResult;
  /** --start only */
  started?: {
    recoveryMs: number;
    totalMs: number;
    /** PostgreSQL's own words: "recovery stopping before commit of transaction 745, time ..." */
    stoppedAt?: string;
    redoDone?: string;
    timeline?: number;
    logFile: string;
  };
}

/** Who the restored files must belong to: the postgres user when we run as root, else us. */
const owner = (): { uid: number; gid: number } | undefined => (isRoot() ? postgresIds() : undefined);

/** Returns true when a delta restore goes over the folder's contents (else it is empty now). */
async function prepareDataDir(pgdata: string, force: boolean, delta = false): Promise<boolean> {
  if (existsSync(pgdata)) {
    const st = await stat(pgdata);
    if (!st.isDirectory()) throw new BackupError('BULWARK_E_TARGET_EXISTS', `${pgdata} exists and is not a folder`);
    const entries = await readdir(pgdata);
    if (entries.length && delta) {
      if (entries.includes('postmaster.pid'))
        throw new BackupError('BULWARK_E_TARGET_EXISTS', `${pgdata} holds postmaster.pid: stop that server first`);
      // files not in the backup are removed: only ever in a folder that is a PostgreSQL data folder
      if (!entries.includes('PG_VERSION'))
        throw new BackupError(
          'BULWARK_E_TARGET_EXISTS',
          `${pgdata} is not empty and holds no PG_VERSION: --delta restores only over a PostgreSQL data folder`,
        );
      return true;
    }
    if (entries.length) {
      if (!force)
        throw new BackupError(
          'BULWARK_E_TARGET_EXISTS',
          `${pgdata} is not empty; pass --force to replace its contents`,
        );
      if (entries.includes('postmaster.pid'))
        throw new BackupError(
          'BULWARK_E_TARGET_EXISTS',
          `${pgdata} holds postmaster.pid: stop that server first (even with --force)`,
        );
      for (const e of entries) await rm(join(pgdata, e), { recursive: true, force: true });
    }
  } else await mkdir(pgdata, { recursive: true, mode: 0o700 });
  const o = owner();
  if (o) await chown(pgdata, o.uid, o.gid);
  await run('chmod', ['0700', pgdata]);
  return false;
}

function asPg(command: string, args: string[]) {
  const [cmd, argv] = asUserCommand(POSTGRES_USER, command, args);
  return spawn(cmd, argv, { stdio: ['pipe', 'ignore', 'pipe'] });
}

async function writeAsPg(file: string, text: string): Promise<void> {
  await run('sh', ['-c', 'cat > "$1"', 'sh', file], { asUser: POSTGRES_USER, input: text });
}

async function appendAsPg(file: string, text: string): Promise<void> {
  await run('sh', ['-c', 'cat >> "$1"', 'sh', file], { asUser: POSTGRES_USER, input: text });
}

/**
 * Physical restore and point-in-time recovery: pick the base backup for the target, stream it
 * (verified, decrypted, decompressed) into tar running as the postgres user, write recovery.signal and
 * the recovery settings. With `start`, start the server and wait until it left recovery.
 */
export async function physicalRestore(o: PhysicalRestoreOptions): Promise<PhysicalRestoreResult> {
  const t0 = Date.now();
  const picked = chooseBackup(await o.repo.listBackups(), o.target, o.backup);
  if ('error' in picked) throw new BackupError('BULWARK_E_RESTORE', picked.error);
  const m = picked.backup;
  o.log?.(`restore: ${picked.reason}`);
  // an incremental backup is laid out over its full backup and the layers between them
  const resolved = resolveChain(await o.repo.listBackups(), m);
  if ('error' in resolved) throw new BackupError('BULWARK_E_RESTORE', resolved.error);
  const [full, ...layers] = resolved.chain as [BackupManifest, ...BackupManifest[]];
  if (layers.length) o.log?.(`restore: full backup ${full.id} + ${layers.length} incremental layer(s)`);
  const timeline = await checkRecoveryWal(o, m);
  const delta = await prepareDataDir(o.pgdata, Boolean(o.force), o.delta);
  const entry = full.objects.find((e) => e.name === 'base.tar');
  if (!entry) throw new BackupError('BULWARK_E_RESTORE', `backup ${full.id} has no base.tar object`);
  const result0: { delta?: DeltaResult } = {};
  const total = resolved.chain.reduce((n, b) => n + b.sizes.stored, 0);
  const meter = new ProgressMeter('restore', total, o.onProgress);
  // decompress and untar in one shell pipeline as the postgres user: the (large) decompressed stream
  // never passes through this process, only the verified compressed bytes do
  const decompress =
    m.encoding.compression === 'zstd' ? 'zstd -d -q -c' : m.encoding.compression === 'gzip' ? 'gzip -d -c' : 'cat';
  // delta: the decompressed tar is compared with the folder in this process; otherwise tar lays it out
  const tar = delta
    ? undefined
    : asPg('bash', ['-c', `set -o pipefail; ${decompress} | tar -x -f - -C "$1"`, 'bash', o.pgdata]);
  let tarErr = '';
  tar?.stderr?.setEncoding('utf8').on('data', (d: string) => {
    tarErr = (tarErr + d).slice(-2000);
  });
  const tarDone = tar ? new Promise<number>((resolve) => tar.on('close', (c) => resolve(c ?? 1))) : Promise.resolve(0);
  try {
    if (tar) {
      await pipeline(await o.repo.readObject(full, entry, meter.add, { decompress: false }), tar.stdin!);
      const code = await tarDone;
      if (code !== 0) throw new BackupError('BULWARK_E_RESTORE', `tar exited with ${code}: ${tarErr.trim()}`);
    } else {
      const d = await deltaExtract(
        o.pgdata,
        (await o.repo.readObject(full, entry, meter.add)) as AsyncIterable<Buffer>,
        owner(),
      );
      result0.delta = d;
      o.log?.(
        `restore --delta: ${d.files} files compared, ${d.rewritten} rewritten (${formatBytes(d.bytesWritten)} written), ${d.unchanged} unchanged, ${d.removed} removed (not in the backup)`,
      );
    }
    const pgOwner = owner();
    for (const layer of layers) {
      const layerEntry = layer.objects.find((e) => e.name === 'layer');
      if (!layerEntry) throw new BackupError('BULWARK_E_RESTORE', `backup ${layer.id} has no layer object`);
      await applyLayer(
        o.pgdata,
        (await o.repo.readObject(layer, layerEntry, meter.add)) as AsyncIterable<Buffer>,
        pgOwner,
      );
    }
    const top = layers.at(-1);
    if (top?.incremental) await writeAsPg(join(o.pgdata, 'backup_label'), top.incremental.backupLabel);
  } catch (err) {
    tar?.kill('SIGKILL');
    await tarDone;
    // never leave a half-restored folder that looks like a data directory
    for (const e of await readdir(o.pgdata)) await rm(join(o.pgdata, e), { recursive: true, force: true });
    throw err instanceof BackupError
      ? err
      : new BackupError('BULWARK_E_RESTORE', `restore of ${m.id} failed: ${(err as Error).message}`, { cause: err });
  }
  meter.finish();
  // --start ends recovery by promoting (pg_ctl promote, sent once recovery runs): PostgreSQL then writes
  // an end-of-recovery record and checkpoints in the background, instead of first checkpointing
  // everything replay dirtied. To latest: standby mode, where a pending promote request still replays
  // all the archive and pg_wal hold, then promotes. To a target: pause there, which the pending request
  // turns into the promotion (pausing needs hot_standby; with it off PostgreSQL would shut down).
  const fastPromote = Boolean(o.start) && (o.action ?? 'promote') === 'promote';
  const toLatest = o.target.kind === 'latest';
  await appendAsPg(
    join(o.pgdata, 'postgresql.auto.conf'),
    recoverySettings({
      restoreCommand: o.restoreCommand,
      target: o.target,
      action: fastPromote && !toLatest ? 'pause' : (o.action ?? 'promote'),
      archiveMode: o.archiveMode,
      timeline,
      port: o.port,
      extra: fastPromote && !toLatest ? { hot_standby: 'on', ...o.settings } : o.settings,
    }),
  );
  if (o.trustLocalSocket) await writeTrustHba(o.pgdata);
  const signal = fastPromote && toLatest ? 'standby.signal' : 'recovery.signal';
  await run('touch', [join(o.pgdata, signal)], { asUser: POSTGRES_USER });
  await rm(join(o.pgdata, 'backup_manifest'), { force: true });
  const restoreMs = Date.now() - t0;
  const result: PhysicalRestoreResult = { backup: m, reason: picked.reason, pgdata: o.pgdata, restoreMs, ...result0 };
  if (!o.start) return result;

  const logFile = join(o.pgdata, 'bulwark-recovery.log');
  const t1 = Date.now();
  await run(pgBin('pg_ctl'), ['-D', o.pgdata, '-l', logFile, '-W', 'start'], { asUser: POSTGRES_USER });
  const deadline = Date.now() + (o.timeoutMs ?? 30 * 60_000);
  let promotedAt = 0;
  for (;;) {
    const log = await readFile(logFile, 'utf8').catch(() => '');
    const state = await controlState(o.pgdata);
    // repeated while recovery runs (harmless): with standby mode or a pause, it never ends without it
    if (fastPromote && state === 'in archive recovery' && Date.now() - promotedAt > 2000) {
      promotedAt = Date.now();
      await run(pgBin('pg_ctl'), ['-D', o.pgdata, '-W', 'promote'], { asUser: POSTGRES_USER, check: false });
    }
    if (state === 'in production' && /database system is ready to accept connections/.test(log)) {
      result.started = {
        recoveryMs: Date.now() - t1,
        totalMs: Date.now() - t0,
        stoppedAt: /recovery stopping [^\n]*/.exec(log)?.[0],
        redoDone: /redo done at [^\n]*/.exec(log)?.[0],
        timeline: /selected new timeline ID: (\d+)/.exec(log)
          ? Number(/selected new timeline ID: (\d+)/.exec(log)![1])
          : undefined,
        logFile,
      };
      return result;
    }
    const fatal = /(FATAL|PANIC): [^\n]*/.exec(log);
    if (fatal && !(await running(o.pgdata))) {
      throw new BackupError('BULWARK_E_RESTORE', `recovery failed: ${fatal[0]} (log: ${logFile})`);
    }
    if (/recovery has paused/.test(log) && (o.action ?? 'promote') === 'pause') {
      result.started = {
        recoveryMs: Date.now() - t1,
        totalMs: Date.now() - t0,
        stoppedAt: /recovery stopping [^\n]*/.exec(log)?.[0],
        logFile,
      };
      return result;
    }
    if (Date.now() > deadline)
      throw new BackupError('BULWARK_E_RESTORE', `recovery did not finish within the timeout (log: ${logFile})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Before anything is laid out: the timeline recovery will follow must branch from the backup's, and
 * to latest, the archived WAL on that path must have no gap. PostgreSQL takes a segment that is not
 * in the archive for the end of the WAL and promotes there, silently dropping every later commit; so
 * a gap is refused, naming the segment, unless the caller accepts the loss.
 */
async function checkRecoveryWal(o: PhysicalRestoreOptions, m: BackupManifest): Promise<TargetTimeline> {
  if (!m.pg.startWal || !m.pg.timeline) return o.timeline ?? 'current';
  const histories = await o.repo.listHistories();
  const archived = (await o.repo.listWal()).map((w) => w.name);
  let tli: number;
  let why: string;
  if (o.timeline === undefined) {
    // the default: the backup's timeline, and a timeline that replaced it (failover), never a side branch
    const c = continuedTimeline(m.pg.timeline, m.pg.startWal, histories, archived);
    tli = c.timeline;
    for (const f of c.followed) o.log?.(`restore: ${f}`);
    why = c.followed.length ? 'the timeline that continued the backup' : "the backup's own";
  } else {
    tli = resolveTargetTimeline(
      o.timeline,
      m.pg.timeline,
      histories.map((h) => h.tli),
    );
    why = String(o.timeline);
  }
  const plan = walPlan({
    startWal: m.pg.startWal,
    timeline: tli,
    history: histories.find((h) => h.tli === tli),
    archived,
  });
  if (plan.error) throw new BackupError('BULWARK_E_RESTORE', `restore of ${m.id}: ${plan.error}`);
  o.log?.(
    `restore: recovery follows timeline ${tli} (${why}); ${plan.segments.length} archived segment(s) from ${m.pg.startWal}${plan.to ? ` to ${plan.to}` : ''}`,
  );
  // PostgreSQL's own 'current' unless the default followed a timeline that replaced the backup's
  const setting: TargetTimeline = o.timeline ?? (tli === m.pg.timeline ? 'current' : tli);
  if (o.target.kind !== 'latest' || !plan.missing.length) return setting;
  const first = plan.missing[0]!;
  const what = `WAL segment ${first} is missing from ${o.repo.description} (${plan.missing.length} segment(s) missing between ${m.pg.startWal} and ${plan.to}, the newest archived)`;
  if (!o.acceptWalGap)
    throw new BackupError(
      'BULWARK_E_WAL_GAP',
      `${what}: recovery would stop before it and every commit after it would be lost. Put the segment back into the repository, or pass --accept-wal-gap to recover only up to the gap`,
    );
  o.log?.(`restore: WARNING ${what}: --accept-wal-gap: recovering up to the gap; every commit after it is lost`);
  return setting;
}

async function controlState(pgdata: string): Promise<string | undefined> {
  const r = await run(pgBin('pg_controldata'), [pgdata], { check: false, asUser: POSTGRES_USER });
  return /Database cluster state:\s+(.*)/.exec(r.stdout)?.[1]?.trim();
}

async function running(pgdata: string): Promise<boolean> {
  const r = await run(pgBin('pg_ctl'), ['-D', pgdata, 'status'], { check: false, asUser: POSTGRES_USER });
  return r.code === 0;
}
