import { EventEmitter } from 'node:events';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { createLogger, type Logger } from '../../lib/log.js';
import type { Dcs } from '../dcs/index.js';
import { LocalDcs } from '../dcs/local.js';
import { ClusterError } from '../errors.js';
import { appendHistory, type HistoryEntry, readHistory } from '../history.js';
import { type ClusterState, readState, sleep } from '../local/cluster.js';
import { clusterPaths, readSpec } from '../local/layout.js';
import { type NodeObservation, type NodeStatus, probeAll, summarize } from '../probe.js';
import { localTargets } from '../status.js';
import {
  ensureSlots,
  fence,
  type LocalCluster,
  localProcessState,
  promote,
  rejoin,
  repoint,
  restartInPlace,
  setSyncNames,
  syncPermanentSlots,
} from './actions.js';
import { switchover } from './switchover.js';
import {
  type Action,
  afterPromotion,
  type Decision,
  initialState,
  type MonitorState,
  type TickConfig,
  tick,
} from './tick.js';

export interface MonitorOptions {
  /** Local cluster folder (bulwark cluster init --dir). */
  dir: string;
  /** Monitor name (default host-pid); shown in logs, history and the leader key. */
  name?: string;
  /** Probe interval in ms (default 1000). */
  intervalMs?: number;
  /** Probe timeout in ms (default 1000): a frozen node counts as failed after this. */
  probeTimeoutMs?: number;
  /** Consecutive failed probes before the primary is declared lost (default 3). */
  failureThreshold?: number;
  /** Async mode: do not promote a replica further behind than this (bytes, default 16 MiB). */
  maxLagOnFailover?: number;
  /** Rejoin fenced old primaries automatically with pg_rewind (default true). */
  rejoin?: boolean;
  /** Permanent physical replication slots kept on every node across failovers and switchovers. */
  permanentSlots?: string[];
  /** HTTP status endpoint; port 0 picks a free one; undefined = none. */
  http?: { host?: string; port: number };
  /** URLs that get a JSON POST for every failover, switchover, fencing and rejoin. */
  webhooks?: string[];
  /** Coordination backend (default: LocalDcs, a lock file in the cluster folder). */
  dcs?: Dcs | ((info: { name: string; http?: string }) => Dcs);
  logger?: Logger;
}

export interface Topology {
  cluster: string;
  primary: string | null;
  term: number;
  sync: boolean;
  monitor: string;
  leader: boolean;
  updatedAt: string;
  nodes: NodeStatus[];
}

class NotLeader extends Error {}

/**
 * The failover monitor: probes every node each interval, feeds tick() and executes its decisions
 * on a local cluster. Only the DCS leader acts; others probe and serve HTTP (so load balancers can
 * ask any monitor) and take over when the lease is free.
 *
 * Events: 'decision' (Decision), 'failover' / 'switchover' (HistoryEntry), 'leader' (boolean).
 */
export class ClusterMonitor extends EventEmitter {
  readonly name: string;
  private readonly c: LocalCluster;
  private readonly log: Logger;
  private readonly cfg: TickConfig;
  private readonly intervalMs: number;
  private readonly probeTimeoutMs: number;
  private readonly doRejoin: boolean;
  private dcs!: Dcs;
  private state: MonitorState;
  private observations: NodeObservation[] = [];
  private statuses: NodeStatus[] = [];
  private running = false;
  private loop: Promise<void> | null = null;
  private leader = false;
  private lastKey = '';
  private server: Server | null = null;
  private pending: Array<{ to: string; resolve: (e: HistoryEntry) => void; reject: (e: Error) => void }> = [];
  httpUrl: string | undefined;

  constructor(private readonly options: MonitorOptions) {
    super();
    const spec = readSpec(options.dir);
    this.c = { dir: options.dir, spec };
    this.name = options.name ?? `${hostname()}-${process.pid}`;
    this.log = options.logger ?? createLogger({ name: 'bulwark-monitor' });
    this.intervalMs = options.intervalMs ?? 1000;
    this.probeTimeoutMs = options.probeTimeoutMs ?? 1000;
    this.doRejoin = options.rejoin ?? true;
    this.cfg = {
      failureThreshold: options.failureThreshold ?? 3,
      sync: spec.sync,
      maxLagOnFailover: options.maxLagOnFailover ?? 16 * 1024 * 1024,
      repointAfter: 3,
      rejoinAfter: 15,
      priorities: Object.fromEntries(spec.nodes.map((n) => [n.name, n.priority])),
      permanentSlots: checkSlotNames(
        options.permanentSlots ?? [],
        spec.nodes.map((n) => n.name),
      ),
    };
    this.state = initialState();
  }

