import { isIP } from 'node:net';
import type { Command } from 'commander';
import { UsageError } from '../../lib/errors.js';

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

function etcdHosts(value: string | undefined): string[] {
  if (!value) throw new UsageError('--etcd is required: comma-separated etcd client URLs (http://10.0.0.1:2379,...)');
  const hosts = value
    .split(',')
    .map((h) => h.trim())
    .filter(Boolean);
  for (const h of hosts) {
    try {
      const u = new URL(h);
      if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error();
    } catch {
      throw new UsageError(`--etcd: not an http(s) URL: ${h}`);
    }
  }
  return hosts;
}

const SCOPE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
function scopeOf(value: string): string {
  if (!SCOPE.test(value)) throw new UsageError(`--scope must be letters, digits, _ . - (got "${value}")`);
  return value;
}

function hostPort(value: string, flag: string): { host: string; port: number } {
  const m = /^(.+):(\d+)$/.exec(value);
  const port = Number(m?.[2]);
  if (!m || !(port >= 0 && port < 65536)) throw new UsageError(`${flag} must be host:port, got "${value}"`);
  return { host: m[1]!, port };
}

function cidr(value: string): string {
  const [addr, bits] = value.split('/');
  const v = isIP(addr ?? '');
  const b = Number(bits);
  if (!v || !Number.isInteger(b) || b < 0 || b > (v === 4 ? 32 : 128))
    throw new UsageError(`--allow must be a network such as 10.0.0.0/24, got "${value}"`);
  return value;
}

/**
 * `bulwark cluster switchover --etcd ... --to NAME [--at TIME]` for node agents: write the request; the
 * leader's agent stops its primary cleanly at that time and the target takes the leader key.
 * Without --at, waits until the target is the primary.
 */
export async function agentSwitchover(opts: {
  etcd?: string;
  scope?: string;
  to: string;
  at?: string;
}): Promise<string> {
  const { AgentStore } = await import('../../cluster/agent/store.js');
  const { ClusterError } = await import('../../cluster/errors.js');
  let at = Date.now();
  if (opts.at !== undefined) {
    at = Date.parse(opts.at);
    if (Number.isNaN(at))
      throw new UsageError(`--at must be a date and time such as 2026-12-03T09:30:00Z, got "${opts.at}"`);
    if (at < Date.now()) throw new UsageError(`--at ${opts.at} is in the past`);
  }
  const scope = scopeOf(opts.scope ?? 'main');
  const store = new AgentStore(etcdHosts(opts.etcd), scope, 10);
  const view = await store.read();
  const target = view.members.find((m) => m.name === opts.to);
  if (target?.role !== 'replica')
    throw new ClusterError(
      'BULWARK_E_CLUSTER_SWITCHOVER',
      `${opts.to} is not a running replica of ${scope} (members: ${view.members.map((m) => `${m.name} ${m.role}`).join(', ') || 'none'})`,
    );
  if (!view.leader)
    throw new ClusterError('BULWARK_E_CLUSTER_SWITCHOVER', `${scope} has no leader to switch over from`);
  await store.requestSwitchover({ to: opts.to, at });
  if (opts.at !== undefined)
    return `switchover ${view.leader.name} -> ${opts.to} scheduled at ${new Date(at).toISOString()}`;
  const started = Date.now();
  for (;;) {
    await new Promise((r) => setTimeout(r, 200));
    const v = await store.read().catch(() => null);
    const m = v?.members.find((x) => x.name === opts.to);
    if (v?.leader?.name === opts.to && m?.role === 'primary' && !v.switchover)
      return `switchover ${view.leader.name} -> ${opts.to} done in ${Date.now() - started} ms`;
    if (v && !v.switchover && v.leader?.name !== opts.to)
      throw new ClusterError(
        'BULWARK_E_CLUSTER_SWITCHOVER',
        `switchover to ${opts.to} was cancelled (see the agents' logs)`,
      );
    if (Date.now() - started > 60_000)
      throw new ClusterError('BULWARK_E_CLUSTER_SWITCHOVER', `switchover to ${opts.to} not done within 60 s`);
  }
}

