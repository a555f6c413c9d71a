/**
 * Which pages of a relation file changed since a reference backup, read from the pages themselves.
 *
 * Every WAL-logged change to a page stamps the page header's pd_lsn (its first 8 bytes: two 32-bit
 * halves in the server's byte order, little-endian here) with the LSN of the change. A page whose
 * pd_lsn is older than the reference backup's start LSN was last changed before that backup started,
 * so the reference (and the layers above it) already hold it as it is now. That is the whole argument,
 * and it also covers pages torn by a concurrent write: after pg_backup_start's checkpoint every page
 * written to disk was changed after our own start LSN, and replay from that LSN rewrites it from its
 * full-page image. Hint-bit-only changes do not move pd_lsn (without data checksums) and need not be
 * copied. Pages that are new (all zero, pd_lsn 0) are always copied: a file truncated and extended
 * again since the reference must not get the old page back. So are pages past the reference's end
 * of the file.
 */
export const BLOCK_SIZE = 8192;

/** pd_lsn of the page at `offset`, as a number (LSNs stay far below 2^53). */
export function pageLsn(buf: Buffer, offset: number): number {
  return buf.readUInt32LE(offset) * 0x1_0000_0000 + buf.readUInt32LE(offset + 4);
}

/**
 * Block numbers (absolute, starting at `firstBlock`) of the whole pages in `buf` to copy: pd_lsn at or
 * above `sinceLsn`, or 0 (a new page), or at or after `referenceBlocks` (the file's length in blocks in
 * the reference; 0 when the file is new).
 */
export function changedBlocks(buf: Buffer, firstBlock: number, sinceLsn: number, referenceBlocks: number): number[] {
  const out: number[] = [];
  const pages = Math.floor(buf.length / BLOCK_SIZE);
  for (let i = 0; i < pages; i++) {
    const block = firstBlock + i;
    if (block >= referenceBlocks) {
      out.push(block);
      continue;
    }
    const lsn = pageLsn(buf, i * BLOCK_SIZE);
    if (lsn === 0 || lsn >= sinceLsn) out.push(block);
  }
  return out;
}

/** "0/16B3748" as a number. */
export function lsnToNumber(lsn: string): number {
  const [hi, lo] = lsn.split('/');
  return Number.parseInt(hi!, 16) * 0x1_0000_0000 + Number.parseInt(lo!, 16);
}
