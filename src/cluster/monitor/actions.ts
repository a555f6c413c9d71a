import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { run } from '../../lib/child.js';
import { POSTGRES_USER, pgBin } from '../../lib/postgres.js';
import { ClusterError } from '../errors.js';
import {
  clearDeadLock,
  clientConfig,
  findNode,
  killNode,
  markStandby,
  postmasterPid,
  primaryConninfo,
  setAutoConf,
  sleep,
  sql,
  startNode,
  syncStandbyNames,
} from '../local/cluster.js';
import { clusterPaths, type LocalClusterSpec, readPassword } from '../local/layout.js';
import { compareLsn } from '../lsn.js';

/**
 * What the monitor does to the nodes of a local cluster. Every function is one step with one
 * outcome; `guard` is called between steps and throws when this monitor may no longer act (lease lost),
 * so a deposed monitor never finishes half a failover.
 */
export type Guard = () => void;

export interface LocalCluster {
  dir: string;
  spec: LocalClusterSpec;
}

const quote = (s: string) => `'${s.replace(/'/g, "''")}'`;

/**
 * Fence a node: SIGKILL all its processes (also when it is frozen: a queued SIGTERM would be
 * handled only after it woke up and maybe took a write) and drop a standby.signal so that any
 * restart comes up read-only. Returns the PIDs killed.
 */
export async function fence(c: LocalCluster, node: string): Promise<number[]> {
  const n = findNode(c.spec, node);
  const pids = await killNode(c.dir, n);
  markStandby(clusterPaths(c.dir).dataDir(node));
  return pids;
}

/** pg_promote(wait => false), then poll every 10 ms until the node leaves recovery. */
export async function promote(c: LocalCluster, node: string, timeoutMs = 60_000): Promise<void> {
  const n = findNode(c.spec, node);
  const client = new pg.Client({ ...clientConfig(c.dir, c.spec, n), connectionTimeoutMillis: 5000 });
  client.on('error', () => {});
  await client.connect();
  try {
    await client.query('SELECT pg_promote(wait => false)');
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const r = await client.query('SELECT pg_is_in_recovery() AS r');
      if (!r.rows[0].r) return;
      await sleep(10);
    }
    throw new ClusterError(
      'BULWARK_E_CLUSTER_NODE',
      `${node} did not leave recovery within ${timeoutMs} ms after pg_promote()`,
    );
  } finally {
    await client.end().catch(() => {});
  }
}

export async function setSyncNames(c: LocalCluster, node: string, names: string[]): Promise<void> {
  await sql(c.dir, c.spec, findNode(c.spec, node), [
    `ALTER SYSTEM SET synchronous_standby_names = ${quote(syncStandbyNames(names))}`,
    'SELECT pg_reload_conf()',
  ]);
}

/** Physical slots on `primary` for every other node, so a re-pointed or rejoined node keeps its WAL. */
export async function ensureSlots(c: LocalCluster, primary: string): Promise<void> {
  const p = findNode(c.spec, primary);
  const others = c.spec.nodes.filter((n) => n.name !== primary).map((n) => n.name);
  await sql(c.dir, c.spec, p, [
    `SELECT pg_create_physical_replication_slot(s, true) FROM unnest(ARRAY[${others.map(quote).join(',')}]::text[]) AS s
       WHERE s NOT IN (SELECT slot_name FROM pg_replication_slots)`,
    `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = ${quote(primary)} AND NOT active`,
  ]);
}

/** Point a running replica at `primary` (primary_conninfo is reloadable since PostgreSQL 13). */
export async function repoint(c: LocalCluster, node: string, primary: string): Promise<void> {
  const p = findNode(c.spec, primary);
  await sql(c.dir, c.spec, findNode(c.spec, node), [
    `ALTER SYSTEM SET primary_conninfo = ${quote(primaryConninfo(c.dir, c.spec, p, node))}`,
    `ALTER SYSTEM SET primary_slot_name = ${quote(node)}`,
    `ALTER SYSTEM SET synchronous_standby_names = ''`,
    'SELECT pg_reload_conf()',
  ]);
}

/**
 * Rejoin a node as a replica of `primary`: stop it hard, pg_rewind it onto the primary's timeline
 * (pg_rewind runs crash recovery first when the node was killed), write its replica settings, start it.
 * If pg_rewind cannot do it (WAL gone, never shared history), clone it again with pg_basebackup.
 * Returns how it was done.
 */
