import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { physicalBackup, physicalRestore } from '../backup/index.js';
import { clusterPaths, crashNode, readState } from '../cluster/index.js';
import { ORDERS_TABLE_SQL } from '../demo/index.js';
import type { Deployer } from '../deploy/index.js';
import { run } from '../lib/child.js';
import { freePort } from '../lib/net.js';
import { POSTGRES_USER, pgBin } from '../lib/postgres.js';
import { configuredPitr } from './configured-pitr.js';
import {
  bulwarkCommand,
  type DeployParts,
  type DrillEnvironment,
  type DrillSystem,
  type FailoverParts,
  type FailoverSeen,
  type Release,
  shellArg,
} from './environment.js';
import { DrillError } from './errors.js';
import { atMost, below, isTrue, lostOrders, orderKey, writeGapMs } from './hypothesis.js';
import type { DrillTarget } from './target.js';
import type { DrillTraffic } from './traffic.js';
import type { Probe, StepName } from './types.js';

export interface StepContext {
  /** Failover step: pause the primary's WAL senders this long before the kill (replication lag). */
  replicaLagMs?: number;
  /** The embedded environment; undefined when the drill runs against a configured system. */
  env?: DrillEnvironment;
  /** The system under test (the embedded environment, or the user's own from the config). */
  system: DrillSystem;
  /** The user's system as the config names it (--config), else undefined. */
  target?: DrillTarget;
  traffic: DrillTraffic;
  log: (line: string) => void;
  signal?: AbortSignal;
  releases: { bad: Release; good: Release };
  sync: boolean;
}

export interface StepOutcome {
  probes: Probe[];
  measured: Record<string, number | string | boolean | null>;
  /** Epoch ms of the fault (chart marker). */
  faultAt?: number;
}

export interface StepSpec {
  /** `configured`: against the user's system (--config), where the releases are the user's own. */
  hypothesis: (c: { sync: boolean; configured?: boolean }) => string;
  run: (c: StepContext) => Promise<StepOutcome>;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Sleep that ends early, throwing, when the drill is interrupted (Ctrl-C must not wait out a pause). */
export async function pause(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) throw new DrillError('BULWARK_E_DRILL', 'interrupted');
  await new Promise<void>((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
  if (signal?.aborted) throw new DrillError('BULWARK_E_DRILL', 'interrupted');
}

/** Poll `what` every 100 ms until it is truthy or `ms` passed; false on timeout. */
export async function waitUntil(
  what: () => boolean | Promise<boolean>,
  ms: number,
  signal?: AbortSignal,
): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (signal?.aborted) throw new DrillError('BULWARK_E_DRILL', 'interrupted');
    if (await what()) return true;
    await sleep(100);
  }
  return Boolean(await what());
}

/** The release /health reports through the router (the version that serves users now). */
async function servingVersion(url: string): Promise<string | undefined> {
  try {
    const r = await fetch(`${url}/health`, { signal: AbortSignal.timeout(3000) });
    return ((await r.json()) as { label?: string }).label;
  } catch {
    return undefined;
  }
}

const WRITE_GAP_LIMIT_MS = 5000;
const NO_ACKS = 'drill.load.acks is not configured (which answers of your scenario acknowledge a write)';

/**
 * PIDs of the WAL senders of node `node` of the local cluster in `pgDir`: children of that node's
 * postmaster (postmaster.pid in its data folder) whose title says walsender. Not by title alone:
 * `postgres: node1: walsender` is the title of every cluster's node1 on this machine, and the drill
 * must never pause another cluster's replication.
 */
export function walSenders(pgDir: string, node: string): number[] {
  let postmaster: number;
  try {
    postmaster = Number(readFileSync(join(clusterPaths(pgDir).dataDir(node), 'postmaster.pid'), 'utf8').split('\n')[0]);
  } catch {
    return []; // not running
  }
  const pids: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid !== postmaster) continue;
      const cmd = readFileSync(`/proc/${e}/cmdline`, 'utf8');
      if (cmd.startsWith(`postgres: ${node}: walsender`)) pids.push(Number(e));
    } catch {
      // ended meanwhile
    }
  }
  return pids;
}

function signalAll(pids: number[], signal: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch {
      // gone
    }
  }
}

/** The embedded environment, for steps that need parts only it has (refused up front with --config). */
function embedded(env: DrillEnvironment | undefined): DrillEnvironment {
  if (!env) throw new DrillError('BULWARK_E_DRILL', 'this step runs only on the embedded environment');
  return env;
}

