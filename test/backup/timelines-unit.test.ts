import { hostname } from 'node:os';
import { describe, expect, it } from 'vitest';
import { lockIsStale } from '../../src/backup/lock.js';
import { lastLine } from '../../src/backup/physical.js';
import { findLeftovers } from '../../src/backup/retention.js';
import {
  continuedTimeline,
  describeTimelines,
  parseHistory,
  resolveTargetTimeline,
  walPlan,
} from '../../src/backup/timelines.js';

// Pure decisions behind issue 9 (the end-to-end proofs are in no-silent-loss.test.ts).
describe('timelines and the WAL a recovery reads', () => {
  const tl2 = parseHistory(2, '1\t0/5000060\tno recovery target specified\n');
  const tl3 = parseHistory(3, '1\t0/5000060\tno recovery target specified\n\n2\t0/7000000\tat restore point "x"\n');

  it('parses history files and describes the branch points', () => {
    expect(tl3.parents).toEqual([
      { tli: 1, switchLsn: '0/5000060' },
      { tli: 2, switchLsn: '0/7000000' },
    ]);
    expect(describeTimelines([tl3, tl2])).toEqual(['2 (from 1 at 0/5000060)', '3 (from 2 at 0/7000000)']);
  });

  it('current is the backup timeline; latest follows consecutive history files as PostgreSQL does', () => {
    expect(resolveTargetTimeline('current', 1, [2, 3])).toBe(1);
    expect(resolveTargetTimeline('latest', 1, [2, 3])).toBe(3);
    expect(resolveTargetTimeline('latest', 1, [3])).toBe(1);
    expect(resolveTargetTimeline(2, 1, [2, 3])).toBe(2);
  });

  it('on its own timeline, the primary segments after a branch count, the copy ones do not', () => {
    const archived = [
      '000000010000000000000003',
      '000000010000000000000004',
      '000000010000000000000005',
      '000000010000000000000006',
      '000000020000000000000005',
      '000000020000000000000007',
    ];
    const own = walPlan({ startWal: '000000010000000000000003', timeline: 1, archived });
    expect(own.missing).toEqual([]);
    expect(own.to).toBe('000000010000000000000006');
    // timeline 2: segment 5 (the switch point's) and later come from timeline 2; 6 is missing there
    const two = walPlan({ startWal: '000000010000000000000003', timeline: 2, history: tl2, archived });
    expect(two.segments).toEqual([
      '000000010000000000000003',
      '000000010000000000000004',
      '000000020000000000000005',
      '000000020000000000000007',
    ]);
    expect(two.missing).toEqual(['000000020000000000000006']);
  });

  it('names a gap in the middle, and a timeline the backup is not on', () => {
    const p = walPlan({
      startWal: '000000010000000000000002',
      timeline: 1,
      archived: ['000000010000000000000002', '000000010000000000000004'],
    });
    expect(p.missing).toEqual(['000000010000000000000003']);
    // a backup taken on timeline 1 after timeline 2 branched off at segment 5
    const late = walPlan({ startWal: '000000010000000000000006', timeline: 2, history: tl2, archived: [] });
    expect(late.error).toMatch(/timeline 2 is not a child of the backup's timeline 1/);
  });
});

describe('repository lock, leftovers, error lines', () => {
  const holder = { command: 'backup create', pid: 12345, host: hostname(), startedAt: '', held: true };
  it('a lock is stale when its holder on this host is gone or it was not refreshed', () => {
    const now = Date.now();
    expect(lockIsStale(holder, new Date(now), 60_000, now, () => true)).toBeUndefined();
    expect(lockIsStale(holder, new Date(now), 60_000, now, () => false)).toMatch(/process 12345 is gone/);
    const remote = { ...holder, host: 'elsewhere' };
    expect(lockIsStale(remote, new Date(now - 1000), 60_000, now, () => false)).toBeUndefined();
    expect(lockIsStale(remote, new Date(now - 120_000), 60_000, now, () => true)).toMatch(/not refreshed for 120s/);
  });
  it('unfinished writes are removed only once older than the orphan age', () => {
    const now = new Date('2026-01-01T12:00:00Z');
    const objs = [
      { key: 'backups/a/base.tar.zst.bulwark-tmp-1', size: 5, modified: new Date('2026-01-01T11:00:00Z') },
      { key: 'wal/x/y.bulwark-tmp-2', size: 6, modified: new Date('2026-01-01T11:59:30Z') },
    ];
    expect(findLeftovers(objs, 60_000, now).map((o) => o.key)).toEqual(['backups/a/base.tar.zst.bulwark-tmp-1']);
  });
  it("pg_basebackup's last line skips progress lines", () => {
    expect(lastLine('pg_basebackup: error: could not connect\r12/900 kB (1%), 0/1 tablespace\r')).toBe(
      'pg_basebackup: error: could not connect',
    );
  });
});

describe('the default timeline of a restore', () => {
  const tl2 = parseHistory(2, '1\t0/6000000\tno recovery target specified\n');
  const tl3 = parseHistory(3, '1\t0/6000000\t\n2\t0/9000000\t\n');
  it("stays on the backup's timeline when that timeline went on past the branch (a copy archived)", () => {
    const archived = ['000000010000000000000005', '000000010000000000000006', '000000020000000000000006'];
    expect(continuedTimeline(1, '000000010000000000000004', [tl2], archived)).toEqual({ timeline: 1, followed: [] });
  });
  it('follows timelines that replaced it (failover: the old one ends at the branch), hop by hop', () => {
    const archived = [
      '000000010000000000000005',
      '000000010000000000000006.partial',
      '000000020000000000000006',
      '000000020000000000000008',
      '000000030000000000000009',
    ];
    const c = continuedTimeline(1, '000000010000000000000004', [tl2, tl3], archived);
    expect(c.timeline).toBe(3);
    expect(c.followed).toHaveLength(2);
  });
  it('never follows a branch from before the backup started', () => {
    expect(continuedTimeline(1, '000000010000000000000008', [tl2], ['000000010000000000000008']).timeline).toBe(1);
  });
});