/** `bulwark cluster agent|pause|resume|members|tag|set`: the per-host node agent and its etcd cluster. */
export function registerAgentCommands(cluster: Command): void {
  cluster
    .command('agent')
    .description(
      'run on every database host: owns the local PostgreSQL, elects a primary through etcd (runs until stopped)',
    )
    .requiredOption('--name <name>', 'this member name (unique in the cluster, e.g. the host name)')
    .requiredOption(
      '--data-dir <dir>',
      'PGDATA of this host (created by bootstrap or cloned from the leader when empty)',
    )
    .requiredOption('--host <address>', 'address PostgreSQL listens on and the other hosts reach it at')
    .option('--port <port>', 'PostgreSQL port', '5432')
    .option('--etcd <urls>', 'etcd client URLs, comma-separated (every member of the etcd cluster)')
    .option('--scope <name>', 'cluster name: keys live under /bulwark-agents/<scope>/', 'main')
    .option('--api <host:port>', 'REST endpoint for health checks (/primary, /replica, /read-only, /health)')
    .option('--ttl <seconds>', 'lease TTL: a primary that cannot renew it within this is fenced', '10')
    .option('--loop-wait <duration>', 'time between two loops', '1s')
    .option(
      '--allow <cidr>',
      'network allowed to connect and replicate (pg_hba.conf at bootstrap; repeatable)',
      collect,
    )
    .option('--password-file <file>', 'pgpass-format file with the postgres password (scram); without it: trust')
    .option('--set <key=value>', 'postgresql.conf setting written at bootstrap (repeatable)', collect)
    .option('--nofailover', 'never promote this node')
    .option('--priority <n>', 'higher wins an election between replicas at the same WAL position', '100')
    .option('--max-lag-on-failover <size>', 'never promote a replica further behind than this', '16MB')
    .option(
      '--sync',
      'synchronous mode: the leader names its healthy replicas in synchronous_standby_names, only those may be promoted',
    )
    .option('--log-format <format>', 'json (one JSON object per line) or text', 'json')
    .action(async (opts) => {
      const { parseDuration, parseSize } = await import('../../config/index.js');
      if (!/^[a-z][a-z0-9_]{0,30}$/.test(opts.name))
        throw new UsageError(
          `--name must be lowercase letters, digits and _ (starting with a letter), got "${opts.name}"`,
        );
      if (opts.logFormat !== 'json' && opts.logFormat !== 'text')
        throw new UsageError(`--log-format must be json or text, got "${opts.logFormat}"`);
      const port = Number(opts.port);
      if (!Number.isInteger(port) || port < 1 || port > 65535)
        throw new UsageError(`--port must be 1..65535, got "${opts.port}"`);
      const ttl = Number(opts.ttl);
      if (!Number.isInteger(ttl) || ttl < 3)
        throw new UsageError(`--ttl must be whole seconds, at least 3, got "${opts.ttl}"`);
      const priority = Number(opts.priority);
      if (!Number.isInteger(priority) || priority < 0)
        throw new UsageError(`--priority must be a whole number, got "${opts.priority}"`);
      const settings: Record<string, string> = {};
      for (const p of opts.set ?? []) {
        const i = p.indexOf('=');
        if (i <= 0) throw new UsageError(`--set expects key=value, got "${p}"`);
        settings[p.slice(0, i).trim()] = p.slice(i + 1).trim();
      }
      const { existsSync } = await import('node:fs');
      if (opts.passwordFile && !existsSync(opts.passwordFile))
        throw new UsageError(`--password-file: ${opts.passwordFile} does not exist`);
      const { resolve } = await import('node:path');
      const { ClusterAgent } = await import('../../cluster/agent/agent.js');
      const { createTextLogger } = await import('../../cluster/monitor/text-log.js');
      const agent = new ClusterAgent({
        pg: {
          name: opts.name,
          dataDir: resolve(opts.dataDir),
          host: opts.host,
          port,
          allow: (opts.allow ?? []).map(cidr),
          passfile: opts.passwordFile ? resolve(opts.passwordFile) : undefined,
          settings,
        },
        etcd: etcdHosts(opts.etcd),
        scope: scopeOf(opts.scope),
        ttlSeconds: ttl,
        loopMs: parseDuration(opts.loopWait, '--loop-wait'),
        api: opts.api ? hostPort(opts.api, '--api') : undefined,
        nofailover: !!opts.nofailover,
        priority,
        maxLagOnFailover: parseSize(opts.maxLagOnFailover, '--max-lag-on-failover'),
        sync: !!opts.sync,
        logger: opts.logFormat === 'text' ? createTextLogger() : undefined,
      });
      await agent.start();
      process.stdout.write(`agent ${agent.name}${agent.apiUrl ? ` ${agent.apiUrl}` : ''}\n`);
      await new Promise<void>((resolve) => {
        process.once('SIGINT', () => resolve());
        process.once('SIGTERM', () => resolve());
      });
      await agent.stop();
    });

  for (const [name, paused] of [
    ['pause', true],
    ['resume', false],
  ] as const) {
    cluster
      .command(name)
      .description(
        paused
          ? 'node agents: no automatic action (no failover, no fencing, no restarts) until resume'
          : 'node agents: automatic failover again',
      )
      .option('--etcd <urls>', 'etcd client URLs, comma-separated')
      .option('--scope <name>', 'cluster name', 'main')
      .action(async (opts) => {
        const { AgentStore } = await import('../../cluster/agent/store.js');
        const store = new AgentStore(etcdHosts(opts.etcd), scopeOf(opts.scope), 10);
        try {
          await store.setConfig({ paused });
        } finally {
          await store.close();
        }
        process.stdout.write(`cluster ${opts.scope} ${paused ? 'paused' : 'resumed'}\n`);
      });
  }

  cluster
    .command('tag')
    .description("node agents: set a member's tags in etcd (they override its --nofailover/--priority flags)")
    .requiredOption('--name <member>', 'member to tag')
    .option('--etcd <urls>', 'etcd client URLs, comma-separated')
    .option('--scope <name>', 'cluster name', 'main')
    .option('--nofailover', 'never promote this member')
    .option('--failover', 'this member may be promoted again')
    .option('--priority <n>', 'higher wins an election between replicas at the same WAL position')
    .action(async (opts) => {
      if (opts.nofailover && opts.failover) throw new UsageError('--nofailover and --failover exclude each other');
      const update: { nofailover?: boolean; priority?: number } = {};
      if (opts.nofailover) update.nofailover = true;
      if (opts.failover) update.nofailover = false;
      if (opts.priority !== undefined) {
        const n = Number(opts.priority);
        if (!Number.isInteger(n) || n < 0)
          throw new UsageError(`--priority must be a whole number, got "${opts.priority}"`);
        update.priority = n;
      }
      if (!Object.keys(update).length)
        throw new UsageError('nothing to set: give --nofailover, --failover or --priority');
      const { AgentStore } = await import('../../cluster/agent/store.js');
      const store = new AgentStore(etcdHosts(opts.etcd), scopeOf(opts.scope), 10);
      const tags = await store.setTags(opts.name, update);
      process.stdout.write(`${opts.name} ${JSON.stringify(tags)}\n`);
    });

  cluster
    .command('set')
    .description('node agents: PostgreSQL settings every agent applies to its node (ALTER SYSTEM + reload)')
    .option('--etcd <urls>', 'etcd client URLs, comma-separated')
    .option('--scope <name>', 'cluster name', 'main')
    .option('--set <key=value>', 'setting to apply on every node (repeatable)', collect)
    .option('--reset <key>', 'remove a setting set before (repeatable)', collect)
    .option('--sync <on|off>', 'synchronous mode for every agent of the cluster (as if each ran with --sync)')
    .action(async (opts) => {
      const { AgentStore } = await import('../../cluster/agent/store.js');
      if (opts.sync !== undefined && opts.sync !== 'on' && opts.sync !== 'off')
        throw new UsageError(`--sync must be on or off, got "${opts.sync}"`);
      const changes: Record<string, string> = {};
      for (const p of opts.set ?? []) {
        const i = p.indexOf('=');
        const key = i > 0 ? p.slice(0, i).trim() : '';
        if (!/^[a-z_][a-z0-9_.]*$/.test(key))
          throw new UsageError(`--set expects key=value with a setting name, got "${p}"`);
        changes[key] = p.slice(i + 1).trim();
      }
      if (!Object.keys(changes).length && !opts.reset?.length && opts.sync === undefined)
        throw new UsageError('nothing to change: give --set key=value, --reset key or --sync on|off');
      const store = new AgentStore(etcdHosts(opts.etcd), scopeOf(opts.scope), 10);
      if (opts.sync !== undefined) {
        await store.setConfig({ synchronous: opts.sync === 'on' });
        process.stdout.write(`synchronous mode ${opts.sync}\n`);
        if (!Object.keys(changes).length && !opts.reset?.length) return;
      }
      const current = (await store.read()).config.settings ?? {};
      const next = { ...current, ...changes };
      for (const k of opts.reset ?? []) delete next[k];
      await store.setConfig({ settings: next });
      process.stdout.write(`${JSON.stringify(next)}\n`);
    });

  cluster
    .command('members')
    .description('node agents: members, roles, WAL positions and the leader, as published in etcd')
    .option('--etcd <urls>', 'etcd client URLs, comma-separated')
    .option('--scope <name>', 'cluster name', 'main')
    .option('--json', 'print JSON')
    .action(async (opts) => {
      const { AgentStore } = await import('../../cluster/agent/store.js');
      const store = new AgentStore(etcdHosts(opts.etcd), scopeOf(opts.scope), 10);
      try {
        const v = await store.read();
        const members = v.members
          .sort((a, b) => a.name.localeCompare(b.name))
          .map((m) => ({ ...m, leader: v.leader?.name === m.name }));
        if (opts.json) {
          process.stdout.write(
            `${JSON.stringify({ leader: v.leader?.name ?? null, paused: !!v.config.paused, synchronous: !!v.config.synchronous, sync: v.sync, members }, null, 2)}\n`,
          );
          return;
        }
        const rows = members.map((m) =>
          [
            m.name,
            `${m.host}:${m.port}`,
            m.leader ? `${m.role} (leader)` : m.role,
            m.timeline ?? '-',
            m.lsn ?? '-',
            m.nofailover ? 'nofailover' : '',
          ].join('\t'),
        );
        process.stdout.write(
          `${['NAME\tADDRESS\tROLE\tTL\tLSN\tTAGS', ...rows].join('\n')}\n${v.config.paused ? 'paused\n' : ''}${v.sync ? `synchronous set: [${v.sync.members.join(', ')}] (leader ${v.sync.leader})\n` : ''}`,
        );
      } finally {
        await store.close();
      }
    });
}
