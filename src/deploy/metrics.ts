import { type EncodedHistogram, HISTOGRAM_MAX, Histogram } from '../lib/histogram.js';
import type { SlotWindow } from './types.js';

interface Bucket {
  second: number;
  requests: number;
  errors: number;
  sumUs: number;
  maxUs: number;
  /** Latency in microseconds (sub-millisecond precision matters for a proxy), sparse [index, count, ...]. */
  histogram: EncodedHistogram;
}

/** Bucket bounds (seconds) of the Prometheus histogram, as prom-client's defaults for HTTP latency. */
export const PROM_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * Per-second request/error counts and HDR latency histograms of one slot, plus cumulative Prometheus
 * counters. Windows are answered by merging whole-second histograms (never by averaging percentiles).
 * The current second records into one dense histogram (src/lib/histogram.ts); at each new second it is
 * stored as its sparse counters (a few hundred numbers), so memory is bounded by `retentionMs` and a
 * window merges in well under a millisecond. (hdr-histogram-js packed copies took ~280 ms to merge a
 * 60 s window, blocking the proxy's event loop during every analysis, and grew the old generation.)
 */
export class SlotMetrics {
  private readonly closed: Bucket[] = [];
  private readonly current = new Histogram();
  private currentSecond = -1;
  private currentRequests = 0;
  private currentErrors = 0;
  private currentSumUs = 0;
  private currentMaxUs = 0;
  /** Cumulative since start, for Prometheus exposition. */
  readonly totals = { requests: 0, errors: 0, sumSeconds: 0, buckets: new Float64Array(PROM_BUCKETS.length) };

  constructor(private readonly retentionMs: number) {}

  record(latencyMs: number, isError: boolean, now = Date.now()): void {
    const second = Math.floor(now / 1000);
    if (second !== this.currentSecond) this.rollover(second);
    this.currentRequests++;
    if (isError) this.currentErrors++;
    // Anything slower than an hour is clamped, never dropped.
    const us = Math.min(HISTOGRAM_MAX, Math.max(1, Math.round(latencyMs * 1000)));
    this.current.record(us);
    this.currentSumUs += us;
    if (us > this.currentMaxUs) this.currentMaxUs = us;
    const t = this.totals;
    t.requests++;
    if (isError) t.errors++;
    const s = latencyMs / 1000;
    t.sumSeconds += s;
    for (let i = 0; i < PROM_BUCKETS.length; i++) if (s <= PROM_BUCKETS[i]!) t.buckets[i]!++;
  }

  private rollover(second: number): void {
    if (this.currentSecond >= 0 && this.currentRequests > 0) {
      this.closed.push({
        second: this.currentSecond,
        requests: this.currentRequests,
        errors: this.currentErrors,
        sumUs: this.currentSumUs,
        maxUs: this.currentMaxUs,
        histogram: this.current.encode(),
      });
    }
    this.current.reset();
    this.currentSecond = second;
    this.currentRequests = 0;
    this.currentErrors = 0;
    this.currentSumUs = 0;
    this.currentMaxUs = 0;
    const oldest = second - Math.ceil(this.retentionMs / 1000);
    let drop = 0;
    while (drop < this.closed.length && this.closed[drop]!.second < oldest) drop++;
    if (drop > 0) this.closed.splice(0, drop);
  }

  /** Traffic since `sinceMs` (whole seconds: the second containing sinceMs is included). */
  window(sinceMs: number): SlotWindow {
    const fromSecond = Math.floor(sinceMs / 1000);
    const merged = new Histogram();
    let requests = 0;
    let errors = 0;
    let sumUs = 0;
    let maxUs = 0;
    for (const b of this.closed) {
      if (b.second < fromSecond) continue;
      requests += b.requests;
      errors += b.errors;
      sumUs += b.sumUs;
      if (b.maxUs > maxUs) maxUs = b.maxUs;
      merged.addEncoded(b.histogram);
    }
    if (this.currentSecond >= fromSecond && this.currentRequests > 0) {
      requests += this.currentRequests;
      errors += this.currentErrors;
      sumUs += this.currentSumUs;
      if (this.currentMaxUs > maxUs) maxUs = this.currentMaxUs;
      merged.add(this.current);
    }
    const ms = (p: number) => merged.percentile(p) / 1000;
    return {
      requests,
      errors,
      latencyMs:
        requests === 0
          ? {}
          : {
              p50: ms(50),
              p90: ms(90),
              p95: ms(95),
              p99: ms(99),
              avg: sumUs / requests / 1000,
              max: maxUs / 1000,
            },
    };
  }

  reset(): void {
    this.closed.length = 0;
    this.current.reset();
    this.currentRequests = 0;
    this.currentErrors = 0;
    this.currentSumUs = 0;
    this.currentMaxUs = 0;
  }
}

/** Prometheus text exposition of the slots' cumulative counters (no client library on the request path). */
export function prometheusText(slots: Record<string, SlotMetrics>): string {
  const lines: string[] = [
    '# HELP bulwark_router_requests_total Requests answered per slot',
    '# TYPE bulwark_router_requests_total counter',
  ];
  for (const [slot, m] of Object.entries(slots))
    lines.push(`bulwark_router_requests_total{slot="${slot}"} ${m.totals.requests}`);
  lines.push('# HELP bulwark_router_errors_total Requests per slot answered 5xx or not forwarded');
  lines.push('# TYPE bulwark_router_errors_total counter');
  for (const [slot, m] of Object.entries(slots))
    lines.push(`bulwark_router_errors_total{slot="${slot}"} ${m.totals.errors}`);
  lines.push('# HELP bulwark_router_request_duration_seconds Time from request to the end of the answer, per slot');
  lines.push('# TYPE bulwark_router_request_duration_seconds histogram');
  for (const [slot, m] of Object.entries(slots)) {
    PROM_BUCKETS.forEach((le, i) => {
      lines.push(`bulwark_router_request_duration_seconds_bucket{slot="${slot}",le="${le}"} ${m.totals.buckets[i]}`);
    });
    lines.push(`bulwark_router_request_duration_seconds_bucket{slot="${slot}",le="+Inf"} ${m.totals.requests}`);
    lines.push(`bulwark_router_request_duration_seconds_sum{slot="${slot}"} ${m.totals.sumSeconds}`);
    lines.push(`bulwark_router_request_duration_seconds_count{slot="${slot}"} ${m.totals.requests}`);
  }
  return `${lines.join('\n')}\n`;
}
