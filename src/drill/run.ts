import { hostname, release as osRelease, platform } from 'node:os';
import { ConfiguredSystem } from './configured.js';
import { DrillEnvironment, type DrillSystem, type Release } from './environment.js';
import { DrillError } from './errors.js';
import { atMost, parseSteps, steadyState, stepHolds, verdict } from './hypothesis.js';
import { pause, STEPS, type StepContext, waitUntil } from './steps.js';
import type { DrillTarget } from './target.js';
import { DrillTraffic, type UserLoad } from './traffic.js';
import {
  type DrillEvent,
  type Probe,
  STEP_TITLES,
  type SteadyState,
  type StepName,
  type StepResult,
  type TimelinePoint,
} from './types.js';

export interface DrillOptions {
  /** Steps to run, in drill order (default all five). */
  steps?: StepName[];
  /** Synchronous replication (default false: asynchronous). */
  sync?: boolean;
  /** Steady traffic before the first step and after the last (ms, default 5000). */
  steadyMs?: number;
  /**
   * Failover step: pause the primary's WAL senders this long right before the kill, so the replicas
   * lag behind what the primary acknowledged (asynchronous replication then loses orders).
   */
  replicaLagMs?: number;
  /** Requests per second through the router (open model, default 40; half of them are orders). */
  rate?: number;
  /** Work folder (default a new temp folder, removed at the end). */
  dir?: string;
  /** The releases the deploy steps use; tests inject a regression here (e.g. a good release that fails health). */
  releases?: { stable?: Release; bad?: Release; good?: Release };
  /** Called once every step ran, before anything is stopped (`--keep` waits here for Ctrl-C). */
  beforeCleanup?: (info: { dir: string; url: string; clusterDir: string; repoUri: string }) => Promise<void>;
  /**
   * Run against the user's own system named in bulwark.config.ts instead of building one. The caller
   * has checked the safety guard (assertTargetsAllowed) and the steps (configuredSteps) first.
   */
  target?: DrillTarget;
  /** The user's own scenario (drill.load, loaded by the caller) instead of the shopper. */
  load?: UserLoad;
  signal?: AbortSignal;
  onEvent?: (e: DrillEvent) => void;
}

/** A probe as Chaos Toolkit's journal records it (activity, output, status, tolerance_met). */
export interface JournalProbe {
  activity: { type: 'probe'; name: string; tolerance: string };
  output: number | boolean | null;
  status: 'succeeded' | 'failed';
  tolerance_met: boolean;
}

/** A steady state as Chaos Toolkit's journal records it. */
export interface JournalSteadyState {
  steady_state_met: boolean;
  probes: JournalProbe[];
}

export function journalSteadyState(s: SteadyState): JournalSteadyState {
  return {
    steady_state_met: s.steady_state_met,
    probes: s.probes.map((p) => ({
      activity: { type: 'probe', name: p.name, tolerance: p.threshold },
      output: p.value,
      // the probe ran; whether its value is within tolerance is tolerance_met (as in Chaos Toolkit)
      status: p.value === null ? 'failed' : 'succeeded',
      tolerance_met: p.met,
    })),
  };
}

/** Chaos Toolkit's journal field names plus Bulwark's measured fields. */
export interface DrillJournal {
  'chaoslib-version': null;
  bulwark: { drill: 1 };
  platform: string;
  node: string;
  experiment: {
    title: string;
    description: string;
    configuration: {
      sync: boolean;
      rate: number;
      steadyMs: number;
      steps: StepName[];
      replicaLagMs: number;
      /** `--config`: the user's system (host:port of each part, never a password); absent on embedded defaults. */
      target?: {
        file: string;
        url: string;
        database: string | null;
        repository: string | null;
        app?: string;
        badRelease?: string;
        goodRelease?: string;
      };
    };
    'steady-state-hypothesis': { title: string; probes: Array<{ type: 'probe'; name: string; tolerance: string }> };
    method: Array<{ type: 'action'; name: StepName; title: string; hypothesis: string }>;
  };
  start: string;
  end: string;
  /** Seconds. */
  duration: number;
  status: 'completed' | 'failed' | 'interrupted';
  deviated: boolean;
  steady_states: {
    before: JournalSteadyState | null;
    after: JournalSteadyState | null;
    during: Array<{ step: StepName; before: JournalSteadyState; after: JournalSteadyState }>;
  };
  run: Array<{
    activity: { type: 'action'; name: StepName; title: string; hypothesis: string };
    status: 'succeeded' | 'failed';
    start: string;
    end: string;
    duration: number;
    output: {
      probes: JournalProbe[];
      measured: StepResult['measured'];
      traffic: StepResult['traffic'];
      log: string[];
    };
    exception?: string;
  }>;
  rollbacks: [];
  /** Every step as the drill measured it. */
  steps: StepResult[];
  verdict: { ok: boolean; failed: StepName[] };
  /** The figures people ask for first. */
  measured: {
    rtoMs: number | null;
    lostAcknowledgedOrders: number | null;
    failedRequestsBadRelease: number | null;
    failedRequestsGoodRelease: number | null;
    pitrTimeToQueryableMs: number | null;
    pitrRowsRecovered: number | null;
    requests: number;
    failedRequests: number;
    /** null: the user's scenario names no acknowledged writes (drill.load.acks). */
    ordersAcknowledged: number | null;
  };
  /** Per second through the router: req/s, errors, latency percentiles (ms). */
  timeline: TimelinePoint[];
  /** Seconds since the load started at which each fault was injected. */
  faults: Array<{ t: number; step: StepName; label: string }>;
  /** Why the drill could not run to its end (setup failed), when it could not. */
  error?: string;
  /** What was stopped and removed at the end. */
  cleanup: string[];
}

