import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  chmod,
  chown,
  copyFile,
  mkdir,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  unlink,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { isRoot } from '../lib/child.js';
import { BulwarkError } from '../lib/errors.js';
import { postgresIds } from '../lib/postgres.js';
import type { Encoding } from './codec.js';
import { BackupError } from './errors.js';
import type { Repository } from './repository.js';
import { FsStorage } from './storage/fs.js';
import {
  isSegmentName,
  labelStartSegment,
  MISSING_FRESH_MS,
  segmentNumber,
  segmentTimeline,
  WAL_SEGMENT_SIZE,
  walFileName,
} from './wal-names.js';

/**
 * `archive_command = 'bulwark wal push %p'`: PostgreSQL passes the path relative to PGDATA (our cwd).
 * Resolves when the segment is stored and read back intact, or already archived with the same
 * content; rejects otherwise, so the CLI exits non-zero and PostgreSQL keeps the segment and retries.
 */
export async function walPush(repo: Repository, path: string, encoding: Encoding): Promise<'stored' | 'exists'> {
  const data = await readFile(resolve(path));
  return repo.pushWal(basename(path), data, encoding);
}

/**
 * restore_command's contract: PostgreSQL reads an exit code up to 125 as "this file is not in the
 * archive" and, for a segment, ends recovery right there and promotes. So `wal fetch` exits 1 only when
 * the file really is not archived; any other failure (storage unreachable, SHA-256 mismatch, no key)
 * exits with this code, above 125, which makes PostgreSQL stop recovery with an error instead of
 * silently ending it early.
 */
export const WAL_FETCH_FAILED_EXIT = 126;

/**
 * `restore_command = 'bulwark wal fetch %f %p'`: writes the verified segment to a temp name beside
 * the destination and renames it, so PostgreSQL never sees a partial file.
 */
export async function walFetch(repo: Repository, name: string, dest: string): Promise<void> {
  try {
    await fetchWalToFile(repo, name, resolve(dest));
  } catch (err) {
    throw fetchFailure(err);
  }
}

/**
 * Decode and verify one archived WAL file into `dest`: written under a temp name beside it and renamed
 * only once its SHA-256 matched. For a `file://` repository with zstd and no encryption, zstd
 * decompresses straight from the repository file into the temp file and only the result is read back
 * for the hash: about a third of the CPU of streaming it through this process, which counts when the
 * prefetcher shares two cores with recovery. Otherwise Repository.fetchWal (any storage, gzip, age).
 */
export async function fetchWalToFile(
  repo: Repository,
  name: string,
  dest: string,
  give?: (path: string) => Promise<void>,
): Promise<void> {
  const tmp = join(dirname(dest), `.${basename(dest)}.bulwark-${randomBytes(4).toString('hex')}`);
  try {
    const fs = repo.storage instanceof FsStorage ? repo.storage : undefined;
    const w = fs ? await repo.locateWal(name) : undefined;
    if (fs && !w) throw new BackupError('BULWARK_E_NOT_FOUND', `wal fetch ${name}: not in ${repo.description}`);
    if (fs && w?.key.endsWith('.zst')) {
      await zstdToFile(join(fs.root, ...w.key.split('/')), tmp);
      await chmod(tmp, 0o600);
      const sha = createHash('sha256')
        .update(await readFile(tmp))
        .digest('hex');
      if (sha !== w.sha256)
        throw new BackupError('BULWARK_E_CHECKSUM', `wal fetch ${name}: ${w.key} is corrupted (SHA-256 mismatch)`);
    } else await writeFile(tmp, await repo.fetchWal(name), { mode: 0o600 });
    await give?.(tmp);
    await rename(tmp, dest);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

function zstdToFile(src: string, dest: string): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn('zstd', ['-d', '-q', '-f', '-o', dest, src], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr = (stderr + d).slice(-1000);
    });
    child.on('error', (err) => reject(new BackupError('BULWARK_E_STORAGE', `cannot run zstd: ${err.message}`)));
    child.on('close', (code) =>
      code === 0
        ? resolvePromise()
        : reject(new BackupError('BULWARK_E_CHECKSUM', `zstd -d ${src} exited with ${code}: ${stderr.trim()}`)),
    );
  });
}

