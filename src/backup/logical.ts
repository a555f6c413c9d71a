import { spawn } from 'node:child_process';
import { createReadStream, createWriteStream, existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, readlink, realpath, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { run } from '../lib/child.js';
import { BulwarkError, UsageError } from '../lib/errors.js';
import { pgBin } from '../lib/postgres.js';
import type { Encoding } from './codec.js';
import { BackupError } from './errors.js';
import { type BackupManifest, manifestHead, newBackupId, type ObjectEntry } from './manifest.js';
import { type PgTarget, pgEnv, quoteIdent, withClient } from './pg.js';
import { formatBytes, type ProgressListener, ProgressMeter } from './progress.js';
import type { Repository } from './repository.js';

export type DumpFormat = 'custom' | 'directory';

export interface LogicalBackupOptions {
  repo: Repository;
  pg: PgTarget;
  /** Database to dump (default: the connection's database). */
  database?: string;
  encoding: Encoding;
  label?: string;
  /** custom (default): one object, no local copy; directory: `pg_dump -Fd -j jobs`, one object per file. */
  format?: DumpFormat;
  /** directory format only: tables dumped at once (pg_dump -j; default 2). */
  jobs?: number;
  onProgress?: ProgressListener;
  /** Stops the dump (pg_dump is killed, stored objects and the temp folder removed). */
  signal?: AbortSignal;
  /** Directory format: one line at the end on how much was streamed while pg_dump ran, and the local peak. */
  log?: (msg: string) => void;
}

/** Checks a format/jobs pair; the message names the option as the CLI spells it. */
export function checkDumpOptions(format: string | undefined, jobs: number | undefined): void {
  if (format !== undefined && format !== 'custom' && format !== 'directory')
    throw new UsageError(`--format: "${format}" must be custom or directory`);
  if (jobs !== undefined && (!Number.isInteger(jobs) || jobs < 1))
    throw new UsageError(`--jobs: "${jobs}" must be a whole number >= 1`);
  if (jobs !== undefined && format !== 'directory')
    throw new UsageError('--jobs: parallel dump jobs need --format directory (pg_dump -Fc dumps with one job)');
}

/**
 * pg_dump into the repository, the manifest written last. Custom format: `pg_dump -Fc -Z0` streamed
 * into zstd/gzip, optional age encryption and storage; nothing is written to local disk. Directory
 * format: see dumpDirectory.
 */
export async function logicalBackup(o: LogicalBackupOptions): Promise<BackupManifest> {
  checkDumpOptions(o.format, o.jobs);
  const format = o.format ?? 'custom';
  const started = new Date();
  const info = await withClient(
    o.pg,
    async (c) => {
      const r = await c.query(
        `select current_database() as db, current_setting('server_version') as v, pg_database_size(current_database())::text as size,
                (select system_identifier::text from pg_control_system()) as sysid`,
      );
      return r.rows[0] as { db: string; v: string; size: string; sysid: string };
    },
    o.database,
  );
  const id = newBackupId('logical', started);
  const meter = new ProgressMeter('backup (logical)', Number(info.size), o.onProgress);
  const objects =
    format === 'directory'
      ? await dumpDirectory(o, info.db, id, o.jobs ?? 2, meter)
      : [await dumpCustom(o, info.db, id, meter)];
  meter.finish();
  const stopped = new Date();
  const raw = objects.reduce((n, e) => n + e.rawBytes, 0);
  const stored = objects.reduce((n, e) => n + e.storedBytes, 0);
  const manifest: BackupManifest = {
    ...manifestHead({ id, kind: 'logical', label: o.label, started, stopped, encoding: o.encoding }),
    objects,
    sizes: { raw, stored },
    pg: { serverVersion: info.v, systemIdentifier: info.sysid, database: info.db, dumpFormat: format },
  };
  await o.repo.writeManifest(manifest);
  return manifest;
}

async function dumpCustom(o: LogicalBackupOptions, db: string, id: string, meter: ProgressMeter): Promise<ObjectEntry> {
  const env = pgEnv(o.pg);
  const child = spawn(pgBin('pg_dump'), ['-Fc', '-Z0', '--no-password', '-d', db], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    stderr = (stderr + d).slice(-4000);
  });
  const exited = new Promise<number>((resolve) => child.on('close', (code) => resolve(code ?? 1)));
  // interrupted: pg_dump stops, its output ends short, and the exit code below removes the object
  const onAbort = () => child.kill('SIGTERM');
  o.signal?.addEventListener('abort', onAbort, { once: true });
  if (o.signal?.aborted) onAbort();
  let entry: Awaited<ReturnType<Repository['writeObject']>>;
  try {
    entry = await o.repo.writeObject(id, 'dump.pgdump', child.stdout, o.encoding, { onRawBytes: meter.add });
  } catch (err) {
    child.kill('SIGTERM');
    await exited;
    throw new BackupError(
      'BULWARK_E_BACKUP',
      `logical backup of ${db} failed: ${stderr.trim() || (err as Error).message}`,
      {
        cause: err,
      },
    );
  }
  const code = await exited;
  o.signal?.removeEventListener('abort', onAbort);
  if (code !== 0) {
    // the data object is orphaned (no manifest): it is not a backup, so remove it
    await o.repo.storage.delete([`backups/${id}/${entry.key}`]).catch(() => {});
    throw new BackupError(
      'BULWARK_E_BACKUP',
      `pg_dump of ${db} exited with ${code}: ${stderr.trim().split('\n').pop()}`,
    );
  }
  return entry;
}

