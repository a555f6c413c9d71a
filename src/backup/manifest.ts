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
}

/** `20261127T235501123Z-P`: sortable by time, kind letter last (P physical, L logical). */
export function newBackupId(kind: 'logical' | 'physical', now = new Date()): string {
  return `${now.toISOString().replace(/[-:.]/g, '')}-${kind === 'physical' ? 'P' : 'L'}`;
}

export function isBackupId(id: string): boolean {
  return /^\d{8}T\d{9}Z-[PL]$/.test(id);
}
