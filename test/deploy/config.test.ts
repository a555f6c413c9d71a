import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { deployConfigSchema } from '../../src/config/deploy.js';
import { loadConfig } from '../../src/config/index.js';
import { type HaproxyRouter, planFor, routerFor, StateStore } from '../../src/deploy/index.js';

const dir = mkdtempSync(join(tmpdir(), 'bulwark-deploy-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const minimal = {
  router: { type: 'embedded', port: 8080, adminPort: 8081 },
  provider: { type: 'process', command: 'node server.js' },
};

async function configError(deploy: unknown): Promise<string> {
  const file = join(dir, `c${Math.random().toString(36).slice(2)}.config.ts`);
  writeFileSync(file, `export default ${JSON.stringify({ deploy })};\n`);
  try {
    await loadConfig(file);
  } catch (err) {
    expect((err as { exitCode: number }).exitCode).toBe(2);
    return (err as Error).message.replace(file, 'FILE');
  }
  throw new Error('config was accepted');
}

describe('deploy config (bulwark.config.ts deploy section)', () => {
  it('fills defaults and turns durations into milliseconds', () => {
    const c = deployConfigSchema.parse({ apps: { shop: minimal } });
    const app = c.apps.shop!;
    expect(c.stateDir).toBe('.bulwark');
    expect(app.strategy).toBe('blue-green');
    expect(app.healthChecks).toEqual([{ path: '/health', method: 'GET', status: 200, timeout: 5000 }]);
    expect(app.blueGreen).toEqual({ monitor: 300_000, keepOldFor: 600_000 });
    expect(app.canary.steps.map((s) => s.weight)).toEqual([5, 25, 50, 100]);
    expect(app.analysis).toMatchObject({ source: 'router', minRequests: 50, maxErrorRate: 0.01, interval: 10_000 });
    expect(planFor(app).canary.steps[0]).toEqual({ weight: 5, pauseMs: 60_000 });
    expect(app.router).toMatchObject({
      timeouts: { connect: 10_000, headers: 60_000, idle: 60_000 },
      forwarded: false,
      retryDelete: false,
    });
    expect(app.analysis).toMatchObject({ firstJudgement: 1000, failureLimit: 1 });
    expect(planFor(app).analysis).toMatchObject({ firstJudgementMs: 1000, failureLimit: 1 });
    // HAProxy's request log (latency percentiles) reaches the router driver from the config
    const hap = deployConfigSchema.parse({
      apps: {
        shop: {
          ...minimal,
          router: {
            type: 'haproxy',
            socket: '/run/h.sock',
            backend: 'app',
            servers: { blue: ['b'], green: ['g'] },
            log: { port: 5514 },
          },
          blueGreen: { baseline: '5s' },
        },
      },
    }).apps.shop!;
    const router = routerFor(hap, new StateStore(dir, 'shop')) as HaproxyRouter;
    expect((router as unknown as { opts: { log: unknown } }).opts.log).toEqual({ port: 5514, host: '127.0.0.1' });
    expect(planFor(hap).blueGreen.baselineMs).toBe(5000);
  });

  it('names the file and the key of every mistake', async () => {
    expect(
      await configError({ apps: { shop: { ...minimal, canary: { steps: [{ weight: 5 }, { weight: 150 }] } } } }),
    ).toBe('FILE: deploy.apps.shop.canary.steps[1].weight: must be 0..100');
    expect(
      await configError({ apps: { shop: { ...minimal, canary: { steps: [{ weight: 50 }, { weight: 25 }] } } } }),
    ).toMatch(/deploy\.apps\.shop\.canary\.steps: weights must increase/);
    expect(await configError({ apps: { shop: { ...minimal, blueGreen: { monitor: '5 minutes' } } } })).toMatch(
      /deploy\.apps\.shop\.blueGreen\.monitor: "5 minutes" is not a valid duration/,
    );
    expect(
      await configError({ apps: { shop: { ...minimal, router: { ...minimal.router, adminHost: '0.0.0.0' } } } }),
    ).toMatch(/deploy\.apps\.shop\.router\.adminHost: the admin API must bind to a loopback address/);
    expect(await configError({ apps: { shop: { ...minimal, strategy: 'rolling' } } })).toMatch(
      /deploy\.apps\.shop\.strategy/,
    );
    expect(await configError({ apps: { shop: { ...minimal, stratgy: 'canary' } } })).toMatch(
      /deploy\.apps\.shop: Unrecognized key.*stratgy/,
    );
    expect(await configError({ apps: { status: minimal } })).toMatch(/deploy\.apps\.status: is a reserved word/);
    expect(await configError({ apps: { 'expire-warm': minimal } })).toMatch(/is a reserved word/);
    expect(
      await configError({
        apps: {
          shop: {
            ...minimal,
            router: {
              type: 'haproxy',
              socket: '/s',
              backend: 'app',
              servers: { blue: ['b'], green: ['g'] },
              log: { port: 5514, host: '10.0.0.1' },
            },
          },
        },
      }),
    ).toMatch(/deploy\.apps\.shop\.router\.log\.host: the log receiver must bind to a loopback address/);
    expect(
      await configError({
        apps: { shop: { ...minimal, router: { ...minimal.router, sticky: { header: 'x', cookie: 'y' } } } },
      }),
    ).toMatch(/router\.sticky: sticky needs exactly one of header or cookie/);
    expect(
      await configError({
        apps: {
          shop: {
            ...minimal,
            provider: { type: 'aws-ecs', cluster: 'c', services: { blue: 'b', green: 'g' }, taskDefinition: 'shop:1' },
          },
        },
      }),
    ).toMatch(/provider\.taskDefinition: must contain \{version\}/);
    expect(
      await configError({
        apps: {
          shop: {
            ...minimal,
            router: { type: 'aws-alb', listenerArn: 'arn:l', targetGroups: { blue: 'b', green: 'g' } },
          },
        },
      }),
    ).toMatch(
      /deploy\.apps\.shop\.analysis\.source: the aws-alb router has no traffic metrics: set a prometheus source/,
    );
  });
});
