import { randomBytes } from 'node:crypto';
import { type AnalysisRules, type Judgement, judge, type MetricsSource } from './analysis.js';
import { type HttpCheckSpec, runHttpChecks } from './checks.js';
import { DeployError } from './errors.js';
import { assertSafeToStop } from './safety.js';
import type { AppState, ControlAction, DeploymentRecord, StateStore } from './state.js';
import {
  otherSlot,
  type Provider,
  type Router,
  type RouterState,
  type Slot,
  type SlotInstances,
  type SlotWindow,
  type Weights,
} from './types.js';
import { type DeployEventName, notifyWebhooks, type Webhook } from './webhooks.js';

/** A short `bulwark load` run; resolves with what the run measured. */
export type LoadHook = (
  target: string,
  purpose: 'smoke' | 'synthetic',
) => Promise<{ ok: boolean; requests: number; failures: number; detail: string }>;

export interface DeployPlan {
  strategy: 'blue-green' | 'canary';
  healthChecks: HttpCheckSpec[];
  /** Smoke load run against the new slot directly, before any user traffic (thresholds must pass). */
  smoke?: boolean;
  /**
   * `intervalMs`: each judgement covers the traffic since the previous one (Argo's measurement), the
   * first one after `firstJudgementMs` (default 1 s). `failureLimit`: failed judgements in a row
   * that are tolerated (default 1); one more rolls back. A decisive fail (errors chance cannot explain)
   * rolls back at once.
   */
  analysis: AnalysisRules & {
    intervalMs: number;
    firstJudgementMs?: number;
    failureLimit?: number;
    syntheticTraffic?: boolean;
  };
  /** `baselineMs`: how long the stable slot is measured before the switch, as the "vs stable" reference (default: intervalMs). */
  blueGreen: { monitorMs: number; keepOldForMs: number; baselineMs?: number };
  canary: { steps: Array<{ weight: number; pauseMs: number }>; keepOldForMs: number };
  abort: { newSlot: 'stop' | 'keep' };
  drainTimeoutMs: number;
}

export interface DeployerOptions {
  app: string;
  router: Router;
  provider: Provider;
  store: StateStore;
  metrics: MetricsSource;
  plan: DeployPlan;
  webhooks?: Webhook[];
  loadHook?: LoadHook;
  /** Every decision, as one sentence (the CLI prints them; tests collect them). */
  log?: (sentence: string, judgement?: Judgement) => void;
  /** How often waits look at control.json (promote/abort/rollback from another process). */
  controlPollMs?: number;
}

class Interrupted extends Error {
  constructor(
    readonly action: ControlAction | 'fail',
    readonly why: string,
  ) {
    super(why);
  }
}

const now = () => new Date().toISOString();

/**
 * Runs one app's deployments. Every traffic change goes through the router's make-before-break
 * checks, and the orchestrator adds its own: new instances are started, health-checked and confirmed
 * reachable through the router before they get weight, and a slot is stopped only once it has no
 * weight and has drained. Every decision is a sentence stored with its evidence in the deploy state.
 */
export class Deployer {
  private state!: AppState;
  private release?: () => void;
  constructor(private readonly o: DeployerOptions) {}

  private get store() {
    return this.o.store;
  }
  private get dep(): DeploymentRecord {
    return this.state.deployment!;
  }

  private say(sentence: string, judgement?: Judgement): void {
    const d = this.state.deployment;
    if (d && !d.finishedAt) {
      d.events.push({ at: now(), sentence, judgement });
      d.updatedAt = now();
    }
    this.store.save(this.state);
    this.o.log?.(sentence, judgement);
  }

  private async notify(event: DeployEventName, extra: Record<string, unknown> = {}): Promise<void> {
    if (!this.o.webhooks?.length) return;
    const d = this.state.deployment;
    const problems = await notifyWebhooks(this.o.webhooks, event, {
      app: this.o.app,
      deployment: d && {
        id: d.id,
        version: d.version,
        strategy: d.strategy,
        status: d.status,
        phase: d.phase,
        step: d.step,
        weights: d.weights,
      },
      ...extra,
    });
    for (const p of problems) this.o.log?.(p);
  }

  // ---- public operations ------------------------------------------------------------------------

