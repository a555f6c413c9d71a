import { UsageError } from '../lib/errors.js';
import { type Probe, STEP_NAMES, type SteadyState, type StepName, type StepResult } from './types.js';

/** Pure decisions of the drill: parsing, thresholds, RTO/RPO arithmetic, the verdict. Unit-tested. */

/** `--steps 1,3` or `--steps failover,pitr` (or `all`) -> the steps in drill order. */
export function parseSteps(text: string | undefined): StepName[] {
  if (text === undefined || text.trim() === '' || text.trim() === 'all') return [...STEP_NAMES];
  const picked = new Set<StepName>();
  for (const raw of text.split(',')) {
    const item = raw.trim();
    const n = Number(item);
    const name = Number.isInteger(n) && n >= 1 && n <= STEP_NAMES.length ? STEP_NAMES[n - 1]! : (item as StepName);
    if (!STEP_NAMES.includes(name))
      throw new UsageError(`--steps: "${item}" is not a step (1-5 or ${STEP_NAMES.join(', ')})`);
    picked.add(name);
  }
  return STEP_NAMES.filter((s) => picked.has(s));
}

export function below(name: string, value: number | null, limit: number, unit = ''): Probe {
  return {
    name,
    threshold: `< ${limit}${unit ? ` ${unit}` : ''}`,
    value,
    unit,
    met: value !== null && value < limit,
  };
}

export function atMost(name: string, value: number | null, limit: number, unit = ''): Probe {
  return {
    name,
    threshold: limit === 0 ? '= 0' : `<= ${limit}${unit ? ` ${unit}` : ''}`,
    value,
    unit,
    met: value !== null && value <= limit,
  };
}

export function isTrue(name: string, value: boolean, detail?: string): Probe {
  return { name, threshold: 'true', value, met: value, detail };
}

export function steadyState(probes: Probe[]): SteadyState {
  return { steady_state_met: probes.every((p) => p.met), probes };
}

/**
 * The write gap users saw around a fault at `faultAt` (epoch ms): from the last order acknowledged
 * before the fault (or the fault itself when there was none) to the first acknowledged after it — the
 * same definition as bench/failover. Null when no order was acknowledged after the fault.
 */
export function writeGapMs(faultAt: number, ackTimes: Iterable<number>): number | null {
  let first: number | null = null;
  let last: number | null = null;
  for (const at of ackTimes) {
    if (at > faultAt && (first === null || at < first)) first = at;
    if (at <= faultAt && (last === null || at > last)) last = at;
  }
  return first === null ? null : first - (last ?? faultAt);
}

/**
 * Acknowledged orders that are not among the orders found (RPO counted in orders), in the order given.
 * Compare whole identities (`orderKey`), not bare ids: a new primary whose sequence did not receive
 * the last WAL can hand a lost order's id to a new order, which must not count as the lost one found.
 */
export function lostOrders<K extends string | number>(acknowledged: Iterable<K>, found: Iterable<K>): K[] {
  const have = new Set(found);
  const lost: K[] = [];
  for (const key of acknowledged) if (!have.has(key)) lost.push(key);
  return lost;
}

/** The identity of an order: the shop's id and the client's own reference. */
export function orderKey(id: number | string, ref: unknown): string {
  return `${id}/${ref ?? ''}`;
}

/** A step holds when it ran to its end, every probe of its hypothesis met, and both steady states held. */
export function stepHolds(r: Pick<StepResult, 'probes' | 'before' | 'after' | 'error'>): boolean {
  return !r.error && r.probes.every((p) => p.met) && r.before.steady_state_met && r.after.steady_state_met;
}

/** The final verdict: every selected step ran and held. */
export function verdict(steps: StepResult[]): { ok: boolean; failed: StepName[] } {
  const failed = steps.filter((s) => s.status !== 'succeeded').map((s) => s.step);
  return { ok: steps.length > 0 && failed.length === 0, failed };
}

export function formatProbe(p: Probe): string {
  const v =
    p.value === null
      ? 'not measured'
      : typeof p.value === 'boolean'
        ? String(p.value)
        : `${p.value}${p.unit ? ` ${p.unit}` : ''}`;
  return `[${p.met ? 'ok' : 'FAIL'}] ${p.name}: ${v} (want ${p.threshold})${p.detail ? ` — ${p.detail}` : ''}`;
}
