/**
 * One streaming reader of tar (ustar, as pg_basebackup writes it; also GNU `L` and pax `x` long
 * names) for everything that walks a base backup's tar: listing an incremental's parent and laying a
 * backup over a data folder (`restore --delta`). It reads headers and hands each entry's bytes to the
 * caller as they arrive, so nothing is held in memory beyond one chunk.
 */

export interface TarEntry {
  /** path without a leading "./" and without a trailing "/" */
  name: string;
  /** '0' (or '\0') file, '5' folder, '2' symlink, others as written */
  type: string;
  size: number;
  /** permission bits (0o7777) */
  mode: number;
  /** symlink target (type '2') */
  linkTarget: string;
}

export interface TarVisitor {
  /** Called for each entry; return true to receive its bytes through `data` then `end`. */
  entry(entry: TarEntry): boolean;
  data?(chunk: Buffer): void;
  end?(): void;
}

export function octal(buf: Buffer, start: number, len: number): number {
  // sizes of 8 GiB and more are base-256: high bit of the first byte set
  if (buf[start]! & 0x80) {
    let v = 0;
    for (let i = start + 1; i < start + len; i++) v = v * 256 + buf[i]!;
    return v;
  }
  const s = buf
    .toString('latin1', start, start + len)
    .replace(/\0.*$/s, '')
    .trim();
  return s ? Number.parseInt(s, 8) : 0;
}

export function cstr(buf: Buffer, start: number, len: number): string {
  const end = buf.indexOf(0, start);
  return buf.toString('utf8', start, end === -1 || end > start + len ? start + len : end);
}

/**
 * Walk the tar stream to its end-of-archive blocks, then read the source on to its end (a stream's
 * checksum is verified when it ends). Resolves true when an entry's bytes were cut short (the tar
 * ended in the middle of an entry the visitor asked for).
 */
export async function readTar(source: AsyncIterable<Buffer>, visitor: TarVisitor): Promise<{ truncated: boolean }> {
  let pending: Buffer = Buffer.alloc(0);
  let skip = 0; // bytes to pass over: an unwanted entry's content, or a wanted one's padding
  let want = 0; // bytes of the current wanted entry still to hand to the visitor
  let wanted = false;
  let longName: string | undefined;
  let collect: { left: number; parts: Buffer[]; kind: 'L' | 'x' } | undefined;
  let ended = false;
  for await (const chunk of source) {
    if (ended) continue;
    const buf = pending.length ? Buffer.concat([pending, chunk]) : chunk;
    let off = 0;
    while (!ended) {
      if (want > 0) {
        const take = Math.min(want, buf.length - off);
        visitor.data?.(buf.subarray(off, off + take));
        want -= take;
        off += take;
        if (want === 0) {
          wanted = false;
          visitor.end?.();
        }
        if (off >= buf.length) break;
        continue;
      }
      if (skip > 0 || collect) {
        const left = collect ? collect.left : skip;
        const take = Math.min(left, buf.length - off);
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
      const entry: TarEntry = { name, type, size, mode: octal(h, 100, 8) & 0o7777, linkTarget: cstr(h, 157, 100) };
      if (name && visitor.entry(entry)) {
        skip = padded - size;
        if (size === 0) visitor.end?.();
        else {
          want = size;
          wanted = true;
        }
      } else skip = padded;
    }
    pending = buf.subarray(off);
  }
  return { truncated: wanted };
}
