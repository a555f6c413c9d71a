import { describe, expect, it } from 'vitest';
import {
  type BackupManifest,
  chooseBackup,
  findOrphans,
  formatLsn,
  nextSegments,
  parseBasebackupLog,
  parseLsn,
  planExpire,
  recoverySettings,
  type WalObject,
  walFileName,
  walGaps,
} from '../../src/backup/index.js';
import { labelStartSegment, parseBackupLabel } from '../../src/backup/wal-names.js';

function backup(
  id: string,
  kind: 'physical' | 'logical',
  stoppedAt: string,
  extra: Partial<BackupManifest['pg']> = {},
): BackupManifest {
  return {
    format: 1,
    id,
    kind,
    startedAt: stoppedAt,
    stoppedAt,
    durationMs: 1000,
    encoding: { compression: 'zstd', encryption: 'none' },
    objects: [],
    sizes: { raw: 1, stored: 1 },
    pg: extra,
  };
}

describe('WAL names and LSNs', () => {
  it('maps an LSN to its segment the way PostgreSQL does', () => {
    expect(walFileName(1, '0/2000028')).toBe('000000010000000000000002');
    expect(walFileName(3, '1/FF000000')).toBe('0000000300000001000000FF');
    expect(formatLsn(parseLsn('16/B374D848'))).toBe('16/B374D848');
    expect(() => parseLsn('nope')).toThrow(RangeError);
  });
  it('lists the next segments for the prefetcher, across a log boundary', () => {
    expect(nextSegments('0000000200000003000000FE', 3)).toEqual([
      '0000000200000003000000FF',
      '000000020000000400000000',
      '000000020000000400000001',
    ]);
    expect(nextSegments('00000002.history', 3)).toEqual([]);
  });
  it("finds the segment recovery starts in from a backup_label (the restore prefetcher's first segment)", () => {
    const label =
      'START WAL LOCATION: 0/2C000028 (file 00000001000000000000002C)\nCHECKPOINT LOCATION: 0/2C000060\nBACKUP METHOD: streamed\n';
    expect(labelStartSegment(label)).toBe('00000001000000000000002C');
    expect(labelStartSegment('START WAL LOCATION: 3/A1000028 (file 0000000200000003000000A1)\n')).toBe(
      '0000000200000003000000A1',
    );
    expect(labelStartSegment('')).toBeUndefined();
    expect(labelStartSegment('START WAL LOCATION: 0/2C000028\n')).toBeUndefined();
    // the incremental backup reads its start LSN and timeline from pg_backup_stop's label
    expect(parseBackupLabel(`${label}START TIMELINE: 3\n`)).toEqual({
      startLsn: '0/2C000028',
      startSegment: '00000001000000000000002C',
      timeline: 3,
    });
  });
  it('reads pg_basebackup -v positions', () => {
    const log =
      'pg_basebackup: write-ahead log start point: 0/2000028 on timeline 1\npg_basebackup: write-ahead log end point: 0/2000100\n';
    expect(parseBasebackupLog(log)).toEqual({ startLsn: '0/2000028', stopLsn: '0/2000100', timeline: 1 });
  });
  it('finds gaps in the archive after a backup, on its timeline only', () => {
    const names = [
      '000000010000000000000002',
      '000000010000000000000003',
      '000000010000000000000005',
      '000000020000000000000004',
    ];
    expect(walGaps('000000010000000000000002', names)).toEqual({
      to: '000000010000000000000005',
      segments: 3,
      missing: ['000000010000000000000004'],
    });
    expect(
      walGaps('0000000100000000000000FF', ['0000000100000000000000FF', '000000010000000100000000']).missing,
    ).toEqual([]);
  });
});

describe('chooseBackup (PITR base selection)', () => {
  const list = [
    backup('20260101T000000000Z-P', 'physical', '2026-01-01T00:05:00Z', { stopLsn: '0/5000000', nextXid: '700' }),
    backup('20260102T000000000Z-L', 'logical', '2026-01-02T00:05:00Z'),
    backup('20260103T000000000Z-P', 'physical', '2026-01-03T00:05:00Z', { stopLsn: '0/9000000', nextXid: '900' }),
  ];
  it('picks the newest physical backup that ended before the target', () => {
    const r = chooseBackup(list, { kind: 'time', time: '2026-01-02T12:00:00Z' });
    expect('backup' in r && r.backup.id).toBe('20260101T000000000Z-P');
    const l = chooseBackup(list, { kind: 'lsn', lsn: '0/A000000' });
    expect('backup' in l && l.backup.id).toBe('20260103T000000000Z-P');
    const x = chooseBackup(list, { kind: 'xid', xid: '800' });
    expect('backup' in x && x.backup.id).toBe('20260101T000000000Z-P');
    const latest = chooseBackup(list, { kind: 'latest' });
    expect('backup' in latest && latest.backup.id).toBe('20260103T000000000Z-P');
  });
  it('explains when no backup fits, or a requested one ended after the target', () => {
    expect(chooseBackup(list, { kind: 'time', time: '2025-12-31T00:00:00Z' })).toMatchObject({
      error: expect.stringMatching(/no physical backup ended before/),
    });
    expect(chooseBackup(list, { kind: 'time', time: '2026-01-02T00:00:00Z' }, '20260103T000000000Z-P')).toMatchObject({
      error: expect.stringMatching(/ended after the target/),
    });
    expect(chooseBackup([], { kind: 'latest' })).toEqual({ error: 'the repository holds no physical backup' });
  });
  it('writes recovery settings with quoting and the target', () => {
    const s = recoverySettings({
      restoreCommand: `"/usr/bin/node" "/x/main.js" wal fetch "%f" "%p" --repo 'file:///r'`,
      target: { kind: 'time', time: '2026-01-02 03:04:05.123456+00' },
      action: 'promote',
      archiveMode: 'off',
      port: 5433,
    });
    expect(s).toContain(`restore_command = '"/usr/bin/node" "/x/main.js" wal fetch "%f" "%p" --repo ''file:///r'''`);
    expect(s).toContain("recovery_target_time = '2026-01-02 03:04:05.123456+00'");
    expect(s).toContain("recovery_target_action = 'promote'");
    expect(s).toContain('archive_mode = off');
    expect(s).toContain('port = 5433');
  });
});

