/**
 * File sizes in a tar stream (ustar, as pg_basebackup writes it; also GNU/pax long names), reading
 * headers and skipping contents. An incremental backup on top of a full one needs the full's file
 * list: which files existed, and how long they were.
 */

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

/** path (without a leading "./", without a trailing "/") -> size, for regular files. */
export async function listTar(source: AsyncIterable<Buffer>): Promise<Map<string, number>> {
  const files = new Map<string, number>();
  let pending: Buffer = Buffer.alloc(0);
  let skip = 0;
  let longName: string | undefined;
  let collect: { left: number; parts: Buffer[]; kind: 'L' | 'x' } | undefined;
  let ended = false;
  for await (const chunk of source) {
    // after the end-of-archive blocks, read on to the end: the stream's checksum is verified at its end
    if (ended) continue;
    const buf = pending.length ? Buffer.concat([pending, chunk]) : chunk;
    let off = 0;
    while (!ended) {
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
      const name = longName ?? (prefix ? `${prefix}/${cstr(h, 0, 100)}` : cstr(h, 0, 100));
      longName = undefined;
      if (type === '0' || type === '\0') files.set(name.replace(/^\.\//, ''), size);
      skip = padded;
    }
    pending = buf.subarray(off);
  }
  return files;
}
