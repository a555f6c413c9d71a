import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { BackupError } from './errors.js';
import type { Repository } from './repository.js';

/**
 * The repository lock: one `backup create` or `expire` at a time per repository, on any driver (a
 * folder or S3; strongly consistent listing is all it needs). Each contender stores its own object
 * `locks/<time>-<token>.json`, then lists the others:
 *   1. another live lock that is already held, or that sorts before ours: we lost, remove ours;
 *   2. otherwise mark ours held, list again, and keep it only if still no other live lock is held or
 *      sorts before ours.
 * Two contenders can both give up in a close race, never both hold it; so a contender that lost a race
 * (not to a lock already held) tries again a few times after a random pause. A lock is stale (removed,
 * and said so) when its holder ran on this host and that pid is gone (kill -9, a crash), or when its
 * holder stopped refreshing it (every 30 s) for `staleMs`, which covers another host's crash.
 */
export interface LockHolder {
  command: string;
  pid: number;
  host: string;
  startedAt: string;
  held: boolean;
}

export interface RepoLock {
  release(): Promise<void>;
}

const REFRESH_MS = 30_000;
const LOCK_ATTEMPTS = 5;
const READ_ATTEMPTS = 5;

/** True when `holder` can no longer be running (pure apart from the pid probe). */
export function lockIsStale(
  holder: LockHolder,
  modified: Date | undefined,
  staleMs: number,
  now = Date.now(),
  alive: (pid: number) => boolean = pidAlive,
): string | undefined {
  if (holder.host === hostname() && !alive(holder.pid)) return `its process ${holder.pid} is gone`;
  if (modified && now - modified.getTime() > staleMs)
    return `not refreshed for ${Math.round((now - modified.getTime()) / 1000)}s`;
  return undefined;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function describe(h: LockHolder): string {
  return `${h.command} (pid ${h.pid} on ${h.host}, started ${h.startedAt})`;
}

export async function acquireRepoLock(
  repo: Repository,
  command: string,
  o: { staleMs?: number; log?: (msg: string) => void } = {},
): Promise<RepoLock> {
  const staleMs = o.staleMs ?? 5 * 60_000;
  const key = `locks/${Date.now().toString().padStart(15, '0')}-${randomBytes(6).toString('hex')}.json`;
  const me: LockHolder = {
    command,
    pid: process.pid,
    host: hostname(),
    startedAt: new Date().toISOString(),
    held: false,
  };
  const write = () => repo.storage.put(key, `${JSON.stringify(me)}\n`);
  /**
   * A lock object as its owner last wrote it, or undefined once it is gone. Its owner rewrites it to
   * mark it held; a store without atomic PUT (s3rver rewrites the file in place) can then serve a torn
   * copy: a body cut short of its Content-Length ("aborted") or cut JSON. Read again after a pause.
   */
  const readHolder = async (lockKey: string): Promise<LockHolder | undefined> => {
    for (let attempt = 1; ; attempt++) {
      try {
        const chunks: Buffer[] = [];
        for await (const c of await repo.storage.get(lockKey)) chunks.push(c as Buffer);
        const holder = JSON.parse(Buffer.concat(chunks).toString('utf8')) as LockHolder;
        if (typeof holder?.pid !== 'number' || typeof holder.command !== 'string')
          throw new SyntaxError('not a lock holder record');
        return holder;
      } catch (err) {
        if (err instanceof BackupError && err.code === 'BULWARK_E_NOT_FOUND') return undefined;
        if (attempt >= READ_ATTEMPTS)
          throw new BackupError(
            'BULWARK_E_STORAGE',
            `cannot read the repository lock ${lockKey} in ${repo.description} (${READ_ATTEMPTS} tries): ${(err as Error).message}`,
          );
        await new Promise((res) => setTimeout(res, 20 + Math.random() * 80));
      }
    }
  };
  const others = async (): Promise<{ key: string; holder: LockHolder }[]> => {
    const live: { key: string; holder: LockHolder }[] = [];
    for (const obj of await repo.storage.list('locks/')) {
      if (obj.key === key || !obj.key.endsWith('.json')) continue;
      let holder: LockHolder | undefined;
      try {
        holder = await readHolder(obj.key);
      } catch (err) {
        // Unreadable for good (a writer that died mid-PUT on a store without atomic PUT): once it is
        // older than staleMs nobody refreshes it, so it cannot belong to a running holder.
        const age = obj.modified ? Date.now() - obj.modified.getTime() : 0;
        if (age <= staleMs) throw err;
        o.log?.(`removed unreadable stale lock ${obj.key}: not refreshed for ${Math.round(age / 1000)}s`);
        await repo.storage.delete([obj.key]);
        continue;
      }
      if (!holder) continue; // released meanwhile
      const stale = lockIsStale(holder, obj.modified, staleMs);
      if (stale) {
        o.log?.(`removed stale lock of ${describe(holder)}: ${stale}`);
        await repo.storage.delete([obj.key]);
        continue;
      }
      live.push({ key: obj.key, holder });
    }
    return live;
  };
  const conflict = (live: { key: string; holder: LockHolder }[]) =>
    live.find((l) => l.holder.held) ?? live.find((l) => l.key < key);
  /** One try: the holder we yielded to (if any), and whether that was a race rather than a holder. */
  const attempt = async (): Promise<{ holder?: LockHolder; race: boolean }> => {
    me.held = false;
    await write();
    let c = conflict(await others());
    let race = !!c && !c.holder.held; // its owner is between its two checks, as we are
    if (!c) {
      me.held = true;
      await write();
      c = conflict(await others());
      race = !!c;
    }
    if (c) await repo.storage.delete([key]);
    return { holder: c?.holder, race };
  };
  try {
    // Two contenders racing can both give up (see above). One that lost a race (not to a lock already
    // held when it looked) tries again after a random pause, so one of them gets it; a lock already
    // held is reported at once.
    let r = await attempt();
    for (let i = 0; r.holder && r.race && i < LOCK_ATTEMPTS - 1; i++) {
      await new Promise((res) => setTimeout(res, 50 + Math.random() * 200));
      r = await attempt();
    }
    if (r.holder)
      throw new BackupError(
        'BULWARK_E_LOCKED',
        `repository is locked by ${describe(r.holder)}: ${repo.description} takes one backup create or expire at a time; try again when it has finished`,
      );
  } catch (err) {
    await repo.storage.delete([key]).catch(() => {});
    throw err;
  }
  const timer = setInterval(() => {
    write().catch((err) => o.log?.(`cannot refresh the repository lock: ${(err as Error).message}`));
  }, REFRESH_MS);
  timer.unref();
  return {
    release: async () => {
      clearInterval(timer);
      await repo.storage.delete([key]);
    },
  };
}

/** Run `fn` holding the repository lock. */
export async function withRepoLock<T>(
  repo: Repository,
  command: string,
  fn: () => Promise<T>,
  o: { staleMs?: number; log?: (msg: string) => void } = {},
): Promise<T> {
  const lock = await acquireRepoLock(repo, command, o);
  try {
    return await fn();
  } finally {
    await lock.release().catch(() => {});
  }
}
