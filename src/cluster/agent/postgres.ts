import { appendFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import pg from 'pg';
import { run } from '../../lib/child.js';
import { POSTGRES_USER, pgBin } from '../../lib/postgres.js';
import { ClusterError } from '../errors.js';
import { BASE_SETTINGS, markStandby, nodeProcesses, postmasterPid, setAutoConf, sleep } from '../local/cluster.js';
import { chownToPostgres } from '../local/layout.js';
import { probeNode } from '../probe.js';
import type { LocalPostgres } from './decide.js';

/** The one PostgreSQL an agent owns: its data folder, the address it listens on, how to reach peers. */
export interface LocalPostgresSpec {
  name: string;
  dataDir: string;
  /** Address PostgreSQL listens on and that the other hosts use to reach it. */
  host: string;
  port: number;
  /** Networks (CIDR) allowed to connect, for clients and replication (written to pg_hba.conf at bootstrap). */
  allow: string[];
  /** pgpass-format file with the postgres user's password; without it connections use trust auth. */
  passfile?: string;
  /** Extra postgresql.conf settings written at bootstrap. */
  settings?: Record<string, string>;
}

/** Marker in the data folder: this node was a primary that got fenced; rewind it before it follows anyone. */
const REWIND_MARKER = 'bulwark.rewind';

function password(spec: LocalPostgresSpec): string | undefined {
  if (!spec.passfile) return undefined;
  const line = readFileSync(spec.passfile, 'utf8')
    .split('\n')
    .find((l) => l.trim() && !l.startsWith('#'));
  return line?.split(':').slice(4).join(':');
}

export function connection(spec: LocalPostgresSpec, host = spec.host, port = spec.port): pg.ClientConfig {
  return { host, port, user: 'postgres', database: 'postgres', password: password(spec) };
}

/** libpq conninfo this node uses to stream from (or rewind onto) `leader`; the password stays in the passfile. */
export function conninfo(spec: LocalPostgresSpec, leader: { host: string; port: number }): string {
  const parts = [
    `host=${leader.host}`,
    `port=${leader.port}`,
    'user=postgres',
    'dbname=postgres',
    `application_name=${spec.name}`,
  ];
  if (spec.passfile) parts.push(`passfile=${spec.passfile}`);
  return parts.join(' ');
}

/** host:port of the primary_conninfo in postgresql.auto.conf, or null. */
export function configuredUpstream(dataDir: string): string | null {
  const path = join(dataDir, 'postgresql.auto.conf');
  if (!existsSync(path)) return null;
  const line = readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => /^\s*primary_conninfo\s*=/.test(l))
    .at(-1);
  if (!line) return null;
  const host = /host=([^\s']+)/.exec(line)?.[1];
  const port = /port=(\d+)/.exec(line)?.[1];
  return host && port ? `${host}:${port}` : null;
}

export async function observe(spec: LocalPostgresSpec, timeoutMs = 1000): Promise<LocalPostgres> {
  const initialized = existsSync(join(spec.dataDir, 'PG_VERSION'));
  const running = initialized && !!postmasterPid(spec.dataDir);
  // Fenced by us (marker), or stopped as a primary (no standby.signal: crashed, killed with its host,
  // or shut down): either may hold WAL the new leader never saw, so it is rewound before it follows.
  const needsRewind =
    existsSync(join(spec.dataDir, REWIND_MARKER)) ||
    (initialized && !running && !existsSync(join(spec.dataDir, 'standby.signal')));
  const upstream = initialized ? configuredUpstream(spec.dataDir) : null;
  const base = { initialized, needsRewind, upstream };
  if (!running) return { ...base, running: false, inRecovery: null, lsn: null, timeline: null, streamingFrom: null };
  const o = await probeNode(
    { name: spec.name, host: spec.host, port: spec.port, connection: connection(spec) },
    timeoutMs,
  );
  if (!o.reachable)
    // The postmaster lives but does not answer yet (starting, crash recovery): running, role unknown.
    return { ...base, running: true, inRecovery: null, lsn: null, timeline: null, streamingFrom: null };
  const w = o.walReceiver;
  return {
    ...base,
    running: true,
    inRecovery: !!o.inRecovery,
    lsn: o.inRecovery ? furthest(o.receiveLsn ?? null, o.replayLsn ?? null) : (o.currentLsn ?? null),
    timeline: o.timeline ?? null,
    streamingFrom: w && w.status === 'streaming' && w.senderHost ? `${w.senderHost}:${w.senderPort}` : null,
  };
}

function furthest(a: string | null, b: string | null): string | null {
  if (!a) return b;
  if (!b) return a;
  // compare as numbers: the receive position can be behind replay right after a restart
  const n = (s: string) => {
    const [hi, lo] = s.split('/');
    return BigInt(`0x${hi}`) * 2n ** 32n + BigInt(`0x${lo}`);
  };
  return n(a) >= n(b) ? a : b;
}

async function pgCtlStart(spec: LocalPostgresSpec): Promise<void> {
  if (postmasterPid(spec.dataDir)) return;
  // A postmaster killed with -9 leaves its lock file; the PID in it may be reused by now.
  rmSync(join(spec.dataDir, 'postmaster.pid'), { force: true });
  const log = logPath(spec);
  const r = await run(
    pgBin('pg_ctl'),
    [
      '-D',
      spec.dataDir,
      '-l',
      log,
      '-w',
      '-t',
      '120',
      // listen address, port and name on the command line: pg_rewind and pg_basebackup copy the
      // configuration files of another host, which would give this node that host's address.
      '-o',
      `-p ${spec.port} -c listen_addresses=${spec.host} -c cluster_name=${spec.name}`,
      'start',
    ],
    { asUser: POSTGRES_USER, check: false },
  );
  if (r.code !== 0) {
    const tail = existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n').slice(-3).join(' | ') : '';
    throw new ClusterError('BULWARK_E_CLUSTER_NODE', `${spec.name} did not start: ${tail || r.stderr.trim()}`);
  }
}

export function logPath(spec: LocalPostgresSpec): string {
  return join(dirname(spec.dataDir), `${spec.name}.postgresql.log`);
}

/** Start as the primary (the caller holds the leader key): no standby.signal, no upstream. */
export async function startPrimary(spec: LocalPostgresSpec): Promise<void> {
  await pgCtlStart(spec);
}

/** Start read-only: standby.signal always, streaming from `leader` when there is one. */
export async function startReplica(
  spec: LocalPostgresSpec,
  leader: { host: string; port: number } | null,
  options: { rewound?: boolean } = {},
): Promise<void> {
  if (postmasterPid(spec.dataDir)) return;
  // Without standby.signal this folder was a primary's: remember that it needs pg_rewind before it
  // can follow another timeline (the signal written below would hide it).
  if (!options.rewound && !existsSync(join(spec.dataDir, 'standby.signal'))) markRewind(spec);
  setAutoConf(spec.dataDir, { primary_conninfo: leader ? conninfo(spec, leader) : null });
  markStandby(spec.dataDir);
  await pgCtlStart(spec);
}

/**
 * Fence: SIGKILL the postmaster and every backend (instant, also when the server is stuck), leave a
 * standby.signal so any restart comes up read-only, and mark the folder for pg_rewind.
 */
export async function fence(spec: LocalPostgresSpec): Promise<number[]> {
  const pids = nodeProcesses(spec.dataDir);
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  for (let i = 0; i < 300 && nodeProcesses(spec.dataDir).length; i++) await sleep(10);
  if (existsSync(join(spec.dataDir, 'PG_VERSION'))) {
    markStandby(spec.dataDir);
    markRewind(spec);
  }
  return pids;
}

/** After a clean stop of the primary (switchover): any restart comes up read-only, then rewound. */
export function markStepDown(spec: LocalPostgresSpec): void {
  markStandby(spec.dataDir);
  markRewind(spec);
}

const SETTING_NAME = /^[a-z_][a-z0-9_.]*$/;

/**
 * Apply the cluster-wide settings to this node: ALTER SYSTEM SET for each, RESET for the ones no
 * longer listed, then reload. Returns the settings that only take effect after a restart.
 */
export async function applySettings(
  spec: LocalPostgresSpec,
  settings: Record<string, string>,
  previous: Record<string, string>,
): Promise<string[]> {
  const client = new pg.Client({ ...connection(spec), connectionTimeoutMillis: 5000, query_timeout: 10_000 });
  client.on('error', () => {});
  await client.connect();
  try {
    for (const [k, v] of Object.entries(settings)) {
      if (!SETTING_NAME.test(k)) continue;
      await client.query(`ALTER SYSTEM SET ${k} = '${String(v).replace(/'/g, "''")}'`);
    }
    for (const k of Object.keys(previous))
      if (!(k in settings) && SETTING_NAME.test(k)) await client.query(`ALTER SYSTEM RESET ${k}`);
    await client.query('SELECT pg_reload_conf()');
    const r = await client.query('SELECT name FROM pg_settings WHERE pending_restart');
    return r.rows.map((x) => x.name as string);
  } finally {
    await client.end().catch(() => {});
  }
}

function markRewind(spec: LocalPostgresSpec): void {
  writeFileSync(join(spec.dataDir, REWIND_MARKER), `${new Date().toISOString()}\n`);
  chownToPostgres(join(spec.dataDir, REWIND_MARKER));
}

export async function stop(spec: LocalPostgresSpec): Promise<void> {
  if (!postmasterPid(spec.dataDir)) return;
  const r = await run(pgBin('pg_ctl'), ['-D', spec.dataDir, '-m', 'fast', '-w', '-t', '30', 'stop'], {
    asUser: POSTGRES_USER,
    check: false,
  });
  if (r.code !== 0) await fence(spec);
}

/**
 * Promote, then checkpoint: a promoted node writes its new timeline into pg_control only at a
 * checkpoint, and until then pg_rewind on the old primary would find "no rewind required".
 */
export async function promote(spec: LocalPostgresSpec): Promise<void> {
  const client = new pg.Client({ ...connection(spec), connectionTimeoutMillis: 5000 });
  client.on('error', () => {});
  await client.connect();
  try {
    await client.query('SELECT pg_promote(wait => true, wait_seconds => 60)');
    await client.query('CHECKPOINT');
  } finally {
    await client.end().catch(() => {});
  }
  rmSync(join(spec.dataDir, REWIND_MARKER), { force: true });
}

/** What synchronous replication looks like on the primary right now. */
export interface SyncStatus {
  /** Names in the synchronous_standby_names this session sees (in force after a reload). */
  inForce: string[];
  /** The primary's WAL position, read after the setting. */
  lsn: string;
  /** WAL senders: application_name, state and flush position of each standby. */
  senders: Array<{ name: string; state: string; flushLsn: string | null }>;
}

/** Member names in a synchronous_standby_names value ('ANY 1 ("n2","n3")', 'n2, n3', '' ...). */
export function parseStandbyNames(value: string): string[] {
  const v = value.trim();
  if (!v) return [];
  const inner = /\((.*)\)/.exec(v)?.[1] ?? v;
  return inner
    .split(',')
    .map((n) => n.trim().replace(/^"(.*)"$/, '$1'))
    .filter(Boolean);
}

async function withClient<T>(spec: LocalPostgresSpec, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ ...connection(spec), connectionTimeoutMillis: 2000, query_timeout: 5000 });
  client.on('error', () => {});
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => {});
  }
}

