import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { applyLayer } from '../../src/backup/incremental/apply.js';
import { chainAncestors, pickReference, resolveChain } from '../../src/backup/incremental/chain.js';
import { planDataFiles, type RawEntry } from '../../src/backup/incremental/data-files.js';
import { encodeRecord, LayerReader, type LayerRecord } from '../../src/backup/incremental/layer-format.js';
import { BLOCK_SIZE, changedBlocks, lsnToNumber } from '../../src/backup/incremental/pages.js';
import { listTar } from '../../src/backup/incremental/tar-list.js';
import type { BackupManifest } from '../../src/backup/manifest.js';
import { planExpire } from '../../src/backup/retention.js';

function page(lsnHi: number, lsnLo: number, fill = 1): Buffer {
  const b = Buffer.alloc(BLOCK_SIZE, fill);
  b.writeUInt32LE(lsnHi, 0);
  b.writeUInt32LE(lsnLo, 4);
  return b;
}

describe('changed pages (page LSN against the reference start LSN)', () => {
  const since = lsnToNumber('1/2000000');
  it('copies pages stamped at or after the reference start, new (zero) pages and pages past the old end', () => {
    const buf = Buffer.concat([
      page(1, 0x1ffffff), // before: unchanged
      page(1, 0x2000000), // exactly at the start: changed
      page(2, 0), // later: changed
      Buffer.alloc(BLOCK_SIZE), // all zero: new page, copied
      page(0, 5), // old, but beyond the reference's 4 blocks: copied
    ]);
    expect(changedBlocks(buf, 10, since, 14)).toEqual([11, 12, 13, 14]);
    expect(changedBlocks(buf, 0, since, 0)).toEqual([0, 1, 2, 3, 4]);
  });
  it('reads LSNs above 4 GiB of WAL exactly', () => {
    expect(lsnToNumber('AB/CDEF0123')).toBe(0xab * 2 ** 32 + 0xcdef0123);
  });
});

describe('files of a data folder a backup copies', () => {
  const e = (path: string, size = 8192, isDir = false): RawEntry => ({ path, isDir, size, mode: 0o600 });
  it("follows PostgreSQL's base backup exclusions and copies pg_control last", () => {
    const plan = planDataFiles([
      e('PG_VERSION', 3),
      e('base', 0, true),
      e('base/5', 0, true),
      e('base/5/1259', 8192 * 3),
      e('base/5/1259_fsm', 8192 * 3),
      e('base/5/1259_vm', 8192),
      e('base/5/1259.1', 8192),
      e('base/5/16400', 8192), // unlogged: only its init fork
      e('base/5/16400_init', 8192),
      e('base/5/t3_16500', 8192), // temporary relation
      e('base/5/pg_internal.init', 100),
      e('base/5/PG_VERSION', 3),
      e('base/pgsql_tmp', 0, true),
      e('global', 0, true),
      e('global/pg_control', 8192),
      e('global/1262', 8192),
      e('pg_wal', 0, true),
      e('pg_wal/000000010000000000000001', 16 << 20),
      e('pg_wal/archive_status', 0, true),
      e('pg_stat_tmp', 0, true),
      e('pg_stat_tmp/global.stat', 10),
      e('postmaster.pid', 50),
      e('postgresql.auto.conf', 88),
      e('base/5/16401', 100), // not a whole number of pages: copied whole
    ]);
    expect(plan.map((f) => `${f.path}:${f.kind}`)).toEqual([
      'PG_VERSION:whole',
      'base:dir',
      'base/5:dir',
      'base/5/1259:blocks',
      'base/5/1259_fsm:whole',
      'base/5/1259_vm:blocks',
      'base/5/1259.1:blocks',
      'base/5/16400_init:whole',
      'base/5/PG_VERSION:whole',
      'global:dir',
      'global/1262:blocks',
      'pg_wal:dir',
      'pg_wal/archive_status:dir',
      'pg_stat_tmp:dir',
      'postgresql.auto.conf:whole',
      'base/5/16401:whole',
      'global/pg_control:whole',
    ]);
  });
  it('refuses tablespaces with a sentence naming the path', () => {
    expect(() => planDataFiles([e('pg_tblspc', 0, true), { ...e('pg_tblspc/16390'), isSymlink: true }])).toThrow(
      /tablespace \(pg_tblspc\/16390\)/,
    );
  });
});

