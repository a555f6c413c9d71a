import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../src/lib/child.js';
import { freePort } from '../../src/lib/net.js';
import { type GlobalInstall, installGlobally } from '../harness/global-install.js';
import { makePostgresOwnedTempDir, startTestPostgres, type TestPostgres } from '../harness/postgres.js';
import { startTestS3, type TestS3 } from '../harness/s3.js';
import { archivingSettings, bulwark, type CliResult, queryAt, stopServers, switchAndArchive } from './cli-helpers.js';

// Issue 9: every path that used to end with exit 0 and missing commits (or a misleading answer) must
// fail loudly. End to end as a user runs it: the packed package installed globally, PostgreSQL 15's
// archiver calling `bulwark wal push`, restores through `bulwark restore` and `bulwark wal fetch`.
let install: GlobalInstall;
let s3: TestS3;
let work: string;
let pg: TestPostgres;
let repoDir: string;
let uri: string;
const stopDirs: string[] = [];

beforeAll(async () => {
  [install, s3] = await Promise.all([Promise.resolve().then(installGlobally), startTestS3()]);
  work = makePostgresOwnedTempDir('bulwark-loss-');
  repoDir = join(work, 'repo');
  uri = `file://${repoDir}`;
  pg = await startTestPostgres({ settings: archivingSettings(install.bin, uri) });
  await pg.query('create table marker(id serial primary key, note text not null)');
  await pg.query(`create table filler as select g as id, md5(g::text) as v from generate_series(1, 20000) g`);
  const b = await bulwark(install.bin, ['backup', 'create', '--repo', uri, '--pg', pg.url]);
  expect(b.code, b.stderr).toBe(0);
}, 300_000);
afterAll(async () => {
  await stopServers(stopDirs);
  await pg?.destroy();
  await s3?.stop();
  install?.remove();
  if (work) rmSync(work, { recursive: true, force: true });
});

/** `bulwark restore --pgdata DIR ...args --start` on a free port; DIR is stopped in afterAll. */
async function restoreAt(repo: string, dir: string, args: string[]): Promise<{ port: number; r: CliResult }> {
  const port = await freePort({ below: 32768 });
  stopDirs.push(dir);
  const r = await bulwark(install.bin, [
    'restore',
    '--repo',
    repo,
    '--pgdata',
    dir,
    ...args,
    '--start',
    '--port',
    String(port),
  ]);
  return { port, r };
}

/** A copy of the primary's repository a test may damage (cp -a keeps the postgres owner). */
function copyRepo(name: string): { dir: string; uri: string } {
  const dir = join(work, name);
  execFileSync('cp', ['-a', repoDir, dir]);
  return { dir, uri: `file://${dir}` };
}

/** The stored file of an archived WAL segment in a file:// repository. */
function walFile(repo: string, segment: string): string {
  const folder = join(repo, 'wal', segment.slice(0, 16));
  const f = readdirSync(folder).find((n) => n.startsWith(`${segment}-`));
  if (!f) throw new Error(`${segment} is not archived in ${repo}`);
  return join(folder, f);
}

async function insertAndSwitch(note: string): Promise<string> {
  await pg.query('insert into marker(note) values ($1)', [note]);
  return switchAndArchive(pg);
}

