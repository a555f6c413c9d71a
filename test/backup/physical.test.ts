import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStorage, physicalBackup, Repository } from '../../src/backup/index.js';
import type { StorageDriver } from '../../src/backup/storage/index.js';
import { type GlobalInstall, installGlobally } from '../harness/global-install.js';
import { makePostgresOwnedTempDir, startTestPostgres, type TestPostgres } from '../harness/postgres.js';
import { startTestS3, type TestS3 } from '../harness/s3.js';
import { archivingSettings, bulwark, queryAt, restoreStarted, stopServers, switchAndArchive } from './cli-helpers.js';

// End to end, as a user runs it: the packed package installed globally, PostgreSQL's archiver calling
// `bulwark wal push %p` as the postgres user, `bulwark restore` laying out a data folder whose
// restore_command calls `bulwark wal fetch`. Once per storage driver.
let install: GlobalInstall;
let s3: TestS3;
let work: string;

beforeAll(async () => {
  [install, s3] = await Promise.all([Promise.resolve().then(installGlobally), startTestS3()]);
  work = makePostgresOwnedTempDir('bulwark-phys-');
}, 240_000);
afterAll(async () => {
  await s3?.stop();
  install?.remove();
  if (work) rmSync(work, { recursive: true, force: true });
});

const drivers = [
  { name: 'fs', uri: () => `file://${join(work, 'repo')}` },
  { name: 's3', uri: () => s3.repoUri('physical/cluster1') },
];

