import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { openStorage, Repository } from '../backup/index.js';
import {
  type ClusterPool,
  createClusterPool,
  localConnectionStrings,
  readState,
  type Topology,
} from '../cluster/index.js';
import type { DrillSystem, FailoverParts } from './environment.js';
import { type DrillTarget, requireBackupParts, targetHosts } from './target.js';

/**
 * The user's own system, named in bulwark.config.ts: the drill starts nothing there and owns nothing
 * of it, so stopping only says so. Built after the safety guard (assertTargetsAllowed) has passed;
 * nothing here contacts anything until a step runs.
 */
export class ConfiguredSystem implements DrillSystem {
  readonly url: string;
  readonly repo: Repository;
  readonly repoUri: string;
  private readonly pg: string;
  private readonly primaryName: string;
  private readonly clusterDir?: string;
  private pool?: ClusterPool;
  failover?: FailoverParts;

  constructor(target: DrillTarget) {
    const parts = requireBackupParts(target);
    this.url = target.url.replace(/\/+$/, '');
    this.pg = parts.pg;
    this.clusterDir = target.clusterDir;
    this.repoUri = parts.repo;
    this.repo = new Repository(openStorage(parts.repo, target.s3 ?? {}));
    // shown in logs and the journal: host and port only, never the user or password of the URL
    this.primaryName = targetHosts(target)
      .filter((h) => h.what.startsWith('database'))
      .map((h) => h.host)
      .join(',');
  }

  primary(): { name: string; url: string } {
    return { name: this.primaryName, url: this.pg };
  }

  async start(): Promise<void> {
    if (!this.clusterDir) return;
    const dir = this.clusterDir;
    const pool = createClusterPool({ nodes: localConnectionStrings(dir), max: 2, writeTimeoutMillis: 20_000 });
    pool.on('error', () => {}); // a node going away is the pool's business (it re-routes)
    this.pool = pool;
    this.failover = {
      pgDir: dir,
      pool,
      // the user's monitor acts; the drill only reads what it wrote (state.json, topology.json)
      watchFailover: (from) =>
        new Promise((resolve) => {
          const started = Date.now();
          const timer = setInterval(() => {
            const now = readState(dir)?.primary;
            if (now && now !== from) {
              clearInterval(timer);
              resolve({ to: now, durationMs: null, promoteMs: null });
            } else if (Date.now() - started > 120_000) clearInterval(timer); // the step gives up at 60 s
          }, 100);
        }),
      rejoined: (node) => {
        try {
          const t = JSON.parse(readFileSync(join(dir, 'topology.json'), 'utf8')) as Topology;
          return t.nodes.some((n) => n.name === node && n.role === 'replica' && n.streaming);
        } catch {
          return false;
        }
      },
    };
  }

  async stop(): Promise<string[]> {
    const lines: string[] = [];
    if (this.pool)
      await this.pool.end().then(
        () => lines.push('routing pool closed'),
        (err) => lines.push(`routing pool closed: ${(err as Error).message}`),
      );
    lines.push(`nothing started on ${this.url}, its database or cluster: the configured system was only used`);
    return lines;
  }
}
