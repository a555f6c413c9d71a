import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { ClusterMonitor, readHistory } from '../../src/cluster/index.js';
import { findNode, stopNode } from '../../src/cluster/local/cluster.js';
import { clusterPaths } from '../../src/cluster/local/layout.js';
import {
  createTestCluster,
  queryNode,
  quietLogger,
  signalNode,
  type TestCluster,
  waitFor,
  waitHealthy,
  watchSplitBrain,
} from './helpers.js';

// Bug: a crashed replica or primary was never restarted. Fixed: the monitor restarts a crashed node
// in place (a replica always as a replica; the primary only when no failover can be done and nothing
// was promoted); a node stopped cleanly on purpose stays down; a fenced old primary is only rejoined.
const clusters: TestCluster[] = [];
let monitor: ClusterMonitor | undefined;

afterEach(async () => {
  await monitor?.stop().catch(() => {});
  monitor = undefined;
});
afterAll(async () => {
  for (const c of clusters) await c.destroy();
});

const restarts = (dir: string) =>
  existsSync(clusterPaths(dir).history)
    ? readFileSync(clusterPaths(dir).history, 'utf8')
        .split('\n')
        .filter((l) => l.includes('"kind":"restart"'))
        .map((l) => JSON.parse(l))
    : [];

async function startMonitor(dir: string): Promise<ClusterMonitor> {
  const m = new ClusterMonitor({ dir, name: 'restart-monitor', intervalMs: 500, logger: quietLogger() });
  await m.start();
  return m;
}

describe('crashed nodes are restarted in place', () => {
  it('restarts a kill -9 replica as a replica, even with its standby.signal gone, with no failover', async () => {
    const c = await createTestCluster();
    clusters.push(c);
    monitor = await startMonitor(c.dir);
    expect(await waitHealthy(c.dir)).toBe('node1');
    await queryNode(c.url('node1'), 'CREATE TABLE t (id int)');
    const split = watchSplitBrain(c.dir);
    signalNode(c.dir, 'node3', 'SIGKILL');
    await waitFor('node3 back, streaming', async () => {
      const r = await queryNode(
        c.url('node3'),
        "SELECT count(*)::int AS n FROM pg_stat_wal_receiver WHERE status = 'streaming'",
      );
      return r.rows[0].n === 1;
    });
    expect(restarts(c.dir)).toMatchObject([{ node: 'node3', role: 'replica' }]);
    // Without its standby.signal a restarted replica would come up writable: the monitor writes it back.
    await waitFor('node2 streaming', async () => (await waitHealthy(c.dir)) === 'node1');
    signalNode(c.dir, 'node2', 'SIGKILL');
    rmSync(join(clusterPaths(c.dir).dataDir('node2'), 'standby.signal'));
    await waitFor('node2 back', async () => (await queryNode(c.url('node2'), 'SELECT 1 AS one')).rows[0].one === 1);
    const r = await queryNode(c.url('node2'), 'SELECT pg_is_in_recovery() AS r');
    expect(r.rows[0].r).toBe(true);
    expect(await waitHealthy(c.dir)).toBe('node1');
    expect(readHistory(c.dir)).toEqual([]);
    expect(await split.stop()).toEqual([]);
  });

  it('leaves a replica stopped cleanly (on purpose) down', async () => {
    const c = clusters[0]!;
    monitor = await startMonitor(c.dir);
    expect(await waitHealthy(c.dir)).toBe('node1');
    const before = restarts(c.dir).length;
    await stopNode(c.dir, findNode(c.spec, 'node3'));
    await new Promise((r) => setTimeout(r, 4000)); // eight probe rounds
    const down = await queryNode(c.url('node3'), 'SELECT 1').then(
      () => 'up',
      () => 'down',
    );
    expect(down).toBe('down');
    expect(restarts(c.dir).length).toBe(before);
  });

  it('restarts a kill -9 primary in place when there is no replica to promote; acknowledged writes survive', async () => {
    const c = await createTestCluster({ replicas: 0 });
    clusters.push(c);
    monitor = await startMonitor(c.dir);
    await queryNode(c.url('node1'), 'CREATE TABLE t (id int)');
    await queryNode(c.url('node1'), 'INSERT INTO t SELECT generate_series(1, 1000)');
    await waitFor('the monitor sees the primary', async () => monitor!.topology().primary === 'node1');
    signalNode(c.dir, 'node1', 'SIGKILL');
    await waitFor('node1 accepts writes again', async () => {
      await queryNode(c.url('node1'), 'INSERT INTO t VALUES (1001)');
      return true;
    });
    const r = await queryNode(c.url('node1'), 'SELECT count(*)::int AS n, pg_is_in_recovery() AS rec FROM t');
    expect(r.rows[0]).toEqual({ n: 1001, rec: false });
    expect(restarts(c.dir)).toMatchObject([{ node: 'node1', role: 'primary' }]);
    expect(readHistory(c.dir)).toEqual([]);
  });
});
