import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import { clusterPaths } from './local/layout.js';

/** One role change, as `bulwark cluster history` lists it. */
export interface HistoryEntry {
  kind: 'failover' | 'switchover';
  term: number;
  from: string | null;
  to: string;
  /** Monitor (or `cli`) that did it. */
  by: string;
  /** Failover: first failed probe of the old primary. Switchover: the request. */
  startedAt: string;
  /** When the decision was taken (failover: detection done). */
  decidedAt: string;
  /** When the new primary accepted writes. */
  writableAt: string;
  /** startedAt -> writableAt: what clients waited, at most, for a primary. */
  durationMs: number;
  /** Failover: decidedAt -> writableAt. Switchover: old primary shutdown -> new primary writable. */
  promoteMs: number;
  reason: string;
  /** How the old primary came back (filled in by a later rejoin line), or what was done to it. */
  oldPrimary?: string;
}

export function appendHistory(dir: string, entry: HistoryEntry | Record<string, unknown>): void {
  appendFileSync(clusterPaths(dir).history, `${JSON.stringify(entry)}\n`);
}

export function readHistory(dir: string): HistoryEntry[] {
  const p = clusterPaths(dir).history;
  if (!existsSync(p)) return [];
  return readFileSync(p, 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .flatMap((l) => {
      try {
        const e = JSON.parse(l);
        return e.kind === 'failover' || e.kind === 'switchover' ? [e as HistoryEntry] : [];
      } catch {
        return [];
      }
    });
}

export function formatHistory(entries: HistoryEntry[]): string {
  if (entries.length === 0) return 'no failovers or switchovers yet\n';
  const rows = entries.map((e) => [
    e.writableAt,
    e.kind,
    `${e.from ?? '-'} -> ${e.to}`,
    String(e.term),
    `${(e.durationMs / 1000).toFixed(2)}s`,
    `${(e.promoteMs / 1000).toFixed(3)}s`,
    e.by,
  ]);
  const header = ['WHEN', 'KIND', 'CHANGE', 'TERM', 'DURATION', 'PROMOTE', 'BY'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => c.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  return `${[line(header), ...rows.map(line)].join('\n')}\n`;
}
