import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { isRoot, run } from '../../lib/child.js';
import { freePort } from '../../lib/net.js';
import { POSTGRES_USER, pgBin } from '../../lib/postgres.js';
import { ClusterError } from '../errors.js';
import {
  chownToPostgres,
  clusterPaths,
  type LocalClusterSpec,
  type LocalNodeSpec,
  readPassword,
  readSpec,
  writeFileAtomic,
} from './layout.js';

export interface InitOptions {
  dir: string;
  replicas?: number;
  /** First node's port; the others take the next ones. Default: free ports below 32768. */
  port?: number;
  sync?: boolean;
  auth?: 'trust' | 'scram';
  /** Extra postgresql.conf settings for every node (e.g. { fsync: 'off', shared_buffers: '32MB' }). */
  settings?: Record<string, string>;
  name?: string;
  /** Called with one line per step (the CLI prints them). */
  onProgress?: (line: string) => void;
}

const NODE_NAME = /^[a-z][a-z0-9_]{0,30}$/;

/**
 * Settings every node gets. Why each one:
 * - wal_log_hints: pg_rewind needs it (or data checksums) to rejoin a crashed old primary.
 * - wal_receiver_timeout / wal_sender_timeout 5s: a frozen primary is noticed by its replicas within
 *   seconds, which the monitor requires before it declares the primary lost.
 * - wal_retrieve_retry_interval 500ms: a re-pointed replica retries its new primary quickly (default 5s).
 * - max_slot_wal_keep_size: a dead replica's slot cannot fill the primary's disk.
 */
export const BASE_SETTINGS: Record<string, string> = {
  listen_addresses: "'127.0.0.1'",
  unix_socket_directories: "''",
  wal_level: 'replica',
  wal_log_hints: 'on',
  max_wal_senders: '10',
  max_replication_slots: '10',
  hot_standby: 'on',
  hot_standby_feedback: 'on',
  wal_keep_size: "'256MB'",
  max_slot_wal_keep_size: "'2GB'",
  wal_receiver_status_interval: "'1s'",
  wal_receiver_timeout: "'5s'",
  wal_sender_timeout: "'5s'",
  wal_retrieve_retry_interval: "'500ms'",
  log_line_prefix: "'%m [%p] '",
  logging_collector: 'off',
};

function quoteSetting(value: string): string {
  if (/^'.*'$/.test(value) || /^-?[0-9.]+$/.test(value) || /^(on|off|true|false)$/i.test(value)) return value;
  return `'${value.replace(/'/g, "''")}'`;
}

async function portFree(port: number): Promise<boolean> {
  const { createServer } = await import('node:net');
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen({ host: '127.0.0.1', port, exclusive: true }, () => srv.close(() => resolve(true)));
  });
}

/** Check that the postgres user can create files in `dir` (mkdtemp makes 0700 parents). */
async function checkReachable(dir: string): Promise<void> {
  if (!isRoot()) return;
  const r = await run('test', ['-w', dir, '-a', '-x', dir], { asUser: POSTGRES_USER, check: false });
  if (r.code !== 0)
    throw new ClusterError(
      'BULWARK_E_CLUSTER_DIR',
      `${dir}: the ${POSTGRES_USER} user cannot write there (PostgreSQL runs as ${POSTGRES_USER} when bulwark runs as root): make every parent folder traversable (chmod o+x)`,
    );
}

export function clientConfig(dir: string, spec: LocalClusterSpec, node: LocalNodeSpec): pg.ClientConfig {
  return {
    host: spec.host,
    port: node.port,
    user: 'postgres',
    database: 'postgres',
    password: readPassword(dir),
  };
}

/** libpq connection string a replica uses to stream from `primary` (no password: passfile). */
export function primaryConninfo(dir: string, spec: LocalClusterSpec, primary: LocalNodeSpec, me: string): string {
  const parts = [`host=${spec.host}`, `port=${primary.port}`, 'user=postgres', `application_name=${me}`];
  if (spec.auth === 'scram') parts.push(`passfile=${clusterPaths(dir).pgpass}`);
  return parts.join(' ');
}

