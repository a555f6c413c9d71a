import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../src/lib/net.js';
import { APP_SH, cli, startCli } from '../deploy/cli.js';
import { type HaproxyHarness, startHaproxy } from '../harness/haproxy.js';

/**
 * `bulwark drill --config` with drill.deploy: the bad-release and good-release steps against the user's
 * own app of the deploy section — its embedded router running as its own process (`bulwark deploy
 * router`), its process provider starting the demo shop per version (test/deploy/fixtures/app.sh: a
 * version ending in -err20 answers 500 on 20 % of /api requests), its state folder and lock. The drill
 * deploys with bulwark deploy's own Deployer; its load goes through that router.
 */
describe('bulwark drill --config: bad and good release of the config app, through its router', () => {
  let dir: string;
  let routerUrl: string;
  let router: Awaited<ReturnType<typeof startCli>> | undefined;
  let file: string;

  const writeConfig = (name: string, drill: object) => {
    const f = join(dir, name);
    writeFileSync(f, `export default ${JSON.stringify({ deploy: deploySection, drill }, null, 2)};\n`);
    return f;
  };
  let deploySection: object;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'bulwark-drill-deploy-'));
    const port = await freePort({ below: 32768 });
    const adminPort = await freePort({ below: 32768 });
    routerUrl = `http://127.0.0.1:${port}`;
    deploySection = {
      apps: {
        shop: {
          router: { type: 'embedded', port, adminPort },
          provider: {
            type: 'process',
            command: `sh ${APP_SH}`,
            // one token secret for every release: a shopper logged in on v1 stays logged in on v2
            env: { BULWARK_DEMO_TOKEN_SECRET: 'drill-test-secret' },
          },
          strategy: 'canary',
          healthChecks: [{ path: '/health', bodyContains: 'ok' }],
          analysis: { interval: '1s', minRequests: 20, maxErrorRate: 0.05 },
          canary: { steps: [{ weight: 20, pause: '6s' }], keepOldFor: 0 },
          blueGreen: { monitor: '4s', keepOldFor: 0 },
          drainTimeout: '5s',
        },
      },
    };
    file = writeConfig('bulwark.config.mjs', {
      deploy: { app: 'shop', badRelease: 'v2-err20', goodRelease: 'v3' },
      rate: 40,
    });
    router = await startCli(['deploy', 'router', 'shop', '--config', file], dir, /listening on/);
  }, 60_000);

  afterAll(async () => {
    if (dir) await cli(['deploy', 'down', 'shop', '--config', file], dir);
    await router?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  it('refuses up front (exit 2) while the app has no stable release to roll back to', async () => {
    const r = await cli(['drill', '--config', file, '--duration', '1s'], dir, {}, 60_000);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toContain(`${file}: drill.deploy: shop is not deployed`);
    expect(r.stderr).toContain('bulwark deploy shop --version V');
  });

  it('a "bad" release that passes the analysis is reported: bad-release deviates and the drill exits 1', async () => {
    const first = await cli(['deploy', 'shop', '--version', 'v1', '--config', file], dir);
    expect(first.code, first.stderr + first.stdout).toBe(0);
    // the regression: the release named bad is a healthy one, so nothing rolls it back
    const wrong = writeConfig('wrong.config.mjs', {
      deploy: { app: 'shop', badRelease: 'v2-fine', goodRelease: 'v3' },
      rate: 40,
    });
    const journalFile = join(dir, 'wrong.json');
    const r = await cli(
      ['drill', '--config', wrong, '--steps', 'bad-release', '--duration', '2s', '--json', journalFile],
      dir,
      {},
      120_000,
    );
    expect(r.code, r.stderr + r.stdout).toBe(1);
    const journal = JSON.parse(readFileSync(journalFile, 'utf8'));
    const [bad] = journal.steps;
    expect(bad.step).toBe('bad-release');
    expect(bad.deviated).toBe(true);
    expect(bad.measured.deployStatus).toBe('succeeded');
    expect(bad.measured.servingAfter).toBe('v2-fine');
    expect(journal.verdict.failed).toEqual(['bad-release']);
  }, 150_000);

  it('rolls the bad release back automatically and deploys the good one with zero failed requests, all load through the router (exit 0)', async () => {
    const before = (await (await fetch(`${routerUrl}/health`)).json()) as { label: string };
    expect(before.label).toBe('v2-fine'); // the stable release the previous test left
    const journalFile = join(dir, 'drill.json');
    const r = await cli(['drill', '--config', file, '--duration', '2s', '--json', journalFile], dir, {}, 150_000);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    const journal = JSON.parse(readFileSync(journalFile, 'utf8'));
    expect(journal.status).toBe('completed');
    expect(journal.deviated).toBe(false);
    // default steps of a deploy-only config; the load's URL is the app's router
    expect(journal.experiment.configuration.steps).toEqual(['bad-release', 'good-release']);
    expect(journal.experiment.configuration.target).toMatchObject({
      file,
      url: routerUrl,
      app: 'shop',
      badRelease: 'v2-err20',
      goodRelease: 'v3',
    });
    const [bad, good] = journal.steps;
    expect(bad.measured.deployStatus).toBe('rolled-back');
    expect(bad.measured.servingAfter).toBe('v2-fine');
    // the analysis (router metrics) saw the drill's load on the bad release: it went through the router
    expect(bad.log.join('\n')).toMatch(/analysis of \w+ \(v2-err20\)[^\n]*: failed: /);
    expect(bad.measured.failedRequests).toBeGreaterThan(0);
    expect(good.measured.failedRequests).toBe(0);
    expect(good.measured.requests).toBeGreaterThan(0);
    expect(good.measured.servingAfter).toBe('v3');
    // the user's app keeps running the good release behind its router after the drill
    const after = (await (await fetch(`${routerUrl}/health`)).json()) as { label: string };
    expect(after.label).toBe('v3');
    const history = readFileSync(join(dir, '.bulwark/deploy/shop/history.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { version: string; status: string });
    expect(history.map((d) => `${d.version} ${d.status}`)).toEqual(
      expect.arrayContaining(['v2-err20 rolled-back', 'v3 succeeded']),
    );
    expect(journal.cleanup.join('\n')).toMatch(/nothing stopped of/);
  }, 180_000);
});

/**
 * The same two steps with the app behind Debian's HAProxy (the haproxy router driving it through its
 * runtime API): the load goes to HAProxy's frontend (drill.url defaults to router.frontendUrl), the
 * analysis reads HAProxy's counters, and which release serves is read from HAProxy's weights.
 */
describe('bulwark drill --config: bad and good release of an app behind HAProxy', () => {
  let dir: string;
  let hap: HaproxyHarness;
  let file: string;

  beforeAll(async () => {
    hap = await startHaproxy({ perSlot: 1 });
    dir = mkdtempSync(join(tmpdir(), 'bulwark-drill-haproxy-'));
    file = join(dir, 'bulwark.config.mjs');
    const config = {
      deploy: {
        apps: {
          shop: {
            router: {
              type: 'haproxy',
              socket: hap.socket,
              backend: hap.backend,
              servers: hap.servers,
              frontendUrl: hap.frontendUrl,
            },
            provider: {
              type: 'process',
              command: `sh ${APP_SH}`,
              env: { BULWARK_DEMO_TOKEN_SECRET: 'drill-test-secret' },
            },
            strategy: 'canary',
            healthChecks: [{ path: '/health', bodyContains: 'ok' }],
            analysis: { interval: '1s', minRequests: 20, maxErrorRate: 0.05 },
            canary: { steps: [{ weight: 20, pause: '6s' }], keepOldFor: 0 },
            drainTimeout: '5s',
          },
        },
      },
      drill: { deploy: { app: 'shop', badRelease: 'v2-err20', goodRelease: 'v3' }, rate: 40 },
    };
    writeFileSync(file, `export default ${JSON.stringify(config, null, 2)};\n`);
  }, 60_000);

  afterAll(async () => {
    if (dir) await cli(['deploy', 'down', 'shop', '--config', file], dir);
    await hap?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  it('rolls the bad release back and deploys the good one with zero failed requests through HAProxy (exit 0)', async () => {
    const first = await cli(['deploy', 'shop', '--version', 'v1', '--config', file], dir);
    expect(first.code, first.stderr + first.stdout).toBe(0);
    const journalFile = join(dir, 'drill.json');
    const r = await cli(['drill', '--config', file, '--duration', '2s', '--json', journalFile], dir, {}, 150_000);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    const journal = JSON.parse(readFileSync(journalFile, 'utf8'));
    expect(journal.experiment.configuration.target.url).toBe(hap.frontendUrl);
    const [bad, good] = journal.steps;
    expect(bad.measured.deployStatus).toBe('rolled-back');
    expect(bad.measured.servingAfter).toBe('v1');
    expect(bad.log.join('\n')).toMatch(/analysis of \w+ \(v2-err20\)[^\n]*: failed: /);
    expect(good.measured.failedRequests).toBe(0);
    expect(good.measured.servingAfter).toBe('v3');
    const after = (await (await fetch(`${hap.frontendUrl}/health`)).json()) as { label: string };
    expect(after.label).toBe('v3');
  }, 180_000);
});
