import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initCluster, readSpec, readState } from '../../src/cluster/index.js';
import { pickId } from '../../src/drill/traffic.js';
import { CLI, runCli } from '../harness/cli.js';
import { startStagingShop, stopStagingSystem } from './staging-shop.js';

const CHECKOUT = join(import.meta.dirname, 'fixtures/checkout.ts');
// the demo shop answers order_id "ord_<id>"; the user's query finds the acknowledged ones by that text
const FOUND = `SELECT 'ord_' || id FROM orders WHERE 'ord_' || id = ANY($1)`;

describe('drill --config load: the id of an acknowledged write (pure)', () => {
  it('is read at a dot path of the JSON answer, only as a string or a number', () => {
    expect(pickId({ order_id: 'ord_7' }, 'order_id')).toBe('ord_7');
    expect(pickId({ order: { id: 42 } }, 'order.id')).toBe('42');
    expect(pickId({ order: { id: { x: 1 } } }, 'order.id')).toBeUndefined();
    expect(pickId({ order: null }, 'order.id')).toBeUndefined();
    expect(pickId('text', 'id')).toBeUndefined();
  });
});

/**
 * The user's own load scenario (drill.load) against a configured cluster: primary + 1 replica, the
 * demo shop storing orders in it and the user's monitor, all started by the test. The drill runs the
 * user's scenario (test/drill/fixtures/checkout.ts) instead of its shopper, and measures RPO with the
 * user's query — or says it did not measure it.
 */