const STEADY_WINDOW_MS = 3000;
const STEADY_WAIT_MS = 20_000;

/** Chaos Toolkit's steady-state hypothesis of the shop: orders and pages flow, nothing fails. */
function steadyProbes(traffic: DrillTraffic): Probe[] {
  const recent = traffic.recent(STEADY_WINDOW_MS);
  const since = Date.now() - STEADY_WINDOW_MS;
  const orders = traffic.acks.filter((a) => a.at >= since).length;
  return [
    {
      name: `requests in the last ${STEADY_WINDOW_MS / 1000} s`,
      threshold: '> 0',
      value: recent.requests,
      met: recent.requests > 0,
    },
    // a user scenario without drill.load.acks has no acknowledged writes to count
    ...(traffic.measuresAcks
      ? [
          {
            name: `orders acknowledged in the last ${STEADY_WINDOW_MS / 1000} s`,
            threshold: '> 0',
            value: orders,
            met: orders > 0,
          },
        ]
      : []),
    atMost(`failed requests in the last ${STEADY_WINDOW_MS / 1000} s`, recent.failures, 0),
  ];
}

/** Wait (up to STEADY_WAIT_MS) for the steady state to hold; its probes as last seen. */
async function awaitSteadyState(traffic: DrillTraffic, signal?: AbortSignal): Promise<SteadyState> {
  let last = steadyState(steadyProbes(traffic));
  await waitUntil(
    () => {
      last = steadyState(steadyProbes(traffic));
      return last.steady_state_met;
    },
    STEADY_WAIT_MS,
    signal,
  );
  return last;
}

/** The exit code of `bulwark drill`: 0 when every hypothesis held, 130 when interrupted, 1 otherwise. */
export function drillExitCode(j: Pick<DrillJournal, 'status' | 'verdict'>): number {
  if (j.status === 'interrupted') return 130;
  return j.status === 'completed' && j.verdict.ok ? 0 : 1;
}

/**
 * A game day on this machine: build the environment, run steady traffic, run each step with its
 * hypothesis checked against measurements and the steady state checked before and after, stop
 * everything it started (also on failure or abort), and return the journal.
 */
