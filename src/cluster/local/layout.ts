import { chownSync, existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { isRoot } from '../../lib/child.js';
import { postgresIds } from '../../lib/postgres.js';
import { ClusterError } from '../errors.js';

/**
 * On-disk layout of a local cluster folder (`bulwark cluster init --dir D`):
 *   D/cluster.json        what init created (nodes, ports, sync, auth); never changed by the monitor
 *   D/state.json          the current primary and sync set, written by the acting monitor / switchover
 *   D/history.jsonl       one line per failover or switchover
 *   D/pgpass              (--auth scram only) the superuser password, 0600, owned by postgres
 *   D/nodes/<name>/       PGDATA of each node
 *   D/logs/<name>.log     server log of each node
 *   D/monitors/<name>.json  pid and HTTP address of each running monitor
 */
export interface LocalNodeSpec {
  name: string;
  port: number;
  /** Higher wins a tie on received LSN at failover; 0 = never promote this node. */
  priority: number;
}

export interface LocalClusterSpec {
  version: 1;
  name: string;
  host: string;
  sync: boolean;
  auth: 'trust' | 'scram';
  nodes: LocalNodeSpec[];
  createdAt: string;
}

export interface ClusterPaths {
  dir: string;
  spec: string;
  state: string;
  history: string;
  pgpass: string;
  nodesDir: string;
  logsDir: string;
  monitorsDir: string;
  dataDir(node: string): string;
  log(node: string): string;
}

export function clusterPaths(dir: string): ClusterPaths {
  const d = resolve(dir);
  return {
    dir: d,
    spec: join(d, 'cluster.json'),
    state: join(d, 'state.json'),
    history: join(d, 'history.jsonl'),
    pgpass: join(d, 'pgpass'),
    nodesDir: join(d, 'nodes'),
    logsDir: join(d, 'logs'),
    monitorsDir: join(d, 'monitors'),
    dataDir: (node) => join(d, 'nodes', node),
    log: (node) => join(d, 'logs', `${node}.log`),
  };
}

export function readSpec(dir: string): LocalClusterSpec {
  const p = clusterPaths(dir);
  if (!existsSync(p.spec))
    throw new ClusterError(
      'BULWARK_E_CLUSTER_DIR',
      `${p.dir} is not a Bulwark cluster (no cluster.json): run bulwark cluster init --dir ${dir}`,
    );
  try {
    return JSON.parse(readFileSync(p.spec, 'utf8')) as LocalClusterSpec;
  } catch (err) {
    throw new ClusterError('BULWARK_E_CLUSTER_DIR', `${p.spec}: cannot read (${(err as Error).message})`);
  }
}

/** Write a file atomically (temp + rename) so a crash never leaves half a JSON document. */
export function writeFileAtomic(path: string, content: string, mode = 0o644): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, content, { mode });
  renameSync(tmp, path);
}

/** When we are root, hand a path to the postgres user (PostgreSQL refuses root-owned data). */
export function chownToPostgres(path: string): void {
  if (!isRoot()) return;
  const { uid, gid } = postgresIds();
  chownSync(path, uid, gid);
}

/** The superuser password of a `--auth scram` cluster (from D/pgpass), or undefined for trust. */
export function readPassword(dir: string): string | undefined {
  const p = clusterPaths(dir).pgpass;
  if (!existsSync(p)) return undefined;
  const line = readFileSync(p, 'utf8').split('\n')[0] ?? '';
  // host:port:db:user:password, with \: and \\ escapes (we never write them: the password is base64url)
  return line.split(':').slice(4).join(':') || undefined;
}
