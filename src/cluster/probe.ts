import pg from 'pg';
import { compareLsn, lsnDiff } from './lsn.js';

/** What one probe of one node saw. Everything a failover decision needs, nothing more. */
export interface NodeObservation {
  name: string;
  host: string;
  port: number;
  reachable: boolean;
  error?: string;
  inRecovery?: boolean;
  /** Primary: pg_current_wal_lsn(). */
  currentLsn?: string | null;
  /** Replica: WAL received and flushed to disk (pg_last_wal_receive_lsn). */
  receiveLsn?: string | null;
  /** Replica: WAL replayed (pg_last_wal_replay_lsn). */
  replayLsn?: string | null;
  /** Seconds since epoch of the last replayed transaction's commit (replica), null if none. */
  replayTimestamp?: number | null;
  timeline?: number | null;
  syncStandbyNames?: string;
  /** Replica: its WAL receiver (pg_stat_wal_receiver); null when no receiver runs. */
  walReceiver?: {
    status: string;
    senderHost: string | null;
    senderPort: number | null;
    lastMsgAt: number | null;
  } | null;
  /** Primary: its connected replicas (pg_stat_replication). */
  replication?: Array<{
    name: string;
    state: string;
    flushLsn: string | null;
    replayLsn: string | null;
    replayLagSeconds: number | null;
    syncState: string;
  }>;
  /** Server clock at the probe (epoch seconds). */
  serverNow?: number;
  /**
   * What the node's own host knows about its PostgreSQL process (filled in by a monitor or agent running
   * there; undefined when the node is remote): whether the postmaster runs and, when it does not, whether
   * it crashed (pg_control not "shut down") or was stopped cleanly on purpose.
   */
  local?: { running: boolean; crashed: boolean };
  /** Its replication slots (pg_replication_slots), on primaries and replicas. */
  slots?: Array<{ name: string; type: string; restartLsn: string | null; active: boolean }>;
}

export interface ProbeTarget {
  name: string;
  host: string;
  port: number;
  /** Anything pg.Client accepts besides host/port (user, password, database, ssl). */
  connection?: pg.ClientConfig;
}

const PROBE_SQL = `SELECT pg_is_in_recovery() AS in_recovery,
  CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END AS current_lsn,
  pg_last_wal_receive_lsn()::text AS receive_lsn,
  pg_last_wal_replay_lsn()::text AS replay_lsn,
  extract(epoch from pg_last_xact_replay_timestamp())::float8 AS replay_ts,
  extract(epoch from clock_timestamp())::float8 AS now,
  CASE WHEN pg_is_in_recovery() THEN NULL
       ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END AS timeline,
  (SELECT timeline_id FROM pg_control_checkpoint()) AS checkpoint_tli,
  current_setting('synchronous_standby_names') AS sync_names`;
const RECEIVER_SQL = `SELECT status, received_tli, sender_host, sender_port,
  extract(epoch from last_msg_receipt_time)::float8 AS last_msg FROM pg_stat_wal_receiver`;
const SLOTS_SQL = 'SELECT slot_name, slot_type, restart_lsn::text AS restart_lsn, active FROM pg_replication_slots';
const REPLICATION_SQL = `SELECT application_name, state, flush_lsn::text, replay_lsn::text,
  extract(epoch from replay_lag)::float8 AS replay_lag, sync_state FROM pg_stat_replication`;

/**
 * Probe one node with a fresh connection (a pooled one would hide a server that no longer accepts
 * connections). `timeoutMs` bounds connect and queries: a frozen server accepts the TCP handshake in
 * the kernel and then never answers, so only a timeout catches it.
 */
export async function probeNode(target: ProbeTarget, timeoutMs = 1000): Promise<NodeObservation> {
  const base = { name: target.name, host: target.host, port: target.port };
  const client = new pg.Client({
    user: 'postgres',
    database: 'postgres',
    ...target.connection,
    host: target.host,
    port: target.port,
    connectionTimeoutMillis: timeoutMs,
    query_timeout: timeoutMs,
    application_name: 'bulwark-probe',
  });
  client.on('error', () => {});
  const timer = setTimeout(() => {
    // belt and braces: pg's own timeouts do not cover every stage of a hung connection
    (client as any).connection?.stream?.destroy?.();
  }, timeoutMs + 500);
  try {
    await client.connect();
    const row = (await client.query(PROBE_SQL)).rows[0];
    const obs: NodeObservation = {
      ...base,
      reachable: true,
      inRecovery: row.in_recovery,
      currentLsn: row.current_lsn,
      receiveLsn: row.receive_lsn,
      replayLsn: row.replay_lsn,
      replayTimestamp: row.replay_ts,
      serverNow: row.now,
      timeline: row.timeline ?? row.checkpoint_tli,
      syncStandbyNames: row.sync_names,
    };
    if (row.in_recovery) {
      const r = (await client.query(RECEIVER_SQL)).rows[0];
      obs.walReceiver = r
        ? { status: r.status, senderHost: r.sender_host, senderPort: r.sender_port, lastMsgAt: r.last_msg }
        : null;
      if (r?.received_tli) obs.timeline = Math.max(Number(r.received_tli), Number(obs.timeline ?? 0));
    } else {
      obs.replication = (await client.query(REPLICATION_SQL)).rows.map((r) => ({
        name: r.application_name,
        state: r.state,
        flushLsn: r.flush_lsn,
        replayLsn: r.replay_lsn,
        replayLagSeconds: r.replay_lag,
        syncState: r.sync_state,
      }));
    }
    obs.slots = (await client.query(SLOTS_SQL)).rows.map((r) => ({
      name: r.slot_name,
      type: r.slot_type,
      restartLsn: r.restart_lsn,
      active: r.active,
    }));
    return obs;
  } catch (err) {
    return { ...base, reachable: false, error: (err as Error).message || String(err) };
  } finally {
    clearTimeout(timer);
    client.end().catch(() => {});
  }
}

