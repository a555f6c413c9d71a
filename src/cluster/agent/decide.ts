import { compareLsn, lsnDiff } from '../lsn.js';

/**
 * The node agent's decisions (`bulwark cluster agent`, one per database host), as a pure function of
 * what one loop observed: the local PostgreSQL, the agent's own lease renewals and the keys in etcd.
 * The agent only carries out what this returns; every rule is unit-tested in test/cluster/agent-decide.
 *
 * The safety rule (never two writable nodes): the leader key is bound to the agent's etcd lease. A
 * new leader can only be created once the old key is gone, i.e. once the old leader's lease expired
 * on etcd's clock, at least `ttl` after the old agent *sent* its last successful renewal. The old
 * agent fences its own primary as soon as its last renewal is older than `ttl - margin` (`leaseValid`
 * false), so its primary is down before anybody may promote.
 */

/** What a member publishes under members/<name> (bound to its lease: gone when the agent is). */
export interface MemberInfo {
  name: string;
  host: string;
  port: number;
  /** REST address of the agent (http://host:port). */
  api?: string;
  role: 'primary' | 'replica' | 'stopped' | 'uninitialized';
  lsn: string | null;
  timeline: number | null;
  nofailover: boolean;
  priority: number;
}

export interface LocalPostgres {
  /** The data folder holds a cluster (PG_VERSION present). */
  initialized: boolean;
  running: boolean;
  /** Running and answering queries. */
  inRecovery: boolean | null;
  /** Primary: current WAL position; replica: the further of received and replayed. */
  lsn: string | null;
  timeline: number | null;
  /** Replica: host:port its WAL receiver streams from (null when not streaming). */
  streamingFrom: string | null;
  /** host:port of the primary_conninfo it is configured with. */
  upstream: string | null;
  /** The node was demoted (or crashed as a primary) and must be rewound before it follows a new leader. */
  needsRewind: boolean;
}

export interface AgentObservation {
  me: string;
  now: number;
  ttlMs: number;
  /** When the last successful lease renewal was sent (ms epoch); null when never / lease lost. */
  lastRenewalSentAt: number | null;
  paused: boolean;
  nofailover: boolean;
  priority: number;
  /** Never promote a replica further behind the last known primary position than this (bytes). */
  maxLagOnFailover: number;
  pg: LocalPostgres;
  /** The leader key: who holds the lease to run the primary. */
  leader: { name: string; host: string; port: number } | null;
  /** The leader key names us but is bound to another lease (this agent restarted): we may take it back. */
  leaderIsStale?: boolean;
  /** Other members with a live member key. */
  members: MemberInfo[];
  /** Whoever bootstrapped the cluster (the initialize key), null before anyone did. */
  initializedBy: string | null;
  /** The last WAL position the leader published (optime key). */
  leaderOptime: string | null;
  /** A planned switchover: `to` takes over at `at` (ms epoch). */
  switchover?: { to: string; at: number } | null;
  /**
   * The recorded synchronous set (sync key), written by a leader in synchronous mode: only these
   * members may be promoted. Absent (null) when no leader runs in synchronous mode.
   */
  sync?: SyncRecord | null;
}

/** The sync key: the replicas that hold every commit `leader` acknowledged (synchronous mode). */
export interface SyncRecord {
  leader: string;
  members: string[];
}

export type AgentAction =
  | 'none'
  | 'fence'
  | 'bootstrap'
  | 'clone'
  | 'start-primary'
  | 'start-replica'
  | 'promote'
  | 'acquire'
  | 'follow'
  | 'rewind'
  | 'step-down'
  | 'cancel-switchover';

export interface AgentDecision {
  action: AgentAction;
  reason: string;
}

/** How long before the lease's TTL the agent must have fenced its primary: room for one slow kill. */
export function fenceMarginMs(ttlMs: number): number {
  return Math.min(Math.max(1500, ttlMs * 0.25), ttlMs / 2);
}

/** True while this agent may be sure its lease (and so its leader key) still lives on etcd. */
export function leaseValid(now: number, lastRenewalSentAt: number | null, ttlMs: number): boolean {
  return lastRenewalSentAt !== null && now - lastRenewalSentAt < ttlMs - fenceMarginMs(ttlMs);
}

const hostPort = (m: { host: string; port: number }) => `${m.host}:${m.port}`;