/** The failover step's parts: the configured system's (the user's monitor), else the embedded ones. */
function failoverParts(c: StepContext): FailoverParts {
  if (c.system.failover) return c.system.failover;
  const env = embedded(c.env);
  const monitor = env.monitor!;
  return {
    pgDir: env.pgDir,
    pool: env.pool!,
    primary: async () => readState(env.pgDir)?.primary ?? undefined,
    watchFailover: () =>
      new Promise<FailoverSeen>((resolve) =>
        monitor.once('failover', (e: { to: string; durationMs: number; promoteMs: number }) => resolve(e)),
      ),
    rejoined: (node) => monitor.topology().nodes.some((n) => n.name === node && n.role === 'replica' && n.streaming),
  };
}

/** The deploy steps' parts: the configured app's (bulwark deploy's Deployer), else the embedded shop's. */
function deployParts(c: StepContext): DeployParts {
  if (c.system.deploy) return c.system.deploy;
  const env = embedded(c.env);
  return {
    app: 'shop',
    deployerFor: (kind) => {
      const release = kind === 'bad' ? c.releases.bad : c.releases.good;
      const strategy = kind === 'bad' ? 'canary' : 'blue-green';
      return { deployer: env.deployerFor(release, { strategy }), version: release.version, strategy };
    },
    serving: () => servingVersion(env.url),
  };
}

/** The version serving every request before a deploy step (the stable one the bad release returns to). */
function stableVersionOf(deployer: Deployer): string | undefined {
  const s = deployer.status();
  return s.active ? (s.slots[s.active]?.version ?? undefined) : undefined;
}

