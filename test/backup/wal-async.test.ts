import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStorage, Repository } from '../../src/backup/index.js';
import { startRestorePrefetcher } from '../../src/backup/wal.js';
import { restoreCommandFor, selfCommand } from '../../src/cli/commands/backup.js';
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

  it('wal archive-command prints the pusher line by default, the one-push-per-segment line with --sync', async () => {
    const def = await bulwark(install.bin, ['wal', 'archive-command', '--repo', uri]);
    expect(def.code, def.stderr).toBe(0);
    expect(def.stdout).toMatch(/wal push "\$1" --async/);
    expect(def.stdout).toMatch(/rm "\$3\/ok\/\$2"/);
    const sync = await bulwark(install.bin, ['wal', 'archive-command', '--sync', '--repo', uri]);
    expect(sync.code, sync.stderr).toBe(0);
    expect(sync.stdout).toMatch(/wal push "%p" --repo/);
    expect(sync.stdout).not.toMatch(/--async/);
    const both = await bulwark(install.bin, ['wal', 'archive-command', '--sync', '--async', '--repo', uri]);
    expect(both.code).toBe(2);
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

  it('restore_command: the restore prefetcher serves segments, re-reads and "not in the archive" from the shell step; stale markers are not trusted; wal fetch exits 1 only for a missing file', async () => {
    // four archived segments with known content, and a data folder whose backup_label starts at the first
    const walUri = `file://${join(work, 'repo-fetch')}`;
    const repo = new Repository(openStorage(walUri));
    const names = ['10', '11', '12', '13'].map((n) => `0000000100000000000000${n}`);
    const sha = new Map<string, string>();
    for (const name of names) {
      const data = randomBytes(16 * 1024 * 1024);
      sha.set(name, createHash('sha256').update(data).digest('hex'));
      await repo.pushWal(name, data, { compression: 'zstd', encryption: 'none' });
    }
    const pgdata = join(work, 'fetch-pgdata');
    mkdirSync(join(pgdata, 'pg_wal'), { recursive: true });
    writeFileSync(
      join(pgdata, 'backup_label'),
      `START WAL LOCATION: 0/10000028 (file ${names[0]})\nCHECKPOINT LOCATION: 0/10000060\n`,
    );
    await run('chown', ['-R', POSTGRES_USER, pgdata]);
    const spool = join(work, 'fetch-spool');
    // the fallback (starting bulwark) stands in as `exit 99` here, so every answer below is the shell step's
    const line = restoreCommandFor(walUri, 8, spool).replace(selfCommand(), 'sh -c "exit 99" fallback');
    const restoreCommand = (f: string) =>
      run('sh', ['-c', line.replace('%f', f).replace('%p', 'pg_wal/RECOVERYXLOG')], {
        asUser: POSTGRES_USER,
        cwd: pgdata,
        check: false,
      });
    const restored = () =>
      createHash('sha256')
        .update(readFileSync(join(pgdata, 'pg_wal', 'RECOVERYXLOG')))
        .digest('hex');
    const waitFor = async (path: string) => {
      for (let i = 0; i < 200 && !existsSync(path); i++) await new Promise((r) => setTimeout(r, 50));
      expect(existsSync(path), path).toBe(true);
    };
    const prefetcher = await startRestorePrefetcher({ repo, spool, pgdata });
    try {
      // before recovery asks anything: the first segments (from backup_label) and the history answers
      await waitFor(join(spool, 'in', names[0]!));
      await waitFor(join(spool, 'missing', '00000002.history'));
      expect((await restoreCommand('00000002.history')).code).toBe(1);
      for (const name of names) {
        await waitFor(join(spool, 'in', name));
        expect((await restoreCommand(name)).code).toBe(0);
        expect(restored()).toBe(sha.get(name));
      }
      // recovery reads the last segment once more when it ends: served from the second copy
      expect((await restoreCommand(names[3]!)).code).toBe(0);
      expect(restored()).toBe(sha.get(names[3]!));
      // the end of the archive is answered "missing" only from the prefetcher's fresh check
      await waitFor(join(spool, 'missing', '000000010000000000000014'));
      expect((await restoreCommand('000000010000000000000014')).code).toBe(1);
    } finally {
      await prefetcher.stop();
    }
    expect(existsSync(spool)).toBe(false); // a restore's spool goes with it
    // a marker nobody renews (prefetcher gone) is not an answer: the command asks bulwark instead
    mkdirSync(join(spool, 'missing'), { recursive: true });
    writeFileSync(join(spool, 'missing', '000000010000000000000014'), '');
    const old = new Date(Date.now() - 10_000);
    utimesSync(join(spool, 'missing', '000000010000000000000014'), old, old);
    await run('chown', ['-R', POSTGRES_USER, spool]);
    expect((await restoreCommand('000000010000000000000014')).code).toBe(99);
    rmSync(spool, { recursive: true, force: true });

    // `wal fetch` (restore_command's fallback): 0 with the verified file, 1 only for "not in the
    // archive", above 125 for anything else, so PostgreSQL stops instead of ending recovery early
    const dest = join(work, 'fetched');
    const ok = await bulwark(install.bin, ['wal', 'fetch', names[1]!, dest, '--repo', walUri]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(createHash('sha256').update(readFileSync(dest)).digest('hex')).toBe(sha.get(names[1]!));
    rmSync(dest);
    const missing = await bulwark(install.bin, ['wal', 'fetch', '0000000100000000000000FF', dest, '--repo', walUri]);
    expect(missing.code).toBe(1);
    const stored = (await repo.findWal(names[2]!))!;
    const file = join(work, 'repo-fetch', ...stored.key.split('/'));
    const bytes = readFileSync(file);
    bytes[bytes.length >> 1]! ^= 0xff;
    writeFileSync(file, bytes);
    const bad = await bulwark(install.bin, ['wal', 'fetch', names[2]!, dest, '--repo', walUri]);
    expect(bad.code, bad.stderr).toBeGreaterThan(125);
    expect(bad.stderr).toMatch(new RegExp(names[2]!));
    expect(existsSync(dest)).toBe(false);
  });
});