export function probeAll(targets: ProbeTarget[], timeoutMs?: number): Promise<NodeObservation[]> {
  return Promise.all(targets.map((t) => probeNode(t, timeoutMs)));
}

/** True when `replica` is streaming WAL from `primary` right now (not merely running). */
export function streamsFrom(replica: NodeObservation, primary: { host: string; port: number }): boolean {
  const w = replica.walReceiver;
  return !!w && w.status === 'streaming' && w.senderPort === primary.port && sameHost(w.senderHost, primary.host);
}

function sameHost(a: string | null, b: string): boolean {
  if (!a) return false;
  const local = (h: string) => h === 'localhost' || h.startsWith('127.') || h === '::1';
  return a === b || (local(a) && local(b));
}

export interface NodeStatus {
  name: string;
  host: string;
  port: number;
  role: 'primary' | 'replica' | 'down';
  timeline: number | null;
  /** Primary: current WAL position; replica: replayed position. */
  lsn: string | null;
  receivedLsn: string | null;
  replayedLsn: string | null;
  /** Bytes of WAL the replica has not replayed yet, against the primary's current position. */
  lagBytes: number | null;
  /** 0 when fully replayed (an idle primary does not make lag grow), else seconds behind. */
  lagSeconds: number | null;
  /** Replica: the primary's pg_stat_replication.sync_state for it (async, sync, quorum, potential). */
  syncState: string | null;
  /** Replica: its WAL receiver is streaming from the primary. */
  streaming: boolean | null;
  reachable: boolean;
  error?: string;
}

/**
 * Turn observations into the status users read. Lag in seconds is 0 when the replica has replayed
 * everything (the origin document's `now() - pg_last_xact_replay_timestamp()` grows on an idle
 * primary and would hide a good replica); otherwise the primary's measured replay_lag, or the age of
 * the last replayed transaction.
 */
export function summarize(observations: NodeObservation[]): NodeStatus[] {
  const primaries = observations.filter((o) => o.reachable && !o.inRecovery);
  const primary = primaries.length === 1 ? primaries[0] : undefined;
  return observations.map((o) => {
    if (!o.reachable)
      return {
        name: o.name,
        host: o.host,
        port: o.port,
        role: 'down',
        timeline: null,
        lsn: null,
        receivedLsn: null,
        replayedLsn: null,
        lagBytes: null,
        lagSeconds: null,
        syncState: null,
        streaming: null,
        reachable: false,
        error: o.error,
      };
    if (!o.inRecovery)
      return {
        name: o.name,
        host: o.host,
        port: o.port,
        role: 'primary',
        timeline: o.timeline ?? null,
        lsn: o.currentLsn ?? null,
        receivedLsn: null,
        replayedLsn: null,
        lagBytes: 0,
        lagSeconds: 0,
        syncState: null,
        streaming: null,
        reachable: true,
      };
    const rep = primary?.replication?.find((r) => r.name === o.name);
    const lagBytes = primary ? lsnDiff(primary.currentLsn, o.replayLsn) : null;
    return {
      name: o.name,
      host: o.host,
      port: o.port,
      role: 'replica',
      timeline: o.timeline ?? null,
      lsn: o.replayLsn ?? null,
      receivedLsn: o.receiveLsn ?? null,
      replayedLsn: o.replayLsn ?? null,
      lagBytes,
      lagSeconds: replicaLagSeconds(o, primary, rep?.replayLagSeconds ?? null),
      syncState: rep?.syncState ?? null,
      streaming: primary ? streamsFrom(o, primary) : false,
      reachable: true,
    };
  });
}

export function replicaLagSeconds(
  replica: NodeObservation,
  primary: NodeObservation | undefined,
  measured: number | null,
): number | null {
  if (!primary) return null;
  if (compareLsn(replica.replayLsn, primary.currentLsn) >= 0) return 0;
  if (measured !== null && measured !== undefined) return Math.round(measured * 1000) / 1000;
  if (replica.replayTimestamp && replica.serverNow)
    return Math.max(0, Math.round((replica.serverNow - replica.replayTimestamp) * 1000) / 1000);
  return null;
}
