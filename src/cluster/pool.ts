import { EventEmitter } from 'node:events';
import pg from 'pg';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { AmbiguousCommitError, ClusterError } from './errors.js';
import { compareLsn, lsnDiff } from './lsn.js';

export interface ClusterPoolOptions extends Omit<pg.PoolConfig, 'host' | 'port' | 'connectionString'> {
  /** Connection URLs of every node (postgresql://user:pass@host:port/db). */
  nodes?: string[];
  /** HTTP address(es) of `bulwark cluster monitor`: the topology comes from there when it answers. */
  monitor?: string | string[];
  /** Replicas whose replay lag exceeds this get no reads (default 10 s). */
  maxLagSeconds?: number;
  /** Replicas further behind than this many bytes of WAL get no reads (default: no byte bound). */
  maxLagBytes?: number;
  /** How often the topology is refreshed (default 1000 ms; 100 ms while a write waits for a primary). */
  refreshIntervalMillis?: number;
  /** How long a write (or pool.connect()) waits for a primary during a failover (default 15 s). */
  writeTimeoutMillis?: number;
  /**
   * Read-your-writes: after a write through pool.query, reads wait (up to timeoutMillis, default
   * 1000) until the chosen replica has replayed the write's LSN, else they go to the primary.
   */
  readYourWrites?: boolean | { timeoutMillis?: number };
  /** prom-client registry for the routing metrics (default: a registry of this pool, `pool.metrics`). */
  registry?: Registry;
}

export interface QueryOptions {
  /** Route to a replica within the lag bounds (falls back to the primary). */
  readOnly?: boolean;
  /** Only read from a node that has replayed at least this LSN (e.g. pool.lastWriteLsn from another request). */
  minLsn?: string;
}

interface NodeView {
  key: string;
  name: string;
  host: string;
  port: number;
  role: 'primary' | 'replica' | 'down';
  lsn: string | null;
  lagBytes: number | null;
  lagSeconds: number | null;
  streaming: boolean;
  timeline: number | null;
}

const PROBE = `SELECT pg_is_in_recovery() AS r,
  (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text AS lsn,
  extract(epoch from clock_timestamp() - pg_last_xact_replay_timestamp())::float8 AS age,
  CASE WHEN pg_is_in_recovery() THEN NULL
       ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END AS tl,
  (SELECT COALESCE(bool_or(status = 'streaming'), bool_or(pid IS NOT NULL), false) FROM pg_stat_wal_receiver) AS streaming`;
// pg_stat_wal_receiver shows its status only to superusers and pg_read_all_stats members; for other
// users a running WAL receiver process is the best evidence available (grant pg_monitor to do better).

/** Errors that mean the connection (not the statement) failed. */
function connectionLevel(err: any): boolean {
  const code: string | undefined = err?.code;
  if (!code) return true; // socket errors, "Connection terminated unexpectedly", timeouts
  return /^(08|57P0[1-3])/.test(code) || /^E[A-Z]+$/.test(code);
}

type Callback = (err: Error | null, result?: pg.QueryResult) => void;

/**
 * A read that gets no answer in this time (node-postgres `query_timeout`, set it to change this) fails on
 * that node and is retried on another one. Without a bound, a read on a pooled connection to a replica
 * that froze or was cut off by the network waits for the whole outage: no RST ever comes.
 */
export const DEFAULT_READ_TIMEOUT_MS = 10_000;
/** node-postgres `connectionTimeoutMillis` unless set: a connect that gets no answer fails over to another node. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 2000;

/**
 * A pg.Pool-compatible pool that routes: writes and transactions to the primary, reads to replicas
 * within the lag bounds. It only follows the topology (from the monitor, or by probing
 * pg_is_in_recovery()); it never promotes anything.
 *
 * Failure contract: a write that could not reach the primary (connect failed, node read-only) waits
 * for a new primary up to writeTimeoutMillis and is then sent once; a write whose connection broke
 * after it was sent rejects with AmbiguousCommitError and is never retried. Reads retry on another
 * node. Events: 'topology', 'route', 'fallback', 'primary-wait', 'ambiguous', 'error', and pg-pool's
 * 'connect', 'acquire', 'release', 'remove' (with the node as second argument).
 */
