import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DemoServer, startDemoServer } from '../../src/demo/index.js';
import { none, runLoad, scenario, user } from '../../src/load/index.js';
import { writeHtmlReport } from '../../src/load/reporters/html.js';

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
        users: [user('R', { wait: none(), tasks: [async (vu) => void (await vu.http.get('/api/products'))] })],
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
      // Four uPlot charts with the series users look for.
      expect(await page.locator('.uplot').count()).toBe(4);
      const titles = await page.locator('.u-title').allTextContents();
      expect(titles).toEqual(['Requests per second', 'Latency (ms)', 'Failed requests per second', 'Virtual users']);
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
  });
});
