import * as hdr from 'hdr-histogram-js';
import type { SlotWindow } from './types.js';

interface Bucket {
  second: number;
  requests: number;
  errors: number;
  /** Latency in microseconds (sub-millisecond precision matters for a proxy). */
  histogram: hdr.Histogram;
}

const HIGHEST_US = 3_600_000_000; // one hour: anything slower is clamped, never dropped

function histogram(packed: boolean): hdr.Histogram {
  return hdr.build({
    bitBucketSize: packed ? 'packed' : 32,
    lowestDiscernibleValue: 1,
    highestTrackableValue: HIGHEST_US,
    numberOfSignificantValueDigits: 3,
    useWebAssembly: false,
  });
}

/** Bucket bounds (seconds) of the Prometheus histogram, as prom-client's defaults for HTTP latency. */
export const PROM_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * Per-second request/error counts and HDR latency histograms of one slot, plus cumulative Prometheus
 * counters. Windows are answered by merging whole-second histograms (never by averaging percentiles).
 * The current second records into one dense histogram (fast path); at each new second it is folded
 * into a packed copy (memory proportional to the values seen), so memory is bounded by `retentionMs`.
 */
export class SlotMetrics {
  private readonly closed: Bucket[] = [];
  private readonly current: hdr.Histogram = histogram(false);
  private currentSecond = -1;
  private currentRequests = 0;
  private currentErrors = 0;
  /** Cumulative since start, for Prometheus exposition. */
  readonly totals = { requests: 0, errors: 0, sumSeconds: 0, buckets: new Float64Array(PROM_BUCKETS.length) };

  constructor(private readonly retentionMs: number) {}

  record(latencyMs: number, isError: boolean, now = Date.now()): void {
    const second = Math.floor(now / 1000);
    if (second !== this.currentSecond) this.rollover(second);
    this.currentRequests++;
    if (isError) this.currentErrors++;
    this.current.recordValue(Math.min(HIGHEST_US, Math.max(1, Math.round(latencyMs * 1000))));
    const t = this.totals;
    t.requests++;
    if (isError) t.errors++;
    const s = latencyMs / 1000;
    t.sumSeconds += s;
    for (let i = 0; i < PROM_BUCKETS.length; i++) if (s <= PROM_BUCKETS[i]!) t.buckets[i]!++;
  }

  private rollover(second: number): void {
    if (this.currentSecond >= 0 && this.currentRequests > 0) {
      const packed = histogram(true);
      packed.add(this.current);
      this.closed.push({
        second: this.currentSecond,
        requests: this.currentRequests,
        errors: this.currentErrors,
        histogram: packed,
      });
    }
    this.current.reset();
    this.currentSecond = second;
    this.currentRequests = 0;
    this.currentErrors = 0;
    const oldest = second - Math.ceil(this.retentionMs / 1000);
    while (this.closed.length > 0 && this.closed[0]!.second < oldest) this.closed.shift()!.histogram.destroy();
  }

  /** Traffic since `sinceMs` (whole seconds: the second containing sinceMs is included). */
  window(sinceMs: number): SlotWindow {
    const fromSecond = Math.floor(sinceMs / 1000);
    const merged = histogram(true);
    let requests = 0;
    let errors = 0;
    for (const b of this.closed) {
      if (b.second < fromSecond) continue;
      requests += b.requests;
      errors += b.errors;
      merged.add(b.histogram);
    }
    if (this.currentSecond >= fromSecond && this.currentRequests > 0) {
      requests += this.currentRequests;
      errors += this.currentErrors;
      merged.add(this.current);
    }
    const ms = (p: number) => merged.getValueAtPercentile(p) / 1000;
    const out: SlotWindow = {
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
              avg: merged.mean / 1000,
              max: merged.maxValue / 1000,
            },
    };
    merged.destroy();
    return out;
  }

  reset(): void {
    for (const b of this.closed) b.histogram.destroy();
    this.closed.length = 0;
    this.current.reset();
    this.currentRequests = 0;
    this.currentErrors = 0;
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