  async start(): Promise<void> {
    if (this.options.http) await this.listen(this.options.http.host ?? '127.0.0.1', this.options.http.port);
    const info = { name: this.name, http: this.httpUrl };
    const d = this.options.dcs;
    this.dcs = typeof d === 'function' ? d(info) : (d ?? new LocalDcs(this.options.dir, info));
    const p = clusterPaths(this.options.dir);
    mkdirSync(p.monitorsDir, { recursive: true });
    writeFileSync(
      join(p.monitorsDir, `${this.name}.json`),
      JSON.stringify({ name: this.name, pid: process.pid, http: this.httpUrl }),
    );
    this.log.info(
      { monitor: this.name, dcs: this.dcs.kind, http: this.httpUrl, ...this.cfg },
      `monitor ${this.name} started`,
    );
    this.running = true;
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
    for (const p of this.pending.splice(0))
      p.reject(new ClusterError('BULWARK_E_CLUSTER_SWITCHOVER', 'monitor stopped'));
    await this.dcs?.close().catch(() => {});
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
    this.server?.closeAllConnections?.();
    rmSync(join(clusterPaths(this.options.dir).monitorsDir, `${this.name}.json`), { force: true });
    this.log.info(`monitor ${this.name} stopped`);
  }

  isLeader(): boolean {
    return this.dcs?.isLeader() ?? false;
  }

  topology(): Topology {
    return {
      cluster: this.c.spec.name,
      primary: this.currentPrimary(),
      term: this.state.term,
      sync: this.c.spec.sync,
      monitor: this.name,
      leader: this.isLeader(),
      updatedAt: new Date().toISOString(),
      nodes: this.statuses,
    };
  }

  /** The recorded primary if the last probe saw it accept writes, else null. */
  private currentPrimary(): string | null {
    const p = this.state.primary;
    const o = this.observations.find((x) => x.name === p);
    return o?.reachable && o.inRecovery === false ? p : null;
  }

  /** Ask this monitor (it must be the leader) for a planned switchover; resolves when done. */
  requestSwitchover(to: string): Promise<HistoryEntry> {
    return new Promise((resolve, reject) => this.pending.push({ to, resolve, reject }));
  }

  private guard = (): void => {
    if (!this.dcs.isLeader()) throw new NotLeader(`monitor ${this.name} lost the leadership: stopping at once`);
  };

  private async run(): Promise<void> {
    while (this.running) {
      const t0 = Date.now();
      try {
        await this.round();
      } catch (err) {
        this.log.error({ err: (err as Error).message }, `monitor loop error: ${(err as Error).message}`);
      }
      const wait = this.intervalMs - (Date.now() - t0);
      if (wait > 0 && this.running) await sleep(wait);
    }
  }

  private async round(): Promise<void> {
    const nowLeader = await this.dcs.acquire();
    if (nowLeader !== this.leader) {
      this.leader = nowLeader;
      if (nowLeader) {
        const stored = (await this.dcs.readState()) ?? readState(this.options.dir);
        // Failure counts are not inherited: the new leader confirms a failure with its own probes.
        this.state = initialState({
          primary: stored?.primary ?? null,
          term: stored?.term ?? 1,
          syncSet: stored?.syncSet ?? [],
          fenced: stored?.fenced ?? [],
        });
        this.log.info(
          { state: stored },
          `monitor ${this.name} became the leader (${this.dcs.kind}); primary on record: ${stored?.primary ?? 'none'}`,
        );
      } else {
        this.log.warn(`monitor ${this.name} is not the leader any more: standing by, taking no action`);
      }
      this.emit('leader', nowLeader);
    }
    if (!this.leader) {
      // Followers keep a fresh view for their HTTP endpoint, from the published state.
      const stored = await this.dcs.readState().catch(() => null);
      if (stored)
        this.state = {
          ...this.state,
          primary: stored.primary,
          term: stored.term,
          syncSet: stored.syncSet,
          fenced: stored.fenced,
        };
    }
    const obs = await this.observe();
    if (this.pending.length) {
      const req = this.pending.shift()!;
      await this.doSwitchover(req.to).then(req.resolve, req.reject);
      await this.dcs.publishTopology(this.topology()).catch(() => {});
      return;
    }
    const decision = tick(this.state, obs, this.cfg, Date.now());
    this.emit('decision', decision);
    if (!this.leader) {
      this.logDecision(decision, 'debug');
      return;
    }
    const before = JSON.stringify(this.persisted(this.state));
    this.state = decision.state;
    this.logDecision(decision, 'info');
    if (decision.action.type !== 'none') {
      try {
        await this.execute(decision.action, decision);
      } catch (err) {
        if (err instanceof NotLeader) this.log.error(err.message);
        else
          this.log.error(
            { action: decision.action, err: (err as Error).message },
            `${decision.action.type} failed: ${(err as Error).message}`,
          );
      }
    }
    if (JSON.stringify(this.persisted(this.state)) !== before) await this.save();
    await this.dcs.publishTopology(this.topology()).catch(() => {});
  }