export class ClusterPool extends EventEmitter {
  readonly metrics: Registry;
  readonly read: {
    query: (text: string | pg.QueryConfig, values?: unknown[]) => Promise<pg.QueryResult>;
    connect: () => Promise<pg.PoolClient>;
  };
  private readonly pools = new Map<string, pg.Pool>();
  private readonly nodeConfigs = new Map<string, pg.PoolConfig>();
  private views: NodeView[] = [];
  private primaryKey: string | null = null;
  private timer: NodeJS.Timeout | null = null;
  private refreshing: Promise<void> | null = null;
  private ended = false;
  private rr = 0;
  private _lastWriteLsn: string | null = null;
  /** The primary's WAL position at each probe: how far back in time a replica's replay position is. */
  private primarySamples: Array<{ at: number; lsn: string }> = [];
  private readonly opts: Required<
    Pick<ClusterPoolOptions, 'maxLagSeconds' | 'refreshIntervalMillis' | 'writeTimeoutMillis'>
  > &
    ClusterPoolOptions;
  private readonly m: {
    queries: Counter<'kind' | 'node' | 'role'>;
    fallbacks: Counter<'reason'>;
    ambiguous: Counter<string>;
    writeWait: Histogram<string>;
    primaryKnown: Gauge<string>;
    eligible: Gauge<string>;
  };

  constructor(options: ClusterPoolOptions) {
    super();
    if (!options.nodes?.length && !options.monitor)
      throw new ClusterError('BULWARK_E_CLUSTER_NODE', 'createClusterPool needs nodes: [urls] or monitor: url');
    this.opts = { maxLagSeconds: 10, refreshIntervalMillis: 1000, writeTimeoutMillis: 15_000, ...options };
    for (const url of options.nodes ?? []) {
      const u = new URL(url);
      const key = `${u.hostname}:${u.port || 5432}`;
      this.nodeConfigs.set(key, { ...this.baseConfig(), connectionString: url });
    }
    this.metrics = options.registry ?? new Registry();
    const registers = [this.metrics];
    this.m = {
      queries: new Counter({
        name: 'bulwark_pool_queries_total',
        help: 'Queries routed, by kind (read/write) and node',
        labelNames: ['kind', 'node', 'role'],
        registers,
      }),
      fallbacks: new Counter({
        name: 'bulwark_pool_read_fallbacks_total',
        help: 'Reads sent to the primary because no replica qualified',
        labelNames: ['reason'],
        registers,
      }),
      ambiguous: new Counter({
        name: 'bulwark_pool_ambiguous_writes_total',
        help: 'Writes whose connection broke after sending (outcome unknown)',
        registers,
      }),
      writeWait: new Histogram({
        name: 'bulwark_pool_write_wait_seconds',
        help: 'Time writes waited for a primary',
        buckets: [0.01, 0.1, 0.5, 1, 2, 5, 10, 30],
        registers,
      }),
      primaryKnown: new Gauge({
        name: 'bulwark_pool_primary_known',
        help: '1 when the pool knows a primary',
        registers,
      }),
      eligible: new Gauge({
        name: 'bulwark_pool_replicas_eligible',
        help: 'Replicas within the lag bounds',
        registers,
      }),
    };
    this.read = {
      query: (text, values) => this.routeRead(text, values, {}),
      connect: () => this.readClient(),
    };
    this.timer = setInterval(() => void this.refresh().catch(() => {}), this.opts.refreshIntervalMillis);
    this.timer.unref();
    void this.refresh().catch(() => {});
  }

