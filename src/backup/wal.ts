import { randomBytes } from 'node:crypto';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import type { Encoding } from './codec.js';
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
