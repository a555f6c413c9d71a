import { spawn } from 'node:child_process';
import type { TestPostgres } from '../harness/postgres.js';

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run the installed `bulwark` exactly as a user's shell would (argv, env, exit code). */
export function bulwark(bin: string, args: string[], env: Record<string, string | undefined> = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(bin, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });
}

/**
 * Wait until PostgreSQL reports `segment` (or a later one) archived. Fails only after `tries` polls
 * (100 ms apart) without progress: a busy CI machine may archive slowly, but it must keep archiving.
 */
export async function waitArchived(pg: TestPostgres, segment: string, tries = 300): Promise<void> {
  let seen: string | null = null;
  for (let idle = 0; idle < tries; idle++) {
    const [r] = await pg.query<{ last: string | null; failed: string | null }>(
      'select last_archived_wal as last, last_failed_wal as failed from pg_stat_archiver',
    );
    if (r?.last && r.last >= segment) return;
    if (r?.last && r.last !== seen) {
      seen = r.last;
      idle = 0;
    }
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error(`segment ${segment} was not archived (last archived: ${seen ?? 'none'})`);
}

/** Switch to a new WAL segment and wait until the one just closed is archived. */
export async function switchAndArchive(pg: TestPostgres): Promise<string> {
  const [r] = await pg.query<{ seg: string }>('select pg_walfile_name(pg_switch_wal()) as seg');
  await waitArchived(pg, r!.seg);
  return r!.seg;
}

/** postgresql.conf settings of an instance whose archiver runs the installed `bulwark wal push` into `uri`. */
export function archivingSettings(bin: string, uri: string): Record<string, string | number> {
  return {
    wal_level: 'replica',
    archive_mode: 'on',
    archive_command: `'"${bin}" wal push "%p" --repo ''${uri}'''`,
    max_wal_senders: 5,
  };
}

/**
 * `bulwark restore --pgdata DIR ...target --start` on a free port, the copy not archiving into the
 * repository. Pushes DIR onto `started` (the caller stops those servers in afterAll) before it runs.
 */
export async function restoreStarted(
  bin: string,
  uri: string,
  dir: string,
  target: string[],
  started: string[],
): Promise<{ port: number; result: CliResult }> {
  const { freePort } = await import('../../src/lib/net.js');
  const port = await freePort({ below: 32768 });
  started.push(dir);
  const result = await bulwark(bin, [
    'restore',
    '--repo',
    uri,
    '--pgdata',
    dir,
    ...target,
    '--start',
    '--port',
    String(port),
    '--archive-mode',
    'off',
  ]);
  return { port, result };
}

/** Rows of `sql` on the server listening on 127.0.0.1:`port` (a restored copy). */
export async function queryAt(port: number, sql: string): Promise<any[]> {
  const { default: pgLib } = await import('pg');
  const c = new pgLib.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres' });
  await c.connect();
  try {
    return (await c.query(sql)).rows;
  } finally {
    await c.end();
  }
}

/** Stop (immediately) the servers of restored data folders. */
export async function stopServers(dirs: string[]): Promise<void> {
  const { run } = await import('../../src/lib/child.js');
  const { POSTGRES_USER, pgBin } = await import('../../src/lib/postgres.js');
  for (const dir of dirs)
    await run(pgBin('pg_ctl'), ['-D', dir, '-m', 'immediate', 'stop'], { asUser: POSTGRES_USER, check: false });
}
