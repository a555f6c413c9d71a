import * as hdr from 'hdr-histogram-js';

/**
 * Latency histograms: HDR, values recorded in microseconds with 3 significant digits (±0.1 %), sized
 * by value range, never by sample count — so memory stays flat however long a test runs, and
 * histograms from threads and hosts merge exactly (add counts; never average percentiles).
 */
export type Histogram = hdr.Histogram;

const MAX_MICROS = 3_600_000_000; // one hour: longer samples are clamped (and still counted)

export function newHistogram(): Histogram {
  return hdr.build({
    bitBucketSize: 32,
    autoResize: true,
    lowestDiscernibleValue: 1,
    highestTrackableValue: 2,
    numberOfSignificantValueDigits: 3,
    useWebAssembly: false,
  });
}

/** Record a millisecond value. */
export function recordMs(h: Histogram, ms: number): void {
  const micros = ms <= 0 ? 0 : ms >= 3_600_000 ? MAX_MICROS : Math.round(ms * 1000);
  h.recordValue(micros);
}

/** Value (ms) at percentile p (0..100). */
export function percentileMs(h: Histogram, p: number): number {
  if (h.totalCount === 0) return 0;
  return h.getValueAtPercentile(p) / 1000;
}

export function encodeHistogram(h: Histogram): string {
  return hdr.encodeIntoCompressedBase64(h);
}

export function decodeHistogram(encoded: string): Histogram {
  return hdr.decodeFromCompressedBase64(encoded, 32, false);
}
