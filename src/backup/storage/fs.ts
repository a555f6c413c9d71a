import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { chown, mkdir, open, readdir, rename, rm, rmdir, stat } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { isRoot } from '../../lib/child.js';
import { BackupError } from '../errors.js';
import type { StorageDriver, StoredObject } from './types.js';

const TMP_MARK = '.bulwark-tmp-';

/**
 * Local-folder repository (`file:///path`). Atomic, durable puts: write to a temp file in the same
 * folder, fsync it, rename over the key, fsync the folder. Temp files left by a crash are invisible to
 * list/get and never collide (random suffix).
 *
 * When Bulwark runs as root, new files and folders get the owner of the repository's root folder, so
 * a repo shared with archive_command (running as postgres) stays writable by it.
 */
export class FsStorage implements StorageDriver {
  readonly description: string;
  private owner: { uid: number; gid: number } | undefined | null = null;

  constructor(readonly root: string) {
    this.description = `file://${root}`;
  }

  private path(key: string): string {
    if (!key || key.startsWith('/') || key.split('/').some((p) => p === '..' || p === '' || p === '.'))
      throw new BackupError('BULWARK_E_STORAGE', `invalid object key "${key}"`);
    return join(this.root, ...key.split('/'));
  }

  /**
   * The owner new files get when we run as root: the repository folder's owner, or, when the folder
   * does not exist yet, its nearest existing parent's (so `backup create` run as root in a folder
   * the postgres user owns leaves a repository archive_command can still write to).
   */
  private async ownerOf(): Promise<{ uid: number; gid: number } | undefined> {
    if (this.owner !== null) return this.owner;
    if (!isRoot()) {
      this.owner = undefined;
      return undefined;
    }
    let dir = this.root;
    for (;;) {
      const st = await stat(dir).catch(() => undefined);
      if (st) {
        this.owner = st.uid === 0 ? undefined : { uid: st.uid, gid: st.gid };
        break;
      }
      const up = dirname(dir);
      if (up === dir) {
        this.owner = undefined;
        break;
      }
      dir = up;
    }
    return this.owner;
  }

  private async mkdirs(dir: string): Promise<void> {
    const owner = await this.ownerOf();
    const first = await mkdir(dir, { recursive: true });
    if (owner && first) {
      // chown every folder mkdir created, from the first one down
      let d = dir;
      const made: string[] = [];
      while (d.length >= first.length) {
        made.push(d);
        d = dirname(d);
      }
      for (const m of made) await chown(m, owner.uid, owner.gid);
    }
  }

