import { writeFileSync } from 'node:fs';
import { availableParallelism, hostname } from 'node:os';
import { basename } from 'node:path';
import { Worker } from 'node:worker_threads';
import { parseDuration } from '../config/duration.js';
import { bundleUserFile } from '../lib/bundle.js';
import { UsageError } from '../lib/errors.js';
import { Aggregate } from './aggregate.js';
import type { ScenarioDefinition } from './api.js';
import { loadedData } from './data.js';
import { startRemote, WorkerLost } from './distributed/remote.js';
import { Engine, type EngineOptions } from './engine.js';
import { type LoadOverrides, type Plan, planScenarios, type ScenarioPlan } from './executors/plan.js';
import { lineOf, loadScenarioFile } from './loader.js';
import { declaredMetrics } from './metrics/custom.js';
import type { FlushMessage } from './recorder.js';
import { buildSummary, type RunDetails, type Summary, type WorkerLoss } from './summary.js';
import { evaluateThresholds, hasSamples, parseThresholds, type Threshold } from './thresholds.js';
import { bulwarkVersion } from './version.js';

export interface RunLoadOptions extends LoadOverrides {
  /** A scenario file path (any folder), or a scenario({...}) object for library use. */
  scenario: string | ScenarioDefinition;
  /** Replaces the scenario's host. */
  host?: string;
  /** Worker threads (default 1; 'auto' = one per core). Needs a scenario file. */
  workers?: number | 'auto';
  /** Extra environment variables for vu.env (k6's -e KEY=VALUE). */
  env?: Record<string, string>;
  /** Seed for vu.random: repeatable runs. */
  seed?: number;
  /** Type-check TypeScript scenarios before running (default true). */
  typecheck?: boolean;
  /** Graceful stop (Ctrl-C): running iterations finish within gracefulStop, then the summary is built. */
  signal?: AbortSignal;
  /** Called about once a second with the aggregate so far (the live view). */
  onProgress?: (progress: Progress) => void;
  /** Called once when the load starts (after validation and setup), with the plan. */
  onStart?: (info: { plan: Plan; plans: ScenarioPlan[]; workers: number; file?: string; typecheck?: string }) => void;
  /** Write the summary JSON here. */
  summaryJson?: string;
  /** URLs of `bulwark worker` processes (other hosts); each runs one share of the load. */
  remoteWorkers?: string[];
  /** Token the remote workers expect (BULWARK_WORKER_TOKEN). */
  workerToken?: string;
  /**
   * A worker (thread or remote) that dies mid-run: 'continue' (default) finishes the run with the
   * others, 'abort' stops it (exit code 1). Either way its metrics up to its last flush are kept and
   * the loss is in the summary.
   */
  onWorkerLoss?: 'abort' | 'continue';
  /** The command line to show in the reports' run details (masked with maskCommandLine). */
  commandLine?: string[];
  /** Called when a worker is lost (the CLI prints it). */
  onWorkerLost?: (loss: WorkerLoss) => void;
}

export interface Progress {
  elapsedMs: number;
  totalMs: number;
  aggregate: Aggregate;
}

export interface LoadResult {
  summary: Summary;
  thresholdsPassed: boolean;
  /** 0; 99 when a threshold was crossed; 1 when a worker was lost with onWorkerLoss 'abort' (or all were). */
  exitCode: number;
  plan: Plan;
  plans: ScenarioPlan[];
}

interface Prepared {
  definition: ScenarioDefinition;
  typecheck: 'checked' | 'cached' | 'skipped';
  file?: string;
  bundlePath?: string;
  cleanup(): void;
  /** The first scenario's plan (the only one without `scenarios`). */
  plan: Plan;
  plans: ScenarioPlan[];
  /** When the last scenario's plan ends (before gracefulStop). */
  totalMs: number;
  thresholds: Threshold[];
  baseUrl: string | undefined;
  defaultTimeoutMs: number;
}

function withoutCredentials(url: string): string {
  try {
    const u = new URL(url);
    if (!u.username && !u.password) return url;
    u.username = '';
    u.password = '';
    return u.href;
  } catch {
    return url;
  }
}

/**
 * The command line for a report: `--env`/`-e` values (often secrets) become ***, and credentials in
 * URLs are removed. Reports travel (CI artifacts, mail); secrets must not.
 */
