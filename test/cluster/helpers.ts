import { join } from 'node:path';
import pg from 'pg';
import { pino } from 'pino';
import { AmbiguousCommitError } from '../../src/cluster/errors.js';
import { clusterStatus, destroyCluster, initCluster, type LocalClusterSpec } from '../../src/cluster/index.js';
import { nodeProcesses } from '../../src/cluster/local/cluster.js';
import { clusterPaths } from '../../src/cluster/local/layout.js';
import type { ClusterPool } from '../../src/cluster/pool.js';
import { makePostgresOwnedTempDir } from '../harness/postgres.js';

export interface TestCluster {
  dir: string;
  spec: LocalClusterSpec;
  url(node: string): string;
  destroy(): Promise<void>;
}

/** A real primary + `replicas` streaming replicas, tuned for tests (fsync off, small buffers). */
export async function createTestCluster(
  options: { sync?: boolean; replicas?: number; auth?: 'trust' | 'scram' } = {},
): Promise<TestCluster> {
  const root = makePostgresOwnedTempDir('bulwark-cluster-');
  const dir = join(root, 'c');
  const spec = await initCluster({
    dir,
    replicas: options.replicas ?? 2,
    sync: options.sync,
    auth: options.auth,
    settings: { fsync: 'off', shared_buffers: '32MB', max_connections: '60', full_page_writes: 'on' },
  });
  return {
    dir,
    spec,
    url: (node) => `postgresql://postgres@127.0.0.1:${spec.nodes.find((n) => n.name === node)!.port}/postgres`,
    destroy: async () => {
      await destroyCluster(dir).catch(() => {});
      const { rmSync } = await import('node:fs');
      rmSync(root, { recursive: true, force: true });
    },
  };
}

export const quietLogger = () =>
  pino({ level: process.env.BULWARK_TEST_LOG ?? 'silent' }, pino.destination({ fd: 2, sync: true }));

export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined | null | false>,
  timeoutMs = 60_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function primaryOf(dir: string): Promise<string[]> {
  const s = await clusterStatus(dir, 1500);
  return s.nodes.filter((n) => n.role === 'primary').map((n) => n.name);
}

/** Wait until exactly one primary and every other node is a streaming replica. */
export async function waitHealthy(dir: string, timeoutMs = 60_000): Promise<string> {
  return waitFor(
    'a healthy cluster (one primary, every replica streaming)',
    async () => {
      const s = await clusterStatus(dir, 1500);
      const p = s.nodes.filter((n) => n.role === 'primary');
      const ok = p.length === 1 && s.nodes.every((n) => n.role === 'primary' || (n.role === 'replica' && n.streaming));
      return ok ? p[0]!.name : null;
    },
    timeoutMs,
  );
}

export function signalNode(dir: string, node: string, signal: NodeJS.Signals): number[] {
  const pids = nodeProcesses(clusterPaths(dir).dataDir(node));
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch {
      // gone
    }
  }
  return pids;
}

/**
 * A writer that inserts increasing ids through the pool and keeps the score. It ends by itself after
 * `maxMs` (default 120 s) so a failed test cannot leave it running.
 */
export function startWriter(pool: ClusterPool, table: string, options: { pauseMs?: number; maxMs?: number } = {}) {
  const endAt = Date.now() + (options.maxMs ?? 120_000);
  const acked: number[] = [];
  const ambiguous: number[] = [];
  const failed: Array<{ id: number; error: string }> = [];
  let stop = false;
  let next = 1;
  let lastAckAt = 0;
  const done = (async () => {
    while (!stop && Date.now() < endAt) {
      const id = next++;
      try {
        await pool.query(`INSERT INTO ${table}(id) VALUES ($1)`, [id]);
        acked.push(id);
        lastAckAt = Date.now();
      } catch (err) {
        if (err instanceof AmbiguousCommitError) ambiguous.push(id);
        else failed.push({ id, error: (err as Error).message });
        await new Promise((r) => setTimeout(r, 20)); // never spin on a pool that keeps failing
      }
      if (options.pauseMs) await new Promise((r) => setTimeout(r, options.pauseMs));
    }
  })();
  return {
    acked,
    ambiguous,
    failed,
    get lastAckAt() {
      return lastAckAt;
    },
    async stop() {
      stop = true;
      await done;
    },
  };
}

export async function queryNode(url: string, text: string, values?: unknown[]): Promise<pg.QueryResult> {
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3000, query_timeout: 5000 });
  c.on('error', () => {});
  await c.connect();
  try {
    return await c.query(text, values as any[]);
  } finally {
    await c.end().catch(() => {});
  }
}

/** Poll the cluster in the background and remember any moment two nodes accepted writes at once. */
export function watchSplitBrain(dir: string) {
  const seen: string[][] = [];
  let stop = false;
  const done = (async () => {
    while (!stop) {
      const p = await primaryOf(dir).catch(() => []);
      if (p.length > 1) seen.push(p);
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  return {
    seen,
    async stop() {
      stop = true;
      await done;
      return seen;
    },
  };
}
