import { chownSync, closeSync, fchownSync, ftruncateSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { BackupError } from '../errors.js';
import { walkDataDir } from './data-files.js';
import { LayerReader } from './layer-format.js';
import { BLOCK_SIZE } from './pages.js';

export interface ApplyResult {
  files: number;
  blocks: number;
  wholeFiles: number;
  removed: number;
}

function safePath(pgdata: string, p: string): string {
  if (!p || p.startsWith('/') || p.split('/').some((s) => s === '..' || s === '.' || s === ''))
    throw new BackupError('BULWARK_E_RESTORE', `layer names an unsafe path "${p}"`);
  return join(pgdata, p);
}

/**
 * Lay one incremental layer over a data folder that holds the layers below it: create folders, write
 * whole files, write changed blocks into relation files (truncated or extended to their size at
 * backup time), then remove every file and folder the layer does not list (dropped since). New files
 * get `owner` (the postgres user, when restoring as root).
 */
export async function applyLayer(
  pgdata: string,
  source: AsyncIterable<Buffer>,
  owner?: { uid: number; gid: number },
): Promise<ApplyResult> {
  const r = new LayerReader(source);
  const first = await r.next();
  if (first?.t !== 'layer' || first.v !== 1)
    throw new BackupError('BULWARK_E_RESTORE', 'not an incremental layer (v1)');
  const listed = new Set<string>();
  const result: ApplyResult = { files: 0, blocks: 0, wholeFiles: 0, removed: 0 };
  // Synchronous file calls on purpose: a layer is thousands of scattered 8 KiB writes into the page
  // cache, each a few microseconds, and an async round trip per write cost 10x more than the write
  // (1.3 s instead of ~0.1 s for 10,000 pages). Nothing else runs in this process meanwhile.
  let current: { path: string; fd: number } | undefined;
  const closeCurrent = () => {
    if (current) closeSync(current.fd);
    current = undefined;
  };
  // files the layer creates must belong to the postgres user, like the ones tar laid out
  const openFile = (abs: string, flags: 'w' | 'r+', mode: number): number => {
    let fd: number;
    try {
      fd = openSync(abs, flags, mode);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      fd = openSync(abs, 'w', mode);
    }
    if (owner) fchownSync(fd, owner.uid, owner.gid);
    return fd;
  };
  try {
    for (;;) {
      const rec = await r.next();
      if (!rec) throw new BackupError('BULWARK_E_RESTORE', 'incremental layer ends without its end record');
      if (rec.t === 'end') break;
      if (rec.t === 'layer') throw new BackupError('BULWARK_E_RESTORE', 'incremental layer holds a second header');
      const abs = safePath(pgdata, rec.p);
      if (rec.t === 'dir') {
        closeCurrent();
        const made = mkdirSync(abs, { recursive: true, mode: rec.mode });
        if (made && owner) chownSync(abs, owner.uid, owner.gid);
        listed.add(rec.p);
        continue;
      }
      if (rec.t === 'file') {
        closeCurrent();
        const fd = openFile(abs, 'w', rec.mode);
        try {
          let pos = 0;
          for await (const piece of r.payload(rec.size)) {
            writeFully(fd, piece, 0, piece.length, pos);
            pos += piece.length;
          }
        } finally {
          closeSync(fd);
        }
        listed.add(rec.p);
        result.files++;
        result.wholeFiles++;
        continue;
      }
      // blocks: the first record of a file sets its length, the following ones carry changed pages
      if (current?.path !== rec.p) {
        closeCurrent();
        const fd = openFile(abs, 'r+', rec.mode);
        ftruncateSync(fd, rec.size);
        current = { path: rec.p, fd };
        listed.add(rec.p);
        result.files++;
      }
      if (!rec.blocks.length) continue;
      const parts = await collect(r.payload(rec.blocks.length * BLOCK_SIZE, 8 * 1024 * 1024));
      const data = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
      // one write per run of consecutive blocks
      for (let i = 0; i < rec.blocks.length; ) {
        let j = i + 1;
        while (j < rec.blocks.length && rec.blocks[j] === rec.blocks[j - 1]! + 1) j++;
        writeFully(current.fd, data, i * BLOCK_SIZE, (j - i) * BLOCK_SIZE, rec.blocks[i]! * BLOCK_SIZE);
        i = j;
      }
      result.blocks += rec.blocks.length;
    }
    // read to the very end: the object's SHA-256 is checked when its stream ends
    if ((await r.next()) !== undefined) throw new BackupError('BULWARK_E_RESTORE', 'data after the end of the layer');
  } finally {
    closeCurrent();
  }
  // what the layer does not list was dropped between the layer below and this one
  const present = await walkDataDir(pgdata);
  for (const e of present.reverse()) {
    if (listed.has(e.path)) continue;
    const parent = e.path.includes('/') ? e.path.slice(0, e.path.lastIndexOf('/')) : '';
    if (parent && !listed.has(parent)) continue; // removed with its folder
    await rm(join(pgdata, e.path), { recursive: true, force: true });
    result.removed++;
  }
  return result;
}

function writeFully(fd: number, buf: Buffer, offset: number, length: number, position: number): void {
  while (length > 0) {
    const n = writeSync(fd, buf, offset, length, position);
    offset += n;
    length -= n;
    position += n;
  }
}

async function collect(it: AsyncIterable<Buffer>): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for await (const b of it) out.push(b);
  return out;
}
