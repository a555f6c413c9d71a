import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClusterMonitor, createClusterPool, readHistory } from '../../src/cluster/index.js';
import { readState } from '../../src/cluster/local/cluster.js';
import type { ClusterPool } from '../../src/cluster/pool.js';
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

// --sync, a sync replica that dies (a hung host: SIGSTOP, so nothing can restart it), then the primary
// dies too (kill -9). Bug: the dead replica stayed in synchronous_standby_names and in the recorded sync
// set, and the monitor waited for it forever: no failover ever. Fixed: it leaves the set once the
// remaining replica provably holds every acknowledged commit, and the healthy replica is promoted.
let c: TestCluster;
let pool: ClusterPool;
let monitor: ClusterMonitor;
let frozen: number[] = [];

beforeAll(async () => {
  c = await createTestCluster({ sync: true });
  monitor = new ClusterMonitor({ dir: c.dir, name: 'sync-dead-replica', intervalMs: 500, logger: quietLogger() });
  await monitor.start();
  pool = createClusterPool({
    nodes: c.spec.nodes.map((n) => c.url(n.name)),
    refreshIntervalMillis: 200,
    writeTimeoutMillis: 60_000,
  });
  await pool.query('CREATE TABLE t (id int PRIMARY KEY)');
});

afterAll(async () => {
  for (const pid of frozen) {
    try {
      process.kill(pid, 'SIGCONT');
    } catch {
      // gone
    }
  }
  await monitor?.stop().catch(() => {});
  await pool?.end();
  await c?.destroy();
});

describe('sync mode: a dead sync replica, then a dead primary', () => {
  it('promotes the healthy replica (the dead one left the sync set) and loses no acknowledged write', async () => {
    expect(await waitHealthy(c.dir)).toBe('node1');
    await waitFor('the sync set in force', async () => {
      const r = await queryNode(c.url('node1'), "SELECT current_setting('synchronous_standby_names') AS s");
      return r.rows[0].s === 'ANY 1 ("node2", "node3")';
    });
    const split = watchSplitBrain(c.dir);
    const writer = startWriter(pool, 't');
    try {
      await waitFor('writes flowing', async () => writer.acked.length > 200);
      frozen = signalNode(c.dir, 'node3', 'SIGSTOP');
      const afterFreeze = writer.acked.length;
      await waitFor('writes while node3 is dead', async () => writer.acked.length > afterFreeze + 200);
      await waitFor(
        'the monitor to record that node3 left the synchronous set',
        async () => JSON.stringify(readState(c.dir)?.syncSet) === JSON.stringify(['node2']),
        30_000,
      );
      const r = await queryNode(c.url('node1'), "SELECT current_setting('synchronous_standby_names') AS s");
      expect(r.rows[0].s).toBe('ANY 1 ("node2")');
      const beforeKill = writer.acked.length;
      await waitFor('more writes', async () => writer.acked.length > beforeKill + 100);
      signalNode(c.dir, 'node1', 'SIGKILL');
      const killedAt = writer.acked.length;
      await waitFor(
        'a failover to node2',
        async () => readHistory(c.dir).some((h) => h.kind === 'failover' && h.from === 'node1' && h.to === 'node2'),
        60_000,
      );
      await waitFor('writes on node2', async () => writer.acked.length > killedAt + 100, 90_000);
    } finally {
      await writer.stop();
    }
    const ids = new Set((await queryNode(c.url('node2'), 'SELECT id FROM t')).rows.map((r) => r.id));
    expect(writer.acked.filter((id) => !ids.has(id))).toEqual([]);
    expect(await split.stop()).toEqual([]);
    // node3 wakes up: it is brought back as a replica of node2.
    // (A frozen process can be gone by now: a backend the postmaster's crash handling or a fence killed.)
    for (const pid of frozen.splice(0)) {
      try {
        process.kill(pid, 'SIGCONT');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
      }
    }
    expect(await waitHealthy(c.dir, 120_000)).toBe('node2');
  });
});