  /** Deploy `version`; resolves when it serves all traffic (and the old slot is stopped), rejects after a rollback. */
  async deploy(
    version: string,
    options: { strategy?: 'blue-green' | 'canary'; resume?: boolean } = {},
  ): Promise<DeploymentRecord> {
    this.release = this.store.acquireLock();
    try {
      this.state = this.store.load();
      this.store.clearControl();
      const prior = this.state.deployment;
      if (prior && (prior.status === 'running' || prior.status === 'paused')) {
        if (!options.resume)
          throw new DeployError(
            'BULWARK_E_DEPLOY_STATE',
            `${this.o.app}: deploy of ${prior.version} was interrupted in phase "${prior.phase}"; run \`bulwark deploy ${this.o.app} --resume\` or \`bulwark deploy abort ${this.o.app}\``,
          );
        if (prior.version !== version && version !== '')
          throw new DeployError('BULWARK_E_DEPLOY_STATE', `--resume continues ${prior.version}, not ${version}`);
        this.say(`resuming the deploy of ${prior.version} to ${prior.to} from phase "${prior.phase}"`);
        return await this.run(prior);
      }
      if (options.resume)
        throw new DeployError('BULWARK_E_DEPLOY_STATE', `${this.o.app}: no interrupted deploy to resume`);
      const active = this.state.active;
      const to: Slot = active ? otherSlot(active) : 'blue';
      const record: DeploymentRecord = {
        id: `${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`,
        app: this.o.app,
        version,
        strategy: options.strategy ?? this.o.plan.strategy,
        from:
          active && this.state.slots[active] ? { slot: active, version: this.state.slots[active]!.version } : undefined,
        to,
        status: 'running',
        phase: 'starting',
        startedAt: now(),
        updatedAt: now(),
        events: [],
      };
      this.state.deployment = record;
      this.say(
        `deploying ${version} to ${to} with ${record.strategy}${record.from ? ` (stable: ${record.from.version} on ${record.from.slot})` : ' (first deploy)'}`,
      );
      await this.notify('deploy.started');
      return await this.run(record);
    } finally {
      this.release?.();
    }
  }

  /**
   * Steer a running deploy (`promote`, `abort`, `rollback`) from another process, or act directly when
   * no deploy process is alive (an interrupted deploy is aborted or rolled back cleanly here).
   */
  async control(action: ControlAction): Promise<string> {
    const holder = this.store.lockHolder();
    if (holder) {
      this.store.requestControl(action);
      return `asked the running deploy (pid ${holder.pid}) to ${action}`;
    }
    // After a success, promote means: the old version need not stay warm any longer.
    if (action === 'promote' && this.warmSlot()) return this.stopWarm('promoted: warm period ended early');
    this.release = this.store.acquireLock();
    try {
      this.state = this.store.load();
      const d = this.state.deployment;
      const inFlight = d && (d.status === 'running' || d.status === 'paused');
      if (action === 'rollback' && inFlight) {
        // An interrupted deploy: "back to the previous version" is its stable slot, whatever the weights.
        await this.returnToStable('rolled-back', 'rollback requested (the deploy process was gone)');
        return `rolled back the interrupted deploy of ${d!.version}; traffic is on ${d!.from?.slot ?? 'no slot'}`;
      }
      if (action === 'rollback') return await this.emergencyRollback();
      if (!inFlight)
        throw new DeployError(
          'BULWARK_E_DEPLOY_STATE',
          `${this.o.app}: no deploy in progress to ${action.replace('-full', '')}`,
        );
      if (action === 'abort') {
        await this.returnToStable('aborted', 'aborted by request (the deploy process was gone)');
        return `aborted the interrupted deploy of ${d!.version}; traffic is on ${d!.from?.slot ?? 'no slot'}`;
      }
      throw new DeployError(
        'BULWARK_E_DEPLOY_STATE',
        `${this.o.app}: the deploy of ${d!.version} is not running; resume it (bulwark deploy ${this.o.app} --resume) to promote`,
      );
    } finally {
      this.release?.();
    }
  }

