import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DrillJournal, drillExitCode, runDrill } from '../../src/drill/index.js';
import { runCli } from '../harness/cli.js';

const CHROMIUM = '/usr/bin/chromium';
let out: string;
beforeAll(() => {
  out = mkdtempSync(join(tmpdir(), 'bulwark-drill-test-'));
});
afterAll(() => rmSync(out, { recursive: true, force: true }));

/** PIDs of live processes whose command line mentions `text` (left-overs of a drill). */
function processesMentioning(text: string): number[] {
  const pids: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      if (readFileSync(`/proc/${e}/cmdline`, 'utf8').includes(text)) pids.push(Number(e));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

describe('bulwark drill (real cluster, router, shop, load)', () => {
  it('runs the whole game day on embedded defaults: every hypothesis holds, exit 0, JSON journal and HTML report, nothing left running', async () => {
    const json = join(out, 'drill.json');
    const html = join(out, 'drill.html');
    const r = await runCli(['drill', '--json', json, '--html', html], { timeoutMs: 280_000 });
    expect(r.stdout).toMatch(/every hypothesis held/);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    const j = JSON.parse(readFileSync(json, 'utf8')) as DrillJournal;
    // Chaos Toolkit journal fields
    expect(j).toMatchObject({ status: 'completed', deviated: false, rollbacks: [] });
    expect(j.steady_states.before?.steady_state_met).toBe(true);
    expect(j.steady_states.after?.steady_state_met).toBe(true);
    expect(j.steady_states.before?.probes[0]).toMatchObject({ activity: { type: 'probe' }, tolerance_met: true });
    expect(j.run.every((a) => a.output.probes.length > 0 && a.output.probes.every((p) => p.tolerance_met))).toBe(true);
    expect(j.steady_states.during.map((d) => d.step)).toEqual([
      'backup',
      'failover',
      'bad-release',
      'good-release',
      'pitr',
    ]);
    expect(j.run.every((a) => a.status === 'succeeded' && a.activity.type === 'action')).toBe(true);
    expect(j.steps.every((s) => s.status === 'succeeded' && s.probes.every((p) => p.met))).toBe(true);
    // measured, not assumed: orders were acknowledged, none lost, the PITR copy holds every one before the drop
    const failover = j.steps.find((s) => s.step === 'failover')!.measured;
    expect(failover.newPrimary).not.toBe(failover.killedNode);
    expect(j.measured.lostAcknowledgedOrders).toBe(0);
    expect(typeof j.measured.rtoMs).toBe('number');
    const pitr = j.steps.find((s) => s.step === 'pitr')!.measured;
    expect(pitr.missingOrders).toBe(0);
    expect(Number(pitr.rowsRecovered)).toBeGreaterThanOrEqual(Number(pitr.ordersAcknowledgedBeforeTarget));
    expect(Number(pitr.ordersAcknowledgedBeforeTarget)).toBeGreaterThan(0);
    const bad = j.steps.find((s) => s.step === 'bad-release')!.measured;
    expect(bad.deployStatus).toBe('rolled-back');
    expect(j.measured.failedRequestsGoodRelease).toBe(0);
    expect(j.timeline.length).toBeGreaterThan(10);
    expect(j.faults.map((f) => f.step)).toEqual(['backup', 'failover', 'bad-release', 'good-release', 'pitr']);
    // everything it started is gone: its folder and every process that named it
    const dir = /in (\/\S+)\/pg,/.exec(r.stderr)?.[1];
    expect(dir).toBeTruthy();
    expect(existsSync(dir!)).toBe(false);
    expect(processesMentioning(dir!)).toEqual([]);

    // the HTML report opens offline in headless Chromium, with the three charts and the faults marked
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
      page.on('request', (q) => requests.push(q.url()));
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      await page.goto(pathToFileURL(html).href);
      await page.waitForSelector('body[data-rendered="true"]');
      expect(errors).toEqual([]);
      expect(requests.filter((u) => !u.startsWith('file:'))).toEqual([]);
      expect(await page.locator('.uplot').count()).toBe(3);
      expect(await page.evaluate('window.faultMarks')).toBeGreaterThanOrEqual(15);
      expect(await page.locator('#verdict').textContent()).toBe('every hypothesis held');
      expect(await page.locator('#card-rpo b').textContent()).toBe('0');
      expect(await page.locator('section.step[data-status="succeeded"]').count()).toBe(5);
    } finally {
      await browser.close();
    }
  }, 300_000);

  it('regression: a "good" release that fails its health checks is reported as deviated (exit code 1)', async () => {
    const events: string[] = [];
    const j = await runDrill({
      steps: ['good-release'],
      steadyMs: 1000,
      releases: { good: { version: 'v3-unhealthy', unhealthy: true } },
      onEvent: (e) => {
        if (e.type === 'step-log') events.push(e.line);
      },
    });
    expect(j.verdict).toEqual({ ok: false, failed: ['good-release'] });
    expect(j.deviated).toBe(true);
    expect(drillExitCode(j)).toBe(1);
    const step = j.steps[0]!;
    expect(step.probes.find((p) => p.name === 'deploy succeeded')).toMatchObject({ met: false });
    expect(events.join('\n')).toMatch(/deploy failed/);
    // the stable release kept serving: the steady state held after the failed deploy
    expect(step.measured.servingAfter).toBe('v1');
    expect(step.after.steady_state_met).toBe(true);
  }, 200_000);
});
