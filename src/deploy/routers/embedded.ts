import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import {
  createServer,
  request as httpRequest,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import {
  type AddressInfo,
  createServer as createNetServer,
  type Server as NetServer,
  connect as netConnect,
  type Socket,
} from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Dispatcher } from 'undici';
import { request as undiciRequest } from 'undici';
import { DeployError } from '../errors.js';
import { prometheusText, SlotMetrics } from '../metrics.js';
import { assertSafeBackends, assertSafeWeights } from '../safety.js';
import {
  type Backend,
  type Router,
  type RouterState,
  SLOTS,
  type Slot,
  type SlotWindow,
  type Weights,
} from '../types.js';
import type { Head } from './http1.js';
import {
  acceptWithOnread,
  BackendPool,
  ClientConnection,
  type LiveBackend,
  localResponse,
  type ProxyContext,
  type Route,
  type SlotRuntime,
  type Tunnel,
} from './proxy.js';

export interface EmbeddedRouterOptions {
  host?: string;
  /** 0 picks a free port. */
  port: number;
  /** Sticky assignment: the same header value or cookie always lands in the same traffic bucket. */
  sticky?: { header?: string; cookie?: string };
  metricsRetentionMs?: number;
  /** Admin API (loopback only) protected by a bearer token. */
  admin?: { host?: string; port: number; token: string };
  /** Routing table is saved here on every change and restored at start, so a restart keeps routing. */
  statePath?: string;
  /** Upstream connections per backend. */
  connections?: number;
  /**
   * Backend timeouts in ms. `connect`: establishing the connection (504 when exceeded); `headers`: from
   * sending the request to the response headers (504); `idle`: silence between body bytes (504 before
   * the headers went out, else the client's transfer is broken off so it cannot pass for complete).
   */
  timeouts?: { connect?: number; headers?: number; idle?: number };
  /** Also send an RFC 7239 `Forwarded` header (X-Forwarded-For/-Proto/-Host are always sent). */
  forwarded?: boolean;
  /**
   * A request that provably never got an answer (refused or reset connection) is retried once on the
   * slot's next backend only when its method is idempotent (GET, HEAD, OPTIONS, TRACE, PUT) and it has
   * no body. DELETE is idempotent by the RFC but often not in apps: retried only when this is true.
   */
  retryDelete?: boolean;
}

export const DEFAULT_ROUTER_TIMEOUTS = { connect: 10_000, headers: 60_000, idle: 60_000 } as const;

interface SavedTable {
  weights: Weights;
  backends: Record<Slot, Backend[]>;
}

/**
 * Bulwark's own reverse proxy (data path in proxy.ts, on `net` sockets). A weight change is one assignment of `weights` (atomic for
 * every request that starts afterwards); client keep-alive connections stay open across switches
 * because only the upstream side changes. Every request is recorded in its slot's HDR metrics.
 */
export class EmbeddedRouter implements Router, ProxyContext {
  readonly kind = 'embedded';
  url = '';
  adminUrl?: string;
  private server!: NetServer;
  private adminServer?: Server;
  private readonly connections = new Set<ClientConnection>();
  private whenNoConnections?: () => void;
  private sweeper?: NodeJS.Timeout;
  // No traffic target until the first setWeights: requests get 503 rather than a guess.
  private weights: Weights = { blue: 0, green: 0 };
  readonly slots: Record<Slot, SlotRuntime>;
  private readonly opts: EmbeddedRouterOptions;
  readonly timeouts: { connect: number; headers: number; idle: number };
  readonly forwarded: boolean;

  constructor(options: EmbeddedRouterOptions) {
    this.opts = options;
    this.timeouts = { ...DEFAULT_ROUTER_TIMEOUTS, ...stripUndefined(options.timeouts ?? {}) };
    this.forwarded = options.forwarded === true;
    const retention = options.metricsRetentionMs ?? 15 * 60_000;
    const mk = (): SlotRuntime => ({
      backends: [],
      leaving: new Set(),
      next: 0,
      inFlight: 0,
      tunnels: new Set(),
      metrics: new SlotMetrics(retention),
    });
    this.slots = { blue: mk(), green: mk() };
  }

  get frontendUrl(): string {
    return this.url;
  }