export async function runDrill(o: DrillOptions = {}): Promise<DrillJournal> {
  const steps = o.steps ?? parseSteps(undefined);
  const sync = o.sync ?? false;
  const rate = o.rate ?? 40;
  const steadyMs = o.steadyMs ?? 5000;
  const emit = (e: DrillEvent) => o.onEvent?.(e);
  const releases = {
    stable: o.releases?.stable ?? { version: 'v1' },
    bad: o.releases?.bad ?? { version: 'v2-bad', errorRate: 0.2 },
    good: o.releases?.good ?? { version: 'v3' },
  };
  const start = new Date();
  const results: StepResult[] = [];
  const during: Array<{ step: StepName; before: SteadyState; after: SteadyState }> = [];
  const faults: DrillJournal['faults'] = [];
  let before: SteadyState | null = null;
  let after: SteadyState | null = null;
  let status: DrillJournal['status'] = 'completed';
  let cleanup: string[] = [];
  let timeline: TimelinePoint[] = [];
  let fatal: string | undefined;

  const env = o.target
    ? undefined
    : new DrillEnvironment({
        dir: o.dir,
        sync,
        say: (line) => emit({ type: 'setup', line }),
        signal: o.signal,
      });
  const system: DrillSystem = env ?? new ConfiguredSystem(o.target!);
  if (o.target)
    emit({
      type: 'setup',
      line: `configured system (${o.target.file}): shop ${system.url}, database ${o.target.pg ? system.primary().name : '(none)'}, repository ${system.repoUri || '(none)'}${o.target.deploy ? `, app ${o.target.deploy.app} (releases ${o.target.deploy.badRelease} and ${o.target.deploy.goodRelease})` : ''}`,
    });
  let traffic: DrillTraffic | undefined;
  try {
    await system.start(releases.stable);
    traffic = new DrillTraffic({ url: system.url, rate, user: o.load });
    const t = traffic;
    emit({
      type: 'setup',
      line: o.load
        ? `load: ${rate} req/s (open model) of your scenario ${o.target?.load?.scenario ?? ''} through ${system.url}; ${o.load.acks ? `acknowledged writes: ${o.load.acks.request} answers (${o.load.acks.id})` : 'no acknowledged writes configured (drill.load.acks): write gap and RPO not measured'}`
        : `load: ${rate} req/s (open model, half of them orders) through ${system.url}`,
    });
    let lastOrders = 0;
    await t.start((p) => {
      const point = p.aggregate.timeline.at(-1);
      emit({
        type: 'traffic',
        elapsedS: p.elapsedMs / 1000,
        rps: point?.rps ?? 0,
        errors: point?.errors ?? 0,
        p99: point?.p99 ?? 0,
        orders: t.acks.length - lastOrders,
      });
      lastOrders = t.acks.length;
    });
    // PITR needs a base backup from before the drop; without the backup step, take one unmeasured.
    if (steps.includes('pitr') && !steps.includes('backup')) {
      emit({ type: 'setup', line: 'base backup for the PITR step (the backup step is not selected)' });
      await STEPS.backup.run({ env, system, traffic: t, log: () => {}, signal: o.signal, releases, sync });
    }
    await pause(steadyMs, o.signal);
    before = await awaitSteadyState(t, o.signal);
    emit({ type: 'setup', line: `steady state before the first step: ${before.steady_state_met ? 'met' : 'NOT met'}` });

    for (const [i, name] of steps.entries()) {
      if (o.signal?.aborted) throw new DrillError('BULWARK_E_DRILL', 'interrupted');
      const spec = STEPS[name];
      const hypothesis = spec.hypothesis({ sync, configured: Boolean(o.target) });
      emit({ type: 'step-start', step: name, index: i + 1, total: steps.length, title: STEP_TITLES[name], hypothesis });
      const log: string[] = [];
      const ctx: StepContext = {
        env,
        system,
        target: o.target,
        traffic: t,
        log: (line) => {
          log.push(line);
          emit({ type: 'step-log', step: name, line });
        },
        signal: o.signal,
        releases,
        sync,
        replicaLagMs: o.replicaLagMs,
      };
      const stepBefore = await awaitSteadyState(t, o.signal);
      const snap = t.snapshot();
      const stepStart = new Date();
      let outcome: Awaited<ReturnType<typeof spec.run>> | undefined;
      let error: string | undefined;
      try {
        outcome = await spec.run(ctx);
      } catch (err) {
        if (o.signal?.aborted) throw err;
        error = (err as Error).message;
        ctx.log(`step could not finish: ${error}`);
      }
      const stepEnd = new Date();
      const traffic = { requests: t.requests - snap.requests, failures: t.failures - snap.failures };
      const stepAfter = await awaitSteadyState(t, o.signal);
      const result: StepResult = {
        step: name,
        index: i + 1,
        title: STEP_TITLES[name],
        hypothesis,
        start: stepStart.toISOString(),
        end: stepEnd.toISOString(),
        duration: (stepEnd.getTime() - stepStart.getTime()) / 1000,
        status: 'succeeded',
        deviated: false,
        before: stepBefore,
        after: stepAfter,
        probes: outcome?.probes ?? [],
        measured: outcome?.measured ?? {},
        traffic,
        faultAt: outcome?.faultAt !== undefined ? t.elapsedS(outcome.faultAt) : undefined,
        log,
        error,
      };
      const holds = stepHolds(result);
      result.status = holds ? 'succeeded' : 'failed';
      result.deviated = !holds;
      results.push(result);
      during.push({ step: name, before: stepBefore, after: stepAfter });
      if (result.faultAt !== undefined) faults.push({ t: result.faultAt, step: name, label: STEP_TITLES[name] });
      emit({ type: 'step-end', result });
    }
    await pause(Math.min(steadyMs, 5000), o.signal);
    after = await awaitSteadyState(t, o.signal);
    if (env) await o.beforeCleanup?.({ dir: env.dir, url: env.url, clusterDir: env.pgDir, repoUri: env.repoUri });
  } catch (err) {
    if (o.signal?.aborted) status = 'interrupted';
    else {
      status = 'failed';
      fatal = (err as Error).message;
    }
  } finally {
    if (traffic) {
      await traffic.stop();
      timeline = traffic.timeline();
    }
    cleanup = await system.stop();
    for (const line of cleanup) emit({ type: 'cleanup', line });
  }
  const end = new Date();
  const v = verdict(results);
  const ok = v.ok && status === 'completed' && results.length === steps.length;
  const m = (step: StepName, key: string) => {
    const r = results.find((s) => s.step === step)?.measured[key];
    return typeof r === 'number' ? r : null;
  };
  const journal: DrillJournal = {
    'chaoslib-version': null,
    bulwark: { drill: 1 },
    platform: `${platform()} ${osRelease()}`,
    node: hostname(),
    experiment: {
      title: o.target ? `Bulwark game day against ${system.url}` : 'Bulwark game day',
      description: o.target
        ? `The system named in ${o.target.file} under steady open-model load through ${steps.join(', ')}.`
        : 'The demo shop on a local PostgreSQL cluster behind the embedded router, under steady open-model load, through a backup, a primary crash, a bad release, a good release and a dropped table.',
      configuration: {
        sync,
        rate,
        steadyMs,
        steps,
        replicaLagMs: o.replicaLagMs ?? 0,
        ...(o.target
          ? {
              target: {
                file: o.target.file,
                url: system.url,
                database: o.target.pg ? system.primary().name : null,
                repository: system.repoUri || null,
                ...(o.target.deploy
                  ? {
                      app: o.target.deploy.app,
                      badRelease: o.target.deploy.badRelease,
                      goodRelease: o.target.deploy.goodRelease,
                    }
                  : {}),
              },
            }
          : {}),
      },
      'steady-state-hypothesis': {
        title: 'the shop takes orders and serves pages without a failed request',
        probes: steadyProbes(new DrillTraffic({ url: '', rate, user: o.load })).map((p) => ({
          type: 'probe' as const,
          name: p.name,
          tolerance: p.threshold,
        })),
      },
      method: steps.map((s) => ({
        type: 'action',
        name: s,
        title: STEP_TITLES[s],
        hypothesis: STEPS[s].hypothesis({ sync, configured: Boolean(o.target) }),
      })),
    },
    start: start.toISOString(),
    end: end.toISOString(),
    duration: (end.getTime() - start.getTime()) / 1000,
    status,
    deviated: !ok,
    steady_states: {
      before: before && journalSteadyState(before),
      after: after && journalSteadyState(after),
      during: during.map((d) => ({
        step: d.step,
        before: journalSteadyState(d.before),
        after: journalSteadyState(d.after),
      })),
    },
    run: results.map((r) => ({
      activity: { type: 'action', name: r.step, title: r.title, hypothesis: r.hypothesis },
      status: r.error ? 'failed' : 'succeeded',
      start: r.start,
      end: r.end,
      duration: r.duration,
      output: {
        probes: journalSteadyState({ steady_state_met: true, probes: r.probes }).probes,
        measured: r.measured,
        traffic: r.traffic,
        log: r.log,
      },
      ...(r.error ? { exception: r.error } : {}),
    })),
    rollbacks: [],
    steps: results,
    verdict: { ok, failed: fatal ? [...v.failed] : v.failed },
    measured: {
      rtoMs: m('failover', 'rtoMs'),
      lostAcknowledgedOrders: m('failover', 'lostOrders'),
      failedRequestsBadRelease: m('bad-release', 'failedRequests'),
      failedRequestsGoodRelease: m('good-release', 'failedRequests'),
      pitrTimeToQueryableMs: m('pitr', 'timeToQueryableMs'),
      pitrRowsRecovered: m('pitr', 'rowsRecovered'),
      requests: traffic?.requests ?? 0,
      failedRequests: traffic?.failures ?? 0,
      ordersAcknowledged: traffic && !traffic.measuresAcks ? null : (traffic?.acks.length ?? 0),
    },
    timeline,
    faults,
    cleanup,
  };
  if (fatal) journal.error = fatal;
  return journal;
}
