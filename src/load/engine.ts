import { isAbsolute, relative } from 'node:path';
import { distDir } from '../lib/bundle.js';
import type { ScenarioDefinition, Task, UserType, VU, Wait } from './api.js';
import { arrivalsBy, type Plan, shareOf, targetAt, timeOfArrival, userTypePattern } from './executors/plan.js';
import { type HttpContext, VuHttp } from './http/client.js';
import { resetThreadStore } from './metrics/custom.js';
import { createRandom, mulberry32, type VuRandom } from './random.js';
import { type FlushMessage, ThreadMetrics, type UserRecorder } from './recorder.js';
import { turns, yieldToEventLoop } from './turns.js';

export interface EngineOptions {
  scenario: ScenarioDefinition;
  /** Absolute path of the user's scenario file (exceptions are reported as file:line in it). */
  scenarioFile?: string;
  plan: Plan;
  workerIndex: number;
  workerCount: number;
  baseUrl: string | undefined;
  env: Record<string, string | undefined>;
  setupData: unknown;
  seed?: number;
  defaultTimeoutMs: number;
  tags?: Record<string, string>;
  /** What data() loaded in the main thread: worker threads and remote workers use it instead of loading. */
  sharedData?: Record<string, unknown>;
  /** Called about once a second, and once at the end, with the changes since the previous call. */
  onFlush(message: FlushMessage): void;
  flushIntervalMs?: number;
}

interface CompiledUserType {
  def: UserType;
  tasks: Array<{ run: Task['run']; name: string }>;
  cumulative: number[];
  totalWeight: number;
  recorder: UserRecorder;
}

class StopSignal {
  // Usually one sleeper (the VU's think time); created on first use to keep idle VUs small.
  private waiters: Array<() => void> | undefined;
  stopped = false;
  stop(): void {
    this.stopped = true;
    const w = this.waiters;
    this.waiters = undefined;
    if (w) for (const wake of w) wake();
  }
  /** Sleep that ends early when stop() is called. */
  sleep(ms: number): Promise<void> {
    if (this.stopped || ms <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        const w = this.waiters;
        if (w) {
          const i = w.indexOf(done);
          if (i !== -1) w.splice(i, 1);
        }
        resolve();
      };
      const timer = setTimeout(() => {
        turns.n++;
        done();
      }, ms);
      this.waiters ??= [];
      this.waiters.push(done);
    });
  }
}

/** A running virtual user. */
class VirtualUser implements VU {
  iteration = 0;
  state: Record<string, any> = {};
  started = false;
  readonly stop = new StopSignal();
  /**
   * Ends vu.sleep() early only when the VU is interrupted: think time inside a task lasts its full
   * length after a stop is requested (the iteration finishes as written, within its grace period).
   */
  readonly interruption = new StopSignal();
  /** Set when the VU was interrupted (graceful period over): its requests are aborted. */
  interrupted = false;
  loop: Promise<void> | undefined;

  constructor(
    readonly id: number,
    readonly type: CompiledUserType,
    readonly http: VuHttp,
    readonly random: VuRandom,
    readonly env: Readonly<Record<string, string | undefined>>,
    readonly data: unknown,
  ) {}

  get userType(): string {
    return this.type.def.name;
  }

  check<T>(
    value: T,
    checks: Record<string, (v: T) => boolean | string | undefined | null>,
    tags?: Record<string, string>,
  ): boolean {
    let all = true;
    for (const name in checks) {
      let ok: boolean;
      try {
        const r = checks[name]!(value);
        ok = r === true || (r !== false && r !== undefined && r !== null && typeof r !== 'string');
      } catch {
        ok = false;
      }
      this.type.recorder.check(name, ok, tags);
      if (!ok) all = false;
    }
    return all;
  }

  sleep(seconds: number): Promise<void> {
    return this.interruption.sleep(seconds * 1000);
  }
}

/** Resolves true when `p` settles within `ms`, false when the time runs out first. */
function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    p.then(
      () => {
        clearTimeout(timer);
        resolve(true);
      },
      () => {
        clearTimeout(timer);
        resolve(true);
      },
    );
  });
}

function waitMs(wait: Wait | undefined, random: VuRandom): number {
  if (!wait) return 0;
  switch (wait.kind) {
    case 'none':
      return 0;
    case 'constant':
      return wait.seconds * 1000;
    case 'between':
      return (wait.min + random.next() * (wait.max - wait.min)) * 1000;
  }
}

/**
 * Where in the user's code an exception was thrown: the first stack frame in the scenario's own
 * files (source maps are on, so lines are the TypeScript's), as a path relative to the cwd.
 */