/** Object names of a directory-format dump: `dump/<file>` (pg_dump writes a flat folder). */
const DUMP_FILE = /^[A-Za-z0-9_.-]+$/;

/**
 * Files of pg_dump's output folder that are complete and not yet taken (pure). A file is complete
 * once no pg_dump process holds it open: pg_dump writes toc.dat, every <dumpId>.dat and every
 * blob_<oid>.dat with one open ("wb"), write and close, and never reopens them. The large-object
 * list (blobs.toc, blobs_<dumpId>.toc from PostgreSQL 17) is opened in append mode, so it is taken
 * only after pg_dump exited. `listed` must be read BEFORE `open`, so a file created in between is
 * not in `listed`. `open` undefined means "cannot tell" (no /proc, or no permission to read it):
 * nothing is ready until pg_dump has exited, when every file is.
 */
export function finishedDumpFiles(
  listed: string[],
  open: ReadonlySet<string> | undefined,
  taken: ReadonlySet<string>,
  exited: boolean,
): string[] {
  if (!exited && open === undefined) return [];
  return listed.filter((f) => !taken.has(f) && (exited || (!open!.has(f) && !/^blobs.*\.toc$/.test(f)))).sort();
}

/** Bytes of `names` in `folder` now (files uploaded meanwhile count 0). */
async function folderBytes(folder: string, names: string[]): Promise<number> {
  let n = 0;
  for (const f of names) n += (await stat(join(folder, f)).catch(() => undefined))?.size ?? 0;
  return n;
}

/** pid and all its descendants (pg_dump -j forks its workers), from /proc/<pid>/stat's ppid field. */
async function processTree(root: number): Promise<number[]> {
  const children = new Map<number, number[]>();
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let stat: string;
    try {
      stat = await readFile(`/proc/${name}/stat`, 'utf8');
    } catch {
      continue; // exited meanwhile
    }
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    const list = children.get(ppid) ?? [];
    list.push(Number(name));
    children.set(ppid, list);
  }
  const out: number[] = [];
  const todo = [root];
  while (todo.length) {
    const pid = todo.pop()!;
    out.push(pid);
    todo.push(...(children.get(pid) ?? []));
  }
  return out;
}

