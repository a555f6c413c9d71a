import type { Command } from 'commander';
import { UsageError } from '../../lib/errors.js';
import { registerAgentCommands } from './cluster-agent.js';

function parseIntOption(flag: string) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) throw new UsageError(`${flag} must be a whole number, got "${v}"`);
    return n;
  };
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

function parseSettings(pairs: string[] = []): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of pairs) {
    const i = p.indexOf('=');
    if (i <= 0) throw new UsageError(`--set expects key=value, got "${p}"`);
    out[p.slice(0, i).trim()] = p.slice(i + 1).trim();
  }
  return out;
}

async function clusterSection(file: string | undefined) {
  const { loadConfig } = await import('../../config/index.js');
  return (await loadConfig(file))?.config.cluster;
}

/** --dir, else cluster.dir of bulwark.config.ts. */
async function resolveDir(opts: { dir?: string; config?: string }): Promise<string> {
  if (opts.dir) return opts.dir;
  const dir = (await clusterSection(opts.config))?.dir;
  if (!dir) throw new UsageError('--dir is required (or set cluster.dir in bulwark.config.ts)');
  return dir;
}

/** `bulwark cluster ...`: local clusters, status, the failover monitor, switchover, history. */
export function registerClusterCommands(program: Command): void {
  const cluster = program
    .command('cluster')
    .description('replication and failover: local clusters, status, monitor, switchover, history');

  cluster
    .command('init')
    .description('create a local primary and streaming replicas on 127.0.0.1 and start them')
    .requiredOption('--dir <dir>', 'folder that will hold the cluster')
    .option('--replicas <n>', 'number of streaming replicas', parseIntOption('--replicas'), 2)
    .option('--port <port>', 'port of the first node; the others take the next ones', parseIntOption('--port'))
    .option('--sync', 'synchronous replication (ANY 1 of the replicas must confirm each commit)')
    .option('--auth <method>', 'trust (default: postgres connects from 127.0.0.1 without a password) or scram', 'trust')
    .option('--set <key=value>', 'extra postgresql.conf setting for every node (repeatable)', collect)
    .action(async (opts) => {
      if (opts.auth !== 'trust' && opts.auth !== 'scram')
        throw new UsageError(`--auth must be trust or scram, got "${opts.auth}"`);
      const { initCluster } = await import('../../cluster/index.js');
      const spec = await initCluster({
        dir: opts.dir,
        replicas: opts.replicas,
        port: opts.port,
        sync: !!opts.sync,
        auth: opts.auth,
        settings: parseSettings(opts.set),
        onProgress: (line) => process.stderr.write(`${line}\n`),
      });
      for (const n of spec.nodes)
        process.stdout.write(
          `${n.name} ${n.name === 'node1' ? 'primary' : 'replica'} postgresql://postgres@${spec.host}:${n.port}/postgres\n`,
        );
    });

  for (const [name, description] of [
    ['start', 'start every node (primary first; fenced nodes stay down for the monitor to rejoin)'],
    ['stop', 'stop every node (replicas first)'],
    ['destroy', 'stop every node and delete the cluster folder'],
  ] as const) {
    cluster
      .command(name)
      .description(description)
      .option('--dir <dir>', 'cluster folder (default: cluster.dir of bulwark.config.ts)')
      .option('--config <file>', 'bulwark.config.ts to read')
      .action(async (opts) => {
        const api = await import('../../cluster/index.js');
        const dir = await resolveDir(opts);
        if (name === 'start') await api.startCluster(dir);
        else if (name === 'stop') await api.stopCluster(dir);
        else await api.destroyCluster(dir);
      });
  }

  cluster
    .command('status')
    .description("each node's role, timeline, LSNs, lag and sync state")
    .option('--dir <dir>', 'cluster folder (default: cluster.dir of bulwark.config.ts)')
    .option('--config <file>', 'bulwark.config.ts to read')
    .option('--json', 'print { "nodes": [...] } as JSON')
    .action(async (opts) => {
      const { clusterStatus, formatStatusTable } = await import('../../cluster/index.js');
      const status = await clusterStatus(await resolveDir(opts));
      process.stdout.write(opts.json ? `${JSON.stringify(status, null, 2)}\n` : formatStatusTable(status.nodes));
    });

  cluster
    .command('monitor')
    .description('watch the cluster and fail over when the primary is lost (runs until stopped)')
    .option('--dir <dir>', 'cluster folder (default: cluster.dir of bulwark.config.ts)')
    .option('--config <file>', 'bulwark.config.ts to read (cluster.monitor gives defaults; flags win)')
    .option('--name <name>', 'monitor name (default host-pid)')
    .option('--interval <duration>', 'probe interval', '1s')
    .option('--probe-timeout <duration>', 'a probe slower than this counts as failed', '1s')
    .option(
      '--failures <n>',
      'consecutive failed probes before the primary is declared lost',
      parseIntOption('--failures'),
      3,
    )
    .option('--max-lag-on-failover <size>', 'async mode: never promote a replica further behind than this', '16MB')
    .option('--http-host <host>', 'status endpoint address', '127.0.0.1')
    .option('--http-port <port>', 'status endpoint port (0 = any free port)', parseIntOption('--http-port'), 0)
    .option(
      '--webhook <url>',
      'POST a JSON alert here on every failover, switchover, fencing, rejoin (repeatable)',
      collect,
    )
    .option('--etcd <urls>', 'coordinate several monitors through etcd (comma-separated client URLs)')
    .option('--scope <name>', 'etcd key prefix /bulwark/<scope>/ (default: the cluster name)')
    .option('--lease-ttl <seconds>', 'etcd leader lease TTL', parseIntOption('--lease-ttl'), 5)
    .option('--no-rejoin', 'leave fenced old primaries down instead of rewinding them as replicas')
    .option(
      '--slot <name>',
      'permanent physical replication slot kept on every node across failovers and switchovers (repeatable)',
      collect,
    )
    .option('--log-format <format>', 'json (one JSON object per line) or text', 'json')
    .action(async (opts, cmd: Command) => {
      if (opts.logFormat !== 'json' && opts.logFormat !== 'text')
        throw new UsageError(`--log-format must be json or text, got "${opts.logFormat}"`);
      const { parseDuration, parseSize } = await import('../../config/index.js');
      const { ClusterMonitor, EtcdDcs, readSpec } = await import('../../cluster/index.js');
      const section = await clusterSection(opts.config);
      const fromFile = section?.monitor ?? {};
      const flag = (key: string) => cmd.getOptionValueSource(key) === 'cli';
      const dir = opts.dir ?? section?.dir;
      if (!dir) throw new UsageError('--dir is required (or set cluster.dir in bulwark.config.ts)');
      const spec = readSpec(dir);
      const webhooks: string[] = opts.webhook ?? fromFile.webhooks ?? [];
      for (const w of webhooks) {
        try {
          new URL(w);
        } catch {
          throw new UsageError(`--webhook: not a URL: ${w}`);
        }
      }
      const failures = flag('failures') ? opts.failures : (fromFile.failures ?? opts.failures);
      if (failures < 1) throw new UsageError('--failures must be at least 1');
      const etcdHosts: string[] | undefined = opts.etcd
        ? String(opts.etcd)
            .split(',')
            .map((h: string) => h.trim())
        : fromFile.etcd?.hosts;
      const leaseTtl = flag('leaseTtl') ? opts.leaseTtl : (fromFile.etcd?.leaseTtl ?? opts.leaseTtl);
      if (leaseTtl < 2) throw new UsageError('--lease-ttl must be at least 2 seconds');
      const { createTextLogger } = await import('../../cluster/monitor/text-log.js');
      const monitor = new ClusterMonitor({
        dir,
        logger: opts.logFormat === 'text' ? createTextLogger() : undefined,
        name: opts.name ?? fromFile.name,
        intervalMs:
          flag('interval') || fromFile.interval === undefined
            ? parseDuration(opts.interval, '--interval')
            : fromFile.interval,
        probeTimeoutMs:
          flag('probeTimeout') || fromFile.probeTimeout === undefined
            ? parseDuration(opts.probeTimeout, '--probe-timeout')
            : fromFile.probeTimeout,
        failureThreshold: failures,
        maxLagOnFailover:
          flag('maxLagOnFailover') || fromFile.maxLagOnFailover === undefined
            ? parseSize(opts.maxLagOnFailover, '--max-lag-on-failover')
            : fromFile.maxLagOnFailover,
        rejoin: flag('rejoin') ? opts.rejoin : (fromFile.rejoin ?? opts.rejoin),
        permanentSlots: opts.slot ?? fromFile.permanentSlots ?? [],
        http: {
          host: flag('httpHost') ? opts.httpHost : (fromFile.httpHost ?? opts.httpHost),
          port: flag('httpPort') ? opts.httpPort : (fromFile.httpPort ?? opts.httpPort),
        },
        webhooks,
        dcs: etcdHosts
          ? (info) =>
              new EtcdDcs({
                hosts: etcdHosts,
                cluster: opts.scope ?? fromFile.etcd?.scope ?? spec.name,
                ttl: leaseTtl,
                ...info,
              })
          : undefined,
      });
      await monitor.start();
      process.stdout.write(`monitor ${monitor.name} ${monitor.httpUrl}\n`);
      await new Promise<void>((resolve) => {
        const stop = () => resolve();
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
      await monitor.stop();
    });

  cluster
    .command('switchover')
    .description('planned, zero-loss role change to a replica (asks the running monitor if there is one)')
    .option('--dir <dir>', 'cluster folder (default: cluster.dir of bulwark.config.ts)')
    .option('--config <file>', 'bulwark.config.ts to read')
    .requiredOption('--to <node>', 'replica to promote')
    .option('--json', 'print the history entry as JSON')
    .option('--etcd <urls>', 'node agents: etcd client URLs (instead of --dir)')
    .option('--scope <name>', 'node agents: cluster name', 'main')
    .option('--at <time>', 'node agents: switch over at this time (ISO 8601), e.g. 2026-12-03T09:30:00Z')
    .action(async (opts) => {
      if (opts.etcd || opts.at) {
        const { agentSwitchover } = await import('./cluster-agent.js');
        process.stdout.write(`${await agentSwitchover(opts)}\n`);
        return;
      }
      const { requestSwitchover } = await import('../../cluster/index.js');
      const entry = await requestSwitchover(await resolveDir(opts), opts.to, (l) => process.stderr.write(`${l}\n`));
      process.stdout.write(
        opts.json
          ? `${JSON.stringify(entry)}\n`
          : `switchover ${entry.from} -> ${entry.to} done: write gap ${entry.promoteMs} ms (term ${entry.term})\n`,
      );
    });

  cluster
    .command('history')
    .description('past failovers and switchovers with their durations')
    .option('--dir <dir>', 'cluster folder (default: cluster.dir of bulwark.config.ts)')
    .option('--config <file>', 'bulwark.config.ts to read')
    .option('--json', 'print JSON')
    .action(async (opts) => {
      const { formatHistory, readHistory, readSpec } = await import('../../cluster/index.js');
      const dir = await resolveDir(opts);
      readSpec(dir);
      const h = readHistory(dir);
      process.stdout.write(opts.json ? `${JSON.stringify({ history: h }, null, 2)}\n` : formatHistory(h));
    });

  registerAgentCommands(cluster);
}