/** `err` unchanged when it says "not in the archive", otherwise the same error exiting above 125. */
export function fetchFailure(err: unknown): unknown {
  if (err instanceof BackupError && err.code === 'BULWARK_E_NOT_FOUND') return err;
  const e = err as BulwarkError;
  return new BulwarkError(
    err instanceof BulwarkError ? e.code : 'BULWARK_E_STORAGE',
    (err as Error)?.message ?? String(err),
    { cause: err, exitCode: WAL_FETCH_FAILED_EXIT },
  );
}

// ---------------------------------------------------------------- asynchronous archiving

/**
 * Asynchronous mode (`wal push --async`), for WAL rates where one process per segment is too slow.
 * A long-running pusher (started on demand, detached, exits when idle) watches
 * pg_wal/archive_status/*.ready and pushes segments ahead of the archiver, `parallel` at a time. For
 * each segment it stored AND read back intact it leaves a marker `<spool>/ok/<segment>`.
 * archive_command then only has to find and remove the marker; when there is none (pusher not there
 * yet, or it failed) the command pushes the segment itself, synchronously. So a segment is never
 * acknowledged to PostgreSQL before it is stored and verified; a lost marker only costs a re-push,
 * which is idempotent.
 */
export function spoolFor(pgdata: string, repoUri: string, base = tmpdir()): string {
  const h = createHash('sha256')
    .update(`${resolve(pgdata)}\n${repoUri}`)
    .digest('hex')
    .slice(0, 16);
  return join(base, `bulwark-spool-${h}`);
}

/** If the pusher already archived `name`, remove its marker and return true. */
export async function consumeOkMarker(spool: string, name: string): Promise<boolean> {
  try {
    await unlink(join(spool, 'ok', name));
    return true;
  } catch {
    return false;
  }
}