  /** Stop every instance of the app (both slots), serving ones included: tear-down, not a deploy step. */
  async down(): Promise<void> {
    this.release = this.store.acquireLock();
    try {
      this.state = this.store.load();
      for (const slot of ['blue', 'green'] as const) {
        const inst = this.state.slots[slot];
        if (inst) await this.o.provider.stop(slot, inst);
        this.state.slots[slot] = null;
      }
      this.state.active = undefined;
      if (this.state.deployment && !this.state.deployment.finishedAt) {
        this.state.deployment.status = 'aborted';
        this.state.deployment.finishedAt = now();
      }
      this.store.save(this.state);
    } finally {
      this.release?.();
    }
  }

  // ---- the flow ---------------------------------------------------------------------------------

  private async run(d: DeploymentRecord): Promise<DeploymentRecord> {
    try {
      await this.prepareNewSlot(d);
      const stable = d.from?.slot;
      if (!stable || !this.state.slots[stable]) {
        await this.shift({ [d.to]: 100, [otherSlot(d.to)]: 0 } as Weights, `first deploy: ${d.to} takes all traffic`);
      } else if (d.strategy === 'canary') await this.canary(d, stable);
      else await this.blueGreen(d, stable);
      await this.finishSuccess(d);
      return d;
    } catch (err) {
      if (d.finishedAt) throw err; // already settled (e.g. rolled back from the warm old slot)
      if (err instanceof Interrupted) {
        if (err.action === 'promote' || err.action === 'promote-full') throw err; // never escapes waits
        const status = err.action === 'abort' ? 'aborted' : 'rolled-back'; // a failed analysis is a rollback
        await this.returnToStable(status, err.why);
        throw new DeployError(
          status === 'aborted' ? 'BULWARK_E_DEPLOY_ABORTED' : 'BULWARK_E_DEPLOY_FAILED',
          `${this.o.app}: ${d.version} ${status === 'aborted' ? 'aborted' : 'rolled back'}: ${err.why}`,
        );
      }
      if (d.phase === 'starting' || d.phase === 'checking') {
        // Nothing got traffic: leave stable as it is and clean the new slot per the abort policy.
        d.status = 'failed';
        await this.cleanNewSlot(d);
        this.finish(d, `failed before any traffic moved: ${(err as Error).message}`);
        await this.notify('deploy.failed', { reason: (err as Error).message });
        throw err instanceof DeployError
          ? err
          : new DeployError('BULWARK_E_DEPLOY_FAILED', `${this.o.app}: ${(err as Error).message}`, { cause: err });
      }
      // Something broke after traffic moved (router or provider error): return to stable, make-before-break.
      await this.returnToStable('rolled-back', `error during ${d.phase}: ${(err as Error).message}`);
      throw new DeployError(
        'BULWARK_E_DEPLOY_FAILED',
        `${this.o.app}: ${d.version} rolled back: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
  }

  /** Start (or, on resume, reuse) the new version in the idle slot, health-check it, register it with the router. */
  private async prepareNewSlot(d: DeploymentRecord): Promise<void> {
    const existing = this.state.slots[d.to];
    const router = await this.o.router.state();
    const reusable =
      existing && existing.version === d.version && d.phase !== 'starting' && (await this.o.provider.alive(existing));
    if (!reusable) {
      d.phase = 'starting';
      if (existing) {
        // The idle slot still runs an older version (kept warm): it must have no traffic before it goes.
        assertSafeToStop(d.to, router);
        this.say(`stopping ${existing.version} on ${d.to} to make room`);
        await this.o.router.drain(d.to, this.o.plan.drainTimeoutMs);
        await this.o.provider.stop(d.to, existing);
        this.state.slots[d.to] = null;
      }
      const t0 = Date.now();
      const inst = await this.o.provider.start(d.to, d.version);
      this.state.slots[d.to] = inst;
      this.say(`${d.to} started ${d.version}: ${inst.backends.length} instance(s) ready in ${Date.now() - t0} ms`);
    }
    const inst = this.state.slots[d.to]!;
    // d.to is never the stable slot, so registering its instances cannot touch stable traffic.
    await this.o.router.setBackends(d.to, inst.backends);
    if (d.phase === 'starting' || d.phase === 'checking') {
      d.phase = 'checking';
      const checks = await runHttpChecks(inst.backends, this.o.plan.healthChecks);
      if (!checks.ok)
        throw new DeployError('BULWARK_E_DEPLOY_FAILED', `health checks failed: ${checks.failures.join('; ')}`);
      this.say(`health checks passed on ${d.to} (${checks.passed} check(s) on ${inst.backends.length} instance(s))`);
      if (this.o.plan.smoke && this.o.loadHook) {
        const target = inst.backends.find((b) => b.url)?.url;
        if (target) {
          const r = await this.o.loadHook(target, 'smoke');
          if (!r.ok) throw new DeployError('BULWARK_E_DEPLOY_FAILED', `smoke load test failed on ${d.to}: ${r.detail}`);
          this.say(`smoke load test passed on ${d.to}: ${r.detail}`);
        } else this.say(`smoke load test skipped: ${d.to}'s instances have no direct address (platform-managed)`);
      }
      if (!(await this.o.router.confirmServing(d.to)))
        throw new DeployError('BULWARK_E_DEPLOY_FAILED', `the router cannot reach ${d.to}'s instances`);
      d.phase = 'verified';
      this.say(`${d.to} is reachable through the ${this.o.router.kind} router`);
    }
  }

