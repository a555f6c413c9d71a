import { isAbsolute, relative } from 'node:path';
import { distDir } from '../lib/bundle.js';
import type { ScenarioDefinition, Task, UserType, VU, Wait } from './api.js';
import {
  arrivalsBy,
  type Plan,
  type ScenarioPlan,
  segmentStart,
  shareOf,
  stripeShare,
  targetAt,
  timeOfArrival,
  userTypePattern,
} from './executors/plan.js';
import { type HttpContext, VuHttp } from './http/client.js';
import { resetThreadStore } from './metrics/custom.js';
import { createRandom, mulberry32, type VuRandom } from './random.js';
import { type FlushMessage, ThreadMetrics, type UserRecorder } from './recorder.js';
import { turns, yieldToEventLoop } from './turns.js';

export interface EngineOptions {
  scenario: ScenarioDefinition;
  /** Absolute path of the user's scenario file (exceptions are reported as file:line in it). */
  scenarioFile?: string;
  /** The run's scenarios (one, "default", unless the file has `scenarios`), all started together. */
  plans: ScenarioPlan[];
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
  globalIteration = -1;
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
    readonly scenario: string,
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

/** Shape function of a `shape` load: elapsed seconds -> users now (and how fast to get there), or null to end. */
type ShapeFn = (elapsedSeconds: number) => { users: number; spawnRate?: number } | null | undefined;

/** One scenario as this thread runs it. */
interface ScenarioRun {
  sp: ScenarioPlan;
  types: CompiledUserType[];
  pattern: number[];
  vus: VirtualUser[];
  /** Added to global VU indexes so VU ids are unique across scenarios. */
  idOffset: number;
  /** Iterations this thread started in the scenario (closed model: global number = local * n + w). */
  started: number;
}

/** The most VUs a plan can run (for VU id ranges); a shape has no known peak. */
function peakVus(plan: Plan): number {
  if (plan.kind === 'open') return plan.maxVUs;
  if (plan.kind === 'iterations') return plan.vus;
  if (plan.kind === 'shape') return 1_000_000;
  return Math.ceil(Math.max(plan.start, ...plan.stages.map((s) => s.target)));
}

/**
 * Runs this thread's share of every scenario of the run. Closed model: keeps the running VU count
 * on target, each VU looping task -> think time. Open model: starts iterations on the arrival
 * schedule from a pool of VUs, whether or not earlier ones finished (so a stalled server shows in
 * latency, not in a lower rate), and counts dropped_iterations when all maxVUs are busy. Iterations
 * executors run a fixed number of iterations; a shape follows the scenario's function. Work is split
 * across threads and hosts by k6's execution-segment rule (shareOf), and every iteration gets a
 * number unique across all of them (vu.globalIteration).
 */
export class Engine {
  private readonly metrics: ThreadMetrics;
  private readonly runs: ScenarioRun[];
  private readonly ctx: HttpContext;
  private flushTimer: NodeJS.Timeout | undefined;
  private stopRequested = false;
  private stopNow: () => void = () => {};
  private readonly stopPromise: Promise<void>;
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
    const named = o.scenario.scenarios !== undefined;
    let idOffset = 0;
    this.runs = o.plans.map((sp) => {
      const tags = named ? sp.tags : {};
      const types = sp.users.map((ui) => {
        const def = o.scenario.users[ui]!;
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
        return { def, tasks, cumulative, totalWeight: total, recorder: this.metrics.forUser(def.name, tags) };
      });
      const run: ScenarioRun = {
        sp,
        types,
        pattern: userTypePattern(types.map((t) => t.def.weight ?? 1)),
        vus: [],
        idOffset,
        started: 0,
      };
      idOffset += peakVus(sp.plan);
      return run;
    });
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
    let n = 0;
    for (const r of this.runs) n += r.vus.length;
    return n;
  }

  private newVu(r: ScenarioRun, globalIndex: number): VirtualUser {
    const type = r.types[r.pattern[globalIndex % r.pattern.length]!]!;
    const id = r.idOffset + globalIndex + 1;
    const rnd = this.o.seed === undefined ? Math.random : mulberry32(this.o.seed * 1_000_003 + id);
    return new VirtualUser(
      id,
      type,
      new VuHttp({ ...this.ctx, recorder: type.recorder }),
      createRandom(rnd),
      this.o.env,
      this.o.setupData,
      r.sp.name,
    );
  }