  async start(): Promise<this> {
    if (this.opts.statePath) this.restore(this.opts.statePath);
    // allowHalfOpen: a client that half-closes after its request still gets the answer.
    this.server = createNetServer({ noDelay: true, allowHalfOpen: true }, (socket) => {
      this.connections.add(new ClientConnection(this, socket));
    });
    await listen(this.server, this.opts.port, this.opts.host ?? '127.0.0.1');
    acceptWithOnread(this.server, (socket, ownReads) => {
      const conn = new ClientConnection(this, socket, ownReads);
      this.connections.add(conn);
      return conn;
    });
    // Idle upstream connections past their keep-alive are closed by one timer, not one per request.
    this.sweeper = setInterval(() => {
      const now = Date.now();
      for (const slot of SLOTS) for (const b of this.slots[slot].backends) b.pool.sweep(now);
    }, 500).unref();
    this.url = `http://${this.opts.host ?? '127.0.0.1'}:${(this.server.address() as AddressInfo).port}`;
    if (this.opts.admin) {
      const admin = this.opts.admin;
      this.adminServer = createServer((req, res) => {
        this.handleAdmin(req, res, admin.token).catch((err: Error) => sendJson(res, 500, { message: err.message }));
      });
      await listen(this.adminServer, admin.port, admin.host ?? '127.0.0.1');
      this.adminUrl = `http://${admin.host ?? '127.0.0.1'}:${(this.adminServer.address() as AddressInfo).port}`;
    }
    return this;
  }

  // ---- Router interface -------------------------------------------------------------------------

  async state(): Promise<RouterState> {
    const slotState = (slot: Slot) => {
      const rt = this.slots[slot];
      return {
        weight: this.weights[slot],
        tunnels: rt.tunnels.size,
        backends: [
          ...rt.backends.map((b) => ({ id: b.id, url: b.url, state: 'ready' as const, inFlight: b.inFlight })),
          ...[...rt.leaving].map((b) => ({ id: b.id, url: b.url, state: 'draining' as const, inFlight: b.inFlight })),
        ],
      };
    };
    return { kind: this.kind, slots: { blue: slotState('blue'), green: slotState('green') } };
  }

  async setBackends(slot: Slot, backends: Backend[]): Promise<void> {
    assertSafeBackends(slot, backends.length, await this.state());
    const rt = this.slots[slot];
    const byUrl = new Map(rt.backends.map((b) => [b.url, b]));
    const next: LiveBackend[] = [];
    for (const b of backends) {
      if (!b.url) throw new DeployError('BULWARK_E_DEPLOY_ROUTER', `backend ${b.id} of ${slot} has no url`);
      const kept = byUrl.get(b.url);
      if (kept) {
        byUrl.delete(b.url);
        next.push(kept);
        continue;
      }
      next.push(this.liveBackend(b.id, b.url));
    }
    rt.backends = next;
    rt.next = 0;
    // Removed backends finish what they started; their pools close once their connections are idle.
    for (const gone of byUrl.values()) {
      rt.leaving.add(gone);
      gone.pool.close().finally(() => rt.leaving.delete(gone));
    }
    this.save();
  }

  async setWeights(weights: Weights): Promise<void> {
    assertSafeWeights(weights, await this.state());
    // One assignment: every request that starts after this line sees the new split.
    this.weights = { blue: weights.blue, green: weights.green };
    this.save();
  }

  async confirmServing(slot: Slot, path = '/health'): Promise<boolean> {
    const rt = this.slots[slot];
    if (rt.backends.length === 0) return false;
    const results = await Promise.all(
      rt.backends.map(async (b) => {
        try {
          const status = await probe(b, path);
          return status > 0 && status < 500;
        } catch {
          return false;
        }
      }),
    );
    return results.every(Boolean);
  }

