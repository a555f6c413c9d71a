import { syncStandbyNames } from '../local/cluster.js';
import { compareLsn, lsnDiff } from '../lsn.js';
import { type NodeObservation, streamsFrom } from '../probe.js';

/**
 * The monitor's decision function, pure: given what it remembers and what one round of probes saw,
 * say what to do and why. No I/O, no clock (the caller passes `now`), so every branch is unit-tested
 * without servers and the wiring (monitor.ts) only executes what this returns.
 *
 * Contract (in the spirit of Patroni's HA loop): one action per tick; a failover needs
 * `failureThreshold` consecutive failed probes of the primary AND no reachable replica still
 * streaming from it (so a monitor cut off from a healthy primary never promotes), and in sync mode
 * every member of the recorded synchronous set must be observable (a commit acknowledged by one of them
 * only must not be lost by promoting another). The recorded set follows the replicas that stream, as
 * Patroni's synchronous_mode does: a member joins the record before synchronous_standby_names names it,
 * and leaves the record only after the setting without it is in force and a remaining member has flushed
 * past the primary's position at that time (so it holds every commit the leaver could have acknowledged).
 * Crashed nodes (no postmaster, pg_control not "shut down") are restarted in place: replicas always,
 * as replicas; the primary only when no failover can be done and no node has a newer timeline.
 */
export interface TickConfig {
  /** Consecutive failed probes of the primary before it is declared lost. */
  failureThreshold: number;
  sync: boolean;
  /** Async mode: refuse to promote a replica this many bytes behind the last primary LSN seen. */
  maxLagOnFailover: number;
  /** Ticks a replica may go without streaming from the primary before it is re-pointed. */
  repointAfter: number;
  /** Ticks without streaming (after re-pointing) before it is rewound and restarted. */
  rejoinAfter: number;
  /** Node name -> priority (higher wins a tie on LSN; 0 = never promote). */
  priorities: Record<string, number>;
  /** A crashed node is restarted in place at most once per this many ms (default 10 s). */
  restartBackoffMs?: number;
  /**
   * Permanent physical replication slots (user-configured names): kept on the primary and on every
   * streaming replica, advanced there to the primary's position, so they survive a failover or switchover.
   */
  permanentSlots?: string[];
}

export interface MonitorState {
  primary: string | null;
  term: number;
  failures: number;
  firstFailureAt: number | null;
  lastPrimaryLsn: string | null;
  syncSet: string[];
  fenced: string[];
  notStreaming: Record<string, number>;
  /**
   * Sync mode, shrinking the recorded set: `names` is the synchronous_standby_names seen in force;
   * `lsn` the primary's position one probe later (null until then).
   */
  syncShrink: { names: string; lsn: string | null } | null;
  /** Timeline of the primary when last seen healthy (a crashed primary restarts only if none is newer). */
  lastPrimaryTimeline: number | null;
  /** Node -> when it was last restarted in place (for the backoff). */
  restartedAt: Record<string, number>;
}

export type Action =
  | { type: 'none' }
  | { type: 'adopt'; node: string; fence?: string }
  | { type: 'failover'; from: string; to: string }
  | { type: 'fence'; node: string }
  | { type: 'rejoin'; node: string }
  | { type: 'restart'; node: string; role: 'primary' | 'replica' }
  | { type: 'slots'; node: string; create: string[]; advance: Array<{ name: string; lsn: string }> }
  | { type: 'repoint'; node: string }
  | { type: 'set-sync'; node: string; names: string[] };

export interface Decision {
  state: MonitorState;
  action: Action;
  /** One sentence: what was decided and why, with the evidence (logged as is). */
  reason: string;
  evidence?: Record<string, unknown>;
}

export function initialState(partial: Partial<MonitorState> = {}): MonitorState {
  return {
    primary: null,
    term: 1,
    failures: 0,
    firstFailureAt: null,
    lastPrimaryLsn: null,
    syncSet: [],
    fenced: [],
    notStreaming: {},
    syncShrink: null,
    lastPrimaryTimeline: null,
    restartedAt: {},
    ...partial,
  };
}

