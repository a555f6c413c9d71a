import { parseDuration } from '../../config/duration.js';
import { UsageError } from '../../lib/errors.js';
import type { LoadOptions } from '../api.js';

/** A piecewise-linear target: from the previous stage's target to `target` over `durationMs`. */
export interface PlanStage {
  durationMs: number;
  target: number;
}

/**
 * What an engine executes, in plain numbers. Closed model: the number of running VUs follows the
 * stages. Open model: the arrival rate (iterations per second) follows the stages, and iterations
 * start on schedule whether or not earlier ones finished.
 */
export type Plan =
  | {
      kind: 'closed';
      executor: 'ramping-vus' | 'constant-vus';
      start: number;
      stages: PlanStage[];
      totalMs: number;
      gracefulRampDownMs: number;
      gracefulStopMs: number;
    }
  | {
      kind: 'open';
      executor: 'constant-arrival-rate' | 'ramping-arrival-rate';
      /** Iterations per second at t=0. */
      start: number;
      stages: PlanStage[];
      totalMs: number;
      preAllocatedVUs: number;
      maxVUs: number;
      gracefulStopMs: number;
    }
  | {
      /** A fixed number of iterations: shared by the VUs, or the same number for each VU (k6). */
      kind: 'iterations';
      executor: 'shared-iterations' | 'per-vu-iterations';
      vus: number;
      iterations: number;
      /** VUs throughout (for the live view). */
      start: number;
      stages: PlanStage[];
      /** maxDuration: the iterations not started by then are not run. */
      totalMs: number;
      gracefulStopMs: number;
    }
  | {
      /**
       * Locust's LoadTestShape: the scenario's `shape` function, called every 100 ms with the elapsed
       * seconds, returns { users, spawnRate? } or null to end. Engines call their own copy of it.
       */
      kind: 'shape';
      executor: 'shape';
      start: number;
      stages: PlanStage[];
      /** maxDuration: the run ends then if the shape has not ended it. */
      totalMs: number;
      gracefulStopMs: number;
    };

/** One named scenario of a run: its plan, when it starts, its tags and which user types it runs. */
export interface ScenarioPlan {
  name: string;
  plan: Plan;
  startMs: number;
  /** Added to every sample of the scenario (with `scenario: name` when the run has `scenarios`). */
  tags: Record<string, string>;
  /** Indexes into the scenario file's `users`. */
  users: number[];
}

/** Command-line overrides (Locust's --users/--spawn-rate/--run-time, k6's --duration). */
export interface LoadOverrides {
  users?: number;
  spawnRate?: number;
  duration?: string | number;
}

const DEFAULT_GRACE = 30_000;

function positiveInt(v: unknown, where: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0)
    throw new UsageError(`${where} must be a whole number >= 0 (got ${String(v)})`, 'BULWARK_E_SCENARIO');
  return v;
}
function positiveNumber(v: unknown, where: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0)
    throw new UsageError(`${where} must be a number >= 0 (got ${String(v)})`, 'BULWARK_E_SCENARIO');
  return v;
}

function stagesOf(stages: unknown, where: string, scale = 1): PlanStage[] {
  if (!Array.isArray(stages) || stages.length === 0)
    throw new UsageError(`${where} must be a non-empty list of { duration, target }`, 'BULWARK_E_SCENARIO');
  return stages.map((s, i) => ({
    durationMs: parseDuration(s?.duration, `${where}[${i}].duration`),
    target: positiveNumber(s?.target, `${where}[${i}].target`) * scale,
  }));
}

