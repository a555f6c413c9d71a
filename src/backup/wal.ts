import { createHash, randomBytes } from 'node:crypto';
import { copyFile, mkdir, readdir, readFile, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import type { Encoding } from './codec.js';
import { BackupError } from './errors.js';
import type { Repository } from './repository.js';

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
 * `restore_command = 'bulwark wal fetch %f %p'`: writes the verified segment to a temp name beside
 * the destination and renames it, so PostgreSQL never sees a partial file.
 */
export async function walFetch(repo: Repository, name: string, dest: string): Promise<void> {
  const data = await repo.fetchWal(name);
  const target = resolve(dest);
  const tmp = join(dirname(target), `.${basename(target)}.bulwark-${randomBytes(4).toString('hex')}`);
  try {
    await writeFile(tmp, data, { mode: 0o600 });
    await rename(tmp, target);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
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
  } catch {
    return false;
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
      const todo = ready.filter((n) => !ok.has(n) && !inflight.has(n) && Date.now() - (failedAt.get(n) ?? 0) > 5000);
      if (todo.length || inflight.size) idleSince = Date.now();
      else if (Date.now() - idleSince > idleMs) break;
      for (const name of todo) {
        if (inflight.size >= parallel) break;
        const p = (async () => {
          try {
            const data = await readFile(join(o.pgdata, 'pg_wal', name));
            const r = await o.repo.pushWal(name, data, o.encoding);
            await writeFile(join(o.spool, 'ok', name), r);
            pushed++;
            o.log?.(`pusher: ${name} ${r}`);
          } catch (err) {
            // archive_command will push this one itself and report the error to PostgreSQL
            failedAt.set(name, Date.now());
            o.log?.(`pusher: ${name}: ${(err as Error).message}`);
          }
        })().finally(() => inflight.delete(name));
        inflight.set(name, p);
      }
      if (inflight.size >= parallel) await Promise.race(inflight.values());
      else await new Promise((r) => setTimeout(r, inflight.size ? 5 : 50));
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
  if (!/^[0-9A-F]{24}$/.test(name)) return [];
  const tli = name.slice(0, 8);
  let log = Number.parseInt(name.slice(8, 16), 16);
  let seg = Number.parseInt(name.slice(16, 24), 16);
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    seg++;
    if (seg > 0xff) {
      seg = 0;
      log++;
    }
    out.push(tli + log.toString(16).toUpperCase().padStart(8, '0') + seg.toString(16).toUpperCase().padStart(8, '0'));
  }
  return out;
}

/**
 * `wal fetch --prefetch N`: recovery asks for segments one at a time, each through a new process. A
 * detached prefetcher downloads (and verifies) the next N segments after the last one asked for into
 * `<spool>/in/`, so the next `wal fetch` only moves a file. A segment is only ever placed in `in/`
 * after its SHA-256 matched, so the fast path hands PostgreSQL nothing unverified.
 */
export async function takePrefetched(spool: string, name: string, dest: string): Promise<boolean> {
  await mkdir(spool, { recursive: true, mode: 0o700 });
  await writeFile(join(spool, 'want'), name);
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
  idleMs?: number;
  removeSpoolOnExit?: boolean;
  log?: (msg: string) => void;
}

export async function runPrefetcher(o: PrefetcherOptions): Promise<{ fetched: number }> {
  const count = o.count ?? 4;
  const parallel = Math.max(1, o.parallel ?? 2);
  const idleMs = o.idleMs ?? 10_000;
  const inDir = join(o.spool, 'in');
  const missingDir = join(o.spool, 'missing');
  await mkdir(inDir, { recursive: true, mode: 0o700 });
  await mkdir(missingDir, { recursive: true, mode: 0o700 });
  let historyCheckedAt = 0;
  const markMissing = (name: string) => writeFile(join(missingDir, name), '').catch(() => {});
  const pidFile = join(o.spool, 'pusher.pid');
  try {
    await writeFile(pidFile, String(process.pid), { flag: 'wx' });
  } catch {
    if (await pusherRunning(o.spool)) return { fetched: 0 };
    await writeFile(pidFile, String(process.pid));
  }
  let fetched = 0;
  let lastWant = '';
  let lastChange = Date.now();
  const missingAt = new Map<string, number>();
  const inflight = new Map<string, Promise<void>>();
  try {
    for (;;) {
      const want = (await readFile(join(o.spool, 'want'), 'utf8').catch(() => '')).trim();
      if (want !== lastWant) {
        lastWant = want;
        lastChange = Date.now();
      } else if (Date.now() - lastChange > idleMs && !inflight.size) break;
      const window = nextSegments(want, count);
      const keep = new Set([want, ...window]);
      // at promotion PostgreSQL asks for the next timelines' history files, one process each; answer
      // "not there" from a marker when the archive has none (checked at most every 2 s)
      if (/^[0-9A-F]{8}/.test(want) && Date.now() - historyCheckedAt > 2000) {
        historyCheckedAt = Date.now();
        const tli = Number.parseInt(want.slice(0, 8), 16);
        for (let t = tli + 1; t <= tli + 2; t++) {
          const h = `${t.toString(16).toUpperCase().padStart(8, '0')}.history`;
          if (await o.repo.findWal(h).catch(() => true)) await unlink(join(missingDir, h)).catch(() => {});
          else await markMissing(h);
        }
      }
      // a "missing" answer is only trusted while fresh: older markers are dropped and re-checked
      for (const f of await readdir(missingDir).catch(() => [] as string[])) {
        const st = await stat(join(missingDir, f)).catch(() => undefined);
        if (st && Date.now() - st.mtimeMs > 3000) await unlink(join(missingDir, f)).catch(() => {});
      }
      const have = new Set(await readdir(inDir).catch(() => [] as string[]));
      // drop what recovery went past (or never asked for)
      for (const f of have) if (!keep.has(f) && !f.startsWith('.')) await unlink(join(inDir, f)).catch(() => {});
      for (const name of window) {
        if (inflight.size >= parallel) break;
        if (have.has(name) || inflight.has(name) || Date.now() - (missingAt.get(name) ?? 0) < 1000) continue;
        const p = (async () => {
          try {
            const data = await o.repo.fetchWal(name);
            const tmp = join(inDir, `.${name}.tmp`);
            await writeFile(tmp, data, { mode: 0o600 });
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
    await rm(missingDir, { recursive: true, force: true });
    // a restore's spool is private to it: nothing in it is worth keeping once recovery moved on
    if (o.removeSpoolOnExit) await rm(o.spool, { recursive: true, force: true });
  }
  return { fetched };
}
