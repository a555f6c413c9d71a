import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AmbiguousCommitError, createClusterPool } from '../../src/cluster/index.js';
import type { ClusterPool } from '../../src/cluster/pool.js';
import { startTestPostgres, type TestPostgres } from '../harness/postgres.js';
import { waitFor } from './helpers.js';

// Transactions through pool.connect(): a COMMIT whose connection breaks is ambiguous, an earlier
// break is a plain error (nothing committed). One real server; a COMMIT is made to hang by asking for
// a synchronous standby that does not exist, then its backend is terminated.
let pgs: TestPostgres;
let pool: ClusterPool;

beforeAll(async () => {
  // Commits wait for a standby named 'nobody' only where a session asks for synchronous_commit = on.
  pgs = await startTestPostgres({ settings: { synchronous_standby_names: "'nobody'", synchronous_commit: 'local' } });
  await pgs.query('CREATE TABLE t (id int)');
  pool = createClusterPool({ nodes: [pgs.url], writeTimeoutMillis: 2000 });
});
afterAll(async () => {
  await pool?.end();
  await pgs?.destroy();
});

describe('routing pool transactions', () => {
  it('reports a COMMIT cut by a broken connection as AmbiguousCommitError', async () => {
    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      await client.query('INSERT INTO t VALUES (1)');
      await client.query('SET LOCAL synchronous_commit = on');
      const pid = (await client.query('SELECT pg_backend_pid() AS p')).rows[0].p;
      const commit = client.query('COMMIT').catch((e: unknown) => e);
      await waitFor('COMMIT waiting for the standby', async () => {
        const r = await pgs.query('SELECT wait_event FROM pg_stat_activity WHERE pid = $1', [pid]);
        return r[0]?.wait_event === 'SyncRep';
      });
      await pgs.query('SELECT pg_terminate_backend($1)', [pid]);
      const err = await commit;
      expect(err).toBeInstanceOf(AmbiguousCommitError);
      // here it did commit locally: exactly the case a retry would have doubled
      expect((await pgs.query('SELECT count(*)::int AS n FROM t'))[0].n).toBe(1);
    } finally {
      client.release(true);
    }
  });

  it('leaves other errors inside a transaction as they are', async () => {
    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      const err = await client.query('SELECT * FROM no_such_table').catch((e: any) => e);
      expect(err).not.toBeInstanceOf(AmbiguousCommitError);
      expect(err.code).toBe('42P01');
      await client.query('ROLLBACK');
    } finally {
      client.release();
    }
  });
});