  private async shift(weights: Weights, why: string): Promise<void> {
    const t0 = Date.now();
    await this.o.router.setWeights(weights);
    if (this.state.deployment) this.state.deployment.weights = weights;
    if (weights.blue === 100) this.state.active = 'blue';
    if (weights.green === 100) this.state.active = 'green';
    this.say(`traffic blue ${weights.blue}% / green ${weights.green}% (${why}; applied in ${Date.now() - t0} ms)`);
  }

  private async blueGreen(d: DeploymentRecord, stable: Slot): Promise<void> {
    const monitorMs = this.o.plan.blueGreen.monitorMs;
    if (d.phase !== 'monitoring') {
      this.interruptIfRequested();
      // The "vs stable" reference: the stable slot's own traffic right before the switch.
      d.baseline = await this.measureBaseline(stable, d.from!.version);
      await this.o.metrics.window(d.to, Date.now(), { version: d.version }); // baseline sample (cumulative-counter routers)
      await this.shift({ [d.to]: 100, [stable]: 0 } as Weights, `switch to ${d.version}`);
      d.phase = 'monitoring';
      d.step = undefined;
      this.say(
        `monitoring ${d.to} for ${Math.round(monitorMs / 1000)} s; ${stable} stays ready for an instant rollback`,
      );
    }
    const since = Date.now();
    await this.analyse(d, stable, since, monitorMs, d.baseline);
  }

  /**
   * The stable slot over the baseline window before a switch. A source that already holds that window
   * (the embedded router keeps history) answers at once; one that only counts from now on (HAProxy's
   * counters and log, in a fresh deploy process) is sampled, and the window is waited out.
   */
  private async measureBaseline(stable: Slot, version: string): Promise<SlotWindow | undefined> {
    const plan = this.o.plan;
    const baselineMs = plan.blueGreen.baselineMs ?? plan.analysis.intervalMs;
    if (baselineMs <= 0) return undefined;
    const t0 = Date.now();
    const held = await this.o.metrics.window(stable, t0 - baselineMs, { version });
    let w = held;
    if (held && held.requests < plan.analysis.minRequests) {
      this.say(
        `measuring ${stable} (${version}) for ${Math.round(baselineMs / 100) / 10} s as the baseline before the switch`,
      );
      const c = await this.waitControl(baselineMs);
      if (c) this.say(`${c} requested: switching without the rest of the baseline`);
      w = await this.o.metrics.window(stable, t0, { version });
    }
    if (w)
      this.say(
        `baseline of ${stable} (${version}): ${w.requests} requests, ${w.errors} errors${w.latencyMs.p99 !== undefined ? `, p99 ${w.latencyMs.p99.toFixed(1)} ms` : ''}`,
      );
    return w;
  }