export function exceptionLocation(err: unknown, scenarioFile: string | undefined): string | undefined {
  const stack = (err as Error)?.stack;
  if (typeof stack !== 'string') return undefined;
  for (const line of stack.split('\n').slice(1)) {
    const m = /\(?((?:file:\/\/)?\/[^():]+):(\d+):\d+\)?\s*$/.exec(line.trim());
    if (!m) continue;
    const file = m[1]!.replace(/^file:\/\//, '');
    if (file.startsWith(distDir) || file.includes('/node_modules/') || file.includes('bulwark-bundle-')) continue;
    const shown = isAbsolute(file) ? relative(process.cwd(), file) || file : file;
    return `${shown}:${m[2]}`;
  }
  return scenarioFile ? relative(process.cwd(), scenarioFile) : undefined;
}

/**
 * Runs this thread's share of a plan. Closed model: keeps the running VU count on target, each VU
 * looping task -> think time. Open model: starts iterations on the arrival schedule from a pool of
 * VUs, whether or not earlier ones finished (so a stalled server shows in latency, not in a lower
 * rate), and counts dropped_iterations when all maxVUs are busy.
 */
export class Engine {
  private readonly metrics: ThreadMetrics;
  private readonly types: CompiledUserType[];
  private readonly pattern: number[];
  private readonly ctx: HttpContext;
  private readonly vus: VirtualUser[] = [];
  private flushTimer: NodeJS.Timeout | undefined;
  private stopRequested = false;
  private stopNow: () => void = () => {};
  private readonly stopPromise: Promise<void>;
  private nextLocalVu = 0;
  startedAt = 0;

  constructor(private readonly o: EngineOptions) {
    const store = resetThreadStore();
    this.metrics = new ThreadMetrics(store, { ...o.tags });
    this.ctx = {
      baseUrl: o.baseUrl,
      defaultTimeoutMs: o.defaultTimeoutMs,
      recorder: this.metrics.forUser(''),
      maxRedirects: o.scenario.redirects,
    };
    this.types = o.scenario.users.map((def) => {
      const tasks = def.tasks.map((t, i) =>
        typeof t === 'function'
          ? { run: t, name: t.name || `task ${i + 1}`, weight: 1 }
          : { run: t.run, name: t.name ?? (t.run.name || `task ${i + 1}`), weight: t.weight ?? 1 },
      );
      const cumulative: number[] = [];
      let total = 0;
      for (const t of tasks) {
        total += t.weight;
        cumulative.push(total);
      }
      return { def, tasks, cumulative, totalWeight: total, recorder: this.metrics.forUser(def.name) };
    });
    this.pattern = userTypePattern(o.scenario.users.map((u) => u.weight ?? 1));
    this.stopPromise = new Promise((resolve) => {
      this.stopNow = resolve;
    });
  }

  /** Ask for a graceful stop (Ctrl-C, abortOnFail): running iterations get gracefulStop to finish. */
  requestStop(): void {
    if (this.stopRequested) return;
    this.stopRequested = true;
    this.stopNow();
  }

  get activeVus(): number {
    return this.vus.length;
  }

  private newVu(globalIndex: number): VirtualUser {
    const type = this.types[this.pattern[globalIndex % this.pattern.length]!]!;
    const id = globalIndex + 1;
    const rnd = this.o.seed === undefined ? Math.random : mulberry32(this.o.seed * 1_000_003 + id);
    const vu = new VirtualUser(
      id,
      type,
      new VuHttp({ ...this.ctx, recorder: type.recorder }),
      createRandom(rnd),
      this.o.env,
      this.o.setupData,
    );
    return vu;
  }

  private async runTask(vu: VirtualUser): Promise<void> {
    const type = vu.type;
    const r = vu.random.next() * type.totalWeight;
    let i = 0;
    while (type.cumulative[i]! <= r && i < type.tasks.length - 1) i++;
    const task = type.tasks[i]!;
    vu.iteration++;
    const t0 = performance.now();
    try {
      await task.run(vu);
    } catch (err) {
      if (!vu.interrupted) type.recorder.exception(err, exceptionLocation(err, this.o.scenarioFile) ?? task.name);
    }
    if (!vu.interrupted) type.recorder.iteration(performance.now() - t0);
  }

  private async startVu(vu: VirtualUser): Promise<void> {
    vu.started = true;
    if (!vu.type.def.onStart) return;
    try {
      await vu.type.def.onStart(vu);
    } catch (err) {
      vu.type.recorder.exception(err, exceptionLocation(err, this.o.scenarioFile) ?? 'onStart');
    }
  }

  private async stopVu(vu: VirtualUser): Promise<void> {
    if (vu.type.def.onStop && !vu.interrupted) {
      try {
        await vu.type.def.onStop(vu);
      } catch (err) {
        vu.type.recorder.exception(err, exceptionLocation(err, this.o.scenarioFile) ?? 'onStop');
      }
    }
    await vu.http.close();
  }

  /** Closed model: a VU loops task -> think time until asked to stop. */
  private async closedLoop(vu: VirtualUser): Promise<void> {
    await this.startVu(vu);
    while (!vu.stop.stopped) {
      const turn = turns.n;
      await this.runTask(vu);
      if (vu.stop.stopped) break;
      const pause = waitMs(vu.type.def.wait, vu.random);
      if (pause > 0) await vu.stop.sleep(pause);
      else if (turns.n === turn) await yieldToEventLoop();
    }
    await this.stopVu(vu);
  }

  private flush(): void {
    this.o.onFlush(this.metrics.flush(this.vus.length));
  }

  /** Interrupt VUs that did not finish within their grace period: abort their requests, stop counting. */
  private interrupt(vu: VirtualUser): void {
    vu.interrupted = true;
    vu.stop.stop();
    vu.interruption.stop();
    void vu.http.interrupt();
  }

  private async waitGrace(vus: VirtualUser[], loops: Array<Promise<unknown>>, graceMs: number): Promise<void> {
    if (await settlesWithin(Promise.all(loops), graceMs)) return;
    this.metrics.muted = true;
    for (const v of vus) this.interrupt(v);
    // User code stuck on something other than our I/O is abandoned after a short wait.
    await settlesWithin(Promise.all(loops), 1000);
  }

  async run(): Promise<void> {
    this.startedAt = performance.now();
    this.flushTimer = setInterval(() => this.flush(), this.o.flushIntervalMs ?? 1000);
    try {
      if (this.o.plan.kind === 'closed') await this.runClosed(this.o.plan);
      else await this.runOpen(this.o.plan);
    } finally {
      clearInterval(this.flushTimer);
      this.flush();
    }
  }

  private elapsed(): number {
    return performance.now() - this.startedAt;
  }

  private async runClosed(plan: Extract<Plan, { kind: 'closed' }>): Promise<void> {
    const { workerIndex: w, workerCount: n } = this.o;
    const rampingDown: Promise<void>[] = [];
    // Local VU k of this worker is global VU index k*n + w (round-robin across workers).
    const adjust = () => {
      const want = shareOf(targetAt(plan, this.elapsed()), w, n);
      while (this.vus.length < want) {
        const vu = this.newVu(this.vus.length * n + w);
        this.vus.push(vu);
        vu.loop = this.closedLoop(vu);
      }
      while (this.vus.length > want) {
        // Last started, first stopped; it finishes its iteration within gracefulRampDown.
        const vu = this.vus.pop()!;
        vu.stop.stop();
        rampingDown.push(
          settlesWithin(vu.loop!, plan.gracefulRampDownMs).then((finished) => {
            if (!finished) this.interrupt(vu);
          }),
        );
      }
    };
    adjust();
    while (!this.stopRequested && this.elapsed() < plan.totalMs) {
      const step = Math.min(100, plan.totalMs - this.elapsed());
      await Promise.race([new Promise((r) => setTimeout(r, Math.max(1, step))), this.stopPromise]);
      if (!this.stopRequested) adjust();
    }
    const running = this.vus.splice(0);
    for (const vu of running) vu.stop.stop();
    await this.waitGrace(
      running,
      running.map((v) => v.loop ?? Promise.resolve()),
      plan.gracefulStopMs,
    );
    await Promise.all(rampingDown);
  }

  private async runOpen(plan: Extract<Plan, { kind: 'open' }>): Promise<void> {
    const { workerIndex: w, workerCount: n } = this.o;
    const maxVUs = shareOf(plan.maxVUs, w, n) || 1;
    const idle: VirtualUser[] = [];
    const inFlight = new Set<Promise<void>>();
    const allocate = (): VirtualUser => {
      const vu = this.newVu(this.nextLocalVu++ * n + w);
      this.vus.push(vu);
      return vu;
    };
    // Pre-allocated VUs log in before the clock starts, so the schedule is not skewed by onStart.
    const pre = Array.from({ length: Math.min(maxVUs, shareOf(plan.preAllocatedVUs, w, n)) }, allocate);
    await Promise.all(pre.map((vu) => this.startVu(vu)));
    idle.push(...pre);
    this.startedAt = performance.now();

    let started = 0; // arrivals of this worker started or dropped
    const runIteration = (vu: VirtualUser) => {
      const p = (async () => {
        if (!vu.started) await this.startVu(vu);
        await this.runTask(vu);
        if (!vu.interrupted) idle.push(vu);
      })();
      inFlight.add(p);
      void p.finally(() => inFlight.delete(p));
    };
    // Global arrival j belongs to worker j % n.
    const mine = (globalArrivals: number) => shareOf(globalArrivals, w, n);
    while (!this.stopRequested) {
      const t = this.elapsed();
      const due = mine(arrivalsBy(plan, Math.min(t, plan.totalMs)));
      while (started < due) {
        started++;
        const vu = idle.pop() ?? (this.vus.length < maxVUs ? allocate() : undefined);
        if (vu) runIteration(vu);
        else this.metrics.dropped.add(1);
      }
      if (t >= plan.totalMs) break;
      const nextGlobal = started * n + w + 1; // the global index of our next arrival, 1-based count
      const next = Math.min(timeOfArrival(plan, nextGlobal), plan.totalMs);
      const delay = Math.max(0, Math.min(next - this.elapsed(), 100));
      await Promise.race([new Promise((r) => setTimeout(r, delay)), this.stopPromise]);
    }
    const running = [...this.vus];
    for (const vu of running) vu.stop.stop();
    await this.waitGrace(running, [...inFlight], plan.gracefulStopMs);
    await Promise.all(this.vus.splice(0).map((vu) => this.stopVu(vu)));
  }
}
