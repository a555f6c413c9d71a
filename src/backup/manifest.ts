import type { Encoding } from './codec.js';

/** One stored data object of a backup. `sha256` is of the stored bytes, so verify needs no key. */
export interface ObjectEntry {
  name: string;
  key: string;
  rawBytes: number;
  storedBytes: number;
  sha256: string;
}

/**
 * The record of one complete backup, stored as `backups/<id>/manifest.json` (and a `.copy`, read if
 * the first is damaged). It is written only after every data object is stored, so a backup that was
 * interrupted has no manifest and is never listed, restored or counted by retention.
 */
export interface BackupManifest {
  format: 1;
  id: string;
  kind: 'logical' | 'physical';
  /**
   * physical only: a full copy, or only what changed since `incremental.reference`: the newest physical
   * backup (incremental) or the newest full one (differential). Absent = full.
   */
  type?: 'full' | 'incremental' | 'differential';
  label?: string;
  startedAt: string;
  stoppedAt: string;
  durationMs: number;
  encoding: Encoding;
  objects: ObjectEntry[];
  sizes: { raw: number; stored: number };
  pg: {
    serverVersion?: string;
    systemIdentifier?: string;
    /** logical: the dumped database and pg_dump format (directory: one object per file, `dump/<file>`) */
    database?: string;
    dumpFormat?: 'custom' | 'directory';
    /** physical: WAL position and timeline of the base backup */
    timeline?: number;
    startLsn?: string;
    stopLsn?: string;
    /** first and last WAL segment the backup needs to become consistent */
    startWal?: string;
    stopWal?: string;
    /** every transaction id >= this one started after the backup ended (used to pick a backup for --to-xid) */
    nextXid?: string;
  };
  /** incremental physical backups: what this layer sits on and how to finish laying it out */
  incremental?: {
    /** the backup this one holds the changes since (full or incremental): restore applies the chain */
    reference: string;
    /** blocks whose page LSN is at or above this (the reference's start LSN) were copied */
    sinceLsn: string;
    /** pg_backup_stop()'s backup_label, written into the restored folder after the last layer */
    backupLabel: string;
    /** bytes of the data folder read to find the changes, blocks and whole files copied */
    scannedBytes: number;
    changedBlocks: number;
    wholeFiles: number;
  };
}

/** The fields every manifest has, from what every backup knows when it ends. */
export function manifestHead(o: {
  id: string;
  kind: BackupManifest['kind'];
  label?: string;
  started: Date;
  stopped: Date;
  encoding: Encoding;
}): Pick<BackupManifest, 'format' | 'id' | 'kind' | 'label' | 'startedAt' | 'stoppedAt' | 'durationMs' | 'encoding'> {
  return {
    format: 1,
    id: o.id,
    kind: o.kind,
    ...(o.label ? { label: o.label } : {}),
    startedAt: o.started.toISOString(),
    stoppedAt: o.stopped.toISOString(),
    durationMs: o.stopped.getTime() - o.started.getTime(),
    encoding: o.encoding,
  };
}

/** A physical backup is incremental when it names a reference. */
export function isIncremental(m: BackupManifest): boolean {
  return m.kind === 'physical' && m.incremental !== undefined;
}

/** `20261127T235501123Z-P`: sortable by time, kind letter last (P physical, L logical). */
export function newBackupId(kind: 'logical' | 'physical', now = new Date()): string {
  return `${now.toISOString().replace(/[-:.]/g, '')}-${kind === 'physical' ? 'P' : 'L'}`;
}

export function isBackupId(id: string): boolean {
  return /^\d{8}T\d{9}Z-[PL]$/.test(id);
}
