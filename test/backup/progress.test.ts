import { rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  formatBytes,
  formatProgress,
  type ProgressEvent,
  ProgressMeter,
  progressIntervalMs,
} from '../../src/backup/progress.js';
import { makePostgresOwnedTempDir, startTestPostgres, type TestPostgres } from '../harness/postgres.js';
import { bulwark } from './cli-helpers.js';

describe('ProgressMeter and formatProgress', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  /** A meter on a fake clock starting at t=0, and the events it emitted. */
  function meter(total: number | undefined, everyMs = 1000) {
    vi.useFakeTimers();
    vi.setSystemTime(0);
    const events: ProgressEvent[] = [];
    const m = new ProgressMeter('backup (logical)', total, (e) => events.push(e), everyMs);
    const at = (ms: number, bytes: number) => {
      vi.setSystemTime(ms);
      m.add(bytes);
    };
    return { m, events, at };
  }

  it('with a known total: bytes, rate and an ETA of (total - bytes) / rate', () => {
    const { events, at } = meter(4 * 1048576);
    at(2000, 1048576);
    expect(events).toHaveLength(1);
    expect(events[0]).toEqual({
      phase: 'backup (logical)',
      bytes: 1048576,
      total: 4 * 1048576,
      elapsedMs: 2000,
      bytesPerSecond: 524288,
      etaMs: 6000,
      done: false,
    });
    expect(formatProgress(events[0]!)).toBe('backup (logical): 1.0 MiB / ~4.0 MiB, 512.0 KiB/s, ETA 6s');
  });

  it('without a total: no ETA and no "of" part', () => {
    const { events, at } = meter(undefined);
    at(1000, 3000);
    expect(events[0]!.etaMs).toBeUndefined();
    expect(formatProgress(events[0]!)).toBe('backup (logical): 2.9 KiB, 2.9 KiB/s');
  });

  it('an estimate the bytes overshoot (pg_database_size vs dump size) gives ETA 0, never negative', () => {
    const { events, at } = meter(1000);
    at(1000, 5000);
    expect(events[0]!.etaMs).toBe(0);
    expect(formatProgress(events[0]!)).toMatch(/, ETA 0s$/);
  });

  it('throttles: nothing before the first interval, then at most one event per interval', () => {
    const { events, at } = meter(undefined, 1000);
    at(10, 1);
    at(999, 1);
    expect(events).toHaveLength(0);
    at(1000, 1);
    at(1500, 1);
    at(1999, 1);
    expect(events.map((e) => e.elapsedMs)).toEqual([1000]);
    at(2000, 1);
    at(5000, 1);
    expect(events.map((e) => [e.elapsedMs, e.bytes])).toEqual([
      [1000, 3],
      [2000, 6],
      [5000, 7],
    ]);
  });

  it('interval 0 reports every chunk', () => {
    const { events, at } = meter(undefined, 0);
    at(0, 1);
    at(0, 1);
    at(1, 1);
    expect(events.map((e) => e.bytes)).toEqual([1, 2, 3]);
  });

  it('finish() always emits a final done event (even inside the interval), without an ETA', () => {
    const { m, events, at } = meter(10_000, 1000);
    at(300, 4000);
    vi.setSystemTime(800);
    const last = m.finish();
    expect(events).toEqual([last]);
    expect(last).toMatchObject({ done: true, bytes: 4000, elapsedMs: 800, bytesPerSecond: 5000, etaMs: undefined });
    // without a listener it still returns the numbers
    expect(new ProgressMeter('x', undefined, undefined, 0).finish()).toMatchObject({ done: true, bytes: 0 });
  });

  it('formatBytes uses binary units with one decimal', () => {
    expect([0, 1023, 1024, 1536, 5 * 1048576 + 104858, 3 * 1024 ** 3, 2 * 1024 ** 5].map(formatBytes)).toEqual([
      '0 B',
      '1023 B',
      '1.0 KiB',
      '1.5 KiB',
      '5.1 MiB',
      '3.0 GiB',
      '2048.0 TiB',
    ]);
  });

  it('BULWARK_PROGRESS_INTERVAL_MS: default 2000 ms, 0 allowed, anything else is a usage error naming it', () => {
    expect(progressIntervalMs({})).toBe(2000);
    expect(progressIntervalMs({ BULWARK_PROGRESS_INTERVAL_MS: '' })).toBe(2000);
    expect(progressIntervalMs({ BULWARK_PROGRESS_INTERVAL_MS: '0' })).toBe(0);
    expect(progressIntervalMs({ BULWARK_PROGRESS_INTERVAL_MS: '250' })).toBe(250);
    for (const bad of ['-1', '1.5', 'soon'])
      expect(() => progressIntervalMs({ BULWARK_PROGRESS_INTERVAL_MS: bad })).toThrow(
        expect.objectContaining({ exitCode: 2, message: expect.stringContaining('BULWARK_PROGRESS_INTERVAL_MS') }),
      );
  });
});

