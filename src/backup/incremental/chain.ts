import type { BackupManifest } from '../manifest.js';

/**
 * Pure decisions about chains of incremental backups (unit-tested without a server): what a new
 * incremental backup builds on, and which backups a restore lays out, oldest first.
 */

export type ReferenceChoice = { backup: BackupManifest } | { fallback: string };

/**
 * The reference of a new incremental backup: the newest physical backup of the same server (system
 * identifier) whose chain is complete (for a differential one, the newest full backup). Page LSNs only prove "unchanged since the reference" when the
 * server's history since then is linear, so a timeline switch (a promotion, a PITR, a pg_rewind) since
 * the reference means a full backup instead, as it does when there is nothing to build on.
 */
export function pickReference(
  backups: BackupManifest[],
  systemIdentifier: string,
  timeline: number,
  /** differential: build on the newest FULL backup (a chain of two; pgBackRest's --type=diff) */
  type: 'incremental' | 'differential' = 'incremental',
): ReferenceChoice {
  const physical = backups
    .filter((b) => b.kind === 'physical' && b.pg.systemIdentifier === systemIdentifier)
    .filter((b) => type === 'incremental' || !b.incremental)
    .sort((a, b) => (a.id < b.id ? -1 : 1));
  const last = physical.at(-1);
  if (!last)
    return {
      fallback: `no earlier ${type === 'differential' ? 'full' : 'physical'} backup of this server in the repository`,
    };
  if (last.pg.timeline !== timeline)
    return {
      fallback: `the server is on timeline ${timeline} but the newest backup ${last.id} was taken on timeline ${last.pg.timeline}`,
    };
  if (!last.pg.startLsn) return { fallback: `backup ${last.id} records no start LSN` };
  const chain = resolveChain(backups, last);
  if ('error' in chain) return { fallback: chain.error };
  return { backup: last };
}

/** The backups a restore of `target` lays out: its full backup first, then each incremental layer. */
export function resolveChain(
  backups: BackupManifest[],
  target: BackupManifest,
): { chain: BackupManifest[] } | { error: string } {
  const byId = new Map(backups.map((b) => [b.id, b]));
  const chain: BackupManifest[] = [target];
  let cur = target;
  while (cur.incremental) {
    const ref = byId.get(cur.incremental.reference);
    if (!ref)
      return {
        error: `backup ${cur.id} is incremental on ${cur.incremental.reference}, which is not in the repository (its chain is broken)`,
      };
    if (chain.includes(ref) || chain.length > 10_000) return { error: `backup ${cur.id}: its chain loops` };
    chain.unshift(ref);
    cur = ref;
  }
  return { chain };
}

/** Every backup some backup in `kept` builds on (so retention never deletes part of a kept chain). */
export function chainAncestors(backups: BackupManifest[], kept: BackupManifest[]): Map<string, string> {
  const needed = new Map<string, string>();
  for (const b of kept) {
    const r = resolveChain(backups, b);
    if ('error' in r) continue;
    for (const a of r.chain.slice(0, -1)) if (!needed.has(a.id)) needed.set(a.id, b.id);
  }
  return needed;
}