/** Turn the scenario's `load` (and command-line overrides) into a Plan. `where` prefixes errors. */
export function planLoad(load: LoadOptions | undefined, overrides: LoadOverrides = {}, where = 'load'): Plan {
  if (overrides.users !== undefined) {
    // Locust style: ramp to N users at R users/s, hold; the duration includes the ramp.
    const users = positiveInt(overrides.users, '--users');
    const rate = overrides.spawnRate ?? users;
    if (!(rate > 0)) throw new UsageError('--spawn-rate must be > 0');
    const totalMs = parseDuration(overrides.duration ?? '30s', '--duration');
    const rampMs = Math.min(totalMs, (users / rate) * 1000);
    const rampTarget = rampMs < (users / rate) * 1000 ? (users * rampMs) / ((users / rate) * 1000) : users;
    const stages = [{ durationMs: rampMs, target: rampTarget }];
    if (totalMs > rampMs) stages.push({ durationMs: totalMs - rampMs, target: rampTarget });
    return {
      kind: 'closed',
      executor: 'ramping-vus',
      start: 0,
      stages,
      totalMs,
      gracefulRampDownMs: DEFAULT_GRACE,
      gracefulStopMs: DEFAULT_GRACE,
    };
  }
  if (overrides.spawnRate !== undefined) throw new UsageError('--spawn-rate needs --users');
  const l = (load ?? { vus: 1, duration: '10s' }) as unknown as Record<string, unknown>;
  const executor = (l.executor as string | undefined) ?? ('stages' in l ? 'ramping-vus' : 'constant-vus');
  const known: Record<string, string[]> = {
    'ramping-vus': ['executor', 'startVUs', 'stages', 'gracefulRampDown', 'gracefulStop'],
    'constant-vus': ['executor', 'vus', 'duration', 'gracefulStop'],
    'constant-arrival-rate': ['executor', 'rate', 'timeUnit', 'duration', 'preAllocatedVUs', 'maxVUs', 'gracefulStop'],
    'ramping-arrival-rate': [
      'executor',
      'startRate',
      'timeUnit',
      'stages',
      'preAllocatedVUs',
      'maxVUs',
      'gracefulStop',
    ],
    'shared-iterations': ['executor', 'vus', 'iterations', 'maxDuration', 'gracefulStop'],
    'per-vu-iterations': ['executor', 'vus', 'iterations', 'maxDuration', 'gracefulStop'],
    shape: ['executor', 'shape', 'maxDuration', 'gracefulStop'],
  };
  const keys = known[executor];
  if (!keys)
    throw new UsageError(
      `${where}.executor: unknown executor "${executor}" (use ${Object.keys(known).join(', ')})`,
      'BULWARK_E_SCENARIO',
    );
  for (const k of Object.keys(l)) {
    if (!keys.includes(k))
      throw new UsageError(`${where}.${k}: unknown option for executor ${executor}`, 'BULWARK_E_SCENARIO');
  }
  const gracefulStopMs =
    l.gracefulStop === undefined ? DEFAULT_GRACE : parseDuration(l.gracefulStop as string, `${where}.gracefulStop`);
  const overrideMs = overrides.duration === undefined ? undefined : parseDuration(overrides.duration, '--duration');

  if (executor === 'shared-iterations' || executor === 'per-vu-iterations') {
    const vus = l.vus === undefined ? 1 : positiveInt(l.vus, `${where}.vus`);
    if (vus < 1) throw new UsageError(`${where}.vus must be >= 1`, 'BULWARK_E_SCENARIO');
    const iterations = l.iterations === undefined ? 1 : positiveInt(l.iterations, `${where}.iterations`);
    if (executor === 'shared-iterations' && iterations < vus)
      throw new UsageError(`${where}.iterations (${iterations}) must be >= vus (${vus})`, 'BULWARK_E_SCENARIO');
    // As k6: 10 minutes unless set; --duration replaces it.
    const totalMs =
      overrideMs ??
      (l.maxDuration === undefined ? 600_000 : parseDuration(l.maxDuration as string, `${where}.maxDuration`));
    return {
      kind: 'iterations',
      executor,
      vus,
      iterations,
      start: vus,
      stages: [{ durationMs: totalMs, target: vus }],
      totalMs,
      gracefulStopMs,
    };
  }
  if (executor === 'shape') {
    if (typeof l.shape !== 'function')
      throw new UsageError(
        `${where}.shape must be a function (elapsedSeconds) => { users, spawnRate? } | null`,
        'BULWARK_E_SCENARIO',
      );
    const totalMs =
      overrideMs ??
      (l.maxDuration === undefined ? 3_600_000 : parseDuration(l.maxDuration as string, `${where}.maxDuration`));
    return { kind: 'shape', executor: 'shape', start: 0, stages: [], totalMs, gracefulStopMs };
  }

  if (executor === 'ramping-vus' || executor === 'constant-vus') {
    let start: number;
    let stages: PlanStage[];
    if (executor === 'constant-vus') {
      const vus = positiveInt(l.vus, `${where}.vus`);
      const ms = overrideMs ?? parseDuration(l.duration as string, `${where}.duration`);
      start = vus;
      stages = [{ durationMs: ms, target: vus }];
    } else {
      if (overrideMs !== undefined)
        throw new UsageError('--duration cannot replace staged load: add --users N (and --spawn-rate R)');
      start = l.startVUs === undefined ? 0 : positiveInt(l.startVUs, `${where}.startVUs`);
      stages = stagesOf(l.stages, `${where}.stages`);
      for (const [i, s] of stages.entries()) positiveInt(s.target, `${where}.stages[${i}].target`);
    }
    const gracefulRampDownMs =
      l.gracefulRampDown === undefined
        ? DEFAULT_GRACE
        : parseDuration(l.gracefulRampDown as string, `${where}.gracefulRampDown`);
    const totalMs = stages.reduce((a, s) => a + s.durationMs, 0);
    return {
      kind: 'closed',
      executor: executor as 'ramping-vus',
      start,
      stages,
      totalMs,
      gracefulRampDownMs,
      gracefulStopMs,
    };
  }

  const timeUnitMs = l.timeUnit === undefined ? 1000 : parseDuration(l.timeUnit as string, `${where}.timeUnit`);
  if (timeUnitMs <= 0) throw new UsageError(`${where}.timeUnit must be > 0`, 'BULWARK_E_SCENARIO');
  const perSecond = 1000 / timeUnitMs;
  const maxVUs = positiveInt(l.maxVUs, `${where}.maxVUs`);
  if (maxVUs < 1) throw new UsageError(`${where}.maxVUs must be >= 1`, 'BULWARK_E_SCENARIO');
  const preAllocatedVUs = Math.min(
    maxVUs,
    l.preAllocatedVUs === undefined ? Math.min(maxVUs, 10) : positiveInt(l.preAllocatedVUs, `${where}.preAllocatedVUs`),
  );
  let start: number;
  let stages: PlanStage[];
  if (executor === 'constant-arrival-rate') {
    const rate = positiveNumber(l.rate, `${where}.rate`) * perSecond;
    const ms = overrideMs ?? parseDuration(l.duration as string, `${where}.duration`);
    start = rate;
    stages = [{ durationMs: ms, target: rate }];
  } else {
    if (overrideMs !== undefined) throw new UsageError('--duration cannot replace a ramping-arrival-rate load');
    start = l.startRate === undefined ? 0 : positiveNumber(l.startRate, `${where}.startRate`) * perSecond;
    stages = stagesOf(l.stages, `${where}.stages`, perSecond);
  }
  const totalMs = stages.reduce((a, s) => a + s.durationMs, 0);
  return {
    kind: 'open',
    executor: executor as 'constant-arrival-rate',
    start,
    stages,
    totalMs,
    preAllocatedVUs,
    maxVUs,
    gracefulStopMs,
  };
}