  private async canary(d: DeploymentRecord, stable: Slot): Promise<void> {
    const steps = [...this.o.plan.canary.steps];
    if (steps[steps.length - 1]!.weight < 100) steps.push({ weight: 100, pauseMs: 0 });
    for (let i = d.step ?? 0; i < steps.length; i++) {
      const step = steps[i]!;
      d.step = i;
      d.phase = `step ${i + 1}/${steps.length}`;
      this.interruptIfRequested();
      const since = Date.now();
      await this.o.metrics.window(d.to, since, { version: d.version });
      await this.o.metrics.window(stable, since, { version: d.from!.version });
      await this.shift(
        { [d.to]: step.weight, [stable]: 100 - step.weight } as Weights,
        `canary step ${i + 1}/${steps.length}`,
      );
      await this.notify('deploy.step', { weight: step.weight });
      if (step.pauseMs === 0 && step.weight === 100) continue;
      const promoted = await this.analyse(d, stable, since, step.pauseMs);
      if (promoted === 'promote-full') {
        if (step.weight < 100) await this.shift({ [d.to]: 100, [stable]: 0 } as Weights, 'promoted to full traffic');
        break;
      }
    }
  }

  /**
   * Watch the new slot for `durationMs`. Each judgement covers the traffic since the previous one (the
   * first comes early, after `firstJudgementMs`), with at least `minRequests` samples to pass. A
   * decisive fail rolls back at once; other fails are counted, and more than `failureLimit` in a row
   * roll back (a pass resets the count). At the end, the last judgement must pass; if its window was
   * too thin, the whole window is judged. Inconclusive then pauses (re-judging and, when configured,
   * sending synthetic traffic) until the data decides or someone promotes or aborts.
   */
  private async analyse(
    d: DeploymentRecord,
    stable: Slot,
    since: number,
    durationMs: number,
    stableBaseline?: SlotWindow,
  ): Promise<'done' | 'promote-full'> {
    const plan = this.o.plan.analysis;
    const end = since + durationMs;
    const failureLimit = plan.failureLimit ?? 1;
    const firstMs = Math.min(plan.firstJudgementMs ?? 1000, plan.intervalMs);
    const judgeOver = async (from: number): Promise<Judgement | undefined> => {
      const candidate = await this.o.metrics.window(d.to, from, { version: d.version });
      if (!candidate) return undefined;
      const stableWin =
        stableBaseline ??
        (d.weights && d.weights[stable] > 0
          ? await this.o.metrics.window(stable, from, { version: d.from!.version })
          : undefined);
      return judge({ candidate, stable: stableWin, rules: plan });
    };
    if (durationMs === 0) return 'done'; // a step without a pause is explicitly not analysed
    let failures = 0;
    let judged = 0;
    let windowStart = since;
    for (;;) {
      const remaining = end - Date.now();
      const interval = judged === 0 ? firstMs : plan.intervalMs;
      // While paused (past the end, inconclusive) keep re-judging every interval.
      const wait = remaining > 0 ? Math.min(interval, remaining) : plan.intervalMs;
      {
        const c = await this.waitControl(wait);
        if (c === 'promote') {
          this.say(`promoted: skipping the rest of ${d.phase}`);
          return 'done';
        }
        if (c === 'promote-full') {
          this.say('promoted to full traffic, skipping the remaining steps');
          return 'promote-full';
        }
      }
      const from = windowStart;
      let j = await judgeOver(from);
      // The next judgement starts where this one's samples were taken (counter routers sample per call).
      windowStart = Date.now();
      judged++;
      if (!j) {
        if (Date.now() >= end) {
          this.say(`no traffic metrics from this router for ${d.to}: continuing without analysis`);
          return 'done';
        }
        continue;
      }
      const atEnd = Date.now() >= end;
      if (atEnd && j.verdict === 'inconclusive' && j.evidence.candidate.requests < plan.minRequests) {
        // A quiet service: the last interval alone is too thin, the whole window may not be.
        j = (await judgeOver(since)) ?? j;
      }
      const over = `${Math.round((windowStart - from) / 100) / 10} s`;
      if (j.verdict === 'fail') {
        failures++;
        if (j.decisive || failures > failureLimit) {
          this.say(`analysis of ${d.to} (${d.version}) over ${over}: ${j.reason}`, j);
          await this.notify('deploy.analysis', { verdict: j.verdict, reason: j.reason });
          throw new Interrupted('fail', `analysis failed: ${j.reason}`);
        }
        this.say(
          `analysis of ${d.to} (${d.version}) over ${over}: ${j.reason} (failure ${failures} of ${failureLimit} tolerated in a row)`,
          j,
        );
        continue; // never passes on a failed judgement: the next one decides
      }
      if (j.verdict === 'pass') failures = 0;
      if (!atEnd) continue;
      if (j.verdict === 'pass') {
        this.say(`analysis of ${d.to} (${d.version}) after ${d.phase}: ${j.reason}`, j);
        await this.notify('deploy.analysis', { verdict: j.verdict, reason: j.reason });
        if (d.status === 'paused') d.status = 'running';
        d.pausedReason = undefined;
        return 'done';
      }
      // Inconclusive at the end of the window: pause, never promote on silence.
      if (d.status !== 'paused') {
        d.status = 'paused';
        d.pausedReason = j.reason;
        this.say(
          `paused at ${d.phase}: ${j.reason} — waiting for traffic${plan.syntheticTraffic && this.o.loadHook ? ' (sending synthetic traffic)' : ''}, or \`promote\` / \`abort\``,
          j,
        );
        await this.notify('deploy.paused', { reason: j.reason });
      }
      if (plan.syntheticTraffic && this.o.loadHook && this.o.router.frontendUrl) {
        try {
          const r = await this.o.loadHook(this.o.router.frontendUrl, 'synthetic');
          this.say(`synthetic traffic through the router: ${r.detail}`);
        } catch (err) {
          // A broken traffic scenario must not decide the deploy: stay paused, say why.
          this.say(`synthetic traffic could not run: ${(err as Error).message}`);
        }
      }
    }
  }

