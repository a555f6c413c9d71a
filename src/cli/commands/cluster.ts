import type { Command } from 'commander';
import { UsageError } from '../../lib/errors.js';

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
        process.stdout.write(`${n.name} ${n.name === 'node1' ? 'primary' : 'replica'} postgresql://postgres@${spec.host}:${n.port}/postgres\n`);
    });

  for (const [name, description] of [
    ['start', 'start every node (primary first; fenced nodes stay down for the monitor to rejoin)'],
    ['stop', 'stop every node (replicas first)'],
    ['destroy', 'stop every node and delete the cluster folder'],
  ] as const) {
    cluster
      .command(name)
      .description(description)
      .requiredOption('--dir <dir>', 'cluster folder')
      .action(async (opts) => {
        const api = await import('../../cluster/index.js');
        if (name === 'start') await api.startCluster(opts.dir);
        else if (name === 'stop') await api.stopCluster(opts.dir);
        else await api.destroyCluster(opts.dir);
      });
  }

  cluster
    .command('status')
    .description("each node's role, timeline, LSNs, lag and sync state")
    .requiredOption('--dir <dir>', 'cluster folder')
    .option('--json', 'print { "nodes": [...] } as JSON')
    .action(async (opts) => {
      const { clusterStatus, formatStatusTable } = await import('../../cluster/index.js');
      const status = await clusterStatus(opts.dir);
      process.stdout.write(opts.json ? `${JSON.stringify(status, null, 2)}\n` : formatStatusTable(status.nodes));
    });
}