describe.each(drivers)('physical backup, WAL archive and PITR ($name driver)', (d) => {
  let pg: TestPostgres;
  let uri: string;
  const restored: TestPostgres[] = [];
  const stopDirs: string[] = [];

  beforeAll(async () => {
    uri = d.uri();
    pg = await startTestPostgres({ settings: archivingSettings(install.bin, uri) });
    await pg.query(
      'create table marker(id serial primary key, note text not null, at timestamptz default clock_timestamp())',
    );
    await pg.query(`create table filler as select g as id, md5(g::text) as v from generate_series(1, 20000) g`);
  });
  afterAll(async () => {
    await stopServers(stopDirs);
    await pg?.destroy();
    for (const r of restored) await r.destroy();
  });

  it('backup create, then PITR to a timestamp keeps the row committed before it and not the one after', async () => {
    const b = await bulwark(install.bin, ['backup', 'create', '--repo', uri, '--pg', pg.url]);
    expect(b.stderr + b.stdout).toMatch(/backup \d{8}T\d{9}Z-P complete/);
    expect(b.code).toBe(0);
    await pg.query(`insert into marker(note) values ('before')`);
    const t = (await pg.query<{ t: string }>('select clock_timestamp()::text as t'))[0]!.t;
    await pg.query(`insert into marker(note) values ('after')`);
    await switchAndArchive(pg);

    const list = await bulwark(install.bin, ['backup', 'list', '--json', '--repo', uri]);
    expect(list.code).toBe(0);
    const backups = JSON.parse(list.stdout);
    expect(backups).toHaveLength(1);
    expect(backups[0].walNeeded.from).toMatch(/^[0-9A-F]{24}$/);

    const dir = join(work, `pitr-${d.name}`);
    const { port, result: r } = await restoreStarted(install.bin, uri, dir, ['--to-time', t], stopDirs);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(r.stdout).toMatch(/recovery finished in .*recovery stopping before commit/);
    const rows = await queryAt(port, 'select note from marker order by id');
    expect(rows.map((x) => x.note)).toEqual(['before']);
    const [{ n }] = await queryAt(port, 'select count(*)::int as n from filler');
    expect(n).toBe(20000);
    const again = await bulwark(install.bin, ['restore', '--repo', uri, '--pgdata', dir, '--to-time', t]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/not empty; pass --force/);
  });

  it('--to-latest loses no committed transaction', async () => {
    await pg.query(`insert into marker(note) select 'bulk ' || g from generate_series(1, 500) g`);
    await pg.query('update filler set v = upper(v) where id % 7 = 0');
    await pg.query(`insert into marker(note) values ('last')`);
    await switchAndArchive(pg);
    const [want] = await pg.query(
      "select count(*)::int as n, max(id) as m, (select sum(length(v)) from filler where v ~ '[A-F]')::text as f from marker",
    );
    const dir = join(work, `latest-${d.name}`);
    const { port, result: r } = await restoreStarted(install.bin, uri, dir, ['--to-latest'], stopDirs);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    const [got] = await queryAt(
      port,
      "select count(*)::int as n, max(id) as m, (select sum(length(v)) from filler where v ~ '[A-F]')::text as f from marker",
    );
    expect(got).toEqual(want);
  });

  it('wal push is idempotent, refuses different content for an archived name, and exits non-zero on failure', async () => {
    const seg = join(work, `000000010000000000000099-${d.name}`);
    // timeline 9: a name no real segment of this instance has, so it does not look like a gap in timeline 1
    const name = '0000000900000000000000A9';
    const file = join(work, name);
    writeFileSync(file, Buffer.alloc(16 * 1024 * 1024, 7));
    expect((await bulwark(install.bin, ['wal', 'push', file, '--repo', uri])).code).toBe(0);
    expect((await bulwark(install.bin, ['wal', 'push', file, '--repo', uri])).code).toBe(0);
    writeFileSync(file, Buffer.alloc(16 * 1024 * 1024, 8));
    const clash = await bulwark(install.bin, ['wal', 'push', file, '--repo', uri]);
    expect(clash.code).toBe(1);
    expect(clash.stderr).toMatch(/already holds 0000000900000000000000A9 with different content/);
    const fetched = join(work, `fetched-${d.name}`);
    expect((await bulwark(install.bin, ['wal', 'fetch', name, fetched, '--repo', uri])).code).toBe(0);
    expect(readFileSync(fetched).equals(Buffer.alloc(16 * 1024 * 1024, 7))).toBe(true);
    const missing = await bulwark(install.bin, ['wal', 'fetch', '0000000900000000000000FE', fetched, '--repo', uri]);
    expect(missing.code).toBe(1);
    expect((await bulwark(install.bin, ['wal', 'push', `${seg}-missing`, '--repo', uri])).code).toBe(1);
    const noRepo = await bulwark(install.bin, ['wal', 'push', file], { BULWARK_REPO: undefined });
    expect(noRepo.code).toBe(2);
  });

  it('an interrupted backup (data stored, manifest never written) is not listed', async () => {
    const storage = openStorage(uri);
    // the crash happens exactly where it would hurt most: every data object stored, manifest not yet
    const crashing: StorageDriver = Object.create(storage);
    crashing.put = async (key, body) => {
      if (key.endsWith('manifest.json')) throw new Error('simulated crash before the manifest');
      return storage.put(key, body);
    };
    const before = (await new Repository(storage).listBackups()).length;
    await expect(
      physicalBackup({
        repo: new Repository(crashing),
        pg: { url: pg.url },
        encoding: { compression: 'zstd', encryption: 'none' },
      }),
    ).rejects.toThrow(/simulated crash/);
    const objects = await storage.list('backups/');
    expect(objects.some((o) => o.key.endsWith('base.tar.zst'))).toBe(true);
    const list = await bulwark(install.bin, ['backup', 'list', '--json', '--repo', uri]);
    expect(JSON.parse(list.stdout)).toHaveLength(before);
    // its leftovers are removed by expire once older than --orphan-age; complete backups stay
    const young = await bulwark(install.bin, ['backup', 'expire', '--keep-last', '10', '--repo', uri]);
    expect(young.stdout).toMatch(/and 0 interrupted backup\(s\)/);
    const old = await bulwark(install.bin, [
      'backup',
      'expire',
      '--keep-last',
      '10',
      '--orphan-age',
      '0s',
      '--repo',
      uri,
    ]);
    expect(old.code, old.stderr).toBe(0);
    expect(old.stdout).toMatch(/removed \S+-P {2}\(interrupted backup: no manifest/);
    expect(
      (await storage.list('backups/')).some(
        (o) => o.key.endsWith('base.tar.zst') && !objects.some((p) => p.key === o.key),
      ),
    ).toBe(false);
    expect((await new Repository(storage).listBackups()).length).toBe(before);
    expect((await storage.list('backups/')).filter((o) => o.key.endsWith('base.tar.zst')).length).toBe(before);
  });

  it('verify --restore restores into a throw-away instance and runs sanity queries and pg_amcheck', async () => {
    const r = await bulwark(install.bin, ['backup', 'verify', 'latest', '--restore', '--repo', uri]);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(r.stdout).toMatch(/postgres: \d+ table\(s\), \d+ row\(s\) readable/);
    expect(r.stdout).toMatch(/pg_amcheck ok/);
    expect(r.stdout).toMatch(/verify \S+: ok/);
    const info = await bulwark(install.bin, ['backup', 'info', 'latest', '--repo', uri]);
    expect(info.stdout).toMatch(/last verify: ok at/);
  });

  it('expire keeps the WAL that kept backups need (and --dry-run deletes nothing)', async () => {
    const take = async () => {
      const r = await bulwark(install.bin, ['backup', 'create', '--repo', uri, '--pg', pg.url]);
      expect(r.code, r.stderr).toBe(0);
      await pg.query(`insert into marker(note) select 'wal ' || g from generate_series(1, 200) g`);
      await switchAndArchive(pg);
    };
    await take();
    await take();
    const repo = new Repository(openStorage(uri));
    const backups = await repo.listBackups();
    expect(backups.length).toBe(3);
    const walBefore = (await repo.listWal()).length;
    const dry = await bulwark(install.bin, ['backup', 'expire', '--keep-last', '2', '--dry-run', '--repo', uri]);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toMatch(/would delete 1 backup\(s\)/);
    expect((await repo.listBackups()).length).toBe(3);
    expect((await repo.listWal()).length).toBe(walBefore);

    const r = await bulwark(install.bin, ['backup', 'expire', '--keep-last', '2', '--repo', uri]);
    expect(r.code, r.stderr).toBe(0);
    const kept = await repo.listBackups();
    expect(kept.map((b) => b.id)).toEqual(backups.slice(1).map((b) => b.id));
    const wal = await repo.listWal();
    const floor = kept[0]!.pg.startWal!;
    expect(wal.length).toBeLessThan(walBefore);
    expect(wal.filter((w) => /^[0-9A-F]{24}$/.test(w.name)).every((w) => w.name >= floor)).toBe(true);
    // the oldest kept backup still recovers to the latest transaction with the WAL that was kept
    await pg.query(`insert into marker(note) values ('after expire')`);
    await switchAndArchive(pg);
    const [want] = await pg.query('select count(*)::int as n from marker');
    const dir = join(work, `expire-${d.name}`);
    const { port, result: rr } = await restoreStarted(
      install.bin,
      uri,
      dir,
      ['--backup', kept[0]!.id, '--to-latest'],
      stopDirs,
    );
    expect(rr.code, rr.stderr + rr.stdout).toBe(0);
    const [got] = await queryAt(port, 'select count(*)::int as n from marker');
    expect(got).toEqual(want);
  });

  it('a corrupted object fails verify, naming it, and the restore refuses it', async () => {
    const storage = openStorage(uri);
    const m = (await new Repository(storage).listBackups()).at(-1)!;
    const key = `backups/${m.id}/${m.objects[0]!.key}`;
    const chunks: Buffer[] = [];
    for await (const c of await storage.get(key)) chunks.push(c as Buffer);
    const bytes = Buffer.concat(chunks);
    bytes[Math.floor(bytes.length / 2)]! ^= 0xff;
    await storage.put(key, bytes);
    const r = await bulwark(install.bin, ['backup', 'verify', m.id, '--repo', uri]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(key);
    expect(r.stderr).toMatch(/SHA-256/);
    const dir = join(work, `corrupt-${d.name}`);
    const rr = await bulwark(install.bin, ['restore', '--repo', uri, '--pgdata', dir, '--backup', m.id]);
    expect(rr.code).toBe(1);
  });
});
