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
 * every member of the synchronous set must be observable (a commit acknowledged by one of them only
 * must not be lost by promoting another).
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
}

export type Action =
  | { type: 'none' }
  | { type: 'adopt'; node: string; fence?: string }
  | { type: 'failover'; from: string; to: string }
  | { type: 'fence'; node: string }
  | { type: 'rejoin'; node: string }
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
    ...partial,
  };
}

const writable = (o: NodeObservation) => o.reachable && o.inRecovery === false;

export function tick(prev: MonitorState, observed: NodeObservation[], config: TickConfig, now: number): Decision {
  const state: MonitorState = { ...prev, notStreaming: { ...prev.notStreaming }, fenced: [...prev.fenced] };
  const byName = new Map(observed.map((o) => [o.name, o]));
  const none = (reason: string, evidence?: Record<string, unknown>): Decision => ({
    state,
    action: { type: 'none' },
    reason,
    evidence,
  });

  const p = state.primary ? byName.get(state.primary) : undefined;
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
    if (config.sync) {
      let desired = [...new Set([...state.syncSet, ...streaming])].filter((n) => n !== p.name).sort();
      // Never an empty list in sync mode: that would silently make commits asynchronous.
      if (desired.length === 0) desired = observed.map((o) => o.name).filter((n) => n !== p.name);
      if ((p.syncStandbyNames ?? '') !== syncStandbyNames(desired)) {
        state.syncSet = desired;
        return {
          state,
          action: { type: 'set-sync', node: p.name, names: desired },
          reason: `sync mode: setting synchronous_standby_names on ${p.name} to ${syncStandbyNames(desired)} (was '${p.syncStandbyNames ?? ''}')`,
        };
      }
      state.syncSet = desired;
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
  const still = replicas.filter((o) => streamsFrom(o, p));
  if (still.length)
    return none(
      `primary ${p.name} ${what} for ${state.failures} probes, but ${still.map((o) => o.name).join(', ')} still stream from it: not failing over (the monitor may be the one cut off)`,
      evidence,
    );
  const candidates = replicas.filter((o) => (config.priorities[o.name] ?? 1) > 0);
  if (candidates.length === 0)
    return none(`primary ${p.name} ${what} for ${state.failures} probes and no replica can be promoted`, evidence);
  if (config.sync) {
    const missing = state.syncSet.filter((n) => n !== p.name && !replicas.some((r) => r.name === n));
    if (missing.length)
      return none(
        `primary ${p.name} ${what}, but sync standby ${missing.join(', ')} cannot be checked: a commit acknowledged only by it could be lost, waiting`,
        evidence,
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
    return none(
      `primary ${p.name} ${what}, but the best replica ${best.name} is ${behind} bytes behind the last primary position seen (limit ${config.maxLagOnFailover}): not promoting`,
      evidence,
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
  };
}