export function maskCommandLine(argv: string[]): string {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const envFlag = /^(-e|--env)$/.exec(a);
    const inline = /^(--env=|-e)([^=]+)=.*$/.exec(a);
    if (envFlag && i + 1 < argv.length) {
      out.push(a, argv[++i]!.replace(/=.*$/, '=***'));
    } else if (inline) out.push(`${inline[1]}${inline[2]}=***`);
    else out.push(/^https?:\/\//.test(a) ? withoutCredentials(a) : a);
  }
  return out.map((a) => (/^[\w@%+=:,./*-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

function where(file: string | undefined, key: string, literal?: string): string {
  if (!file) return key;
  const line = literal === undefined ? undefined : lineOf(file, literal);
  return `${file}${line ? `:${line}` : ''}: ${key}`;
}

/** Everything that can be wrong with a scenario is found here, before any load (exit 2). */
export async function prepareLoad(o: RunLoadOptions): Promise<Prepared> {
  const loaded =
    typeof o.scenario === 'string'
      ? await loadScenarioFile(o.scenario, { typecheck: o.typecheck })
      : { definition: o.scenario, file: undefined, bundlePath: undefined, cleanup() {}, typecheck: 'skipped' as const };
  const { definition, file } = loaded;
  try {
    let plans: ScenarioPlan[];
    try {
      plans = planScenarios(definition, o);
    } catch (err) {
      if (err instanceof UsageError && file) {
        const literal = /"([^"]+)"/.exec(err.message)?.[1];
        throw new UsageError(`${where(file, err.message, literal)}`, err.code);
      }
      throw err;
    }
    const types = new Map(declaredMetrics());
    let thresholds: Threshold[];
    try {
      thresholds = parseThresholds(definition.thresholds, types);
    } catch (err) {
      if (err instanceof UsageError && file) {
        const literal = /cannot parse "([^"]+)"/.exec(err.message)?.[1] ?? /\["([^"]+)"\]/.exec(err.message)?.[1];
        throw new UsageError(where(file, err.message, literal), err.code);
      }
      throw err;
    }
    const baseUrl = o.host ?? definition.host;
    if (baseUrl !== undefined && !/^https?:\/\/[^/]/.test(baseUrl))
      throw new UsageError(`--host: "${baseUrl}" is not an http(s) URL`);
    const defaultTimeoutMs =
      definition.timeout === undefined ? 60_000 : parseDuration(definition.timeout, where(file, 'timeout'));
    const totalMs = Math.max(...plans.map((sp) => sp.startMs + sp.plan.totalMs));
    return { ...loaded, plan: plans[0]!.plan, plans, totalMs, thresholds, baseUrl, defaultTimeoutMs };
  } catch (err) {
    loaded.cleanup();
    throw err;
  }
}

function workerCount(o: RunLoadOptions, prepared: Prepared): number {
  if (o.remoteWorkers?.length) {
    if (o.workers !== undefined && o.workers !== 1)
      throw new UsageError('--workers and --remote-worker cannot be combined');
    if (!prepared.bundlePath) throw new UsageError('remote workers need a scenario file');
    return o.remoteWorkers.length;
  }
  const n = o.workers === 'auto' ? availableParallelism() : (o.workers ?? 1);
  if (!Number.isInteger(n) || n < 1)
    throw new UsageError(`--workers: ${o.workers} must be a whole number >= 1 or "auto"`);
  if (n > 1 && !prepared.bundlePath) throw new UsageError('workers > 1 needs a scenario file (worker threads load it)');
  return n;
}

interface RunningEngine {
  /** How the loss of this share is reported: the remote worker's URL or "worker thread N". */
  name: string;
  stop(): void;
  done: Promise<void>;
}

function startInThread(opts: EngineOptions): RunningEngine {
  const engine = new Engine(opts);
  return { name: 'main thread', stop: () => engine.requestStop(), done: engine.run() };
}

function startWorker(
  bundlePath: string,
  opts: Omit<EngineOptions, 'scenario' | 'onFlush'>,
  onFlush: (m: FlushMessage) => void,
): RunningEngine {
  const worker = new Worker(new URL('./worker.js', import.meta.url), { workerData: { ...opts, bundlePath } });
  const name = `worker thread ${opts.workerIndex + 1}`;
  const done = new Promise<void>((resolve, reject) => {
    worker.on('message', (m: { type: string; message?: any }) => {
      if (m.type === 'flush') onFlush(m.message);
      else if (m.type === 'done') resolve();
      else if (m.type === 'error') reject(new WorkerLost(name, `failed: ${m.message}`));
    });
    worker.on('error', (err) => reject(new WorkerLost(name, `failed: ${err.message}`)));
    worker.on('exit', (code) => (code === 0 ? resolve() : reject(new WorkerLost(name, `exited with ${code}`))));
  });
  return { name, stop: () => worker.postMessage({ type: 'stop' }), done: done.finally(() => worker.terminate()) };
}

/**
 * Run a load test: validate everything, run setup(), start the engines (this thread, or N worker
 * threads each with a share of the VUs/arrivals), merge their metrics exactly, evaluate thresholds
 * every second (abortOnFail stops the run), then teardown() and build the summary.
 */
export async function runLoad(o: RunLoadOptions): Promise<LoadResult> {
  const prepared = await prepareLoad(o);
  try {
    return await execute(o, prepared);
  } finally {
    prepared.cleanup();
  }
}

async function execute(o: RunLoadOptions, p: Prepared): Promise<LoadResult> {
  const n = workerCount(o, p);
  const env = { ...process.env, ...o.env };
  // Remote workers get the scenario with bare `bulwark` imports: they resolve them to their own install.
  const remoteCode = o.remoteWorkers?.length ? (await bundleUserFile(p.file!, { bareBulwark: true })).code : undefined;
  const setupData = p.definition.setup ? await p.definition.setup() : undefined;
  const agg = new Aggregate();
  const policy = o.onWorkerLoss ?? 'continue';
  if (policy !== 'abort' && policy !== 'continue')
    throw new UsageError(`--on-worker-loss: "${String(policy)}" must be abort or continue`);
  const losses: WorkerLoss[] = [];
  let aborted = false;
  const engines: RunningEngine[] = [];
  const stopAll = () => {
    aborted = true;
    for (const e of engines) e.stop();
  };
  const base: Omit<EngineOptions, 'scenario' | 'onFlush' | 'workerIndex'> = {
    scenarioFile: p.file,
    plans: p.plans,
    workerCount: n,
    baseUrl: p.baseUrl,
    env,
    setupData,
    seed: o.seed,
    defaultTimeoutMs: p.defaultTimeoutMs,
    tags: p.definition.tags,
    sharedData: loadedData(),
  };
  const abortedThresholds = new Set<number>();
  const evaluateLive = () => {
    const elapsed = agg.elapsedMs();
    const results = evaluateThresholds(p.thresholds, agg.store, elapsed / 1000);
    results.forEach((r, i) => {
      const t = p.thresholds[i]!;
      // No judgement before the metric's first sample (k6#2520): an empty rate is not a rate of 0.
      if (!hasSamples(t, agg.store)) return;
      if (!r.ok && t.abortOnFail && elapsed >= t.delayAbortEvalMs && !abortedThresholds.has(i)) {
        abortedThresholds.add(i);
        stopAll();
      }
    });
  };
  const onAbort = () => stopAll();
  o.signal?.addEventListener('abort', onAbort, { once: true });
  agg.startedAt = performance.now();
  const startedAt = new Date().toISOString();
  o.onStart?.({ plan: p.plan, plans: p.plans, workers: n, file: p.file, typecheck: p.typecheck });
  const ticker = setInterval(() => {
    evaluateLive();
    o.onProgress?.({ elapsedMs: agg.elapsedMs(), totalMs: p.totalMs, aggregate: agg });
  }, 1000);
  try {
    for (let w = 0; w < n; w++) {
      const opts = { ...base, workerIndex: w };
      if (o.remoteWorkers?.length) {
        // Remote workers get the run's own --env values, never this machine's whole environment.
        const remoteOpts = {
          ...opts,
          env: { ...o.env },
          code: remoteCode!,
          scenarioName: basename(p.file ?? 'scenario'),
          bulwarkVersion: bulwarkVersion(),
        };
        engines.push(startRemote(o.remoteWorkers[w]!, remoteOpts, o.workerToken, (m) => agg.add(w, m)));
      } else if (n === 1)
        engines.push(startInThread({ ...opts, scenario: p.definition, onFlush: (m) => agg.add(w, m) }));
      else engines.push(startWorker(p.bundlePath!, opts, (m) => agg.add(w, m)));
    }
    if (o.signal?.aborted) stopAll();
    // A share lost mid-run is recorded (its merged deltas stay); the others go on unless the policy
    // is 'abort'. Any other failure (a worker refusing the run) stops the others and is reported.
    await Promise.all(
      engines.map((e) =>
        e.done.catch((err) => {
          if (!(err instanceof WorkerLost)) {
            stopAll();
            throw err;
          }
          const loss: WorkerLoss = {
            worker: err.worker,
            atSeconds: Math.round(agg.elapsedMs() / 100) / 10,
            error: err.message,
          };
          losses.push(loss);
          o.onWorkerLost?.(loss);
          if (policy === 'abort') stopAll();
        }),
      ),
    );
  } finally {
    clearInterval(ticker);
    o.signal?.removeEventListener('abort', onAbort);
  }
  const durationSeconds = agg.elapsedMs() / 1000;
  if (p.definition.teardown) await p.definition.teardown(setupData);
  const thresholdResults = evaluateThresholds(p.thresholds, agg.store, durationSeconds);
  const run: RunDetails = {
    host: p.baseUrl === undefined ? undefined : withoutCredentials(p.baseUrl),
    scenarioFile: p.file,
    startedAt,
    bulwarkVersion: bulwarkVersion(),
    commandLine: o.commandLine ? maskCommandLine(o.commandLine) : undefined,
    machine: hostname(),
  };
  const summary = buildSummary(agg, durationSeconds, thresholdResults, aborted, losses, run);
  if (o.summaryJson) writeFileSync(o.summaryJson, `${JSON.stringify(summary, null, 2)}\n`);
  const thresholdsPassed = thresholdResults.every((r) => r.ok);
  const failedByLoss = losses.length > 0 && (policy === 'abort' || losses.length === engines.length);
  return {
    summary,
    thresholdsPassed,
    exitCode: failedByLoss ? 1 : thresholdsPassed ? 0 : 99,
    plan: p.plan,
    plans: p.plans,
  };
}
