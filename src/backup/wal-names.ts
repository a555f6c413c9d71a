/**
 * WAL file names and LSN arithmetic (PostgreSQL's XLogFileName / XLByteToSeg), pure so they are
 * unit-tested without a server. Default 16 MiB segments.
 */
export const WAL_SEGMENT_SIZE = 16 * 1024 * 1024;

export function parseLsn(lsn: string): bigint {
  const m = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(lsn.trim());
  if (!m) throw new RangeError(`"${lsn}" is not an LSN (like 0/16B3748)`);
  return (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`);
}

export function formatLsn(v: bigint): string {
  return `${(v >> 32n).toString(16).toUpperCase()}/${(v & 0xffffffffn).toString(16).toUpperCase()}`;
}

/** Name of the WAL segment holding `lsn` on `timeline`. */
export function walFileName(timeline: number, lsn: string | bigint, segSize = WAL_SEGMENT_SIZE): string {
  const v = typeof lsn === 'bigint' ? lsn : parseLsn(lsn);
  const segNo = v / BigInt(segSize);
  const perId = 0x100000000n / BigInt(segSize);
  const hex = (n: bigint | number) => n.toString(16).toUpperCase().padStart(8, '0');
  return hex(timeline) + hex(segNo / perId) + hex(segNo % perId);
}

export function isSegmentName(name: string): boolean {
  return /^[0-9A-F]{24}$/.test(name);
}

/** Position of a segment in the WAL stream, ignoring the timeline (for ranges). */
export function segmentNumber(name: string, segSize = WAL_SEGMENT_SIZE): bigint {
  const perId = 0x100000000n / BigInt(segSize);
  return BigInt(`0x${name.slice(8, 16)}`) * perId + BigInt(`0x${name.slice(16, 24)}`);
}

export function segmentTimeline(name: string): number {
  return Number.parseInt(name.slice(0, 8), 16);
}

/**
 * How long restore_command trusts a prefetcher's "not in the archive" marker (ms). The prefetcher
 * re-checks the archive and renews a marker at least twice that often; an older marker (say, a
 * prefetcher that died) is ignored and the command asks the archive itself.
 */
export const MISSING_FRESH_MS = 1500;

/** The WAL segment a base backup's recovery starts in, from its backup_label (undefined if none). */
export function labelStartSegment(label: string): string | undefined {
  return parseBackupLabel(label).startSegment;
}

/** START WAL LOCATION (LSN and segment) and START TIMELINE of a backup_label. */
export function parseBackupLabel(label: string): { startLsn?: string; startSegment?: string; timeline?: number } {
  const start = /^START WAL LOCATION: ([0-9A-F]+\/[0-9A-F]+) \(file ([0-9A-F]{24})\)$/m.exec(label);
  const tli = /^START TIMELINE: (\d+)$/m.exec(label)?.[1];
  return { startLsn: start?.[1], startSegment: start?.[2], timeline: tli ? Number(tli) : undefined };
}