export function syncStandbyNames(names: string[]): string {
  return names.length ? `ANY 1 (${names.map((n) => `"${n}"`).join(', ')})` : '';
}

/** Create a local cluster: a primary and `replicas` streaming replicas, each with its replication slot. */
export async function initCluster(options: InitOptions): Promise<LocalClusterSpec> {
  const say = options.onProgress ?? (() => {});
  const replicas = options.replicas ?? 2;
  if (!Number.isInteger(replicas) || replicas < 0 || replicas > 9)
    throw new ClusterError('BULWARK_E_CLUSTER_DIR', `--replicas must be 0..9, got ${options.replicas}`);
  const p = clusterPaths(options.dir);
  if (existsSync(p.spec))
    throw new ClusterError(
      'BULWARK_E_CLUSTER_DIR',
      `${p.dir} already holds a cluster (cluster.json): destroy it first`,
    );
  if (existsSync(p.dir) && readdirSync(p.dir).length > 0)
    throw new ClusterError('BULWARK_E_CLUSTER_DIR', `${p.dir} is not empty`);
  mkdirSync(p.dir, { recursive: true, mode: 0o755 });
  chownToPostgres(p.dir);
  await checkReachable(p.dir);

  const nodes: LocalNodeSpec[] = [];
  for (let i = 0; i <= replicas; i++) {
    let port: number;
    if (options.port) {
      port = options.port + i;
      if (!(await portFree(port)))
        throw new ClusterError('BULWARK_E_CLUSTER_DIR', `port ${port} (node${i + 1}) is already in use on 127.0.0.1`);
    } else {
      do port = await freePort({ below: 32768 });
      while (nodes.some((n) => n.port === port));
    }
    nodes.push({ name: `node${i + 1}`, port, priority: 100 - i });
  }
  const spec: LocalClusterSpec = {
    version: 1,
    name: options.name ?? 'bulwark',
    host: '127.0.0.1',
    sync: options.sync ?? false,
    auth: options.auth ?? 'trust',
    nodes,
    createdAt: new Date().toISOString(),
  };
  for (const d of [p.nodesDir, p.logsDir, p.monitorsDir]) {
    mkdirSync(d, { recursive: true, mode: 0o755 });
    chownToPostgres(d);
  }
  const asUser = POSTGRES_USER;
  const primary = nodes[0]!;
  const noSync = options.settings?.fsync === 'off' ? ['--no-sync'] : [];
  const initdbArgs = [
    '-D',
    p.dataDir(primary.name),
    '-U',
    'postgres',
    '--encoding',
    'UTF8',
    '--locale',
    'C',
    ...noSync,
  ];
  let pwfile: string | undefined;
  if (spec.auth === 'scram') {
    const password = randomBytes(24).toString('base64url');
    writeFileAtomic(p.pgpass, `${spec.host}:*:*:postgres:${password}\n`, 0o600);
    chownToPostgres(p.pgpass);
    pwfile = join(p.dir, '.pwfile');
    writeFileSync(pwfile, `${password}\n`, { mode: 0o600 });
    chownToPostgres(pwfile);
    initdbArgs.push('--auth-local=peer', '--auth-host=scram-sha-256', `--pwfile=${pwfile}`);
  } else {
    initdbArgs.push('-A', 'trust');
  }
  say(`initdb ${primary.name}`);
  try {
    await run(pgBin('initdb'), initdbArgs, { asUser });
  } finally {
    if (pwfile) rmSync(pwfile, { force: true });
  }
  const method = spec.auth === 'scram' ? 'scram-sha-256' : 'trust';
  const hba = [
    '# written by bulwark cluster init',
    `local all all ${spec.auth === 'scram' ? 'peer' : 'trust'}`,
    `host all all 127.0.0.1/32 ${method}`,
    `host replication all 127.0.0.1/32 ${method}`,
    '',
  ].join('\n');
  const primaryData = p.dataDir(primary.name);
  writeFileSync(join(primaryData, 'pg_hba.conf'), hba);
  chownToPostgres(join(primaryData, 'pg_hba.conf'));
  const settings = { ...BASE_SETTINGS };
  for (const [k, v] of Object.entries(options.settings ?? {})) {
    if (!/^[a-z_.]+$/.test(k)) throw new ClusterError('BULWARK_E_CLUSTER_DIR', `bad setting name ${k}`);
    settings[k] = quoteSetting(v);
  }
  const conf = Object.entries(settings)
    .map(([k, v]) => `${k} = ${v}`)
    .join('\n');
  const confPath = join(primaryData, 'postgresql.conf');
  writeFileSync(
    confPath,
    `${readFileSync(confPath, 'utf8')}\n# bulwark cluster settings (port and cluster_name are passed per node at start)\n${conf}\n`,
  );
  writeFileAtomic(p.spec, `${JSON.stringify(spec, null, 2)}\n`);
  writeState(p.dir, {
    primary: primary.name,
    syncSet: spec.sync ? nodes.slice(1).map((n) => n.name) : [],
    fenced: [],
    term: 1,
  });

  say(`start ${primary.name} (primary) on port ${primary.port}`);
  await startNode(p.dir, spec, primary);
  for (const replica of nodes.slice(1)) {
    say(`clone ${replica.name} from ${primary.name} (pg_basebackup, slot ${replica.name})`);
    const env = { ...process.env, PGPASSFILE: p.pgpass };
    await run(
      pgBin('pg_basebackup'),
      [
        '-D',
        p.dataDir(replica.name),
        '-h',
        spec.host,
        '-p',
        String(primary.port),
        '-U',
        'postgres',
        '-X',
        'stream',
        '-c',
        'fast',
        '-C',
        '-S',
        replica.name,
        '-R',
        ...noSync,
      ],
      { asUser, env },
    );
    setAutoConf(p.dataDir(replica.name), {
      primary_conninfo: primaryConninfo(p.dir, spec, primary, replica.name),
      primary_slot_name: replica.name,
    });
    say(`start ${replica.name} (replica) on port ${replica.port}`);
    await startNode(p.dir, spec, replica);
  }
  if (spec.sync && nodes.length > 1) {
    await sql(p.dir, spec, primary, [
      `ALTER SYSTEM SET synchronous_standby_names = '${syncStandbyNames(nodes.slice(1).map((n) => n.name))}'`,
      'SELECT pg_reload_conf()',
    ]);
  }
  return spec;
}

