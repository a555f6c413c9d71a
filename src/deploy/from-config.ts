import { isAbsolute, resolve } from 'node:path';
import type { AppConfig, DeployConfig, LoadHook as LoadHookConfig } from '../config/deploy.js';
import { UsageError } from '../lib/errors.js';
import { runLoad } from '../load/index.js';
import { type Judgement, prometheusSource, routerSource } from './analysis.js';
import { Deployer, type DeployPlan, type LoadHook } from './orchestrator.js';
import { EcsProvider } from './providers/ecs.js';
import { ProcessProvider } from './providers/process.js';
import { AlbRouter } from './routers/alb.js';
import { EmbeddedRouterClient } from './routers/embedded.js';
import { HaproxyRouter } from './routers/haproxy.js';
import { StateStore } from './state.js';
import type { Provider, Router } from './types.js';

export interface FromConfigOptions {
  /** Folder of bulwark.config.ts: relative paths (state, scenarios, cwd) resolve from it. */
  baseDir: string;
  log?: (sentence: string, judgement?: Judgement) => void;
}

export function appConfigOf(config: DeployConfig | undefined, app: string, file = 'bulwark.config.ts'): AppConfig {
  const found = config?.apps[app];
  if (!found) {
    const known = Object.keys(config?.apps ?? {});
    throw new UsageError(
      `${file}: deploy.apps.${app} is not defined${known.length ? ` (apps: ${known.join(', ')})` : ' (no deploy.apps section)'}`,
      'BULWARK_E_CONFIG',
    );
  }
  return found;
}

export function storeFor(config: DeployConfig, app: string, baseDir: string): StateStore {
  return new StateStore(resolve(baseDir, config.stateDir), app);
}

export function routerFor(app: AppConfig, store: StateStore): Router {
  const r = app.router;
  if (r.type === 'embedded')
    return new EmbeddedRouterClient(
      `http://${r.adminHost}:${r.adminPort}`,
      store.routerToken(r.adminTokenEnv),
      `http://${r.host === '0.0.0.0' ? '127.0.0.1' : r.host}:${r.port}`,
    );
  if (r.type === 'haproxy')
    return new HaproxyRouter({
      socket: r.socket,
      backend: r.backend,
      servers: r.servers,
      frontendUrl: r.frontendUrl,
      log: r.log,
    });
  return new AlbRouter({
    region: r.region,
    listenerArn: r.listenerArn,
    targetGroups: r.targetGroups,
    frontendUrl: r.frontendUrl,
  });
}

export function providerFor(app: AppConfig, store: StateStore, baseDir: string): Provider {
  const p = app.provider;
  if (p.type === 'process')
    return new ProcessProvider({
      command: p.command,
      cwd: p.cwd ? resolve(baseDir, p.cwd) : baseDir,
      instances: p.instances,
      env: p.env,
      ports: p.ports,
      readiness: { path: p.readiness.path, timeoutMs: p.readiness.timeout },
      stopTimeoutMs: p.stopTimeout,
      logDir: store.logDir(),
    });
  return new EcsProvider({
    region: p.region,
    cluster: p.cluster,
    services: p.services,
    taskDefinition: p.taskDefinition,
    desiredCount: p.desiredCount,
    stableTimeoutMs: p.stableTimeout,
    pollIntervalMs: p.pollInterval,
  });
}

export function planFor(app: AppConfig): DeployPlan {
  const a = app.analysis;
  return {
    strategy: app.strategy,
    healthChecks: app.healthChecks.map((c) => ({ ...c, timeoutMs: c.timeout })),
    smoke: !!app.smoke,
    analysis: {
      minRequests: a.minRequests,
      maxErrorRate: a.maxErrorRate,
      maxP99Ms: a.maxP99Ms,
      maxP95Ms: a.maxP95Ms,
      vsStable: a.vsStable,
      intervalMs: a.interval,
      firstJudgementMs: a.firstJudgement,
      failureLimit: a.failureLimit,
      syntheticTraffic: !!a.syntheticTraffic,
    },
    blueGreen: {
      monitorMs: app.blueGreen.monitor,
      keepOldForMs: app.blueGreen.keepOldFor,
      baselineMs: app.blueGreen.baseline,
    },
    canary: {
      steps: app.canary.steps.map((s) => ({ weight: s.weight, pauseMs: s.pause })),
      keepOldForMs: app.canary.keepOldFor,
    },
    abort: app.abort,
    drainTimeoutMs: app.drainTimeout,
  };
}

/** A `bulwark load` run of a scenario file against `target`, as the smoke test or synthetic traffic. */
export function loadHookFor(app: AppConfig, baseDir: string): LoadHook | undefined {
  const hooks: Record<'smoke' | 'synthetic', LoadHookConfig | undefined> = {
    smoke: app.smoke,
    synthetic: app.analysis.syntheticTraffic,
  };
  if (!hooks.smoke && !hooks.synthetic) return undefined;
  return async (target, purpose) => {
    const hook = hooks[purpose];
    if (!hook) return { ok: true, requests: 0, failures: 0, detail: 'not configured' };
    const scenario = isAbsolute(hook.scenario) ? hook.scenario : resolve(baseDir, hook.scenario);
    const { summary, thresholdsPassed } = await runLoad({
      scenario,
      host: target,
      users: hook.users,
      duration: hook.duration,
      typecheck: false,
    });
    const t = summary.totals;
    return {
      ok: thresholdsPassed,
      requests: t.requests,
      failures: t.failures,
      detail: `${t.requests} requests, ${t.failures} failed, p99 ${t.latencyMs.p99?.toFixed(1)} ms, thresholds ${thresholdsPassed ? 'passed' : 'crossed'}`,
    };
  };
}

/** Everything `bulwark deploy` needs for one app, built from the validated config. */
export function deployerFromConfig(config: DeployConfig, appName: string, options: FromConfigOptions): Deployer {
  const app = appConfigOf(config, appName);
  const store = storeFor(config, appName, options.baseDir);
  const router = routerFor(app, store);
  const metrics =
    app.analysis.source === 'router'
      ? routerSource(router)
      : prometheusSource({ url: app.analysis.source.url, queries: app.analysis.source.queries });
  return new Deployer({
    app: appName,
    router,
    provider: providerFor(app, store, options.baseDir),
    store,
    metrics,
    plan: planFor(app),
    webhooks: config.webhooks.map((w) => ({ url: w.url, headers: w.headers, timeoutMs: w.timeout })),
    loadHook: loadHookFor(app, options.baseDir),
    log: options.log,
  });
}