/** A fresh session (so it sees the configuration in force now): the setting, then the position, then the senders. */
export async function syncStatus(spec: LocalPostgresSpec): Promise<SyncStatus> {
  return withClient(spec, async (c) => {
    const names = (await c.query('SHOW synchronous_standby_names')).rows[0].synchronous_standby_names as string;
    const lsn = (await c.query('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0].lsn as string;
    const r = await c.query('SELECT application_name, state, flush_lsn::text AS flush FROM pg_stat_replication');
    return {
      inForce: parseStandbyNames(names),
      lsn,
      senders: r.rows.map((x) => ({ name: x.application_name, state: x.state, flushLsn: x.flush })),
    };
  });
}

/**
 * Set synchronous_standby_names to ANY 1 (names) ('' for none) and reload; resolves once a new
 * session sees the new value (the setting is in force).
 */
export async function setStandbyNames(spec: LocalPostgresSpec, names: string[]): Promise<void> {
  const value = names.length ? `ANY 1 (${names.map((n) => `"${n.replace(/"/g, '')}"`).join(', ')})` : '';
  await withClient(spec, async (c) => {
    await c.query(`ALTER SYSTEM SET synchronous_standby_names = '${value.replace(/'/g, "''")}'`);
    await c.query('SELECT pg_reload_conf()');
  });
  const want = [...names].sort().join(',');
  for (let i = 0; i < 50; i++) {
    const s = await syncStatus(spec);
    if ([...s.inForce].sort().join(',') === want) return;
    await sleep(20);
  }
  throw new ClusterError('BULWARK_E_CLUSTER_NODE', `${spec.name}: synchronous_standby_names not in force after reload`);
}

