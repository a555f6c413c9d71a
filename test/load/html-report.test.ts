import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DemoServer, startDemoServer } from '../../src/demo/index.js';
import { none, runLoad, scenario, user } from '../../src/load/index.js';
import { endpointLatencySeries, writeHtmlReport } from '../../src/load/reporters/html.js';
import { maskCommandLine } from '../../src/load/runner.js';

const CHROMIUM = '/usr/bin/chromium';
let dir: string;
let server: DemoServer;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'bulwark-html-'));
  server = await startDemoServer({ port: 0, errorRate: 0.2 });
});
afterAll(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('HTML report', () => {
  it('opens offline in headless Chromium with charts and tables', async () => {
    expect(existsSync(CHROMIUM)).toBe(true);
    const { summary } = await runLoad({
      scenario: scenario({
        host: server.url,
        users: [
          user('R', {
            wait: none(),
            tasks: [
              { weight: 3, run: async (vu) => void (await vu.http.get('/api/products')) },
              { weight: 1, run: async (vu) => void (await vu.http.get('/api/products?page=2')) },
            ],
          }),
        ],
        load: { vus: 2, duration: '3s' },
        thresholds: { http_req_failed: ['rate<0.01'] },
      }),
    });
    const file = join(dir, 'report.html');
    writeHtmlReport(file, summary);
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    try {
      const page = await browser.newPage();
      const requests: string[] = [];
      page.on('request', (r) => requests.push(r.url()));
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      await page.goto(pathToFileURL(file).href);
      await page.waitForSelector('body[data-rendered="true"]');
      expect(errors).toEqual([]);
      // Self-contained: the only request is the file itself.
      expect(requests.filter((u) => !u.startsWith('file:'))).toEqual([]);
      // Five uPlot charts with the series users look for, one line per endpoint in the last.
      expect(await page.locator('.uplot').count()).toBe(5);
      const titles = await page.locator('.u-title').allTextContents();
      expect(titles).toEqual([
        'Requests per second',
        'Latency (ms)',
        'Failed requests per second',
        'Virtual users',
        'p95 latency per endpoint (ms)',
      ]);
      const endpointsLegend = await page.locator('#chart-endpoints .u-legend').textContent();
      expect(endpointsLegend).toMatch(/GET \/api\/products.*GET \/api\/products\?page=2/);
      // Run details.
      const run = Object.fromEntries(
        (await page.locator('#run tbody tr').all()).length
          ? await Promise.all(
              (await page.locator('#run tbody tr').all()).map(
                async (tr) => (await tr.locator('td').allTextContents()) as [string, string],
              ),
            )
          : [],
      );
      expect(run['Bulwark version']).toBe(summary.run!.bulwarkVersion);
      expect(run.host).toBe(server.url);
      expect(Date.parse(run.started!)).toBeGreaterThan(0);
      const legend = await page.locator('#chart-latency .u-legend').textContent();
      expect(legend).toMatch(/p50.*p95.*p99/);
      // Tables show the run's own numbers.
      expect(await page.locator('#total-requests').textContent()).toBe(String(summary.totals.requests));
      const row = await page.locator('#endpoints tbody tr').first().locator('td').allTextContents();
      expect(row[0]).toBe('GET /api/products');
      expect(Number(row[1])).toBe(summary.endpoints[0]!.requests);
      expect(Number(row[2])).toBe(summary.endpoints[0]!.failures);
      expect(summary.endpoints[0]!.failures).toBeGreaterThan(0);
      expect(await page.locator('#verdict').textContent()).toMatch(/1 threshold\(s\) crossed/);
      expect(await page.locator('#thresholds tbody td').first().textContent()).toBe('FAIL');
      expect(await page.locator('#errors tbody td').nth(1).textContent()).toBe('HTTP 5xx');
    } finally {
      await browser.close();
    }
    // Per-endpoint points add up to the endpoint's requests.
    for (const e of summary.endpoints)
      expect(summary.endpointTimeline[`${e.method} ${e.name}`]!.reduce((a, p) => a + p.rps, 0)).toBe(e.requests);
    expect(endpointLatencySeries(summary).series.map((x) => x.label)).toEqual([
      'GET /api/products',
      'GET /api/products?page=2',
    ]);
  });

  it('masks --env values and URL credentials in the command line it shows', () => {
    expect(
      maskCommandLine([
        'bulwark',
        'load',
        'shop.ts',
        '-e',
        'API_KEY=s3cret',
        '--env=TOKEN=abc',
        '-eX=1',
        '--host',
        'http://user:pw@127.0.0.1:8080/',
        '--summary-json',
        'out file.json',
      ]),
    ).toBe(
      "bulwark load shop.ts -e API_KEY=*** --env=TOKEN=*** -eX=*** --host http://127.0.0.1:8080/ --summary-json 'out file.json'",
    );
  });
});
