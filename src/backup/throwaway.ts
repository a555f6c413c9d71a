import { existsSync } from 'node:fs';
import { chown, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isRoot, run } from '../lib/child.js';
import { freePort } from '../lib/net.js';
import { POSTGRES_USER, pgBin, postgresIds } from '../lib/postgres.js';
import type { PgTarget } from './pg.js';

/**
 * A private scratch folder the postgres user owns (for a throw-away instance of `verify --restore`).
 * Such instances listen on a Unix socket in that folder only (no TCP), with trust auth for it, so
 * nothing else on the host can reach them and no password is needed.
 */
export async function scratchDir(prefix: string): Promise<{ dir: string; remove: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  if (isRoot()) await chown(dir, postgresIds().uid, postgresIds().gid);
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

export const socketOnlySettings = (socketDir: string, port: number): Record<string, string> => ({
  listen_addresses: "''",
  unix_socket_directories: `'${socketDir}'`,
  port: String(port),
  archive_mode: 'off',
  // the copy may come from a large server: keep its memory small, it only answers sanity queries.
  // (max_connections and friends must stay >= the primary's, or recovery refuses to run.)
  shared_buffers: "'64MB'",
});

export async function writeTrustHba(pgdata: string): Promise<void> {
  await run('sh', ['-c', 'cat > "$1"', 'sh', join(pgdata, 'pg_hba.conf')], {
    asUser: POSTGRES_USER,
    input: 'local all all trust\n',
  });
}

export async function socketPort(): Promise<number> {
  return freePort({ below: 32768 });
}

export function socketTarget(socketDir: string, port: number): PgTarget {
  return { url: `postgresql://postgres@${encodeURIComponent(socketDir)}:${port}/postgres` };
}

/** A new empty instance (initdb) for restoring a logical backup into. */
export async function initThrowaway(
  root: string,
): Promise<{ pgdata: string; port: number; stop: () => Promise<void> }> {
  const pgdata = join(root, 'data');
  await run(pgBin('initdb'), ['-D', pgdata, '-A', 'trust', '-U', 'postgres', '--no-sync'], { asUser: POSTGRES_USER });
  const port = await socketPort();
  const conf = Object.entries(socketOnlySettings(root, port))
    .map(([k, v]) => `${k} = ${v}`)
    .join('\n');
  await run('sh', ['-c', 'cat >> "$1"', 'sh', join(pgdata, 'postgresql.conf')], {
    asUser: POSTGRES_USER,
    input: `\n${conf}\n`,
  });
  await run(pgBin('pg_ctl'), ['-D', pgdata, '-l', join(root, 'server.log'), '-w', '-t', '120', 'start'], {
    asUser: POSTGRES_USER,
  });
  return { pgdata, port, stop: () => stopServer(pgdata) };
}

export async function stopServer(pgdata: string): Promise<void> {
  if (!existsSync(join(pgdata, 'postmaster.pid'))) return;
  await run(pgBin('pg_ctl'), ['-D', pgdata, '-m', 'immediate', '-w', 'stop'], { asUser: POSTGRES_USER, check: false });
}