describe('CLI progress output', () => {
  const MAIN = resolve(import.meta.dirname, '../../dist/cli/main.js');
  let pg: TestPostgres;
  let dir: string;
  beforeAll(async () => {
    pg = await startTestPostgres();
    dir = makePostgresOwnedTempDir('bulwark-progress-');
    await pg.query('create database app');
    await pg.query(
      `create table events(id serial primary key, body text);
       insert into events(body) select repeat(md5(g::text), 8) from generate_series(1, 20000) g;`,
      [],
      'app',
    );
  });
  afterAll(async () => {
    await pg?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const size = String.raw`\d+(\.\d)? (B|KiB|MiB|GiB)`;

  it('backup and restore print progress lines (bytes, rate, ETA) on stderr and a final line with size and duration', async () => {
    const repo = `file://${join(dir, 'repo')}`;
    const env = { BULWARK_PROGRESS_INTERVAL_MS: '0' };
    const b = await bulwark(
      process.execPath,
      [MAIN, 'backup', 'create', '--kind', 'logical', '--repo', repo, '--pg', pg.urlFor('app')],
      env,
    );
    expect(b.code).toBe(0);
    const lines = b.stderr.split('\n').filter((l) => l.startsWith('backup (logical): '));
    expect(lines.length).toBeGreaterThanOrEqual(1);
    for (const l of lines)
      expect(l).toMatch(new RegExp(`^backup \\(logical\\): ${size} / ~${size}, ${size}/s(, ETA \\d+s)?$`));
    expect(b.stdout.trim()).toMatch(
      new RegExp(`^backup \\S+-L complete: ${size} -> ${size} \\(zstd\\) in \\d+\\.\\ds \\(\\d+ MiB/s\\)$`),
    );

    const r = await bulwark(
      process.execPath,
      [MAIN, 'restore', '--database', 'app_copy', '--repo', repo, '--pg', pg.url],
      env,
    );
    expect(r.code).toBe(0);
    const dl = r.stderr.split('\n').filter((l) => l.startsWith('download: '));
    expect(dl.length).toBeGreaterThanOrEqual(1);
    for (const l of dl) expect(l).toMatch(new RegExp(`^download: ${size} / ~${size}, ${size}/s(, ETA \\d+s)?$`));
    expect(r.stdout.trim()).toMatch(
      new RegExp(`^restored \\S+ \\(custom format, ${size}\\) into database app_copy \\(created\\) in \\d+\\.\\ds$`),
    );
  });

  it('with --log-format json the progress events are JSON lines; a bad interval is a usage error', async () => {
    const repo = `file://${join(dir, 'repo-json')}`;
    const j = await bulwark(
      process.execPath,
      [MAIN, 'backup', 'create', '--kind', 'logical', '--log-format', 'json', '--repo', repo, '--pg', pg.urlFor('app')],
      { BULWARK_PROGRESS_INTERVAL_MS: '0' },
    );
    expect(j.code).toBe(0);
    const events = j.stderr
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l))
      .filter((e) => e.event === 'progress');
    expect(events.some((e) => e.done === false && e.bytes > 0 && e.bytesPerSecond > 0)).toBe(true);
    expect(events.at(-1)).toMatchObject({ done: true, phase: 'backup (logical)' });
    const bad = await bulwark(process.execPath, [MAIN, 'backup', 'list', '--repo', repo], {
      BULWARK_PROGRESS_INTERVAL_MS: 'soon',
    });
    expect(bad.code).toBe(2);
    expect(bad.stderr.trim()).toBe(
      'bulwark: BULWARK_PROGRESS_INTERVAL_MS: "soon" must be a whole number of milliseconds >= 0',
    );
  });
});
