import {
  closeSync,
  fchmodSync,
  fchownSync,
  ftruncateSync,
  lchownSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readlinkSync,
  readSync,
  rmSync,
  symlinkSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { BackupError } from './errors.js';
import { readTar } from './tar-reader.js';

/**
 * Delta restore (`restore --delta`, as pgBackRest's): lay a base backup's tar stream over a data
 * folder that already holds an older or damaged copy of the instance, writing only what differs.
 * Each file's bytes are compared with the file on disk as they stream in, page by page (8 KiB); only
 * the pages that differ are written, in place, and the file is cut to its size in the backup. A
 * file identical to the backup is never written (its mtime stays), so restoring over a copy that
 * differs in a few pages costs reading the folder, not rewriting it. Files and folders the backup does not
 * hold are removed afterwards, exactly as a restore into an empty folder would not have them.
 */
export interface DeltaResult {
  files: number;
  /** files whose content (or size) differed: their differing pages were written */
  rewritten: number;
  unchanged: number;
  /** files, links and folders that were not in the backup */
  removed: number;
  bytesWritten: number;
}

const PAGE = 8192;

function safePath(pgdata: string, p: string): string {
  if (!p || p.startsWith('/') || p.split('/').some((s) => s === '..' || s === '.' || s === ''))
    throw new BackupError('BULWARK_E_RESTORE', `backup names an unsafe path "${p}"`);
  return join(pgdata, p);
}

export async function deltaExtract(
  pgdata: string,
  source: AsyncIterable<Buffer>,
  owner?: { uid: number; gid: number },
): Promise<DeltaResult> {
  const r: DeltaResult = { files: 0, rewritten: 0, unchanged: 0, removed: 0, bytesWritten: 0 };
  const listed = new Set<string>();
  // Synchronous calls on purpose (as applyLayer): many small reads and compares, nothing else runs
  let file:
    | {
        abs: string;
        left: number;
        pos: number;
        fd: number;
        writing: boolean;
        size: number;
        mode: number;
        fresh: boolean;
      }
    | undefined;
  const scratch = Buffer.allocUnsafe(1024 * 1024);
  const startFile = (rel: string, size: number, mode: number) => {
    const abs = safePath(pgdata, rel);
    let fd = -1;
    let fresh = false;
    const st = lstatSync(abs, { throwIfNoEntry: false });
    if (st && !st.isFile()) rmSync(abs, { recursive: true, force: true });
    if (st?.isFile()) fd = openSync(abs, 'r+');
    else {
      fd = openSync(abs, 'w', mode);
      fresh = true;
      if (owner) fchownSync(fd, owner.uid, owner.gid);
    }
    file = { abs, left: size, pos: 0, fd, writing: fresh, size, mode, fresh };
  };
  const fileData = (chunk: Buffer) => {
    const f = file!;
    for (let o = 0; o < chunk.length; ) {
      const n = Math.min(scratch.length, chunk.length - o);
      const got = f.fresh ? 0 : readSync(f.fd, scratch, 0, n, f.pos + o);
      // compare page by page (8 KiB, aligned on the file offset) and write only the pages that
      // differ: a table a few updates touched costs those pages, not the rest of the file
      for (let p = 0; p < n; ) {
        const at = f.pos + o + p;
        const len = Math.min(n - p, PAGE - (at % PAGE));
        if (p + len > got || scratch.compare(chunk, o + p, o + p + len, p, p + len) !== 0) {
          for (let w = 0; w < len; ) w += writeSync(f.fd, chunk, o + p + w, len - w, at + w);
          f.writing = true;
          r.bytesWritten += len;
        }
        p += len;
      }
      o += n;
    }
    f.pos += chunk.length;
    f.left -= chunk.length;
  };
  const endFile = () => {
    const f = file!;
    const onDisk = lstatSync(f.abs).size;
    if (onDisk !== f.size) {
      ftruncateSync(f.fd, f.size);
      f.writing = true;
    }
    if (f.writing) {
      fchmodSync(f.fd, f.mode);
      r.rewritten++;
    } else r.unchanged++;
    r.files++;
    closeSync(f.fd);
    file = undefined;
  };
  const makeDir = (rel: string, mode: number) => {
    const abs = safePath(pgdata, rel);
    const st = lstatSync(abs, { throwIfNoEntry: false });
    if (st?.isDirectory()) return;
    if (st) rmSync(abs, { force: true });
    mkdirSync(abs, { mode });
    if (owner) lchownSync(abs, owner.uid, owner.gid);
  };
  const makeLink = (rel: string, target: string) => {
    const abs = safePath(pgdata, rel);
    const st = lstatSync(abs, { throwIfNoEntry: false });
    if (st?.isSymbolicLink() && readlinkSync(abs) === target) return;
    if (st) rmSync(abs, { recursive: true, force: true });
    symlinkSync(target, abs);
    if (owner) lchownSync(abs, owner.uid, owner.gid);
  };

  try {
    const { truncated } = await readTar(source, {
      entry: (e) => {
        listed.add(e.name);
        if (e.type === '0' || e.type === '\0') {
          startFile(e.name, e.size, e.mode || 0o600);
          return true;
        }
        if (e.type === '5') makeDir(e.name, e.mode || 0o700);
        else if (e.type === '2') makeLink(e.name, e.linkTarget);
        else
          throw new BackupError(
            'BULWARK_E_RESTORE',
            `backup tar: entry type "${e.type}" of ${e.name} is not supported`,
          );
        return false;
      },
      data: fileData,
      end: endFile,
    });
    if (truncated || file) throw new BackupError('BULWARK_E_RESTORE', 'backup tar ended in the middle of a file');
  } finally {
    if (file) closeSync(file.fd);
  }
  // what the backup does not hold goes, as it would not exist after a restore into an empty folder
  const sweep = (dir: string, rel: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = rel ? `${rel}/${e.name}` : e.name;
      const abs = join(dir, e.name);
      if (!listed.has(p)) {
        rmSync(abs, { recursive: true, force: true });
        r.removed++;
      } else if (e.isDirectory()) sweep(abs, p);
    }
  };
  sweep(pgdata, '');
  return r;
}
