import { type ChildProcess, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { nodeProcesses } from '../../src/cluster/local/cluster.js';
import { chownToPostgres } from '../../src/cluster/local/layout.js';
import { probeNode } from '../../src/cluster/probe.js';
import { CLI } from '../harness/cli.js';
import { createTestNet, type NetHost, type TestNet } from '../harness/netns.js';
import { waitFor } from './helpers.js';

/**
 * Three "database hosts" for the node-agent tests: network namespaces, each running one etcd member,
 * one PostgreSQL 15 owned by one `bulwark cluster agent`, and a watcher that commits a row to its
 * local PostgreSQL every 50 ms and records each acknowledged commit (to prove there were never two
 * writable nodes at once).
 */
export const PG_PORT = 5432;
export const API_PORT = 8008;
export const TTL_SECONDS = 5;

export interface AgentHosts {
  net: TestNet;
  hosts: NetHost[];
  etcdUrls: string[];
  url(h: NetHost): string;
  /** The postgres user's password (scram): agents read it from a pgpass file. */
  password: string;
  /** SIGKILL the host's agent process alone (not PostgreSQL, not etcd). Returns its PID. */
  killAgent(h: NetHost): number;
  /** SIGTERM the host's agent and wait for it to exit. */
  stopAgent(h: NetHost): Promise<void>;
  dataDir(h: NetHost): string;
  startEtcd(h: NetHost): void;
  startAgent(h: NetHost): void;
  startWatcher(h: NetHost): void;
  /** SIGSTOP / SIGCONT one host's etcd member. */
  freezeEtcd(h: NetHost): void;
  thawEtcd(h: NetHost): void;
  /** SIGKILL every process of the host's PostgreSQL. */
  killPostgres(h: NetHost): number[];
  /** Hosts whose PostgreSQL answers as a primary, probed from the test process. */
  writable(): Promise<NetHost[]>;
  /** Wait for one primary and every other host a replica streaming from it. */
  waitHealthy(timeoutMs?: number): Promise<NetHost>;
  /** Writable periods per host from the watchers' commit logs, and any overlap between two hosts. */
  overlaps(): Array<{ a: string; b: string; aPeriod: [number, number]; bPeriod: [number, number] }>;
  logs(): string;
  agentLog(h: NetHost): string;
  destroy(): void;
}

const WATCHER = `
const { Client } = require('pg');
const fs = require('fs');
const [host, port, node, out] = process.argv.slice(2);
let client = null;
(async () => {
  for (;;) {
    const sent = Date.now();
    try {
      if (!client) {
        client = new Client({ host, port: Number(port), user: 'postgres', database: 'postgres',
          connectionTimeoutMillis: 1000, query_timeout: 1000 });
        client.on('error', () => {});
        await client.connect();
      }
      await client.query('INSERT INTO bulwark_watch(node, sent_ms) VALUES ($1, $2)', [node, sent]);
      fs.appendFileSync(out, sent + ' ' + Date.now() + '\\n');
    } catch (err) {
      // read-only (a replica) keeps the connection; anything else reconnects
      if (err && err.code !== '25006' && err.code !== '42P01') { client && client.end().catch(() => {}); client = null; }
    }
    await new Promise((r) => setTimeout(r, 50));
  }
})();
`;

export function createAgentHosts(): AgentHosts {
  const net = createTestNet(3);
  const hosts = net.hosts;
  const etcdUrls = hosts.map((h) => `http://${h.addr}:2379`);
  const procs = new Map<string, ChildProcess>();
  const root = join(net.dir, 'hosts');
  mkdirSync(root, { mode: 0o755 });
  chownToPostgres(net.dir);
  chownToPostgres(root);
  const password = randomBytes(12).toString('hex');
  const passfile = join(net.dir, 'pgpass');
  writeFileSync(passfile, `*:*:*:postgres:${password}\n`, { mode: 0o600 });
  chownToPostgres(passfile);
  const connection = { user: 'postgres', database: 'postgres', password };
  const watcherFile = join(net.dir, 'watcher.cjs');
  writeFileSync(watcherFile, WATCHER);
  const dataDir = (h: NetHost) => join(root, h.name, 'data');
  const track = (key: string, child: ChildProcess) => {
    procs.set(key, child);
  };

  const api: AgentHosts = {
    net,
    hosts,
    etcdUrls,
    url: (h) => `postgresql://postgres:${password}@${h.addr}:${PG_PORT}/postgres`,
    password,
    killAgent(h) {
      // the node process running `cluster agent` (under runuser for n3), found by its command line
      const out = execFileSync('ip', ['netns', 'pids', h.ns], { encoding: 'utf8' });
      for (const pid of out.split('\n').filter(Boolean).map(Number)) {
        let cmd = '';
        try {
          cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
        } catch {
          continue;
        }
        const args = cmd.split('\0');
        if (args[0] === process.execPath && args.includes('agent') && args.includes('cluster')) {
          process.kill(pid, 'SIGKILL');
          return pid;
        }
      }
      throw new Error(`no agent process in ${h.ns}`);
    },
    async stopAgent(h) {
      const child = procs.get(`agent-${h.name}`);
      if (!child || child.exitCode !== null || child.signalCode !== null) return;
      await new Promise<void>((r) => {
        child.once('exit', () => r());
        child.kill('SIGTERM');
      });
    },
    dataDir,
    startEtcd(h) {
      const peers = hosts.map((x) => `${x.name}=http://${x.addr}:2380`).join(',');
      track(
        `etcd-${h.name}`,
        net.spawnIn(
          h,
          'etcd',
          [
            '--name',
            h.name,
            '--data-dir',
            join(net.dir, `etcd-${h.name}`),
            '--listen-client-urls',
            `http://${h.addr}:2379`,
            '--advertise-client-urls',
            `http://${h.addr}:2379`,
            '--listen-peer-urls',
            `http://${h.addr}:2380`,
            '--initial-advertise-peer-urls',
            `http://${h.addr}:2380`,
            '--initial-cluster',
            peers,
            '--initial-cluster-state',
            'new',
            '--initial-cluster-token',
            `bw-${net.id}`,
            '--heartbeat-interval',
            '100',
            '--election-timeout',
            '1000',
            '--log-level',
            'error',
          ],
          join(net.dir, `etcd-${h.name}.log`),
        ),
      );
    },
    startAgent(h) {
      mkdirSync(join(root, h.name), { recursive: true, mode: 0o755 });
      chownToPostgres(join(root, h.name));
      // n3's agent runs as the postgres user (as the README's systemd unit does), the others as root
      const asPostgres = h.name === 'n3';
      track(
        `agent-${h.name}`,
        net.spawnIn(
          h,
          asPostgres ? 'runuser' : process.execPath,
          [
            ...(asPostgres ? ['-u', 'postgres', '--', process.execPath] : []),
            CLI,
            'cluster',
            'agent',
            '--name',
            h.name,
            '--data-dir',
            dataDir(h),
            '--host',
            h.addr,
            '--port',
            String(PG_PORT),
            '--etcd',
            etcdUrls.join(','),
            '--scope',
            `t${net.id}`,
            '--api',
            `${h.addr}:${API_PORT}`,
            '--ttl',
            String(TTL_SECONDS),
            '--loop-wait',
            '500ms',
            '--allow',
            net.subnet,
            '--password-file',
            passfile,
            '--set',
            'fsync=off',
            '--set',
            'shared_buffers=32MB',
            '--set',
            'max_connections=40',
            '--log-format',
            'text',
          ],
          join(net.dir, `agent-${h.name}.log`),
        ),
      );
    },
    startWatcher(h) {
      track(
        `watch-${h.name}`,
        net.spawnIn(
          h,
          process.execPath,
          [watcherFile, h.addr, String(PG_PORT), h.name, join(net.dir, `watch-${h.name}.log`)],
          join(net.dir, `watch-${h.name}.err`),
          { NODE_PATH: resolve(import.meta.dirname, '..', '..', 'node_modules'), PGPASSWORD: password },
        ),
      );
    },
    freezeEtcd(h) {
      procs.get(`etcd-${h.name}`)?.kill('SIGSTOP');
      // `ip netns exec` execs etcd in place, so the child PID is etcd itself
    },
    thawEtcd(h) {
      procs.get(`etcd-${h.name}`)?.kill('SIGCONT');
    },
    killPostgres(h) {
      const pids = nodeProcesses(dataDir(h));
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // a backend that exited meanwhile
        }
      }
      return pids;
    },
    async writable() {
      const obs = await Promise.all(
        hosts.map((h) =>
          probeNode({ name: h.name, host: h.addr, port: PG_PORT, connection }, 1000).then((o) => ({ h, o })),
        ),
      );
      return obs.filter(({ o }) => o.reachable && o.inRecovery === false).map(({ h }) => h);
    },
    async waitHealthy(timeoutMs = 90_000) {
      return waitFor(
        'one primary and two streaming replicas',
        async () => {
          const obs = await Promise.all(
            hosts.map((h) => probeNode({ name: h.name, host: h.addr, port: PG_PORT, connection }, 1000)),
          );
          const p = obs.filter((o) => o.reachable && !o.inRecovery);
          if (p.length !== 1) return null;
          const streaming = obs.filter((o) => o.reachable && o.inRecovery && o.walReceiver?.status === 'streaming');
          return streaming.length === hosts.length - 1 ? hosts.find((h) => h.name === p[0]!.name)! : null;
        },
        timeoutMs,
      );
    },
    overlaps() {
      const periods: Array<{ node: string; from: number; to: number }> = [];
      for (const h of hosts) {
        const file = join(net.dir, `watch-${h.name}.log`);
        if (!existsSync(file)) continue;
        const commits = readFileSync(file, 'utf8')
          .trim()
          .split('\n')
          .filter(Boolean)
          .map((l) => l.split(' ').map(Number) as [number, number]);
        let cur: { node: string; from: number; to: number } | null = null;
        for (const [sent, ack] of commits) {
          // a gap of more than a second between two commits ends a writable period
          if (cur && sent - cur.to <= 1000) cur.to = ack;
          else {
            if (cur) periods.push(cur);
            cur = { node: h.name, from: sent, to: ack };
          }
        }
        if (cur) periods.push(cur);
      }
      const out: ReturnType<AgentHosts['overlaps']> = [];
      for (const x of periods)
        for (const y of periods)
          if (x.node < y.node && x.from < y.to && y.from < x.to)
            out.push({ a: x.node, b: y.node, aPeriod: [x.from, x.to], bPeriod: [y.from, y.to] });
      return out;
    },
    agentLog(h) {
      const f = join(net.dir, `agent-${h.name}.log`);
      return existsSync(f) ? readFileSync(f, 'utf8') : '';
    },
    logs() {
      return hosts
        .map((h) => {
          const f = join(net.dir, `agent-${h.name}.log`);
          const tail = existsSync(f) ? readFileSync(f, 'utf8').trim().split('\n').slice(-25).join('\n') : '';
          return `--- agent ${h.name}\n${tail}`;
        })
        .join('\n');
    },
    destroy() {
      for (const child of procs.values()) {
        child.kill('SIGCONT');
        child.kill('SIGKILL');
      }
      net.destroy();
    },
  };
  return api;
}
