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
  if (o.leaderOptime && o.pg.lsn) {
    const behind = lsnDiff(o.leaderOptime, o.pg.lsn);
    if (behind !== null && behind > o.maxLagOnFailover)
      return {
        action: 'none',
        reason: `no leader, but this node is ${behind} bytes behind the last primary position (max ${o.maxLagOnFailover})`,
      };
  }
  const better = o.members.find(
    (m) => m.role !== 'stopped' && m.role !== 'uninitialized' && !m.nofailover && ahead(m, o),
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
