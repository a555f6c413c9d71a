import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { generateIdentity } from 'age-encryption';
import pg_ from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type BackupManifest,
  type KeyMaterial,
  logicalBackup,
  logicalRestore,
  openStorage,
  Repository,
  type StorageDriver,
  verifyBackup,
} from '../../src/backup/index.js';
import { runCli } from '../harness/cli.js';
import { makePostgresOwnedTempDir, startTestPostgres, type TestPostgres } from '../harness/postgres.js';
import { startTestS3, type TestS3 } from '../harness/s3.js';
import { bulwark } from './cli-helpers.js';

const MAIN = resolve(import.meta.dirname, '../../dist/cli/main.js');

let pg: TestPostgres;
let s3: TestS3;
let dir: string;

/** Every table's row count and a content checksum, plus the large object's bytes: what a restore must reproduce. */
async function fingerprint(database: string) {
  const [r] = await pg.query(
    `select (select count(*) from customers)::int as customers,
            (select md5(string_agg(name || email, ',' order by id)) from customers) as customers_md5,
            (select count(*) from orders)::int as orders,
            (select sum(amount)::text from orders) as orders_sum,
            (select count(*) from items)::int as items,
            (select md5(string_agg(payload::text, ',' order by id)) from items) as items_md5,
            (select count(*) from audit.events)::int as events,
            (select encode(lo_get(oid), 'escape') from pg_largeobject_metadata limit 1) as blob`,
    [],
    database,
  );
  return r;
}

