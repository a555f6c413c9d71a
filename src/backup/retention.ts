import { chainAncestors } from './incremental/chain.js';
import type { BackupManifest } from './manifest.js';
import type { WalObject } from './repository.js';
import { isSegmentName, segmentNumber } from './wal-names.js';

/**
 * Retention rules; a backup is kept when ANY rule keeps it. Each kind (physical, logical) is counted
 * separately, and the newest complete backup of each kind is always kept, as is every backup a kept
 * incremental backup builds on.
 * - keepLast: the N newest
 * - maxAgeMs: every backup that ended less than this long ago
 * - daily/weekly/monthly (GFS): the newest backup of each of the N most recent UTC days / ISO weeks /
 *   months that have a backup
 */
export interface RetentionPolicy {
  keepLast?: number;
  maxAgeMs?: number;
  daily?: number;
  weekly?: number;
  monthly?: number;
}

export interface ExpirePlan {
  keep: { id: string; reasons: string[] }[];
  expire: { id: string; kind: string; stoppedAt: string }[];
  /** WAL objects no kept backup needs (older than the oldest kept physical backup's start segment). */
  walExpire: WalObject[];
  /** Why WAL is (not) expired, in a sentence. */
  walReason: string;
}

export function hasRule(p: RetentionPolicy): boolean {
  return [p.keepLast, p.maxAgeMs, p.daily, p.weekly, p.monthly].some((v) => v !== undefined);
}

function isoWeek(d: Date): string {
  const t = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()));
  const day = t.getUTCDay() || 7;
  t.setUTCDate(t.getUTCDate() + 4 - day);
  const yearStart = new Date(Date.UTC(t.getUTCFullYear(), 0, 1));
  const week = Math.ceil(((t.getTime() - yearStart.getTime()) / 86_400_000 + 1) / 7);
  return `${t.getUTCFullYear()}-W${String(week).padStart(2, '0')}`;
}

const buckets: Record<'daily' | 'weekly' | 'monthly', (d: Date) => string> = {
  daily: (d) => d.toISOString().slice(0, 10),
  weekly: isoWeek,
  monthly: (d) => d.toISOString().slice(0, 7),
};

/** Pure: which backups and WAL objects `policy` removes at time `now`. */
export function planExpire(
  backups: BackupManifest[],
  wal: WalObject[],
  policy: RetentionPolicy,
  now: Date = new Date(),
): ExpirePlan {
  const reasons = new Map<string, string[]>();
  const keep = (id: string, why: string) => reasons.set(id, [...(reasons.get(id) ?? []), why]);
  for (const kind of ['physical', 'logical'] as const) {
    const list = backups.filter((b) => b.kind === kind).sort((a, b) => (a.id < b.id ? 1 : -1)); // newest first
    if (!list.length) continue;
    keep(list[0]!.id, `newest ${kind} backup`);
    if (policy.keepLast !== undefined)
      for (const b of list.slice(0, policy.keepLast)) keep(b.id, `one of the ${policy.keepLast} newest`);
    if (policy.maxAgeMs !== undefined)
      for (const b of list)
        if (now.getTime() - new Date(b.stoppedAt).getTime() < policy.maxAgeMs)
          keep(b.id, 'younger than the maximum age');
    for (const rule of ['daily', 'weekly', 'monthly'] as const) {
      const n = policy[rule];
      if (!n) continue;
      const seen = new Set<string>();
      for (const b of list) {
        const bucket = buckets[rule](new Date(b.stoppedAt));
        if (seen.has(bucket)) continue;
        if (seen.size >= n) break;
        seen.add(bucket);
        keep(b.id, `${rule} ${bucket}`);
      }
    }
  }
  // an incremental backup is only restorable with the backups below it: keep its whole chain
  for (const [id, by] of chainAncestors(
    backups,
    backups.filter((b) => reasons.has(b.id)),
  ))
    keep(id, `base of kept incremental backup ${by}`);
  const kept = backups.filter((b) => reasons.has(b.id));
  const expire = backups
    .filter((b) => !reasons.has(b.id))
    .map((b) => ({ id: b.id, kind: b.kind, stoppedAt: b.stoppedAt }));
  const keptPhysical = kept.filter((b) => b.kind === 'physical' && b.pg.startWal);
  let walExpire: WalObject[] = [];
  let walReason: string;
  if (!keptPhysical.length) {
    walReason = 'no physical backup is kept: WAL is left alone';
  } else {
    const oldest = keptPhysical.reduce((a, b) =>
      segmentNumber(a.pg.startWal!) <= segmentNumber(b.pg.startWal!) ? a : b,
    );
    const floor = segmentNumber(oldest.pg.startWal!);
    // segments (and .partial / .backup files named after one) below the oldest kept backup's first
    // segment serve no kept backup and no PITR window; timeline history files are always kept
    walExpire = wal.filter((w) => isSegmentName(w.name.slice(0, 24)) && segmentNumber(w.name.slice(0, 24)) < floor);
    walReason = `WAL before ${oldest.pg.startWal} (start of the oldest kept physical backup ${oldest.id}) is not needed`;
  }
  return {
    keep: kept.map((b) => ({ id: b.id, reasons: reasons.get(b.id)! })),
    expire,
    walExpire,
    walReason,
  };
}

/**
 * Leftovers of interrupted backups: `backups/<id>/` folders without a manifest whose newest object is
 * older than `ageMs` (pure). The age keeps a backup that is still running (it has no manifest yet)
 * from being deleted under its feet.
 */
export function findOrphans(
  objects: { key: string; size: number; modified?: Date }[],
  ageMs: number,
  now: Date = new Date(),
): { id: string; keys: string[]; bytes: number }[] {
  const byId = new Map<string, { keys: string[]; bytes: number; newest: number; complete: boolean }>();
  for (const o of objects) {
    const m = /^backups\/([^/]+)\/(.+)$/.exec(o.key);
    if (!m) continue;
    const e = byId.get(m[1]!) ?? { keys: [], bytes: 0, newest: 0, complete: false };
    e.keys.push(o.key);
    e.bytes += o.size;
    e.newest = Math.max(e.newest, o.modified?.getTime() ?? now.getTime());
    if (m[2] === 'manifest.json' || m[2] === 'manifest.copy.json') e.complete = true;
    byId.set(m[1]!, e);
  }
  return [...byId.entries()]
    .filter(([, e]) => !e.complete && now.getTime() - e.newest >= ageMs)
    .map(([id, e]) => ({ id, keys: e.keys, bytes: e.bytes }));
}

/**
 * Temp files of writes that never finished (`*.bulwark-tmp-*` after a kill -9 or a crash) older than
 * `ageMs` (pure). The same age rule as findOrphans keeps a write still in progress.
 */
export function findLeftovers(
  objects: { key: string; size: number; modified?: Date }[],
  ageMs: number,
  now: Date = new Date(),
): { key: string; size: number }[] {
  return objects
    .filter((o) => now.getTime() - (o.modified?.getTime() ?? now.getTime()) >= ageMs)
    .map((o) => ({ key: o.key, size: o.size }));
}