export interface ClusterState {
  /** The node the acting monitor (or init/switchover) made primary. */
  primary: string | null;
  /** Sync mode: replicas listed in the primary's synchronous_standby_names (ANY 1). */
  syncSet: string[];
  /** Old primaries that were fenced and must be rejoined as replicas before they run again. */
  fenced: string[];
  /** Increases at every promotion. */
  term: number;
  updatedAt?: string;
  updatedBy?: string;
}

export function readState(dir: string): ClusterState | null {
  const p = clusterPaths(dir).state;
  if (!existsSync(p)) return null;
  try {
    return JSON.parse(readFileSync(p, 'utf8')) as ClusterState;
  } catch {
    return null;
  }
}

export function writeState(dir: string, state: ClusterState): void {
  writeFileAtomic(clusterPaths(dir).state, `${JSON.stringify({ ...state, updatedAt: new Date().toISOString() })}\n`);
}

/**
 * Set keys in postgresql.auto.conf of a node (null removes the key). Used while the node is stopped
 * (after pg_rewind, before a rejoin); running nodes get ALTER SYSTEM instead.
 */
export function setAutoConf(dataDir: string, updates: Record<string, string | null>): void {
  const path = join(dataDir, 'postgresql.auto.conf');
  const lines = existsSync(path) ? readFileSync(path, 'utf8').split('\n') : [];
  const kept = lines.filter((l) => {
    const key = /^\s*([a-z_]+)\s*=/.exec(l)?.[1];
    return !(key && key in updates);
  });
  while (kept.length && kept[kept.length - 1] === '') kept.pop();
  for (const [k, v] of Object.entries(updates)) if (v !== null) kept.push(`${k} = '${v.replace(/'/g, "''")}'`);
  writeFileSync(path, `${kept.join('\n')}\n`);
  chownToPostgres(path);
}