export function decide(o: AgentObservation): AgentDecision {
  const valid = leaseValid(o.now, o.lastRenewalSentAt, o.ttlMs);
  const writable = o.pg.running && o.pg.inRecovery === false;
  if (!valid && !o.paused) {
    if (writable)
      return { action: 'fence', reason: 'the lease could not be renewed within the TTL: fencing the primary' };
    if (o.pg.initialized && !o.pg.running)
      return { action: 'start-replica', reason: 'etcd unreachable: starting PostgreSQL read-only (standby)' };
    return { action: 'none', reason: 'etcd unreachable: no action without a valid lease' };
  }
  if (o.paused) return { action: 'none', reason: 'cluster paused: no automatic action' };

  if (!o.pg.initialized) {
    if (o.leader && o.leader.name !== o.me)
      return { action: 'clone', reason: `empty data folder: cloning from leader ${o.leader.name}` };
    if (!o.initializedBy) return { action: 'bootstrap', reason: 'no cluster yet: initializing it here' };
    return { action: 'none', reason: `cluster initialized by ${o.initializedBy}: waiting for a leader to clone from` };
  }

  const leaderIsMe = o.leader?.name === o.me;
  if (leaderIsMe) {
    if (o.leaderIsStale)
      return { action: 'acquire', reason: 'the leader key is ours from before a restart: taking it back' };
    if (!o.pg.running)
      return { action: 'start-primary', reason: 'leader and PostgreSQL is not running: restarting it in place' };
    if (o.pg.inRecovery) return { action: 'promote', reason: 'leader holding a replica: promoting it' };
    const sw = o.switchover;
    if (sw && sw.to !== o.me && o.now >= sw.at) {
      const target = o.members.find((m) => m.name === sw.to);
      if (target?.role !== 'replica')
        return { action: 'cancel-switchover', reason: `switchover to ${sw.to} cancelled: it is not a running replica` };
      return {
        action: 'step-down',
        reason: `switchover: stopping this primary cleanly and handing the leader key to ${sw.to}`,
      };
    }
    return { action: 'none', reason: 'leader, primary running' };
  }

  if (o.leader) {
    const l = o.leader;
    if (writable) return { action: 'fence', reason: `${l.name} holds the leader key: fencing this writable primary` };
    if (o.pg.needsRewind) return { action: 'rewind', reason: `former primary: rewinding onto leader ${l.name}` };
    if (!o.pg.running)
      return { action: 'start-replica', reason: `PostgreSQL not running: starting it as a replica of ${l.name}` };
    if (o.pg.upstream !== hostPort(l))
      return { action: 'follow', reason: `replicating from ${o.pg.upstream ?? 'nothing'}: re-pointing to ${l.name}` };
    return { action: 'none', reason: `replica of ${l.name}` };
  }

  // No leader: the lease of the last one expired (or it gave the key up).
  if (writable)
    return { action: 'acquire', reason: 'no leader and this node is a running primary: taking the leader key' };
  if (!o.pg.running)
    return { action: 'start-replica', reason: 'no leader: starting PostgreSQL read-only to compare positions' };
  const sw = o.switchover;
  if (sw?.to === o.me)
    return { action: 'acquire', reason: 'no leader and this node is the switchover target: taking the leader key' };
  if (sw && o.members.some((m) => m.name === sw.to && m.role === 'replica'))
    return { action: 'none', reason: `no leader: waiting for the switchover target ${sw.to}` };
  if (o.nofailover) return { action: 'none', reason: 'no leader, and this node is tagged nofailover' };
  const sync = o.sync;
  if (sync) {
    // Synchronous mode: every acknowledged commit is on at least one member of the recorded set, so
    // the member of that set with the most WAL has them all. Promote only from the set, and only when
    // every other member of it is visible (a missing one may hold the newest acknowledged commits).
    if (!sync.members.includes(o.me))
      return {
        action: 'none',
        reason: `no leader, but this node is not in the synchronous set [${sync.members.join(', ')}]: it may miss acknowledged commits`,
      };
    const missing = sync.members.filter((n) => n !== o.me && !o.members.some((m) => m.name === n && m.lsn !== null));
    if (missing.length)
      return {
        action: 'none',
        reason: `no leader: synchronous member ${missing.join(', ')} not visible, it may hold acknowledged commits this node lacks`,
      };
  }
  if (o.leaderOptime && o.pg.lsn) {
    const behind = lsnDiff(o.leaderOptime, o.pg.lsn);
    if (behind !== null && behind > o.maxLagOnFailover)
      return {
        action: 'none',
        reason: `no leader, but this node is ${behind} bytes behind the last primary position (max ${o.maxLagOnFailover})`,
      };
  }
  const better = o.members.find(
    (m) =>
      m.role !== 'stopped' &&
      m.role !== 'uninitialized' &&
      !m.nofailover &&
      (!sync || sync.members.includes(m.name)) &&
      ahead(m, o),
  );
  if (better) return { action: 'none', reason: `no leader: ${better.name} is a better candidate` };
  return { action: 'acquire', reason: 'no leader and no member is further ahead: taking the leader key' };
}

