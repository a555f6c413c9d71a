import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../src/lib/net.js';
import { APP_SH, cli, cliChild, load, SMOKE, startCli, trafficChanges, watchedTraffic } from './cli.js';
import { servedAround, servedBy, sleep, waitFor } from './helpers.js';

/**
 * `bulwark deploy` end to end: the embedded router as its own process (`bulwark deploy router`), the
 * process provider starting the demo shop, and `bulwark load` sending traffic through the router
 * during every traffic change. Zero failed requests is the assertion, not a hope.
 */
describe('bulwark deploy (embedded router, process provider) under bulwark load', () => {
  let dir: string;
  let routerUrl: string;
  let router: Awaited<ReturnType<typeof startCli>>;
  const env = { KEEP_OLD: '0' };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'bulwark-deploy-e2e-'));
    const port = await freePort({ below: 32768 });
    const adminPort = await freePort({ below: 32768 });
    routerUrl = `http://127.0.0.1:${port}`;
    writeFileSync(
      join(dir, 'bulwark.config.ts'),
      `import { defineConfig } from 'bulwark';
export default defineConfig((env) => ({
  deploy: {
    webhooks: [],
    apps: {
      shop: {
        router: { type: 'embedded', port: ${port}, adminPort: ${adminPort} },
        provider: { type: 'process', command: 'sh ${APP_SH}', instances: 2 },
        healthChecks: env.CHECK_API
          ? [{ path: '/health', bodyContains: 'ok' }, { path: '/api/critical' }]
          : [{ path: '/health', bodyContains: 'ok' }],
        smoke: env.SMOKE ? { scenario: '${SMOKE}', users: 2, duration: '2s' } : undefined,
        analysis: {
          interval: '1s', minRequests: 30, maxErrorRate: 0.02, maxP99Ms: 400,
          syntheticTraffic: env.SYNTH ? { scenario: '${SMOKE}', users: 4, duration: '2s' } : undefined,
        },
        blueGreen: { monitor: '3s', keepOldFor: env.KEEP_OLD ?? 0 },
        canary: { steps: [{ weight: 25, pause: '2s' }, { weight: 50, pause: '2s' }], keepOldFor: 0 },
      },
    },
  },
}));
`,
    );
    router = await startCli(['deploy', 'router', 'shop'], dir, /listening on/);
  });

  afterAll(async () => {
    if (dir) await cli(['deploy', 'down', 'shop'], dir);
    await router?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('rejects usage errors with exit code 2 and one line', async () => {
    const r = await cli(['deploy', 'shop'], dir);
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toBe('bulwark: bulwark deploy: --version is required');
    const unknown = await cli(['deploy', 'nope', '--version', 'v1'], dir);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/deploy\.apps\.nope is not defined \(apps: shop\)/);
  });

  it('first deploy puts v1 on blue', async () => {
    const r = await cli(['deploy', 'shop', '--version', 'v1'], dir, env);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(await servedBy(routerUrl, 10)).toEqual({ v1: 10 });
  });

  it('blue-green switch to v2 under load: zero failed requests, analysis evidence printed', async () => {
    const traffic = load(routerUrl, '7s', dir, 'bg');
    const watched = watchedTraffic(routerUrl);
    await waitFor(() => (watched.tally.bySlot.v1 ?? 0) >= 50, 20_000, 'traffic on v1');
    const r = await cli(['deploy', 'shop', '--version', 'v2'], dir, env);
    const seen = await watched.stop();
    const summary = await traffic;
    // Traffic was flowing on both versions around the switch, so the zeros below cover the switch itself.
    const [sw] = trafficChanges(dir);
    expect(sw!.sentence).toMatch(/traffic blue 0% \/ green 100%/);
    expect(servedAround(seen, sw!.at, 1000).before.v1 ?? 0).toBeGreaterThan(0);
    expect(servedAround(seen, sw!.at, 1000).after.v2 ?? 0).toBeGreaterThan(0);
    expect(seen.failures).toEqual([]);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(r.stdout).toMatch(/traffic blue 0% \/ green 100%/);
    expect(r.stdout).toMatch(/analysis of green \(v2\) after monitoring: passed/);
    expect(r.stdout).toMatch(/\[ok\] error rate/);
    expect(r.stdout).toMatch(/stopped v1 on blue/);
    expect(summary.totals.requests).toBeGreaterThan(100);
    expect(summary.totals.failures).toBe(0);
    expect(await servedBy(routerUrl, 10)).toEqual({ v2: 10 });
  });

  it('canary progression to v3 under load: zero failed requests, each step analysed', async () => {
    const traffic = load(routerUrl, '9s', dir, 'canary');
    const watched = watchedTraffic(routerUrl);
    await waitFor(() => (watched.tally.bySlot.v2 ?? 0) >= 50, 20_000, 'traffic on v2');
    const r = await cli(['deploy', 'shop', '--version', 'v3', '--strategy', 'canary'], dir, env);
    const seen = await watched.stop();
    const summary = await traffic;
    const changes = trafficChanges(dir);
    expect(changes).toHaveLength(3);
    expect(servedAround(seen, changes[0]!.at, 1000).before.v2 ?? 0).toBeGreaterThan(0);
    expect(servedAround(seen, changes[0]!.at, 1000).after.v3 ?? 0).toBeGreaterThan(0);
    expect(servedAround(seen, changes[2]!.at, 1000).after.v3 ?? 0).toBeGreaterThan(0);
    expect(seen.failures).toEqual([]);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(r.stdout).toMatch(/traffic blue 25% \/ green 75% \(canary step 1\/3/);
    expect(r.stdout).toMatch(/traffic blue 50% \/ green 50% \(canary step 2\/3/);
    expect(r.stdout).toMatch(/traffic blue 100% \/ green 0% \(canary step 3\/3/);
    expect(r.stdout.match(/analysis of blue \(v3\) after step \d\/3: passed/g)).toHaveLength(2);
    expect(summary.totals.failures).toBe(0);
    expect(await servedBy(routerUrl, 10)).toEqual({ v3: 10 });
  });

  it('returns as soon as the new version passed, the old one kept warm meanwhile; rollback then is one weight change, under load: zero failed requests', async () => {
    const traffic = load(routerUrl, '10s', dir, 'rollback');
    const watched = watchedTraffic(routerUrl);
    await waitFor(() => (watched.tally.bySlot.v3 ?? 0) >= 50, 20_000, 'traffic on v3');
    // keepOldFor 10 minutes: the command must not sit through them
    const r = await cli(['deploy', 'shop', '--version', 'v4'], dir, { KEEP_OLD: '10m' });
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(r.stdout).toMatch(/v3 stays warm on blue until .*: `bulwark deploy rollback shop` switches back/);
    const afterDeploy = JSON.parse(readFileSync(join(dir, '.bulwark/deploy/shop/state.json'), 'utf8'));
    expect(afterDeploy).toMatchObject({
      active: 'green',
      slots: { blue: { version: 'v3' }, green: { version: 'v4' } },
      deployment: { version: 'v4', status: 'succeeded' },
    });
    expect(await servedBy(routerUrl, 5)).toEqual({ v4: 5 });
    const rb = await cli(['deploy', 'rollback', 'shop'], dir);
    const seen = await watched.stop();
    const summary = await traffic;
    expect(rb.code, rb.stderr).toBe(0);
    expect(rb.stdout).not.toMatch(/starting/); // v3 was still running: one weight change
    expect(rb.stdout).toMatch(/rolled back shop to v3 on blue/);
    expect(summary.totals.failures).toBe(0);
    expect(seen.failures).toEqual([]);
    expect(await servedBy(routerUrl, 10)).toEqual({ v3: 10 });
  });

  it('a version answering 500s is rolled back automatically within the monitoring window, with evidence', async () => {
    const traffic = load(routerUrl, '6s', dir, 'bad');
    // The watched trickle runs until the deploy is over: the analysis never waits on a finished load run.
    const watched = watchedTraffic(routerUrl);
    await waitFor(() => (watched.tally.bySlot.v3 ?? 0) >= 50, 20_000, 'traffic on v3');
    const r = await cli(['deploy', 'shop', '--version', 'v5-err'], dir, env);
    await watched.stop();
    await traffic; // failures here are the bad version's own answers before the rollback
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/analysis of green \(v5-err\) over [\d.]+ s: failed: \d+ errors in \d+ requests/);
    expect(r.stdout).toMatch(/\[fail\] error rate/);
    expect(r.stdout).toMatch(/traffic blue 100% \/ green 0% \(rollback: analysis failed/);
    expect(r.stderr).toMatch(/bulwark: shop: v5-err rolled back/);
    expect(await servedBy(routerUrl, 20)).toEqual({ v3: 20 });

    const status = JSON.parse((await cli(['deploy', 'status', 'shop', '--json'], dir)).stdout);
    expect(status).toMatchObject({
      active: 'blue',
      slots: { blue: { version: 'v3' }, green: null },
      deployment: { status: 'rolled-back' },
    });
    const history = (await cli(['deploy', 'history', 'shop', '--json'], dir)).stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    const bad = history[history.length - 1];
    expect(bad.version).toBe('v5-err');
    const decision = bad.events.find((e: { judgement?: { verdict: string } }) => e.judgement?.verdict === 'fail');
    expect(decision.judgement.evidence.candidate.errors).toBeGreaterThan(0);
    expect(history.map((h: { version: string; status: string }) => `${h.version}:${h.status}`)).toEqual([
      'v1:succeeded',
      'v2:succeeded',
      'v3:succeeded',
      'v4:succeeded',
      'v3:succeeded', // the emergency rollback to the warm v3
      'v5-err:rolled-back',
    ]);
    expect(readFileSync(join(dir, '.bulwark/deploy/shop/state.json'), 'utf8')).not.toMatch(/token/);
  });

  it('a version failing its declarative health checks never gets traffic and is stopped', async () => {
    const r = await cli(['deploy', 'shop', '--version', 'v6-broken'], dir, { CHECK_API: '1' });
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(
      /failed before any traffic moved: health checks failed: GET \/api\/critical on green-1 .*status 500, expected 200/,
    );
    expect(r.stdout).not.toMatch(/traffic blue/);
    expect(r.stdout).toMatch(/stopped v6-broken on green/);
    expect(await servedBy(routerUrl, 10)).toEqual({ v3: 10 });
  });

  const stateOf = () =>
    JSON.parse(readFileSync(join(dir, '.bulwark/deploy/shop/state.json'), 'utf8')) as {
      deployment?: { version: string; status: string };
    };
  const waitPaused = async (version: string) => {
    for (let i = 0; i < 400; i++) {
      const d = stateOf().deployment;
      if (d?.version === version && d.status === 'paused') return;
      await sleep(50);
    }
    throw new Error(`${version} never paused`);
  };
  /** The resumed process holds the deploy lock (observed, not a guessed sleep: a loaded machine starts it late). */
  const waitLockHeldBy = async (pid: number | undefined) => {
    for (let i = 0; i < 400; i++) {
      try {
        if (JSON.parse(readFileSync(join(dir, '.bulwark/deploy/shop/lock'), 'utf8')).pid === pid) return;
      } catch {
        // not written yet
      }
      await sleep(50);
    }
    throw new Error(`the deploy lock was never taken by pid ${pid}`);
  };

  it('an interrupted deploy blocks new ones until it is aborted cleanly', async () => {
    const run = cliChild(['deploy', 'shop', '--version', 'v7'], dir);
    await waitPaused('v7'); // no traffic: inconclusive, paused with v7 serving
    run.child.kill('SIGTERM');
    const interrupted = await run.done;
    expect(interrupted.code).toBe(130);
    expect(interrupted.stderr).toMatch(
      /SIGTERM: deploy of shop interrupted; continue with `bulwark deploy shop --resume` or undo/,
    );
    const next = await cli(['deploy', 'shop', '--version', 'v8'], dir);
    expect(next.code).toBe(1);
    expect(next.stderr).toMatch(
      /deploy of v7 was interrupted in phase "monitoring"; run `bulwark deploy shop --resume` or `bulwark deploy abort shop`/,
    );
    const abort = await cli(['deploy', 'abort', 'shop'], dir);
    expect(abort.code, abort.stderr).toBe(0);
    expect(abort.stdout).toMatch(/aborted the interrupted deploy of v7; traffic is on blue/);
    expect(await servedBy(routerUrl, 10)).toEqual({ v3: 10 });
    expect(stateOf().deployment?.status).toBe('aborted');
  });

  it('an interrupted deploy resumes where it stopped and can be promoted past its pause', async () => {
    const first = cliChild(['deploy', 'shop', '--version', 'v9'], dir);
    await waitPaused('v9');
    first.child.kill('SIGKILL');
    await first.done;
    const resumed = cliChild(['deploy', 'shop', '--resume'], dir);
    await waitLockHeldBy(resumed.child.pid);
    await waitPaused('v9');
    const promote = await cli(['deploy', 'promote', 'shop'], dir);
    expect(promote.stdout).toMatch(/asked the running deploy \(pid \d+\) to promote/);
    const r = await resumed.done;
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/resuming the deploy of v9 to green from phase "monitoring"/);
    expect(r.stdout).toMatch(/promoted: skipping the rest of monitoring/);
    expect(await servedBy(routerUrl, 10)).toEqual({ v9: 10 });
    const status = await cli(['deploy', 'status', 'shop'], dir);
    expect(status.stdout).toMatch(/active slot green/);
    expect(status.stdout).toMatch(/blue {2}\(empty\)/);
    expect(status.stdout).toMatch(/router \(embedded\): blue 0% \(0 ready backends\), green 100% \(2 ready backends\)/);
  });

  it('runs the smoke load test (bulwark load, thresholds) against the new slot before any traffic', async () => {
    const r = await cli(['deploy', 'shop', '--version', 'v10-err'], dir, { SMOKE: '1' });
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/smoke load test failed on blue: \d+ requests, \d+ failed, .*thresholds crossed/);
    expect(r.stdout).not.toMatch(/traffic blue/);
    expect(await servedBy(routerUrl, 10)).toEqual({ v9: 10 });
  });

  it('sends synthetic traffic through the router when a quiet service leaves the analysis inconclusive', async () => {
    const r = await cli(['deploy', 'shop', '--version', 'v12'], dir, { SMOKE: '1', SYNTH: '1' });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/smoke load test passed on blue: \d+ requests, 0 failed/);
    expect(r.stdout).toMatch(/paused at monitoring: inconclusive.*sending synthetic traffic/);
    expect(r.stdout).toMatch(/synthetic traffic through the router: \d+ requests, 0 failed/);
    expect(r.stdout).toMatch(/analysis of blue \(v12\) after monitoring: passed/);
    expect(await servedBy(routerUrl, 10)).toEqual({ v12: 10 });
  });

  it('rollback of a canary interrupted mid-step returns all traffic to its stable slot', async () => {
    const run = cliChild(['deploy', 'shop', '--version', 'v13', '--strategy', 'canary'], dir);
    await waitPaused('v13'); // no traffic: paused at step 1 with 25 % on the canary
    run.child.kill('SIGKILL');
    await run.done;
    const r = await cli(['deploy', 'rollback', 'shop'], dir);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/rolled back the interrupted deploy of v13; traffic is on blue/);
    expect(await servedBy(routerUrl, 20)).toEqual({ v12: 20 });
    expect(stateOf()).toMatchObject({ deployment: { version: 'v13', status: 'rolled-back' } });
  });

  it('an interrupted canary resumes at its recorded step and can be promoted to full traffic', async () => {
    const first = cliChild(['deploy', 'shop', '--version', 'v14', '--strategy', 'canary'], dir);
    await waitPaused('v14'); // paused at step 1 (25 %), no traffic
    first.child.kill('SIGKILL');
    await first.done;
    const resumed = cliChild(['deploy', 'shop', '--resume'], dir);
    await waitLockHeldBy(resumed.child.pid);
    await waitPaused('v14');
    const promote = await cli(['deploy', 'promote', 'shop', '--full'], dir);
    expect(promote.stdout).toMatch(/to promote-full/);
    const r = await resumed.done;
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/resuming the deploy of v14 to green from phase "step 1\/3"/);
    expect(r.stdout).toMatch(/traffic blue 75% \/ green 25% \(canary step 1\/3/);
    expect(r.stdout).toMatch(/promoted to full traffic/);
    expect(await servedBy(routerUrl, 10)).toEqual({ v14: 10 });
  });

  it('the warm old slot is stopped at the end of keepOldFor without a deploy process waiting for it', async () => {
    const statePath = join(dir, '.bulwark/deploy/shop/state.json');
    const state = () => JSON.parse(readFileSync(statePath, 'utf8'));
    const old = state().active as 'blue' | 'green';
    const oldVersion = state().slots[old].version as string;
    const watched = watchedTraffic(routerUrl); // for the analysis to pass
    await waitFor(() => watched.tally.ok >= 50, 20_000, 'traffic');
    const r = await cli(['deploy', 'shop', '--version', 'vwarm'], dir, { KEEP_OLD: '2s' });
    expect((await watched.stop()).failures).toEqual([]);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(state().slots[old].version).toBe(oldVersion); // still warm when the command returned
    expect((await cli(['deploy', 'status', 'shop'], dir)).stdout).toMatch(/no deploy process running/);
    await waitFor(() => state().slots[old] === null, 30_000, 'the warm slot stopped');
    expect(state().deployment.events.at(-1).sentence).toMatch(
      new RegExp(`stopped ${oldVersion} on ${old} \\(warm period over\\)`),
    );
    expect(await servedBy(routerUrl, 5)).toEqual({ vwarm: 5 });
  });
});
