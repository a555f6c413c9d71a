import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  Deployer,
  type DeployPlan,
  type EmbeddedRouter,
  ProcessProvider,
  routerSource,
  StateStore,
  startEmbeddedRouter,
} from '../../src/deploy/index.js';
import { APP_SH } from './cli.js';
import { keepAliveTraffic, servedBy, sleep } from './helpers.js';

/** The orchestrator as a library (bulwark/deploy): in-process embedded router, process provider, real apps. */
describe('Deployer (library)', () => {
  let dir: string;
  let router: EmbeddedRouter;
  let hookServer: Server;
  const hookEvents: Array<{ event: string; deployment?: { version: string } }> = [];
  const log: string[] = [];
  let app = 0;

  const plan = (over: Partial<DeployPlan> = {}): DeployPlan => ({
    strategy: 'blue-green',
    healthChecks: [{ path: '/health' }],
    analysis: { minRequests: 30, maxErrorRate: 0.02, maxP99Ms: 400, intervalMs: 300 },
    blueGreen: { monitorMs: 1500, keepOldForMs: 0 },
    canary: { steps: [{ weight: 30, pauseMs: 1500 }], keepOldForMs: 0 },
    abort: { newSlot: 'stop' },
    drainTimeoutMs: 5000,
    ...over,
  });

  /** A fresh app (own state folder) behind the shared router. */
  const make = (over: Partial<DeployPlan> = {}, hooks = false) => {
    const store = new StateStore(join(dir, `app${++app}`), 'shop');
    const deployer = new Deployer({
      app: 'shop',
      router,
      provider: new ProcessProvider({ command: `sh ${APP_SH}`, logDir: store.logDir() }),
      store,
      metrics: routerSource(router),
      plan: plan(over),
      webhooks: hooks ? [{ url: `http://127.0.0.1:${(hookServer.address() as AddressInfo).port}/hook` }] : [],
      log: (s) => log.push(s),
      controlPollMs: 50,
    });
    return { store, deployer };
  };
  const cleanups: Array<() => Promise<void>> = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'bulwark-deployer-'));
    router = await startEmbeddedRouter({ port: 0 });
    hookServer = createServer((req, res) => {
      let body = '';
      req.on('data', (d) => {
        body += d;
      });
      req.on('end', () => {
        hookEvents.push(JSON.parse(body));
        res.end();
      });
    });
    await new Promise<void>((r) => hookServer.listen(0, '127.0.0.1', r));
  });
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!();
  });
  afterAll(async () => {
    await router?.close();
    hookServer?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const waitFor = async (what: () => boolean, ms = 20_000) => {
    const end = Date.now() + ms;
    while (!what()) {
      if (Date.now() > end) throw new Error('condition not reached');
      await sleep(25);
    }
  };

  it('pauses on an inconclusive analysis (no traffic) instead of promoting, until promote; webhooks see it all', async () => {
    const { store, deployer } = make({}, true);
    cleanups.push(() => deployer.down());
    await deployer.deploy('v1');
    const second = deployer.deploy('v2');
    await waitFor(() => store.load().deployment?.status === 'paused');
    const paused = store.load().deployment!;
    expect(paused.pausedReason).toMatch(/0 requests in the window, 30 needed/);
    // a second deploy of the same app cannot start meanwhile
    const other = new Deployer({ ...(deployer as unknown as { o: object }).o, store } as never);
    await expect(other.deploy('v3')).rejects.toMatchObject({ code: 'BULWARK_E_DEPLOY_LOCKED' });
    expect(await deployer.control('promote')).toMatch(/asked the running deploy/);
    const done = await second;
    expect(done.status).toBe('succeeded');
    expect(await servedBy(router.url, 5)).toEqual({ v2: 5 });
    expect(hookEvents.map((e) => `${e.event}:${e.deployment?.version}`)).toEqual([
      'deploy.started:v1',
      'deploy.succeeded:v1',
      'deploy.started:v2',
      'deploy.paused:v2',
      'deploy.succeeded:v2',
    ]);
  });

  it('canary of a slow version: p99 over the limit fails the step, traffic returns to stable', async () => {
    const { store, deployer } = make({ strategy: 'canary' });
    cleanups.push(() => deployer.down());
    await deployer.deploy('v1');
    let stop!: () => void;
    const traffic = keepAliveTraffic(router.url, new Promise<void>((r) => (stop = r)), { connections: 6 });
    try {
      await expect(deployer.deploy('v2-slow')).rejects.toMatchObject({ code: 'BULWARK_E_DEPLOY_FAILED' });
    } finally {
      stop();
    }
    const tally = await traffic;
    expect(tally.failures).toEqual([]); // slow is not failed: every request was answered
    const d = store.load().deployment!;
    expect(d.status).toBe('rolled-back');
    const decision = d.events.find((e) => e.judgement?.verdict === 'fail')!;
    expect(decision.judgement!.evidence.checks.find((c) => c.name === 'p99')).toMatchObject({ outcome: 'fail' });
    expect(decision.judgement!.evidence.candidate.latencyMs.p99).toBeGreaterThan(400);
    expect((await router.state()).slots.blue.weight).toBe(100);
    expect(store.load().slots.green).toBeNull(); // abort.newSlot = stop
    expect(await servedBy(router.url, 5)).toEqual({ v1: 5 });
  });

  it('abort during a canary step returns all traffic to stable and keeps the new slot when abort.newSlot = keep', async () => {
    const { store, deployer } = make({
      strategy: 'canary',
      // no latency rule: on a busy 2-core machine a p99 check could decide before the abort does
      analysis: { minRequests: 30, maxErrorRate: 0.02, intervalMs: 300 },
      abort: { newSlot: 'keep' },
      canary: { steps: [{ weight: 50, pauseMs: 60_000 }], keepOldForMs: 0 },
    });
    cleanups.push(() => deployer.down());
    await deployer.deploy('v1');
    let stop!: () => void;
    const traffic = keepAliveTraffic(router.url, new Promise<void>((r) => (stop = r)));
    const running = deployer.deploy('v2');
    await waitFor(() => store.load().deployment?.weights?.green === 50);
    await sleep(300);
    store.requestControl('abort');
    await expect(running).rejects.toMatchObject({ code: 'BULWARK_E_DEPLOY_ABORTED' });
    stop();
    const tally = await traffic;
    expect(tally.failures).toEqual([]);
    expect(tally.bySlot.v2).toBeGreaterThan(0); // the canary did serve before the abort
    const s = store.load();
    expect(s.deployment!.status).toBe('aborted');
    expect(s.slots.green?.version).toBe('v2'); // kept, without traffic
    expect((await router.state()).slots.green.weight).toBe(0);
    expect(await servedBy(router.url, 5)).toEqual({ v1: 5 });
  });

  it('refuses to move traffic when the stable instances are gone (make-before-break), rather than cut service', async () => {
    const { store, deployer } = make({
      strategy: 'canary',
      canary: { steps: [{ weight: 20, pauseMs: 60_000 }], keepOldForMs: 0 },
    });
    cleanups.push(() => deployer.down());
    await deployer.deploy('v1');
    const running = deployer.deploy('v2');
    await waitFor(() => store.load().deployment?.weights?.green === 20);
    // The stable slot's processes die behind Bulwark's back:
    const blue = store.load().slots.blue!;
    await new ProcessProvider({ command: 'true', logDir: store.logDir() }).stop('blue', blue);
    store.requestControl('abort');
    await expect(running).rejects.toThrow(/cannot return to blue: its instances are not running/);
    expect((await router.state()).slots.green.weight).toBe(20); // green keeps serving its share
  });

  it('an abort asked for while the new instances start wins before any traffic moves', async () => {
    const { store, deployer } = make();
    cleanups.push(() => deployer.down());
    await deployer.deploy('v1');
    log.length = 0;
    const running = deployer.deploy('v2');
    store.requestControl('abort');
    await expect(running).rejects.toMatchObject({ code: 'BULWARK_E_DEPLOY_ABORTED' });
    expect(log.some((l) => /green 100%|green [1-9]\d*%/.test(l))).toBe(false);
    expect(store.load()).toMatchObject({ active: 'blue', slots: { green: null }, deployment: { status: 'aborted' } });
    expect(await servedBy(router.url, 5)).toEqual({ v1: 5 });
  });

  it('returns after success with the old slot kept warm (lock released); promote then stops the old slot', async () => {
    const { store, deployer } = make({ blueGreen: { monitorMs: 1500, keepOldForMs: 600_000 } });
    cleanups.push(() => deployer.down());
    await deployer.deploy('v1');
    let stop!: () => void;
    const traffic = keepAliveTraffic(router.url, new Promise<void>((r) => (stop = r)));
    try {
      const d = await deployer.deploy('v2'); // resolves without sitting through the 10-minute warm period
      expect(d.status).toBe('succeeded');
    } finally {
      stop();
    }
    expect((await traffic).failures).toEqual([]);
    expect(store.lockHolder()).toBeUndefined();
    expect(store.load().slots.blue?.version).toBe('v1');
    expect(deployer.warmSlot()).toMatchObject({ slot: 'blue', version: 'v1' });
    expect(await deployer.control('promote')).toMatch(/stopped v1 on blue \(promoted: warm period ended early\)/);
    expect(store.load().slots.blue).toBeNull();
    expect(deployer.warmSlot()).toBeUndefined();
    expect(await servedBy(router.url, 5)).toEqual({ v2: 5 });
  });

  it('promote --full takes a canary straight to 100 %, skipping the remaining steps', async () => {
    const { store, deployer } = make({
      strategy: 'canary',
      canary: {
        steps: [
          { weight: 20, pauseMs: 60_000 },
          { weight: 50, pauseMs: 60_000 },
        ],
        keepOldForMs: 0,
      },
    });
    cleanups.push(() => deployer.down());
    await deployer.deploy('v1');
    log.length = 0;
    const running = deployer.deploy('v2');
    await waitFor(() => store.load().deployment?.weights?.green === 20);
    store.requestControl('promote-full');
    expect((await running).status).toBe('succeeded');
    expect(log.some((l) => /promoted to full traffic, skipping the remaining steps/.test(l))).toBe(true);
    expect(log.some((l) => /green 50%/.test(l))).toBe(false);
    expect(await servedBy(router.url, 5)).toEqual({ v2: 5 });
  });
});
