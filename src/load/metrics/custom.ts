import { MetricsStore, type MetricType, type Series, type Tags, tagKey } from './store.js';

/**
 * The metric store of the current thread. Scenario code records into it through Counter/Rate/Trend/
 * Gauge; the engine flushes it once a second. It exists before a run starts so metrics declared at
 * the top of a scenario file (the usual place) are known when thresholds are validated.
 */
let current = new MetricsStore();
const declared = new Map<string, MetricType>();

export function threadStore(): MetricsStore {
  return current;
}

/** Replace the thread's store (the engine does this once per run). */
export function resetThreadStore(): MetricsStore {
  current = new MetricsStore();
  return current;
}

/** Names and types of the custom metrics the loaded scenario declared. */
export function declaredMetrics(): Map<string, MetricType> {
  return declared;
}

const NAME_RE = /^[A-Za-z_][A-Za-z0-9_.-]{0,127}$/;

abstract class CustomMetric {
  /** Per-tag-set series cache: `add` with the same tags costs one Map lookup. */
  private readonly cache = new Map<string, Series>();
  private untagged: Series | undefined;
  private cachedStore: MetricsStore | undefined;

  constructor(
    readonly name: string,
    readonly type: MetricType,
  ) {
    if (!NAME_RE.test(name)) throw new Error(`invalid metric name "${name}" (letters, digits, _ . -)`);
    const prior = declared.get(name);
    if (prior && prior !== type) throw new Error(`metric "${name}" is already declared as a ${prior}`);
    declared.set(name, type);
  }

  protected record(value: number, tags?: Tags): void {
    const store = current;
    if (store !== this.cachedStore) {
      this.cache.clear();
      this.untagged = undefined;
      this.cachedStore = store;
    }
    if (!tags) {
      this.untagged ??= store.get(this.name, this.type, {});
      this.untagged.add(value);
      return;
    }
    const key = tagKey(this.name, tags);
    let s = this.cache.get(key);
    if (!s) {
      s = store.get(this.name, this.type, { ...tags }, key);
      this.cache.set(key, s);
    }
    s.add(value);
  }
}

/** Sums values (k6 Counter). `rate` in reports is the sum per second. */
export class Counter extends CustomMetric {
  constructor(name: string) {
    super(name, 'counter');
  }
  add(value = 1, tags?: Tags): void {
    this.record(value, tags);
  }
}

/** Share of non-zero / true values (k6 Rate). */
export class Rate extends CustomMetric {
  constructor(name: string) {
    super(name, 'rate');
  }
  add(value: boolean | number, tags?: Tags): void {
    this.record(value ? 1 : 0, tags);
  }
}

/** Distribution of values, usually milliseconds (k6 Trend): avg, min, med, max, p(N). */
export class Trend extends CustomMetric {
  constructor(name: string) {
    super(name, 'trend');
  }
  add(value: number, tags?: Tags): void {
    this.record(value, tags);
  }
}

/** Last value, with its min and max (k6 Gauge). */
export class Gauge extends CustomMetric {
  constructor(name: string) {
    super(name, 'gauge');
  }
  add(value: number, tags?: Tags): void {
    this.record(value, tags);
  }
}
