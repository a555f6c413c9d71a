import { createServer, type Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AmbiguousCommitError,
  ClusterMonitor,
  createClusterPool,
  readHistory,
  requestSwitchover,
} from '../../src/cluster/index.js';
import type { ClusterPool } from '../../src/cluster/pool.js';
import { freePort } from '../../src/lib/net.js';
import {
  createTestCluster,
  primaryOf,
  queryNode,
  quietLogger,
  signalNode,
  startWriter,
  type TestCluster,
  waitFor,
  waitHealthy,
  watchSplitBrain,
} from './helpers.js';

// One asynchronous cluster (primary + 2 replicas) for the whole file; each test leaves it healthy.
let c: TestCluster;
let pool: ClusterPool;
let monitor: ClusterMonitor | undefined;
let split: ReturnType<typeof watchSplitBrain> | undefined;
// Webhook receiver: the alerts the monitor sends.
const alerts: any[] = [];
let hook: Server;

beforeAll(async () => {
  c = await createTestCluster();
  pool = createClusterPool({
    nodes: c.spec.nodes.map((n) => c.url(n.name)),
    refreshIntervalMillis: 200,
    writeTimeoutMillis: 30_000,
  });
  await pool.query('CREATE TABLE t (id int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())');
});

afterAll(async () => {
  await split?.stop();
  hook?.close();
  await monitor?.stop().catch(() => {});
  await pool?.end();
  await c?.destroy();
});

const portOf = (name: string) => c.spec.nodes.find((n) => n.name === name)!.port;

async function startMonitor(): Promise<ClusterMonitor> {
  const hookPort = await freePort({ below: 32768 });
  hook = createServer((req, res) => {
    let body = '';
    req.on('data', (d) => {
      body += d;
    });
    req.on('end', () => {
      alerts.push(JSON.parse(body));
      res.end('ok');
    });
  }).listen(hookPort, '127.0.0.1');
  const m = new ClusterMonitor({
    webhooks: [`http://127.0.0.1:${hookPort}/alerts`],
    dir: c.dir,
    name: 'test-monitor',
    intervalMs: 500,
    failureThreshold: 3,
    http: { port: await freePort({ below: 32768 }) },
    logger: quietLogger(),
  });
  await m.start();
  return m;
}