export function markStandby(dataDir: string): void {
  const path = join(dataDir, 'standby.signal');
  writeFileSync(path, '');
  chownToPostgres(path);
}

/** Run statements on a node, one connection, in order. */
export async function sql(
  dir: string,
  spec: LocalClusterSpec,
  node: LocalNodeSpec,
  statements: string[],
  timeoutMs = 10_000,
): Promise<pg.QueryResult[]> {
  const client = new pg.Client({
    ...clientConfig(dir, spec, node),
    connectionTimeoutMillis: timeoutMs,
    query_timeout: timeoutMs,
  });
  client.on('error', () => {});
  await client.connect();
  try {
    const out: pg.QueryResult[] = [];
    for (const s of statements) out.push(await client.query(s));
    return out;
  } finally {
    await client.end().catch(() => {});
  }
}

/** PID of the node's postmaster if it is running (postmaster.pid names a live process). */
export function postmasterPid(dataDir: string): number | null {
  const pidFile = join(dataDir, 'postmaster.pid');
  if (!existsSync(pidFile)) return null;
  const pid = Number(readFileSync(pidFile, 'utf8').split('\n')[0]);
  // A killed postmaster can linger as a zombie when nothing reaps it: that is not running.
  return pid && alive(pid) ? pid : null;
}

/** The postmaster and every process it forked (backends, walsenders, ...). */
export function nodeProcesses(dataDir: string): number[] {
  const pm = postmasterPid(dataDir);
  if (!pm) return [];
  const pids = [pm];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pm) pids.push(Number(entry));
    } catch {
      // the process ended while we looked
    }
  }
  return pids;
}

/**
 * Remove the lock file of a postmaster that is dead. A killed postmaster can linger as a zombie that
 * nothing reaps (a container without an init), and PostgreSQL then refuses to start ("lock file
 * postmaster.pid already exists"). Its leftover children are killed first, so that the old and a new
 * postmaster never share the data folder. No-op when the postmaster is alive or no lock file exists.
 */
export async function clearDeadLock(dataDir: string): Promise<void> {
  const pidFile = join(dataDir, 'postmaster.pid');
  if (!existsSync(pidFile) || postmasterPid(dataDir)) return;
  const old = Number(readFileSync(pidFile, 'utf8').split('\n')[0]);
  const children = () =>
    readdirSync('/proc')
      .filter((e) => /^\d+$/.test(e))
      .filter((e) => {
        try {
          const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
          return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === old && alive(Number(e));
        } catch {
          return false;
        }
      })
      .map(Number);
  for (let i = 0; i < 200; i++) {
    const left = old ? children() : [];
    if (!left.length) break;
    for (const pid of left) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await sleep(10);
  }
  rmSync(pidFile, { force: true });
}

export function findNode(spec: LocalClusterSpec, name: string): LocalNodeSpec {
  const node = spec.nodes.find((n) => n.name === name);
  if (!node)
    throw new ClusterError(
      'BULWARK_E_CLUSTER_NODE',
      `no node named ${name} (nodes: ${spec.nodes.map((n) => n.name).join(', ')})`,
    );
  return node;
}

/**
 * Start a node. `wait: false` returns once the postmaster is launched (pg_ctl -W), for the monitor,
 * which must not block its loop on a long crash recovery: its next probes see the outcome.
 */
