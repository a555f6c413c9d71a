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
import { cstr, octal } from './incremental/tar-list.js';

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

  let pending: Buffer = Buffer.alloc(0);
  let skip = 0;
  let longName: string | undefined;
  let collect: { left: number; parts: Buffer[]; kind: 'L' | 'x' } | undefined;
  let ended = false;
  try {
    for await (const chunk of source) {
      if (ended) continue; // read on: the stream's checksum is verified at its end
      const buf = pending.length ? Buffer.concat([pending, chunk]) : chunk;
      let off = 0;
      while (!ended) {
        if (file && file.left > 0) {
          const take = Math.min(file.left, buf.length - off);
          fileData(buf.subarray(off, off + take));
          off += take;
          if (file.left === 0) endFile();
          if (off >= buf.length) break;
          continue;
        }
        if (skip > 0 || collect) {
          const want = collect ? collect.left : skip;
          const take = Math.min(want, buf.length - off);
          if (collect) {
            collect.parts.push(buf.subarray(off, off + take));
            collect.left -= take;
          } else skip -= take;
          off += take;
          if (collect && collect.left === 0) {
            const data = Buffer.concat(collect.parts);
            if (collect.kind === 'L') longName = cstr(data, 0, data.length);
            else {
              const m = /\d+ path=([^\n]*)\n/.exec(data.toString('utf8'));
              if (m) longName = m[1];
            }
            collect = undefined;
          }
          if (off >= buf.length) break;
          continue;
        }
        if (buf.length - off < 512) break;
        const h = buf.subarray(off, off + 512);
        off += 512;
        if (h.every((b) => b === 0)) {
          ended = true;
          break;
        }
        const size = octal(h, 124, 12);
        const type = String.fromCharCode(h[156]!);
        const padded = Math.ceil(size / 512) * 512;
        if (type === 'L' || type === 'x') {
          collect = { left: size, parts: [], kind: type };
          skip = padded - size;
          continue;
        }
        const prefix = cstr(h, 345, 155);
        const name = (longName ?? (prefix ? `${prefix}/${cstr(h, 0, 100)}` : cstr(h, 0, 100)))
          .replace(/^\.\//, '')
          .replace(/\/$/, '');
        longName = undefined;
        const mode = octal(h, 100, 8) & 0o7777;
        if (!name) {
          skip = padded;
          continue;
        }
        listed.add(name);
        if (type === '0' || type === '\0') {
          startFile(name, size, mode || 0o600);
          skip = padded - size;
          if (size === 0) endFile();
        } else {
          if (type === '5') makeDir(name, mode || 0o700);
          else if (type === '2') makeLink(name, cstr(h, 157, 100));
          else
            throw new BackupError('BULWARK_E_RESTORE', `backup tar: entry type "${type}" of ${name} is not supported`);
          skip = padded;
        }
      }
      pending = buf.subarray(off);
    }
    if (file) throw new BackupError('BULWARK_E_RESTORE', 'backup tar ended in the middle of a file');
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