/** The plan's target (VUs, or iterations/s) at `tMs` after the start: linear within each stage. */
export function targetAt(plan: Pick<Plan, 'start' | 'stages'>, tMs: number): number {
  let from = plan.start;
  let t0 = 0;
  for (const s of plan.stages) {
    if (tMs < t0 + s.durationMs) return from + ((s.target - from) * (tMs - t0)) / s.durationMs;
    from = s.target;
    t0 += s.durationMs;
  }
  return from;
}

/** Iterations an open plan should have started by `tMs` (the integral of the rate; exact). */
export function arrivalsBy(plan: Pick<Plan, 'start' | 'stages'>, tMs: number): number {
  let from = plan.start;
  let t0 = 0;
  let total = 0;
  for (const s of plan.stages) {
    const end = t0 + s.durationMs;
    if (tMs <= t0) break;
    const span = Math.min(tMs, end) - t0;
    const rateAtSpanEnd = from + ((s.target - from) * span) / (s.durationMs || 1);
    total += ((from + rateAtSpanEnd) / 2) * (span / 1000);
    from = s.target;
    t0 = end;
  }
  return total;
}

/** Earliest time (ms) at which arrivalsBy reaches `n`, or Infinity if it never does. */
export function timeOfArrival(plan: Pick<Plan, 'start' | 'stages'> & { totalMs: number }, n: number): number {
  if (arrivalsBy(plan, plan.totalMs) < n) return Number.POSITIVE_INFINITY;
  let lo = 0;
  let hi = plan.totalMs;
  for (let i = 0; i < 50 && hi - lo > 0.01; i++) {
    const mid = (lo + hi) / 2;
    if (arrivalsBy(plan, mid) >= n) hi = mid;
    else lo = mid;
  }
  return hi;
}

/** round(a / b) for integers a >= 0, b > 0, halves up, without floating-point error. */
function roundDiv(a: number, b: number): number {
  return Math.floor((2 * a + b) / (2 * b));
}

/**
 * How many of `total` items (VUs, arrivals, iterations) belong to worker `w` of `n`: k6's execution
 * segment rule, round(N * to) - round(N * from) with the segment [w/n, (w+1)/n]. The shares of all
 * workers always sum to exactly N, for any N.
 */