describe('issue 9: backups never lose data silently', () => {
  it('restore --to-latest over a WAL gap stops naming the missing segment (exit 1) unless --accept-wal-gap', async () => {
    await insertAndSwitch('gap: before');
    const lost = await insertAndSwitch('gap: in the missing segment');
    await insertAndSwitch('gap: after');
    const gap = copyRepo('repo-gap');
    rmSync(walFile(gap.dir, lost));

    const dir = join(work, 'gap');
    const { r } = await restoreAt(gap.uri, dir, ['--to-latest']);
    expect(r.code, r.stderr + r.stdout).toBe(1);
    expect(r.stderr).toContain(lost);
    expect(r.stderr).toMatch(/missing/);
    expect(r.stderr).toMatch(/--accept-wal-gap/);

    // explicitly accepted: restores up to the gap and says what it lost
    const { port, r: ok } = await restoreAt(gap.uri, join(work, 'gap-accepted'), ['--to-latest', '--accept-wal-gap']);
    expect(ok.code, ok.stderr + ok.stdout).toBe(0);
    expect(ok.stderr).toContain(lost);
    const notes = (await queryAt(port, 'select note from marker order by id')).map((x) => x.note);
    expect(notes).toContain('gap: before');
    expect(notes).not.toContain('gap: after');
  });

  it('a restored copy does not archive into the source repository unless asked, and restores stay on the backup timeline', async () => {
    await insertAndSwitch('tli: before the copy');
    // the README's test restore, with nothing but the defaults
    const { port: copyPort, r } = await restoreAt(uri, join(work, 'copy-default'), ['--to-latest']);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    const [{ archive_mode }] = await queryAt(copyPort, 'show archive_mode');
    expect(archive_mode).toBe('off');

    // asked for: a copy that keeps archiving puts timeline 2 into the repository
    const { port: asked, r: r2 } = await restoreAt(uri, join(work, 'copy-archiving'), [
      '--to-latest',
      '--archive-mode',
      'preserve',
    ]);
    expect(r2.code, r2.stderr + r2.stdout).toBe(0);
    await queryAt(asked, `create table copy_only as select 1 as x`);
    await queryAt(asked, 'select pg_switch_wal()');
    for (let i = 0; i < 300 && !existsSync(join(repoDir, 'wal', '0000000200000000')); i++)
      await new Promise((res) => setTimeout(res, 100));
    expect(existsSync(join(repoDir, 'wal', '0000000200000000'))).toBe(true);
    await stopServers([join(work, 'copy-default'), join(work, 'copy-archiving')]);

    // the primary goes on on timeline 1
    await pg.query('create table after_copy as select 42 as answer');
    await insertAndSwitch('tli: after the copy');
    const [want] = await pg.query('select count(*)::int as n, max(id) as m from marker');

    // default: the backup's own timeline (PostgreSQL's "current"), every primary commit is there
    const { port, r: r3 } = await restoreAt(uri, join(work, 'tli-current'), ['--to-latest']);
    expect(r3.code, r3.stderr + r3.stdout).toBe(0);
    const [got] = await queryAt(port, 'select count(*)::int as n, max(id) as m from marker');
    expect(got).toEqual(want);
    expect(await queryAt(port, 'select answer from after_copy')).toEqual([{ answer: 42 }]);

    // asked for: follow the newest timeline (the copy's)
    const { port: p4, r: r4 } = await restoreAt(uri, join(work, 'tli-latest'), [
      '--to-latest',
      '--target-timeline',
      'latest',
    ]);
    expect(r4.code, r4.stderr + r4.stdout).toBe(0);
    expect(await queryAt(p4, 'select x from copy_only')).toEqual([{ x: 1 }]);
    const bad = await bulwark(install.bin, [
      'restore',
      '--repo',
      uri,
      '--pgdata',
      join(work, 'x'),
      '--target-timeline',
      'newest',
    ]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--target-timeline/);

    // info and verify show the timelines and their history
    const info = await bulwark(install.bin, ['backup', 'info', 'latest', '--repo', uri]);
    expect(info.code, info.stderr).toBe(0);
    expect(info.stdout).toMatch(/timeline\s+1\b/);
    expect(info.stdout).toMatch(/timelines\s+.*2 \(from 1 at [0-9A-F]+\/[0-9A-F]+\)/);
    const v = await bulwark(install.bin, ['backup', 'verify', 'latest', '--repo', uri]);
    expect(v.code, v.stderr + v.stdout).toBe(0);
    expect(v.stdout).toMatch(/timeline 2 \(from 1 at [0-9A-F]+\/[0-9A-F]+\)/);
  });

  it('wal fetch from an unreachable repository exits 126 (stop recovery), never 1 (not in the archive)', async () => {
    const dest = join(work, 'fetched');
    const seg = '000000010000000000000003';
    const missingFolder = await bulwark(install.bin, ['wal', 'fetch', seg, dest, '--repo', `file://${work}/no-such`]);
    expect(missingFolder.code, missingFolder.stderr).toBe(126);
    expect(missingFolder.stderr).toMatch(/does not exist/);
    // an empty folder (a mount point with nothing mounted) holds no repository either
    mkdirSync(join(work, 'empty-mount'));
    const empty = await bulwark(install.bin, ['wal', 'fetch', seg, dest, '--repo', `file://${work}/empty-mount`]);
    expect(empty.code, empty.stderr).toBe(126);
    // restore_command's form, through the prefetcher
    const spool = join(work, 'spool-unreachable');
    const pre = await bulwark(install.bin, [
      'wal',
      'fetch',
      seg,
      dest,
      '--prefetch',
      '2',
      '--spool',
      spool,
      '--repo',
      `file://${work}/no-such`,
    ]);
    expect(pre.code, pre.stderr).toBe(126);
    // S3: nothing listening, and a bucket that does not exist
    const closed = await freePort({ below: 32768 });
    const down = await bulwark(install.bin, [
      'wal',
      'fetch',
      seg,
      dest,
      '--repo',
      `s3://bulwark-test/x?endpoint=http://127.0.0.1:${closed}&forcePathStyle=true`,
    ]);
    expect(down.code, down.stderr).toBe(126);
    expect(down.stderr).toMatch(/unreachable/);
    const noBucket = await bulwark(install.bin, [
      'wal',
      'fetch',
      seg,
      dest,
      '--repo',
      `s3://no-such-bucket/x?endpoint=${s3.endpoint}&forcePathStyle=true`,
    ]);
    expect(noBucket.code, noBucket.stderr).toBe(126);
    // and a segment that is really not archived is still exit 1
    const notThere = await bulwark(install.bin, ['wal', 'fetch', '0000000100000000000000FE', dest, '--repo', uri]);
    expect(notThere.code, notThere.stderr).toBe(1);
  });

  it('backup verify checks every archived WAL segment in range against its SHA-256 and names the bad one', async () => {
    const seg = await insertAndSwitch('verify: flipped');
    const bad = copyRepo('repo-flipped');
    const file = walFile(bad.dir, seg);
    const bytes = readFileSync(file);
    bytes[Math.floor(bytes.length / 2)]! ^= 0x01;
    writeFileSync(file, bytes);
    const good = await bulwark(install.bin, ['backup', 'verify', 'latest', '--repo', uri]);
    expect(good.code, good.stderr + good.stdout).toBe(0);
    const r = await bulwark(install.bin, ['backup', 'verify', 'latest', '--repo', bad.uri]);
    expect(r.code, r.stderr + r.stdout).toBe(1);
    expect(r.stdout + r.stderr).toContain(seg);
  });

  it('restore --database of a physical backup is refused (exit 2) and touches nothing', async () => {
    const dir = join(work, 'db-physical');
    const r = await bulwark(install.bin, ['restore', '--repo', uri, '--pgdata', dir, '--database', 'app']);
    expect(r.code, r.stderr + r.stdout).toBe(2);
    expect(r.stderr).toMatch(/--database/);
    expect(existsSync(dir)).toBe(false);
  });

  it('two backup create at once: one takes the repository lock, the other fails naming it; kill -9 leaves a stale lock and temp files that the next run and expire --orphan-age clean up', async () => {
    // enough data that a backup lasts a moment
    await pg.query(
      `create table bulk as select g as id, md5(random()::text) || md5(random()::text) as v from generate_series(1, 600000) g`,
    );
    const args = ['backup', 'create', '--repo', uri, '--pg', pg.url];
    const [a, b] = await Promise.all([bulwark(install.bin, args), bulwark(install.bin, args)]);
    const codes = [a.code, b.code].sort();
    expect(codes, a.stderr + b.stderr).toEqual([0, 1]);
    const loser = a.code === 1 ? a : b;
    expect(loser.stderr).toMatch(/repository is locked by backup create \(pid \d+ on /);

    // kill -9 in the middle of the upload
    const child = spawn(install.bin, args, { stdio: 'ignore' });
    const tmpFiles = () =>
      readdirSync(join(repoDir, 'backups'), { recursive: true })
        .map(String)
        .filter((f) => f.includes('.bulwark-tmp-'));
    for (let i = 0; i < 3000 && !tmpFiles().length; i++) await new Promise((res) => setTimeout(res, 10));
    expect(tmpFiles().length).toBeGreaterThan(0);
    const kids = readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8')
      .trim()
      .split(/\s+/)
      .filter(Boolean);
    process.kill(child.pid!, 'SIGKILL');
    for (const k of kids) {
      try {
        process.kill(Number(k), 'SIGKILL');
      } catch {}
    }
    await new Promise((res) => child.on('close', res));
    expect(tmpFiles().length).toBeGreaterThan(0);

    // the dead holder's lock does not block the next backup
    const next = await bulwark(install.bin, args);
    expect(next.code, next.stderr).toBe(0);
    expect(next.stderr).toMatch(/stale lock/);

    const expire = await bulwark(install.bin, [
      'backup',
      'expire',
      '--keep-last',
      '10',
      '--orphan-age',
      '0s',
      '--repo',
      uri,
    ]);
    expect(expire.code, expire.stderr).toBe(0);
    expect(tmpFiles()).toEqual([]);
    const leftovers = readdirSync(repoDir, { recursive: true })
      .map(String)
      .filter((f) => f.includes('.bulwark-tmp-'));
    expect(leftovers).toEqual([]);
    await pg.query('drop table bulk');
  });

  it('errors name the cause: a full repository says "no space left on device", an unreachable S3 says so', async () => {
    const full = join(work, 'full');
    mkdirSync(full);
    await run('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', full]);
    try {
      const r = await bulwark(install.bin, ['backup', 'create', '--repo', `file://${full}`, '--pg', pg.url]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/no space left on device/i);
      expect(r.stderr).not.toMatch(/kB \(\d+%\)/);
      const seg = join(work, '0000000900000000000000A1');
      writeFileSync(seg, Buffer.from(Array.from({ length: 16 * 1024 * 1024 }, () => Math.floor(Math.random() * 256))));
      const w = await bulwark(install.bin, ['wal', 'push', seg, '--repo', `file://${full}`]);
      expect(w.code).toBe(1);
      expect(w.stderr).toMatch(/no space left on device/i);
    } finally {
      await run('umount', [full], { check: false });
    }
    const closed = await freePort({ below: 32768 });
    const down = `s3://bulwark-test/x?endpoint=http://127.0.0.1:${closed}&forcePathStyle=true`;
    const b = await bulwark(install.bin, ['backup', 'create', '--repo', down, '--pg', pg.url]);
    expect(b.code).toBe(1);
    expect(b.stderr).toMatch(/S3 endpoint http:\/\/127\.0\.0\.1:\d+ unreachable/);
    expect(b.stderr).not.toMatch(/kB \(\d+%\)/);
    expect(statSync(full).isDirectory()).toBe(true);
  });
});

