import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DrillJournal } from '../../src/drill/index.js';
import { runCli } from '../harness/cli.js';

let out: string;
beforeAll(() => {
  out = mkdtempSync(join(tmpdir(), 'bulwark-drill-lag-'));
});
afterAll(() => rmSync(out, { recursive: true, force: true }));

const failoverProbes = (j: DrillJournal) => j.steps.find((s) => s.step === 'failover')!.probes;

describe('bulwark drill --replica-lag (replicas behind when the primary dies)', () => {
  it('regression: asynchronous replication with lagging replicas loses acknowledged orders: the drill reports it and exits 1', async () => {
    const json = join(out, 'async.json');
    const r = await runCli(
      ['drill', '--steps', 'failover', '--replica-lag', '2s', '--duration', '2s', '--json', json],
      {
        timeoutMs: 150_000,
      },
    );
    expect(r.code, r.stderr).toBe(1);
    expect(r.stdout).toMatch(/DEVIATED/);
    const j = JSON.parse(readFileSync(json, 'utf8')) as DrillJournal;
    expect(j.deviated).toBe(true);
    expect(j.verdict).toEqual({ ok: false, failed: ['failover'] });
    expect(j.measured.lostAcknowledgedOrders).toBeGreaterThan(0);
    expect(failoverProbes(j).find((p) => /RPO/.test(p.name))).toMatchObject({ met: false });
  }, 200_000);

  it('the same fault with --sync loses no acknowledged order: commits wait for a replica instead', async () => {
    const json = join(out, 'sync.json');
    const r = await runCli(
      ['drill', '--sync', '--steps', 'failover', '--replica-lag', '2s', '--duration', '2s', '--json', json],
      { timeoutMs: 150_000 },
    );
    const j = JSON.parse(readFileSync(json, 'utf8')) as DrillJournal;
    expect(j.status, r.stderr).toBe('completed');
    expect(j.measured.lostAcknowledgedOrders).toBe(0);
    expect(Number(j.steps[0]!.measured.ordersAcknowledged)).toBeGreaterThan(0);
    expect(failoverProbes(j).find((p) => /RPO/.test(p.name))).toMatchObject({ met: true, value: 0 });
    // The write gap is not asserted: with --sync, writes already wait during the 2 s of lag, so the gap
    // users see is lag + failover, near the 5 s threshold on a busy machine (the drill reports it as is).
    // Exit 0 or 1 then depends only on that gap: never on a lost order.
    expect(r.code === 0 || failoverProbes(j).some((p) => /RTO/.test(p.name) && !p.met)).toBe(true);
  }, 200_000);
});
