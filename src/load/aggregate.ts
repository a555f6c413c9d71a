import { type Histogram, newHistogram, percentileMs } from './metrics/histogram.js';
import { MetricsStore } from './metrics/store.js';
import type { ErrorRow, FlushMessage } from './recorder.js';

/** One second of the run, as charts show it. */
export interface TimelinePoint {
  /** Seconds since the start. */
  t: number;
  rps: number;
  errors: number;
  p50: number;
  p95: number;
  p99: number;
  vus: number;
}

/** One second of one endpoint. */
export interface EndpointPoint {
  t: number;
  rps: number;
  p50: number;
  p95: number;
  p99: number;
}

interface OpenBucket {
  second: number;
  requests: number;
  failures: number;
  hist: Histogram;
  vusByWorker: Map<number, number>;
  endpoints: Map<string, { requests: number; hist: Histogram }>;
}

/**
 * The run's aggregate, fed by every thread's flushes: all series merged exactly (histograms added,
 * never percentiles averaged), an errors table, and a per-second timeline whose histograms are
 * reduced to a few numbers once the second is complete, so memory stays flat.
 */
export class Aggregate {
  readonly store = new MetricsStore();
  readonly errors = new Map<string, ErrorRow>();
  readonly timeline: TimelinePoint[] = [];
  /** Per endpoint ("GET /api/products"), the seconds in which it had requests. */
  readonly endpointTimeline = new Map<string, EndpointPoint[]>();
  private readonly open = new Map<number, OpenBucket>();
  private readonly vusByWorker = new Map<number, number>();
  maxVus = 0;
  startedAt = performance.now();

  elapsedMs(): number {
    return performance.now() - this.startedAt;
  }

  currentVus(): number {
    let sum = 0;
    for (const v of this.vusByWorker.values()) sum += v;
    return sum;
  }

  add(worker: number, msg: FlushMessage): void {
    this.store.merge(msg.deltas);
    for (const row of msg.errors) {
      const key = `${row.kind}\u0000${row.error}\u0000${row.where}`;
      const prior = this.errors.get(key);
      if (prior) prior.count += row.count;
      else this.errors.set(key, { ...row });
    }
    this.vusByWorker.set(worker, msg.vus);
    const vus = this.currentVus();
    if (vus > this.maxVus) this.maxVus = vus;
    this.store.get('vus', 'gauge', {}).add(vus);
    const second = Math.max(0, Math.floor(this.elapsedMs() / 1000 - 0.5));
    let b = this.open.get(second);
    if (!b) {
      b = { second, requests: 0, failures: 0, hist: newHistogram(), vusByWorker: new Map(), endpoints: new Map() };
      this.open.set(second, b);
    }
    b.requests += msg.interval.requests;
    b.failures += msg.interval.failures;
    if (msg.interval.hist) b.hist.addEncoded(msg.interval.hist);
    for (const e of msg.interval.endpoints ?? []) {
      let eb = b.endpoints.get(e.endpoint);
      if (!eb) {
        eb = { requests: 0, hist: newHistogram() };
        b.endpoints.set(e.endpoint, eb);
      }
      eb.requests += e.requests;
      eb.hist.addEncoded(e.hist);
    }
    b.vusByWorker.set(worker, msg.vus);
    this.closeBuckets(second - 2);
  }

  /** Reduce buckets up to `upTo` (inclusive) to timeline points. */
  closeBuckets(upTo = Number.POSITIVE_INFINITY): void {
    for (const [second, b] of [...this.open.entries()].sort((a, c) => a[0] - c[0])) {
      if (second > upTo) break;
      let vus = 0;
      for (const v of b.vusByWorker.values()) vus += v;
      this.timeline.push({
        t: second + 1,
        rps: b.requests,
        errors: b.failures,
        p50: percentileMs(b.hist, 50),
        p95: percentileMs(b.hist, 95),
        p99: percentileMs(b.hist, 99),
        vus,
      });
      for (const [endpoint, eb] of b.endpoints) {
        let points = this.endpointTimeline.get(endpoint);
        if (!points) {
          points = [];
          this.endpointTimeline.set(endpoint, points);
        }
        points.push({
          t: second + 1,
          rps: eb.requests,
          p50: percentileMs(eb.hist, 50),
          p95: percentileMs(eb.hist, 95),
          p99: percentileMs(eb.hist, 99),
        });
      }
      this.open.delete(second);
    }
  }

  /** Requests/s, p95 and error share of the last `seconds` seconds (for the live view). */
  recent(seconds = 5): { rps: number; p95: number; errorRate: number } {
    const pts = this.timeline.slice(-seconds);
    if (pts.length === 0) return { rps: 0, p95: 0, errorRate: 0 };
    const reqs = pts.reduce((a, p) => a + p.rps, 0);
    const errs = pts.reduce((a, p) => a + p.errors, 0);
    return { rps: reqs / pts.length, p95: Math.max(...pts.map((p) => p.p95)), errorRate: reqs ? errs / reqs : 0 };
  }
}