export async function rejoin(
  c: LocalCluster,
  node: string,
  primary: string,
  guard: Guard,
): Promise<{ method: 'rewind' | 'clone'; detail: string }> {
  const n = findNode(c.spec, node);
  const p = findNode(c.spec, primary);
  const paths = clusterPaths(c.dir);
  const data = paths.dataDir(node);
  await killNode(c.dir, n);
  markStandby(data);
  // Processes verified dead above; a stale lock file would make pg_rewind's single-user crash recovery refuse.
  rmSync(join(data, 'postmaster.pid'), { force: true });
  guard();
  await ensureSlots(c, primary);
  // A promoted node records its new timeline in pg_control only at its next checkpoint; without one,
  // pg_rewind sees both on the old timeline, says "no rewind required", and the node can never follow.
  await sql(c.dir, c.spec, p, ['CHECKPOINT'], 60_000);
  const env = { ...process.env, PGPASSFILE: paths.pgpass };
  const source = `host=${c.spec.host} port=${p.port} user=postgres dbname=postgres`;
  // pg_rewind first runs crash recovery in single-user mode, which refuses to start with
  // standby.signal present; the node stays down meanwhile, and the signal is written back below.
  rmSync(join(data, 'standby.signal'), { force: true });
  let method: 'rewind' | 'clone' = 'rewind';
  let detail: string;
  const r = await run(pgBin('pg_rewind'), ['--target-pgdata', data, '--source-server', source, '--progress'], {
    asUser: POSTGRES_USER,
    env,
    check: false,
  });
  const out = `${r.stdout}\n${r.stderr}`.trim().split('\n');
  if (r.code === 0) {
    detail = out.find((l) => /no rewind required|Done!/.test(l)) ?? out.at(-1) ?? '';
  } else {
    guard();
    method = 'clone';
    detail = `pg_rewind failed (${out.slice(-2).join(' | ')}); cloned with pg_basebackup`;
    rmSync(data, { recursive: true, force: true });
    await run(
      pgBin('pg_basebackup'),
      ['-D', data, '-h', c.spec.host, '-p', String(p.port), '-U', 'postgres', '-X', 'stream', '-c', 'fast', '-S', node],
      { asUser: POSTGRES_USER, env },
    );
  }
  guard();
  // pg_rewind copied the primary's postgresql.auto.conf: make it this node's replica settings.
  setAutoConf(data, {
    primary_conninfo: primaryConninfo(c.dir, c.spec, p, node),
    primary_slot_name: node,
    synchronous_standby_names: '',
  });
  markStandby(data);
  rmSync(join(data, 'postmaster.pid'), { force: true });
  await startNode(c.dir, c.spec, n);
  await dropStaleSlots(c, node);
  return { method, detail };
}

/** Latest checkpoint location of a stopped node (pg_controldata). */
export async function checkpointLsn(c: LocalCluster, node: string): Promise<string | null> {
  const r = await run(pgBin('pg_controldata'), [clusterPaths(c.dir).dataDir(node)], { check: false });
  return /Latest checkpoint location:\s+(\S+)/.exec(r.stdout)?.[1] ?? null;
}

/**
 * Fast shutdown of the primary without pg_ctl's 100 ms polling: SIGINT to the postmaster, then watch
 * it exit every 10 ms. Fast shutdown ends client sessions, writes the shutdown checkpoint and lets the
 * WAL senders send everything up to it before they exit.
 */
export async function fastShutdown(c: LocalCluster, node: string, timeoutMs = 30_000): Promise<void> {
  const data = clusterPaths(c.dir).dataDir(node);
  const pm = postmasterPid(data);
  if (!pm) return;
  process.kill(pm, 'SIGINT');
  const deadline = Date.now() + timeoutMs;
  while (postmasterPid(data) && Date.now() < deadline) await sleep(10);
  if (postmasterPid(data)) await killNode(c.dir, findNode(c.spec, node));
}

export async function receiveLsn(c: LocalCluster, node: string): Promise<string | null> {
  const r = await sql(c.dir, c.spec, findNode(c.spec, node), ['SELECT pg_last_wal_receive_lsn()::text AS l'], 2000);
  return r[0]!.rows[0].l;
}