describe('issue 9 on the S3 driver: lock, WAL content check, WAL gap', () => {
  let spg: TestPostgres;
  let suri: string;
  beforeAll(async () => {
    suri = s3.repoUri('loss/cluster1');
    spg = await startTestPostgres({ settings: archivingSettings(install.bin, suri) });
    await spg.query('create table marker(id serial primary key, note text not null)');
  });
  afterAll(async () => {
    await spg?.destroy();
  });
  const storage = async () => (await import('../../src/backup/storage/index.js')).openStorage(suri);
  const walKey = async (segment: string) => {
    const k = (await (await storage()).list(`wal/${segment.slice(0, 16)}/`)).find((o) =>
      o.key.includes(`/${segment}-`),
    );
    if (!k) throw new Error(`${segment} not archived in ${suri}`);
    return k.key;
  };
  const note = async (n: string) => {
    await spg.query('insert into marker(note) values ($1)', [n]);
    return switchAndArchive(spg);
  };

  it('two backup create at once on S3: never both at the same time; a create that finds the lock held names its holder', async () => {
    const args = ['backup', 'create', '--repo', suri, '--pg', spg.url];
    type Listed = { id: string; startedAt: string; stoppedAt: string };
    const listed = async () =>
      JSON.parse((await bulwark(install.bin, ['backup', 'list', '--repo', suri, '--json'])).stdout) as Listed[];
    // s3rver removes a folder when its last object goes and can then fail a concurrent PUT into it
    // (ENOENT inside s3rver, in this test process); real S3 has no folders. Keep one object under
    // locks/ that is not a lock (the lock reads only *.json).
    await (await storage()).put('locks/keep', 'not a lock\n');
    const before = new Set((await listed()).map((l) => l.id));
    const [a, b] = await Promise.all([bulwark(install.bin, args), bulwark(install.bin, args)]);
    const codes = [a.code, b.code].sort();
    if (codes[0] === 0 && codes[1] === 1) {
      expect((a.code === 1 ? a : b).stderr).toMatch(/repository is locked by backup create \(pid \d+ on /);
    } else {
      // This small database backs up in about a second: on a loaded machine the second process may
      // only reach the lock after the first released it. Then both succeed, but one after the other.
      expect(codes, a.stderr + b.stderr).toEqual([0, 0]);
      const added = (await listed()).filter((l) => !before.has(l.id));
      expect(added).toHaveLength(2);
      added.sort((x, y) => Date.parse(x.startedAt) - Date.parse(y.startedAt));
      expect(Date.parse(added[0]!.stoppedAt)).toBeLessThanOrEqual(Date.parse(added[1]!.startedAt));
    }
    // Held for sure: the lock taken here, as a running backup create holds it.
    const { acquireRepoLock } = await import('../../src/backup/lock.js');
    const held = await acquireRepoLock(
      { storage: await storage(), description: suri } as unknown as Parameters<typeof acquireRepoLock>[0],
      'backup create',
    );
    try {
      const r = await bulwark(install.bin, args);
      expect(r.code, r.stderr).toBe(1);
      expect(r.stderr).toMatch(new RegExp(`repository is locked by backup create \\(pid ${process.pid} on `));
    } finally {
      await held.release();
    }
  });

  it('verify names a corrupted WAL object on S3, and a restore to latest refuses a gap there', async () => {
    await note('s3: before');
    const lost = await note('s3: lost');
    await note('s3: after');
    const st = await storage();
    const key = await walKey(lost);
    const chunks: Buffer[] = [];
    for await (const c of await st.get(key)) chunks.push(c as Buffer);
    const original = Buffer.concat(chunks);
    const flipped = Buffer.from(original);
    flipped[Math.floor(flipped.length / 2)]! ^= 0x01;
    await st.put(key, flipped);
    const v = await bulwark(install.bin, ['backup', 'verify', 'latest', '--repo', suri]);
    expect(v.code, v.stdout + v.stderr).toBe(1);
    expect(v.stdout + v.stderr).toContain(lost);

    await st.delete([key]);
    const { r } = await (async () => {
      const dir = join(work, 's3-gap');
      const port = await freePort({ below: 32768 });
      stopDirs.push(dir);
      const r = await bulwark(install.bin, [
        'restore',
        '--repo',
        suri,
        '--pgdata',
        dir,
        '--to-latest',
        '--start',
        '--port',
        String(port),
      ]);
      return { r };
    })();
    expect(r.code, r.stderr + r.stdout).toBe(1);
    expect(r.stderr).toContain(lost);
    expect(r.stderr).toMatch(/--accept-wal-gap/);
    await st.put(key, original);
  });
});