  /**
   * Wait for the slot's requests and tunnels to finish. Tunnels (WebSockets) can live for hours: the ones
   * still open at the deadline are closed, so their clients reconnect through the current weights.
   */
  async drain(slot: Slot, timeoutMs: number): Promise<boolean> {
    const rt = this.slots[slot];
    const deadline = Date.now() + timeoutMs;
    while (rt.inFlight > 0 || rt.tunnels.size > 0) {
      if (Date.now() >= deadline) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    for (const t of rt.tunnels) closeTunnel(rt, t);
    return rt.inFlight === 0;
  }

  async window(slot: Slot, sinceMs: number): Promise<SlotWindow> {
    return this.slots[slot].metrics.window(sinceMs);
  }

  async close(): Promise<void> {
    clearInterval(this.sweeper);
    const closing = [this.closeProxy()];
    if (this.adminServer) closing.push(closeServer(this.adminServer));
    for (const slot of SLOTS) for (const t of this.slots[slot].tunnels) closeTunnel(this.slots[slot], t);
    await Promise.all(closing);
    for (const slot of SLOTS) {
      const rt = this.slots[slot];
      for (const b of [...rt.backends, ...rt.leaving]) b.pool.destroy();
      rt.metrics.reset();
    }
  }

  /** Stop accepting; idle client connections close now, busy ones after their answer (2 s at most). */
  private closeProxy(): Promise<void> {
    // Waits for the listener and for every client connection: sockets accepted by acceptWithOnread are
    // not counted by net.Server, so its close callback alone would not wait for them.
    const listenerClosed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    const connectionsGone = new Promise<void>((resolve) => {
      this.whenNoConnections = resolve;
      if (this.connections.size === 0) resolve();
    });
    for (const c of this.connections) {
      if (c.idle) c.socket.destroy();
      else c.ending = true;
    }
    setTimeout(() => {
      for (const c of this.connections) c.socket.destroy();
    }, 2000).unref();
    return Promise.all([listenerClosed, connectionsGone]).then(() => {});
  }

  // ---- data path (proxy.ts) ----------------------------------------------------------------------

  /** Traffic bucket 0..99: green owns [0, w.green), blue owns [w.green, 100), so a growing canary keeps its users. */
  private bucketOf(head: Head): { bucket: number; setCookie?: string } {
    const sticky = this.opts.sticky;
    if (sticky?.header) {
      const v = headerValues(head, sticky.header.toLowerCase());
      if (v) return { bucket: hashBucket(v) };
    } else if (sticky?.cookie) {
      const found = readCookie(headerValues(head, 'cookie'), sticky.cookie);
      if (found !== undefined && /^\d{1,2}$/.test(found)) return { bucket: Number(found) };
      const bucket = Math.floor(Math.random() * 100);
      // Goes out after the app's own Set-Cookie lines (clientResponseHead).
      return { bucket, setCookie: `${sticky.cookie}=${bucket}; Path=/; HttpOnly; SameSite=Lax` };
    }
    return { bucket: Math.floor(Math.random() * 100) };
  }

  /** The slot for a request (undefined: no slot with a ready backend gets traffic -> 503). */
  route(head: Head): Route | undefined {
    const w = this.weights;
    let slot: Slot;
    let setCookie: string | undefined;
    if (w.green === 0) slot = 'blue';
    else if (w.blue === 0) slot = 'green';
    else {
      const b = this.bucketOf(head);
      setCookie = b.setCookie;
      slot = b.bucket < w.green ? 'green' : 'blue';
    }
    if (this.slots[slot].backends.length === 0) {
      const other: Slot = slot === 'blue' ? 'green' : 'blue';
      if (this.slots[other].backends.length === 0 || w[other] === 0) return undefined;
      slot = other;
    }
    return setCookie ? { slot, setCookie } : { slot };
  }

  retryable(method: string, hasBody: boolean): boolean {
    if (hasBody) return false;
    return IDEMPOTENT.has(method) || (method === 'DELETE' && this.opts.retryDelete === true);
  }

  connectionClosed(conn: ClientConnection): void {
    this.connections.delete(conn);
    if (this.connections.size === 0) this.whenNoConnections?.();
  }

  /**
   * An `Upgrade` request (WebSocket, ...): sent to a backend of the picked slot over its own connection,
   * and from then on a byte tunnel both ways, whatever the backend answers (101, or a plain answer the
   * app chose). The tunnel stays on that backend across switches; `drain` of its slot closes it.
   */
  tunnel(client: Socket, _head: Head, upstreamHead: string, rest: Buffer | null, route: Route, started: number): void {
    client.on('error', () => {});
    const slot = route.slot;
    const rt = this.slots[slot];
    const backend = rt.backends[rt.next++ % rt.backends.length]!;
    const upstream = netConnect({ port: backend.port, host: backend.hostname, noDelay: true });
    const t: Tunnel = { client, upstream };
    rt.tunnels.add(t);
    let answered = false;
    const fail = (status: 502 | 504) => {
      if (answered) return;
      rt.metrics.record(performance.now() - started, true);
      answered = true;
      // The client gets the answer below in full: the upstream's close must not cut it off.
      rt.tunnels.delete(t);
      upstream.removeAllListeners('close');
      client.end(
        localResponse(status, status === 504 ? 'backend timed out\n' : 'backend unreachable\n', true, slot),
        'latin1',
      );
      upstream.destroy();
    };
    upstream.setTimeout(this.timeouts.connect, () => fail(504));
    upstream.once('connect', () => {
      upstream.setTimeout(this.timeouts.headers, () => fail(504));
      upstream.write(upstreamHead, 'latin1');
      if (rest && rest.length > 0) upstream.write(rest);
      client.pipe(upstream);
      client.resume();
    });
    upstream.once('data', (first: Buffer) => {
      // The status line of the backend's answer is the request's outcome in the slot's metrics.
      upstream.setTimeout(0);
      answered = true;
      const status = Number(first.subarray(9, 12).toString('latin1'));
      rt.metrics.record(performance.now() - started, !(status > 0) || status >= 500);
    });
    upstream.pipe(client);
    upstream.on('error', () => {
      if (!answered) fail(502);
    });
    upstream.once('close', () => closeTunnel(rt, t));
    client.once('close', () => closeTunnel(rt, t));
  }

  private liveBackend(id: string, url: string): LiveBackend {
    const u = new URL(url);
    const hostname = u.hostname.replace(/^\[|\]$/g, '');
    const port = Number(u.port || (u.protocol === 'https:' ? 443 : 80));
    return {
      id,
      url,
      hostname,
      port,
      hostHeader: u.host,
      inFlight: 0,
      pool: new BackendPool(hostname, port, this.opts.connections ?? 128, 30_000),
    };
  }

  // ---- persistence ------------------------------------------------------------------------------

  private save(): void {
    if (!this.opts.statePath) return;
    const table: SavedTable = {
      weights: this.weights,
      backends: {
        blue: this.slots.blue.backends.map((b) => ({ id: b.id, url: b.url })),
        green: this.slots.green.backends.map((b) => ({ id: b.id, url: b.url })),
      },
    };
    const tmp = `${this.opts.statePath}.tmp`;
    writeFileSync(tmp, `${JSON.stringify(table, null, 2)}\n`);
    renameSync(tmp, this.opts.statePath);
  }

  private restore(path: string): void {
    let table: SavedTable;
    try {
      table = JSON.parse(readFileSync(path, 'utf8')) as SavedTable;
    } catch {
      return; // first start
    }
    for (const slot of SLOTS) {
      this.slots[slot].backends = (table.backends[slot] ?? []).map((b) => this.liveBackend(b.id, b.url!));
    }
    this.weights = table.weights;
  }

  // ---- admin API --------------------------------------------------------------------------------

  private async handleAdmin(req: IncomingMessage, res: ServerResponse, token: string): Promise<void> {
    const auth = req.headers.authorization ?? '';
    const given = Buffer.from(auth.startsWith('Bearer ') ? auth.slice(7) : '');
    const want = Buffer.from(token);
    if (given.length !== want.length || !timingSafeEqual(given, want)) {
      req.resume();
      return sendJson(res, 401, { code: 'BULWARK_E_DEPLOY_ROUTER', message: 'missing or wrong admin token' });
    }
    const url = new URL(req.url ?? '/', 'http://admin');
    let body: unknown;
    try {
      body = req.method === 'GET' ? {} : await readJson(req);
    } catch (err) {
      // The caller's mistake, not the router's: 400 with what is wrong.
      return sendJson(res, 400, {
        code: 'BULWARK_E_DEPLOY_ROUTER',
        message: `${req.method} ${url.pathname}: body is not valid JSON (${(err as Error).message})`,
      });
    }
    const m = /^\/v1\/slots\/(blue|green)\/(backends|confirm|drain|window)$/.exec(url.pathname);
    try {
      if (req.method === 'GET' && url.pathname === '/v1/state') return sendJson(res, 200, await this.state());
      if (req.method === 'GET' && url.pathname === '/metrics') {
        // Prometheus exposition, derived from the same per-slot counters the analysis reads.
        const text = prometheusText({ blue: this.slots.blue.metrics, green: this.slots.green.metrics });
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' }).end(text);
        return;
      }
      if (req.method === 'PUT' && url.pathname === '/v1/weights') {
        await this.setWeights(body as Weights);
        return sendJson(res, 200, await this.state());
      }
      if (m) {
        const slot = m[1] as Slot;
        if (req.method === 'PUT' && m[2] === 'backends') {
          await this.setBackends(slot, (body as { backends: Backend[] }).backends ?? []);
          return sendJson(res, 200, await this.state());
        }
        if (req.method === 'POST' && m[2] === 'confirm')
          return sendJson(res, 200, { ok: await this.confirmServing(slot, (body as { path?: string }).path) });
        if (req.method === 'POST' && m[2] === 'drain')
          return sendJson(res, 200, {
            ok: await this.drain(slot, Number((body as { timeoutMs?: number }).timeoutMs ?? 30_000)),
          });
        if (req.method === 'GET' && m[2] === 'window')
          return sendJson(res, 200, await this.window(slot, Number(url.searchParams.get('since') ?? 0)));
      }
      return sendJson(res, 404, {
        code: 'BULWARK_E_DEPLOY_ROUTER',
        message: `no admin route ${req.method} ${url.pathname}`,
      });
    } catch (err) {
      const e = err as { code?: string; message: string };
      return sendJson(res, 409, { code: e.code ?? 'BULWARK_E_DEPLOY_ROUTER', message: e.message });
    }
  }
}

/** Start an embedded router (in this process). */
export async function startEmbeddedRouter(options: EmbeddedRouterOptions): Promise<EmbeddedRouter> {
  return new EmbeddedRouter(options).start();
}

/**
 * The embedded router seen from another process (the `bulwark deploy` command talking to
 * `bulwark deploy router`): the same Router interface over the loopback admin API.
 */
export class EmbeddedRouterClient implements Router {
  readonly kind = 'embedded';
  constructor(
    private readonly adminUrl: string,
    private readonly token: string,
    readonly frontendUrl?: string,
  ) {}