describe('routing pool on a real cluster', () => {
  it('sends writes to the primary and spreads reads over the replicas', async () => {
    await waitFor(
      'both replicas eligible',
      async () => pool.topology().replicas.filter((r) => r.eligible).length === 2,
    );
    const acquired: string[] = [];
    pool.on('acquire', (_client, node) => acquired.push(node));
    const w = await pool.query('SELECT inet_server_port() AS port, pg_is_in_recovery() AS r');
    expect(acquired).toEqual([`127.0.0.1:${portOf('node1')}`]);
    expect(w.rows[0]).toEqual({ port: portOf('node1'), r: false });
    const ports = new Set<number>();
    for (let i = 0; i < 10; i++) {
      const r = await pool.read.query('SELECT inet_server_port() AS port, pg_is_in_recovery() AS r');
      expect(r.rows[0].r).toBe(true);
      ports.add(r.rows[0].port);
      const r2 = await pool.query('SELECT inet_server_port() AS port', [], { readOnly: true });
      ports.add(r2.rows[0].port);
    }
    expect([...ports].sort()).toEqual([portOf('node2'), portOf('node3')].sort());
  });

  it('routes for an unprivileged application role too', async () => {
    await pool.query("CREATE ROLE app LOGIN PASSWORD 'pw'; GRANT SELECT ON t TO app");
    const appPool = createClusterPool({
      nodes: c.spec.nodes.map((n) => `postgresql://app:pw@127.0.0.1:${n.port}/postgres`),
      refreshIntervalMillis: 200,
    });
    try {
      await waitFor(
        'replicas eligible for app',
        async () => appPool.topology().replicas.filter((r) => r.eligible).length === 2,
      );
      const r = await appPool.read.query('SELECT pg_is_in_recovery() AS r, current_user AS u');
      expect(r.rows[0]).toEqual({ r: true, u: 'app' });
      expect((await appPool.query('SELECT pg_is_in_recovery() AS r')).rows[0].r).toBe(false);
    } finally {
      await appPool.end();
    }
  });

  it('gives no reads to a replica lagging past maxLagBytes or maxLagSeconds, and falls back to the primary when none qualify', async () => {
    const lagPool = createClusterPool({
      nodes: c.spec.nodes.map((n) => c.url(n.name)),
      maxLagBytes: 64 * 1024,
      refreshIntervalMillis: 200,
    });
    try {
      await queryNode(c.url('node3'), 'SELECT pg_wal_replay_pause()');
      await pool.query('INSERT INTO t(id) SELECT g FROM generate_series(100000, 102000) g');
      await pool.query('DELETE FROM t WHERE id >= 100000');
      await waitFor('node3 ineligible', async () => {
        await lagPool.refresh();
        const r = lagPool.topology().replicas;
        return (
          r.find((x) => x.name.endsWith(`:${portOf('node3')}`))?.eligible === false &&
          r.find((x) => x.name.endsWith(`:${portOf('node2')}`))?.eligible === true
        );
      });
      for (let i = 0; i < 8; i++) {
        const r = await lagPool.read.query('SELECT inet_server_port() AS port');
        expect(r.rows[0].port).toBe(portOf('node2'));
      }
      // The same by time: node3 stays behind while node2 keeps up with a trickle of writes.
      const secondsPool = createClusterPool({
        nodes: c.spec.nodes.map((n) => c.url(n.name)),
        maxLagSeconds: 1,
        refreshIntervalMillis: 200,
      });
      try {
        await waitFor('node3 behind by more than 1 s, node2 not', async () => {
          await pool.query('INSERT INTO t(id) VALUES (100000)');
          await pool.query('DELETE FROM t WHERE id = 100000');
          const r = secondsPool.topology().replicas;
          return (
            r.find((x) => x.name.endsWith(`:${portOf('node3')}`))?.eligible === false &&
            r.find((x) => x.name.endsWith(`:${portOf('node2')}`))?.eligible === true
          );
        });
        const lag3 = secondsPool.topology().replicas.find((x) => x.name.endsWith(`:${portOf('node3')}`))!;
        expect(lag3.lagSeconds).toBeGreaterThan(1);
        const r = await secondsPool.read.query('SELECT inet_server_port() AS port');
        expect(r.rows[0].port).toBe(portOf('node2'));
      } finally {
        await secondsPool.end();
      }
      // Both replicas behind: reads fall back to the primary.
      await queryNode(c.url('node2'), 'SELECT pg_wal_replay_pause()');
      await pool.query('INSERT INTO t(id) SELECT g FROM generate_series(100000, 102000) g');
      await pool.query('DELETE FROM t WHERE id >= 100000');
      const fallbacks: string[] = [];
      lagPool.on('fallback', (e) => fallbacks.push(e.reason));
      await waitFor('no replica eligible', async () => {
        await lagPool.refresh();
        return lagPool.topology().replicas.every((x) => !x.eligible);
      });
      const r = await lagPool.read.query('SELECT inet_server_port() AS port');
      expect(r.rows[0].port).toBe(portOf('node1'));
      expect(fallbacks).toContain('no replica within lag bounds');
      const metrics = await lagPool.metrics.getSingleMetricAsString('bulwark_pool_read_fallbacks_total');
      expect(metrics).toMatch(/reason="no replica within lag bounds"} [1-9]/);
    } finally {
      await queryNode(c.url('node2'), 'SELECT pg_wal_replay_resume()');
      await queryNode(c.url('node3'), 'SELECT pg_wal_replay_resume()');
      await lagPool.end();
    }
  });

  it('read-your-writes: a read after a write sees it, waiting for the replica or using the primary', async () => {
    const ryw = createClusterPool({
      nodes: c.spec.nodes.map((n) => c.url(n.name)),
      readYourWrites: { timeoutMillis: 300 },
    });
    try {
      await waitFor('replicas known', async () => ryw.topology().replicas.filter((r) => r.eligible).length === 2);
      for (let i = 0; i < 5; i++) {
        await ryw.query('INSERT INTO t(id) VALUES ($1)', [200000 + i]);
        const r = await ryw.read.query('SELECT count(*)::int AS n FROM t WHERE id = $1', [200000 + i]);
        expect(r.rows[0].n).toBe(1);
      }
      // Replay paused everywhere: the replicas can never catch up, so the read goes to the primary.
      await queryNode(c.url('node2'), 'SELECT pg_wal_replay_pause()');
      await queryNode(c.url('node3'), 'SELECT pg_wal_replay_pause()');
      await ryw.query('INSERT INTO t(id) VALUES (200010)');
      const r = await ryw.read.query('SELECT count(*)::int AS n, pg_is_in_recovery() AS rec FROM t WHERE id = 200010');
      expect(r.rows[0]).toEqual({ n: 1, rec: false });
    } finally {
      await queryNode(c.url('node2'), 'SELECT pg_wal_replay_resume()');
      await queryNode(c.url('node3'), 'SELECT pg_wal_replay_resume()');
      await ryw.query('DELETE FROM t WHERE id >= 200000');
      await ryw.end();
    }
  });
});

