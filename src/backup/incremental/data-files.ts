import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { BackupError } from '../errors.js';

/**
 * Which files of a PostgreSQL 15 data folder a backup copies, and how. The rules are PostgreSQL's own
 * for base backups (basebackup.c: excludeDirContents, excludeFiles, temporary and unlogged relations),
 * so a folder laid out from our layers looks like one pg_basebackup would have produced.
 */

/** Folders whose contents are rebuilt or useless after a restore: the folder is kept, empty. */
const EMPTY_DIRS = new Set([
  'pg_wal',
  'pg_stat_tmp',
  'pg_replslot',
  'pg_dynshmem',
  'pg_notify',
  'pg_serial',
  'pg_snapshots',
  'pg_subtrans',
]);

/** Files never copied, wherever they are (a server's run-time state, or leftovers of an earlier restore). */
const SKIP_FILES = new Set([
  'postgresql.auto.conf.tmp',
  'current_logfiles.tmp',
  'backup_label',
  'tablespace_map',
  'backup_manifest',
  'postmaster.pid',
  'postmaster.opts',
]);

/**
 * Relation data files of the main and visibility-map forks (`16384`, `16384.1`, `16384_vm`): every change
 * to their pages is WAL-logged and stamps the page LSN, so they can be copied block by block. The
 * free-space map is not WAL-logged reliably (its pages may change with an old LSN), so `_fsm` files,
 * like every other file, are copied whole.
 */
const BLOCK_FILE = /^\d+(_vm)?(\.\d+)?$/;
const RELATION_FILE = /^(\d+)(_(fsm|vm|init))?(\.\d+)?$/;
const TEMP_RELATION = /^t\d+_\d+/;

export type DataFileKind = 'dir' | 'blocks' | 'whole';

export interface DataFile {
  /** path relative to the data folder, with '/' separators */
  path: string;
  kind: DataFileKind;
  size: number;
  mode: number;
}

export interface RawEntry {
  path: string;
  isDir: boolean;
  isSymlink?: boolean;
  size: number;
  mode: number;
}

/** True if a relation folder (base/<db> or global) holds `name`. */
function inRelationDir(path: string): boolean {
  return /^(base\/\d+|global)\/[^/]+$/.test(path);
}

/**
 * Pure: from every entry under the data folder (as `walk` lists them), the ones a backup copies, in a
 * stable order, with `global/pg_control` last (PostgreSQL's own base backup sends it last, after every
 * data file, so it is never older than them).
 */
export function planDataFiles(entries: RawEntry[]): DataFile[] {
  // unlogged relations: only their init fork is copied (recovery rebuilds the rest from it)
  const unlogged = new Set<string>();
  for (const e of entries) {
    const m = /^(.*\/)(\d+)_init$/.exec(e.path);
    if (m && inRelationDir(e.path)) unlogged.add(`${m[1]}${m[2]}`);
  }
  const out: DataFile[] = [];
  let control: DataFile | undefined;
  for (const e of entries) {
    const parts = e.path.split('/');
    const name = parts.at(-1)!;
    const top = parts[0]!;
    if (parts.length > 1 && EMPTY_DIRS.has(top) && !(e.path === 'pg_wal/archive_status' && e.isDir)) continue;
    if (SKIP_FILES.has(name) || name.startsWith('pg_internal.init') || name.startsWith('pgsql_tmp')) continue;
    if (e.path.startsWith('pg_tblspc/')) {
      throw new BackupError(
        'BULWARK_E_BACKUP',
        `the data folder has a tablespace (${e.path}): incremental backups support the default tablespaces only`,
      );
    }
    if (e.isDir) {
      out.push({ path: e.path, kind: 'dir', size: 0, mode: e.mode });
      continue;
    }
    if (e.isSymlink) {
      throw new BackupError(
        'BULWARK_E_BACKUP',
        `${e.path} is a symbolic link: incremental backups copy plain files only`,
      );
    }
    if (inRelationDir(e.path)) {
      if (TEMP_RELATION.test(name)) continue;
      const rel = RELATION_FILE.exec(name);
      if (rel && rel[3] !== 'init' && unlogged.has(`${parts.slice(0, -1).join('/')}/${rel[1]}`)) continue;
    }
    const kind: DataFileKind =
      inRelationDir(e.path) && BLOCK_FILE.test(name) && e.size % 8192 === 0 ? 'blocks' : 'whole';
    const f: DataFile = { path: e.path, kind, size: e.size, mode: e.mode };
    if (e.path === 'global/pg_control') control = f;
    else out.push(f);
  }
  if (control) out.push(control);
  return out;
}

/** Every entry under `root`, depth first, directories before their contents, names sorted. */
export async function walkDataDir(root: string): Promise<RawEntry[]> {
  const out: RawEntry[] = [];
  const visit = async (rel: string): Promise<void> => {
    const names = (await readdir(rel ? join(root, rel) : root)).sort();
    for (const name of names) {
      const path = rel ? `${rel}/${name}` : name;
      // a file can vanish between readdir and lstat (a dropped table, a removed temp file): skip it
      const st = await lstat(join(root, path)).catch(() => undefined);
      if (!st) continue;
      // pg_wal may be a symbolic link to another disk (initdb -X); its contents are skipped anyway
      const isDir = st.isDirectory() || (path === 'pg_wal' && st.isSymbolicLink());
      out.push({ path, isDir, isSymlink: st.isSymbolicLink() && !isDir, size: st.size, mode: st.mode & 0o7777 });
      if (st.isDirectory() && !(EMPTY_DIRS.has(path) && path !== 'pg_wal')) await visit(path);
    }
  };
  await visit('');
  return out;
}