  /** Highest LSN this pool's writes reached (read-your-writes token). */
  get lastWriteLsn(): string | null {
    return this._lastWriteLsn;
  }
  get totalCount(): number {
    return [...this.pools.values()].reduce((s, p) => s + p.totalCount, 0);
  }
  get idleCount(): number {
    return [...this.pools.values()].reduce((s, p) => s + p.idleCount, 0);
  }
  get waitingCount(): number {
    return [...this.pools.values()].reduce((s, p) => s + p.waitingCount, 0);
  }

  /** The current view: which node is primary, which replicas qualify for reads. */
  topology(): {
    primary: string | null;
    replicas: Array<{ name: string; lagBytes: number | null; lagSeconds: number | null; eligible: boolean }>;
  } {
    return {
      primary: this.primaryKey ? (this.views.find((v) => v.key === this.primaryKey)?.name ?? this.primaryKey) : null,
      replicas: this.views
        .filter((v) => v.role === 'replica')
        .map((v) => ({ name: v.name, lagBytes: v.lagBytes, lagSeconds: v.lagSeconds, eligible: this.eligible(v) })),
    };
  }

  query(
    text: string | pg.QueryConfig,
    values?: unknown[] | Callback,
    options?: QueryOptions | Callback,
  ): Promise<pg.QueryResult>;
  query(text: string | pg.QueryConfig, ...rest: any[]): any {
    const cb: Callback | undefined = typeof rest[rest.length - 1] === 'function' ? rest.pop() : undefined;
    const [values, options] = rest as [unknown[] | undefined, QueryOptions | undefined];
    const p = options?.readOnly ? this.routeRead(text, values, options) : this.routeWrite(text, values);
    if (!cb) return p;
    p.then(
      (r) => cb(null, r),
      (e) => cb(e),
    );
    return undefined;
  }

  /** A client on the primary, for transactions (waits for a primary like writes do). Call release(). */
  async connect(): Promise<pg.PoolClient> {
    const { key, client } = await this.primaryClient(Date.now() + this.opts.writeTimeoutMillis);
    this.m.queries.inc({ kind: 'transaction', node: this.nameOf(key), role: 'primary' });
    return this.guardCommit(client, key);
  }

  /**
   * A connection to the primary, waiting (until the deadline) for one to be known and reachable. A
   * failed connect sent nothing, so it is always safe to forget that primary and try the next one.
   */
  private async primaryClient(deadline: number): Promise<{ key: string; client: pg.PoolClient }> {
    for (;;) {
      const key = await this.waitForPrimary(deadline);
      try {
        return { key, client: await this.poolFor(key).connect() };
      } catch (err) {
        this.lostPrimary(key, err);
      }
    }
  }

  /**
   * Inside a transaction, a broken connection before COMMIT means nothing committed (a plain error);
   * a connection that breaks during COMMIT leaves the outcome unknown: report that as
   * AmbiguousCommitError, as for single writes. Promise-style calls only; callbacks pass through.
   */
  private guardCommit(client: pg.PoolClient, key: string): pg.PoolClient {
    const original = client.query.bind(client) as (...args: any[]) => any;
    const isCommit = (q: unknown) => {
      const text = typeof q === 'string' ? q : (q as { text?: string })?.text;
      return typeof text === 'string' && /^\s*(commit|end)(\s+(work|transaction))?\s*;?\s*$/i.test(text);
    };
    (client as any).query = (...args: any[]) => {
      const result = original(...args);
      if (!isCommit(args[0]) || typeof args[args.length - 1] === 'function' || !result?.then) return result;
      return result.catch((err: unknown) => {
        if (!connectionLevel(err)) throw err;
        this.lostPrimary(key, err);
        this.m.ambiguous.inc();
        this.emit('ambiguous', { node: this.nameOf(key), error: (err as Error).message });
        throw new AmbiguousCommitError(this.nameOf(key), err);
      });
    };
    return client;
  }

  async end(): Promise<void> {
    this.ended = true;
    if (this.timer) clearInterval(this.timer);
    await Promise.all([...this.pools.values()].map((p) => p.end().catch(() => {})));
    this.pools.clear();
  }

