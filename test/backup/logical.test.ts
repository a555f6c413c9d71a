import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { generateIdentity } from 'age-encryption';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type KeyMaterial,
  logicalBackup,
  logicalRestore,
  openStorage,
  Repository,
  verifyBackup,
} from '../../src/backup/index.js';
import { makePostgresOwnedTempDir, startTestPostgres, type TestPostgres } from '../harness/postgres.js';
import { startTestS3, type TestS3 } from '../harness/s3.js';

let pg: TestPostgres;
let s3: TestS3;
let dir: string;

beforeAll(async () => {
  [pg, s3] = await Promise.all([startTestPostgres(), startTestS3()]);
  dir = makePostgresOwnedTempDir('bulwark-logical-');
  await pg.query('create database shop');
  await pg.query(
    `create table orders(id serial primary key, note text, amount numeric);
     insert into orders(note, amount) select 'order ' || g, g * 1.5 from generate_series(1, 5000) g;
     create index on orders(amount);`,
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
  { name: 's3', uri: () => s3.repoUri('logical'), compression: 'gzip' as const, encrypt: true },
];

describe.each(drivers)('logical backup and restore ($name driver)', (d) => {
  let key: KeyMaterial | undefined;
  beforeAll(async () => {
    if (d.encrypt) key = { identity: await generateIdentity() };
  });

  it('round-trips a database: restore into a new database has the same rows; existing target refused without --force', async () => {
    const repo = new Repository(openStorage(d.uri()), key);
    const m = await logicalBackup({
      repo,
      pg: { url: pg.urlFor('shop') },
      encoding: { compression: d.compression, encryption: d.encrypt ? 'age' : 'none' },
    });
    expect(m.kind).toBe('logical');
    expect(m.pg.database).toBe('shop');
    expect(m.objects[0]!.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(m.sizes.stored).toBeLessThan(m.sizes.raw);
    const target = `shop_copy_${d.name}`;
    await logicalRestore({ repo, pg: { url: pg.url }, database: target, jobs: 2 });
    const [row] = await pg.query('select count(*)::int as n, sum(amount)::text as s from orders', [], target);
    expect(row).toEqual({ n: 5000, s: '18753750.0' });
    await expect(logicalRestore({ repo, pg: { url: pg.url }, database: target })).rejects.toMatchObject({
      code: 'BULWARK_E_TARGET_EXISTS',
    });
    await pg.query('delete from orders where id > 10', [], target);
    await logicalRestore({ repo, pg: { url: pg.url }, database: target, force: true });
    const [again] = await pg.query('select count(*)::int as n from orders', [], target);
    expect(again.n).toBe(5000);
  });

  it('verify --restore restores the dump into a throw-away instance and finds the rows', async () => {
    const repo = new Repository(openStorage(d.uri()), key);
    const r = await verifyBackup({ repo, backup: 'latest', restore: true });
    expect(r.problems).toEqual([]);
    expect(r.restore?.checks.join('\n')).toMatch(/shop: 1 table\(s\), 5000 row\(s\) readable/);
    expect(r.restore?.amcheck).toBe('ok');
    expect(r.ok).toBe(true);
  });

  if (d.encrypt) {
    it('an encrypted backup cannot be restored without the key or with another key', async () => {
      const repo = new Repository(openStorage(d.uri()), key);
      await expect(new Repository(openStorage(d.uri())).resolveBackupId('latest')).resolves.toBeTruthy();
      await expect(
        logicalRestore({ repo: new Repository(openStorage(d.uri())), pg: { url: pg.url }, database: 'nokey' }),
      ).rejects.toMatchObject({ code: 'BULWARK_E_ENCRYPTION' });
      const other = new Repository(openStorage(d.uri()), { identity: await generateIdentity() });
      await expect(logicalRestore({ repo: other, pg: { url: pg.url }, database: 'wrongkey' })).rejects.toMatchObject({
        code: 'BULWARK_E_ENCRYPTION',
      });
      expect(repo).toBeTruthy();
    });
  }
});