  async put(key: string, body: Readable | Buffer | string): Promise<{ size: number }> {
    const target = this.path(key);
    const dir = dirname(target);
    await this.mkdirs(dir);
    const tmp = `${target}${TMP_MARK}${randomBytes(6).toString('hex')}`;
    let size = 0;
    try {
      const source = typeof body === 'string' || Buffer.isBuffer(body) ? Readable.from([Buffer.from(body)]) : body;
      source.on('data', (c: Buffer) => {
        size += c.length;
      });
      await pipeline(source, createWriteStream(tmp, { mode: 0o640 }));
      const fh = await open(tmp, 'r');
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
      const owner = await this.ownerOf();
      if (owner) await chown(tmp, owner.uid, owner.gid);
      await rename(tmp, target);
      const dh = await open(dir, 'r');
      try {
        await dh.sync();
      } finally {
        await dh.close();
      }
      return { size };
    } catch (err) {
      await rm(tmp, { force: true });
      if (err instanceof BackupError) throw err;
      throw new BackupError(
        'BULWARK_E_STORAGE',
        `cannot write ${key} in ${this.description}: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
  }

  async get(key: string): Promise<Readable> {
    const path = this.path(key);
    // open first so a missing key fails here, not on the first read
    const fh = await open(path, 'r').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT')
        throw new BackupError('BULWARK_E_NOT_FOUND', `${key} not found in ${this.description}`);
      throw new BackupError('BULWARK_E_STORAGE', `cannot read ${key}: ${err.message}`, { cause: err });
    });
    return fh.createReadStream({ autoClose: true, highWaterMark: 1024 * 1024 });
  }

  async head(key: string): Promise<{ size: number } | undefined> {
    try {
      const st = await stat(this.path(key));
      return st.isFile() ? { size: st.size } : undefined;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new BackupError('BULWARK_E_STORAGE', `cannot stat ${key}: ${(err as Error).message}`, { cause: err });
    }
  }

  async list(prefix: string): Promise<StoredObject[]> {
    const out: StoredObject[] = [];
    // walk only the deepest folder the prefix names, then filter by the full prefix
    const slash = prefix.lastIndexOf('/');
    const start = slash >= 0 ? join(this.root, ...prefix.slice(0, slash).split('/').filter(Boolean)) : this.root;
    const walk = async (dir: string): Promise<void> => {
      let entries: import('node:fs').Dirent[];
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw new BackupError('BULWARK_E_STORAGE', `cannot list ${dir}: ${(err as Error).message}`, { cause: err });
      }
      for (const e of entries) {
        const full = join(dir, e.name);
        if (e.isDirectory()) await walk(full);
        else if (e.isFile() && !e.name.includes(TMP_MARK)) {
          const key = relative(this.root, full).split(sep).join('/');
          if (key.startsWith(prefix)) {
            const st = await stat(full).catch(() => undefined);
            if (st) out.push({ key, size: st.size, modified: st.mtime });
          }
        }
      }
    };
    await walk(start);
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  async delete(keys: string[]): Promise<void> {
    for (const key of keys) await rm(this.path(key), { force: true });
  }

  async assertRepository(): Promise<void> {
    const st = await stat(this.root).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT')
        throw new BackupError('BULWARK_E_STORAGE', `repository folder ${this.root} does not exist (not mounted?)`);
      throw new BackupError('BULWARK_E_STORAGE', `cannot read repository folder ${this.root}: ${err.message}`, {
        cause: err,
      });
    });
    if (!st.isDirectory()) throw new BackupError('BULWARK_E_STORAGE', `repository ${this.root} is not a folder`);
    const entries = await readdir(this.root).catch((err: Error) => {
      throw new BackupError('BULWARK_E_STORAGE', `cannot read repository folder ${this.root}: ${err.message}`, {
        cause: err,
      });
    });
    if (!entries.includes('wal') && !entries.includes('backups'))
      throw new BackupError(
        'BULWARK_E_STORAGE',
        `repository folder ${this.root} holds no wal/ or backups/ (empty: not mounted, or the wrong folder?)`,
      );
  }

  /** Temp files of puts that never finished (a process killed with -9, a crash): invisible to list. */
  async listLeftovers(prefix: string): Promise<StoredObject[]> {
    const out: StoredObject[] = [];
    const walk = async (dir: string): Promise<void> => {
      const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
      for (const e of entries) {
        const full = join(dir, e.name);
        if (e.isDirectory()) await walk(full);
        else if (e.name.includes(TMP_MARK)) {
          const key = relative(this.root, full).split(sep).join('/');
          if (!key.startsWith(prefix)) continue;
          const st = await stat(full).catch(() => undefined);
          if (st) out.push({ key, size: st.size, modified: st.mtime });
        }
      }
    };
    await walk(this.root);
    return out.sort((a, b) => (a.key < b.key ? -1 : 1));
  }

  async removeLeftovers(keys: string[]): Promise<void> {
    const dirs = new Set<string>();
    for (const key of keys) {
      if (!key.includes(TMP_MARK)) throw new BackupError('BULWARK_E_STORAGE', `${key} is not a leftover temp file`);
      const path = this.path(key);
      await rm(path, { force: true });
      dirs.add(dirname(path));
    }
    // a backup folder that held only the interrupted upload goes too (rmdir fails on a non-empty one)
    for (const d of dirs) if (d.startsWith(join(this.root, 'backups') + sep)) await rmdir(d).catch(() => {});
  }
}
