import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClusterPool } from '../../src/cluster/index.js';
import type { ClusterPool } from '../../src/cluster/pool.js';
import { createTestCluster, signalNode, type TestCluster, waitFor } from './helpers.js';

// Bug: a pool read hung for the whole outage when a replica stopped answering (frozen, or cut off by the
// network: no RST ever comes), because a pooled connection to it had no read bound. Fixed: reads have a
// default query_timeout and connects a default connectionTimeoutMillis; a read that hits either is
// retried on another node. The pools here never refresh their topology after the start, so the frozen
// replica stays a candidate and only the timeouts can save the read.
let c: TestCluster;
let frozen: number[] = [];
const pools: ClusterPool[] = [];

beforeAll(async () => {
  c = await createTestCluster();
});
afterAll(async () => {
  thaw();
  for (const p of pools) await p.end().catch(() => {});
  await c?.destroy();
});

function thaw(): void {
  for (const pid of frozen.splice(0)) {
    try {
      process.kill(pid, 'SIGCONT');
    } catch {
      // gone
    }
  }
}

const portOf = (name: string) => c.spec.nodes.find((n) => n.name === name)!.port;

/** The read, or a rejection if it is still waiting after `ms` (the bug: it waited as long as the outage). */
function orHung<T>(p: Promise<T>, ms: number): Promise<T> {
  return Promise.race([
    p,
    new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`read still hanging after ${ms} ms`)), ms)),
  ]);
}

async function stalePool(): Promise<ClusterPool> {
  const pool = createClusterPool({ nodes: c.spec.nodes.map((n) => c.url(n.name)), refreshIntervalMillis: 3_600_000 });
  pools.push(pool);
  await waitFor('both replicas eligible', async () => {
    await pool.refresh();
    return pool.topology().replicas.filter((r) => r.eligible).length === 2;
  });
  return pool;
}

describe('routing pool: a replica that stops answering', () => {
  it('a read on a pooled connection to a frozen replica times out and is retried on another node, with the default timeouts', async () => {
    const warm = await stalePool();
    // every replica gets an idle pooled connection
    const seen = new Set<number>();
    for (let i = 0; i < 4; i++) seen.add((await warm.read.query('SELECT inet_server_port() AS port')).rows[0].port);
    expect([...seen].sort()).toEqual([portOf('node2'), portOf('node3')].sort());
    const cold = await stalePool(); // knows the topology, never connected to a replica yet
    frozen = signalNode(c.dir, 'node2', 'SIGSTOP');
    try {
      const ports: number[] = [];
      for (const pool of [warm, warm, cold, cold]) {
        const r = await orHung(pool.read.query('SELECT inet_server_port() AS port'), 45_000);
        ports.push(r.rows[0].port);
      }
      expect(ports.filter((p) => p === portOf('node2'))).toEqual([]);
      // node2 was tried by both pools (round robin over two replicas) and set aside, node2 still frozen
      for (const pool of [warm, cold])
        expect(pool.topology().replicas.find((r) => r.name.endsWith(`:${portOf('node2')}`))).toBeUndefined();
    } finally {
      thaw();
    }
  });

  it('query_timeout set by the user bounds reads; a read slower than it on the last node fails instead of hanging', async () => {
    const pool = createClusterPool({ nodes: [c.url('node1')], query_timeout: 300 });
    pools.push(pool);
    const err = await pool.read.query('SELECT pg_sleep(3)').catch((e) => e);
    expect(err.message).toBe('Query read timeout');
    expect((await pool.read.query('SELECT 1 AS one')).rows[0].one).toBe(1);
  });
});