export const STEPS: Record<StepName, StepSpec> = {
  backup: {
    hypothesis: () =>
      'a full physical backup of the primary completes while the shop is under load, with no failed request',
    async run({ system: env, traffic, log }) {
      const primary = env.primary();
      const before = traffic.snapshot();
      const t0 = Date.now();
      log(`pg_basebackup of ${primary.name} into ${env.repoUri}`);
      const m = await physicalBackup({
        repo: env.repo,
        pg: { url: primary.url },
        encoding: { compression: 'zstd', level: 1, encryption: 'none' },
        label: 'drill',
      });
      const failed = traffic.failures - before.failures;
      log(`backup ${m.id}: ${(m.sizes.raw / 1048576).toFixed(1)} MiB in ${(m.durationMs / 1000).toFixed(1)} s`);
      return {
        faultAt: t0,
        probes: [
          isTrue('backup completed (manifest written)', true),
          atMost('failed requests during the backup', failed, 0),
        ],
        measured: {
          backupId: m.id,
          backupMs: m.durationMs,
          backupBytes: m.sizes.raw,
          storedBytes: m.sizes.stored,
          failedRequests: failed,
        },
      };
    },
  },

  failover: {
    hypothesis: ({ sync }) =>
      `after kill -9 of the primary, writes resume within ${WRITE_GAP_LIMIT_MS / 1000} s and no acknowledged order is lost${sync ? ' (synchronous replication)' : ' (asynchronous replication)'}`,
    async run(c) {
      const { traffic, log, signal, replicaLagMs } = c;
      const rpoQuery = c.target?.load?.acks?.query;
      const parts = failoverParts(c);
      const primaryName = await parts.primary();
      if (!primaryName) throw new DrillError('BULWARK_E_DRILL', `${parts.pgDir}: the cluster has no primary`);
      const primary = { name: primaryName };
      let paused: number[] = [];
      if (replicaLagMs) {
        // The primary stops sending WAL while it keeps acknowledging commits: in async mode those
        // commits exist only on the primary when it dies (what --sync protects against: there, commits
        // wait for a replica). Pausing the senders, not the receivers: WAL already in a socket buffer
        // would still reach a paused receiver.
        paused = walSenders(parts.pgDir, primary.name);
        signalAll(paused, 'SIGSTOP');
        log(
          `WAL senders of ${primary.name} paused (SIGSTOP, ${paused.length} processes) for ${replicaLagMs} ms before the kill: the replicas fall behind`,
        );
        await pause(replicaLagMs, signal).catch((err) => {
          signalAll(paused, 'SIGCONT');
          throw err;
        });
      }
      const failover = parts.watchFailover(primary.name);
      const killAt = Date.now();
      const pids = crashNode(parts.pgDir, primary.name);
      if (!pids.length) throw new DrillError('BULWARK_E_DRILL', `${primary.name} was not running`);
      log(`SIGKILL to ${pids.length} processes of ${primary.name} (the primary)`);
      const entry = await Promise.race([failover, pause(60_000, signal).then(() => undefined)]);
      if (!entry) throw new DrillError('BULWARK_E_DRILL', `the monitor did not fail over within 60 s`);
      log(
        entry.durationMs === null
          ? `the cluster's monitor promoted ${entry.to} (seen in the cluster state)`
          : `monitor promoted ${entry.to} (${entry.durationMs} ms from the first failed probe, promotion ${entry.promoteMs} ms)`,
      );
      // Without acknowledged writes (the user's scenario names none) neither the write gap nor the RPO
      // can be measured: they are reported as not measured, never as 0.
      const measured = traffic.measuresAcks;
      const resumed = measured && (await waitUntil(() => traffic.acks.some((a) => a.at > killAt), 30_000, signal));
      const gap = resumed
        ? writeGapMs(
            killAt,
            traffic.acks.map((a) => a.at),
          )
        : null;
      log(
        !measured
          ? `write gap and RPO not measured: ${NO_ACKS}`
          : gap === null
            ? 'no write acknowledged within 30 s of the kill'
            : `write gap ${gap} ms (last write acknowledged before the kill to the first after it)`,
      );
      // RPO: every write the app acknowledged so far must be on the new primary
      const acks = [...traffic.acks];
      let lost: Array<number | string> | null = null;
      if (measured && rpoQuery) {
        // the user's query: $1 = the acknowledged ids (text[]); it answers those it finds (first column)
        const r = await parts.pool.query(rpoQuery, [acks.map((a) => String(a.id))]);
        const found = r.rows.map((row: Record<string, unknown>) => String(Object.values(row)[0]));
        const lostIds = new Set(
          lostOrders(
            acks.map((a) => String(a.id)),
            found,
          ),
        );
        lost = acks.filter((a) => lostIds.has(String(a.id))).map((a) => a.id);
        for (const a of acks) if (lostIds.has(String(a.id))) traffic.lost.add(orderKey(a.id, a.ref));
      } else if (measured) {
        const r = await parts.pool.query('SELECT id, client_ref FROM orders WHERE id = ANY($1::bigint[])', [
          acks.map((a) => a.id),
        ]);
        const lostKeys = new Set(
          lostOrders(
            acks.map((a) => orderKey(a.id, a.ref)),
            r.rows.map((row: { id: string; client_ref: string | null }) => orderKey(row.id, row.client_ref)),
          ),
        );
        lost = acks.filter((a) => lostKeys.has(orderKey(a.id, a.ref))).map((a) => a.id);
        for (const key of lostKeys) traffic.lost.add(key);
      }
      if (lost)
        log(
          `${acks.length} acknowledged writes checked on ${entry.to}${rpoQuery ? ' (drill.load.acks.query)' : ''}: ${lost.length} missing${lost.length ? ` (ids ${lost.slice(0, 10).join(', ')}${lost.length > 10 ? ', ...' : ''})` : ''}`,
        );
      const rejoined = await waitUntil(() => parts.rejoined(primary.name), 60_000, signal);
      const rejoinS = (Date.now() - killAt) / 1000;
      log(
        rejoined
          ? `${primary.name} rejoined as a streaming replica ${rejoinS.toFixed(1)} s after the kill`
          : `${primary.name} did not rejoin within 60 s`,
      );
      return {
        faultAt: killAt,
        probes: lost
          ? [
              below('write gap (RTO)', gap, WRITE_GAP_LIMIT_MS, 'ms'),
              atMost('acknowledged orders lost (RPO)', lost.length, 0),
            ]
          : [isTrue('another node became primary', entry.to !== primary.name, `new primary ${entry.to}`)],
        measured: {
          killedNode: primary.name,
          newPrimary: entry.to,
          rtoMs: gap,
          monitorFailoverMs: entry.durationMs,
          promoteMs: entry.promoteMs,
          ordersAcknowledged: lost ? acks.length : null,
          lostOrders: lost ? lost.length : null,
          lostOrderIds: lost ? lost.slice(0, 100).join(',') : null,
          rpo: lost ? lost.length : `not measured (${NO_ACKS})`,
          oldPrimaryRejoined: rejoined,
        },
      };
    },
  },

  'bad-release': {
    hypothesis: ({ configured }) =>
      configured
        ? "the bad release fails the app's analysis and is rolled back automatically, and all traffic returns to the stable version"
        : 'a release that answers 500 on 20 % of requests is rolled back automatically by the canary analysis, and all traffic returns to the stable version',
    async run(c) {
      const { traffic, log } = c;
      const parts = deployParts(c);
      const { deployer, version, strategy } = parts.deployerFor('bad', log);
      const stableVersion = stableVersionOf(deployer);
      const before = traffic.snapshot();
      const t0 = Date.now();
      log(
        strategy === 'canary'
          ? `canary of ${version} (20 % of traffic) next to ${stableVersion}`
          : `deploy of ${version} (${parts.app}'s own strategy and analysis) over ${stableVersion}`,
      );
      let outcome = 'deployed';
      try {
        await deployer.deploy(version, strategy ? { strategy } : {});
      } catch (err) {
        outcome = (err as { code?: string }).code ?? (err as Error).message;
      }
      const settledMs = Date.now() - t0;
      const history = deployer.history();
      const record = [...history].reverse().find((d) => d.version === version);
      const rolledBack = record?.status === 'rolled-back';
      const reason = record?.events.map((e) => e.sentence).find((s) => /analysis|rollback|rolled/.test(s));
      if (reason) log(reason);
      const serving = await parts.serving();
      const failed = traffic.failures - before.failures;
      const requests = traffic.requests - before.requests;
      log(
        `${version}: ${record?.status ?? outcome} after ${(settledMs / 1000).toFixed(1)} s; ${failed} failed requests of ${requests}; now serving ${serving}`,
      );
      return {
        faultAt: t0,
        probes: [
          isTrue('rolled back automatically', rolledBack, record ? `deploy ${record.status}` : outcome),
          isTrue(
            `traffic back on the stable version (${stableVersion})`,
            serving !== undefined && serving === stableVersion,
            `serving ${serving}`,
          ),
        ],
        measured: {
          release: version,
          deployStatus: record?.status ?? outcome,
          rollbackAfterMs: settledMs,
          failedRequests: failed,
          requests,
          servingAfter: serving ?? null,
        },
      };
    },
  },

  'good-release': {
    hypothesis: ({ configured }) =>
      configured
        ? "a deploy of the good release (the app's own strategy) switches all traffic to it with zero failed requests"
        : 'a blue-green deploy of a good release switches all traffic with zero failed requests',
    async run(c) {
      const { traffic, log } = c;
      const parts = deployParts(c);
      const { deployer, version, strategy } = parts.deployerFor('good', log);
      const before = traffic.snapshot();
      const t0 = Date.now();
      log(strategy ? `${strategy} deploy of ${version}` : `deploy of ${version} (${parts.app}'s own strategy)`);
      let error: string | undefined;
      try {
        await deployer.deploy(version, strategy ? { strategy } : {});
      } catch (err) {
        error = (err as Error).message;
        log(`deploy failed: ${error}`);
      }
      const tookMs = Date.now() - t0;
      const warm = parts.afterDeploy?.(deployer);
      if (warm) log(warm);
      const serving = await parts.serving();
      const failed = traffic.failures - before.failures;
      const requests = traffic.requests - before.requests;
      log(
        `${version}: ${error ? 'failed' : 'deployed'} in ${(tookMs / 1000).toFixed(1)} s; ${failed} failed requests of ${requests}; now serving ${serving}`,
      );
      return {
        faultAt: t0,
        probes: [
          isTrue('deploy succeeded', !error && serving === version, error ?? `serving ${serving}`),
          atMost('failed requests during the deploy', failed, 0),
        ],
        measured: {
          release: version,
          deployMs: tookMs,
          failedRequests: failed,
          requests,
          servingAfter: serving ?? null,
        },
      };
    },
  },

  pitr: {
    hypothesis: ({ configured }) =>
      configured
        ? "after the drill's own scratch table is dropped by mistake, a point-in-time recovery to just before the drop into a new local instance gives a queryable copy holding every row of it, and your table as it was before the drop"
        : 'after the orders table is dropped by mistake, a point-in-time recovery to just before the drop gives a queryable copy holding every order acknowledged before it',
    async run({ env: maybeEnv, traffic, log, target, system, signal }) {
      if (target?.pitr)
        return configuredPitr({
          target,
          repo: system.repo,
          log,
          onCleanup: (what, fn) => system.onCleanup(what, fn),
          waitUntil: (what, ms) => waitUntil(what, ms, signal),
        });
      const env = embedded(maybeEnv);
      const pool = env.pool!;
      // Taken before the server's clock is read: an order acknowledged by then committed before the target.
      const targetAt = Date.now();
      const t = await pool.query(
        `SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00' AS t`,
      );
      const targetTime = String(t.rows[0].t);
      // orders a failover already lost are that step's finding, not this one's
      const ackedBefore = traffic.acks
        .filter((a) => a.at <= targetAt)
        .map((a) => orderKey(a.id, a.ref))
        .filter((k) => !traffic.lost.has(k));
      await pool.query('DROP TABLE orders');
      const dropAt = Date.now();
      log(`DROP TABLE orders on ${env.primary().name}; recovery target ${targetTime}`);
      const seg = await pool.query('SELECT pg_walfile_name(pg_switch_wal()) AS seg');
      const segment = String(seg.rows[0].seg);
      const archived = await waitUntil(async () => {
        const a = await pool.query('SELECT last_archived_wal FROM pg_stat_archiver');
        const last = a.rows[0].last_archived_wal as string | null;
        return last !== null && last.slice(8) >= segment.slice(8);
      }, 60_000);
      if (!archived) throw new DrillError('BULWARK_E_DRILL', `WAL segment ${segment} was not archived within 60 s`);
      log(`WAL up to ${segment} archived`);
      const pgdata = join(env.dir, 'pitr');
      const port = await freePort({ below: 32768 });
      env.onCleanup('PITR copy stopped', () =>
        run(pgBin('pg_ctl'), ['-D', pgdata, '-m', 'immediate', '-w', 'stop'], { asUser: POSTGRES_USER, check: false }),
      );
      const t0 = Date.now();
      const restored = await physicalRestore({
        repo: env.repo,
        pgdata,
        target: { kind: 'time', time: targetTime },
        restoreCommand: `${bulwarkCommand()} wal fetch "%f" "%p" --repo ${shellArg(env.repoUri)}`,
        start: true,
        port,
        archiveMode: 'off',
        timeoutMs: 120_000,
      });
      const copy = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres' });
      copy.on('error', () => {});
      await copy.connect();
      let rows: Array<Record<string, unknown>>;
      try {
        rows = (await copy.query('SELECT * FROM orders ORDER BY id')).rows;
      } finally {
        await copy.end().catch(() => {});
      }
      const queryableMs = Date.now() - t0;
      log(
        `copy queryable on port ${port} ${(queryableMs / 1000).toFixed(1)} s after the restore began (${restored.started?.stoppedAt ?? 'end of archive'}); ${rows.length} orders in it`,
      );
      const missing = lostOrders(
        ackedBefore,
        rows.map((r) => orderKey(String(r.id), r.client_ref)),
      );
      const betweenTargetAndDrop = traffic.acks.filter((a) => a.at > targetAt && a.at <= dropAt).length;
      // Put the orders back in production, as the on-call engineer would, so the shop takes orders again.
      const r0 = Date.now();
      const maxAcked = traffic.acks.reduce((m, a) => Math.max(m, Number(a.id)), 0);
      const client = await pool.connect();
      try {
        // one transaction: the shop's inserts fail until the table is back whole (never half-filled)
        await client.query('BEGIN');
        await client.query(ORDERS_TABLE_SQL);
        await client.query('INSERT INTO orders SELECT * FROM json_populate_recordset(NULL::orders, $1::json)', [
          JSON.stringify(rows),
        ]);
        // ids of orders lost between the target and the drop are never handed out again
        await client.query(`SELECT setval('orders_id_seq', GREATEST((SELECT max(id) FROM orders), $1::bigint, 1))`, [
          maxAcked,
        ]);
        await client.query('COMMIT');
      } catch (err) {
        await client.query('ROLLBACK').catch(() => {});
        throw err;
      } finally {
        client.release();
      }
      log(`${rows.length} orders copied back into production in ${((Date.now() - r0) / 1000).toFixed(1)} s`);
      return {
        faultAt: dropAt,
        probes: [
          atMost('orders acknowledged before the drop missing from the copy', missing.length, 0),
          isTrue('copy is queryable', true),
        ],
        measured: {
          targetTime,
          ordersAcknowledgedBeforeTarget: ackedBefore.length,
          rowsRecovered: rows.length,
          missingOrders: missing.length,
          ordersBetweenTargetAndDrop: betweenTargetAndDrop,
          restoreMs: restored.restoreMs,
          recoveryMs: restored.started?.recoveryMs ?? null,
          timeToQueryableMs: queryableMs,
          backupUsed: restored.backup.id,
        },
      };
    },
  },
};