export async function startNode(
  dir: string,
  _spec: LocalClusterSpec,
  node: LocalNodeSpec,
  options: { wait?: boolean } = {},
): Promise<void> {
  const p = clusterPaths(dir);
  const data = p.dataDir(node.name);
  if (postmasterPid(data)) return;
  if (!NODE_NAME.test(node.name)) throw new ClusterError('BULWARK_E_CLUSTER_NODE', `bad node name ${node.name}`);
  // port and cluster_name go on the command line, not in postgresql.conf: pg_rewind copies the
  // configuration files from the new primary, which would give a rejoined node the wrong port.
  const r = await run(
    pgBin('pg_ctl'),
    [
      '-D',
      data,
      '-l',
      p.log(node.name),
      ...(options.wait === false ? ['-W'] : ['-w', '-t', '120']),
      '-o',
      `-p ${node.port} -c cluster_name=${node.name}`,
      'start',
    ],
    { asUser: POSTGRES_USER, check: false },
  );
  if (r.code !== 0) {
    const tail = existsSync(p.log(node.name))
      ? readFileSync(p.log(node.name), 'utf8').trim().split('\n').slice(-3).join(' | ')
      : '';
    throw new ClusterError(
      'BULWARK_E_CLUSTER_NODE',
      `${node.name} did not start on port ${node.port}: ${tail || r.stderr.trim()}`,
    );
  }
}

/** Fast shutdown (clients disconnected, shutdown checkpoint written and streamed to replicas). */
export async function stopNode(dir: string, node: LocalNodeSpec, mode: 'fast' | 'immediate' = 'fast'): Promise<void> {
  const data = clusterPaths(dir).dataDir(node.name);
  if (!postmasterPid(data)) return;
  const r = await run(pgBin('pg_ctl'), ['-D', data, '-m', mode, '-w', '-t', '60', 'stop'], {
    asUser: POSTGRES_USER,
    check: false,
  });
  if (r.code !== 0 && mode === 'fast') await killNode(dir, node);
}

/**
 * SIGKILL the postmaster and all its children. Works on a frozen (SIGSTOPped) node too, where a
 * pg_ctl stop would only queue a signal it handles after it wakes up — and after it may have taken a write.
 */
export async function killNode(dir: string, node: LocalNodeSpec): Promise<number[]> {
  const data = clusterPaths(dir).dataDir(node.name);
  const pids = nodeProcesses(data);
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  for (let i = 0; i < 200 && pids.some(alive); i++) await sleep(10);
  return pids;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export async function startCluster(dir: string): Promise<void> {
  const spec = readSpec(dir);
  const state = readState(dir);
  // Primary first so replicas find it; fenced nodes stay down until a monitor rejoins them.
  const order = [...spec.nodes].sort((a, b) => Number(b.name === state?.primary) - Number(a.name === state?.primary));
  for (const node of order) {
    if (state?.fenced.includes(node.name)) continue;
    await startNode(dir, spec, node);
  }
}

export async function stopCluster(dir: string): Promise<void> {
  const spec = readSpec(dir);
  const state = readState(dir);
  // Replicas first, primary last: the replicas receive everything the primary wrote before it stops.
  const order = [...spec.nodes].sort((a, b) => Number(a.name === state?.primary) - Number(b.name === state?.primary));
  for (const node of order) await stopNode(dir, node);
}

export async function destroyCluster(dir: string): Promise<void> {
  const p = clusterPaths(dir);
  if (!existsSync(p.spec)) {
    if (existsSync(p.dir))
      throw new ClusterError(
        'BULWARK_E_CLUSTER_DIR',
        `${p.dir} is not a Bulwark cluster (no cluster.json): not deleting it`,
      );
    return;
  }
  const spec = readSpec(dir);
  for (const node of spec.nodes) {
    await stopNode(dir, node, 'immediate').catch(() => {});
    await killNode(dir, node);
  }
  rmSync(p.dir, { recursive: true, force: true });
}

export function dirExists(dir: string): boolean {
  try {
    return statSync(dir).isDirectory();
  } catch {
    return false;
  }
}

/**
 * Simulate a crash of one node (game days, tests): SIGKILL its postmaster and every process it forked,
 * as a power loss would leave them — no shutdown checkpoint, no goodbye to clients or replicas.
 * Returns the PIDs that were killed (empty when the node was not running).
 */
export function crashNode(dir: string, name: string): number[] {
  const spec = readSpec(dir);
  findNode(spec, name);
  const pids = nodeProcesses(clusterPaths(dir).dataDir(name));
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  return pids;
}