/** Names of files under `dir` some process of `root`'s tree holds open, or undefined if we cannot tell. */
export async function openFilesUnder(dir: string, root: number): Promise<Set<string> | undefined> {
  if (!existsSync('/proc/self/fd')) return undefined;
  const open = new Set<string>();
  try {
    for (const pid of await processTree(root)) {
      let fds: string[];
      try {
        fds = await readdir(`/proc/${pid}/fd`);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // exited: its files are closed
        return undefined;
      }
      for (const fd of fds) {
        let target: string;
        try {
          target = await readlink(`/proc/${pid}/fd/${fd}`);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // closed meanwhile
          return undefined;
        }
        if (target.startsWith(`${dir}/`)) open.add(target.slice(dir.length + 1));
      }
    }
  } catch {
    return undefined;
  }
  return open;
}

/**
 * Directory format: `pg_dump -Fd -j N -Z0 --no-sync` writes one file per table into a private temp
 * folder (mkdtemp, 0700). While it runs, every file it has finished (see finishedDumpFiles; Linux
 * /proc) is encoded into the repository as its own object `dump/<file>` and deleted locally, so the
 * local footprint is the files being written plus those waiting for upload, not the whole dump. The
 * folder is removed on success and on failure; objects of a failed dump are deleted.
 */
async function dumpDirectory(
  o: LogicalBackupOptions,
  db: string,
  id: string,
  jobs: number,
  meter: ProgressMeter,
): Promise<ObjectEntry[]> {
  const tmp = await realpath(await mkdtemp(join(tmpdir(), 'bulwark-dump-')));
  const out = join(tmp, 'dump');
  const entries: ObjectEntry[] = [];
  const taken = new Set<string>();
  let child: ReturnType<typeof spawn> | undefined;
  let exitCode: number | undefined;
  let exited: Promise<number> = Promise.resolve(0);
  let stderr = '';
  let failure: unknown;
  let streamed = 0;
  let peak = 0;
  const uploads = new Set<Promise<void>>();
  const limit = Math.max(1, Math.min(jobs, 4));
  const upload = async (file: string) => {
    const path = join(out, file);
    const entry = await o.repo.writeObject(id, `dump/${file}`, createReadStream(path), o.encoding, {
      onRawBytes: meter.add,
    });
    entries.push(entry); // stored: deleted again if the backup fails
    // pg_dump never writes a file again once it closed it (finishedDumpFiles); check it anyway:
    // a file that grew while it was stored, or reappears after, fails the backup instead of
    // leaving a short object behind
    const now = await stat(path);
    if (now.size !== entry.rawBytes)
      throw new BackupError(
        'BULWARK_E_BACKUP',
        `pg_dump wrote to ${file} again after closing it (${now.size} bytes, ${entry.rawBytes} stored)`,
      );
    await rm(path, { force: true });
  };
  const startUpload = (file: string) => {
    const p: Promise<void> = upload(file)
      .catch((err) => {
        failure ??= err;
      })
      .finally(() => uploads.delete(p));
    uploads.add(p);
  };
  const onAbort = () => {
    failure ??= new BackupError('BULWARK_E_BACKUP', `logical backup of ${db} interrupted`);
    child?.kill('SIGTERM');
  };
  o.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    if (o.signal?.aborted) onAbort();
    const queue: string[] = [];
    child = spawn(
      pgBin('pg_dump'),
      ['-Fd', '-j', String(jobs), '-Z0', '--no-sync', '--no-password', '-f', out, '-d', db],
      { env: pgEnv(o.pg), stdio: ['ignore', 'ignore', 'pipe'] },
    );
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      stderr = (stderr + d).slice(-4000);
    });
    exited = new Promise<number>((resolve) =>
      child!.on('close', (code) => {
        exitCode = code ?? 1;
        resolve(exitCode);
      }),
    );
    const pid = child.pid;
    // poll: list the folder, then ask /proc which of those files are still open
    for (;;) {
      const done = exitCode !== undefined;
      if (failure || (done && exitCode !== 0)) break;
      let listed: string[] = [];
      try {
        listed = (await readdir(out, { withFileTypes: true })).filter((d) => d.isFile()).map((d) => d.name);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err; // pg_dump has not created it yet
      }
      peak = Math.max(peak, await folderBytes(out, listed));
      const open = done || pid === undefined ? undefined : await openFilesUnder(out, pid);
      for (const f of finishedDumpFiles(listed, open, taken, done)) {
        if (!DUMP_FILE.test(f)) throw new BackupError('BULWARK_E_BACKUP', `pg_dump wrote an unexpected file ${f}`);
        taken.add(f);
        queue.push(f);
        if (!done) streamed++;
      }
      while (queue.length && uploads.size < limit) startUpload(queue.shift()!);
      if (done && !queue.length) break;
      if (done) await Promise.race(uploads);
      else
        await Promise.race([exited, new Promise((r) => setTimeout(r, 200)), ...(uploads.size >= limit ? uploads : [])]);
      if (exitCode !== undefined && exitCode !== 0) break;
    }
    if (!failure && exitCode !== 0)
      failure = new BackupError(
        'BULWARK_E_BACKUP',
        `pg_dump of ${db} exited with ${exitCode}: ${stderr.trim().split('\n').pop()}`,
      );
    await Promise.allSettled([...uploads]);
    if (failure) throw failure;
    const again = (await readdir(out).catch(() => [] as string[])).filter((f) => taken.has(f));
    if (again.length)
      throw new BackupError('BULWARK_E_BACKUP', `pg_dump wrote ${again.join(', ')} again after closing it`);
    if (!taken.has('toc.dat')) throw new BackupError('BULWARK_E_BACKUP', `pg_dump of ${db} wrote no toc.dat`);
    const raw = entries.reduce((n, e) => n + e.rawBytes, 0);
    o.log?.(
      `pg_dump -Fd -j ${jobs}: ${taken.size} file(s), ${streamed} stored while pg_dump ran; local temp peak seen ${formatBytes(peak)} of ${formatBytes(raw)} dumped`,
    );
    return entries.sort((a, b) => a.name.localeCompare(b.name));
  } catch (err) {
    if (exitCode === undefined) child?.kill('SIGTERM');
    await exited;
    await Promise.allSettled([...uploads]);
    // no manifest was written: these objects are not a backup
    const keys = entries.map((e) => `backups/${id}/${e.key}`);
    if (keys.length) await o.repo.storage.delete(keys).catch(() => {});
    if (err instanceof BackupError) throw err;
    throw new BackupError('BULWARK_E_BACKUP', `logical backup of ${db} failed: ${(err as Error).message}`, {
      cause: err,
    });
  } finally {
    o.signal?.removeEventListener('abort', onAbort);
    await rm(tmp, { recursive: true, force: true });
  }
}

