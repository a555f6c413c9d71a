import { spawn } from 'node:child_process';
import { openStorage, Repository } from '../backup/index.js';
import { type ClusterPool, createClusterPool, localConnectionStrings } from '../cluster/index.js';
import { type Deployer, deployerFromConfig } from '../deploy/index.js';
import { type ClusterStateReader, clusterStateReader } from './cluster-state.js';
import { cliEntry, type DeployParts, type DrillSystem, type FailoverParts } from './environment.js';
import { DrillError } from './errors.js';
import { type DrillTarget, requireBackupParts, targetHosts } from './target.js';

/**
 * The user's own system, named in bulwark.config.ts: the drill starts nothing there and owns nothing
 * of it, so stopping only says so. Built after the safety guard (assertTargetsAllowed) has passed;
 * nothing here contacts anything until a step runs.
 */
export class ConfiguredSystem implements DrillSystem {
  readonly url: string;
  readonly repoUri: string;
  private readonly repository?: Repository;
  private readonly pg?: string;
  private readonly primaryName: string;
  private readonly clusterDir?: string;
  private pool?: ClusterPool;
  private stateReader?: ClusterStateReader;
  failover?: FailoverParts;
  readonly deploy?: DeployParts;
  private readonly cleanups: Array<{ what: string; run: () => Promise<unknown> }> = [];

  constructor(private readonly target: DrillTarget) {
    this.url = target.url.replace(/\/+$/, '');
    this.pg = target.pg;
    this.clusterDir = target.clusterDir;
    this.repoUri = target.repo ?? '';
    if (target.repo) this.repository = new Repository(openStorage(target.repo, target.s3 ?? {}));
    if (target.deploy) this.deploy = configuredDeploy(target.deploy, target.file);
    // shown in logs and the journal: host and port only, never the user or password of the URL
    this.primaryName = targetHosts(target)
      .filter((h) => h.what.startsWith('database'))
      .map((h) => h.host)
      .join(',');
  }

  /** The configured repository (the steps that need one are refused up front without it). */
  get repo(): Repository {
    if (!this.repository) return requireBackupParts(this.target) as never;
    return this.repository;
  }

  primary(): { name: string; url: string } {
    if (!this.pg) return requireBackupParts(this.target) as never;
    return { name: this.primaryName, url: this.pg };
  }

  async start(): Promise<void> {
    if (!this.clusterDir) return;
    const dir = this.clusterDir;
    const pool = createClusterPool({ nodes: localConnectionStrings(dir), max: 2, writeTimeoutMillis: 20_000 });
    pool.on('error', () => {}); // a node going away is the pool's business (it re-routes)
    this.pool = pool;
    // the user's monitor acts; the drill only reads what it published (in the folder, or in etcd)
    const state = clusterStateReader(dir, this.target.clusterEtcd);
    this.stateReader = state;
    this.failover = {
      pgDir: dir,
      pool,
      primary: () => state.primary(),
      watchFailover: (from) =>
        new Promise((resolve) => {
          const started = Date.now();
          const poll = async () => {
            const now = await state.primary();
            if (now && now !== from) resolve({ to: now, durationMs: null, promoteMs: null });
            else if (Date.now() - started <= 120_000) setTimeout(poll, 100); // the step gives up at 60 s
          };
          void poll();
        }),
      rejoined: async (node) =>
        Boolean((await state.topology())?.nodes.some((n) => n.name === node && n.role === 'replica' && n.streaming)),
    };
  }

  onCleanup(what: string, fn: () => Promise<unknown>): void {
    this.cleanups.push({ what, run: fn });
  }

  async stop(): Promise<string[]> {
    const lines: string[] = [];
    for (const c of this.cleanups.reverse())
      await c.run().then(
        () => lines.push(c.what),
        (err) => lines.push(`${c.what}: ${(err as Error).message}`),
      );
    if (this.stateReader) await this.stateReader.close().catch(() => {});
    if (this.pool)
      await this.pool.end().then(
        () => lines.push('routing pool closed'),
        (err) => lines.push(`routing pool closed: ${(err as Error).message}`),
      );
    lines.push(
      this.deploy
        ? `nothing stopped of ${this.url}, its database or cluster; ${this.deploy.app} keeps the release the drill deployed last (see bulwark deploy status ${this.deploy.app})`
        : `nothing started on ${this.url}, its database or cluster: the configured system was only used`,
    );
    return lines;
  }
}

/**
 * The deploy steps against the config's app: `bulwark deploy`'s own Deployer (deployerFromConfig: the
 * app's router, provider, plan, state and lock), so the drill deploys exactly as the user does.
 */
function configuredDeploy(d: NonNullable<DrillTarget['deploy']>, file: string): DeployParts {
  const make = (log?: (s: string) => void): Deployer =>
    deployerFromConfig(d.config, d.app, { baseDir: d.baseDir, log: log ? (s) => log(s) : undefined });
  return {
    app: d.app,
    deployerFor: (kind, log) => ({ deployer: make(log), version: kind === 'bad' ? d.badRelease : d.goodRelease }),
    // the router's live weights, not the state file: the version users get is what the router does
    async serving() {
      const deployer = make();
      const router = await deployer.routerState();
      if ('error' in router) throw new DrillError('BULWARK_E_DRILL', `router of ${d.app}: ${router.error}`);
      const slot = (['blue', 'green'] as const).find((s) => router.slots[s].weight === 100);
      return slot ? (deployer.status().slots[slot]?.version ?? undefined) : undefined;
    },
    afterDeploy(deployer) {
      const warm = deployer.warmSlot();
      if (!warm) return undefined;
      // as `bulwark deploy` does: a detached helper stops the warm slot at the end of its warm period
      spawn(
        process.execPath,
        [cliEntry(), 'deploy', 'expire-warm', d.app, '--id', warm.deploymentId, '--config', file],
        { detached: true, stdio: 'ignore', cwd: d.baseDir },
      ).unref();
      return `${warm.version} stays warm on ${warm.slot} until ${warm.until} (deploy.apps.${d.app} keepOldFor), then it is stopped; \`bulwark deploy promote ${d.app}\` stops it now`;
    },
  };
}