describe('bulwark drill --config: your own load scenario and RPO query', () => {
  let dir: string;
  let pgDir: string;
  let shop: ChildProcess | undefined;
  let monitor: ChildProcess | undefined;
  let shopUrl: string;
  let n = 0;

  const writeConfig = (drill: object) => {
    const file = join(dir, `bulwark.config.${n++}.mjs`);
    writeFileSync(file, `export default ${JSON.stringify({ cluster: { dir: pgDir }, drill }, null, 2)};\n`);
    return file;
  };
  const query = async (sql: string): Promise<number> => {
    const now = readSpec(pgDir).nodes.find((x) => x.name === readState(pgDir)?.primary)!;
    const c = new pg.Client({ host: '127.0.0.1', port: now.port, user: 'postgres', database: 'postgres' });
    await c.connect();
    try {
      return Number(Object.values((await c.query(sql)).rows[0])[0]);
    } finally {
      await c.end();
    }
  };
  const drillFailover = async (drill: object) => {
    const file = writeConfig(drill);
    const journalFile = join(dir, `journal.${n}.json`);
    const r = await runCli(
      ['drill', '--config', file, '--steps', 'failover', '--duration', '2s', '--json', journalFile],
      {
        timeoutMs: 150_000,
      },
    );
    return { r, journal: existsSync(journalFile) ? JSON.parse(readFileSync(journalFile, 'utf8')) : undefined };
  };
  const rejoined = async () => {
    // the previous failover's old primary streams again before the next kill (the monitor rejoins it)
    for (let i = 0; i < 300; i++) {
      try {
        const t = JSON.parse(readFileSync(join(pgDir, 'topology.json'), 'utf8'));
        if (
          t.nodes.length === 2 &&
          t.nodes.every((x: { role: string; streaming?: boolean }) => x.role === 'primary' || x.streaming)
        )
          return;
      } catch {
        // being written
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error('the cluster did not get its replica back');
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'bulwark-drill-load-'));
    chmodSync(dir, 0o755);
    pgDir = join(dir, 'pg');
    await initCluster({ dir: pgDir, replicas: 1, name: 'drillload' });
    ({ child: shop, url: shopUrl } = await startStagingShop(pgDir));
    monitor = spawn(
      process.execPath,
      [CLI, 'cluster', 'monitor', '--dir', pgDir, '--interval', '500ms', '--failures', '3', '--log-format', 'text'],
      { stdio: 'ignore' },
    );
    const lock = join(pgDir, 'monitor.lock');
    for (let i = 0; i < 100 && !existsSync(lock); i++) await new Promise((r) => setTimeout(r, 100));
  }, 120_000);

  afterAll(() => stopStagingSystem({ shop, monitor, pgDir, dir }), 60_000);

  it('refuses a bad drill.load with exit 2 and one line: missing scenario file, a query without $1, an unknown key', async () => {
    const missing = writeConfig({ url: shopUrl, load: { scenario: './nope.ts' } });
    const r1 = await runCli(['drill', '--config', missing, '--steps', 'failover'], { timeoutMs: 30_000 });
    expect(r1.code, r1.stderr).toBe(2);
    expect(r1.stderr).toMatch(/nope\.ts: scenario file not found/);
    const noParam = writeConfig({
      url: shopUrl,
      load: { scenario: CHECKOUT, acks: { request: 'place order', id: 'order_id', query: 'SELECT 1' } },
    });
    const r2 = await runCli(['drill', '--config', noParam], { timeoutMs: 30_000 });
    expect(r2.code).toBe(2);
    expect(r2.stderr).toMatch(/drill\.load\.acks\.query: must use \$1/);
    const unknown = writeConfig({ url: shopUrl, load: { scenario: CHECKOUT, users: 5 } });
    const r3 = await runCli(['drill', '--config', unknown], { timeoutMs: 30_000 });
    expect(r3.code).toBe(2);
    expect(r3.stderr).toMatch(/drill\.load: .*users/);
  });

  it("runs the user's scenario instead of the shopper and measures RPO with the user's query: 0 lost (exit 0)", async () => {
    const { r, journal } = await drillFailover({
      url: shopUrl,
      rate: 20,
      load: { scenario: CHECKOUT, acks: { request: 'place order', id: 'order_id', query: FOUND } },
    });
    expect(r.code, r.stderr + r.stdout).toBe(0);
    const [failover] = journal.steps;
    expect(failover.measured.ordersAcknowledged).toBeGreaterThan(0);
    expect(failover.measured.lostOrders).toBe(0);
    expect(failover.measured.rpo).toBe(0);
    expect(failover.measured.rtoMs).toBeGreaterThan(0);
    expect(failover.log.join('\n')).toContain('(drill.load.acks.query): 0 missing');
    // the orders in the database are the user's scenario's, none from the drill's shopper
    expect(await query(`SELECT count(*) FROM orders WHERE client_ref LIKE 'user-scenario-%'`)).toBeGreaterThanOrEqual(
      failover.measured.ordersAcknowledged,
    );
    expect(await query(`SELECT count(*) FROM orders WHERE client_ref LIKE 'drill-%'`)).toBe(0);
  }, 180_000);

  it("regression: a query that finds none of the acknowledged writes is reported as lost writes (exit 1): the user's query is what RPO is measured with", async () => {
    await rejoined();
    const { r, journal } = await drillFailover({
      url: shopUrl,
      rate: 20,
      load: { scenario: CHECKOUT, acks: { request: 'place order', id: 'order_id', query: `${FOUND} AND false` } },
    });
    expect(r.code, r.stderr + r.stdout).toBe(1);
    const [failover] = journal.steps;
    expect(failover.measured.ordersAcknowledged).toBeGreaterThan(0);
    expect(failover.measured.lostOrders).toBe(failover.measured.ordersAcknowledged);
    expect(journal.verdict.failed).toEqual(['failover']);
  }, 180_000);

  it('without drill.load.acks the write gap and RPO are "not measured", never 0 (exit 0 on the failover itself)', async () => {
    await rejoined();
    const { r, journal } = await drillFailover({ url: shopUrl, rate: 20, load: { scenario: CHECKOUT } });
    expect(r.code, r.stderr + r.stdout).toBe(0);
    const [failover] = journal.steps;
    expect(failover.measured.rpo).toMatch(/^not measured/);
    expect(failover.measured.lostOrders).toBeNull();
    expect(failover.measured.rtoMs).toBeNull();
    expect(journal.measured.lostAcknowledgedOrders).toBeNull();
    expect(journal.measured.ordersAcknowledged).toBeNull();
    expect(failover.probes.map((p: { name: string }) => p.name)).toEqual(['another node became primary']);
    expect(r.stdout).toMatch(/rpo not measured/);
    expect(journal.measured.requests).toBeGreaterThan(0);
  }, 180_000);
});
