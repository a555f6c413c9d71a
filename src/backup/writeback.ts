import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';

/**
 * Write a restore's files back to disk while they are still being extracted.
 *
 * `zstd -d | tar -x` fills the page cache far faster than the kernel's background writeback empties
 * it, and PostgreSQL, starting from a backup, fsyncs the whole data folder before recovery begins
 * (SyncDataDirectory): half a second or more, serial, before the first WAL record is replayed. Asking
 * for writeback in a loop (`sync -f`, i.e. syncfs(2) on the folder's filesystem) during the
 * extraction overlaps those writes with decompression, so that fsync finds little left to do. Nothing
 * depends on it for durability (PostgreSQL's own fsync still runs); it only moves work off the
 * critical path. Stops when `recovery.signal` appears (the folder is laid out), on stop(), or when
 * `sync -f` is not available here.
 */
export function startWriteback(pgdata: string, intervalMs = 50): { stop: () => Promise<void> } {
  let stopped = false;
  const done = (async () => {
    while (!stopped && !existsSync(join(pgdata, 'recovery.signal'))) {
      // the folder may not exist yet: its parent is on the same filesystem in every layout we create
      const dir = existsSync(pgdata) ? pgdata : dirname(pgdata);
      const ok = await new Promise<boolean>((resolve) => {
        const child = spawn('sync', ['-f', dir], { stdio: 'ignore' });
        child.on('error', () => resolve(false));
        child.on('close', (code) => resolve(code === 0));
      });
      if (!ok) return;
      await new Promise((r) => setTimeout(r, intervalMs));
    }
  })();
  return {
    stop: async () => {
      stopped = true;
      await done;
    },
  };
}