const writable = (o: NodeObservation) => o.reachable && o.inRecovery === false;
/** Known to its host to have crashed: no postmaster, and pg_control does not say it was shut down. */
const crashed = (o: NodeObservation) => o.local?.running === false && o.local.crashed;

export function tick(prev: MonitorState, observed: NodeObservation[], config: TickConfig, now: number): Decision {
  const state: MonitorState = {
    ...prev,
    notStreaming: { ...prev.notStreaming },
    fenced: [...prev.fenced],
    restartedAt: { ...prev.restartedAt },
  };
  const backoff = config.restartBackoffMs ?? 10_000;
  const mayRestart = (name: string) => now - (state.restartedAt[name] ?? Number.NEGATIVE_INFINITY) >= backoff;
  const byName = new Map(observed.map((o) => [o.name, o]));
  const none = (reason: string, evidence?: Record<string, unknown>): Decision => ({
    state,
    action: { type: 'none' },
    reason,
    evidence,
  });

  const p = state.primary ? byName.get(state.primary) : undefined;
  /** A crashed replica (any node but the primary, not fenced) comes back in place, as a replica. */
  const restartCrashedReplica = (primary: string): Decision | null => {
    const o = observed.find((x) => x.name !== primary && !state.fenced.includes(x.name) && crashed(x));
    if (!o || !mayRestart(o.name)) return null;
    state.restartedAt[o.name] = now;
    return {
      state,
      action: { type: 'restart', node: o.name, role: 'replica' },
      reason: `${o.name} crashed (no postmaster, pg_control not shut down): restarting it in place as a replica`,
    };
  };
  if (!p) {
    const w = observed.filter(writable);
    if (w.length === 1)
      return {
        state,
        action: { type: 'adopt', node: w[0]!.name },
        reason: `adopting ${w[0]!.name}: the only node that accepts writes`,
      };
    if (w.length === 0) return none('no primary recorded and no node accepts writes: waiting');
    return none(`no primary recorded and ${w.map((o) => o.name).join(', ')} all accept writes: refusing to choose`);
  }

  if (writable(p)) {
    state.failures = 0;
    state.firstFailureAt = null;
    state.lastPrimaryLsn = p.currentLsn ?? state.lastPrimaryLsn;
    const rogue = observed.find((o) => o.name !== p.name && writable(o));
    if (rogue)
      return {
        state,
        action: { type: 'fence', node: rogue.name },
        reason: `fencing ${rogue.name}: it accepts writes but ${p.name} is the primary (term ${state.term})`,
      };
    const replicas = observed.filter((o) => o.name !== p.name && o.reachable && o.inRecovery);
    const streaming = replicas.filter((o) => streamsFrom(o, p)).map((o) => o.name);
    // A fenced old primary is done once it streams from the primary.
    state.fenced = state.fenced.filter((n) => !streaming.includes(n));
    state.lastPrimaryTimeline = p.timeline ?? state.lastPrimaryTimeline;
    if (config.sync) {
      const sync = syncStep(state, p, streaming, observed);
      if (sync) return sync;
    } else if (p.syncStandbyNames) {
      return {
        state,
        action: { type: 'set-sync', node: p.name, names: [] },
        reason: `async mode: clearing synchronous_standby_names on ${p.name} (was '${p.syncStandbyNames}')`,
      };
    }
    for (const f of state.fenced) {
      const o = byName.get(f);
      if (o && !o.reachable)
        return {
          state,
          action: { type: 'rejoin', node: f },
          reason: `rejoining fenced old primary ${f} as a replica of ${p.name} (pg_rewind, then start)`,
        };
    }
    const restart = restartCrashedReplica(p.name);
    if (restart) return restart;
    const slots = permanentSlotsStep(
      p,
      observed.filter((o) => streaming.includes(o.name)),
      config.permanentSlots ?? [],
    );
    if (slots) return { ...slots, state };
    for (const o of replicas) {
      if (streaming.includes(o.name)) {
        state.notStreaming[o.name] = 0;
        continue;
      }
      const n = (state.notStreaming[o.name] ?? 0) + 1;
      state.notStreaming[o.name] = n;
      const seen = o.walReceiver
        ? `receiver ${o.walReceiver.status} from port ${o.walReceiver.senderPort}`
        : 'no WAL receiver';
      if (n >= config.rejoinAfter) {
        state.notStreaming[o.name] = 0;
        return {
          state,
          action: { type: 'rejoin', node: o.name },
          reason: `replica ${o.name} has not streamed from ${p.name} for ${n} probes (${seen}) even after re-pointing: rewinding it`,
        };
      }
      if (n === config.repointAfter)
        return {
          state,
          action: { type: 'repoint', node: o.name },
          reason: `replica ${o.name} does not stream from ${p.name} (${seen}) for ${n} probes: re-pointing it`,
        };
    }
    return none(`primary ${p.name} healthy at ${p.currentLsn}; streaming replicas: ${streaming.join(', ') || 'none'}`);
  }

  // The recorded primary does not accept writes but another node does: a promotion whose
  // bookkeeping was lost (the acting monitor died between promoting and recording it). Promoting yet
  // another replica would make two primaries; adopt the writable one and fence the old.
  const promoted = observed.filter((o) => o.name !== p.name && writable(o));
  if (promoted.length === 1 && !writable(p)) {
    const n = promoted[0]!;
    // Already a replica (someone switched over by hand): nothing to fence.
    const fence = p.reachable ? undefined : p.name;
    return {
      state: { ...state, failures: 0, firstFailureAt: null },
      action: fence ? { type: 'adopt', node: n.name, fence } : { type: 'adopt', node: n.name },
      reason: `recorded primary ${p.name} does not accept writes but ${n.name} does (timeline ${n.timeline ?? '?'}): adopting ${n.name}${fence ? ` and fencing ${p.name}` : ''}`,
    };
  }

  // The primary failed this probe.
  state.failures += 1;
  state.firstFailureAt ??= now;
  const what = p.reachable ? 'is in recovery (no longer accepts writes)' : `unreachable (${p.error ?? 'no answer'})`;
  // A crashed replica back in place can be promoted, and in sync mode may be the member a failover waits for.
  const restart = restartCrashedReplica(p.name);
  if (restart) return restart;
  if (state.failures < config.failureThreshold)
    return none(`primary ${p.name} ${what}: failed probe ${state.failures}/${config.failureThreshold}`);

  const replicas = observed.filter((o) => o.name !== p.name && o.reachable && o.inRecovery);
  const evidence: Record<string, unknown> = {
    primary: p.name,
    primaryError: p.error ?? (p.reachable ? 'in recovery' : null),
    failedProbes: state.failures,
    failingForMs: now - state.firstFailureAt,
    lastPrimaryLsn: state.lastPrimaryLsn,
    replicas: observed
      .filter((o) => o.name !== p.name)
      .map((o) => ({
        name: o.name,
        reachable: o.reachable,
        receiveLsn: o.receiveLsn ?? null,
        receiver: o.walReceiver ? `${o.walReceiver.status}:${o.walReceiver.senderPort}` : null,
      })),
  };
  /**
   * No failover possible: a crashed primary restarts in place, as Patroni restarts PostgreSQL while it
   * holds the leader key. Crash recovery keeps every committed write; it is safe only if no other node
   * was promoted meanwhile (none accepts writes, checked above, and none is on a newer timeline) and the
   * node was never fenced.
   */
  const blocked = (reason: string): Decision => {
    const tl = Math.max(p.timeline ?? 0, state.lastPrimaryTimeline ?? 0);
    const newer = observed.filter((o) => o.name !== p.name && (o.timeline ?? 0) > tl).map((o) => o.name);
    if (crashed(p) && !state.fenced.includes(p.name) && tl > 0 && newer.length === 0 && mayRestart(p.name)) {
      state.restartedAt[p.name] = now;
      return {
        state,
        action: { type: 'restart', node: p.name, role: 'primary' },
        reason: `${reason}; ${p.name} crashed (no postmaster, pg_control not shut down) and no node is on a timeline above ${tl}: restarting it in place as the primary`,
        evidence,
      };
    }
    return none(reason, evidence);
  };
  const still = replicas.filter((o) => streamsFrom(o, p));
  if (still.length)
    return none(
      `primary ${p.name} ${what} for ${state.failures} probes, but ${still.map((o) => o.name).join(', ')} still stream from it: not failing over (the monitor may be the one cut off)`,
      evidence,
    );
  const candidates = replicas.filter((o) => (config.priorities[o.name] ?? 1) > 0);
  if (candidates.length === 0)
    return blocked(`primary ${p.name} ${what} for ${state.failures} probes and no replica can be promoted`);
  if (config.sync) {
    const missing = state.syncSet.filter((n) => n !== p.name && !replicas.some((r) => r.name === n));
    if (missing.length)
      return blocked(
        `primary ${p.name} ${what}, but sync standby ${missing.join(', ')} cannot be checked: a commit acknowledged only by it could be lost, waiting`,
      );
  }
  candidates.sort(
    (a, b) =>
      compareLsn(b.receiveLsn, a.receiveLsn) ||
      (config.priorities[b.name] ?? 1) - (config.priorities[a.name] ?? 1) ||
      a.name.localeCompare(b.name),
  );
  const best = candidates[0]!;
  const behind = lsnDiff(state.lastPrimaryLsn, best.receiveLsn);
  if (!config.sync && behind !== null && behind > config.maxLagOnFailover)
    return blocked(
      `primary ${p.name} ${what}, but the best replica ${best.name} is ${behind} bytes behind the last primary position seen (limit ${config.maxLagOnFailover}): not promoting`,
    );
  return {
    state,
    action: { type: 'failover', from: p.name, to: best.name },
    reason: `primary ${p.name} ${what} for ${state.failures} probes (${now - state.firstFailureAt} ms) and no replica streams from it: promoting ${best.name} (received ${best.receiveLsn}, highest of ${candidates.map((c) => `${c.name}@${c.receiveLsn}`).join(', ')})`,
    evidence: { ...evidence, candidate: best.name, behindBytes: behind },
  };
}