/** Point a running replica at `leader` (primary_conninfo is reloadable since PostgreSQL 13). */
export async function follow(spec: LocalPostgresSpec, leader: { host: string; port: number }): Promise<void> {
  const client = new pg.Client({ ...connection(spec), connectionTimeoutMillis: 5000, query_timeout: 10_000 });
  client.on('error', () => {});
  await client.connect();
  try {
    await client.query(`ALTER SYSTEM SET primary_conninfo = '${conninfo(spec, leader).replace(/'/g, "''")}'`);
    await client.query('SELECT pg_reload_conf()');
  } finally {
    await client.end().catch(() => {});
  }
}

/**
 * Rejoin a former primary as a replica of `leader`: stop it, pg_rewind it onto the leader's timeline
 * (pg_rewind runs crash recovery first when the node was killed); if that cannot work (WAL gone, no
 * shared history), clone it again. Returns how.
 */
export async function rewind(
  spec: LocalPostgresSpec,
  leader: { host: string; port: number },
): Promise<{ method: 'rewind' | 'clone'; detail: string }> {
  await fence(spec);
  rmSync(join(spec.dataDir, 'postmaster.pid'), { force: true });
  // pg_rewind's single-user crash recovery refuses to run with standby.signal present.
  rmSync(join(spec.dataDir, 'standby.signal'), { force: true });
  const r = await run(
    pgBin('pg_rewind'),
    ['--target-pgdata', spec.dataDir, '--source-server', conninfo(spec, leader), '--progress'],
    { asUser: POSTGRES_USER, check: false },
  );
  const out = `${r.stdout}\n${r.stderr}`.trim().split('\n');
  let method: 'rewind' | 'clone' = 'rewind';
  let detail = out.find((l) => /no rewind required|Done!/.test(l)) ?? out.at(-1) ?? '';
  if (r.code !== 0) {
    method = 'clone';
    detail = `pg_rewind failed (${out.slice(-2).join(' | ')}); cloned with pg_basebackup`;
    await clone(spec, leader);
    return { method, detail };
  }
  rmSync(join(spec.dataDir, REWIND_MARKER), { force: true });
  await startReplica(spec, leader, { rewound: true });
  return { method, detail };
}

