import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLogger, type Logger } from '../../lib/log.js';
import { ClusterError } from '../errors.js';
import { postmasterPid } from '../local/cluster.js';
import { compareLsn } from '../lsn.js';
import {
  type AgentDecision,
  type AgentObservation,
  decide,
  decideSync,
  type LocalPostgres,
  leaseValid,
  type MemberInfo,
} from './decide.js';
import { handleApiRequest } from './http.js';
import * as local from './postgres.js';
import { AgentStore, type ClusterView, type LeaderRecord } from './store.js';

export interface AgentOptions {
  pg: local.LocalPostgresSpec;
  etcd: string[];
  /** Key prefix /bulwark-agents/<scope>/: one scope per cluster. */
  scope: string;
  /** Lease TTL (seconds): how long a lost primary blocks the election, and the bound on its fencing. */
  ttlSeconds?: number;
  /** One observe-decide-act loop every loopMs (default 1000). */
  loopMs?: number;
  /** REST endpoint for health checks (HAProxy) and status; none when omitted. */
  api?: { host: string; port: number };
  nofailover?: boolean;
  /** Higher wins an election between replicas at the same WAL position (default 100). */
  priority?: number;
  /** Never promote a replica further behind the last primary position than this (default 16 MB). */
  maxLagOnFailover?: number;
  /**
   * Synchronous mode (Patroni's synchronous_mode): the leader names its healthy streaming replicas in
   * synchronous_standby_names and records them in etcd; only a recorded one may be promoted. The
   * cluster-wide `config.synchronous` in etcd turns it on as well.
   */
  sync?: boolean;
  logger?: Logger;
}

/**
 * `bulwark cluster agent`: one per database host, owning that host's PostgreSQL (Patroni's model).
 * Every loop: renew the lease, read the cluster keys, observe PostgreSQL, `decide()`, act, publish
 * the member key. A watchdog timer, independent of the loop (which may be stuck in a slow etcd call
 * or pg_rewind), kills a writable PostgreSQL once the lease can no longer be trusted.
 */
export class ClusterAgent {
  readonly name: string;
  private readonly store: AgentStore;
  private readonly log: Logger;
  private readonly ttlMs: number;
  private readonly loopMs: number;
  private loopTimer: NodeJS.Timeout | null = null;
  private watchdog: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private stopped = false;
  private server: Server | null = null;
  private view: ClusterView | null = null;
  private pgState: LocalPostgres | null = null;
  private lastDecision: AgentDecision | null = null;
  private fencing: Promise<unknown> | null = null;
  private heartbeat: NodeJS.Timeout | null = null;
  private renewing: Promise<boolean> | null = null;
  private deadman: ChildProcess | null = null;
  /** The cluster-wide settings last applied to the running PostgreSQL (JSON), null after a (re)start. */
  private appliedSettings: string | null = null;
  private lastSyncReason: string | null = null;

  constructor(private readonly options: AgentOptions) {
    this.name = options.pg.name;
    this.ttlMs = (options.ttlSeconds ?? 10) * 1000;
    this.loopMs = options.loopMs ?? 1000;
    if (this.loopMs * 2 >= this.ttlMs - 1500)
      throw new ClusterError(
        'BULWARK_E_CLUSTER_AGENT',
        `--loop-wait ${this.loopMs} ms is too long for --ttl ${this.ttlMs / 1000} s: the lease must be renewed several times per TTL`,
      );
    this.store = new AgentStore(options.etcd, options.scope, this.ttlMs / 1000);
    this.log = options.logger ?? createLogger({ name: 'agent' });
  }

  get apiUrl(): string | null {
    const a = this.server?.address();
    return a && typeof a === 'object' ? `http://${a.address}:${a.port}` : null;
  }

  async start(): Promise<void> {
    if (this.options.api) await this.listen(this.options.api.host, this.options.api.port);
    this.startDeadman();
    this.watchdog = setInterval(() => this.checkFence(), 100);
    // The lease is renewed on its own timer, not in the loop: initdb, pg_basebackup or pg_rewind can
    // take longer than the TTL, and the leader must not lose its key (and fence itself) meanwhile.
    this.heartbeat = setInterval(() => void this.beat(), Math.min(this.loopMs, this.ttlMs / 5));
    const loop = () => {
      if (this.stopped) return;
      this.running = this.loopOnce()
        .catch((err) => this.log.error({ err: (err as Error).message }, 'agent loop failed'))
        .finally(() => {
          if (!this.stopped) this.loopTimer = setTimeout(loop, this.loopMs);
        });
    };
    loop();
    this.log.info({ name: this.name, scope: this.options.scope, ttlSeconds: this.ttlMs / 1000 }, 'agent started');
  }

