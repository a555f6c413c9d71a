import type { BackupManifest } from './manifest.js';
import type { TargetTimeline } from './timelines.js';
import { parseLsn } from './wal-names.js';

/** Where recovery should stop. `latest` replays every archived segment. */
export type RecoveryTarget =
  | { kind: 'latest' }
  /** stop as soon as the base backup is consistent (verify --restore) */
  | { kind: 'immediate' }
  | { kind: 'time' /** passed to PostgreSQL verbatim (keeps microseconds) */; time: string }
  | { kind: 'lsn'; lsn: string }
  | { kind: 'xid'; xid: string }
  /** a restore point made with pg_create_restore_point('name') */
  | { kind: 'name'; name: string };

/**
 * Pick the base backup for a recovery target: the newest physical backup that ended before the
 * target (a base backup cannot be rolled back, only forward). Pure: unit-tested without a server.
 * Returns the backup and a sentence saying why, or an error sentence.
 */
export function chooseBackup(
  backups: BackupManifest[],
  target: RecoveryTarget,
  requested?: string,
): { backup: BackupManifest; reason: string } | { error: string } {
  const physical = backups.filter((b) => b.kind === 'physical').sort((a, b) => (a.id < b.id ? -1 : 1));
  const fits = (b: BackupManifest): boolean => {
    switch (target.kind) {
      case 'latest':
      case 'immediate':
      // where a restore point lies is only known to recovery (it is a WAL record): the newest backup,
      // unless --backup names an older one; a point before it fails recovery loudly
      case 'name':
        return true;
      case 'time':
        return new Date(b.stoppedAt).getTime() <= new Date(target.time).getTime();
      case 'lsn':
        return b.pg.stopLsn !== undefined && parseLsn(b.pg.stopLsn) <= parseLsn(target.lsn);
      case 'xid':
        return b.pg.nextXid !== undefined && BigInt(b.pg.nextXid) <= BigInt(target.xid);
    }
  };
  const describe = () =>
    target.kind === 'time'
      ? `time ${target.time}`
      : target.kind === 'lsn'
        ? `LSN ${target.lsn}`
        : target.kind === 'xid'
          ? `xid ${target.xid}`
          : target.kind === 'immediate'
            ? 'the end of the base backup'
            : target.kind === 'name'
              ? `restore point "${target.name}"`
              : 'the end of the archive';
  if (requested && requested !== 'latest') {
    const b = physical.find((m) => m.id === requested);
    if (!b) return { error: `physical backup ${requested} not found` };
    if (!fits(b)) return { error: `backup ${requested} ended after the target ${describe()}: choose an older backup` };
    return { backup: b, reason: `backup ${b.id} as requested` };
  }
  const candidates = physical.filter(fits);
  const b = candidates.at(-1);
  if (!b) {
    if (!physical.length) return { error: 'the repository holds no physical backup' };
    return {
      error: `no physical backup ended before the target ${describe()} (oldest ended ${physical[0]!.stoppedAt})`,
    };
  }
  return {
    backup: b,
    reason:
      target.kind === 'name'
        ? `newest backup ${b.id} (for a restore point older than its end, name an older backup with --backup)`
        : target.kind === 'latest' || target.kind === 'immediate'
          ? `newest backup ${b.id}`
          : `newest backup that ended before the target ${describe()}: ${b.id} (ended ${b.stoppedAt})`,
  };
}

function q(v: string): string {
  return `'${v.replace(/'/g, "''")}'`;
}

/** The recovery settings written to postgresql.auto.conf (pure). */
export function recoverySettings(opts: {
  restoreCommand: string;
  target: RecoveryTarget;
  action: 'promote' | 'pause' | 'shutdown';
  /** 'preserve' keeps the backup's archive settings; anything else (the default) turns archiving off */
  archiveMode?: 'off' | 'preserve';
  /** recovery_target_timeline; default 'current', the backup's own timeline */
  timeline?: TargetTimeline;
  port?: number;
  /** more settings, already quoted for postgresql.conf */
  extra?: Record<string, string>;
}): string {
  const lines = ['# added by bulwark restore', `restore_command = ${q(opts.restoreCommand)}`];
  const t = opts.target;
  if (t.kind === 'time') lines.push(`recovery_target_time = ${q(t.time)}`);
  if (t.kind === 'lsn') lines.push(`recovery_target_lsn = ${q(t.lsn)}`);
  if (t.kind === 'xid') lines.push(`recovery_target_xid = ${q(t.xid)}`);
  if (t.kind === 'name') lines.push(`recovery_target_name = ${q(t.name)}`);
  if (t.kind === 'immediate') lines.push("recovery_target = 'immediate'");
  if (t.kind !== 'latest') lines.push(`recovery_target_action = ${q(opts.action)}`);
  lines.push(`recovery_target_timeline = ${q(String(opts.timeline ?? 'current'))}`);
  // a restored copy archiving into the repository it came from adds a timeline there that later
  // restores of the source could follow: only when asked
  if (opts.archiveMode !== 'preserve') lines.push('archive_mode = off');
  if (opts.port) lines.push(`port = ${opts.port}`);
  for (const [k, v] of Object.entries(opts.extra ?? {})) lines.push(`${k} = ${v}`);
  return `${lines.join('\n')}\n`;
}