/** A fresh copy of the leader (pg_basebackup), started as its replica. */
export async function clone(spec: LocalPostgresSpec, leader: { host: string; port: number }): Promise<void> {
  rmSync(spec.dataDir, { recursive: true, force: true });
  prepareParent(spec);
  await run(pgBin('pg_basebackup'), ['-D', spec.dataDir, '-d', conninfo(spec, leader), '-X', 'stream', '-c', 'fast'], {
    asUser: POSTGRES_USER,
  });
  await startReplica(spec, leader, { rewound: true });
}

function quoteSetting(value: string): string {
  if (/^'.*'$/.test(value) || /^-?[0-9.]+$/.test(value) || /^(on|off|true|false)$/i.test(value)) return value;
  return `'${value.replace(/'/g, "''")}'`;
}

/** The folder above the data folder holds the server log and must belong to the postgres user. */
function prepareParent(spec: LocalPostgresSpec): void {
  mkdirSync(dirname(spec.dataDir), { recursive: true });
  chownToPostgres(dirname(spec.dataDir));
}

/** initdb a new cluster here (the caller holds the initialize and leader keys) and start it as the primary. */
export async function bootstrap(spec: LocalPostgresSpec): Promise<void> {
  prepareParent(spec);
  rmSync(spec.dataDir, { recursive: true, force: true });
  const pw = password(spec);
  const args = ['-D', spec.dataDir, '-U', 'postgres', '--auth-local', 'peer'];
  let pwfile: string | undefined;
  if (pw) {
    // initdb reads the password from a file (never from its arguments); the postgres user must read it.
    pwfile = join(dirname(spec.dataDir), `.${spec.name}.initdb-pw`);
    writeFileSync(pwfile, `${pw}\n`, { mode: 0o600 });
    chownToPostgres(pwfile);
    args.push('--pwfile', pwfile, '--auth-host', 'scram-sha-256');
  } else args.push('--auth-host', 'trust');
  try {
    await run(pgBin('initdb'), args, { asUser: POSTGRES_USER });
  } finally {
    if (pwfile) rmSync(pwfile, { force: true });
  }
  const method = pw ? 'scram-sha-256' : 'trust';
  const hba = spec.allow.flatMap((cidr) => [
    `host all all ${cidr} ${method}`,
    `host replication all ${cidr} ${method}`,
  ]);
  appendFileSync(join(spec.dataDir, 'pg_hba.conf'), `\n# bulwark cluster agent\n${hba.join('\n')}\n`);
  const settings: Record<string, string> = {
    ...BASE_SETTINGS,
    unix_socket_directories: "''",
    ...Object.fromEntries(Object.entries(spec.settings ?? {}).map(([k, v]) => [k, quoteSetting(v)])),
  };
  delete settings.listen_addresses; // per node, on the command line
  const conf = Object.entries(settings)
    .map(([k, v]) => `${k} = ${v}`)
    .join('\n');
  appendFileSync(join(spec.dataDir, 'postgresql.conf'), `\n# bulwark cluster agent\n${conf}\n`);
  chownToPostgres(join(spec.dataDir, 'pg_hba.conf'));
  chownToPostgres(join(spec.dataDir, 'postgresql.conf'));
  await pgCtlStart(spec);
}
