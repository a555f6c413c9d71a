import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { run } from '../lib/child.js';
import { pgBin } from '../lib/postgres.js';
import type { Encoding } from './codec.js';
import { BackupError } from './errors.js';
import { type BackupManifest, newBackupId } from './manifest.js';
import { type PgTarget, pgEnv, quoteIdent, withClient } from './pg.js';
import { type ProgressListener, ProgressMeter } from './progress.js';
import type { Repository } from './repository.js';

export interface LogicalBackupOptions {
  repo: Repository;
  pg: PgTarget;
  /** Database to dump (default: the connection's database). */
  database?: string;
  encoding: Encoding;
  label?: string;
  onProgress?: ProgressListener;
}

/**
 * pg_dump (custom format, its own compression off) streamed into zstd/gzip, optional age encryption
 * and the repository: nothing is written to local disk. The manifest is written last.
 */
export async function logicalBackup(o: LogicalBackupOptions): Promise<BackupManifest> {
  const started = new Date();
  const info = await withClient(
    o.pg,
    async (c) => {
      const r = await c.query(
        `select current_database() as db, current_setting('server_version') as v, pg_database_size(current_database())::text as size,
                (select system_identifier::text from pg_control_system()) as sysid`,
      );
      return r.rows[0] as { db: string; v: string; size: string; sysid: string };
    },
    o.database,
  );
  const id = newBackupId('logical', started);
  const env = pgEnv(o.pg);
  const child = spawn(pgBin('pg_dump'), ['-Fc', '-Z0', '--no-password', '-d', info.db], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    stderr = (stderr + d).slice(-4000);
  });
  const exited = new Promise<number>((resolve) => child.on('close', (code) => resolve(code ?? 1)));
  const meter = new ProgressMeter('backup (logical)', Number(info.size), o.onProgress);
  let entry: Awaited<ReturnType<Repository['writeObject']>>;
  try {
    entry = await o.repo.writeObject(id, 'dump.pgdump', child.stdout, o.encoding, { onRawBytes: meter.add });
  } catch (err) {
    child.kill('SIGTERM');
    await exited;
    throw new BackupError(
      'BULWARK_E_BACKUP',
      `logical backup of ${info.db} failed: ${stderr.trim() || (err as Error).message}`,
      {
        cause: err,
      },
    );
  }
  const code = await exited;
  if (code !== 0) {
    // the data object is orphaned (no manifest): it is not a backup, so remove it
    await o.repo.storage.delete([`backups/${id}/${entry.key}`]).catch(() => {});
    throw new BackupError(
      'BULWARK_E_BACKUP',
      `pg_dump of ${info.db} exited with ${code}: ${stderr.trim().split('\n').pop()}`,
    );
  }
  meter.finish();
  const stopped = new Date();
  const manifest: BackupManifest = {
    format: 1,
    id,
    kind: 'logical',
    ...(o.label ? { label: o.label } : {}),
    startedAt: started.toISOString(),
    stoppedAt: stopped.toISOString(),
    durationMs: stopped.getTime() - started.getTime(),
    encoding: o.encoding,
    objects: [entry],
    sizes: { raw: entry.rawBytes, stored: entry.storedBytes },
    pg: { serverVersion: info.v, systemIdentifier: info.sysid, database: info.db, dumpFormat: 'custom' },
  };
  await o.repo.writeManifest(manifest);
  return manifest;
}

export interface LogicalRestoreOptions {
  repo: Repository;
  pg: PgTarget;
  backup?: string;
  /** Target database (default: the one that was dumped). Created when missing. */
  database?: string;
  /** Restore into an existing database (objects in the dump are dropped and recreated). */
  force?: boolean;
  jobs?: number;
  onProgress?: ProgressListener;
}

export interface LogicalRestoreResult {
  backup: BackupManifest;
  database: string;
  created: boolean;
  durationMs: number;
}

/**
 * Download (verifying the SHA-256 as it streams), decrypt and decompress the dump into a private temp
 * file, then `pg_restore -j`: parallel restore needs a seekable file, and verifying before
 * pg_restore starts means a corrupted backup never half-restores.
 */
export async function logicalRestore(o: LogicalRestoreOptions): Promise<LogicalRestoreResult> {
  const started = Date.now();
  const m = await o.repo.resolveBackupId(o.backup, 'logical');
  const database = o.database ?? m.pg.database;
  if (!database) throw new BackupError('BULWARK_E_RESTORE', `backup ${m.id} names no database: pass --database`);
  const exists = await withClient(
    o.pg,
    async (c) => (await c.query('select 1 from pg_database where datname = $1', [database])).rowCount! > 0,
    'postgres',
  );
  if (exists && !o.force)
    throw new BackupError(
      'BULWARK_E_TARGET_EXISTS',
      `database "${database}" exists; pass --force to restore into it (its objects from the dump are replaced)`,
    );
  const dir = await mkdtemp(join(tmpdir(), 'bulwark-restore-'));
  try {
    const file = join(dir, 'dump.pgdump');
    const meter = new ProgressMeter('download', m.sizes.stored, o.onProgress);
    const entry = m.objects.find((e) => e.name === 'dump.pgdump');
    if (!entry) throw new BackupError('BULWARK_E_RESTORE', `backup ${m.id} has no dump object`);
    await pipeline(await o.repo.readObject(m, entry, meter.add), createWriteStream(file, { mode: 0o600 }));
    meter.finish();
    if (!exists) await withClient(o.pg, (c) => c.query(`create database ${quoteIdent(database)}`), 'postgres');
    const args = ['-j', String(o.jobs ?? 2), '--no-password', '-d', database];
    if (exists) args.push('--clean', '--if-exists');
    await run(pgBin('pg_restore'), [...args, file], { env: pgEnv(o.pg) }).catch((err) => {
      throw new BackupError('BULWARK_E_RESTORE', `pg_restore into ${database} failed: ${(err as Error).message}`, {
        cause: err,
      });
    });
    return { backup: m, database, created: !exists, durationMs: Date.now() - started };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
