import { type EncodedHistogram, Histogram } from '../../lib/histogram.js';

/** Latency histograms: milliseconds in, recorded as whole microseconds (see lib/histogram.ts). */
export { Histogram };

export function newHistogram(): Histogram {
  return new Histogram();
}

export function recordMs(h: Histogram, ms: number): void {
  h.record(ms * 1000);
}

/** Value (ms) at percentile p (0..100). */
export function percentileMs(h: Histogram, p: number): number {
  return h.percentile(p) / 1000;
}

export function encodeHistogram(h: Histogram): EncodedHistogram {
  return h.encode();
}

export function decodeHistogram(encoded: EncodedHistogram): Histogram {
  return Histogram.decode(encoded);
}