  /** Before moving traffic: an abort or rollback asked for meanwhile wins (a promote waits for the next pause). */
  private interruptIfRequested(): void {
    const c = this.store.takeControl();
    if (!c) return;
    if (c.action === 'abort') throw new Interrupted('abort', 'aborted by request');
    if (c.action === 'rollback') throw new Interrupted('rollback', 'rollback requested');
    this.store.requestControl(c.action);
  }

  /** Wait up to `ms`, returning early with a promote; abort and rollback interrupt the flow. */
  private async waitControl(ms: number): Promise<'promote' | 'promote-full' | undefined> {
    const end = Date.now() + ms;
    const poll = this.o.controlPollMs ?? 200;
    for (;;) {
      const c = this.store.takeControl();
      if (c) {
        if (c.action === 'abort') throw new Interrupted('abort', 'aborted by request');
        if (c.action === 'rollback') throw new Interrupted('rollback', 'rollback requested');
        return c.action;
      }
      const left = end - Date.now();
      if (left <= 0) return undefined;
      await new Promise((r) => setTimeout(r, Math.min(poll, left)));
    }
  }

  /**
   * Success: the new version serves all traffic and passed. With keepOldFor, the old slot stays running
   * without traffic (a rollback is one weight change) and the deploy returns now: the lock is released,
   * so the next deploy is never held up by the warm period. `stopWarm` ends it (the CLI schedules it at
   * `keepOldUntil`; `promote` runs it at once; the next deploy stops the slot itself to make room).
   */
  private async finishSuccess(d: DeploymentRecord): Promise<void> {
    const old = d.from?.slot;
    d.phase = 'succeeded';
    d.status = 'succeeded';
    this.state.active = d.to;
    const keepMs = d.strategy === 'canary' ? this.o.plan.canary.keepOldForMs : this.o.plan.blueGreen.keepOldForMs;
    if (old && this.state.slots[old]) {
      await this.o.router.drain(old, this.o.plan.drainTimeoutMs);
      if (keepMs > 0) {
        d.keepOldUntil = new Date(Date.now() + keepMs).toISOString();
        this.finish(
          d,
          `${d.version} is live on ${d.to}; ${d.from!.version} stays warm on ${old} without traffic until ${d.keepOldUntil} (a rollback until then is one weight change)`,
        );
        await this.notify('deploy.succeeded');
        return;
      }
      const inst = this.state.slots[old]!;
      assertSafeToStop(old, await this.o.router.state());
      await this.o.provider.stop(old, inst);
      this.state.slots[old] = null;
      await this.o.router.setBackends(old, []); // the router forgets addresses nothing listens on
      this.say(`stopped ${inst.version} on ${old}`);
    }
    this.finish(d, `${d.version} is live on ${d.to}`);
    await this.notify('deploy.succeeded');
  }