/** Wait until `node` has received WAL past `lsn` (the old primary's shutdown checkpoint). */
export async function waitReceived(c: LocalCluster, node: string, lsn: string, timeoutMs: number): Promise<boolean> {
  const client = new pg.Client({
    ...clientConfig(c.dir, c.spec, findNode(c.spec, node)),
    connectionTimeoutMillis: 2000,
  });
  client.on('error', () => {});
  await client.connect();
  try {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const r = await client.query('SELECT pg_last_wal_receive_lsn()::text AS l');
      if (compareLsn(r.rows[0].l, lsn) > 0) return true;
      await sleep(5);
    }
    return false;
  } finally {
    await client.end().catch(() => {});
  }
}

/** A node's server log tail, for error messages. */
export function logTail(c: LocalCluster, node: string, lines = 3): string {
  const p = clusterPaths(c.dir).log(node);
  return existsSync(p) ? readFileSync(p, 'utf8').trim().split('\n').slice(-lines).join(' | ') : '';
}

export { readPassword };

/**
 * Drop a replica's leftover per-node slots (the cluster's own, named after nodes, from its time as
 * primary): on a standby they only hold WAL back. Users' slots are kept (configure them as permanent
 * slots to have them on every node).
 */
export async function dropStaleSlots(c: LocalCluster, node: string): Promise<void> {
  const names = c.spec.nodes.map((n) => quote(n.name)).join(',');
  await sql(c.dir, c.spec, findNode(c.spec, node), [
    `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active AND slot_name IN (${names})`,
  ]).catch(() => {});
}

/**
 * Create missing permanent physical slots on a node (WAL reserved at once) and advance existing ones
 * (on a replica: to the primary's restart_lsn, which PostgreSQL caps at the replica's replay position).
 */
export async function syncPermanentSlots(
  c: LocalCluster,
  node: string,
  create: string[],
  advance: Array<{ name: string; lsn: string }>,
): Promise<void> {
  await sql(c.dir, c.spec, findNode(c.spec, node), [
    ...create.map(
      (s) =>
        `SELECT pg_create_physical_replication_slot(${quote(s)}, true) WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = ${quote(s)})`,
    ),
    ...advance.map(
      (a) =>
        `SELECT pg_replication_slot_advance(${quote(a.name)}, ${quote(a.lsn)}::pg_lsn) FROM pg_replication_slots WHERE slot_name = ${quote(a.name)} AND NOT active`,
    ),
  ]);
}

/**
 * What this host knows of a node's PostgreSQL process: running or not and, when not, whether it crashed
 * (pg_control still says "in production" / "in archive recovery": a SIGKILL, an OOM kill, a power cut)
 * or was shut down cleanly (someone stopped it on purpose: it stays down). `timeline` is the stopped
 * node's newest timeline: its checkpoint's, or a newer history file in pg_wal (a promotion is recorded
 * in pg_control only at the next checkpoint).
 */
export async function localProcessState(
  c: LocalCluster,
  node: string,
): Promise<{ running: boolean; crashed: boolean; timeline: number | null }> {
  const data = clusterPaths(c.dir).dataDir(node);
  if (postmasterPid(data)) return { running: true, crashed: false, timeline: null };
  const r = await run(pgBin('pg_controldata'), [data], { check: false });
  const state = /Database cluster state:\s+(.+)/.exec(r.stdout)?.[1]?.trim();
  if (r.code !== 0 || !state) return { running: false, crashed: false, timeline: null };
  let timeline = Number(/Latest checkpoint's TimeLineID:\s+(\d+)/.exec(r.stdout)?.[1] ?? 0);
  try {
    for (const f of readdirSync(join(data, 'pg_wal'))) {
      const m = /^([0-9A-F]{8})\.history$/.exec(f);
      if (m) timeline = Math.max(timeline, Number.parseInt(m[1]!, 16));
    }
  } catch {
    // pg_wal unreadable: the checkpoint's timeline is what we know
  }
  return { running: false, crashed: !/^shut down/.test(state), timeline: timeline || null };
}

/**
 * Restart a crashed node in place, without waiting for its crash recovery (the monitor's next probes
 * see it come up). A replica gets standby.signal first: whatever happened to the file, a node that is
 * not the primary must never come back writable. A primary is started as it is (a fenced one keeps the
 * standby.signal its fencing wrote).
 */
export async function restartInPlace(c: LocalCluster, node: string, role: 'primary' | 'replica'): Promise<void> {
  const n = findNode(c.spec, node);
  const data = clusterPaths(c.dir).dataDir(node);
  if (role === 'replica') markStandby(data);
  await clearDeadLock(data);
  await startNode(c.dir, c.spec, n, { wait: false });
}
