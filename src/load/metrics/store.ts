import { encodeHistogram, type Histogram, newHistogram, percentileMs, recordMs } from './histogram.js';

export type MetricType = 'counter' | 'rate' | 'trend' | 'gauge';
export type Tags = Readonly<Record<string, string>>;

/**
 * One metric with one set of tags. Counters sum, rates count passes and fails, trends keep an HDR
 * histogram plus exact count/sum/min/max, gauges keep the last value and the range.
 */
export class Series {
  count = 0;
  sum = 0;
  min = Number.POSITIVE_INFINITY;
  max = Number.NEGATIVE_INFINITY;
  passes = 0;
  fails = 0;
  value = 0;
  hist: Histogram | undefined;
  /** True when this series changed since the last delta was taken. */
  dirty = false;

  constructor(
    readonly metric: string,
    readonly type: MetricType,
    readonly tags: Tags,
    readonly key: string,
  ) {
    if (type === 'trend') this.hist = newHistogram();
  }

  add(v: number): void {
    this.dirty = true;
    switch (this.type) {
      case 'counter':
        this.count++;
        this.sum += v;
        return;
      case 'rate':
        if (v) this.passes++;
        else this.fails++;
        return;
      case 'trend':
        this.count++;
        this.sum += v;
        if (v < this.min) this.min = v;
        if (v > this.max) this.max = v;
        recordMs(this.hist!, v);
        return;
      case 'gauge':
        this.count++;
        this.value = v;
        if (v < this.min) this.min = v;
        if (v > this.max) this.max = v;
        return;
    }
  }
}

/** What crosses a thread or host boundary: the changes of one series since the last delta. */
export interface SeriesDelta {
  metric: string;
  type: MetricType;
  tags: Tags;
  key: string;
  count: number;
  sum: number;
  min: number;
  max: number;
  passes: number;
  fails: number;
  value: number;
  hist?: number[];
}

export function tagKey(metric: string, tags: Tags): string {
  const keys = Object.keys(tags);
  if (keys.length === 0) return metric;
  keys.sort();
  let k = metric;
  for (const t of keys) k += `\u0001${t}\u0002${tags[t]}`;
  return k;
}

/** Aggregated view of a set of series of one metric (the unit thresholds and reports read). */
export interface MetricView {
  type: MetricType;
  count: number;
  sum: number;
  min: number;
  max: number;
  passes: number;
  fails: number;
  value: number;
  hist?: Histogram;
}

export function viewStat(view: MetricView, stat: string, durationSeconds: number): number {
  switch (stat) {
    case 'count':
      return view.type === 'rate' ? view.passes + view.fails : view.type === 'counter' ? view.sum : view.count;
    case 'rate':
      if (view.type === 'rate') return view.passes + view.fails === 0 ? 0 : view.passes / (view.passes + view.fails);
      return durationSeconds > 0 ? view.sum / durationSeconds : 0;
    case 'avg':
      return view.count ? view.sum / view.count : 0;
    case 'min':
      return view.count ? view.min : 0;
    case 'max':
      return view.count ? view.max : 0;
    case 'value':
      return view.value;
    case 'med':
      return view.hist ? Math.min(percentileMs(view.hist, 50), view.max) : 0;
    default: {
      const m = /^p\((\d+(?:\.\d+)?)\)$/.exec(stat);
      if (m && view.hist) {
        if (view.count === 0) return 0;
        // HDR reports the top of the value's bucket; never report more than the exact max.
        return Math.min(percentileMs(view.hist, Number(m[1])), view.max);
      }
      return Number.NaN;
    }
  }
}

/**
 * All series of one thread (recording side) or of the whole run (aggregating side). The recording
 * side hands out deltas and resets; the aggregating side merges them. Metric types are fixed per name.
 */
export class MetricsStore {
  readonly series = new Map<string, Series>();
  readonly types = new Map<string, MetricType>();

  get(metric: string, type: MetricType, tags: Tags, key = tagKey(metric, tags)): Series {
    let s = this.series.get(key);
    if (!s) {
      const known = this.types.get(metric);
      if (known && known !== type) throw new Error(`metric ${metric} is a ${known}, not a ${type}`);
      this.types.set(metric, type);
      s = new Series(metric, type, tags, key);
      this.series.set(key, s);
    }
    return s;
  }

  /** Changes since the last call; the recorded values are reset so memory does not grow. */
  takeDelta(): SeriesDelta[] {
    const out: SeriesDelta[] = [];
    for (const s of this.series.values()) {
      if (!s.dirty) continue;
      out.push({
        metric: s.metric,
        type: s.type,
        tags: s.tags,
        key: s.key,
        count: s.count,
        sum: s.sum,
        min: s.min,
        max: s.max,
        passes: s.passes,
        fails: s.fails,
        value: s.value,
        hist: s.hist ? encodeHistogram(s.hist) : undefined,
      });
      s.count = 0;
      s.sum = 0;
      s.min = Number.POSITIVE_INFINITY;
      s.max = Number.NEGATIVE_INFINITY;
      s.passes = 0;
      s.fails = 0;
      s.hist?.reset();
      s.dirty = false;
    }
    return out;
  }

  merge(deltas: SeriesDelta[]): void {
    for (const d of deltas) {
      const s = this.get(d.metric, d.type, d.tags, d.key);
      s.count += d.count;
      s.sum += d.sum;
      if (d.min < s.min) s.min = d.min;
      if (d.max > s.max) s.max = d.max;
      s.passes += d.passes;
      s.fails += d.fails;
      if (d.type === 'gauge') s.value = d.value;
      if (d.hist && s.hist) s.hist.addEncoded(d.hist);
      s.dirty = true;
    }
  }

  /** Metric names with their types. */
  metrics(): Array<[string, MetricType]> {
    return [...this.types.entries()];
  }

  /** Merge every series of `metric` whose tags include all of `filter` into one view. */
  view(metric: string, filter: Tags = {}): MetricView | undefined {
    const type = this.types.get(metric);
    if (!type) return undefined;
    const v: MetricView = {
      type,
      count: 0,
      sum: 0,
      min: Number.POSITIVE_INFINITY,
      max: Number.NEGATIVE_INFINITY,
      passes: 0,
      fails: 0,
      value: 0,
      hist: type === 'trend' ? newHistogram() : undefined,
    };
    const filterKeys = Object.keys(filter);
    for (const s of this.series.values()) {
      if (s.metric !== metric) continue;
      if (filterKeys.some((k) => s.tags[k] !== filter[k])) continue;
      v.count += s.count;
      v.sum += s.sum;
      if (s.min < v.min) v.min = s.min;
      if (s.max > v.max) v.max = s.max;
      v.passes += s.passes;
      v.fails += s.fails;
      if (type === 'gauge') v.value = s.value;
      if (s.hist && v.hist) v.hist.add(s.hist);
    }
    return v;
  }
}
