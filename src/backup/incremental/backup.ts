import { existsSync } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { run } from '../../lib/child.js';
import { pgBin } from '../../lib/postgres.js';
import { BackupError } from '../errors.js';
import { type BackupManifest, isIncremental, manifestHead, newBackupId, type ObjectEntry } from '../manifest.js';
import { connect, withClient } from '../pg.js';
import { type PhysicalBackupOptions, physicalBackup } from '../physical.js';
import { ProgressMeter } from '../progress.js';
import type { Repository } from '../repository.js';
import {
  formatLsn,
  parseBackupLabel,
  parseLsn,
  segmentNumber,
  segmentTimeline,
  WAL_SEGMENT_SIZE,
  walFileName,
} from '../wal-names.js';
import { pickReference } from './chain.js';
import { type DataFile, planDataFiles, walkDataDir } from './data-files.js';
import { encodeRecord } from './layer-format.js';
import { BLOCK_SIZE, changedBlocks, lsnToNumber } from './pages.js';
import { listTar } from './tar-list.js';

export interface IncrementalBackupOptions extends PhysicalBackupOptions {
  /** incremental (default): changes since the newest physical backup; differential: since the newest full one */
  type?: 'incremental' | 'differential';
  /** How long to wait for the backup's last WAL segment to reach the repository (default 5 min). */
  archiveTimeoutMs?: number;
  /** Warnings, e.g. "no earlier backup: taking a full one". */
  log?: (msg: string) => void;
}

interface LayerStats {
  scannedBytes: number;
  changedBlocks: number;
  wholeFiles: number;
  /** path -> size of every file in the layer (stored as files.json, the next layer's reference) */
  files: Record<string, number>;
}

const CHUNK_BLOCKS = 1024; // 8 MiB read at a time

/**
 * An incremental physical backup: only the pages that changed since the newest physical backup of the
 * same server (its "reference"), found by reading each relation file's page LSNs (see pages.ts), plus
 * the small non-relation files whole. Unlike pgBackRest 2.45, which copies any changed file whole
 * (a busy 640 MiB table costs 640 MiB each time), a few changed rows cost a few pages.
 *
 * It reads the data folder directly, between pg_backup_start and pg_backup_stop on one session (so it
 * runs on the database host, as root or the postgres user), and needs WAL archiving into the same
 * repository: the layer holds no WAL, and the backup only completes once the WAL up to its end is
 * archived. With nothing to build on, or after a timeline switch, it takes a full backup instead and
 * says so (as pgBackRest does).
 */
