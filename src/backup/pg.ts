import type pg from 'pg';
import { parse } from 'pg-connection-string';

/**
 * How the backup commands reach PostgreSQL: a connection URL, or nothing (then libpq's PG* variables,
 * which both `pg` and the PostgreSQL programs read). Children get the URL as PG* variables, never as
 * an argument, so a password never shows in `ps`.
 */
export interface PgTarget {
  url?: string;
}

export function pgEnv(target: PgTarget, base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const env = { ...base };
  if (!target.url) return env;
  const c = parse(target.url);
  const set = (k: string, v: string | number | null | undefined | boolean) => {
    if (v !== undefined && v !== null && v !== '') env[k] = String(v);
  };
  set('PGHOST', c.host);
  set('PGPORT', c.port);
  set('PGUSER', c.user);
  set('PGPASSWORD', c.password);
  set('PGDATABASE', c.database);
  // (a socket-folder host like %2Ftmp%2Fx is not a WHATWG URL host, so read the query by hand)
  const query = target.url.includes('?') ? target.url.slice(target.url.indexOf('?') + 1) : '';
  set('PGSSLMODE', new URLSearchParams(query).get('sslmode'));
  return env;
}

/** A client for `target`, optionally on another database of the same server. */
export async function connect(target: PgTarget, database?: string): Promise<pg.Client> {
  const env = pgEnv(target);
  const { default: pgLib } = await import('pg');
  const client = new pgLib.Client({
    host: env.PGHOST,
    port: env.PGPORT ? Number(env.PGPORT) : undefined,
    user: env.PGUSER,
    password: env.PGPASSWORD,
    database: database ?? env.PGDATABASE,
    connectionTimeoutMillis: 10_000,
  });
  await client.connect();
  return client;
}

export async function withClient<T>(target: PgTarget, fn: (c: pg.Client) => Promise<T>, database?: string): Promise<T> {
  const c = await connect(target, database);
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => {});
  }
}

export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}
