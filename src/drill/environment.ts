import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { openStorage, Repository } from '../backup/index.js';
import {
  ClusterMonitor,
  type ClusterPool,
  createClusterPool,
  destroyCluster,
  initCluster,
  localConnectionStrings,
  readSpec,
  readState,
} from '../cluster/index.js';
import { ORDERS_TABLE_SQL } from '../demo/index.js';
import {
  Deployer,
  type DeployPlan,
  type EmbeddedRouter,
  ProcessProvider,
  routerSource,
  StateStore,
  startEmbeddedRouter,
} from '../deploy/index.js';
import { distDir } from '../lib/bundle.js';
import { isRoot, run } from '../lib/child.js';
import { createLogger } from '../lib/log.js';
import { POSTGRES_USER, pgBin, postgresIds } from '../lib/postgres.js';
import { DrillError } from './errors.js';

/** A release of the demo shop the drill deploys: what makes it good or bad. */
export interface Release {
  version: string;
  /** Share 0..1 of /api requests answered 500. */
  errorRate?: number;
  /** /health answers 503: the release fails its health checks. */
  unhealthy?: boolean;
}

export interface EnvironmentOptions {
  /** Work folder (default: a new temp folder, removed at the end). */
  dir?: string;
  /** Synchronous replication (ANY 1 of the replicas confirms each commit). */
  sync: boolean;
  /** Replicas besides the primary (default 2). */
  replicas?: number;
  say: (line: string) => void;
  signal?: AbortSignal;
}

/**
 * Quote a path for a shell command line PostgreSQL runs (archive_command, restore_command). Double
 * quotes: the line itself goes into postgresql.conf between single quotes.
 */
export function shellArg(s: string): string {
  return `"${s.replace(/(["\\$`])/g, '\\$1')}"`;
}

/**
 * The built CLI of this bulwark: next to this module when it runs from dist/, else the checkout's
 * dist/ (the library imported from its TypeScript sources, as tests do).
 */
export function cliEntry(): string {
  const candidates = [join(distDir, 'cli', 'main.js'), join(distDir, '..', 'dist', 'cli', 'main.js')];
  return candidates.find((c) => existsSync(c)) ?? candidates[0]!;
}

/** The command line that runs this same bulwark (absolute node and CLI paths: PostgreSQL's PATH does not matter). */
export function bulwarkCommand(): string {
  return `${shellArg(process.execPath)} ${shellArg(cliEntry())}`;
}

/** The deploy plan of the drill: short windows so a game day fits in minutes. */
export function drillPlan(over: Partial<DeployPlan> = {}): DeployPlan {
  return {
    strategy: 'blue-green',
    healthChecks: [{ path: '/health', timeoutMs: 3000 }],
    analysis: { minRequests: 20, maxErrorRate: 0.05, intervalMs: 1000 },
    blueGreen: { monitorMs: 6000, keepOldForMs: 0 },
    canary: { steps: [{ weight: 20, pauseMs: 10_000 }], keepOldForMs: 0 },
    abort: { newSlot: 'stop' },
    drainTimeoutMs: 5000,
    ...over,
  };
}

/**
 * What every step may use, whoever built the system: the embedded environment (DrillEnvironment) or
 * the user's own, named in bulwark.config.ts (ConfiguredSystem).
 */
export interface DrillSystem {
  /** Where the drill's load goes. */
  readonly url: string;
  readonly repo: Repository;
  readonly repoUri: string;
  /** The primary: a name to show (never a password) and its connection string. */
  primary(): { name: string; url: string };
  start(initial: Release): Promise<void>;
  /** Stop what the drill started; one line per thing. Never throws. */
  stop(): Promise<string[]>;
  /** Run `fn` at cleanup (e.g. stop the PITR copy). */
  onCleanup(what: string, fn: () => Promise<unknown>): void;
  /** A configured cluster's failover parts (the embedded environment's come from its own monitor). */
  readonly failover?: FailoverParts;
  /** A configured app's deploy parts (the embedded environment builds its own releases of the demo shop). */
  readonly deploy?: DeployParts;
}

/** What the deploy steps need: a Deployer for each release and which release serves users now. */
export interface DeployParts {
  app: string;
  /** The Deployer of `kind`'s release, its version and the strategy it is deployed with (undefined: the app's). */
  deployerFor(
    kind: 'bad' | 'good',
    log: (sentence: string) => void,
  ): { deployer: Deployer; version: string; strategy?: 'blue-green' | 'canary' };
  /** The version that serves users now (every request), or undefined when the router says otherwise. */
  serving(): Promise<string | undefined>;
  /** Said after a deploy step (e.g. an old release kept warm by the app's config). */
  afterDeploy?(deployer: Deployer): string | undefined;
}

