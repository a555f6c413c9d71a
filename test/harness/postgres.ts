import { execFileSync } from 'node:child_process';
import { chownSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { isRoot, run } from '../../src/lib/child.js';
import { freePort } from '../../src/lib/net.js';
import { POSTGRES_USER, pgBin } from '../../src/lib/postgres.js';

export interface TestPostgres {
  port: number;
  /** Folder that holds `data/` (the PGDATA) and anything else the test wants to keep beside it. */
  root: string;
  dataDir: string;
  url: string;
  urlFor(database: string): string;
  query<T extends pg.QueryResultRow = any>(text: string, values?: unknown[], database?: string): Promise<T[]>;
  start(): Promise<void>;
  stop(mode?: 'fast' | 'immediate'): Promise<void>;
  /** Stop the server (if running) and delete its folder. Always safe to call. */
  destroy(): Promise<void>;
}

function uid(user: string): { uid: number; gid: number } {
  const out = execFileSync('id', ['-u', user], { encoding: 'utf8' }).trim();
  const gid = execFileSync('id', ['-g', user], { encoding: 'utf8' }).trim();
  return { uid: Number(out), gid: Number(gid) };
}

/** A folder the postgres user owns (mkdtemp makes 0700 folders owned by us). */
export function makePostgresOwnedTempDir(prefix = 'bulwark-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  if (isRoot()) {
    const { uid: u, gid } = uid(POSTGRES_USER);
    chownSync(dir, u, gid);
  }
  return dir;
}

/**
 * A throw-away PostgreSQL instance: initdb into a temp folder, trust auth on 127.0.0.1, a free port
 * below 32768, run as `postgres` when we are root. Call destroy() in afterAll.
 */
export async function startTestPostgres(
  options: { settings?: Record<string, string | number>; initdbArgs?: string[] } = {},
): Promise<TestPostgres> {
  const root = makePostgresOwnedTempDir();
  const dataDir = join(root, 'data');
  const asUser = POSTGRES_USER;
  await run(
    pgBin('initdb'),
    ['-D', dataDir, '-A', 'trust', '-U', 'postgres', '--no-sync', ...(options.initdbArgs ?? [])],
    {
      asUser,
    },
  );
  const port = await freePort({ below: 32768 });
  const settings: Record<string, string | number> = {
    listen_addresses: "'127.0.0.1'",
    port,
    unix_socket_directories: `'${root}'`,
    fsync: 'off',
    shared_buffers: "'32MB'",
    max_connections: 50,
    ...options.settings,
  };
  const conf = Object.entries(settings)
    .map(([k, v]) => `${k} = ${v}`)
    .join('\n');
  await run('sh', ['-c', `cat >> '${join(dataDir, 'postgresql.conf')}'`], { asUser, input: `\n${conf}\n` });
  let running = false;
  const url = `postgresql://postgres@127.0.0.1:${port}/postgres`;
  const instance: TestPostgres = {
    port,
    root,
    dataDir,
    url,
    urlFor: (db) => `postgresql://postgres@127.0.0.1:${port}/${db}`,
    async query(text, values, database = 'postgres') {
      const client = new pg.Client({ connectionString: instance.urlFor(database) });
      await client.connect();
      try {
        return (await client.query(text, values as any[])).rows;
      } finally {
        await client.end();
      }
    },
    async start() {
      await run(pgBin('pg_ctl'), ['-D', dataDir, '-l', join(root, 'server.log'), '-w', '-t', '60', 'start'], {
        asUser,
      });
      running = true;
    },
    async stop(mode = 'fast') {
      if (!running) return;
      await run(pgBin('pg_ctl'), ['-D', dataDir, '-m', mode, '-w', 'stop'], { asUser, check: false });
      running = false;
    },
    async destroy() {
      await instance.stop('immediate').catch(() => {});
      rmSync(root, { recursive: true, force: true });
    },
  };
  await instance.start();
  return instance;
}
