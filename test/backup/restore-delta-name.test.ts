import { readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../src/lib/child.js';
import { freePort } from '../../src/lib/net.js';
import { POSTGRES_USER, pgBin } from '../../src/lib/postgres.js';
import { type GlobalInstall, installGlobally } from '../harness/global-install.js';
import { makePostgresOwnedTempDir, startTestPostgres, type TestPostgres } from '../harness/postgres.js';
import { archivingSettings, bulwark, type CliResult, queryAt, stopServers, switchAndArchive } from './cli-helpers.js';

// Issue 9, "also expected by pgBackRest users": restore to a named restore point, delta restore over
// an existing data folder, and the default timeline following a failover. Real PostgreSQL 15, the
// packed package installed globally, archive_command = bulwark wal push.
let install: GlobalInstall;
let work: string;
let pg: TestPostgres;
let uri: string;
const stopDirs: string[] = [];

beforeAll(async () => {
  install = installGlobally();
  work = makePostgresOwnedTempDir('bulwark-delta-');
  uri = `file://${join(work, 'repo')}`;
  pg = await startTestPostgres({ settings: archivingSettings(install.bin, uri) });
  await pg.query('create table marker(id serial primary key, note text not null)');
  await pg.query(`create table still as select g as id, md5(g::text) as v from generate_series(1, 20000) g`);
  await pg.query(`create table damaged as select g as id, md5(g::text) as v from generate_series(1, 20000) g`);
  await pg.query('checkpoint');
  const b = await bulwark(install.bin, ['backup', 'create', '--repo', uri, '--pg', pg.url]);
  expect(b.code, b.stderr).toBe(0);
}, 300_000);
afterAll(async () => {
  await stopServers(stopDirs);
  await pg?.destroy();
  install?.remove();
  if (work) rmSync(work, { recursive: true, force: true });
});

async function restoreAt(dir: string, args: string[]): Promise<{ port: number; r: CliResult }> {
  const port = await freePort({ below: 32768 });
  if (!stopDirs.includes(dir)) stopDirs.push(dir);
  const r = await bulwark(install.bin, [
    'restore',
    '--repo',
    uri,
    '--pgdata',
    dir,
    ...args,
    '--start',
    '--port',
    String(port),
  ]);
  return { port, r };
}

const stopFast = (dir: string) =>
  run(pgBin('pg_ctl'), ['-D', dir, '-m', 'fast', '-w', 'stop'], { asUser: POSTGRES_USER, check: false });

describe('restore --to-name, restore --delta, the default timeline after a failover', () => {
  const dir = () => join(work, 'copy');

  it('--to-name recovers up to a pg_create_restore_point and stops there; an unknown name fails', async () => {
    await pg.query(`insert into marker(note) values ('a')`);
    await pg.query(`select pg_create_restore_point('before-b')`);
    await pg.query(`insert into marker(note) values ('b')`);
    await switchAndArchive(pg);
    const { port, r } = await restoreAt(dir(), ['--to-name', 'before-b']);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(r.stdout).toMatch(/recovery stopping at restore point "before-b"/);
    expect((await queryAt(port, 'select note from marker order by id')).map((x) => x.note)).toEqual(['a']);
    await stopFast(dir());

    const { r: none } = await restoreAt(join(work, 'no-name'), ['--to-name', 'no-such-point']);
    expect(none.code, none.stderr + none.stdout).toBe(1);
    expect(none.stderr).toMatch(/recovery ended before configured recovery target was reached/);
  });

  it('--delta over the stopped copy rewrites only what differs: an untouched file keeps its inode and mtime, a damaged one is repaired, a stray one removed', async () => {
    await pg.query(`insert into marker(note) values ('c')`);
    await switchAndArchive(pg);
    const rel = (t: string) => pg.query<{ p: string }>(`select pg_relation_filepath('${t}') as p`).then((x) => x[0]!.p);
    const still = join(dir(), await rel('still'));
    const damaged = join(dir(), await rel('damaged'));
    const before = statSync(still);
    const bytes = readFileSync(damaged);
    bytes[8192 - 200]! ^= 0x01; // inside the tuples of the first page
    writeFileSync(damaged, bytes);
    writeFileSync(join(dir(), 'base', 'stray-file'), 'not from the backup');

    const refused = await bulwark(install.bin, ['restore', '--repo', uri, '--pgdata', dir()]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/not empty; pass --force/);

    const { port, r } = await restoreAt(dir(), ['--delta', '--to-latest']);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    const m = /delta: (\d+) of (\d+) files rewritten, (\d+) removed/.exec(r.stdout);
    expect(m, r.stdout).not.toBeNull();
    expect(Number(m![1])).toBeLessThan(Number(m![2]));
    expect(Number(m![3])).toBeGreaterThan(0);
    const after = statSync(still);
    expect([after.ino, after.mtimeMs]).toEqual([before.ino, before.mtimeMs]);
    expect(() => statSync(join(dir(), 'base', 'stray-file'))).toThrow();
    const sum = "select count(*)::int as n, md5(string_agg(v, ',' order by id)) as h from damaged";
    expect(await queryAt(port, sum)).toEqual(await pg.query(sum));
    expect((await queryAt(port, 'select note from marker order by id')).map((x) => x.note)).toEqual(['a', 'b', 'c']);
    await stopFast(dir());

    // --delta into a folder that is not a PostgreSQL data folder is refused (it would delete its files)
    const other = join(work, 'not-pgdata');
    await run('mkdir', ['-p', other]);
    writeFileSync(join(other, 'important.txt'), 'keep me');
    const no = await bulwark(install.bin, ['restore', '--repo', uri, '--pgdata', other, '--delta']);
    expect(no.code).toBe(1);
    expect(no.stderr).toMatch(/holds no PG_VERSION/);
    expect(readFileSync(join(other, 'important.txt'), 'utf8')).toBe('keep me');
  });

  it('after a failover (the old primary stopped, a restore promoted and archives), the default follows the new timeline', async () => {
    await pg.query(`insert into marker(note) values ('last on timeline 1')`);
    await switchAndArchive(pg);
    await pg.stop('fast');
    // the new primary: a restore that keeps archiving into the repository
    const { port: np, r } = await restoreAt(join(work, 'new-primary'), ['--archive-mode', 'preserve']);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    await queryAt(np, `insert into marker(note) values ('on timeline 2')`);
    const [{ seg }] = await queryAt(np, 'select pg_walfile_name(pg_switch_wal()) as seg');
    for (let i = 0; i < 300; i++) {
      const [a] = await queryAt(np, 'select last_archived_wal as l from pg_stat_archiver');
      if (a.l && a.l >= seg) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    const { port, r: r2 } = await restoreAt(join(work, 'after-failover'), ['--to-latest']);
    expect(r2.code, r2.stderr + r2.stdout).toBe(0);
    expect(r2.stderr).toMatch(/timeline 1 ends where timeline 2 branched off/);
    const notes = (await queryAt(port, 'select note from marker order by id')).map((x) => x.note);
    expect(notes).toContain('on timeline 2');
    // asked for explicitly: the backup's own timeline only
    const { port: p3, r: r3 } = await restoreAt(join(work, 'current-only'), ['--target-timeline', 'current']);
    expect(r3.code, r3.stderr + r3.stdout).toBe(0);
    const own = (await queryAt(p3, 'select note from marker order by id')).map((x) => x.note);
    expect(own).toContain('last on timeline 1');
    expect(own).not.toContain('on timeline 2');
  });
});