  private async runTask(vu: VirtualUser, globalIteration: number): Promise<void> {
    const type = vu.type;
    const r = vu.random.next() * type.totalWeight;
    let i = 0;
    while (type.cumulative[i]! <= r && i < type.tasks.length - 1) i++;
    const task = type.tasks[i]!;
    vu.iteration++;
    vu.globalIteration = globalIteration;
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

  /**
   * A VU loops task -> think time until asked to stop, or until `next` has no iteration left for it
   * (iterations executors). `next` gives the global number of the iteration to run.
   */
  private async closedLoop(vu: VirtualUser, next: () => number | undefined): Promise<void> {
    await this.startVu(vu);
    while (!vu.stop.stopped) {
      const g = next();
      if (g === undefined) break;
      const turn = turns.n;
      await this.runTask(vu, g);
      if (vu.stop.stopped) break;
      const pause = waitMs(vu.type.def.wait, vu.random);
      if (pause > 0) await vu.stop.sleep(pause);
      else if (turns.n === turn) await yieldToEventLoop();
    }
    await this.stopVu(vu);
  }

  private flush(): void {
    this.o.onFlush(this.metrics.flush(this.activeVus));
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
    for (const v of vus) this.interrupt(v);
    // User code stuck on something other than our I/O is abandoned after a short wait.
    await settlesWithin(Promise.all(loops), 1000);
  }

  async run(): Promise<void> {
    this.startedAt = performance.now();
    this.flushTimer = setInterval(() => this.flush(), this.o.flushIntervalMs ?? 1000);
    try {
      await Promise.all(this.runs.map((r) => this.runScenario(r)));
    } finally {
      clearInterval(this.flushTimer);
      this.flush();
    }
  }

  private elapsed(): number {
    return performance.now() - this.startedAt;
  }

  /** Wait until `ms` after the start, or a stop; true when the time came. */
  private async until(ms: number): Promise<boolean> {
    while (!this.stopRequested && this.elapsed() < ms) {
      const step = Math.min(100, ms - this.elapsed());
      await Promise.race([new Promise((r) => setTimeout(r, Math.max(1, step))), this.stopPromise]);
    }
    return !this.stopRequested;
  }

  private async runScenario(r: ScenarioRun): Promise<void> {
    if (r.sp.startMs > 0 && !(await this.until(r.sp.startMs))) return;
    const plan = r.sp.plan;
    const t0 = this.elapsed();
    if (plan.kind === 'closed') {
      const { workerIndex: w, workerCount: n } = this.o;
      await this.runClosed(r, (t) => (t < plan.totalMs ? stripeShare(targetAt(plan, t), w, n) : undefined), {
        rampDownMs: plan.gracefulRampDownMs,
        stopMs: plan.gracefulStopMs,
        t0,
      });
    } else if (plan.kind === 'shape') await this.runShape(r, plan, t0);
    else if (plan.kind === 'iterations') await this.runIterations(r, plan, t0);
    else await this.runOpen(r, plan);
  }

  /**
   * Closed model: `want(t)` is this thread's VU count at t ms into the scenario (undefined: the end).
   * VUs removed by a ramp-down finish their iteration within rampDownMs; at the end, within stopMs.
   */
  private async runClosed(
    r: ScenarioRun,
    want: (tMs: number) => number | undefined,
    grace: { rampDownMs: number; stopMs: number; t0: number },
  ): Promise<void> {
    const { workerIndex: w, workerCount: n } = this.o;
    const rampingDown: Promise<void>[] = [];
    const nextIteration = () => r.started++ * n + w;
    // Local VU k of this worker is global VU index k*n + w: unique across workers.
    const adjust = (target: number) => {
      while (r.vus.length < target) {
        const vu = this.newVu(r, r.vus.length * n + w);
        r.vus.push(vu);
        vu.loop = this.closedLoop(vu, nextIteration);
      }
      while (r.vus.length > target) {
        // Last started, first stopped; it finishes its iteration within gracefulRampDown.
        const vu = r.vus.pop()!;
        vu.stop.stop();
        rampingDown.push(
          settlesWithin(vu.loop!, grace.rampDownMs).then((finished) => {
            if (!finished) this.interrupt(vu);
          }),
        );
      }
    };
    let target = want(0);
    while (!this.stopRequested && target !== undefined) {
      adjust(target);
      await Promise.race([new Promise((res) => setTimeout(res, 100)), this.stopPromise]);
      target = want(this.elapsed() - grace.t0);
    }
    const running = r.vus.splice(0);
    for (const vu of running) vu.stop.stop();
    await this.waitGrace(
      running,
      running.map((v) => v.loop ?? Promise.resolve()),
      grace.stopMs,
    );
    await Promise.all(rampingDown);
  }

  /** Locust's LoadTestShape: users follow the scenario's function, approached at its spawn rate. */
  private async runShape(r: ScenarioRun, plan: Extract<Plan, { kind: 'shape' }>, t0: number): Promise<void> {
    const { workerIndex: w, workerCount: n } = this.o;
    const source = r.sp.name === 'default' ? this.o.scenario.load : this.o.scenario.scenarios?.[r.sp.name];
    const shape = (source as { shape?: ShapeFn } | undefined)?.shape;
    if (typeof shape !== 'function') throw new Error(`scenario ${r.sp.name}: shape is not a function`);
    let users = 0;
    let last = 0;
    const want = (tMs: number): number | undefined => {
      if (tMs >= plan.totalMs) return undefined;
      const step = shape(tMs / 1000);
      if (!step) return undefined;
      const goal = Math.max(0, Math.floor(step.users));
      const dt = (tMs - last) / 1000;
      last = tMs;
      const rate = step.spawnRate;
      if (rate === undefined || !(rate > 0)) users = goal;
      else if (users < goal) users = Math.min(goal, users + Math.max(rate * dt, 0));
      else users = Math.max(goal, users - Math.max(rate * dt, 0));
      return stripeShare(users, w, n);
    };
    await this.runClosed(r, want, { rampDownMs: plan.gracefulStopMs, stopMs: plan.gracefulStopMs, t0 });
  }

  /** shared-iterations and per-vu-iterations (k6): a fixed number of iterations, within maxDuration. */
  private async runIterations(r: ScenarioRun, plan: Extract<Plan, { kind: 'iterations' }>, t0: number): Promise<void> {
    const { workerIndex: w, workerCount: n } = this.o;
    const vuCount = shareOf(plan.vus, w, n);
    let next: (vuGlobalIndex: number) => () => number | undefined;
    if (plan.executor === 'shared-iterations') {
      // This worker's contiguous range of the global iteration numbers, shared by its VUs.
      const first = segmentStart(plan.iterations, w, n);
      const mine = shareOf(plan.iterations, w, n);
      let taken = 0;
      next = () => () => (taken < mine ? first + taken++ : undefined);
    } else {
      next = (g) => {
        let k = 0;
        return () => (k < plan.iterations ? g * plan.iterations + k++ : undefined);
      };
    }
    const vus: VirtualUser[] = [];
    for (let k = 0; k < vuCount; k++) {
      const g = segmentStart(plan.vus, w, n) + k;
      const vu = this.newVu(r, g);
      vus.push(vu);
      r.vus.push(vu);
      vu.loop = this.closedLoop(vu, next(g));
    }
    const loops = vus.map((v) => v.loop!);
    const all = Promise.all(loops);
    const remaining = Math.max(0, plan.totalMs - (this.elapsed() - t0));
    await Promise.race([all, new Promise((res) => setTimeout(res, remaining)), this.stopPromise]);
    for (const vu of vus) vu.stop.stop();
    await this.waitGrace(vus, loops, plan.gracefulStopMs);
    r.vus.splice(0);
  }

  private async runOpen(r: ScenarioRun, plan: Extract<Plan, { kind: 'open' }>): Promise<void> {
    const { workerIndex: w, workerCount: n } = this.o;
    const maxVUs = shareOf(plan.maxVUs, w, n) || 1;
    const idle: VirtualUser[] = [];
    const inFlight = new Set<Promise<void>>();
    let allocated = 0;
    const allocate = (): VirtualUser => {
      const vu = this.newVu(r, allocated++ * n + w);
      r.vus.push(vu);
      return vu;
    };
    // Pre-allocated VUs log in before the clock starts, so the schedule is not skewed by onStart.
    const pre = Array.from({ length: Math.min(maxVUs, shareOf(plan.preAllocatedVUs, w, n)) }, allocate);
    await Promise.all(pre.map((vu) => this.startVu(vu)));
    idle.push(...pre);
    const start = performance.now();
    const elapsed = () => performance.now() - start;

    let started = 0; // arrivals of this worker started or dropped
    const runIteration = (vu: VirtualUser, globalIteration: number) => {
      const p = (async () => {
        if (!vu.started) await this.startVu(vu);
        await this.runTask(vu, globalIteration);
        if (!vu.interrupted) idle.push(vu);
      })();
      inFlight.add(p);
      void p.finally(() => inFlight.delete(p));
    };
    // Global arrival j belongs to worker j mod n (the sequence is striped): a number unique in the run.
    const mine = (globalArrivals: number) => stripeShare(globalArrivals, w, n);
    let nextGlobal = w; // the global index of our next arrival
    while (!this.stopRequested) {
      const t = elapsed();
      const due = mine(arrivalsBy(plan, Math.min(t, plan.totalMs)));
      while (started < due) {
        const g = nextGlobal;
        started++;
        nextGlobal = started * n + w;
        const vu = idle.pop() ?? (r.vus.length < maxVUs ? allocate() : undefined);
        if (vu) runIteration(vu, g);
        else this.metrics.dropped.add(1);
      }
      if (t >= plan.totalMs) break;
      const next = Math.min(timeOfArrival(plan, nextGlobal + 1), plan.totalMs);
      const delay = Math.max(0, Math.min(next - elapsed(), 100));
      await Promise.race([new Promise((res) => setTimeout(res, delay)), this.stopPromise]);
    }
    const running = [...r.vus];
    for (const vu of running) vu.stop.stop();
    const graceEnd = performance.now() + plan.gracefulStopMs;
    await this.waitGrace(running, [...inFlight], plan.gracefulStopMs);
    // onStop hooks share what is left of gracefulStop (at least a second): a hook that never returns
    // must not keep the run alive.
    const stopping = r.vus.splice(0);
    const hooks = stopping.map((vu) => this.stopVu(vu));
    if (!(await settlesWithin(Promise.all(hooks), Math.max(1000, graceEnd - performance.now()))))
      for (const vu of stopping) this.interrupt(vu);
  }
}