/** State after a failover or switchover the wiring completed. */
export function afterPromotion(
  prev: MonitorState,
  from: string | null,
  to: string,
  syncSet: string[],
  fenceOld: boolean,
): MonitorState {
  return {
    ...prev,
    primary: to,
    term: prev.term + 1,
    failures: 0,
    firstFailureAt: null,
    syncSet,
    fenced: [...new Set([...prev.fenced.filter((n) => n !== to), ...(fenceOld && from ? [from] : [])])],
    notStreaming: {},
    syncShrink: null,
    lastPrimaryTimeline: null,
  };
}

/** WAL a replica's copy of a permanent slot may trail the primary's before it is advanced (one segment). */
const SLOT_ADVANCE_BYTES = 16 * 1024 * 1024;

/**
 * Permanent slots, as Patroni's `slots:`: created where missing, first on the primary, then on each
 * streaming replica; a replica's copy is advanced to the primary's restart_lsn (never past its own
 * replay position) once it trails by a WAL segment, so it holds WAL for the consumer after a promotion
 * without holding it forever.
 */
function permanentSlotsStep(
  p: NodeObservation,
  replicas: NodeObservation[],
  names: string[],
): Omit<Decision, 'state'> | null {
  if (!names.length || !p.slots) return null;
  const missingOn = (o: NodeObservation) => names.filter((n) => !o.slots?.some((s) => s.name === n));
  const onPrimary = missingOn(p);
  if (onPrimary.length)
    return {
      action: { type: 'slots', node: p.name, create: onPrimary, advance: [] },
      reason: `permanent slots: creating ${onPrimary.join(', ')} on the primary ${p.name}`,
    };
  for (const r of replicas) {
    if (!r.slots) continue;
    const create = missingOn(r);
    const advance: Array<{ name: string; lsn: string }> = [];
    for (const name of names) {
      const target = p.slots.find((s) => s.name === name)?.restartLsn ?? null;
      const mine = r.slots.find((s) => s.name === name);
      if (!target || !mine) continue;
      const lsn = compareLsn(target, r.replayLsn) <= 0 ? target : (r.replayLsn ?? null);
      if (!lsn || compareLsn(lsn, mine.restartLsn) <= 0) continue;
      if (mine.restartLsn && (lsnDiff(lsn, mine.restartLsn) ?? 0) < SLOT_ADVANCE_BYTES) continue;
      advance.push({ name, lsn });
    }
    if (create.length || advance.length)
      return {
        action: { type: 'slots', node: r.name, create, advance },
        reason: `permanent slots on replica ${r.name}: ${[
          create.length ? `creating ${create.join(', ')}` : '',
          advance.length ? `advancing ${advance.map((a) => `${a.name} to ${a.lsn}`).join(', ')}` : '',
        ]
          .filter(Boolean)
          .join('; ')}`,
      };
  }
  return null;
}