export async function incrementalBackup(o: IncrementalBackupOptions): Promise<BackupManifest> {
  const started = new Date();
  const info = await withClient(o.pg, async (c) => {
    const r = await c.query(
      `select current_setting('server_version') as v,
              (select system_identifier::text from pg_control_system()) as sysid,
              current_setting('data_directory') as dir,
              current_setting('archive_mode') as archive_mode,
              (select timeline_id from pg_control_checkpoint()) as tli,
              pg_is_in_recovery() as standby`,
    );
    return r.rows[0] as { v: string; sysid: string; dir: string; archive_mode: string; tli: number; standby: boolean };
  });
  const backups = await o.repo.listBackups();
  const type = o.type ?? 'incremental';
  const choice = pickReference(backups, info.sysid, Number(info.tli), type);
  if ('fallback' in choice) {
    o.log?.(`${type} backup: ${choice.fallback}; taking a full backup instead`);
    return physicalBackup(o);
  }
  const ref = choice.backup;
  if (info.standby)
    throw new BackupError('BULWARK_E_BACKUP', 'incremental backups are taken from the primary, not a standby');
  if (info.archive_mode === 'off')
    throw new BackupError(
      'BULWARK_E_BACKUP',
      'incremental backups need WAL archiving into the repository: set archive_mode = on and archive_command to `bulwark wal push %p ...`',
    );
  await checkLocalDataDir(info.dir, info.sysid);
  const refFiles = await referenceFiles(o.repo, ref);

  const id = newBackupId('physical', started);
  const client = await connect(o.pg);
  try {
    // fast checkpoint; the session must stay open until pg_backup_stop (closing it aborts the backup)
    const startRow = (await client.query('select pg_backup_start($1, true)::text as lsn', [`bulwark ${id}`]))
      .rows[0] as { lsn: string };
    const entries = planDataFiles(await walkDataDir(info.dir));
    const total = entries.reduce((n, f) => n + f.size, 0);
    const meter = new ProgressMeter('backup (incremental)', total, o.onProgress);
    const stats: LayerStats = { scannedBytes: 0, changedBlocks: 0, wholeFiles: 0, files: {} };
    const records = layerRecords(info.dir, entries, refFiles, lsnToNumber(ref.pg.startLsn!), stats, meter.add);
    const layer = await o.repo.writeObject(id, 'layer', Readable.from(records), o.encoding, {
      threads: o.threads ?? 0,
    });
    const stop = (await client.query('select lsn::text as lsn, labelfile, spcmapfile from pg_backup_stop(false)'))
      .rows[0] as { lsn: string; labelfile: string; spcmapfile: string };
    meter.finish();
    const label = parseBackupLabel(stop.labelfile);
    const startLsn = label.startLsn ?? startRow.lsn;
    const timeline = label.timeline ?? Number(info.tli);
    // the segment holding the last byte of the backup (the end LSN may sit at a segment boundary)
    const startWal = walFileName(timeline, startLsn);
    const stopWal = walFileName(timeline, formatLsn(parseLsn(stop.lsn) - 1n));
    await waitArchived(o.repo, startWal, stopWal, o.archiveTimeoutMs ?? 5 * 60_000);
    const list = Buffer.from(JSON.stringify(stats.files));
    const filesEntry = await o.repo.writeObject(id, 'files.json', Readable.from([list]), o.encoding);
    const nextXid = (
      (await client.query('select pg_snapshot_xmax(pg_current_snapshot())::text as x')).rows[0] as { x: string }
    ).x;
    const stopped = new Date();
    const objects: ObjectEntry[] = [layer, filesEntry];
    const manifest: BackupManifest = {
      ...manifestHead({ id, kind: 'physical', label: o.label, started, stopped, encoding: o.encoding }),
      type,
      objects,
      sizes: { raw: layer.rawBytes, stored: layer.storedBytes + filesEntry.storedBytes },
      pg: {
        serverVersion: info.v,
        systemIdentifier: info.sysid,
        timeline,
        startLsn,
        stopLsn: stop.lsn,
        startWal,
        stopWal,
        nextXid,
      },
      incremental: {
        reference: ref.id,
        sinceLsn: ref.pg.startLsn!,
        backupLabel: stop.labelfile,
        scannedBytes: stats.scannedBytes,
        changedBlocks: stats.changedBlocks,
        wholeFiles: stats.wholeFiles,
      },
    };
    await o.repo.writeManifest(manifest);
    return manifest;
  } finally {
    await client.end().catch(() => {});
  }
}

/** The incremental backup reads the files itself: the folder must be this server's, on this host. */
async function checkLocalDataDir(dir: string, sysid: string): Promise<void> {
  if (!existsSync(join(dir, 'PG_VERSION')))
    throw new BackupError(
      'BULWARK_E_BACKUP',
      `incremental backups read the data folder directly, and ${dir} is not readable here: run bulwark on the database host (as root or postgres)`,
    );
  const r = await run(pgBin('pg_controldata'), [dir], { check: false });
  const here = /Database system identifier:\s+(\d+)/.exec(r.stdout)?.[1];
  if (here !== sysid)
    throw new BackupError(
      'BULWARK_E_BACKUP',
      `${dir} belongs to system ${here ?? '?'}, but the server answering the connection is system ${sysid}`,
    );
}

/** path -> size of every file in the reference backup's restored folder. */
async function referenceFiles(repo: Repository, ref: BackupManifest): Promise<Map<string, number>> {
  if (isIncremental(ref)) {
    const entry = ref.objects.find((e) => e.name === 'files.json');
    if (!entry) throw new BackupError('BULWARK_E_BACKUP', `backup ${ref.id} has no files.json object`);
    const chunks: Buffer[] = [];
    for await (const c of await repo.readObject(ref, entry)) chunks.push(c as Buffer);
    return new Map(Object.entries(JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, number>));
  }
  // a full backup is pg_basebackup's tar: list it (read back and verified, so this also proves it readable)
  const entry = ref.objects.find((e) => e.name === 'base.tar');
  if (!entry) throw new BackupError('BULWARK_E_BACKUP', `backup ${ref.id} has no base.tar object`);
  return listTar((await repo.readObject(ref, entry)) as AsyncIterable<Buffer>);
}

