import { UsageError } from '../lib/errors.js';

/**
 * How often a running backup or restore reports progress: BULWARK_PROGRESS_INTERVAL_MS, default
 * 2000; 0 reports every chunk (tests, or piping the lines into something that wants them all).
 */
export function progressIntervalMs(env: NodeJS.ProcessEnv = process.env): number {
  const v = env.BULWARK_PROGRESS_INTERVAL_MS;
  if (v === undefined || v === '') return 2000;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0)
    throw new UsageError(`BULWARK_PROGRESS_INTERVAL_MS: "${v}" must be a whole number of milliseconds >= 0`);
  return n;
}

/** Numbers a long backup or restore reports while it runs, and once at the end. */
export interface ProgressEvent {
  phase: string;
  bytes: number;
  total?: number;
  elapsedMs: number;
  bytesPerSecond: number;
  etaMs?: number;
  done: boolean;
}

export type ProgressListener = (e: ProgressEvent) => void;

/**
 * Counts bytes and calls `listener` at most every `everyMs` (and once with done=true). The ETA is
 * (total - bytes) / rate and is absent when the total is unknown.
 */
export class ProgressMeter {
  private bytes = 0;
  private readonly started = Date.now();
  private lastEmit = 0;
  constructor(
    private phase: string,
    private total: number | undefined,
    private listener: ProgressListener | undefined,
    private everyMs = progressIntervalMs(),
  ) {}

  add = (n: number): void => {
    this.bytes += n;
    const now = Date.now();
    if (this.listener && now - this.lastEmit >= this.everyMs && now - this.started >= this.everyMs) {
      this.lastEmit = now;
      this.listener(this.snapshot(false));
    }
  };

  snapshot(done: boolean): ProgressEvent {
    const elapsedMs = Date.now() - this.started;
    const rate = elapsedMs > 0 ? (this.bytes * 1000) / elapsedMs : 0;
    const etaMs = this.total && rate > 0 && !done ? Math.max(0, ((this.total - this.bytes) / rate) * 1000) : undefined;
    return { phase: this.phase, bytes: this.bytes, total: this.total, elapsedMs, bytesPerSecond: rate, etaMs, done };
  }

  finish(): ProgressEvent {
    const s = this.snapshot(true);
    this.listener?.(s);
    return s;
  }
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

export function formatProgress(e: ProgressEvent): string {
  const rate = `${formatBytes(e.bytesPerSecond)}/s`;
  const of = e.total ? ` / ~${formatBytes(e.total)}` : '';
  const eta = e.etaMs !== undefined ? `, ETA ${Math.ceil(e.etaMs / 1000)}s` : '';
  return `${e.phase}: ${formatBytes(e.bytes)}${of}, ${rate}${eta}`;
}
