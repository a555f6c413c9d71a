import { spawn } from 'node:child_process';
import { pgBin } from '../lib/postgres.js';
import { DEFAULT_LEVEL, type Encoding } from './codec.js';
import { BackupError } from './errors.js';
import { type BackupManifest, manifestHead, newBackupId } from './manifest.js';
import { type PgTarget, pgEnv, withClient } from './pg.js';
import { type ProgressListener, ProgressMeter } from './progress.js';
import type { Repository } from './repository.js';
import { walFileName } from './wal-names.js';

export interface PhysicalBackupOptions {
  repo: Repository;
  pg: PgTarget;
  encoding: Encoding;
  label?: string;
  /** zstd worker threads (0 = one per core client-side, 2 server-side). */
  threads?: number;
  /** zstd: compress on the server (PostgreSQL 15+, the default) or in a local zstd process */
  compressAt?: 'server' | 'client';
  onProgress?: ProgressListener;
}

/** Parse pg_basebackup -v's "write-ahead log start point: 0/2000028 on timeline 1" and end point. */
export function parseBasebackupLog(stderr: string): { startLsn?: string; stopLsn?: string; timeline?: number } {
  const start = /write-ahead log start point: ([0-9A-F]+\/[0-9A-F]+) on timeline (\d+)/.exec(stderr);
  const stop = /write-ahead log end point: ([0-9A-F]+\/[0-9A-F]+)/.exec(stderr);
  return { startLsn: start?.[1], timeline: start ? Number(start[2]) : undefined, stopLsn: stop?.[1] };
}

/**
 * A full base backup of the whole instance: pg_basebackup's tar stream (WAL needed for consistency
 * included, `-X fetch`) piped through multi-threaded zstd (or gzip), optional age encryption and into
 * the repository, with no local copy. The manifest (LSNs, timeline, WAL range, sizes, SHA-256) is
 * written last.
 */
export async function physicalBackup(o: PhysicalBackupOptions): Promise<BackupManifest> {
  const started = new Date();
  const info = await withClient(o.pg, async (c) => {
    const r = await c.query(
      `select current_setting('server_version') as v,
              (select system_identifier::text from pg_control_system()) as sysid,
              (select sum(pg_database_size(oid))::text from pg_database) as size,
              current_setting('archive_mode') as archive_mode,
              current_setting('server_version_num') as num`,
    );
    return r.rows[0] as { v: string; sysid: string; size: string; archive_mode: string; num: string };
  });
  const id = newBackupId('physical', started);
  // zstd on PostgreSQL 15+: the server compresses with `workers` threads while it reads, so neither the
  // 755 MiB tar stream nor its compression passes through this process (5x faster than client-side
  // here, and less network for a remote server). The tar then cannot carry PostgreSQL's own
  // backup_manifest (--no-manifest); our manifest's SHA-256 covers the object instead.
  const serverSide = o.encoding.compression === 'zstd' && Number(info.num) >= 150000 && o.compressAt !== 'client';
  const level = o.encoding.level ?? DEFAULT_LEVEL.zstd;
  const args = ['-D', '-', '-Ft', '-X', 'fetch', '-c', 'fast', '-v', '-P', '--no-password'];
  if (serverSide) args.push(`--compress=server-zstd:level=${level},workers=${o.threads || 2}`, '--no-manifest');
  const child = spawn(pgBin('pg_basebackup'), args, { env: pgEnv(o.pg), stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  const meter = new ProgressMeter('backup (physical)', Number(info.size), o.onProgress);
  let progressKb = 0;
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
    if (stderr.length > 20000) stderr = stderr.slice(-20000);
    // -P: "123456/812345 kB (15%), 0/1 tablespace" (the bytes read from the server, before compression)
    for (const m of d.matchAll(/(\d+)\/\d+ kB/g)) {
      const kb = Number(m[1]);
      if (serverSide && kb > progressKb) meter.add((kb - progressKb) * 1024);
      progressKb = Math.max(progressKb, kb);
    }
  });
  const exited = new Promise<number>((resolve) => child.on('close', (code) => resolve(code ?? 1)));
  let entry: Awaited<ReturnType<Repository['writeObject']>>;
  try {
    entry = await o.repo.writeObject(id, 'base.tar', child.stdout, o.encoding, {
      threads: o.threads ?? 0,
      onRawBytes: serverSide ? undefined : meter.add,
      precompressed: serverSide,
    });
  } catch (err) {
    child.kill('SIGTERM');
    await exited;
    // our side failed (a full disk, S3 unreachable): that is the cause, not pg_basebackup's complaint
    // about the pipe we closed on it, nor its last progress line
    throw new BackupError('BULWARK_E_BACKUP', `physical backup failed: ${(err as Error).message}`, {
      cause: err,
    });
  }
  const code = await exited;
  const pos = parseBasebackupLog(stderr);
  if (code !== 0 || !pos.startLsn || !pos.stopLsn || !pos.timeline) {
    await o.repo.storage.delete([`backups/${id}/${entry.key}`]).catch(() => {});
    throw new BackupError('BULWARK_E_BACKUP', `pg_basebackup exited with ${code}: ${lastLine(stderr)}`);
  }
  meter.finish();
  // server-side compression: the raw size is what pg_basebackup -P counted (kB)
  if (serverSide) entry = { ...entry, rawBytes: progressKb * 1024 };
  // every xid at or above the snapshot's xmax started after the backup ended, so a --to-xid target at
  // or above it is reachable from this backup
  const nextXid = await withClient(o.pg, async (c) => {
    const r = await c.query('select pg_snapshot_xmax(pg_current_snapshot())::text as x');
    return (r.rows[0] as { x: string }).x;
  });
  const stopped = new Date();
  const manifest: BackupManifest = {
    ...manifestHead({ id, kind: 'physical', label: o.label, started, stopped, encoding: o.encoding }),
    objects: [entry],
    sizes: { raw: entry.rawBytes, stored: entry.storedBytes },
    pg: {
      serverVersion: info.v,
      systemIdentifier: info.sysid,
      timeline: pos.timeline,
      startLsn: pos.startLsn,
      stopLsn: pos.stopLsn,
      startWal: walFileName(pos.timeline, pos.startLsn),
      stopWal: walFileName(pos.timeline, pos.stopLsn),
      nextXid,
    },
  };
  await o.repo.writeManifest(manifest);
  return manifest;
}

/** pg_basebackup's last line that is not chatter (-v notices, -P progress lines ending in \r). */
export function lastLine(s: string): string {
  return (
    s
      .split(/[\r\n]+/)
      .map((l) => l.trim())
      .filter(
        (l) =>
          l &&
          !/^pg_basebackup: (initiating|checkpoint|write-ahead|syncing|base backup completed|waiting|starting background|created temporary)/.test(
            l,
          ) &&
          !/^\d+\/\d+ kB \(\d+%\)/.test(l),
      )
      .pop() ?? ''
  );
}
