import { isSegmentName, parseLsn, segmentNumber, segmentTimeline, WAL_SEGMENT_SIZE, walFileName } from './wal-names.js';

/**
 * Timelines and the WAL a recovery reads, pure so they are unit-tested without a server.
 *
 * A timeline's history file (`00000002.history`, archived with the WAL) lists every ancestor timeline
 * and the LSN where its child branched off: `1\t0/5000000\tno recovery target specified`. Recovery
 * towards timeline T reads each segment from the newest timeline of T's history that had begun by
 * that segment (PostgreSQL's XLogFileReadAnyTLI): the segment holding a switch point comes from the
 * child timeline.
 */

export interface TimelineHistory {
  tli: number;
  /** ancestors, oldest first: timeline `tli` was left at `switchLsn` for the next one */
  parents: { tli: number; switchLsn: string }[];
}

/** Which timeline recovery follows: PostgreSQL's recovery_target_timeline. */
export type TargetTimeline = 'current' | 'latest' | number;

export function historyFileName(tli: number): string {
  return `${tli.toString(16).toUpperCase().padStart(8, '0')}.history`;
}

/** The timeline number of a history file name, or undefined. */
export function historyTimeline(name: string): number | undefined {
  const m = /^([0-9A-F]{8})\.history$/.exec(name);
  return m ? Number.parseInt(m[1]!, 16) : undefined;
}

export function parseHistory(tli: number, text: string): TimelineHistory {
  const parents: TimelineHistory['parents'] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*(\d+)\s+([0-9A-Fa-f]+\/[0-9A-Fa-f]+)/.exec(line);
    if (m) parents.push({ tli: Number(m[1]), switchLsn: m[2]!.toUpperCase() });
  }
  return { tli, parents };
}

/** "2 (from 1 at 0/5000000)" for each timeline with a history, in timeline order. */
export function describeTimelines(histories: TimelineHistory[]): string[] {
  return [...histories]
    .sort((a, b) => a.tli - b.tli)
    .map((h) => {
      const p = h.parents.at(-1);
      return p ? `${h.tli} (from ${p.tli} at ${p.switchLsn})` : String(h.tli);
    });
}

/**
 * The timeline number recovery ends up following. `current`: the backup's own; `latest`: as
 * PostgreSQL finds it, the backup's timeline and then each next timeline that has a history file;
 * a number: that one.
 */
export function resolveTargetTimeline(target: TargetTimeline, backupTli: number, historyTlis: number[]): number {
  if (target === 'current') return backupTli;
  if (target === 'latest') {
    const have = new Set(historyTlis);
    let t = backupTli;
    while (have.has(t + 1)) t++;
    return t;
  }
  return target;
}

/**
 * The default timeline of a restore: the backup's own (PostgreSQL's `current`), followed onto a
 * child timeline only where the archive shows the child *replaced* it: the parent timeline has no
 * complete archived segment from the child's branch segment on (a promotion after the old primary
 * stopped: a failover whose new primary archives into the same repository; the old primary's last
 * segment is never complete, the new one archives it as `.partial`). A child the parent went on past
 * (a restored copy that archived, while the primary kept archiving its own timeline) is a side
 * branch and never followed, so it cannot change what a restore of the primary's backups recovers.
 */
export function continuedTimeline(
  backupTli: number,
  startWal: string,
  histories: TimelineHistory[],
  archived: string[],
): { timeline: number; followed: string[] } {
  const segs = archived.filter(isSegmentName);
  const segSize = BigInt(WAL_SEGMENT_SIZE);
  let t = backupTli;
  let from = segmentNumber(startWal);
  const followed: string[] = [];
  for (;;) {
    const here = t;
    const children = histories
      .filter((h) => h.parents.at(-1)?.tli === here)
      .map((h) => ({ h, switchSeg: parseLsn(h.parents.at(-1)!.switchLsn) / segSize }))
      .filter((c) => c.switchSeg >= from)
      .filter((c) => !segs.some((n) => segmentTimeline(n) === here && segmentNumber(n) >= c.switchSeg))
      .sort((a, b) => b.h.tli - a.h.tli);
    const next = children[0];
    if (!next) return { timeline: t, followed };
    followed.push(
      `timeline ${t} ends where timeline ${next.h.tli} branched off (${next.h.parents.at(-1)!.switchLsn}): following it`,
    );
    t = next.h.tli;
    from = next.switchSeg;
  }
}

export interface WalPlan {
  /** the timeline recovery follows */
  timeline: number;
  /** the newest segment on that path found in the archive */
  to?: string;
  /** archived segments on the path from the backup's first segment to `to` */
  segments: string[];
  /** segments on the path, before `to`, that are not in the archive: recovery stops at the first */
  missing: string[];
  /** the backup cannot reach the timeline (it is not on that timeline's history) */
  error?: string;
}

/**
 * The segments recovery from a backup starting in `startWal` reads towards timeline `timeline`
 * (whose history is `history`, undefined for a timeline without one), which of them the archive
 * holds (`archived`: WAL names) and which are missing before the newest one it holds.
 */
export function walPlan(o: {
  startWal: string;
  timeline: number;
  history?: TimelineHistory;
  archived: string[];
}): WalPlan {
  const segSize = BigInt(WAL_SEGMENT_SIZE);
  // [tli, first segment on it] for every timeline of the path, oldest first
  const path: { tli: number; from: bigint; until?: bigint }[] = [];
  let from = 0n;
  for (const p of o.history?.parents ?? []) {
    const until = parseLsn(p.switchLsn) / segSize;
    path.push({ tli: p.tli, from, until });
    from = until;
  }
  path.push({ tli: o.timeline, from });
  const start = segmentNumber(o.startWal);
  const startTli = segmentTimeline(o.startWal);
  const tliOf = (n: bigint): number => {
    let t = path[0]!.tli;
    for (const e of path) if (n >= e.from) t = e.tli;
    return t;
  };
  const plan: WalPlan = { timeline: o.timeline, segments: [], missing: [] };
  const own = path.find((e) => e.tli === startTli);
  // the backup began on its timeline at `start`: that timeline must still be the path there
  if (!own || tliOf(start) !== startTli) {
    plan.error = `timeline ${o.timeline} is not a child of the backup's timeline ${startTli} at ${o.startWal}${
      o.history ? ` (history: ${describeTimelines([o.history]).join('')})` : ''
    }`;
    return plan;
  }
  const have = new Set<string>();
  for (const n of o.archived) if (isSegmentName(n)) have.add(n);
  let max = -1n;
  for (const n of have) {
    const seg = segmentNumber(n);
    if (seg >= start && segmentTimeline(n) === tliOf(seg) && seg > max) max = seg;
  }
  for (let n = start; n <= max; n++) {
    const name = walFileName(tliOf(n), n * segSize);
    if (have.has(name)) plan.segments.push(name);
    else plan.missing.push(name);
  }
  if (max >= start) plan.to = walFileName(tliOf(max), max * segSize);
  return plan;
}