  private async observe(): Promise<NodeObservation[]> {
    const obs = await probeAll(localTargets(this.options.dir), this.probeTimeoutMs);
    // The nodes are processes of this host: say which unreachable ones crashed (restarted in place).
    await Promise.all(
      obs.map(async (o) => {
        if (o.reachable) {
          o.local = { running: true, crashed: false };
          return;
        }
        const l = await localProcessState(this.c, o.name).catch(() => null);
        if (!l) return;
        o.local = { running: l.running, crashed: l.crashed };
        if (l.timeline) o.timeline = l.timeline;
      }),
    );
    this.observations = obs;
    this.statuses = summarize(obs);
    return obs;
  }

  private persisted(s: MonitorState): ClusterState {
    return { primary: s.primary, term: s.term, syncSet: s.syncSet, fenced: s.fenced, updatedBy: this.name };
  }

  private async save(): Promise<void> {
    if (!(await this.dcs.writeState(this.persisted(this.state))))
      throw new NotLeader(`monitor ${this.name} could not record the cluster state: not the leader`);
  }

  private logDecision(d: Decision, level: 'info' | 'debug'): void {
    // Healthy rounds differ only in LSNs: log them once, log every change and every action.
    const key = `${d.action.type}:${d.reason.replace(/[0-9A-F]+\/[0-9A-F]+/g, 'LSN')}`;
    if (d.action.type === 'none' && key === this.lastKey && level === 'info') return;
    this.lastKey = key;
    this.log[
      level === 'info' && /failed probe|not failing over|waiting|refusing|cannot/.test(d.reason) ? 'warn' : level
    ]({ action: d.action, ...(d.evidence ? { evidence: d.evidence } : {}) }, d.reason);
  }

  private async execute(action: Action, decision: Decision): Promise<void> {
    switch (action.type) {
      case 'none':
        return;
      case 'adopt':
        if (action.fence) {
          this.guard();
          const pids = await fence(this.c, action.fence);
          this.log.warn(
            { node: action.fence, pids },
            `fenced ${action.fence}: killed ${pids.length} processes, standby.signal written`,
          );
          this.state = {
            ...this.state,
            primary: action.node,
            term: this.state.term + 1,
            fenced: [...new Set([...this.state.fenced, action.fence])],
          };
        } else this.state = { ...this.state, primary: action.node };
        return;
      case 'failover':
        return this.failover(action.from, action.to, decision);
      case 'fence': {
        this.guard();
        const pids = await fence(this.c, action.node);
        this.state = { ...this.state, fenced: [...new Set([...this.state.fenced, action.node])] };
        this.log.warn(
          { node: action.node, pids },
          `fenced ${action.node}: killed ${pids.length} processes, standby.signal written`,
        );
        await this.alert({ event: 'fenced', node: action.node, reason: decision.reason });
        return;
      }
      case 'rejoin': {
        if (!this.doRejoin) return;
        this.guard();
        const primary = this.state.primary!;
        const t0 = Date.now();
        const r = await rejoin(this.c, action.node, primary, this.guard);
        this.log.info(
          { node: action.node, primary, method: r.method, detail: r.detail, ms: Date.now() - t0 },
          `${action.node} rejoined as a replica of ${primary} by ${r.method} in ${Date.now() - t0} ms (${r.detail})`,
        );
        appendHistory(this.options.dir, {
          kind: 'rejoin',
          node: action.node,
          primary,
          method: r.method,
          ms: Date.now() - t0,
          at: new Date().toISOString(),
          by: this.name,
        });
        await this.alert({ event: 'rejoined', node: action.node, primary, method: r.method });
        return;
      }
      case 'restart': {
        this.guard();
        await restartInPlace(this.c, action.node, action.role);
        this.log.warn(
          { node: action.node, role: action.role },
          `restarting crashed ${action.node} in place as ${action.role === 'primary' ? 'the primary' : 'a replica'}`,
        );
        appendHistory(this.options.dir, {
          kind: 'restart',
          node: action.node,
          role: action.role,
          at: new Date().toISOString(),
          by: this.name,
        });
        await this.alert({ event: 'restarted', node: action.node, role: action.role, reason: decision.reason });
        return;
      }
      case 'slots':
        this.guard();
        await syncPermanentSlots(this.c, action.node, action.create, action.advance);
        return;
      case 'repoint':
        this.guard();
        await ensureSlots(this.c, this.state.primary!);
        await repoint(this.c, action.node, this.state.primary!);
        return;
      case 'set-sync':
        this.guard();
        await setSyncNames(this.c, action.node, action.names);
        return;
    }
  }

