import { describe, expect, it } from 'vitest';
import { MetricsStore } from '../../src/load/metrics/store.js';
import { evaluateThresholds, parseThresholds } from '../../src/load/thresholds.js';

const none = new Map();

describe('thresholds', () => {
  it('parses k6 syntax, long form and tag filters', () => {
    const t = parseThresholds(
      {
        http_req_duration: ['p(99)<2000', 'avg <= 300', 'med<100'],
        'http_req_duration{name:/api/orders,method:POST}': [
          { threshold: 'p(95)<3000', abortOnFail: true, delayAbortEval: '10s' },
        ],
        http_req_failed: 'rate<0.01',
        http_reqs: ['count>=10'],
      },
      none,
    );
    expect(t).toHaveLength(6);
    expect(t[3]).toMatchObject({
      metric: 'http_req_duration',
      filter: { name: '/api/orders', method: 'POST' },
      stat: 'p(95)',
      abortOnFail: true,
      delayAbortEvalMs: 10_000,
    });
  });

  it('rejects what would be silently ignored', () => {
    expect(() => parseThresholds({ http_req_duration: ['p95<200'] }, none)).toThrow(/cannot parse "p95<200"/);
    expect(() => parseThresholds({ no_such_metric: ['count>1'] }, none)).toThrow(/unknown metric "no_such_metric"/);
    expect(() => parseThresholds({ http_req_failed: ['p(95)<1'] }, none)).toThrow(/not available for http_req_failed/);
    expect(() =>
      parseThresholds({ http_req_duration: [{ threshold: 'p(99)<1', abortOnFial: true } as never] }, none),
    ).toThrow(/unknown option "abortOnFial"/);
    expect(() => parseThresholds({ 'http_req_duration{name}': ['p(99)<1'] }, none)).toThrow(/tag:value/);
  });

  it('accepts custom metrics the scenario declared', () => {
    expect(
      parseThresholds({ order_duration: ['p(95)<10'] }, new Map([['order_duration', 'trend' as const]])),
    ).toHaveLength(1);
  });

  it('evaluates on the merged series, filtered by tags', () => {
    const store = new MetricsStore();
    for (let i = 1; i <= 100; i++) store.get('http_req_duration', 'trend', { name: '/a', status: '200' }).add(i);
    for (let i = 0; i < 10; i++) store.get('http_req_duration', 'trend', { name: '/b', status: '500' }).add(5000);
    for (let i = 0; i < 110; i++) store.get('http_req_failed', 'rate', {}).add(i < 10 ? 1 : 0);
    const t = parseThresholds(
      {
        http_req_duration: ['max<1000'],
        'http_req_duration{name:/a}': ['p(50)<=51', 'max<=100'],
        http_req_failed: ['rate<0.05'],
      },
      none,
    );
    const r = evaluateThresholds(t, store, 10);
    expect(r.map((x) => x.ok)).toEqual([false, true, true, false]);
    expect(r[0]!.value).toBe(5000);
    expect(r[3]!.value).toBeCloseTo(10 / 110);
  });
});