async function* layerRecords(
  root: string,
  entries: DataFile[],
  reference: Map<string, number>,
  sinceLsn: number,
  stats: LayerStats,
  onScanned: (n: number) => void,
): AsyncGenerator<Buffer> {
  yield encodeRecord({ t: 'layer', v: 1 });
  let files = 0;
  // one scan buffer for every relation file: a fresh 8 MiB buffer per chunk cost more in page faults
  // than reading the chunk
  const scan = [Buffer.allocUnsafe(CHUNK_BLOCKS * BLOCK_SIZE), Buffer.allocUnsafe(CHUNK_BLOCKS * BLOCK_SIZE)];
  for (const f of entries) {
    if (f.kind === 'dir') {
      yield encodeRecord({ t: 'dir', p: f.path, mode: f.mode });
      continue;
    }
    // a file dropped since the walk is simply not in this layer: replay of the drop follows anyway
    const fh = await open(join(root, f.path), 'r').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined;
      throw err;
    });
    if (!fh) continue;
    try {
      const size = (await fh.stat()).size;
      const refSize = reference.get(f.path);
      files++;
      if (f.kind === 'whole' || refSize === undefined || size % BLOCK_SIZE !== 0) {
        // whole: small files, and relation files the reference does not have (copied with old page
        // LSNs by CREATE DATABASE ... FILE_COPY, say)
        stats.files[f.path] = size;
        stats.wholeFiles++;
        yield encodeRecord({ t: 'file', p: f.path, size, mode: f.mode });
        for (let pos = 0; pos < size; ) {
          const want = Math.min(1024 * 1024, size - pos);
          const buf = await readAt(fh, want, pos); // yielded as is: a buffer of its own
          pos += want;
          stats.scannedBytes += want;
          onScanned(want);
          yield buf;
        }
        continue;
      }
      stats.files[f.path] = size;
      yield encodeRecord({ t: 'blocks', p: f.path, size, mode: f.mode, blocks: [] });
      const refBlocks = refSize / BLOCK_SIZE;
      // two scan buffers: the next chunk is read (in libuv's thread pool) while this one is checked
      const chunkAt = (pos: number, k: number) =>
        readAt(fh, Math.min(CHUNK_BLOCKS * BLOCK_SIZE, size - pos), pos, scan[k % 2]);
      let pending: Promise<Buffer> | undefined = size > 0 ? chunkAt(0, 0) : undefined;
      try {
        for (let pos = 0, k = 0; pending; k++) {
          const buf: Buffer = await pending;
          const want = buf.length;
          pending = pos + want < size ? chunkAt(pos + want, k + 1) : undefined;
          const first = pos / BLOCK_SIZE;
          const blocks = changedBlocks(buf, first, sinceLsn, refBlocks);
          pos += want;
          stats.scannedBytes += want;
          onScanned(want);
          if (!blocks.length) continue;
          stats.changedBlocks += blocks.length;
          yield encodeRecord({ t: 'blocks', p: f.path, size, mode: f.mode, blocks });
          // a copy: this scan buffer is read into again while the chunk is on its way to storage
          if (blocks.length * BLOCK_SIZE === want) yield Buffer.from(buf);
          else
            yield Buffer.concat(
              blocks.map((b) => buf.subarray((b - first) * BLOCK_SIZE, (b - first + 1) * BLOCK_SIZE)),
            );
        }
      } finally {
        await pending?.catch(() => undefined); // never close the file under a read in flight
      }
    } finally {
      await fh.close();
    }
  }
  yield encodeRecord({ t: 'end', files });
}

/** `length` bytes at `position`; zeros past the end if the file shrank meanwhile (replay truncates it again). */
async function readAt(fh: FileHandle, length: number, position: number, into?: Buffer): Promise<Buffer> {
  const buf = into ? into.subarray(0, length) : Buffer.allocUnsafe(length);
  let got = 0;
  while (got < length) {
    const { bytesRead } = await fh.read(buf, got, length - got, position + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  if (got < length) buf.fill(0, got);
  return buf;
}

/** Resolve once every segment from `first` to `last` is in the repository (archive_command keeps up). */
async function waitArchived(repo: Repository, first: string, last: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const timeline = segmentTimeline(first);
  for (let seg = segmentNumber(first); seg <= segmentNumber(last); seg++) {
    const name = walFileName(timeline, seg * BigInt(WAL_SEGMENT_SIZE));
    while (!(await repo.findWal(name))) {
      if (Date.now() > deadline)
        throw new BackupError(
          'BULWARK_E_BACKUP',
          `WAL segment ${name} did not reach ${repo.description} within ${Math.round(timeoutMs / 1000)} s: is archive_command pushing into this repository?`,
        );
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
