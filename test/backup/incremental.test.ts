import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GlobalInstall, installGlobally } from '../harness/global-install.js';
import { makePostgresOwnedTempDir, startTestPostgres, type TestPostgres } from '../harness/postgres.js';
import { startTestS3, type TestS3 } from '../harness/s3.js';
import { archivingSettings, bulwark, queryAt, restoreStarted, stopServers, switchAndArchive } from './cli-helpers.js';

// Incremental (changed-page) physical backups, end to end as a user runs them: the globally installed
// package is PostgreSQL's archive_command, `bulwark backup create --type incr` layers only the pages
// that changed, and `bulwark restore` lays out full + layers and replays WAL. Once per storage driver.
let install: GlobalInstall;
let s3: TestS3;
let work: string;

beforeAll(async () => {
  [install, s3] = await Promise.all([Promise.resolve().then(installGlobally), startTestS3()]);
  work = makePostgresOwnedTempDir('bulwark-incr-');
}, 240_000);
afterAll(async () => {
  await s3?.stop();
  install?.remove();
  if (work) rmSync(work, { recursive: true, force: true });
});

const drivers = [
  { name: 'fs', uri: () => `file://${join(work, 'repo')}` },
  { name: 's3', uri: () => s3.repoUri('incremental/cluster1') },
];

// what a restored copy must equal: row counts and a hash of every row of each table
const STATE_SQL = `select
  (select count(*) from big)::int as big_rows,
  (select md5(string_agg(id::text || ':' || v, ',' order by id)) from big) as big_hash,
  (select string_agg(note, ',' order by id) from marker) as markers,
  (select md5(string_agg(id::text || v, ',' order by id)) from churn) as churn_hash,
  to_regclass('public.temporary_table') is not null as has_temporary_table`;