/**
 * Sync mode on a healthy primary: synchronous_standby_names = ANY 1 (replicas streaming now), so a dead
 * replica stops being a member whose answer a failover must wait for. The recorded set (what a
 * failover checks) grows before the setting does and shrinks only once that is safe: the setting
 * without the leaver is in force (so it can acknowledge nothing more), and a remaining member has
 * flushed past the primary's position one probe after that (so it holds every commit the leaver may
 * have acknowledged alone). Returns the decision, or null when there is nothing to do. Mutates `state`.
 */
function syncStep(
  state: MonitorState,
  p: NodeObservation,
  streaming: string[],
  observed: NodeObservation[],
): Decision | null {
  const applied = p.syncStandbyNames ?? '';
  let desired: string[] | null = streaming.filter((n) => n !== p.name).sort();
  if (desired.length === 0)
    // No replica streams: keep the set in force (commits wait: strict mode). Never an empty list in sync
    // mode: that would silently make commits asynchronous.
    desired = applied
      ? null
      : state.syncSet.length
        ? state.syncSet
        : observed.map((o) => o.name).filter((n) => n !== p.name);
  if (desired && applied !== syncStandbyNames(desired)) {
    state.syncSet = [...new Set([...state.syncSet, ...desired])].sort();
    state.syncShrink = null;
    return {
      state,
      action: { type: 'set-sync', node: p.name, names: desired },
      reason: `sync mode: setting synchronous_standby_names on ${p.name} to ${syncStandbyNames(desired)} (was '${applied}')`,
    };
  }
  const keep = desired ?? state.syncSet;
  const leaving = state.syncSet.filter((n) => !keep.includes(n));
  if (!desired || leaving.length === 0) {
    state.syncShrink = null;
    return null;
  }
  if (state.syncShrink?.names !== applied) {
    state.syncShrink = { names: applied, lsn: null };
    return null;
  }
  if (state.syncShrink.lsn === null) {
    state.syncShrink = { names: applied, lsn: p.currentLsn ?? null };
    return null;
  }
  const mark = state.syncShrink.lsn;
  const flushed = (name: string) => {
    const viaPrimary = p.replication?.find((r) => r.name === name)?.flushLsn ?? null;
    const own = observed.find((o) => o.name === name)?.receiveLsn ?? null;
    return compareLsn(viaPrimary, own) >= 0 ? viaPrimary : own;
  };
  const holder = desired.find((n) => compareLsn(flushed(n), mark) >= 0);
  if (!holder) return null;
  state.syncSet = [...desired];
  state.syncShrink = null;
  return {
    state,
    action: { type: 'none' },
    reason: `sync mode: ${leaving.join(', ')} left the synchronous set of ${p.name} (it does not stream; ${holder} flushed ${flushed(holder)}, past ${mark} where ${applied} was in force): a failover no longer waits for it`,
  };
}
