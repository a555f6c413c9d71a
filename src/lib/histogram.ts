/**
 * A log-linear (HDR) histogram of non-negative integers — here, microseconds. Every value is counted
 * in a bucket no wider than 1/1024 of its magnitude (3 significant digits, ±0.05 %), so percentiles
 * are exact to that precision; memory depends on the largest value (at most 23,552 counters for one
 * hour in µs), never on how many values were recorded. Histograms merge by adding counters, which is
 * how results from threads and hosts combine exactly (percentiles are never averaged).
 *
 * Replaces the hdr-histogram-js dependency: that module cost 17 MB of RSS at import (measured with
 * `node -e "await import('hdr-histogram-js')"` against a bare node), and its compressed base64
 * encoding cost CPU every second in every thread; this one ships sparse counter arrays instead.
 *
 * Layout: values below 2048 have one counter each; above, bucket b (b >= 1) covers
 * [1024 * 2^b, 2048 * 2^b) in 1024 steps of 2^b: index = b * 1024 + (value >> b).
 */
const SUB_BUCKETS = 2048;
const HALF = 1024;
/** Values above this are clamped (and still counted): one hour in microseconds. */
export const HISTOGRAM_MAX = 3_600_000_000;

function indexOf(v: number): number {
  if (v < SUB_BUCKETS) return v;
  const b = 31 - Math.clz32(v) - 10;
  // v <= HISTOGRAM_MAX < 2^32, so the unsigned shift is exact (and cheaper than a division).
  return b * HALF + (v >>> b);
}

/** Smallest value that lands in counter `i`. */
function lowestAt(i: number): number {
  if (i < SUB_BUCKETS) return i;
  const b = Math.floor(i / HALF) - 1;
  return (i - b * HALF) * 2 ** b;
}

/** Largest value that lands in counter `i`. */
function highestAt(i: number): number {
  if (i < SUB_BUCKETS) return i;
  const b = Math.floor(i / HALF) - 1;
  return lowestAt(i) + 2 ** b - 1;
}

/** Sparse wire form: [index, count, index, count, ...]. */
export type EncodedHistogram = number[];

export class Histogram {
  private counts = new Float64Array(SUB_BUCKETS);
  totalCount = 0;
  private minIndex = Number.POSITIVE_INFINITY;
  private maxIndex = -1;

  record(value: number, count = 1): void {
    const v = value <= 0 ? 0 : value >= HISTOGRAM_MAX ? HISTOGRAM_MAX : Math.round(value);
    const i = indexOf(v);
    if (i >= this.counts.length) this.grow(i);
    this.counts[i]! += count;
    this.totalCount += count;
    if (i < this.minIndex) this.minIndex = i;
    if (i > this.maxIndex) this.maxIndex = i;
  }

  private grow(i: number): void {
    let size = this.counts.length;
    while (size <= i) size *= 2;
    const next = new Float64Array(size);
    next.set(this.counts);
    this.counts = next;
  }

  /** Value at percentile p (0..100): the top of the counter where the cumulative count reaches p %. */
  percentile(p: number): number {
    if (this.totalCount === 0) return 0;
    const target = Math.max(1, Math.ceil((Math.min(100, Math.max(0, p)) / 100) * this.totalCount));
    let seen = 0;
    for (let i = this.minIndex; i <= this.maxIndex; i++) {
      seen += this.counts[i]!;
      if (seen >= target) return highestAt(i);
    }
    return highestAt(this.maxIndex);
  }

  add(other: Histogram): void {
    if (other.totalCount === 0) return;
    if (other.maxIndex >= this.counts.length) this.grow(other.maxIndex);
    for (let i = other.minIndex; i <= other.maxIndex; i++) {
      const c = other.counts[i]!;
      if (c) this.counts[i]! += c;
    }
    this.totalCount += other.totalCount;
    if (other.minIndex < this.minIndex) this.minIndex = other.minIndex;
    if (other.maxIndex > this.maxIndex) this.maxIndex = other.maxIndex;
  }

  addEncoded(encoded: EncodedHistogram): void {
    for (let k = 0; k + 1 < encoded.length; k += 2) {
      const i = encoded[k]!;
      const c = encoded[k + 1]!;
      if (i >= this.counts.length) this.grow(i);
      this.counts[i]! += c;
      this.totalCount += c;
      if (i < this.minIndex) this.minIndex = i;
      if (i > this.maxIndex) this.maxIndex = i;
    }
  }

  encode(): EncodedHistogram {
    const out: number[] = [];
    for (let i = this.minIndex; i <= this.maxIndex; i++) {
      const c = this.counts[i]!;
      if (c) out.push(i, c);
    }
    return out;
  }

  reset(): void {
    if (this.totalCount === 0) return;
    this.counts.fill(0, this.minIndex, this.maxIndex + 1);
    this.totalCount = 0;
    this.minIndex = Number.POSITIVE_INFINITY;
    this.maxIndex = -1;
  }

  static decode(encoded: EncodedHistogram): Histogram {
    const h = new Histogram();
    h.addEncoded(encoded);
    return h;
  }
}