  private async call<T>(method: 'GET' | 'PUT' | 'POST', path: string, body?: unknown): Promise<T> {
    let r: Dispatcher.ResponseData;
    try {
      r = await undiciRequest(`${this.adminUrl}${path}`, {
        method,
        headers: { authorization: `Bearer ${this.token}`, 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
        headersTimeout: 120_000,
        bodyTimeout: 120_000,
      });
    } catch (err) {
      throw new DeployError(
        'BULWARK_E_DEPLOY_ROUTER',
        `embedded router admin API at ${this.adminUrl} is not reachable (is \`bulwark deploy router\` running?): ${(err as Error).message}`,
      );
    }
    const json = (await r.body.json()) as T & { code?: string; message?: string };
    if (r.statusCode >= 400) {
      const code = (json.code ?? 'BULWARK_E_DEPLOY_ROUTER') as 'BULWARK_E_DEPLOY_ROUTER';
      throw new DeployError(code, json.message ?? `admin API answered ${r.statusCode}`);
    }
    return json;
  }

  state(): Promise<RouterState> {
    return this.call('GET', '/v1/state');
  }
  async setBackends(slot: Slot, backends: Backend[]): Promise<void> {
    await this.call('PUT', `/v1/slots/${slot}/backends`, { backends });
  }
  async setWeights(weights: Weights): Promise<void> {
    await this.call('PUT', '/v1/weights', weights);
  }
  async confirmServing(slot: Slot, path?: string): Promise<boolean> {
    return (await this.call<{ ok: boolean }>('POST', `/v1/slots/${slot}/confirm`, { path })).ok;
  }
  async drain(slot: Slot, timeoutMs: number): Promise<boolean> {
    return (await this.call<{ ok: boolean }>('POST', `/v1/slots/${slot}/drain`, { timeoutMs })).ok;
  }
  window(slot: Slot, sinceMs: number): Promise<SlotWindow> {
    return this.call('GET', `/v1/slots/${slot}/window?since=${sinceMs}`);
  }
  async close(): Promise<void> {}
}

/** Methods whose repetition has no further effect (RFC 9110 9.2.2); DELETE only with `retryDelete`. */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT']);

/** All values of a request header, joined as one (undefined when absent). */
function headerValues(head: Head, lower: string): string | undefined {
  let v: string | undefined;
  for (let i = 0; i < head.lower.length; i++)
    if (head.lower[i] === lower) v = v === undefined ? head.values[i] : `${v}; ${head.values[i]}`;
  return v;
}

/** Status of a GET on one backend (its own connection, closed after), 0 when it cannot be had in 5 s. */
function probe(b: LiveBackend, path: string): Promise<number> {
  return new Promise((resolve) => {
    const req = httpRequest(
      { host: b.hostname, port: b.port, path, method: 'GET', agent: false, timeout: 5000 },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
        res.on('error', () => resolve(0));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', () => resolve(0));
    req.end();
  });
}

function closeTunnel(rt: SlotRuntime, t: Tunnel): void {
  rt.tunnels.delete(t);
  t.upstream.destroy();
  t.client.destroy();
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

function hashBucket(value: string): number {
  return createHash('sha1').update(value).digest().readUInt32BE(0) % 100;
}

function readCookie(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const buf = Buffer.from(JSON.stringify(body));
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': buf.length }).end(buf);
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > 1_000_000) throw new Error('admin request too large');
    chunks.push(c as Buffer);
  }
  return chunks.length ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : {};
}

function listen(server: Server | NetServer, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeIdleConnections();
    setTimeout(() => server.closeAllConnections(), 2000).unref();
  });
}