describe('routing pool failure contract', () => {
  it('reports a write whose connection broke after sending as ambiguous, and does not retry it', async () => {
    const pending = pool.query('INSERT INTO t(id) SELECT 300000 FROM pg_sleep(30)').catch((e) => e);
    await waitFor('the write is running', async () => {
      const r = await queryNode(
        c.url('node1'),
        "SELECT count(*)::int AS n FROM pg_stat_activity WHERE query LIKE 'INSERT INTO t(id) SELECT 300000%'",
      );
      return r.rows[0].n === 1;
    });
    await queryNode(
      c.url('node1'),
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'INSERT INTO t(id) SELECT 300000%'",
    );
    const err = await pending;
    expect(err).toBeInstanceOf(AmbiguousCommitError);
    expect(err.code).toBe('BULWARK_E_CLUSTER_AMBIGUOUS_COMMIT');
    // not retried: the statement ran once and was cut, so the row is absent
    expect((await pool.query('SELECT count(*)::int AS n FROM t WHERE id = 300000')).rows[0].n).toBe(0);
  });

  it('makes writes wait a bounded time for a primary, then fail with a clear error', async () => {
    const replicasOnly = createClusterPool({ nodes: [c.url('node2'), c.url('node3')], writeTimeoutMillis: 600 });
    try {
      const err = await replicasOnly.query('INSERT INTO t(id) VALUES (1)').catch((e) => e);
      expect(err.code).toBe('BULWARK_E_CLUSTER_NO_PRIMARY');
      expect(err.message).toMatch(/no primary accepted writes within 600 ms/);
      // reads still work from the replicas
      expect((await replicasOnly.read.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    } finally {
      await replicasOnly.end();
    }
  });
});

describe('monitor on a real cluster', () => {
  it('kill -9 of the primary under a steady write load: one new primary, the client writes again, the old primary rejoins', async () => {
    monitor = await startMonitor();
    const old = await waitHealthy(c.dir);
    split = watchSplitBrain(c.dir); // runs until the end of the file: no two writable nodes, ever
    const writer = startWriter(pool, 't');
    await waitFor('writes flowing', async () => writer.acked.length > 50);
    const before = writer.acked.length;
    const killedAt = Date.now();
    signalNode(c.dir, old, 'SIGKILL');
    // The same pool, no restart: writes resume on the new primary.
    await waitFor(
      'writes after the failover',
      async () => writer.acked.length > before + 50 && writer.lastAckAt > killedAt,
    );
    await writer.stop();
    const history = readHistory(c.dir);
    expect(history.filter((h) => h.kind === 'failover')).toHaveLength(1);
    const fo = history.find((h) => h.kind === 'failover')!;
    expect(fo.from).toBe(old);
    expect(fo.to).not.toBe(old);
    expect(await primaryOf(c.dir)).toEqual([fo.to]);
    expect(writer.failed).toEqual([]);
    const newPrimary = await waitHealthy(c.dir, 90_000); // old primary rewound and streaming again
    expect(newPrimary).toBe(fo.to);
    const r = await queryNode(c.url(old), 'SELECT pg_is_in_recovery() AS r');
    expect(r.rows[0].r).toBe(true);
    await waitFor('webhook alerts', async () => alerts.some((a) => a.event === 'rejoined'));
    expect(alerts.find((a) => a.event === 'failover')).toMatchObject({ from: old, to: fo.to, cluster: 'bulwark' });
  });

  it('a freeze shorter than the detection window causes no failover', async () => {
    const primary = await waitHealthy(c.dir);
    const failovers = readHistory(c.dir).length;
    signalNode(c.dir, primary, 'SIGSTOP');
    await new Promise((r) => setTimeout(r, 700)); // 3 probes at 500 ms need > 1 s of silence
    signalNode(c.dir, primary, 'SIGCONT');
    await new Promise((r) => setTimeout(r, 3000));
    expect(readHistory(c.dir)).toHaveLength(failovers);
    expect(await primaryOf(c.dir)).toEqual([primary]);
  });

  it('a primary frozen past the window is replaced and, resumed, never accepts a write and rejoins as a replica', async () => {
    const frozen = await waitHealthy(c.dir);
    const n = readHistory(c.dir).filter((h) => h.kind === 'failover').length;
    const pids = signalNode(c.dir, frozen, 'SIGSTOP');
    try {
      await waitFor(
        'a failover away from the frozen primary',
        async () => readHistory(c.dir).filter((h) => h.kind === 'failover').length === n + 1,
      );
    } finally {
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGCONT');
        } catch {
          // fenced (killed) already
        }
      }
    }
    const fo = readHistory(c.dir)
      .filter((h) => h.kind === 'failover')
      .at(-1)!;
    expect(fo.from).toBe(frozen);
    // The old primary must refuse writes from now on: refused connection, or read-only.
    for (let i = 0; i < 20; i++) {
      const attempt = await queryNode(c.url(frozen), 'INSERT INTO t(id) VALUES (-1)').then(
        () => 'accepted',
        (err) => err.code ?? err.message,
      );
      expect(attempt).not.toBe('accepted');
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(await waitHealthy(c.dir, 90_000)).toBe(fo.to);
    const r = await queryNode(
      c.url(frozen),
      'SELECT pg_is_in_recovery() AS r, (SELECT count(*)::int FROM t WHERE id = -1) AS bad',
    );
    expect(r.rows[0]).toEqual({ r: true, bad: 0 });
  });

  it('switchover --to NODE through the monitor loses no acknowledged write', async () => {
    const from = await waitHealthy(c.dir);
    const to = c.spec.nodes.map((x) => x.name).find((x) => x !== from)!;
    await pool.query('TRUNCATE t');
    const writer = startWriter(pool, 't');
    await waitFor('writes flowing', async () => writer.acked.length > 50);
    const entry = await requestSwitchover(c.dir, to);
    const after = writer.acked.length;
    await waitFor('writes after the switchover', async () => writer.acked.length > after + 50);
    await writer.stop();
    expect(entry).toMatchObject({ kind: 'switchover', from, to });
    expect(await primaryOf(c.dir)).toEqual([to]);
    const ids = new Set((await queryNode(c.url(to), 'SELECT id FROM t')).rows.map((r) => r.id));
    expect(writer.acked.filter((id) => !ids.has(id))).toEqual([]);
    expect(writer.failed).toEqual([]);
    expect(await waitHealthy(c.dir, 60_000)).toBe(to);
  });

  it('re-points a replica that stopped streaming from the primary', async () => {
    const primary = await waitHealthy(c.dir);
    const replica = c.spec.nodes.map((x) => x.name).find((x) => x !== primary)!;
    // Point it at a port where nothing listens: it runs, but it no longer streams.
    await queryNode(c.url(replica), "ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port=1 user=postgres'");
    await queryNode(c.url(replica), 'SELECT pg_reload_conf()');
    await waitFor('the replica to stop streaming', async () => {
      const r = await queryNode(
        c.url(replica),
        'SELECT count(*)::int AS n FROM pg_stat_wal_receiver WHERE status = $1',
        ['streaming'],
      );
      return r.rows[0].n === 0;
    });
    expect(await waitHealthy(c.dir, 30_000)).toBe(primary);
    const r = await queryNode(c.url(replica), 'SELECT sender_port FROM pg_stat_wal_receiver');
    expect(r.rows[0].sender_port).toBe(portOf(primary));
  });

  it('serves /primary, /replica and /health for load balancers and pools', async () => {
    const primary = await waitHealthy(c.dir);
    await waitFor('monitor sees the primary', async () => (await fetch(`${monitor!.httpUrl}/primary`)).status === 200);
    const p = (await (await fetch(`${monitor!.httpUrl}/primary`)).json()) as any;
    expect(p.name).toBe(primary);
    expect((await fetch(`${monitor!.httpUrl}/primary/${primary}`)).status).toBe(200);
    const replica = c.spec.nodes.map((x) => x.name).find((x) => x !== primary)!;
    expect((await fetch(`${monitor!.httpUrl}/primary/${replica}`)).status).toBe(503);
    await waitFor(
      'replica streaming in monitor view',
      async () => (await fetch(`${monitor!.httpUrl}/replica/${replica}`)).status === 200,
    );
    const h = (await (await fetch(`${monitor!.httpUrl}/health`)).json()) as any;
    expect(h).toMatchObject({ status: 'ok', primary, leader: true });
    // A pool that follows the monitor instead of probing.
    const mp = createClusterPool({ monitor: monitor!.httpUrl!, user: 'postgres', database: 'postgres' });
    try {
      const r = await mp.query('SELECT inet_server_port() AS port');
      expect(r.rows[0].port).toBe(portOf(primary));
      await waitFor(
        'replicas from the monitor',
        async () => mp.topology().replicas.filter((x) => x.eligible).length === 2,
      );
      const rr = await mp.read.query('SELECT pg_is_in_recovery() AS r');
      expect(rr.rows[0].r).toBe(true);
    } finally {
      await mp.end();
    }
    expect(await split!.stop()).toEqual([]);
  });
});
