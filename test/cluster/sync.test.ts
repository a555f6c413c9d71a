import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClusterMonitor, createClusterPool, readHistory, requestSwitchover } from '../../src/cluster/index.js';
import type { ClusterPool } from '../../src/cluster/pool.js';
import { freePort } from '../../src/lib/net.js';
import {
  createTestCluster,
  queryNode,
  quietLogger,
  signalNode,
  startWriter,
  type TestCluster,
  waitFor,
  waitHealthy,
  watchSplitBrain,
} from './helpers.js';

// --sync: a writer that never sleeps between commits, kill -9 of the primary, twice; every
// acknowledged commit must be on the new primary.
let c: TestCluster;
let pool: ClusterPool;
let monitor: ClusterMonitor;

beforeAll(async () => {
  c = await createTestCluster({ sync: true });
  monitor = new ClusterMonitor({
    dir: c.dir,
    name: 'sync-monitor',
    intervalMs: 500,
    logger: quietLogger(),
    http: { port: await freePort({ below: 32768 }) },
  });
  await monitor.start();
  pool = createClusterPool({
    nodes: c.spec.nodes.map((n) => c.url(n.name)),
    refreshIntervalMillis: 200,
    writeTimeoutMillis: 30_000,
  });
  await pool.query('CREATE TABLE t (id int PRIMARY KEY)');
});

afterAll(async () => {
  await monitor?.stop().catch(() => {});
  await pool?.end();
  await c?.destroy();
});

describe('synchronous mode', () => {
  it('sets synchronous_standby_names so that commits wait for a replica', async () => {
    const primary = await waitHealthy(c.dir);
    const r = await queryNode(
      c.url(primary),
      "SELECT current_setting('synchronous_standby_names') AS s, (SELECT count(*)::int FROM pg_stat_replication WHERE sync_state IN ('sync','quorum')) AS n",
    );
    expect(r.rows[0].s).toBe('ANY 1 ("node2", "node3")');
    expect(r.rows[0].n).toBeGreaterThanOrEqual(1);
  });

  it('switchover under a no-sleep writer loses no acknowledged write and keeps commits synchronous', async () => {
    const from = await waitHealthy(c.dir, 90_000);
    const to = c.spec.nodes.map((n) => n.name).find((n) => n !== from)!;
    await pool.query('TRUNCATE t');
    const writer = startWriter(pool, 't');
    let entry: Awaited<ReturnType<typeof requestSwitchover>>;
    try {
      await waitFor('writes flowing', async () => writer.acked.length > 300);
      entry = await requestSwitchover(c.dir, to);
      const after = writer.acked.length;
      await waitFor('writes after the switchover', async () => writer.acked.length > after + 100);
    } finally {
      await writer.stop();
    }
    expect(entry).toMatchObject({ kind: 'switchover', from, to });
    const ids = new Set((await queryNode(c.url(to), 'SELECT id FROM t')).rows.map((r) => r.id));
    expect(writer.acked.filter((id) => !ids.has(id))).toEqual([]);
    expect(await waitHealthy(c.dir, 60_000)).toBe(to);
    const r = await queryNode(c.url(to), "SELECT current_setting('synchronous_standby_names') AS s");
    expect(r.rows[0].s).toMatch(/^ANY 1 \(/);
  });

  // Five crashes in a row (the bar): each promoted node is killed in turn after the old one rejoined.
  for (const round of [1, 2, 3, 4, 5]) {
    it(`kill -9 of the primary under a no-sleep writer loses no acknowledged write (crash ${round} of 5)`, async () => {
      const old = await waitHealthy(c.dir, 90_000);
      await waitFor('sync set in place', async () => {
        const r = await queryNode(
          c.url(old),
          "SELECT count(*)::int AS n FROM pg_stat_replication WHERE sync_state IN ('sync','quorum')",
        );
        return r.rows[0].n >= 1;
      });
      await pool.query('TRUNCATE t');
      const split = watchSplitBrain(c.dir);
      const writer = startWriter(pool, 't');
      await waitFor('writes flowing', async () => writer.acked.length > 300);
      const n = readHistory(c.dir).filter((h) => h.kind === 'failover').length;
      signalNode(c.dir, old, 'SIGKILL');
      const before = writer.acked.length;
      await waitFor('failover', async () => readHistory(c.dir).filter((h) => h.kind === 'failover').length === n + 1);
      await waitFor('writes on the new primary', async () => writer.acked.length > before + 100);
      await writer.stop();
      const fo = readHistory(c.dir)
        .filter((h) => h.kind === 'failover')
        .at(-1)!;
      const ids = new Set((await queryNode(c.url(fo.to), 'SELECT id FROM t')).rows.map((r) => r.id));
      const lost = writer.acked.filter((id) => !ids.has(id));
      expect({ acked: writer.acked.length > 400, lost }).toEqual({ acked: true, lost: [] });
      expect(await split.stop()).toEqual([]);
      expect(await waitHealthy(c.dir, 90_000)).toBe(fo.to);
    });
  }
});
