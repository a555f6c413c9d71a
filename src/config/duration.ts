import { UsageError } from '../lib/errors.js';

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * Parse a k6-style duration: `'30s'`, `'1m30s'`, `'250ms'`, `'2h'`, `'1.5s'`, or a number of
 * milliseconds. `where` names the option in the error ("load.duration").
 */
export function parseDuration(value: string | number, where = 'duration'): number {
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0)
      throw new UsageError(`${where}: ${value} is not a valid duration`, 'BULWARK_E_DURATION');
    return value;
  }
  const text = value.trim();
  if (/^\d+(\.\d+)?$/.test(text)) return parseDuration(Number(text) * 1000, where); // bare number = seconds, like Locust's -t 30
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/g;
  let total = 0;
  let consumed = 0;
  for (const match of text.matchAll(re)) {
    if (match.index !== consumed) break;
    total += Number(match[1]) * UNIT_MS[match[2]!]!;
    consumed += match[0].length;
  }
  if (consumed === 0 || consumed !== text.length) {
    throw new UsageError(
      `${where}: "${value}" is not a valid duration (use e.g. 30s, 1m30s, 250ms)`,
      'BULWARK_E_DURATION',
    );
  }
  return total;
}

/** Human form of a millisecond count: 1m30s, 2.5s, 120ms. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${Number((ms / 1000).toFixed(1))}s`;
  const m = Math.floor(ms / 60_000);
  const s = Math.round((ms % 60_000) / 1000);
  return s ? `${m}m${s}s` : `${m}m`;
}

const SIZE_UNITS: Record<string, number> = {
  b: 1,
  kb: 1024,
  k: 1024,
  mb: 1024 ** 2,
  m: 1024 ** 2,
  gb: 1024 ** 3,
  g: 1024 ** 3,
  tb: 1024 ** 4,
};

/** Parse a size: `'64MB'`, `'5mb'`, `'1GiB'`, or a byte count. */
export function parseSize(value: string | number, where = 'size'): number {
  if (typeof value === 'number') return value;
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)$/i.exec(value.trim());
  const unit = m?.[2]?.toLowerCase().replace('i', '') || 'b';
  const factor = SIZE_UNITS[unit];
  if (!m || factor === undefined) throw new UsageError(`${where}: "${value}" is not a valid size (use e.g. 64MB)`);
  return Math.round(Number(m[1]) * factor);
}