describe('planExpire (retention)', () => {
  const now = new Date('2026-03-01T12:00:00Z');
  const days = ['2026-02-27', '2026-02-28', '2026-02-28', '2026-03-01'];
  const list = days.map((d, i) =>
    backup(`${d.replace(/-/g, '')}T0${i}0000000Z-P`, 'physical', `${d}T0${i}:00:00Z`, {
      startWal: `0000000100000000000000${(16 + i * 16).toString(16).toUpperCase().padStart(2, '0')}`,
    }),
  );
  const wal: WalObject[] = [
    '000000010000000000000011',
    '000000010000000000000021',
    '000000010000000000000031',
    '00000002.history',
  ].map((name) => ({ key: `wal/x/${name}`, name, sha256: '0'.repeat(64), size: 1 }));
  it('keepLast keeps the N newest and expires WAL older than the oldest kept backup', () => {
    const p = planExpire(list, wal, { keepLast: 2 }, now);
    expect(p.expire.map((e) => e.id)).toEqual([list[0]!.id, list[1]!.id]);
    expect(p.walExpire.map((w) => w.name)).toEqual(['000000010000000000000011', '000000010000000000000021']);
  });
  it('GFS daily keeps the newest backup of each recent day', () => {
    const p = planExpire(list, wal, { daily: 2 }, now);
    expect(p.keep.map((k) => k.id).sort()).toEqual([list[2]!.id, list[3]!.id]);
  });
  it('maxAge keeps everything younger; the newest backup is always kept; history files are never expired', () => {
    const p = planExpire(list, wal, { maxAgeMs: 36 * 3600_000 }, now);
    expect(p.keep.map((k) => k.id).sort()).toEqual([list[1]!.id, list[2]!.id, list[3]!.id]);
    const none = planExpire(list, wal, { keepLast: 1 }, new Date('2030-01-01T00:00:00Z'));
    expect(none.keep.map((k) => k.id)).toEqual([list[3]!.id]);
    expect(none.walExpire.some((w) => w.name.endsWith('.history'))).toBe(false);
  });
  it('leaves WAL alone when no physical backup is kept', () => {
    const p = planExpire(
      [backup('20260101T000000000Z-L', 'logical', '2026-01-01T00:00:00Z')],
      wal,
      { keepLast: 1 },
      now,
    );
    expect(p.walExpire).toEqual([]);
  });
});

describe('ParallelGzip', () => {
  it('emits gzip members in order that gunzip reads back as the original bytes', async () => {
    const { ParallelGzip } = await import('../../src/backup/codec.js');
    const { gunzipSync } = await import('node:zlib');
    const { randomBytes, createHash } = await import('node:crypto');
    const { Readable } = await import('node:stream');
    // 10 pieces of 64 KiB (half random, half zeros) through 3 workers; order must survive
    const input = Buffer.concat(
      Array.from({ length: 10 }, (_, i) => (i % 2 ? Buffer.alloc(65536, i) : randomBytes(65536))),
    );
    const out: Buffer[] = [];
    for await (const c of Readable.from([input.subarray(0, 100000), input.subarray(100000)]).pipe(
      new ParallelGzip(6, 3, 65536),
    ))
      out.push(c as Buffer);
    const back = gunzipSync(Buffer.concat(out));
    expect(createHash('sha256').update(back).digest('hex')).toBe(createHash('sha256').update(input).digest('hex'));
    // one gzip member per piece (header 1f 8b 08 at the start of each)
    let members = 0;
    const all = Buffer.concat(out);
    for (
      let i = all.indexOf(Buffer.from([0x1f, 0x8b, 0x08]));
      i >= 0;
      i = all.indexOf(Buffer.from([0x1f, 0x8b, 0x08]), i + 1)
    )
      members++;
    expect(members).toBeGreaterThanOrEqual(10);
  });
});

describe('findOrphans (leftovers of interrupted backups)', () => {
  const now = new Date('2026-03-01T12:00:00Z');
  const at = (h: number) => new Date(now.getTime() - h * 3600_000);
  const objects = [
    { key: 'backups/A/base.tar.zst', size: 10, modified: at(30) },
    { key: 'backups/A/manifest.json', size: 1, modified: at(30) },
    { key: 'backups/B/base.tar.zst', size: 20, modified: at(30) },
    { key: 'backups/C/base.tar.zst', size: 30, modified: at(1) },
  ];
  it('only folders without a manifest, older than the age (a running backup is young)', () => {
    expect(findOrphans(objects, 24 * 3600_000, now)).toEqual([
      { id: 'B', keys: ['backups/B/base.tar.zst'], bytes: 20 },
    ]);
    expect(findOrphans(objects, 0, now).map((o) => o.id)).toEqual(['B', 'C']);
  });
});