  private async failover(from: string, to: string, decision: Decision): Promise<void> {
    const startedAt = this.state.firstFailureAt ?? Date.now();
    const decidedAt = Date.now();
    this.guard();
    // Fence first: the old primary must be unable to take a write before another node can.
    const pids = await fence(this.c, from);
    this.log.warn(
      { node: from, pids },
      `fenced old primary ${from}: killed ${pids.length} processes, standby.signal written`,
    );
    this.guard();
    const reachable = this.observations
      .filter((o) => o.reachable && o.inRecovery && o.name !== to && o.name !== from)
      .map((o) => o.name);
    const syncSet = this.cfg.sync
      ? reachable.length
        ? reachable
        : this.c.spec.nodes.map((n) => n.name).filter((n) => n !== to)
      : [];
    if (this.cfg.sync) await setSyncNames(this.c, to, syncSet);
    this.guard();
    await promote(this.c, to);
    const writableAt = Date.now();
    this.state = afterPromotion(this.state, from, to, syncSet, true);
    await this.save();
    await this.observe(); // /primary and /topology name the new primary now, not after the next round
    await this.dcs.publishTopology(this.topology()).catch(() => {});
    this.log.warn(
      { from, to, term: this.state.term, detectMs: decidedAt - startedAt, promoteMs: writableAt - decidedAt },
      `failover done: ${to} accepts writes (term ${this.state.term}); ${from} failed ${writableAt - startedAt} ms ago (detection ${decidedAt - startedAt} ms, promotion ${writableAt - decidedAt} ms)`,
    );
    const entry: HistoryEntry = {
      kind: 'failover',
      term: this.state.term,
      from,
      to,
      by: this.name,
      startedAt: new Date(startedAt).toISOString(),
      decidedAt: new Date(decidedAt).toISOString(),
      writableAt: new Date(writableAt).toISOString(),
      durationMs: writableAt - startedAt,
      promoteMs: writableAt - decidedAt,
      reason: decision.reason,
      oldPrimary: `fenced (killed ${pids.length} processes)`,
    };
    appendHistory(this.options.dir, entry);
    this.emit('failover', entry);
    await ensureSlots(this.c, to).catch((err) => this.log.error(`could not create slots on ${to}: ${err.message}`));
    for (const n of reachable) {
      await repoint(this.c, n, to).catch((err) => this.log.error(`could not re-point ${n}: ${err.message}`));
    }
    await this.alert({ event: 'failover', ...entry });
  }

  private async doSwitchover(to: string): Promise<HistoryEntry> {
    this.guard();
    const from = this.state.primary;
    if (!from) throw new ClusterError('BULWARK_E_CLUSTER_SWITCHOVER', 'no primary on record');
    this.log.info(`switchover requested: ${from} -> ${to}`);
    const { entry, syncSet } = await switchover(this.c, {
      from,
      to,
      sync: this.cfg.sync,
      term: this.state.term,
      by: this.name,
      guard: this.guard,
      log: (msg, data) => this.log.info(data ?? {}, msg),
    });
    this.state = afterPromotion(this.state, from, to, syncSet, false);
    await this.save();
    await this.observe();
    appendHistory(this.options.dir, entry);
    this.log.warn({ ...entry }, `switchover done: ${to} is the primary (write gap ${entry.promoteMs} ms)`);
    this.emit('switchover', entry);
    await this.alert({ event: 'switchover', ...entry });
    return entry;
  }