  // ---------------------------------------------------------------------------------- writes

  private async routeWrite(text: string | pg.QueryConfig, values?: unknown[]): Promise<pg.QueryResult> {
    const started = Date.now();
    const deadline = started + this.opts.writeTimeoutMillis;
    for (;;) {
      const { key, client } = await this.primaryClient(deadline);
      let result: pg.QueryResult;
      try {
        result = await client.query(text as any, values as any[]);
      } catch (err: any) {
        if (err?.code === '25006') {
          // read_only_sql_transaction: this node is a replica now; the statement did not run.
          client.release();
          this.lostPrimary(key, err);
          continue;
        }
        if (connectionLevel(err)) {
          client.release(err);
          this.lostPrimary(key, err);
          this.m.ambiguous.inc();
          const amb = new AmbiguousCommitError(this.nameOf(key), err);
          this.emit('ambiguous', { node: this.nameOf(key), error: err.message });
          throw amb;
        }
        client.release();
        throw err;
      }
      try {
        if (this.opts.readYourWrites) {
          const r = await client.query('SELECT pg_current_wal_lsn()::text AS l');
          const l = r.rows[0].l as string;
          if (compareLsn(l, this._lastWriteLsn) > 0) this._lastWriteLsn = l;
        }
        client.release();
      } catch (err) {
        client.release(err as Error); // the write itself succeeded; only the LSN read failed
      }
      const waited = (Date.now() - started) / 1000;
      this.m.writeWait.observe(waited);
      this.m.queries.inc({ kind: 'write', node: this.nameOf(key), role: 'primary' });
      this.emit('route', { kind: 'write', node: this.nameOf(key) });
      return result;
    }
  }

  /**
   * Forget the primary after a failure on it. The topology source may still name it for a moment (the
   * monitor probes once a second), so callers that retry pause briefly first instead of spinning.
   */
  private lostPrimary(key: string, err: unknown): void {
    this.retryPause = new Promise((r) => setTimeout(r, 50));
    if (this.primaryKey === key) {
      this.primaryKey = null;
      this.m.primaryKnown.set(0);
      this.emit('topology', { primary: null, reason: (err as Error)?.message });
    }
    const v = this.views.find((x) => x.key === key);
    if (v) v.role = 'down';
  }

  private retryPause: Promise<void> = Promise.resolve();

  private async waitForPrimary(deadline: number): Promise<string> {
    await this.retryPause;
    let announced = false;
    const t0 = Date.now();
    while (!this.ended) {
      if (this.primaryKey) {
        if (announced) this.emit('primary-wait', { waitedMs: Date.now() - t0, primary: this.nameOf(this.primaryKey) });
        return this.primaryKey;
      }
      if (Date.now() > deadline)
        throw new ClusterError(
          'BULWARK_E_CLUSTER_NO_PRIMARY',
          `no primary accepted writes within ${this.opts.writeTimeoutMillis} ms (nodes: ${this.views.map((v) => `${v.name}=${v.role}`).join(', ') || 'unknown'})`,
        );
      announced = true;
      await this.refresh().catch(() => {});
      if (!this.primaryKey) await new Promise((r) => setTimeout(r, 100));
    }
    throw new ClusterError('BULWARK_E_CLUSTER_NO_PRIMARY', 'pool ended');
  }

  // ---------------------------------------------------------------------------------- reads

  private eligible(v: NodeView): boolean {
    if (v.role !== 'replica' || !v.streaming) return false;
    if (v.lagSeconds === null || v.lagSeconds > this.opts.maxLagSeconds) return false;
    if (this.opts.maxLagBytes !== undefined && (v.lagBytes === null || v.lagBytes > this.opts.maxLagBytes))
      return false;
    return true;
  }

