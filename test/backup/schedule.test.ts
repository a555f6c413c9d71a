import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStorage, Repository, startSchedule } from '../../src/backup/index.js';
import { startTestPostgres, type TestPostgres } from '../harness/postgres.js';
import { bulwark } from './cli-helpers.js';

describe('schedule (jobs with injected bodies)', () => {
  it('never overlaps a job with itself, counts skipped runs, posts failures to the webhook and exports metrics', async () => {
    const posts: unknown[] = [];
    const hook = createServer((req, res) => {
      let body = '';
      req.on('data', (d) => {
        body += d;
      });
      req.on('end', () => {
        posts.push(JSON.parse(body));
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => hook.listen(0, '127.0.0.1', r));
    const addr = hook.address() as { port: number };
    let concurrent = 0;
    let maxConcurrent = 0;
    let slowRuns = 0;
    const s = await startSchedule({
      webhook: `http://127.0.0.1:${addr.port}/hook`,
      metricsPort: 0,
      maxRuns: 2,
      jobs: [
        {
          name: 'backup',
          cron: '* * * * * *',
          // longer than the 1 s period: the next tick must be skipped, not queued or run beside it
          run: async () => {
            concurrent++;
            maxConcurrent = Math.max(maxConcurrent, concurrent);
            await new Promise((r) => setTimeout(r, 2200));
            concurrent--;
            slowRuns++;
            return { sizeBytes: 1234 };
          },
        },
        {
          name: 'verify',
          cron: '* * * * * *',
          run: async () => {
            throw new Error('object backups/x/base.tar.zst corrupted');
          },
        },
      ],
    });
    try {
      await s.done;
      expect(slowRuns).toBe(2);
      expect(maxConcurrent).toBe(1);
      expect(posts.length).toBe(2);
      expect(posts[0]).toMatchObject({ job: 'verify', error: 'object backups/x/base.tar.zst corrupted' });
      const text = await (await fetch(s.metricsUrl!)).text();
      expect(text).toMatch(/bulwark_backup_job_runs_total\{job="backup",result="success"\} 2/);
      expect(text).toMatch(/bulwark_backup_job_runs_total\{job="verify",result="failure"\} 2/);
      expect(text).toMatch(/bulwark_backup_job_last_size_bytes\{job="backup"\} 1234/);
      expect(text).toMatch(/bulwark_backup_job_last_success_timestamp_seconds\{job="backup"\} \d+/);
      const skipped = Number(/bulwark_backup_job_skipped_total\{job="backup"\} (\d+)/.exec(text)?.[1] ?? 0);
      expect(skipped).toBeGreaterThan(0);
    } finally {
      await s.stop();
      hook.close();
    }
  });

  it('rejects an invalid cron expression naming the job', async () => {
    await expect(
      startSchedule({ jobs: [{ name: 'expire', cron: 'every day', run: async () => undefined }] }),
    ).rejects.toThrow(/job expire: invalid cron "every day"/);
  });
});

describe('bulwark schedule (CLI, config file)', () => {
  let pg: TestPostgres;
  let dir: string;
  beforeAll(async () => {
    pg = await startTestPostgres();
    dir = mkdtempSync(join(tmpdir(), 'bulwark-sched-'));
  });
  afterAll(async () => {
    await pg?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it('runs the configured backup job from bulwark.config.ts and stores a backup', async () => {
    const repo = `file://${join(dir, 'repo')}`;
    writeFileSync(
      join(dir, 'bulwark.config.ts'),
      `export default { backup: { repo: ${JSON.stringify(repo)}, pg: ${JSON.stringify(pg.url)}, compression: 'gzip',
         schedule: { backup: { cron: '* * * * * *', kind: 'logical' } } } };\n`,
    );
    const main = resolve(import.meta.dirname, '../../dist/cli/main.js');
    const r = await bulwark(process.execPath, [
      main,
      'schedule',
      '--config',
      join(dir, 'bulwark.config.ts'),
      '--max-runs',
      '1',
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/schedule: backup succeeded/);
    const list = await new Repository(openStorage(repo)).listBackups();
    expect(list.map((m) => [m.kind, m.encoding.compression])).toEqual([['logical', 'gzip']]);
  });

  it('a bad config key is one line naming the file and key, exit 2', async () => {
    writeFileSync(
      join(dir, 'bad.config.ts'),
      `export default { backup: { repo: 'file:///tmp/x', retention: { keepLast: 0 } } };\n`,
    );
    const main = resolve(import.meta.dirname, '../../dist/cli/main.js');
    const r = await bulwark(process.execPath, [main, 'backup', 'list', '--config', join(dir, 'bad.config.ts')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/bad\.config\.ts: backup\.retention\.keepLast/);
  });

  it('restore flags are checked before the repository is touched: a bad target is exit 2 naming the flag', async () => {
    const main = resolve(import.meta.dirname, '../../dist/cli/main.js');
    const repo = `file://${join(dir, 'nothing-here')}`;
    const bad = await bulwark(process.execPath, [
      main,
      'restore',
      '--pgdata',
      join(dir, 'x'),
      '--to-time',
      'yesterday-ish',
      '--repo',
      repo,
    ]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--to-time: "yesterday-ish" is not a timestamp/);
    const two = await bulwark(process.execPath, [
      main,
      'restore',
      '--pgdata',
      join(dir, 'x'),
      '--to-lsn',
      '0/1',
      '--to-xid',
      '9',
      '--repo',
      repo,
    ]);
    expect(two.code).toBe(2);
    const noRepo = await bulwark(process.execPath, [main, 'backup', 'list'], { BULWARK_REPO: undefined });
    expect(noRepo.code).toBe(2);
    expect(noRepo.stderr).toMatch(/no backup repository: pass --repo/);
  });

  it('--log-format json turns stderr into one JSON object per line (no secret in it)', async () => {
    const main = resolve(import.meta.dirname, '../../dist/cli/main.js');
    const repo = `file://${join(dir, 'repo-json')}`;
    const url = pg.url.replace('postgres@', 'postgres:s3cret-pw@');
    const r = await bulwark(process.execPath, [
      main,
      'backup',
      'create',
      '--kind',
      'logical',
      '--repo',
      repo,
      '--pg',
      url,
      '--log-format',
      'json',
    ]);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stderr.trim().split('\n').filter(Boolean);
    expect(lines.length).toBeGreaterThan(0);
    for (const l of lines) expect(JSON.parse(l)).toHaveProperty('msg');
    expect(r.stderr + r.stdout).not.toContain('s3cret-pw');
    expect(r.stdout).toMatch(/backup \S+-L complete/);
  });
});
