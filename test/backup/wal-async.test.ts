import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStorage, Repository } from '../../src/backup/index.js';
import { run } from '../../src/lib/child.js';
import { POSTGRES_USER, pgBin } from '../../src/lib/postgres.js';
import { type GlobalInstall, installGlobally } from '../harness/global-install.js';
import { makePostgresOwnedTempDir, startTestPostgres, type TestPostgres } from '../harness/postgres.js';
import { bulwark, waitArchived } from './cli-helpers.js';

// `wal push --async`: a background pusher archives ready segments ahead; archive_command confirms
// from its markers. Runs the globally installed package as archive_command, as the postgres user: the
// checkout itself may sit in a folder postgres cannot enter (a `mktemp -d` clone is 0700).
describe('wal push --async (background pusher)', () => {
  let pg: TestPostgres;
  let work: string;
  let uri: string;
  let install: GlobalInstall;
  const stopDirs: string[] = [];

  beforeAll(async () => {
    install = installGlobally();
    work = makePostgresOwnedTempDir('bulwark-async-');
    uri = `file://${join(work, 'repo')}`;
    // the line users paste: `bulwark wal archive-command --async` prints it
    const line = await bulwark(install.bin, [
      'wal',
      'archive-command',
      '--async',
      '--spool',
      join(work, 'spool'),
      '--repo',
      uri,
    ]);
    expect(line.code, line.stderr).toBe(0);
    const value = /^archive_command = (.*)$/m.exec(line.stdout)![1]!;
    pg = await startTestPostgres({
      settings: { wal_level: 'replica', archive_mode: 'on', archive_command: value, max_wal_senders: 5 },
    });
  });
  afterAll(async () => {
    for (const dir of stopDirs)
      await run(pgBin('pg_ctl'), ['-D', dir, '-m', 'immediate', 'stop'], { asUser: POSTGRES_USER, check: false });
    await pg?.destroy();
    if (work) rmSync(work, { recursive: true, force: true });
    install?.remove();
  });

  it('archives a burst of segments through the pusher, every one verified, and PITR --to-latest replays them', async () => {
    const b = await bulwark(install.bin, ['backup', 'create', '--repo', uri, '--pg', pg.url]);
    expect(b.code, b.stderr).toBe(0);
    await pg.query('create table t(id int primary key, v text)');
    let last = '';
    for (let i = 0; i < 12; i++) {
      await pg.query(
        `insert into t select g, repeat('x', 200) from generate_series(${i * 2000 + 1}, ${(i + 1) * 2000}) g`,
      );
      last = (await pg.query<{ s: string }>('select pg_walfile_name(pg_switch_wal()) as s'))[0]!.s;
    }
    await waitArchived(pg, last);
    const [arch] = await pg.query<{ failed: string }>('select failed_count::text as failed from pg_stat_archiver');
    expect(arch!.failed).toBe('0');
    const spool = join(work, 'spool');
    const log = readFileSync(join(spool, 'pusher.log'), 'utf8');
    expect(log).toMatch(/pusher: 0000000100000000000000\w\w stored/); // the pusher did push ahead
    expect(log).not.toMatch(/pusher: \w{24}: /); // and reported no error
    // every segment PostgreSQL archived is in the repository and reads back with the right hash
    const repo = new Repository(openStorage(uri));
    const wal = (await repo.listWal()).filter((w) => /^[0-9A-F]{24}$/.test(w.name) && w.name <= last);
    expect(wal.length).toBeGreaterThanOrEqual(12);
    for (const w of wal.slice(-3)) expect((await repo.fetchWal(w.name)).length).toBe(16 * 1024 * 1024);
    // markers are consumed by archive_command or dropped by the pusher once the segment is .done
    let left: string[] = [];
    for (let i = 0; i < 100; i++) {
      left = existsSync(join(spool, 'ok')) ? readdirSync(join(spool, 'ok')) : [];
      if (!left.length) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(left).toEqual([]);

    const { freePort } = await import('../../src/lib/net.js');
    const port = await freePort({ below: 32768 });
    const dir = join(work, 'restored');
    stopDirs.push(dir);
    const r = await bulwark(install.bin, [
      'restore',
      '--repo',
      uri,
      '--pgdata',
      dir,
      '--to-latest',
      '--start',
      '--port',
      String(port),
      '--archive-mode',
      'off',
    ]);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    const { default: pgLib } = await import('pg');
    const c = new pgLib.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres' });
    await c.connect();
    try {
      expect((await c.query('select count(*)::int as n from t')).rows[0].n).toBe(24000);
    } finally {
      await c.end();
    }
  });

  it('an age-encrypted physical backup verifies and restores only with its key', async () => {
    const { generateIdentity } = await import('age-encryption');
    const { physicalBackup, verifyBackup } = await import('../../src/backup/index.js');
    const key = { identity: await generateIdentity() };
    const encUri = `file://${join(work, 'repo-encrypted')}`;
    const repo = new Repository(openStorage(encUri), key);
    const m = await physicalBackup({ repo, pg: { url: pg.url }, encoding: { compression: 'zstd', encryption: 'age' } });
    expect(m.objects[0]!.key).toBe('base.tar.zst.age');
    // checksums need no key; the test restore does
    const noKey = await verifyBackup({ repo: new Repository(openStorage(encUri)), backup: m.id });
    expect(noKey.ok).toBe(true);
    const r = await verifyBackup({ repo, backup: m.id, restore: true });
    expect(r.restore?.checks.join('\n')).toMatch(/postgres: 1 table\(s\), 24000 row\(s\) readable/);
    expect(r.ok).toBe(true);
    const wrong = await verifyBackup({
      repo: new Repository(openStorage(encUri), { identity: await generateIdentity() }),
      backup: m.id,
      restore: true,
    });
    expect(wrong.ok).toBe(false);
    expect(wrong.restore?.checks.join('\n')).toMatch(/cannot decrypt/);
  });
});
