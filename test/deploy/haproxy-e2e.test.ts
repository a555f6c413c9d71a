import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type HaproxyHarness, startHaproxy } from '../harness/haproxy.js';
import { APP_SH, cli, load, trafficChanges, watchedTraffic } from './cli.js';
import { servedAround, servedBy, sleep, waitFor } from './helpers.js';

/**
 * `bulwark deploy` driving Debian's HAProxy through its runtime API (no reloads), with the process
 * provider and `bulwark load` through HAProxy's frontend. Analysis reads HAProxy's own counters.
 */
describe('bulwark deploy with the haproxy router under bulwark load', () => {
  let dir: string;
  let hap: HaproxyHarness;

  beforeAll(async () => {
    hap = await startHaproxy({ perSlot: 2 });
    dir = mkdtempSync(join(tmpdir(), 'bulwark-deploy-haproxy-'));
    writeFileSync(
      join(dir, 'bulwark.config.ts'),
      `import { defineConfig } from 'bulwark';
export default defineConfig({
  deploy: {
    apps: {
      shop: {
        router: { type: 'haproxy', socket: ${JSON.stringify(hap.socket)}, backend: '${hap.backend}',
                  servers: ${JSON.stringify(hap.servers)}, frontendUrl: '${hap.frontendUrl}' },
        provider: { type: 'process', command: 'sh ${APP_SH}', instances: 2 },
        analysis: { interval: '1s', minRequests: 30, maxErrorRate: 0.02 },
        blueGreen: { monitor: '3s', keepOldFor: 0 },
        canary: { steps: [{ weight: 20, pause: '2s' }, { weight: 60, pause: '2s' }], keepOldFor: 0 },
      },
    },
  },
});
`,
    );
  });

  afterAll(async () => {
    if (dir) await cli(['deploy', 'down', 'shop'], dir);
    await hap?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('first deploy fills the blue servers and sends them all traffic', async () => {
    const r = await cli(['deploy', 'shop', '--version', 'v1'], dir);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/blue is reachable through the haproxy router/);
    expect(await servedBy(hap.frontendUrl, 10)).toEqual({ v1: 10 });
  });

  it('blue-green switch through the runtime API: zero failed requests', async () => {
    const traffic = load(hap.frontendUrl, '7s', dir, 'hap-bg');
    const watched = watchedTraffic(hap.frontendUrl);
    await waitFor(() => (watched.tally.bySlot.v1 ?? 0) >= 50, 20_000, 'traffic on v1');
    const r = await cli(['deploy', 'shop', '--version', 'v2'], dir);
    const seen = await watched.stop();
    const summary = await traffic;
    // Traffic was flowing on both versions around the switch, so the zeros below cover the switch itself.
    const [sw] = trafficChanges(dir);
    expect(sw!.sentence).toMatch(/traffic blue 0% \/ green 100%/);
    expect(servedAround(seen, sw!.at, 1000).before.v1 ?? 0).toBeGreaterThan(0);
    expect(servedAround(seen, sw!.at, 1000).after.v2 ?? 0).toBeGreaterThan(0);
    expect(seen.failures).toEqual([]);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(r.stdout).toMatch(/analysis of green \(v2\) after monitoring: passed/);
    expect(summary.totals.requests).toBeGreaterThan(100);
    expect(summary.totals.failures).toBe(0);
    expect(await servedBy(hap.frontendUrl, 10)).toEqual({ v2: 10 });
  });

  it('canary by HAProxy server weights: zero failed requests', async () => {
    const traffic = load(hap.frontendUrl, '9s', dir, 'hap-canary');
    const watched = watchedTraffic(hap.frontendUrl);
    await waitFor(() => (watched.tally.bySlot.v2 ?? 0) >= 50, 20_000, 'traffic on v2');
    const r = await cli(['deploy', 'shop', '--version', 'v3', '--strategy', 'canary'], dir);
    const seen = await watched.stop();
    const summary = await traffic;
    const changes = trafficChanges(dir);
    expect(changes).toHaveLength(3);
    expect(servedAround(seen, changes[0]!.at, 1000).before.v2 ?? 0).toBeGreaterThan(0);
    expect(servedAround(seen, changes[0]!.at, 1000).after.v3 ?? 0).toBeGreaterThan(0);
    expect(servedAround(seen, changes[2]!.at, 1000).after.v3 ?? 0).toBeGreaterThan(0);
    expect(seen.failures).toEqual([]);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(r.stdout).toMatch(/traffic blue 20% \/ green 80%/);
    expect(r.stdout).toMatch(/traffic blue 60% \/ green 40%/);
    expect(r.stdout.match(/analysis of blue \(v3\) after step \d\/3: passed/g)).toHaveLength(2);
    expect(summary.totals.failures).toBe(0);
    expect(await servedBy(hap.frontendUrl, 10)).toEqual({ v3: 10 });
  });

  it('a version answering 500s is rolled back from HAProxy’s counters', async () => {
    const traffic = load(hap.frontendUrl, '6s', dir, 'hap-bad');
    // The watched trickle runs until the deploy is over: the analysis never waits on a finished load run.
    const watched = watchedTraffic(hap.frontendUrl);
    await waitFor(() => (watched.tally.bySlot.v3 ?? 0) >= 50, 20_000, 'traffic on v3');
    const r = await cli(['deploy', 'shop', '--version', 'v4-err'], dir);
    await watched.stop();
    await traffic;
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/\[fail\] error rate/);
    expect(r.stdout).toMatch(/traffic blue 100% \/ green 0% \(rollback: analysis failed/);
    expect(await servedBy(hap.frontendUrl, 20)).toEqual({ v3: 20 });
  });

  it('emergency rollback with no deploy running starts the previous version and switches to it', async () => {
    const traffic = load(hap.frontendUrl, '6s', dir, 'hap-rollback');
    await sleep(500);
    const r = await cli(['deploy', 'rollback', 'shop'], dir);
    const summary = await traffic;
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/rolled back shop to v2 on green/);
    expect(summary.totals.failures).toBe(0);
    expect(await servedBy(hap.frontendUrl, 10)).toEqual({ v2: 10 });
  });

  it('emergency rollback again: the other slot still runs the previous version, so it is one weight change', async () => {
    const r = await cli(['deploy', 'rollback', 'shop'], dir);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).not.toMatch(/starting/);
    expect(r.stdout).toMatch(/rolled back shop to v3 on blue/);
    expect(await servedBy(hap.frontendUrl, 10)).toEqual({ v3: 10 });
  });
});