/** Is member `m` a better promotion candidate than us: further WAL, then higher priority, then name. */
function ahead(m: MemberInfo, o: AgentObservation): boolean {
  const c = compareLsn(m.lsn, o.pg.lsn);
  if (c !== 0) return c > 0;
  if (m.priority !== o.priority) return m.priority > o.priority;
  return m.name < o.me;
}

/** What the leader's synchronous-mode step sees each loop. */
export interface SyncObservation {
  me: string;
  /** The sync key as read from etcd (any leader's), null when absent. */
  recorded: SyncRecord | null;
  /** Members whose WAL sender is in state `streaming` on our primary (caught up, healthy). */
  streaming: string[];
  /** Names in the synchronous_standby_names in force now (read back after the reload). */
  inForce: string[];
  /** Streaming members whose flush position reached the primary's position taken after `inForce` was in force. */
  caughtUp: string[];
}

export type SyncStep =
  | { action: 'none'; reason: string }
  | { action: 'record'; members: string[]; reason: string }
  | { action: 'configure'; names: string[]; reason: string }
  | { action: 'wait-catch-up'; reason: string };

const same = (a: string[], b: string[]) => a.length === b.length && a.every((x) => b.includes(x));

/**
 * The leader's synchronous replication step (synchronous mode), one action per call: the agent
 * carries it out and calls again. `synchronous_standby_names` = ANY 1 (streaming replicas), so a commit
 * is acknowledged once one of them flushed it. The invariant: every acknowledged commit is on at
 * least one member of the recorded set (the sync key), which is where a failover may pick from.
 * - a member enters the record before the setting names it when the record already has a member
 *   (then someone in it holds everything, and it gains one more candidate); into an empty record
 *   only after the setting names it and it flushed past the primary's position (it holds everything);
 * - a member leaves the record only after the setting without it is in force and a remaining member
 *   flushed past the primary's position (taken then): that one holds every commit the leaver could
 *   have acknowledged alone;
 * - no healthy replica at all: the record is emptied *first* (no failover is allowed from now on),
 *   then the setting is cleared and the primary goes on alone (Patroni's non-strict synchronous_mode).
 */
export function decideSync(o: SyncObservation): SyncStep {
  const want = [...o.streaming].sort();
  const ours = o.recorded?.leader === o.me;
  // A new leader starts from an empty record: nobody else holds what it alone acknowledges from now on.
  const recorded = ours ? o.recorded!.members : [];
  if (!ours)
    return { action: 'record', members: [], reason: `new leader: synchronous set recorded as ${o.me}'s, empty` };
  if (want.length === 0) {
    if (recorded.length)
      return { action: 'record', members: [], reason: 'no healthy replica: emptying the synchronous set first' };
    if (o.inForce.length)
      return {
        action: 'configure',
        names: [],
        reason: 'no healthy replica: the primary goes on without a sync standby',
      };
    return { action: 'none', reason: 'no healthy replica: not synchronous, no failover possible' };
  }
  if (recorded.length) {
    const joiners = want.filter((n) => !recorded.includes(n));
    if (joiners.length)
      return {
        action: 'record',
        members: [...recorded, ...joiners].sort(),
        reason: `${joiners.join(', ')} streaming: recorded in the synchronous set before it is named`,
      };
  }
  if (!same(o.inForce, want))
    return { action: 'configure', names: want, reason: `synchronous_standby_names = ANY 1 (${want.join(', ')})` };
  if (same(recorded, want)) return { action: 'none', reason: `synchronous set [${want.join(', ')}]` };
  // The setting is in force; the record differs by leavers (or is empty): wait for a member to catch up.
  const holder = want.find((n) => o.caughtUp.includes(n));
  if (!holder)
    return { action: 'wait-catch-up', reason: `waiting for one of ${want.join(', ')} to flush past the switch` };
  return {
    action: 'record',
    members: recorded.length ? want : o.caughtUp.filter((n) => want.includes(n)).sort(),
    reason: `${holder} flushed past the switch: synchronous set [${want.join(', ')}]`,
  };
}