/** A failover as the drill saw it: the new primary, and the monitor's timings when it reports them. */
export interface FailoverSeen {
  to: string;
  durationMs: number | null;
  promoteMs: number | null;
}

/** What the failover step needs: a local cluster folder it can kill a node of, and who fails it over. */
export interface FailoverParts {
  /** Local cluster folder (crashNode signals the processes of its nodes). */
  pgDir: string;
  /** Routing pool over the cluster's nodes (the RPO query goes to whichever is primary). */
  pool: ClusterPool;
  /** The node the failover monitor holds for primary now (the one the step kills). */
  primary(): Promise<string | undefined>;
  /** Called right before the kill of `from`: resolves when another node is primary. */
  watchFailover(from: string): Promise<FailoverSeen>;
  /** True once `node` streams again as a replica. */
  rejoined(node: string): boolean | Promise<boolean>;
}

/**
 * Everything a local game day runs on, started in order and stopped in reverse: a cluster folder
 * (primary + replicas) archiving WAL into a local repository, the failover monitor (in this process),
 * the embedded router (in this process) and the demo shop deployed behind it by the process provider,
 * its orders in PostgreSQL through the routing pool.
 */
export class DrillEnvironment implements DrillSystem {
  readonly dir: string;
  readonly pgDir: string;
  readonly repoDir: string;
  readonly repoUri: string;
  readonly repo: Repository;
  monitor?: ClusterMonitor;
  pool?: ClusterPool;
  router?: EmbeddedRouter;
  store?: StateStore;
  /** Every running Deployer shares this store; the last one made stops the instances at the end. */
  private deployer?: Deployer;
  private readonly ownsDir: boolean;
  private readonly tokenSecret = randomBytes(16).toString('hex');
  private readonly extraCleanups: Array<{ what: string; run: () => Promise<unknown> }> = [];
  readonly deployLog: string[] = [];

  constructor(private readonly o: EnvironmentOptions) {
    this.ownsDir = !o.dir;
    this.dir = o.dir ? resolve(o.dir) : mkdtempSync(join(tmpdir(), 'bulwark-drill-'));
    if (o.dir) {
      if (existsSync(this.dir) && existsSync(join(this.dir, 'pg')))
        throw new DrillError(
          'BULWARK_E_DRILL',
          `${this.dir} already holds a drill (pg/): remove it or pick another --dir`,
        );
      mkdirSync(this.dir, { recursive: true });
    }
    // PostgreSQL runs as the postgres user (we may be root): it must reach the cluster and the repository.
    chmodSync(this.dir, 0o755);
    this.pgDir = join(this.dir, 'pg');
    this.repoDir = join(this.dir, 'repo');
    this.repoUri = `file://${this.repoDir}`;
    mkdirSync(this.repoDir, { recursive: true, mode: 0o755 });
    if (isRoot()) {
      const { uid, gid } = postgresIds();
      chownSync(this.repoDir, uid, gid);
    }
    this.repo = new Repository(openStorage(this.repoUri));
  }

  private check(): void {
    if (this.o.signal?.aborted) throw new DrillError('BULWARK_E_DRILL', 'interrupted');
  }

  /** Run `fn` at cleanup (after the deploy and before the cluster goes). */
  onCleanup(what: string, fn: () => Promise<unknown>): void {
    this.extraCleanups.push({ what, run: fn });
  }