/** Run `fn` with os.tmpdir() pointing at a private folder, and return what is left in it afterwards. */
async function inPrivateTmp<T>(
  name: string,
  fn: () => Promise<T>,
): Promise<{ result?: T; error?: unknown; left: string[] }> {
  const tmp = join(dir, `tmp-${name}`);
  mkdirSync(tmp, { recursive: true });
  const before = process.env.TMPDIR;
  process.env.TMPDIR = tmp;
  try {
    const result = await fn();
    return { result, left: readdirSync(tmp) };
  } catch (error) {
    return { error, left: readdirSync(tmp) };
  } finally {
    if (before === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = before;
  }
}

beforeAll(async () => {
  [pg, s3] = await Promise.all([startTestPostgres(), startTestS3()]);
  dir = makePostgresOwnedTempDir('bulwark-logical-dir-');
  await pg.query('create database shop');
  await pg.query(
    `create table customers(id serial primary key, name text, email text unique);
     insert into customers(name, email) select 'customer ' || g, 'c' || g || '@example.com' from generate_series(1, 3000) g;
     create table orders(id serial primary key, customer int references customers, amount numeric, note text);
     insert into orders(customer, amount, note) select 1 + g % 3000, g * 1.5, repeat('x', g % 50) from generate_series(1, 20000) g;
     create index on orders(amount);
     create table items(id serial primary key, payload jsonb);
     insert into items(payload) select jsonb_build_object('n', g, 'tags', array['a', 'b', g::text]) from generate_series(1, 8000) g;
     create schema audit;
     create table audit.events(at timestamptz default now(), what text);
     insert into audit.events(what) select 'event ' || g from generate_series(1, 500) g;
     select lo_from_bytea(0, 'a large object survives the round trip'::bytea);`,
    [],
    'shop',
  );
});
afterAll(async () => {
  await Promise.all([pg?.destroy(), s3?.stop()]);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const drivers = [
  { name: 'fs', uri: () => `file://${join(dir, 'repo-fs')}`, compression: 'zstd' as const, encrypt: false },
  { name: 's3', uri: () => s3.repoUri('logical-dir'), compression: 'gzip' as const, encrypt: true },
];

describe.each(drivers)('directory-format logical backup, --jobs 2 ($name driver)', (d) => {
  let key: KeyMaterial | undefined;
  let m: BackupManifest;
  beforeAll(async () => {
    if (d.encrypt) key = { identity: await generateIdentity() };
  });
  const repo = () => new Repository(openStorage(d.uri()), key);

  it('stores one verified object per pg_dump file, manifest last, and leaves no temp folder', async () => {
    const r = await inPrivateTmp(`backup-${d.name}`, () =>
      logicalBackup({
        repo: repo(),
        pg: { url: pg.urlFor('shop') },
        encoding: { compression: d.compression, encryption: d.encrypt ? 'age' : 'none' },
        format: 'directory',
        jobs: 2,
      }),
    );
    expect(r.error).toBeUndefined();
    expect(r.left).toEqual([]);
    m = r.result!;
    expect(m.pg.dumpFormat).toBe('directory');
    expect(m.pg.database).toBe('shop');
    const names = m.objects.map((o) => o.name);
    expect(names).toContain('dump/toc.dat');
    expect(names).toContain('dump/blobs.toc');
    // one data file per table (4) and one per large object
    expect(names.filter((n) => /^dump\/\d+\.dat$/.test(n)).length).toBeGreaterThanOrEqual(4);
    const suffix = `${d.compression === 'zstd' ? '.zst' : '.gz'}${d.encrypt ? '.age' : ''}`;
    for (const o of m.objects) {
      expect(o.key).toBe(`${o.name}${suffix}`);
      expect(o.sha256).toMatch(/^[0-9a-f]{64}$/);
    }
    expect(m.sizes.raw).toBe(m.objects.reduce((n, o) => n + o.rawBytes, 0));
    expect(m.sizes.stored).toBeLessThan(m.sizes.raw);
    const stored = await repo().storage.list(`backups/${m.id}/`);
    expect(stored.map((o) => o.key).sort()).toEqual(
      [
        ...m.objects.map((o) => `backups/${m.id}/${o.key}`),
        `backups/${m.id}/manifest.copy.json`,
        `backups/${m.id}/manifest.json`,
      ].sort(),
    );
  });

  it('restores with pg_restore -j 2 into a new database (same rows), refuses an existing one without force', async () => {
    const target = `shop_dir_${d.name}`;
    const r = await inPrivateTmp(`restore-${d.name}`, () =>
      logicalRestore({ repo: repo(), pg: { url: pg.url }, backup: m.id, database: target, jobs: 2 }),
    );
    expect(r.error).toBeUndefined();
    expect(r.left).toEqual([]);
    expect(r.result!.created).toBe(true);
    const want = await fingerprint('shop');
    expect(want.orders).toBe(20000);
    expect(want.blob).toBe('a large object survives the round trip');
    expect(await fingerprint(target)).toEqual(want);
    await expect(
      logicalRestore({ repo: repo(), pg: { url: pg.url }, backup: m.id, database: target }),
    ).rejects.toMatchObject({
      code: 'BULWARK_E_TARGET_EXISTS',
    });
    await pg.query('delete from orders where id > 100; truncate audit.events', [], target);
    await logicalRestore({ repo: repo(), pg: { url: pg.url }, backup: m.id, database: target, force: true, jobs: 2 });
    expect(await fingerprint(target)).toEqual(want);
  });

  if (d.encrypt) {
    it('an encrypted directory backup cannot be restored without the key', async () => {
      await expect(
        logicalRestore({
          repo: new Repository(openStorage(d.uri())),
          pg: { url: pg.url },
          backup: m.id,
          database: 'dir_nokey',
        }),
      ).rejects.toMatchObject({ code: 'BULWARK_E_ENCRYPTION' });
      const [row] = await pg.query(`select count(*)::int as n from pg_database where datname = 'dir_nokey'`);
      expect(row.n).toBe(0);
    });
  } else {
    it('verify --restore restores it into a throw-away instance', async () => {
      const r = await verifyBackup({ repo: repo(), backup: m.id, restore: true });
      expect(r.problems).toEqual([]);
      expect(r.objectsChecked).toBe(m.objects.length);
      expect(r.restore?.checks.join('\n')).toMatch(/shop: 4 table\(s\), 31500 row\(s\) readable/);
      expect(r.ok).toBe(true);
    });
  }

  it('a corrupted object fails verify naming it, and the restore refuses before pg_restore', async () => {
    const b = await logicalBackup({
      repo: repo(),
      pg: { url: pg.urlFor('shop') },
      encoding: { compression: d.compression, encryption: d.encrypt ? 'age' : 'none' },
      format: 'directory',
      jobs: 2,
    });
    const victim = b.objects
      .filter((o) => /^dump\/\d+\.dat$/.test(o.name))
      .sort((x, y) => y.storedBytes - x.storedBytes)[0]!;
    const key = `backups/${b.id}/${victim.key}`;
    const chunks: Buffer[] = [];
    for await (const c of await repo().storage.get(key)) chunks.push(c as Buffer);
    const bytes = Buffer.concat(chunks);
    bytes[Math.floor(bytes.length / 2)]! ^= 0xff;
    await repo().storage.put(key, bytes);
    const v = await verifyBackup({ repo: repo(), backup: b.id });
    expect(v.ok).toBe(false);
    expect(v.problems.map((p) => p.object)).toEqual([key]);
    const r = await inPrivateTmp(`corrupt-${d.name}`, () =>
      logicalRestore({ repo: repo(), pg: { url: pg.url }, backup: b.id, database: `corrupt_${d.name}` }),
    );
    expect(r.error).toMatchObject({ code: 'BULWARK_E_CHECKSUM' });
    expect((r.error as Error).message).toContain(victim.key);
    expect(r.left).toEqual([]);
    const [row] = await pg.query('select count(*)::int as n from pg_database where datname = $1', [
      `corrupt_${d.name}`,
    ]);
    expect(row.n).toBe(0);
    await repo().deleteBackup(b.id);
  });
});

describe('directory-format failures clean up', () => {
  it('a failing upload stops pg_dump, deletes the objects already stored, writes no manifest, removes the temp folder', async () => {
    const inner = openStorage(`file://${join(dir, 'repo-failing')}`);
    let puts = 0;
    // like a real driver that fails half-way: the body is destroyed, the put rejects
    const failing: StorageDriver = {
      description: inner.description,
      put: async (key, body) => {
        if (++puts === 3) {
          const err = new Error('disk full (injected)');
          if (typeof body === 'object' && 'destroy' in body) body.destroy(err);
          throw err;
        }
        return inner.put(key, body);
      },
      get: (key) => inner.get(key),
      head: (key) => inner.head(key),
      list: (prefix) => inner.list(prefix),
      delete: (keys) => inner.delete(keys),
    };
    const repo = new Repository(failing);
    const r = await inPrivateTmp('failing', () =>
      logicalBackup({
        repo,
        pg: { url: pg.urlFor('shop') },
        encoding: { compression: 'zstd', encryption: 'none' },
        format: 'directory',
        jobs: 2,
      }),
    );
    expect(r.error).toMatchObject({ code: 'BULWARK_E_BACKUP' });
    expect((r.error as Error).message).toMatch(/disk full \(injected\)/);
    expect(r.left).toEqual([]);
    expect(await inner.list('backups/')).toEqual([]);
    expect(await repo.listBackups()).toEqual([]);
  });

  it('an aborted backup (Ctrl-C) stores nothing and removes the temp folder', async () => {
    const repo = new Repository(openStorage(`file://${join(dir, 'repo-aborted')}`));
    const stop = new AbortController();
    stop.abort();
    const r = await inPrivateTmp('aborted', () =>
      logicalBackup({
        repo,
        pg: { url: pg.urlFor('shop') },
        encoding: { compression: 'zstd', encryption: 'none' },
        format: 'directory',
        signal: stop.signal,
      }),
    );
    expect(r.error).toMatchObject({ code: 'BULWARK_E_BACKUP' });
    expect((r.error as Error).message).toMatch(/interrupted/);
    expect(r.left).toEqual([]);
    expect(await repo.listBackups()).toEqual([]);
  });
});

describe('CLI: --format directory --jobs N', () => {
  it('bad combinations exit 2 with one line naming the flag, before touching the repository', async () => {
    const repoDir = join(dir, 'never-created');
    const common = ['--repo', `file://${repoDir}`, '--pg', pg.urlFor('shop')];
    const cases: [string[], RegExp][] = [
      [['--kind', 'logical', '--jobs', '2'], /^bulwark: --jobs: .*--format directory/],
      [['--kind', 'logical', '--format', 'custom', '--jobs', '2'], /^bulwark: --jobs: .*--format directory/],
      [
        ['--kind', 'logical', '--format', 'directory', '--jobs', '0'],
        /^bulwark: --jobs: "0" must be a whole number >= 1/,
      ],
      [['--kind', 'logical', '--format', 'tar'], /^bulwark: --format: "tar" must be custom or directory/],
      [['--kind', 'physical', '--format', 'directory'], /^bulwark: --format: applies to --kind logical only/],
    ];
    for (const [args, want] of cases) {
      const r = await bulwark(process.execPath, [MAIN, 'backup', 'create', ...args, ...common]);
      expect({ args, code: r.code }).toEqual({ args, code: 2 });
      const lines = r.stderr.trim().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(want);
    }
    expect(existsSync(repoDir)).toBe(false);
  });

  it('backup create / list / info / restore / verify of a directory-format backup', async () => {
    const repoUri = `file://${join(dir, 'repo-cli')}`;
    const created = await bulwark(process.execPath, [
      MAIN,
      'backup',
      'create',
      '--kind',
      'logical',
      '--format',
      'directory',
      '--jobs',
      '2',
      '--repo',
      repoUri,
      '--pg',
      pg.urlFor('shop'),
    ]);
    expect(created.stderr).toContain('directory format');
    expect(created.code).toBe(0);
    const id = /backup (\S+) complete/.exec(created.stdout)![1]!;
    const list = await bulwark(process.execPath, [MAIN, 'backup', 'list', '--repo', repoUri]);
    expect(list.stdout).toMatch(new RegExp(`${id}\\s+logical .*shop \\(directory\\)`));
    const listJson = JSON.parse(
      (await bulwark(process.execPath, [MAIN, 'backup', 'list', '--repo', repoUri, '--json'])).stdout,
    );
    expect(listJson[0]).toMatchObject({ id, dumpFormat: 'directory' });
    const info = await bulwark(process.execPath, [MAIN, 'backup', 'info', id, '--repo', repoUri]);
    expect(info.stdout).toMatch(/database\s+shop \(pg_dump directory format\)/);
    expect(info.stdout).toMatch(/object\s+dump\/toc\.dat\.zst /);
    const restored = await bulwark(process.execPath, [
      MAIN,
      'restore',
      '--backup',
      id,
      '--database',
      'shop_cli',
      '--jobs',
      '2',
      '--repo',
      repoUri,
      '--pg',
      pg.url,
    ]);
    expect(restored.stderr).toBe('');
    expect(restored.stdout).toMatch(
      new RegExp(`restored ${id} \\(directory format, .*\\) into database shop_cli \\(created\\)`),
    );
    expect(restored.code).toBe(0);
    expect(await fingerprint('shop_cli')).toEqual(await fingerprint('shop'));
    // flip one byte of one stored data file: verify names it and exits 1
    const obj = readdirSync(join(dir, 'repo-cli', 'backups', id, 'dump')).find((f) => /^\d+\.dat\.zst$/.test(f))!;
    const path = join(dir, 'repo-cli', 'backups', id, 'dump', obj);
    const bytes = readFileSync(path);
    bytes[bytes.length - 5]! ^= 0x01;
    writeFileSync(path, bytes);
    const verify = await bulwark(process.execPath, [MAIN, 'backup', 'verify', id, '--repo', repoUri]);
    expect(verify.code).toBe(1);
    expect(verify.stdout).toContain(`PROBLEM backups/${id}/dump/${obj}: SHA-256`);
    expect(verify.stderr).toContain(`backups/${id}/dump/${obj}`);
  });
});

describe('config: backup.logical', () => {
  it('format/jobs from bulwark.config.ts are used by backup create; jobs without directory is exit 2 naming the key', async () => {
    const repoUri = `file://${join(dir, 'repo-config')}`;
    const good = join(dir, 'logical.config.ts');
    writeFileSync(
      good,
      `export default { backup: { repo: ${JSON.stringify(repoUri)}, pg: ${JSON.stringify(pg.urlFor('shop'))}, logical: { format: 'directory', jobs: 2 } } };\n`,
    );
    const r = await bulwark(process.execPath, [MAIN, 'backup', 'create', '--kind', 'logical', '--config', good]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/pg_dump -Fd -j 2: \d+ file\(s\)/);
    // --format on the command line wins over the config
    const custom = await bulwark(process.execPath, [
      MAIN,
      'backup',
      'create',
      '--kind',
      'logical',
      '--format',
      'custom',
      '--config',
      good,
    ]);
    expect(custom.code, custom.stderr).toBe(0);
    const list = await new Repository(openStorage(repoUri)).listBackups();
    expect(list.map((m) => m.pg.dumpFormat)).toEqual(['directory', 'custom']);
    const bad = join(dir, 'bad-logical.config.ts');
    writeFileSync(bad, `export default { backup: { repo: ${JSON.stringify(repoUri)}, logical: { jobs: 4 } } };\n`);
    const e = await bulwark(process.execPath, [MAIN, 'backup', 'list', '--config', bad]);
    expect(e.code).toBe(2);
    expect(e.stderr.trim().split('\n')).toHaveLength(1);
    expect(e.stderr).toMatch(/bad-logical\.config\.ts: backup\.logical\.jobs: jobs needs format: "directory"/);
  });
});

describe('CLI: an interrupted directory backup cleans up', () => {
  it('SIGTERM while pg_dump waits for a lock: exit 1, no backup listed, no object stored, temp folder removed', async () => {
    const tmp = join(dir, 'tmp-sigterm');
    mkdirSync(tmp, { recursive: true });
    const repoDir = join(dir, 'repo-sigterm');
    const locker = new pg_.Client({ connectionString: pg.urlFor('shop') });
    await locker.connect();
    try {
      // pg_dump locks every table before dumping: this makes it wait, mid-backup, deterministically
      await locker.query('begin; lock table items in access exclusive mode');
      let child: ChildProcess | undefined;
      const done = runCli(
        [
          'backup',
          'create',
          '--kind',
          'logical',
          '--format',
          'directory',
          '--repo',
          `file://${repoDir}`,
          '--pg',
          pg.urlFor('shop'),
        ],
        { env: { TMPDIR: tmp }, onSpawn: (c) => (child = c) },
      );
      for (let i = 0; ; i++) {
        const [w] = await pg.query(
          `select count(*)::int as n from pg_stat_activity where application_name = 'pg_dump' and wait_event_type = 'Lock'`,
        );
        if (w.n > 0 && readdirSync(tmp).some((f) => f.startsWith('bulwark-dump-'))) break;
        if (i > 300) throw new Error('pg_dump never started waiting for the lock');
        await new Promise((r) => setTimeout(r, 100));
      }
      child!.kill('SIGTERM');
      const r = await done;
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^bulwark: logical backup of shop interrupted$/m);
      expect(readdirSync(tmp)).toEqual([]);
      expect(existsSync(join(repoDir, 'backups')) ? readdirSync(join(repoDir, 'backups')) : []).toEqual([]);
    } finally {
      await locker.query('rollback').catch(() => {});
      await locker.end();
    }
  });
});

describe('finished files are detected while pg_dump runs (Linux /proc)', () => {
  it('a file held open by a grandchild process is not finished; once closed it is', async () => {
    const { openFilesUnder } = await import('../../src/backup/logical.js');
    const folder = join(dir, 'open-files');
    mkdirSync(folder, { recursive: true });
    // sh -> sh (grandchild) holding a.dat open for writing, like a pg_dump worker writing a table
    const child = spawn('sh', ['-c', `sh -c 'exec 3>"$1/a.dat"; echo ready; read x' sh "${folder}"; echo done`], {
      stdio: ['pipe', 'pipe', 'ignore'],
    });
    try {
      await new Promise<void>((res) => child.stdout.once('data', () => res()));
      writeFileSync(join(folder, 'b.dat'), 'closed already');
      const open = await openFilesUnder(folder, child.pid!);
      expect(open && [...open]).toEqual(['a.dat']);
      child.stdin.write('go\n');
      await new Promise<void>((res) => child.stdout.once('data', () => res()));
      const after = await openFilesUnder(folder, child.pid!);
      expect(after && [...after]).toEqual([]);
    } finally {
      child.kill('SIGKILL');
    }
  });
});
