/** PostgreSQL LSNs ('16/B374D848') as bigints so they compare and subtract exactly. */
export function parseLsn(lsn: string | null | undefined): bigint | null {
  if (!lsn) return null;
  const m = /^([0-9A-Fa-f]+)\/([0-9A-Fa-f]+)$/.exec(lsn);
  if (!m) return null;
  return (BigInt(`0x${m[1]}`) << 32n) + BigInt(`0x${m[2]}`);
}

export function formatLsn(value: bigint): string {
  return `${(value >> 32n).toString(16).toUpperCase()}/${(value & 0xffffffffn).toString(16).toUpperCase()}`;
}

/** a - b in bytes, or null when either is unknown; never negative. */
export function lsnDiff(a: string | null | undefined, b: string | null | undefined): number | null {
  const x = parseLsn(a);
  const y = parseLsn(b);
  if (x === null || y === null) return null;
  return x > y ? Number(x - y) : 0;
}

export function compareLsn(a: string | null | undefined, b: string | null | undefined): number {
  const x = parseLsn(a) ?? -1n;
  const y = parseLsn(b) ?? -1n;
  return x === y ? 0 : x > y ? 1 : -1;
}
