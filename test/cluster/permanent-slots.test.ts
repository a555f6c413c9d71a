import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClusterMonitor, readHistory, requestSwitchover } from '../../src/cluster/index.js';
import { compareLsn } from '../../src/cluster/lsn.js';
import { checkSlotNames } from '../../src/cluster/monitor/monitor.js';
import { freePort } from '../../src/lib/net.js';
import {
  createTestCluster,
  queryNode,
  quietLogger,
  signalNode,
  type TestCluster,
  waitFor,
  waitHealthy,
} from './helpers.js';

// Bug: user replication slots vanished on a role change (the promoted replica never had them, and the
// demoted primary dropped every inactive slot). Fixed: permanent slots (--slot / permanentSlots) are
// kept on the primary and on every replica (advanced there), across switchover and failover; a
// demoted node drops only the cluster's own per-node slots.
let c: TestCluster;
let monitor: ClusterMonitor;

beforeAll(async () => {
  c = await createTestCluster();
  monitor = new ClusterMonitor({
    dir: c.dir,
    name: 'slots-monitor',
    intervalMs: 500,
    logger: quietLogger(),
    permanentSlots: ['archiver'],
    http: { port: await freePort({ below: 32768 }) },
  });
  await monitor.start();
});
afterAll(async () => {
  await monitor?.stop().catch(() => {});
  await c?.destroy();
});

const nodes = () => c.spec.nodes.map((n) => n.name);
async function slot(node: string, name: string): Promise<{ restart_lsn: string | null } | undefined> {
  const r = await queryNode(
    c.url(node),
    'SELECT restart_lsn::text AS restart_lsn FROM pg_replication_slots WHERE slot_name = $1',
    [name],
  );
  return r.rows[0];
}
const onEveryNode = (name: string) =>
  waitFor(`slot ${name} on every node`, async () => {
    for (const n of nodes()) if (!(await slot(n, name))?.restart_lsn) return false;
    return true;
  });

describe('permanent replication slots', () => {
  it('are created on the primary and every replica, and the replicas follow the primary slot', async () => {
    expect(await waitHealthy(c.dir)).toBe('node1');
    await onEveryNode('archiver');
    // A consumer moves the primary's slot on by more than a WAL segment: the replicas' copies follow.
    await queryNode(c.url('node1'), 'CREATE TABLE t (id int)');
    for (let i = 0; i < 2; i++) {
      await queryNode(c.url('node1'), 'INSERT INTO t SELECT generate_series(1, 1000)');
      await queryNode(c.url('node1'), 'SELECT pg_switch_wal()');
    }
    const target = (await queryNode(c.url('node1'), 'SELECT pg_current_wal_lsn()::text AS l')).rows[0].l;
    await queryNode(c.url('node1'), "SELECT pg_replication_slot_advance('archiver', pg_current_wal_lsn())");
    await waitFor('replica slots advanced', async () => {
      for (const n of ['node2', 'node3'])
        if (compareLsn((await slot(n, 'archiver'))?.restart_lsn, target) < 0) return false;
      return true;
    });
  });

  it('survive a switchover, and a user slot on the demoted primary is not dropped', async () => {
    await queryNode(c.url('node1'), "SELECT pg_create_physical_replication_slot('user_slot', true)");
    await requestSwitchover(c.dir, 'node2');
    expect(await waitHealthy(c.dir)).toBe('node2');
    await onEveryNode('archiver');
    expect(await slot('node1', 'user_slot')).toBeDefined();
  });

  it('survive a failover (kill -9 of the primary) and the rejoin of the old primary', async () => {
    signalNode(c.dir, 'node2', 'SIGKILL');
    await waitFor('a failover', async () => readHistory(c.dir).some((h) => h.kind === 'failover'));
    const to = readHistory(c.dir).find((h) => h.kind === 'failover')!.to;
    expect(await slot(to, 'archiver')).toBeDefined();
    expect(await waitHealthy(c.dir, 90_000)).toBe(to);
    await onEveryNode('archiver');
  });

  it('refuses a slot name that is invalid or a node name, naming it', () => {
    expect(() => checkSlotNames(['Bad-Name'], nodes())).toThrow(/permanent slot "Bad-Name"/);
    expect(() => checkSlotNames(['node2'], nodes())).toThrow(/is the name of a node/);
  });
});