describe('layer stream format and applying a layer', () => {
  it('round-trips records and payloads split at any chunk boundary', async () => {
    const recs: (LayerRecord | Buffer)[] = [
      { t: 'layer', v: 1 },
      { t: 'file', p: 'a', size: 5, mode: 0o600 },
      Buffer.from('hello'),
      { t: 'end', files: 1 },
    ];
    const bytes = Buffer.concat(recs.map((r) => (Buffer.isBuffer(r) ? r : encodeRecord(r))));
    const oneByteChunks = Readable.from([...bytes].map((b) => Buffer.from([b])));
    const r = new LayerReader(oneByteChunks as AsyncIterable<Buffer>);
    expect(await r.next()).toEqual({ t: 'layer', v: 1 });
    expect(await r.next()).toMatchObject({ t: 'file', size: 5 });
    const parts: Buffer[] = [];
    for await (const p of r.payload(5)) parts.push(p);
    expect(Buffer.concat(parts).toString()).toBe('hello');
    expect(await r.next()).toEqual({ t: 'end', files: 1 });
    expect(await r.next()).toBeUndefined();
    const cut = new LayerReader(Readable.from([bytes.subarray(0, bytes.length - 3)]) as AsyncIterable<Buffer>);
    await cut.next();
    await cut.next();
    for await (const _ of cut.payload(5));
    await expect(cut.next()).rejects.toThrow(/cut/);
  });

  it('writes changed blocks, resizes files, writes whole files and removes what the layer does not list', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'bulwark-apply-'));
    try {
      mkdirSync(join(dir, 'base/5'), { recursive: true });
      writeFileSync(join(dir, 'base/5/100'), Buffer.concat([page(0, 1, 1), page(0, 1, 2), page(0, 1, 3)]));
      writeFileSync(join(dir, 'base/5/dropped'), 'x');
      mkdirSync(join(dir, 'base/6'));
      writeFileSync(join(dir, 'base/6/1'), 'x');
      const newBlock = page(9, 9, 7);
      const layer = Buffer.concat([
        encodeRecord({ t: 'layer', v: 1 }),
        encodeRecord({ t: 'dir', p: 'base', mode: 0o700 }),
        encodeRecord({ t: 'dir', p: 'base/5', mode: 0o700 }),
        // shrinks from 3 to 2 pages and page 1 changes
        encodeRecord({ t: 'blocks', p: 'base/5/100', size: 2 * BLOCK_SIZE, mode: 0o600, blocks: [] }),
        encodeRecord({ t: 'blocks', p: 'base/5/100', size: 2 * BLOCK_SIZE, mode: 0o600, blocks: [1] }),
        newBlock,
        encodeRecord({ t: 'file', p: 'base/5/PG_VERSION', size: 3, mode: 0o600 }),
        Buffer.from('15\n'),
        encodeRecord({ t: 'end', files: 2 }),
      ]);
      const r = await applyLayer(dir, Readable.from([layer]) as AsyncIterable<Buffer>);
      const f = readFileSync(join(dir, 'base/5/100'));
      expect(f.length).toBe(2 * BLOCK_SIZE);
      expect(f.subarray(0, BLOCK_SIZE).equals(page(0, 1, 1))).toBe(true);
      expect(f.subarray(BLOCK_SIZE).equals(newBlock)).toBe(true);
      expect(readFileSync(join(dir, 'base/5/PG_VERSION'), 'utf8')).toBe('15\n');
      expect(() => readFileSync(join(dir, 'base/5/dropped'))).toThrow();
      expect(() => readFileSync(join(dir, 'base/6/1'))).toThrow();
      expect(r).toMatchObject({ blocks: 1, wholeFiles: 1 });
      const evil = Buffer.concat([
        encodeRecord({ t: 'layer', v: 1 }),
        encodeRecord({ t: 'dir', p: '../outside', mode: 0o700 }),
      ]);
      await expect(applyLayer(dir, Readable.from([evil]) as AsyncIterable<Buffer>)).rejects.toThrow(/unsafe path/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('tar listing (the file list of a full backup)', () => {
  it('lists regular files with their sizes, long names included', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'bulwark-tar-'));
    try {
      const long = `${'d'.repeat(60)}/${'f'.repeat(80)}`;
      mkdirSync(join(dir, 'src', 'base', '5'), { recursive: true });
      mkdirSync(join(dir, 'src', 'd'.repeat(60)));
      writeFileSync(join(dir, 'src', 'base', '5', '1259'), Buffer.alloc(3 * BLOCK_SIZE));
      writeFileSync(join(dir, 'src', 'PG_VERSION'), '15\n');
      writeFileSync(join(dir, 'src', long), 'x'.repeat(700));
      for (const format of ['ustar', 'gnu', 'pax']) {
        const tar = execFileSync('tar', ['-c', `--format=${format}`, '-C', join(dir, 'src'), '.']);
        // fed in odd-sized pieces, as a decompressor delivers it
        const pieces: Buffer[] = [];
        for (let i = 0; i < tar.length; i += 777) pieces.push(tar.subarray(i, i + 777));
        const files = await listTar(Readable.from(pieces) as AsyncIterable<Buffer>);
        expect(Object.fromEntries(files)).toEqual({
          'base/5/1259': 3 * BLOCK_SIZE,
          PG_VERSION: 3,
          [long]: 700,
        });
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('chains of incremental backups', () => {
  const m = (id: string, over: Partial<BackupManifest> = {}, reference?: string): BackupManifest => ({
    format: 1,
    id,
    kind: 'physical',
    startedAt: '2026-11-01T00:00:00Z',
    stoppedAt: `2026-11-${id.slice(6, 8)}T01:00:00Z`,
    durationMs: 1,
    encoding: { compression: 'zstd', encryption: 'none' },
    objects: [],
    sizes: { raw: 1, stored: 1 },
    pg: {
      systemIdentifier: '42',
      timeline: 1,
      startLsn: '0/2000028',
      startWal: `0000000100000000000000${id.slice(6, 8)}`,
    },
    ...(reference
      ? {
          incremental: {
            reference,
            sinceLsn: '0/1',
            backupLabel: '',
            scannedBytes: 0,
            changedBlocks: 0,
            wholeFiles: 0,
          },
        }
      : {}),
    ...over,
  });
  const full = m('20261101T000000000Z-P');
  const inc1 = m('20261102T000000000Z-P', {}, full.id);
  const inc2 = m('20261103T000000000Z-P', {}, inc1.id);
  it('resolves full + layers oldest first, and reports a broken chain', () => {
    expect(resolveChain([full, inc1, inc2], inc2)).toEqual({ chain: [full, inc1, inc2] });
    expect(resolveChain([full, inc2], inc2)).toEqual({ error: expect.stringMatching(/chain is broken/) });
  });
  it('builds on the newest backup of the same server and timeline, else falls back to a full backup', () => {
    expect(pickReference([full, inc1], '42', 1)).toEqual({ backup: inc1 });
    expect(pickReference([], '42', 1)).toEqual({ fallback: expect.stringMatching(/no earlier physical backup/) });
    expect(pickReference([full], '43', 1)).toHaveProperty('fallback');
    expect(pickReference([full, inc1], '42', 2)).toEqual({ fallback: expect.stringMatching(/timeline 2/) });
    expect(pickReference([full, inc2], '42', 1)).toEqual({ fallback: expect.stringMatching(/chain is broken/) });
    // differential: always the newest full backup
    expect(pickReference([full, inc1, inc2], '42', 1, 'differential')).toEqual({ backup: full });
    expect(pickReference([inc1], '42', 1, 'differential')).toEqual({
      fallback: expect.stringMatching(/no earlier full backup/),
    });
  });
  it('retention keeps every backup a kept incremental builds on', () => {
    expect(chainAncestors([full, inc1, inc2], [inc2])).toEqual(
      new Map([
        [full.id, inc2.id],
        [inc1.id, inc2.id],
      ]),
    );
    const plan = planExpire([full, inc1, inc2], [], { keepLast: 1 }, new Date('2026-12-01T00:00:00Z'));
    expect(plan.expire).toEqual([]);
    expect(plan.keep.find((k) => k.id === full.id)?.reasons).toEqual([`base of kept incremental backup ${inc2.id}`]);
    const newFull = m('20261104T000000000Z-P');
    const later = planExpire([full, inc1, inc2, newFull], [], { keepLast: 1 }, new Date('2026-12-01T00:00:00Z'));
    expect(later.expire.map((e) => e.id)).toEqual([full.id, inc1.id, inc2.id]);
  });
});
