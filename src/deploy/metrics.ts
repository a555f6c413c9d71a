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

function newHistogram(): hdr.Histogram {
  // Packed buckets keep memory proportional to the values seen, so one histogram per second is cheap.
  return hdr.build({
    bitBucketSize: 'packed',
    lowestDiscernibleValue: 1,
    highestTrackableValue: HIGHEST_US,
    numberOfSignificantValueDigits: 3,
    useWebAssembly: false,
  });
}

/**
 * Per-second request/error counts and HDR latency histograms of one slot. Windows are answered by
 * merging whole-second histograms (never by averaging percentiles); memory is bounded by `retentionMs`.
 */
export class SlotMetrics {
  private readonly buckets: Bucket[] = [];
  constructor(private readonly retentionMs: number) {}

  record(latencyMs: number, isError: boolean, now = Date.now()): void {
    const second = Math.floor(now / 1000);
    let bucket = this.buckets[this.buckets.length - 1];
    if (!bucket || bucket.second !== second) {
      bucket = { second, requests: 0, errors: 0, histogram: newHistogram() };
      this.buckets.push(bucket);
      const oldest = second - Math.ceil(this.retentionMs / 1000);
      while (this.buckets.length > 0 && this.buckets[0]!.second < oldest) this.buckets.shift()!.histogram.destroy();
    }
    bucket.requests++;
    if (isError) bucket.errors++;
    bucket.histogram.recordValue(Math.min(HIGHEST_US, Math.max(1, Math.round(latencyMs * 1000))));
  }

  /** Traffic since `sinceMs` (whole seconds: the second containing sinceMs is included). */
  window(sinceMs: number): SlotWindow {
    const fromSecond = Math.floor(sinceMs / 1000);
    const merged = newHistogram();
    let requests = 0;
    let errors = 0;
    for (const b of this.buckets) {
      if (b.second < fromSecond) continue;
      requests += b.requests;
      errors += b.errors;
      merged.add(b.histogram);
    }
    const us = (p: number) => merged.getValueAtPercentile(p) / 1000;
    const out: SlotWindow = {
      requests,
      errors,
      latencyMs:
        requests === 0
          ? {}
          : {
              p50: us(50),
              p90: us(90),
              p95: us(95),
              p99: us(99),
              avg: merged.mean / 1000,
              max: merged.maxValue / 1000,
            },
    };
    merged.destroy();
    return out;
  }

  reset(): void {
    for (const b of this.buckets) b.histogram.destroy();
    this.buckets.length = 0;
  }
}