  private readCandidates(): string[] {
    const ok = this.views.filter((v) => this.eligible(v)).map((v) => v.key);
    // round robin over the qualifying replicas
    const start = ok.length ? this.rr++ % ok.length : 0;
    return [...ok.slice(start), ...ok.slice(0, start)];
  }

  private async routeRead(
    text: string | pg.QueryConfig,
    values: unknown[] | undefined,
    options: QueryOptions,
  ): Promise<pg.QueryResult> {
    if (!this.views.length) await this.refresh().catch(() => {});
    const minLsn = options.minLsn ?? (this.opts.readYourWrites ? this._lastWriteLsn : null);
    const rywTimeout =
      typeof this.opts.readYourWrites === 'object' ? (this.opts.readYourWrites.timeoutMillis ?? 1000) : 1000;
    const replicas = this.readCandidates();
    if (!replicas.length) {
      const reason = this.views.some((v) => v.role === 'replica') ? 'no replica within lag bounds' : 'no replica';
      this.m.fallbacks.inc({ reason });
      this.emit('fallback', { reason });
    }
    for (const key of replicas) {
      let client: pg.PoolClient;
      try {
        client = await this.poolFor(key).connect();
      } catch {
        this.markDown(key);
        continue;
      }
      try {
        if (minLsn && !(await this.caughtUp(client, minLsn, rywTimeout))) {
          client.release();
          this.m.fallbacks.inc({ reason: 'read-your-writes timeout' });
          this.emit('fallback', { reason: 'read-your-writes timeout', node: this.nameOf(key) });
          break;
        }
        const r = await client.query(this.bounded(text), values as any[]);
        client.release();
        this.m.queries.inc({ kind: 'read', node: this.nameOf(key), role: 'replica' });
        this.emit('route', { kind: 'read', node: this.nameOf(key) });
        return r;
      } catch (err) {
        if (!connectionLevel(err)) {
          client.release();
          throw err;
        }
        client.release(err as Error);
        this.markDown(key); // reads are safe to retry elsewhere
      }
    }
    // Fall back to the primary (a read there is always fresh); retry there through failovers too.
    const deadline = Date.now() + this.opts.writeTimeoutMillis;
    for (;;) {
      const key = await this.waitForPrimary(deadline);
      try {
        const client = await this.poolFor(key).connect();
        try {
          const r = await client.query(this.bounded(text), values as any[]);
          client.release();
          this.m.queries.inc({ kind: 'read', node: this.nameOf(key), role: 'primary' });
          this.emit('route', { kind: 'read', node: this.nameOf(key), fallback: true });
          return r;
        } catch (err) {
          if (!connectionLevel(err)) {
            client.release();
            throw err;
          }
          client.release(err as Error);
          // No answer within query_timeout from the last resort: report it (a slow read is not a lost primary).
          if ((err as Error).message === 'Query read timeout') throw err;
          this.lostPrimary(key, err);
        }
      } catch (err) {
        if (err instanceof Error && (!connectionLevel(err) || err.message === 'Query read timeout')) throw err;
        this.lostPrimary(key, err);
      }
    }
  }

  /** The read as a query config bounded by query_timeout (the user's, else DEFAULT_READ_TIMEOUT_MS). */
  private bounded(text: string | pg.QueryConfig): pg.QueryConfig {
    const query_timeout = this.opts.query_timeout ?? DEFAULT_READ_TIMEOUT_MS;
    if (typeof text === 'string') return { text, query_timeout } as pg.QueryConfig;
    return { query_timeout, ...text } as pg.QueryConfig;
  }

