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