  /**
   * Whether the old slot of deployment `id` (default: the last one) is still kept warm: its deploy
   * succeeded, nothing replaced it, and the slot still runs that version without being active.
   */
  warmSlot(id?: string): { slot: Slot; version: string; until: string; deploymentId: string } | undefined {
    const state = this.store.load();
    const d = state.deployment;
    if (d?.status !== 'succeeded' || !d.keepOldUntil || !d.from) return undefined;
    if (id && d.id !== id) return undefined;
    const inst = state.slots[d.from.slot];
    if (!inst || inst.version !== d.from.version || state.active === d.from.slot) return undefined;
    return { slot: d.from.slot, version: d.from.version, until: d.keepOldUntil, deploymentId: d.id };
  }

  /** End the warm period: drain and stop the old slot (only if it still has no traffic). */
  async stopWarm(reason: string, id?: string): Promise<string> {
    if (this.store.lockHolder())
      return `${this.o.app}: a deploy is running; it decides about the warm slot (not stopped)`;
    this.release = this.store.acquireLock();
    try {
      const warm = this.warmSlot(id);
      if (!warm) return `${this.o.app}: no old slot is kept warm`;
      this.state = this.store.load();
      const d = this.state.deployment!;
      const inst = this.state.slots[warm.slot]!;
      assertSafeToStop(warm.slot, await this.o.router.state());
      await this.o.router.drain(warm.slot, this.o.plan.drainTimeoutMs);
      await this.o.provider.stop(warm.slot, inst);
      this.state.slots[warm.slot] = null;
      await this.o.router.setBackends(warm.slot, []);
      d.keepOldUntil = undefined;
      const sentence = `stopped ${inst.version} on ${warm.slot} (${reason})`;
      d.events.push({ at: now(), sentence });
      d.updatedAt = now();
      this.store.save(this.state);
      this.o.log?.(sentence);
      return `${this.o.app}: ${sentence}`;
    } finally {
      this.release?.();
    }
  }

  /**
   * Put all traffic back on the stable slot (make-before-break: the stable instances must be alive and
   * reachable first), then drain the new slot and stop or keep it as `abort.newSlot` says.
   */
  private async returnToStable(status: 'aborted' | 'rolled-back', why: string): Promise<void> {
    const d = this.dep;
    const stable = d.from?.slot;
    const stableInst = stable ? this.state.slots[stable] : null;
    if (!stable || !stableInst) {
      // First deploy: there is nothing to go back to; take the new slot out of service is not possible
      // without zero backends, so it keeps serving and the deploy is marked as such.
      d.status = status;
      this.finish(d, `${status}: ${why} (no previous version to return to; ${d.to} keeps serving)`);
      await this.notify(status === 'aborted' ? 'deploy.aborted' : 'deploy.rolled_back', { reason: why });
      return;
    }
    if (!(await this.o.provider.alive(stableInst)))
      throw new DeployError(
        'BULWARK_E_DEPLOY_FAILED',
        `cannot return to ${stable}: its instances are not running (${why})`,
      );
    const router = await this.o.router.state();
    if (router.slots[stable].backends.length === 0) await this.o.router.setBackends(stable, stableInst.backends);
    if (!(await this.o.router.confirmServing(stable)))
      throw new DeployError(
        'BULWARK_E_DEPLOY_FAILED',
        `cannot return to ${stable}: the router cannot reach it (${why})`,
      );
    await this.shift({ [stable]: 100, [d.to]: 0 } as Weights, `${status === 'aborted' ? 'abort' : 'rollback'}: ${why}`);
    this.state.active = stable;
    d.status = status;
    await this.cleanNewSlot(d);
    this.finish(d, `${status}: ${why}; ${d.from!.version} on ${stable} serves all traffic`);
    await this.notify(status === 'aborted' ? 'deploy.aborted' : 'deploy.rolled_back', { reason: why });
  }