export interface LogicalRestoreOptions {
  repo: Repository;
  pg: PgTarget;
  backup?: string;
  /** Target database (default: the one that was dumped). Created when missing. */
  database?: string;
  /** Restore into an existing database (objects in the dump are dropped and recreated). */
  force?: boolean;
  jobs?: number;
  onProgress?: ProgressListener;
}

export interface LogicalRestoreResult {
  backup: BackupManifest;
  database: string;
  created: boolean;
  durationMs: number;
}

/**
 * Download (verifying the SHA-256 as it streams), decrypt and decompress the dump into a private temp
 * folder (mkdtemp, 0700; removed afterwards, also on failure), then `pg_restore -j`: parallel restore
 * needs a seekable file (custom format) or the whole folder (directory format), and verifying before
 * pg_restore starts means a corrupted backup never half-restores.
 */
export async function logicalRestore(o: LogicalRestoreOptions): Promise<LogicalRestoreResult> {
  const started = Date.now();
  const m = await o.repo.resolveBackupId(o.backup, 'logical');
  const database = o.database ?? m.pg.database;
  if (!database) throw new BackupError('BULWARK_E_RESTORE', `backup ${m.id} names no database: pass --database`);
  const exists = await withClient(
    o.pg,
    async (c) => (await c.query('select 1 from pg_database where datname = $1', [database])).rowCount! > 0,
    'postgres',
  );
  if (exists && !o.force)
    throw new BackupError(
      'BULWARK_E_TARGET_EXISTS',
      `database "${database}" exists; pass --force to restore into it (its objects from the dump are replaced)`,
    );
  const jobs = o.jobs ?? 2;
  const dir = await mkdtemp(join(tmpdir(), 'bulwark-restore-'));
  try {
    const meter = new ProgressMeter('download', m.sizes.stored, o.onProgress);
    const source =
      m.pg.dumpFormat === 'directory'
        ? await downloadDirectory(o.repo, m, join(dir, 'dump'), jobs, meter)
        : await downloadCustom(o.repo, m, join(dir, 'dump.pgdump'), meter);
    meter.finish();
    if (!exists) await withClient(o.pg, (c) => c.query(`create database ${quoteIdent(database)}`), 'postgres');
    const args = ['-j', String(jobs), '--no-password', '-d', database];
    if (exists) args.push('--clean', '--if-exists');
    await run(pgBin('pg_restore'), [...args, source], { env: pgEnv(o.pg) }).catch((err) => {
      throw new BackupError('BULWARK_E_RESTORE', `pg_restore into ${database} failed: ${(err as Error).message}`, {
        cause: err,
      });
    });
    return { backup: m, database, created: !exists, durationMs: Date.now() - started };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function downloadCustom(repo: Repository, m: BackupManifest, file: string, meter: ProgressMeter) {
  const entry = m.objects.find((e) => e.name === 'dump.pgdump');
  if (!entry) throw new BackupError('BULWARK_E_RESTORE', `backup ${m.id} has no dump object`);
  await fetchVerified(repo, m, entry, file, meter);
  return file;
}

/**
 * One object, decoded and checked against its SHA-256, into a private file. With age, tampered bytes
 * fail decryption ("invalid tag") before the SHA-256 is complete, so on a decoding error the stored
 * bytes are checked to report what happened, naming the object.
 */
async function fetchVerified(
  repo: Repository,
  m: BackupManifest,
  entry: ObjectEntry,
  file: string,
  meter: ProgressMeter,
) {
  try {
    await pipeline(await repo.readObject(m, entry, meter.add), createWriteStream(file, { mode: 0o600 }));
  } catch (err) {
    if (err instanceof BulwarkError) throw err;
    const [problem] = await repo.checkObjects({ ...m, objects: [entry] }).catch(() => []);
    if (problem)
      throw new BackupError('BULWARK_E_CHECKSUM', `backup ${m.id} object ${entry.key}: ${problem.problem}`, {
        cause: err,
      });
    throw new BackupError('BULWARK_E_RESTORE', `backup ${m.id} object ${entry.key}: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

/** Every `dump/<file>` object, verified, into `folder`, `jobs` at a time. */
async function downloadDirectory(
  repo: Repository,
  m: BackupManifest,
  folder: string,
  jobs: number,
  meter: ProgressMeter,
): Promise<string> {
  const files = m.objects.filter((e) => e.name.startsWith('dump/'));
  for (const e of files)
    if (!DUMP_FILE.test(e.name.slice(5)))
      throw new BackupError('BULWARK_E_RESTORE', `backup ${m.id}: unexpected object name ${e.name} in the manifest`);
  if (!files.some((e) => e.name === 'dump/toc.dat'))
    throw new BackupError('BULWARK_E_RESTORE', `backup ${m.id} has no dump/toc.dat object`);
  await mkdir(folder, { mode: 0o700 });
  const todo = [...files];
  const worker = async () => {
    for (let e = todo.shift(); e; e = todo.shift()) {
      await fetchVerified(repo, m, e, join(folder, e.name.slice(5)), meter);
    }
  };
  const workers = Array.from({ length: Math.max(1, Math.min(jobs, 4, files.length)) }, worker);
  // wait for every worker before failing, so no download still writes into a folder being removed
  const results = await Promise.allSettled(workers);
  const failed = results.find((r) => r.status === 'rejected');
  if (failed) throw (failed as PromiseRejectedResult).reason;
  return folder;
}
