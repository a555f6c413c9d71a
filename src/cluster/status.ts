import { clientConfig } from './local/cluster.js';
import { readSpec } from './local/layout.js';
import { type NodeStatus, type ProbeTarget, probeAll, summarize } from './probe.js';

export function localTargets(dir: string): ProbeTarget[] {
  const spec = readSpec(dir);
  return spec.nodes.map((n) => ({
    name: n.name,
    host: spec.host,
    port: n.port,
    connection: clientConfig(dir, spec, n),
  }));
}

/** Status of every node of a local cluster (probed now). */
export async function clusterStatus(dir: string, timeoutMs = 2000): Promise<{ nodes: NodeStatus[] }> {
  return { nodes: summarize(await probeAll(localTargets(dir), timeoutMs)) };
}

export function formatStatusTable(nodes: NodeStatus[]): string {
  const header = [
    'NODE',
    'ADDRESS',
    'ROLE',
    'TL',
    'LSN',
    'RECEIVED',
    'REPLAYED',
    'LAG BYTES',
    'LAG S',
    'SYNC',
    'STREAMING',
  ];
  const rows = nodes.map((n) => [
    n.name,
    `${n.host}:${n.port}`,
    n.role,
    n.timeline?.toString() ?? '-',
    n.lsn ?? '-',
    n.receivedLsn ?? '-',
    n.replayedLsn ?? '-',
    n.lagBytes?.toString() ?? '-',
    n.lagSeconds?.toString() ?? '-',
    n.syncState ?? '-',
    n.streaming === null ? '-' : n.streaming ? 'yes' : 'NO',
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => c.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  const out = [line(header), ...rows.map(line)];
  for (const n of nodes) if (n.error) out.push(`${n.name}: ${n.error}`);
  return `${out.join('\n')}\n`;
}

/**
 * Connection strings of every node of a local cluster, for createClusterPool({ nodes }). No password
 * in them: with `--auth scram` set PGPASSFILE to the folder's pgpass (node-postgres reads it).
 */
export function localConnectionStrings(dir: string, database = 'postgres'): string[] {
  const spec = readSpec(dir);
  return spec.nodes.map((n) => `postgresql://postgres@${spec.host}:${n.port}/${encodeURIComponent(database)}`);
}