describe.each(drivers)('incremental physical backups ($name driver)', (d) => {
  let pg: TestPostgres;
  let uri: string;
  const stopDirs: string[] = [];
  const ids: string[] = [];
  let afterFirstLayer = '';

  beforeAll(async () => {
    uri = d.uri();
    pg = await startTestPostgres({ settings: archivingSettings(install.bin, uri) });
    await pg.query('create table marker(id serial primary key, note text not null)');
    // ~3,600 pages: big enough that "only changed pages" and "the whole file" differ by far
    await pg.query(`create table big as select g as id, md5(g::text) || repeat('x', 100) as v
                    from generate_series(1, 200000) g`);
    await pg.query('alter table big add primary key (id)');
    await pg.query(`create table churn as select g as id, md5(g::text) as v from generate_series(1, 5000) g`);
    await pg.query('checkpoint');
  });
  afterAll(async () => {
    await stopServers(stopDirs);
    await pg?.destroy();
  });

  async function list(): Promise<any[]> {
    const r = await bulwark(install.bin, ['backup', 'list', '--json', '--repo', uri]);
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout);
  }

  async function restoreAndQuery(name: string, target: string[]): Promise<Record<string, unknown>> {
    const dir = join(work, `${name}-${d.name}`);
    const { port, result } = await restoreStarted(install.bin, uri, dir, target, stopDirs);
    expect(result.code, result.stderr + result.stdout).toBe(0);
    return (await queryAt(port, STATE_SQL))[0];
  }

  it('a bad --type is exit 2 naming the flag, before the repository is touched', async () => {
    const bad = await bulwark(install.bin, ['backup', 'create', '--type', 'weekly', '--repo', uri, '--pg', pg.url]);
    expect(bad.code).toBe(2);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    expect(bad.stderr).toMatch(/--type: "weekly" must be full, incr or diff/);
    const logical = await bulwark(install.bin, [
      'backup',
      'create',
      '--kind',
      'logical',
      '--type',
      'incr',
      '--repo',
      uri,
    ]);
    expect(logical.code).toBe(2);
    expect(logical.stderr).toMatch(/--type: applies to --kind physical only/);
    expect(await list()).toHaveLength(0);
  });

  it('with nothing to build on, --type incr takes a full backup and says so', async () => {
    const r = await bulwark(install.bin, ['backup', 'create', '--type', 'incr', '--repo', uri, '--pg', pg.url]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/no earlier physical backup .* taking a full backup instead/);
    const l = await list();
    expect(l).toHaveLength(1);
    expect(l[0].type).toBe('full');
    ids.push(l[0].id);
  });

  it('an incremental backup stores only the changed pages, and each layer names the one below', async () => {
    // 1 row in 500 changes: ~400 scattered pages of big's ~3,600, plus its index pages
    await pg.query(`update big set v = 'changed-1-' || id where id % 500 = 0`);
    await pg.query(`insert into marker(note) values ('inc1')`);
    await pg.query('create table temporary_table as select 1 as x');
    const r = await bulwark(install.bin, ['backup', 'create', '--type', 'incr', '--repo', uri, '--pg', pg.url]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/incremental on \d{8}T\d{9}Z-P: read .*, copied \d+ changed pages/);
    const l = await list();
    expect(l).toHaveLength(2);
    const [full, inc] = l;
    expect(inc.type).toBe('incremental');
    expect(inc.reference).toBe(full.id);
    // pgBackRest 2.45 would copy big's whole file again; we copy a small fraction of the instance
    expect(inc.sizeBytes).toBeLessThan(full.sizeBytes / 4);
    ids.push(inc.id);
    afterFirstLayer = (await pg.query<{ t: string }>('select clock_timestamp()::text as t'))[0]!.t;
    const info = await bulwark(install.bin, ['backup', 'info', inc.id, '--repo', uri]);
    expect(info.stdout).toMatch(new RegExp(`type +incremental on ${full.id}`));

    // second layer: deletions, a dropped table, a rewritten table (new file), more updates
    await pg.query(`update big set v = 'changed-2-' || id where id % 777 = 0`);
    await pg.query('delete from big where id > 199000');
    await pg.query('drop table temporary_table');
    await pg.query(`update churn set v = upper(v) where id % 3 = 0`);
    await pg.query('vacuum full churn');
    await pg.query(`insert into marker(note) values ('inc2')`);
    const r2 = await bulwark(install.bin, ['backup', 'create', '--type', 'incr', '--repo', uri, '--pg', pg.url]);
    expect(r2.code, r2.stderr).toBe(0);
    const l2 = await list();
    expect(l2).toHaveLength(3);
    expect(l2[2].type).toBe('incremental');
    expect(l2[2].reference).toBe(inc.id);
    ids.push(l2[2].id);
  });

  it('--to-latest from the newest layer equals the primary, with every later transaction', async () => {
    await pg.query(`insert into marker(note) values ('after')`);
    await pg.query(`update big set v = 'changed-3-' || id where id % 1001 = 0`);
    await switchAndArchive(pg);
    const [want] = await pg.query(STATE_SQL);
    expect(want!.markers).toBe('inc1,inc2,after');
    const got = await restoreAndQuery('latest', ['--to-latest']);
    expect(got).toEqual(want);
  });

  it('PITR to a time between the layers restores full + first layer and stops there', async () => {
    const got = await restoreAndQuery('layer1', ['--to-time', afterFirstLayer]);
    expect(got.markers).toBe('inc1');
    expect(got.big_rows).toBe(200000);
    expect(got.has_temporary_table).toBe(true);
  });

  it('bulwark schedule runs the incremental job from bulwark.config.ts', async () => {
    const cfg = join(work, `schedule-${d.name}.config.ts`);
    writeFileSync(
      cfg,
      `export default { backup: { repo: ${JSON.stringify(uri)}, pg: ${JSON.stringify(pg.url)},
         schedule: { incremental: { cron: '* * * * * *' } } } };\n`,
    );
    const before = await list();
    const r = await bulwark(install.bin, ['schedule', '--config', cfg, '--max-runs', '1']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/schedule: incremental succeeded/);
    const after = await list();
    expect(after).toHaveLength(before.length + 1);
    expect(after.at(-1).type).toBe('incremental');
    expect(after.at(-1).reference).toBe(before.at(-1).id);
    ids.push(after.at(-1).id);
  });

  it('a differential backup builds on the full one, and --to-latest restores full + it + WAL', async () => {
    await pg.query(`update big set v = 'changed-4-' || id where id % 999 = 0`);
    await pg.query(`insert into marker(note) values ('diff')`);
    const r = await bulwark(install.bin, ['backup', 'create', '--type', 'diff', '--repo', uri, '--pg', pg.url]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(new RegExp(`differential on ${ids[0]}`));
    const l = await list();
    expect(l.at(-1).type).toBe('differential');
    expect(l.at(-1).reference).toBe(ids[0]);
    ids.push(l.at(-1).id);
    await pg.query(`insert into marker(note) values ('after diff')`);
    await switchAndArchive(pg);
    const [want] = await pg.query(STATE_SQL);
    expect(await restoreAndQuery('diff', ['--to-latest'])).toEqual(want);
  });

  it('verify checks the whole chain and names a corrupted object of the full backup below', async () => {
    // --restore: full + layer laid out in a throw-away instance, recovered to consistency, pg_amcheck
    const ok = await bulwark(install.bin, ['backup', 'verify', ids.at(-1)!, '--restore', '--repo', uri]);
    expect(ok.code, ok.stderr + ok.stdout).toBe(0);
    expect(ok.stdout + ok.stderr).toMatch(/restored and recovered to consistency/);
    const dry = await bulwark(install.bin, ['backup', 'expire', '--keep-last', '1', '--dry-run', '--repo', uri]);
    expect(dry.code, dry.stderr).toBe(0);
    // the newest backup (the differential) is kept, and so is the full backup it builds on; the
    // incremental layers nothing kept needs would go
    expect(dry.stdout).toMatch(new RegExp(`keep +${ids[0]} .*base of kept incremental backup ${ids.at(-1)}`));
    expect(dry.stdout).toMatch(new RegExp(`expire ${ids[1]} `));
    expect(dry.stdout).not.toMatch(new RegExp(`expire ${ids[0]} `));
    if (d.name !== 'fs') return;
    const folder = join(work, 'repo', 'backups', ids[0]!);
    const base = readdirSync(folder).find((f) => f.startsWith('base.tar'))!;
    const bytes = readFileSync(join(folder, base));
    const mid = Math.floor(bytes.length / 2);
    bytes[mid] = bytes[mid]! ^ 0xff;
    writeFileSync(join(folder, base), bytes);
    const bad = await bulwark(install.bin, ['backup', 'verify', ids.at(-1)!, '--repo', uri]);
    expect(bad.code).toBe(1);
    expect(bad.stdout + bad.stderr).toContain(`backups/${ids[0]}/${base}`);
  });
});
