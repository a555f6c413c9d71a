import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDemoServer } from '../../src/demo/index.js';
import type { DemoServer } from '../../src/demo/server.js';
import {
  type EmbeddedRouter,
  judge,
  prometheusSource,
  promQuery,
  startEmbeddedRouter,
} from '../../src/deploy/index.js';
import { type PrometheusHarness, startPrometheus } from '../harness/prometheus.js';
import { servedBy, sleep } from './helpers.js';

// Analysis from a real Prometheus (Debian's package) scraping the embedded router's /metrics.
describe('prometheus analysis source', () => {
  let router: EmbeddedRouter;
  let prom: PrometheusHarness;
  let good: DemoServer;
  let bad: DemoServer;
  const queries = {
    requests: 'sum(increase(bulwark_router_requests_total{slot="{slot}"}[{window}]))',
    errors: 'sum(increase(bulwark_router_errors_total{slot="{slot}"}[{window}]))',
    p99Ms:
      '1000 * histogram_quantile(0.99, sum by (le) (rate(bulwark_router_request_duration_seconds_bucket{slot="{slot}"}[{window}])))',
  };

  beforeAll(async () => {
    good = await startDemoServer({ port: 0, label: 'good' });
    bad = await startDemoServer({ port: 0, label: 'bad', errorRate: 0.5 });
    router = await startEmbeddedRouter({ port: 0, admin: { port: 0, token: 'scrape-token' } });
    await router.setBackends('blue', [{ id: 'good', url: good.url }]);
    await router.setBackends('green', [{ id: 'bad', url: bad.url }]);
    await router.setWeights({ blue: 50, green: 50 });
    prom = await startPrometheus({ target: new URL(router.adminUrl!).host, bearer: 'scrape-token' });
  });
  afterAll(async () => {
    await prom?.stop();
    await router?.close();
    await good?.close();
    await bad?.close();
  });

  it('judges each slot from PromQL over the window: the erroring slot fails, the healthy one passes', async () => {
    const since = Date.now();
    // Traffic for a few scrapes, so increase() has samples on both sides of the window.
    for (let i = 0; i < 8; i++) {
      await servedBy(router.url, 40);
      await sleep(500);
    }
    await sleep(1500);
    expect(await promQuery(prom.url, 'up{job="bulwark"}')).toBe(1);
    const source = prometheusSource({ url: prom.url, queries });
    const green = (await source.window('green', since, { version: 'v2' }))!;
    const blue = (await source.window('blue', since, { version: 'v1' }))!;
    expect(green.requests).toBeGreaterThan(50);
    expect(green.errors).toBeGreaterThan(10);
    expect(blue.errors).toBe(0);
    expect(blue.latencyMs.p99).toBeGreaterThan(0);
    const rules = { minRequests: 50, maxErrorRate: 0.02, maxP99Ms: 1000 };
    expect(judge({ candidate: green, stable: blue, rules }).verdict).toBe('fail');
    expect(judge({ candidate: blue, rules }).verdict).toBe('pass');
  });

  it('reports an empty result as no data (inconclusive), and a bad query as an error', async () => {
    const source = prometheusSource({ url: prom.url, queries: { ...queries, requests: 'sum(nothing_here_total)' } });
    const w = (await source.window('green', Date.now() - 5000, { version: 'v2' }))!;
    expect(w.requests).toBe(0);
    expect(judge({ candidate: w, rules: { minRequests: 10, maxErrorRate: 0.01 } }).verdict).toBe('inconclusive');
    await expect(promQuery(prom.url, 'sum(')).rejects.toThrow(/Prometheus rejected "sum\("/);
  });
});