  private async cleanNewSlot(d: DeploymentRecord): Promise<void> {
    const inst = this.state.slots[d.to];
    if (!inst) return;
    const router = await this.o.router.state();
    if (router.slots[d.to].weight > 0) return; // never stop what serves
    if (!(await this.o.router.drain(d.to, this.o.plan.drainTimeoutMs)))
      this.say(`${d.to} still had requests in flight after ${this.o.plan.drainTimeoutMs} ms`);
    if (this.o.plan.abort.newSlot === 'keep') {
      this.say(`keeping ${inst.version} running on ${d.to} (abort.newSlot = keep) for inspection, without traffic`);
      return;
    }
    await this.o.provider.stop(d.to, inst);
    this.state.slots[d.to] = null;
    await this.o.router.setBackends(d.to, []);
    this.say(`stopped ${inst.version} on ${d.to}`);
  }

  private finish(d: DeploymentRecord, sentence: string): void {
    d.events.push({ at: now(), sentence });
    d.finishedAt = now();
    d.updatedAt = now();
    this.store.save(this.state);
    this.store.appendHistory(d);
    this.o.log?.(sentence);
  }

  /**
   * The emergency path: no analysis, no steps. Traffic goes to the other slot if it still runs the
   * previous version (kept warm), else the previous version is started there first (make-before-break).
   */
  private async emergencyRollback(): Promise<string> {
    const active = this.state.active;
    if (!active)
      throw new DeployError('BULWARK_E_DEPLOY_STATE', `${this.o.app}: nothing deployed, nothing to roll back`);
    const current = this.state.slots[active];
    const target = otherSlot(active);
    let previous = this.state.slots[target];
    if (previous && !(await this.o.provider.alive(previous))) previous = null;
    if (!previous) {
      const last = [...this.store.history()]
        .reverse()
        .find((h) => h.status === 'succeeded' && h.version !== current?.version);
      const version = last?.version ?? this.state.deployment?.from?.version;
      if (!version)
        throw new DeployError('BULWARK_E_DEPLOY_STATE', `${this.o.app}: no previous version to roll back to`);
      this.o.log?.(`rollback: starting ${version} on ${target}`);
      previous = await this.o.provider.start(target, version);
      this.state.slots[target] = previous;
      this.store.save(this.state);
    }
    await this.o.router.setBackends(target, previous.backends);
    if (!(await this.o.router.confirmServing(target)))
      throw new DeployError('BULWARK_E_DEPLOY_FAILED', `rollback: the router cannot reach ${target}`);
    const record: DeploymentRecord = {
      id: `${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`,
      app: this.o.app,
      version: previous.version,
      strategy: 'rollback',
      from: current ? { slot: active, version: current.version } : undefined,
      to: target,
      status: 'running',
      phase: 'rollback',
      startedAt: now(),
      updatedAt: now(),
      events: [],
    };
    const prior = this.state.deployment;
    if (prior && !prior.finishedAt) {
      prior.status = 'rolled-back';
      prior.finishedAt = now();
      this.store.appendHistory(prior);
    }
    this.state.deployment = record;
    await this.shift({ [target]: 100, [active]: 0 } as Weights, 'emergency rollback, no analysis');
    record.status = 'succeeded';
    record.phase = 'succeeded';
    this.state.active = target;
    this.finish(
      record,
      `rolled back to ${previous.version} on ${target}; ${current?.version ?? '?'} on ${active} has no traffic and stays running`,
    );
    await this.notify('deploy.rolled_back', { reason: 'emergency rollback' });
    return `rolled back ${this.o.app} to ${previous.version} on ${target}`;
  }

  /** Current state (no lock needed: written atomically). */
  status(): AppState & { running?: { pid: number; startedAt: string } } {
    const state = this.store.load();
    const holder = this.store.lockHolder();
    return { ...state, ...(holder ? { running: { pid: holder.pid, startedAt: holder.startedAt } } : {}) };
  }

  /** What the router itself reports (live weights and backends), or why it cannot be asked. */
  async routerState(): Promise<RouterState | { error: string }> {
    try {
      return await this.o.router.state();
    } catch (err) {
      return { error: (err as Error).message };
    }
  }

  history(): DeploymentRecord[] {
    return this.store.history();
  }

  /** Instances a status display can show per slot. */
  static describeSlot(inst: SlotInstances | null): string {
    return inst ? `${inst.version} (${inst.backends.length} instance(s) since ${inst.startedAt})` : 'empty';
  }
}