  /** Stop the loop; stop PostgreSQL (fast shutdown) and give the leader key up so a replica takes over at once. */
  async stop(options: { stopPostgres?: boolean } = {}): Promise<void> {
    this.stopped = true;
    if (this.loopTimer) clearTimeout(this.loopTimer);
    if (this.watchdog) clearInterval(this.watchdog);
    if (this.heartbeat) clearInterval(this.heartbeat);
    await this.renewing?.catch(() => {});
    await this.running?.catch(() => {});
    await this.fencing?.catch(() => {});
    if (options.stopPostgres ?? true) {
      await local.stop(this.options.pg).catch(() => {});
      const leader = this.view?.leader;
      if (leader && leader.name === this.name && leader.lease === this.store.leaseIdOrNull)
        await this.store.releaseLeader(leader).catch(() => {});
    }
    await this.store.close();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
    this.deadman?.stdin?.end();
  }

  /**
   * The dead man's switch (deadman.ts): a child that SIGKILLs our PostgreSQL when its stdin pipe
   * from us closes, i.e. when this agent dies in any way. A primary must not outlive its agent: nobody
   * would fence it once the lease expired and another host was promoted.
   */
  private startDeadman(): void {
    const script = join(dirname(fileURLToPath(import.meta.url)), 'deadman.js');
    if (!existsSync(script)) {
      this.log.warn(
        { script },
        "no dead man's switch (running from sources?): PostgreSQL would outlive a crashed agent",
      );
      return;
    }
    this.deadman = spawn(process.execPath, [script, this.options.pg.dataDir], {
      stdio: ['pipe', 'ignore', 'ignore'],
      detached: true,
    });
    this.deadman.on('error', (err) => this.log.error({ err: err.message }, "dead man's switch failed to start"));
    this.deadman.unref();
  }

  /**
   * A PostgreSQL running without standby.signal is (or may become) writable: it must not outlive our
   * lease. PostgreSQL removes the file itself when promoted, so the file system is the live truth.
   */
  private checkFence(): void {
    if (this.fencing || this.view?.config.paused) return;
    if (leaseValid(Date.now(), this.store.lastRenewalSentAt, this.ttlMs)) return;
    const data = this.options.pg.dataDir;
    if (!postmasterPid(data) || existsSync(join(data, 'standby.signal'))) return;
    const since = this.store.lastRenewalSentAt ? Date.now() - this.store.lastRenewalSentAt : null;
    this.fencing = local
      .fence(this.options.pg)
      .then((pids) =>
        this.log.warn(
          { pids, lastRenewalMsAgo: since, ttlMs: this.ttlMs },
          'fenced the primary: the lease could not be renewed within the TTL',
        ),
      )
      .catch((err) => this.log.error({ err: (err as Error).message }, 'fencing failed'))
      .finally(() => {
        this.fencing = null;
      });
  }

  private me(): Omit<LeaderRecord, 'lease'> {
    return { name: this.name, host: this.options.pg.host, port: this.options.pg.port, api: this.apiUrl ?? undefined };
  }

  private beat(): Promise<boolean> {
    if (!this.renewing)
      this.renewing = this.store.renew().finally(() => {
        this.renewing = null;
      });
    return this.renewing;
  }