  private async caughtUp(client: pg.PoolClient, lsn: string, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = await client.query(this.bounded('SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn AS ok'), [lsn]);
      if (r.rows[0].ok) return true;
      if (Date.now() > deadline) return false;
      await new Promise((res) => setTimeout(res, 5));
    }
  }

  private async readClient(): Promise<pg.PoolClient> {
    for (const key of this.readCandidates()) {
      try {
        return await this.poolFor(key).connect();
      } catch {
        this.markDown(key);
      }
    }
    this.m.fallbacks.inc({ reason: 'no replica within lag bounds' });
    return this.connect();
  }

  private markDown(key: string): void {
    const v = this.views.find((x) => x.key === key);
    if (v) v.role = 'down';
  }

  // ---------------------------------------------------------------------------------- topology

  private baseConfig(): pg.PoolConfig {
    const {
      nodes,
      monitor,
      maxLagSeconds,
      maxLagBytes,
      refreshIntervalMillis,
      writeTimeoutMillis,
      readYourWrites,
      registry,
      ...pgOpts
    } = this.opts ?? ({} as ClusterPoolOptions);
    return { connectionTimeoutMillis: DEFAULT_CONNECT_TIMEOUT_MS, ...pgOpts };
  }

  private configFor(key: string): pg.PoolConfig {
    const known = this.nodeConfigs.get(key);
    if (known) return known;
    const i = key.lastIndexOf(':');
    const cfg = { ...this.baseConfig(), host: key.slice(0, i), port: Number(key.slice(i + 1)) };
    // credentials of a node URL the user gave, for nodes the monitor told us about
    const anyUrl = this.opts.nodes?.[0];
    if (anyUrl) {
      const u = new URL(anyUrl);
      Object.assign(cfg, {
        user: cfg.user ?? (decodeURIComponent(u.username) || undefined),
        password: cfg.password ?? (decodeURIComponent(u.password) || undefined),
        database: cfg.database ?? (u.pathname.slice(1) || undefined),
      });
    }
    this.nodeConfigs.set(key, cfg);
    return cfg;
  }

  private poolFor(key: string): pg.Pool {
    let p = this.pools.get(key);
    if (!p) {
      p = new pg.Pool(this.configFor(key));
      // Idle clients die with their server during a failover: never let that crash the app.
      p.on('error', (err) => {
        if (this.listenerCount('error')) this.emit('error', err);
      });
      // A server that dies sends FATAL to connections that are checked out but between queries;
      // pg would throw that as an uncaught 'error'. The next query on the client fails anyway.
      p.on('connect', (client) => client.on('error', () => {}));
      // pg-pool's own events, as node-postgres users know them
      for (const event of ['connect', 'acquire', 'release', 'remove'] as const)
        p.on(event as 'connect', (client: pg.PoolClient) => this.emit(event, client, this.nameOf(key)));
      this.pools.set(key, p);
    }
    return p;
  }

  private nameOf(key: string): string {
    return this.views.find((v) => v.key === key)?.name ?? key;
  }

  /** Refresh the topology (coalesced: concurrent callers share one refresh). */
  refresh(): Promise<void> {
    if (!this.refreshing)
      this.refreshing = this.doRefresh().finally(() => {
        this.refreshing = null;
      });
    return this.refreshing;
  }

  private async doRefresh(): Promise<void> {
    let views: NodeView[] | null = null;
    if (this.opts.monitor) views = await this.fromMonitor();
    if (!views && this.nodeConfigs.size) views = await this.fromProbes();
    if (!views || this.ended) return;
    this.views = views;
    const primaries = views.filter((v) => v.role === 'primary');
    // Two writable nodes: follow the newest timeline; never guess between equals.
    primaries.sort((a, b) => (b.timeline ?? 0) - (a.timeline ?? 0));
    const chosen =
      primaries.length === 1 || (primaries.length > 1 && (primaries[0]!.timeline ?? 0) > (primaries[1]!.timeline ?? 0))
        ? primaries[0]!.key
        : null;
    if (chosen !== this.primaryKey) {
      this.primaryKey = chosen;
      this.emit('topology', this.topology());
    }
    this.m.primaryKnown.set(chosen ? 1 : 0);
    this.m.eligible.set(views.filter((v) => this.eligible(v)).length);
  }

  private async fromMonitor(): Promise<NodeView[] | null> {
    const urls = Array.isArray(this.opts.monitor) ? this.opts.monitor : [this.opts.monitor!];
    for (const url of urls) {
      try {
        const res = await fetch(`${url.replace(/\/$/, '')}/topology`, { signal: AbortSignal.timeout(1000) });
        if (!res.ok) continue;
        const t = (await res.json()) as { primary: string | null; nodes: any[] };
        return t.nodes.map((n) => ({
          key: `${n.host}:${n.port}`,
          name: n.name,
          host: n.host,
          port: n.port,
          // the monitor's primary is the one it recorded and saw writable; anything else is not
          role: n.name === t.primary ? 'primary' : n.role === 'replica' ? 'replica' : 'down',
          lsn: n.lsn,
          lagBytes: n.lagBytes,
          lagSeconds: n.lagSeconds,
          streaming: n.streaming === true,
          timeline: n.timeline,
        }));
      } catch {
        // try the next monitor
      }
    }
    return null;
  }

  private async fromProbes(): Promise<NodeView[]> {
    const probes = await Promise.all(
      [...this.nodeConfigs.entries()].map(async ([key, cfg]) => {
        const client = new pg.Client({ ...cfg, connectionTimeoutMillis: 1000, query_timeout: 1000 } as pg.ClientConfig);
        client.on('error', () => {});
        try {
          await client.connect();
          const r = (await client.query(PROBE)).rows[0];
          return { key, r };
        } catch {
          return { key, r: null };
        } finally {
          client.end().catch(() => {});
        }
      }),
    );
    const prim = probes.filter((p) => p.r && !p.r.r);
    const primaryLsn = prim.length === 1 ? (prim[0]!.r.lsn as string) : null;
    const now = Date.now();
    if (primaryLsn) {
      this.primarySamples.push({ at: now, lsn: primaryLsn });
      const keep = now - Math.max(60_000, this.opts.maxLagSeconds * 2000);
      while (this.primarySamples.length > 2 && this.primarySamples[0]!.at < keep) this.primarySamples.shift();
    }
    return probes.map(({ key, r }) => {
      const i = key.lastIndexOf(':');
      const base = { key, name: key, host: key.slice(0, i), port: Number(key.slice(i + 1)), timeline: null };
      if (!r) return { ...base, role: 'down', lsn: null, lagBytes: null, lagSeconds: null, streaming: false };
      if (!r.r)
        return { ...base, role: 'primary', lsn: r.lsn, lagBytes: 0, lagSeconds: 0, streaming: false, timeline: r.tl };
      const lagBytes = primaryLsn ? lsnDiff(primaryLsn, r.lsn) : null;
      return {
        ...base,
        role: 'replica',
        lsn: r.lsn,
        lagBytes,
        lagSeconds: this.lagSeconds(lagBytes, r.lsn, r.age, now),
        streaming: r.streaming,
      };
    });
  }

  /**
   * Seconds a replica is behind, without privileges: 0 when it replayed everything; else the age of the
   * newest primary position it has replayed (it has all the primary had then). The age of its last
   * replayed transaction is only the fallback: after an idle spell it is large although the replica is
   * a few milliseconds behind.
   */
  private lagSeconds(lagBytes: number | null, replayLsn: string, age: number | null, now: number): number | null {
    if (lagBytes === 0) return 0;
    for (let i = this.primarySamples.length - 1; i >= 0; i--) {
      const s = this.primarySamples[i]!;
      if (compareLsn(s.lsn, replayLsn) <= 0) return (now - s.at) / 1000;
    }
    const oldest = this.primarySamples[0];
    if (oldest && now - oldest.at > this.opts.maxLagSeconds * 1000) return (now - oldest.at) / 1000;
    return age === null ? null : Math.max(0, age);
  }
}

/** One line for node-postgres users: `const pool = createClusterPool({ nodes: [...] })`. */
export function createClusterPool(options: ClusterPoolOptions): ClusterPool {
  return new ClusterPool(options);
}