  async start(initial: Release): Promise<void> {
    const say = this.o.say;
    const main = cliEntry();
    if (!existsSync(main))
      throw new DrillError('BULWARK_E_DRILL', `${main} is missing: build bulwark first (npm run build)`);
    if (isRoot()) {
      // archive_command runs this bulwark as the postgres user: a clone under /root is out of its reach
      const r = await run('test', ['-r', main, '-a', '-x', process.execPath], { asUser: POSTGRES_USER, check: false });
      if (r.code !== 0)
        throw new DrillError(
          'BULWARK_E_DRILL',
          `the ${POSTGRES_USER} user cannot run ${main} (archive_command runs as ${POSTGRES_USER}): put bulwark where every user can read it (e.g. npm install -g) or make its folders traversable (chmod o+rx)`,
        );
    }
    pgBin('initdb'); // a missing PostgreSQL is reported before anything starts
    this.check();
    const archive = `${bulwarkCommand()} wal push "%p" --repo ${shellArg(this.repoUri)}`;
    say(
      `cluster: primary + ${this.o.replicas ?? 2} replicas (${this.o.sync ? 'synchronous' : 'asynchronous'} replication) in ${this.pgDir}, WAL archived to ${this.repoUri}`,
    );
    await initCluster({
      dir: this.pgDir,
      replicas: this.o.replicas ?? 2,
      sync: this.o.sync,
      name: 'drill',
      settings: { archive_mode: 'on', archive_command: archive },
    });
    this.check();
    this.monitor = new ClusterMonitor({
      dir: this.pgDir,
      name: 'drill-monitor',
      intervalMs: 500,
      probeTimeoutMs: 1000,
      failureThreshold: 3,
      logger: createLogger({ level: 'silent' }),
    });
    await this.monitor.start();
    say('monitor: probing every 500 ms, failover after 3 failed probes');
    this.pool = createClusterPool({ nodes: localConnectionStrings(this.pgDir), max: 2, writeTimeoutMillis: 20_000 });
    this.pool.on('error', () => {});
    await this.pool.query(ORDERS_TABLE_SQL);
    this.check();
    this.router = await startEmbeddedRouter({ port: 0 });
    this.store = new StateStore(join(this.dir, 'deploy'), 'shop');
    say(
      `router: ${this.router.frontendUrl} (embedded); deploying the shop ${initial.version} with the process provider`,
    );
    await this.deployerFor(initial).deploy(initial.version);
    this.check();
  }

  /** The command the process provider runs for a release (the demo shop writing orders to the cluster). */
  appCommand(release: Release): string {
    const flags = [`--port {port}`, `--label {version}`, `--cluster-dir ${shellArg(this.pgDir)}`];
    if (release.errorRate) flags.push(`--error-rate ${release.errorRate}`);
    if (release.unhealthy) flags.push('--unhealthy');
    return `exec ${bulwarkCommand()} demo-server ${flags.join(' ')}`;
  }

  /**
   * A Deployer whose provider starts `release`. Deployers share the router and the state store, so
   * each one sees (and stops) what the previous ones started: the PIDs are in the state.
   */
  deployerFor(release: Release, plan: Partial<DeployPlan> = {}): Deployer {
    const provider = new ProcessProvider({
      command: this.appCommand(release),
      env: { BULWARK_DEMO_TOKEN_SECRET: this.tokenSecret },
      logDir: this.store!.logDir(),
      // readiness = the process answers; whether the release is healthy is the deploy's health checks' call
      readiness: { path: '/api/critical', timeoutMs: 30_000 },
      stopTimeoutMs: 5000,
    });
    this.deployer = new Deployer({
      app: 'shop',
      router: this.router!,
      provider,
      store: this.store!,
      metrics: routerSource(this.router!),
      plan: drillPlan(plan),
      log: (s) => this.deployLog.push(s),
      controlPollMs: 100,
    });
    return this.deployer;
  }

  get url(): string {
    return this.router!.frontendUrl;
  }

  /** The node the monitor made primary, with its connection string. */
  primary(): { name: string; url: string; port: number } {
    const spec = readSpec(this.pgDir);
    const name = readState(this.pgDir)?.primary;
    const node = spec.nodes.find((n) => n.name === name);
    if (!node) throw new DrillError('BULWARK_E_DRILL', 'the cluster has no primary');
    return { name: node.name, port: node.port, url: `postgresql://postgres@${spec.host}:${node.port}/postgres` };
  }

  /** Stop and remove everything this environment started, in reverse order. Never throws. */
  async stop(keepFolder = false): Promise<string[]> {
    const lines: string[] = [];
    const step = async (what: string, fn: () => Promise<unknown>) => {
      try {
        await fn();
        lines.push(what);
      } catch (err) {
        lines.push(`${what}: ${(err as Error).message}`);
      }
    };
    if (this.deployer) await step('shop instances stopped', () => this.deployer!.down());
    if (this.router) await step('router stopped', () => this.router!.close());
    for (const c of this.extraCleanups.reverse()) await step(c.what, c.run);
    if (this.pool) await step('routing pool closed', () => this.pool!.end());
    if (this.monitor) await step('monitor stopped', () => this.monitor!.stop());
    if (existsSync(this.pgDir)) await step('cluster destroyed', () => destroyCluster(this.pgDir));
    if (!keepFolder && this.ownsDir)
      await step(`${this.dir} removed`, async () => rmSync(this.dir, { recursive: true, force: true }));
    return lines;
  }
}