  private async alert(payload: Record<string, unknown>): Promise<void> {
    const body = JSON.stringify({
      cluster: this.c.spec.name,
      monitor: this.name,
      at: new Date().toISOString(),
      ...payload,
    });
    await Promise.all(
      (this.options.webhooks ?? []).map(async (url) => {
        try {
          const res = await fetch(url, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body,
            signal: AbortSignal.timeout(3000),
          });
          if (!res.ok) this.log.warn(`webhook ${new URL(url).host} answered ${res.status}`);
        } catch (err) {
          this.log.warn(`webhook ${safeHost(url)} failed: ${(err as Error).message}`);
        }
      }),
    );
  }

  private listen(host: string, port: number): Promise<void> {
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((err) => send(res, 500, { error: (err as Error).message }));
    });
    return new Promise((resolve, reject) => {
      this.server!.once('error', (err) =>
        reject(new ClusterError('BULWARK_E_CLUSTER_MONITOR', `cannot listen on ${host}:${port}: ${err.message}`)),
      );
      this.server!.listen(port, host, () => {
        const a = this.server!.address();
        this.httpUrl = `http://${host}:${typeof a === 'object' && a ? a.port : port}`;
        resolve();
      });
    });
  }

  /**
   * GET /primary (200 + the primary, 503 when none), /primary/<node> and /replica/<node> (200 or 503,
   * for load balancer health checks), /replica (streaming replicas; ?maxLagBytes=), /health,
   * /topology, /history; POST /switchover {"to": node} (leader only; 409 + leader address otherwise).
   */
  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    const parts = url.pathname.split('/').filter(Boolean);
    const topo = this.topology();
    const maxLag = Number(url.searchParams.get('maxLagBytes') ?? Number.POSITIVE_INFINITY);
    const goodReplica = (n: NodeStatus) =>
      n.role === 'replica' && n.streaming === true && (n.lagBytes ?? Infinity) <= maxLag;
    if (req.method === 'POST' && parts[0] === 'switchover') {
      const body = JSON.parse((await readBody(req)) || '{}');
      if (!this.isLeader())
        return send(res, 409, { error: 'not the leader', leader: await this.dcs.leader().catch(() => null) });
      if (typeof body.to !== 'string') return send(res, 400, { error: 'body must be {"to": "<node>"}' });
      try {
        return send(res, 200, await this.requestSwitchover(body.to));
      } catch (err) {
        return send(res, 500, { error: (err as Error).message });
      }
    }
    if (req.method !== 'GET') return send(res, 405, { error: 'method not allowed' });
    switch (parts[0]) {
      case 'primary': {
        const p = topo.nodes.find((n) => n.name === topo.primary);
        if (parts[1]) return send(res, p?.name === parts[1] ? 200 : 503, { node: parts[1], primary: topo.primary });
        return p ? send(res, 200, p) : send(res, 503, { error: 'no primary', term: topo.term });
      }
      case 'replica': {
        if (parts[1]) {
          const n = topo.nodes.find((x) => x.name === parts[1]);
          return send(res, n && goodReplica(n) ? 200 : 503, n ?? { error: `no node ${parts[1]}` });
        }
        const replicas = topo.nodes.filter(goodReplica);
        return send(res, replicas.length ? 200 : 503, { replicas });
      }
      case 'health':
        return send(res, topo.primary ? 200 : 503, {
          status: topo.primary ? 'ok' : 'no primary',
          primary: topo.primary,
          monitor: this.name,
          leader: topo.leader,
          term: topo.term,
        });
      case 'topology':
      case undefined:
        return send(res, 200, topo);
      case 'history':
        return send(res, 200, { history: readHistory(this.options.dir) });
      default:
        return send(res, 404, { error: 'unknown path' });
    }
  }
}

/** Permanent slot names: PostgreSQL's rule for slot names, and not a node's name (those are the cluster's own). */
export function checkSlotNames(names: string[], nodes: string[]): string[] {
  for (const n of names) {
    if (!/^[a-z0-9_]{1,63}$/.test(n))
      throw new ClusterError(
        'BULWARK_E_CLUSTER_SLOT',
        `permanent slot "${n}": a slot name is 1-63 lower-case letters, digits or underscores`,
      );
    if (nodes.includes(n))
      throw new ClusterError(
        'BULWARK_E_CLUSTER_SLOT',
        `permanent slot "${n}" is the name of a node: those slots are the cluster's own, pick another name`,
      );
  }
  return [...new Set(names)];
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let s = '';
    req.setEncoding('utf8');
    req.on('data', (d) => {
      s += d;
      if (s.length > 65536) req.destroy();
    });
    req.on('end', () => resolve(s));
    req.on('error', reject);
  });
}

function safeHost(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return '(bad url)';
  }
}