  async loopOnce(): Promise<void> {
    if (!this.store.leaseIdOrNull) await this.beat();
    let view: ClusterView | null = null;
    try {
      view = await this.store.read();
      this.view = view;
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, 'cannot read the cluster keys');
    }
    const pgState = await local.observe(this.options.pg);
    this.pgState = pgState;
    if (!view) {
      // Without the keys nothing may be decided except protecting against our own stale primary.
      this.checkFence();
      return;
    }
    const leader = view.leader;
    const obs: AgentObservation = {
      me: this.name,
      now: Date.now(),
      ttlMs: this.ttlMs,
      lastRenewalSentAt: this.store.lastRenewalSentAt,
      paused: !!view.config.paused,
      nofailover: this.tags(view).nofailover,
      priority: this.tags(view).priority,
      maxLagOnFailover: this.options.maxLagOnFailover ?? 16 * 1024 * 1024,
      pg: pgState,
      leader,
      leaderIsStale: !!leader && leader.name === this.name && leader.lease !== this.store.leaseIdOrNull,
      members: view.members.filter((m) => m.name !== this.name),
      initializedBy: view.initializedBy,
      leaderOptime: view.optime,
      switchover: view.switchover,
      sync: view.sync,
    };
    const d = decide(obs);
    if (d.action !== 'none' || d.reason !== this.lastDecision?.reason) this.log.info(d, d.reason);
    this.lastDecision = d;
    if (d.action !== 'none') this.appliedSettings = null;
    await this.act(d, view).catch((err) =>
      this.log.error({ action: d.action, err: (err as Error).message }, `${d.action} failed`),
    );
    await this.applySettings(view).catch((err) =>
      this.log.error({ err: (err as Error).message }, 'applying the cluster settings failed'),
    );
    await this.syncStep(view).catch((err) =>
      this.log.error({ err: (err as Error).message }, 'synchronous replication step failed'),
    );
    await this.publish(view).catch(() => {});
  }

  /** True while this agent holds the leader key under its current lease and may trust it. */
  private holdsLeader(view: ClusterView): boolean {
    const l = view.leader;
    return (
      !!l &&
      l.name === this.name &&
      l.lease === this.store.leaseIdOrNull &&
      leaseValid(Date.now(), this.store.lastRenewalSentAt, this.ttlMs)
    );
  }

  /**
   * Synchronous mode, on the leader's running primary: carry out `decideSync()` steps (at most a few
   * per loop). Off: remove the sync key and clear synchronous_standby_names (e.g. copied from the
   * former primary by pg_basebackup or pg_rewind).
   */
  private async syncStep(view: ClusterView): Promise<void> {
    const pgState = this.pgState;
    if (view.config.paused || !pgState?.running || pgState.inRecovery !== false) return;
    const leader = view.leader;
    if (!leader || !this.holdsLeader(view)) return;
    const spec = this.options.pg;
    if (!(this.options.sync || view.config.synchronous)) {
      if (view.sync && (await this.store.deleteSync(leader))) {
        this.log.info({}, 'synchronous mode off: removed the synchronous set');
        view.sync = null;
      }
      if ((await local.syncStatus(spec)).inForce.length) await local.setStandbyNames(spec, []);
      return;
    }
    const eligible = new Set(
      // a nofailover member could never be promoted: it must not be the one holding acknowledged commits
      view.members
        .filter((m) => m.name !== this.name && !(view.tags[m.name]?.nofailover ?? m.nofailover))
        .map((m) => m.name),
    );
    for (let i = 0; i < 4; i++) {
      if (!this.holdsLeader(view)) return;
      const status = await local.syncStatus(spec);
      const streaming = status.senders
        .filter((s) => s.state === 'streaming' && eligible.has(s.name))
        .map((s) => s.name);
      const obs = { me: this.name, recorded: view.sync, streaming, inForce: status.inForce, caughtUp: [] as string[] };
      let step = decideSync(obs);
      if (step.action === 'wait-catch-up') {
        // a member that flushed past the position read after the setting was in force holds every
        // commit acknowledged before: poll briefly (a busy primary keeps moving, the flush follows)
        for (let j = 0; j < 20 && step.action === 'wait-catch-up'; j++) {
          await new Promise((r) => setTimeout(r, 50));
          const now = await local.syncStatus(spec);
          obs.caughtUp = now.senders
            .filter((s) => streaming.includes(s.name) && compareLsn(s.flushLsn, status.lsn) >= 0)
            .map((s) => s.name);
          step = decideSync(obs);
        }
      }
      if (step.action === 'none' || step.action === 'wait-catch-up') {
        if (step.reason !== this.lastSyncReason) this.log.info({ sync: step.action }, step.reason);
        this.lastSyncReason = step.reason;
        return;
      }
      this.log.info({ sync: step.action }, step.reason);
      this.lastSyncReason = step.reason;
      if (step.action === 'record') {
        const record = { leader: this.name, members: step.members };
        if (!(await this.store.putSync(record, leader))) return;
        view.sync = record;
      } else await local.setStandbyNames(spec, step.names);
    }
  }

  /** Tags set with `bulwark cluster tag` win over the agent's own flags. */
  private tags(view: ClusterView): { nofailover: boolean; priority: number } {
    const t = view.tags[this.name] ?? {};
    return {
      nofailover: t.nofailover ?? !!this.options.nofailover,
      priority: t.priority ?? this.options.priority ?? 100,
    };
  }

  private async applySettings(view: ClusterView): Promise<void> {
    const want = view.config.settings ?? {};
    const json = JSON.stringify(want);
    if (json === this.appliedSettings || view.config.paused) return;
    const pgState = this.pgState;
    if (!pgState?.running || pgState.inRecovery === null) return;
    const previous = this.appliedSettings ? (JSON.parse(this.appliedSettings) as Record<string, string>) : {};
    const pending = await local.applySettings(this.options.pg, want, previous);
    this.appliedSettings = json;
    this.log.info({ settings: want, pendingRestart: pending }, 'applied the cluster settings');
  }

  private async act(d: AgentDecision, view: ClusterView): Promise<void> {
    const spec = this.options.pg;
    const leader = view.leader;
    switch (d.action) {
      case 'none':
        return;
      case 'fence':
        await local.fence(spec);
        return;
      case 'bootstrap':
        if (!(await this.store.claimInitialize(this.name))) return;
        if (!(await this.store.acquire(this.me(), null)))
          throw new ClusterError(
            'BULWARK_E_CLUSTER_AGENT',
            'claimed the initialization but another agent holds the leader key',
          );
        await local.bootstrap(spec);
        this.log.info({ dataDir: spec.dataDir }, 'initialized a new cluster here: primary');
        return;
      case 'clone':
        await local.clone(spec, leader!);
        this.log.info({ leader: leader!.name }, 'cloned from the leader (pg_basebackup)');
        return;
      case 'start-primary':
        await local.startPrimary(spec);
        return;
      case 'start-replica':
        await local.startReplica(spec, leader && leader.name !== this.name ? leader : null);
        return;
      case 'promote':
        await this.promote();
        return;
      case 'acquire': {
        if (!(await this.store.acquire(this.me(), leader))) return;
        this.log.info({}, 'took the leader key');
        const now = await local.observe(spec);
        if (now.running && now.inRecovery) await this.promote();
        if (view.switchover?.to === this.name) {
          await this.store.clearSwitchover(view.switchover);
          this.log.info({ to: this.name }, 'switchover done: primary');
        }
        return;
      }
      case 'step-down': {
        // Fast shutdown: clients are disconnected and the WAL senders send everything up to the
        // shutdown checkpoint before they exit, so the target has every commit; then the key goes.
        await local.stop(spec);
        local.markStepDown(spec);
        if (leader) await this.store.releaseLeader(leader);
        this.log.info({ to: view.switchover?.to }, `stepped down for the switchover to ${view.switchover?.to}`);
        return;
      }
      case 'cancel-switchover':
        if (view.switchover) await this.store.clearSwitchover(view.switchover);
        return;
      case 'follow':
        await local.follow(spec, leader!);
        return;
      case 'rewind': {
        const r = await local.rewind(spec, leader!);
        this.log.info({ leader: leader!.name, ...r }, `rejoined as a replica of ${leader!.name} (${r.method})`);
        return;
      }
    }
  }

  private async promote(): Promise<void> {
    // The decision may be a loop old: promote only while the lease is certainly still ours.
    if (!leaseValid(Date.now(), this.store.lastRenewalSentAt, this.ttlMs)) return;
    await local.promote(this.options.pg);
    this.log.info({}, 'promoted: primary');
  }

  private async publish(view: ClusterView): Promise<void> {
    const pgState = await local.observe(this.options.pg);
    this.pgState = pgState;
    const role: MemberInfo['role'] = !pgState.initialized
      ? 'uninitialized'
      : !pgState.running || pgState.inRecovery === null
        ? 'stopped'
        : pgState.inRecovery
          ? 'replica'
          : 'primary';
    await this.store.putMember({
      name: this.name,
      host: this.options.pg.host,
      port: this.options.pg.port,
      api: this.apiUrl ?? undefined,
      role,
      lsn: pgState.lsn,
      timeline: pgState.timeline,
      ...this.tags(view),
    });
    const leader = (await this.store.read().catch(() => view)).leader;
    if (this.view) this.view.leader = leader;
    if (role === 'primary' && pgState.lsn && leader?.name === this.name && leader.lease === this.store.leaseIdOrNull)
      await this.store.putOptime(pgState.lsn, leader);
  }

  /** What the REST endpoint reports. */
  status() {
    const leader = this.view?.leader ?? null;
    const holdsLeader =
      !!leader &&
      leader.name === this.name &&
      leader.lease === this.store.leaseIdOrNull &&
      leaseValid(Date.now(), this.store.lastRenewalSentAt, this.ttlMs);
    return {
      name: this.name,
      pg: this.pgState,
      leader: leader?.name ?? null,
      holdsLeader,
      leaderOptime: this.view?.optime ?? null,
      paused: !!this.view?.config.paused,
      lastDecision: this.lastDecision,
    };
  }

  private listen(host: string, port: number): Promise<void> {
    this.server = createServer((req, res) => handleApiRequest(req, res, () => this.status()));
    return new Promise((resolve, reject) => {
      this.server!.once('error', (err) =>
        reject(new ClusterError('BULWARK_E_CLUSTER_AGENT', `agent REST endpoint ${host}:${port}: ${err.message}`)),
      );
      this.server!.listen(port, host, () => resolve());
    });
  }
}