/** True when a pusher process holds the spool's pid file. */
export async function pusherRunning(spool: string): Promise<boolean> {
  try {
    const pid = Number((await readFile(join(spool, 'pusher.pid'), 'utf8')).trim());
    if (!pid) return false;
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists but belongs to another user (a root `restore --start` owns its prefetcher)
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export interface PusherOptions {
  repo: Repository;
  pgdata: string;
  spool: string;
  encoding: Encoding;
  parallel?: number;
  /** exit after this long with nothing to push (ms) */
  idleMs?: number;
  log?: (msg: string) => void;
}

/** The pusher loop. Resolves when idle for `idleMs`, or when another pusher owns the spool. */
export async function runPusher(o: PusherOptions): Promise<{ pushed: number }> {
  const parallel = Math.max(1, o.parallel ?? 2);
  const idleMs = o.idleMs ?? 10_000;
  await mkdir(join(o.spool, 'ok'), { recursive: true, mode: 0o700 });
  await mkdir(join(o.spool, 'failed'), { recursive: true, mode: 0o700 });
  const pidFile = join(o.spool, 'pusher.pid');
  // exclusive create: one pusher per spool; a stale pid file (dead process) is replaced
  try {
    await writeFile(pidFile, String(process.pid), { flag: 'wx' });
  } catch {
    if (await pusherRunning(o.spool)) return { pushed: 0 };
    await writeFile(pidFile, String(process.pid));
  }
  const statusDir = join(o.pgdata, 'pg_wal', 'archive_status');
  const inflight = new Map<string, Promise<void>>();
  const failedAt = new Map<string, number>();
  let pushed = 0;
  let idleSince = Date.now();
  try {
    for (;;) {
      let ready: string[] = [];
      try {
        ready = (await readdir(statusDir))
          .filter((f) => f.endsWith('.ready'))
          .map((f) => f.slice(0, -6))
          .sort();
      } catch (err) {
        o.log?.(`pusher: cannot read ${statusDir}: ${(err as Error).message}`);
      }
      const ok = new Set(await readdir(join(o.spool, 'ok')).catch(() => [] as string[]));
      // a marker whose segment is no longer .ready was confirmed by a synchronous push (archive_command
      // got there first): it will never be consumed, so drop it
      const readySet = new Set(ready);
      for (const m of ok)
        if (!readySet.has(m) && !inflight.has(m)) {
          await unlink(join(o.spool, 'ok', m)).catch(() => {});
          ok.delete(m);
        }
      for (const f of await readdir(join(o.spool, 'failed')).catch(() => [] as string[]))
        if (!readySet.has(f)) await unlink(join(o.spool, 'failed', f)).catch(() => {});
      const todo = ready.filter((n) => !ok.has(n) && !inflight.has(n) && Date.now() - (failedAt.get(n) ?? 0) > 5000);
      if (todo.length || inflight.size) idleSince = Date.now();
      else if (Date.now() - idleSince > idleMs) break;
      for (const name of todo) {
        if (inflight.size >= parallel) break;
        const p = (async () => {
          try {
            const data = await readFile(join(o.pgdata, 'pg_wal', name));
            const r = await o.repo.pushWal(name, data, o.encoding);
            await unlink(join(o.spool, 'failed', name)).catch(() => {});
            await writeFile(join(o.spool, 'ok', name), r);
            pushed++;
            o.log?.(`pusher: ${name} ${r}`);
          } catch (err) {
            // archive_command will push this one itself and report the error to PostgreSQL; the
            // marker tells a shell step waiting for this segment to stop waiting at once
            failedAt.set(name, Date.now());
            await writeFile(join(o.spool, 'failed', name), (err as Error).message).catch(() => {});
            o.log?.(`pusher: ${name}: ${(err as Error).message}`);
          }
        })().finally(() => inflight.delete(name));
        inflight.set(name, p);
      }
      if (inflight.size >= parallel) await Promise.race(inflight.values());
      // archive_command's shell step waits for this pusher's marker: notice a new .ready quickly
      else await new Promise((r) => setTimeout(r, inflight.size ? 5 : 10));
    }
    await Promise.allSettled(inflight.values());
  } finally {
    const owner = await readFile(pidFile, 'utf8').catch(() => '');
    if (owner.trim() === String(process.pid)) await unlink(pidFile).catch(() => {});
  }
  return { pushed };
}

// ---------------------------------------------------------------- prefetching restore_command

/** The next `n` segment names after `name` on the same timeline (pure; 16 MiB segments). */
export function nextSegments(name: string, n: number): string[] {
  if (!isSegmentName(name)) return [];
  const first = segmentNumber(name) + 1n;
  return Array.from({ length: n }, (_, i) =>
    walFileName(segmentTimeline(name), (first + BigInt(i)) * BigInt(WAL_SEGMENT_SIZE)),
  );
}

/**
 * `wal fetch --prefetch N`: recovery asks for segments one at a time, each through a new process. A
 * prefetcher downloads (and verifies) the next N segments after the last one asked for into
 * `<spool>/in/`, so the next `wal fetch` only moves a file. A segment is only ever placed in `in/`
 * after its SHA-256 matched, so the fast path hands PostgreSQL nothing unverified.
 */
export async function takePrefetched(spool: string, name: string, dest: string): Promise<boolean> {
  // best effort: the spool may belong to a prefetcher this user cannot write to, and a failure here
  // must not fail the fetch (PostgreSQL would read it as "not in the archive" and end recovery)
  await mkdir(spool, { recursive: true, mode: 0o700 }).catch(() => {});
  await writeFile(join(spool, 'want'), name).catch(() => {});
  const src = join(spool, 'in', name);
  const target = resolve(dest);
  try {
    await rename(src, target);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EXDEV') return false;
  }
  // spool on another filesystem: copy under a temp name, then rename into place
  const tmp = join(dirname(target), `.${basename(target)}.bulwark-${randomBytes(4).toString('hex')}`);
  try {
    await copyFile(src, tmp);
    await rename(tmp, target);
    await unlink(src).catch(() => {});
    return true;
  } catch {
    await rm(tmp, { force: true });
    return false;
  }
}

export interface PrefetcherOptions {
  repo: Repository;
  spool: string;
  count?: number;
  parallel?: number;
  /** exit after this long without a new request from recovery (ms); not used with `signal` */
  idleMs?: number;
  /** run until aborted (the prefetcher of a `restore --start`, which lives as long as recovery) */
  signal?: AbortSignal;
  /**
   * The data folder being restored: until recovery asks for its first segment, prefetch from the
   * start segment its backup_label names, so the first segments are ready when the server starts.
   */
  pgdata?: string;
  /** give the spool and everything written in it to this user (root restoring for postgres) */
  owner?: { uid: number; gid: number };
  removeSpoolOnExit?: boolean;
  log?: (msg: string) => void;
}

export async function runPrefetcher(o: PrefetcherOptions): Promise<{ fetched: number }> {
  const count = o.count ?? 4;
  const parallel = Math.max(1, o.parallel ?? 2);
  const idleMs = o.idleMs ?? 10_000;
  const inDir = join(o.spool, 'in');
  const missingDir = join(o.spool, 'missing');
  const againDir = join(o.spool, 'again');
  const give = async (path: string) => {
    if (o.owner) await chown(path, o.owner.uid, o.owner.gid).catch(() => {});
  };
  for (const d of [o.spool, inDir, missingDir, againDir]) {
    await mkdir(d, { recursive: true, mode: 0o700 });
    await give(d);
  }
  let historyCheckedAt = 0;
  const markMissing = async (name: string) => {
    // rewriting the marker renews its mtime: restore_command trusts it for MISSING_FRESH_MS only
    await writeFile(join(missingDir, name), '').catch(() => {});
    await give(join(missingDir, name));
  };
  const pidFile = join(o.spool, 'pusher.pid');
  try {
    await writeFile(pidFile, String(process.pid), { flag: 'wx' });
  } catch {
    if (await pusherRunning(o.spool)) return { fetched: 0 };
    await writeFile(pidFile, String(process.pid));
  }
  await give(pidFile);
  let fetched = 0;
  let lastWant = '';
  let lastChange = Date.now();
  // the newest segment recovery asked for (history files are asked for in between and say nothing
  // about where replay is); before the first one, the backup's start segment from backup_label
  let anchor = '';
  let previous = '';
  let seed = '';
  let labelReadAt = 0;
  const missingAt = new Map<string, number>();
  const inflight = new Map<string, Promise<void>>();
  try {
    for (;;) {
      if (o.signal?.aborted) break;
      const want = (await readFile(join(o.spool, 'want'), 'utf8').catch(() => '')).trim();
      if (want !== lastWant) {
        lastWant = want;
        lastChange = Date.now();
        if (isSegmentName(want) && want !== anchor) {
          previous = anchor;
          anchor = want;
        }
      } else if (!o.signal && Date.now() - lastChange > idleMs && !inflight.size) break;
      if (!anchor && o.pgdata && Date.now() - labelReadAt > 100) {
        labelReadAt = Date.now();
        // re-read until recovery starts: a restore may lay a newer label over the first one
        const label = await readFile(join(o.pgdata, 'backup_label'), 'utf8').catch(() => '');
        seed = labelStartSegment(label) ?? seed;
      }
      // before recovery asks, only the first two segments, one at a time: until the server starts the
      // cores are better spent laying out the data folder
      const window = anchor ? nextSegments(anchor, count) : seed ? [seed, ...nextSegments(seed, 1)] : [];
      const slots = anchor ? parallel : 1;
      // the previous segment stays too: when the next one is not in the archive, recovery ends and
      // reads the last one it replayed once more
      const keep = new Set([want, previous, anchor, ...window]);
      const base = anchor || seed;
      // recovery asks for history files one process each: the next timelines' at start and at
      // promotion, its own timeline's when it writes the new one. Answer "not there" from a marker
      // when the archive has none (re-checked every second, so a marker is never older than that)
      if (base && Date.now() - historyCheckedAt > 1000) {
        historyCheckedAt = Date.now();
        const tli = segmentTimeline(base);
        for (let t = tli; t <= tli + 2; t++) {
          const h = `${t.toString(16).toUpperCase().padStart(8, '0')}.history`;
          if (await o.repo.locateWal(h).catch(() => true)) await unlink(join(missingDir, h)).catch(() => {});
          else await markMissing(h);
        }
      }
      // stale markers are ignored by restore_command anyway; drop them
      for (const f of await readdir(missingDir).catch(() => [] as string[])) {
        const st = await stat(join(missingDir, f)).catch(() => undefined);
        if (st && Date.now() - st.mtimeMs > 3 * MISSING_FRESH_MS) await unlink(join(missingDir, f)).catch(() => {});
      }
      const have = new Set(await readdir(inDir).catch(() => [] as string[]));
      // drop what recovery went past (or never asked for)
      for (const f of have) if (!keep.has(f) && !f.startsWith('.')) await unlink(join(inDir, f)).catch(() => {});
      for (const f of await readdir(againDir).catch(() => [] as string[]))
        if (!keep.has(f) && !f.startsWith('.')) await unlink(join(againDir, f)).catch(() => {});
      for (const name of window) {
        if (inflight.size >= slots) break;
        if (have.has(name) || inflight.has(name) || Date.now() - (missingAt.get(name) ?? 0) < MISSING_FRESH_MS / 2)
          continue;
        const p = (async () => {
          try {
            await fetchWalToFile(o.repo, name, join(againDir, name), give);
            // the copy restore_command moves in; the one in again/ is handed out (copied) when recovery
            // asks for the same segment again: it does, once, for the last one it replayed
            const tmp = join(inDir, `.${name}.tmp`);
            await copyFile(join(againDir, name), tmp);
            await give(tmp);
            await rename(tmp, join(inDir, name));
            await unlink(join(missingDir, name)).catch(() => {});
            fetched++;
          } catch (err) {
            missingAt.set(name, Date.now());
            if (err instanceof BackupError && err.code === 'BULWARK_E_NOT_FOUND') await markMissing(name);
            else o.log?.(`prefetch ${name}: ${(err as Error).message}`);
          }
        })().finally(() => inflight.delete(name));
        inflight.set(name, p);
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  } finally {
    await Promise.allSettled(inflight.values());
    const owner = await readFile(pidFile, 'utf8').catch(() => '');
    if (owner.trim() === String(process.pid)) await unlink(pidFile).catch(() => {});
    await rm(inDir, { recursive: true, force: true });
    await rm(againDir, { recursive: true, force: true });
    await rm(missingDir, { recursive: true, force: true });
    // a restore's spool is private to it: nothing in it is worth keeping once recovery moved on
    if (o.removeSpoolOnExit) await rm(o.spool, { recursive: true, force: true });
  }
  return { fetched };
}

/**
 * The prefetcher of `restore --start`, inside the restoring process: it starts while the data folder
 * is still being laid out (from the backup_label's start segment), so recovery's first requests,
 * including its history-file probes, are answered by restore_command's shell step instead of a Node
 * start each; and it lives exactly as long as the restore waits for recovery. Run as root, it gives
 * the spool to the postgres user, who runs restore_command.
 */
export async function startRestorePrefetcher(
  o: Omit<PrefetcherOptions, 'signal' | 'removeSpoolOnExit'>,
): Promise<{ stop: () => Promise<void> }> {
  const owner = o.owner ?? (isRoot() ? postgresIds() : undefined);
  // the folders exist (and belong to postgres) before this resolves, so before the server starts
  for (const d of [o.spool, join(o.spool, 'in'), join(o.spool, 'again'), join(o.spool, 'missing')]) {
    await mkdir(d, { recursive: true, mode: 0o700 });
    if (owner) await chown(d, owner.uid, owner.gid);
  }
  const ac = new AbortController();
  const done = runPrefetcher({ count: 8, ...o, owner, signal: ac.signal, removeSpoolOnExit: true }).catch((err) => {
    // restore_command falls back to fetching each segment itself: slower, never wrong
    o.log?.(`prefetcher stopped: ${(err as Error).message}`);
  });
  return {
    stop: async () => {
      ac.abort();
      await done;
    },
  };
}