export function shareOf(total: number, w: number, n: number): number {
  const N = Math.max(0, Math.floor(total));
  return roundDiv(N * (w + 1), n) - roundDiv(N * w, n);
}

/** The first item index (0-based, global) of worker w's contiguous range of `total` (shared-iterations). */
export function segmentStart(total: number, w: number, n: number): number {
  return roundDiv(Math.max(0, Math.floor(total)) * w, n);
}

/**
 * How many of the first `total` items of a sequence that grows over time (arrivals, the VUs of a
 * ramp) belong to worker w of n. The items are striped, item j to worker j mod n: k6's execution
 * segment sequence for equal segments. Unlike the rounded share of a fixed total, this never shrinks
 * for one worker while the total grows, so no VU is stopped on one worker to start on another.
 */
export function stripeShare(total: number, w: number, n: number): number {
  return Math.max(0, Math.floor((Math.floor(total) - w + n - 1) / n));
}

/**
 * A repeating assignment of user types to VU indexes in proportion to their weights, spread evenly
 * (smooth weighted round-robin), so any prefix of VUs has about the right mix.
 */
export function userTypePattern(weights: number[], length = 1000): number[] {
  const total = weights.reduce((a, b) => a + b, 0);
  const current = weights.map(() => 0);
  const out: number[] = [];
  for (let i = 0; i < length; i++) {
    let best = 0;
    for (let j = 0; j < weights.length; j++) {
      current[j]! += weights[j]!;
      if (current[j]! > current[best]!) best = j;
    }
    current[best]! -= total;
    out.push(best);
  }
  return out;
}

/**
 * All scenarios of a run (k6's `scenarios`): each named one with its own executor, startTime, tags and
 * user types; or the single `load` (and command-line overrides) as the scenario "default".
 */
export function planScenarios(
  def: { load?: LoadOptions; scenarios?: Record<string, unknown>; users: Array<{ name: string }> },
  overrides: LoadOverrides = {},
): ScenarioPlan[] {
  const all = def.users.map((_, i) => i);
  if (def.scenarios === undefined)
    return [{ name: 'default', plan: planLoad(def.load, overrides), startMs: 0, tags: {}, users: all }];
  if (def.load !== undefined)
    throw new UsageError('load and scenarios cannot be combined: put the load in a scenario', 'BULWARK_E_SCENARIO');
  if (overrides.users !== undefined || overrides.spawnRate !== undefined)
    throw new UsageError('--users/--spawn-rate cannot replace named scenarios', 'BULWARK_E_SCENARIO');
  if (!def.scenarios || typeof def.scenarios !== 'object' || Object.keys(def.scenarios).length === 0)
    throw new UsageError('scenarios must map names to loads: { name: { executor, ... } }', 'BULWARK_E_SCENARIO');
  return Object.entries(def.scenarios).map(([name, raw]) => {
    const where = `scenarios.${name}`;
    if (!/^[\w.-]+$/.test(name))
      throw new UsageError(`${where}: a scenario name is letters, digits, _ . -`, 'BULWARK_E_SCENARIO');
    if (!raw || typeof raw !== 'object') throw new UsageError(`${where} must be a load object`, 'BULWARK_E_SCENARIO');
    const { startTime, tags, users, ...load } = raw as Record<string, unknown>;
    const startMs = startTime === undefined ? 0 : parseDuration(startTime as string, `${where}.startTime`);
    if (
      tags !== undefined &&
      (typeof tags !== 'object' || Object.values(tags as object).some((v) => typeof v !== 'string'))
    )
      throw new UsageError(`${where}.tags must map names to strings`, 'BULWARK_E_SCENARIO');
    let indexes = all;
    if (users !== undefined) {
      if (!Array.isArray(users) || users.length === 0)
        throw new UsageError(`${where}.users must be a non-empty list of user type names`, 'BULWARK_E_SCENARIO');
      indexes = users.map((u) => {
        const i = def.users.findIndex((t) => t.name === u);
        if (i === -1)
          throw new UsageError(
            `${where}.users: no user type "${String(u)}" (declared: ${def.users.map((t) => t.name).join(', ')})`,
            'BULWARK_E_SCENARIO',
          );
        return i;
      });
    }
    const plan = planLoad(load as unknown as LoadOptions, { duration: overrides.duration }, where);
    return { name, plan, startMs, tags: { ...(tags as Record<string, string>), scenario: name }, users: indexes };
  });
}
