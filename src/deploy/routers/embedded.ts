import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { type AddressInfo, connect as netConnect, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Duplex } from 'node:stream';
import type { Dispatcher } from 'undici';
import { Pool, request as undiciRequest } from 'undici';
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

// Hop-by-hop headers (RFC 9110 7.6.1) are for one connection only and must not be forwarded.
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
  'proxy-authorization',
  'proxy-authenticate',
  'expect',
]);

interface LiveBackend extends Backend {
  url: string;
  pool: Pool;
  inFlight: number;
  origin: string;
  hostname: string;
  port: number;
}

/** An upgraded connection (WebSocket...): a byte tunnel pinned to the backend of the slot that accepted it. */
interface Tunnel {
  client: Duplex;
  upstream: Socket;
}

interface SlotRuntime {
  weight: number;
  backends: LiveBackend[];
  /** Backends removed from the slot that still finish requests. */
  leaving: Set<LiveBackend>;
  next: number;
  inFlight: number;
  tunnels: Set<Tunnel>;
  metrics: SlotMetrics;
}

interface SavedTable {
  weights: Weights;
  backends: Record<Slot, Backend[]>;
}

/**
 * Bulwark's own reverse proxy on undici. A weight change is one assignment of `weights` (atomic for
 * every request that starts afterwards); client keep-alive connections stay open across switches
 * because only the upstream side changes. Every request is recorded in its slot's HDR metrics.
 */
export class EmbeddedRouter implements Router {
  readonly kind = 'embedded';
  url = '';
  adminUrl?: string;
  private server!: Server;
  private adminServer?: Server;
  // No traffic target until the first setWeights: requests get 503 rather than a guess.
  private weights: Weights = { blue: 0, green: 0 };
  private readonly slots: Record<Slot, SlotRuntime>;
  private readonly opts: EmbeddedRouterOptions;
  private readonly timeouts: { connect: number; headers: number; idle: number };

  constructor(options: EmbeddedRouterOptions) {
    this.opts = options;
    this.timeouts = { ...DEFAULT_ROUTER_TIMEOUTS, ...stripUndefined(options.timeouts ?? {}) };
    const retention = options.metricsRetentionMs ?? 15 * 60_000;
    const mk = (): SlotRuntime => ({
      weight: 0,
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
    this.server = createServer({ keepAliveTimeout: 65_000 }, (req, res) => this.handle(req, res));
    this.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => this.tunnel(req, socket, head));
    this.server.headersTimeout = 60_000;
    this.server.requestTimeout = 0;
    await listen(this.server, this.opts.port, this.opts.host ?? '127.0.0.1');
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
    // Removed backends finish what they started; their pools close once idle (undici's close waits).
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
          const r = await b.pool.request({ method: 'GET', path, headersTimeout: 5000, bodyTimeout: 5000 });
          await r.body.dump();
          return r.statusCode < 500;
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
    const closing = [closeServer(this.server)];
    if (this.adminServer) closing.push(closeServer(this.adminServer));
    for (const slot of SLOTS) for (const t of this.slots[slot].tunnels) closeTunnel(this.slots[slot], t);
    await Promise.all(closing);
    for (const slot of SLOTS) {
      const rt = this.slots[slot];
      await Promise.all([...rt.backends, ...rt.leaving].map((b) => b.pool.destroy().catch(() => {})));
      rt.metrics.reset();
    }
  }

  // ---- data path --------------------------------------------------------------------------------

  /** Traffic bucket 0..99: green owns [0, w.green), blue owns [w.green, 100), so a growing canary keeps its users. */
  private bucketOf(req: IncomingMessage, res: ServerResponse | undefined): number {
    const sticky = this.opts.sticky;
    if (sticky?.header) {
      const v = req.headers[sticky.header.toLowerCase()];
      if (typeof v === 'string' && v) return hashBucket(v);
    } else if (sticky?.cookie) {
      const found = readCookie(req.headers.cookie, sticky.cookie);
      if (found !== undefined && /^\d{1,2}$/.test(found)) return Number(found);
      const bucket = Math.floor(Math.random() * 100);
      // Merged with the app's own Set-Cookie lines when the answer's headers are written (onResponseStart).
      res?.setHeader('set-cookie', `${sticky.cookie}=${bucket}; Path=/; HttpOnly; SameSite=Lax`);
      return bucket;
    }
    return Math.floor(Math.random() * 100);
  }

  private pickSlot(req: IncomingMessage, res: ServerResponse | undefined): Slot | undefined {
    const w = this.weights;
    let slot: Slot;
    if (w.green === 0) slot = 'blue';
    else if (w.blue === 0) slot = 'green';
    else slot = this.bucketOf(req, res) < w.green ? 'green' : 'blue';
    if (this.slots[slot].backends.length > 0) return slot;
    const other: Slot = slot === 'blue' ? 'green' : 'blue';
    return this.slots[other].backends.length > 0 && w[other] > 0 ? other : undefined;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const started = performance.now();
    const slot = this.pickSlot(req, res);
    if (!slot) {
      req.resume();
      res.writeHead(503, { 'content-type': 'text/plain' }).end('no ready backend\n');
      return;
    }
    const rt = this.slots[slot];
    const backend = rt.backends[rt.next++ % rt.backends.length]!;
    const { headers, hasBody } = this.upstreamHeaders(req, false);
    this.forward(slot, backend, req, res, headers, hasBody, started, 0);
  }

  /**
   * The request headers for the backend, straight from the raw [name, value, ...] list into undici's
   * flat form (repeated headers stay repeated lines, as received). Hop-by-hop headers and the headers
   * the client named in `Connection` are for the client's connection only (RFC 9110 7.6.1); an upgrade
   * keeps `Connection: upgrade` and `Upgrade`, which the tunnel needs. The X-Forwarded-* set (and
   * `Forwarded` when configured) tells the app who asked and how.
   */
  private upstreamHeaders(req: IncomingMessage, upgrade: boolean): { headers: string[]; hasBody: boolean } {
    const raw = req.rawHeaders;
    const named = connectionTokens(req.headers.connection);
    const headers: string[] = [];
    let xff: string | undefined;
    let forwarded: string | undefined;
    let hasBody = false;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]!.toLowerCase();
      const value = raw[i + 1]!;
      if (name === 'content-length' || name === 'transfer-encoding') hasBody = true;
      if (upgrade && name === 'upgrade') {
        headers.push(name, value);
        continue;
      }
      if (HOP_BY_HOP.has(name) || named?.has(name)) continue;
      if (name === 'x-forwarded-for') xff = xff ? `${xff}, ${value}` : value;
      else if (name === 'x-forwarded-proto' || name === 'x-forwarded-host')
        continue; // ours replace them
      else if (name === 'forwarded' && this.opts.forwarded) forwarded = forwarded ? `${forwarded}, ${value}` : value;
      else headers.push(name, value);
    }
    if (upgrade) headers.push('connection', 'upgrade');
    const peer = req.socket.remoteAddress ?? '';
    const host = req.headers.host;
    headers.push('x-forwarded-for', xff ? `${xff}, ${peer}` : peer, 'x-forwarded-proto', 'http');
    if (host) headers.push('x-forwarded-host', host);
    if (this.opts.forwarded) {
      const self = forwardedElement(peer, host);
      headers.push('forwarded', forwarded ? `${forwarded}, ${self}` : self);
    }
    return { headers, hasBody };
  }

  private retryable(method: string, hasBody: boolean): boolean {
    if (hasBody) return false;
    return IDEMPOTENT.has(method) || (method === 'DELETE' && this.opts.retryDelete === true);
  }

  private forward(
    slot: Slot,
    backend: LiveBackend,
    req: IncomingMessage,
    res: ServerResponse,
    headers: string[],
    hasBody: boolean,
    started: number,
    attempt: number,
  ): void {
    const rt = this.slots[slot];
    rt.inFlight++;
    backend.inFlight++;
    let status = 0;
    let done = false;
    let clientGone = false;
    let ctrl: Dispatcher.DispatchController | undefined;
    const method = req.method ?? 'GET';
    const finish = (isError: boolean) => {
      if (done) return;
      done = true;
      rt.inFlight--;
      backend.inFlight--;
      rt.metrics.record(performance.now() - started, isError);
    };
    const handler: Dispatcher.DispatchHandler = {
      onRequestStart: (controller) => {
        ctrl = controller;
        if (clientGone) controller.abort(new Error('client closed the connection'));
      },
      onResponseStart: (_controller, statusCode, resHeaders) => {
        if (statusCode < 200) return;
        status = statusCode;
        const named = connectionTokens(resHeaders.connection);
        const out: Record<string, string | string[]> = {};
        for (const k in resHeaders) {
          const v = resHeaders[k];
          if (v !== undefined && !HOP_BY_HOP.has(k) && !named?.has(k)) out[k] = v as string | string[];
        }
        // The sticky cookie (set on `res` when the slot was picked) goes out next to the app's own cookies.
        const sticky = res.getHeader('set-cookie');
        if (sticky !== undefined && out['set-cookie'] !== undefined)
          out['set-cookie'] = ([] as string[]).concat(out['set-cookie'], sticky as string | string[]);
        out['x-bulwark-slot'] = slot;
        res.writeHead(statusCode, out);
      },
      onResponseData: (controller, chunk) => {
        if (!res.write(chunk)) {
          controller.pause();
          res.once('drain', () => controller.resume());
        }
      },
      onResponseEnd: () => {
        res.end();
        finish(status >= 500);
      },
      onResponseError: (_controller, err) => {
        if (clientGone) return finish(false);
        const code = (err as { code?: string }).code ?? '';
        // A request that never reached the app (refused, or a reused idle socket the app had just
        // closed) is sent again once, on the slot's next backend, only when sending it twice cannot
        // do anything twice: an idempotent method without a body.
        const retry =
          !res.headersSent &&
          attempt === 0 &&
          this.retryable(method, hasBody) &&
          /ECONNREFUSED|ECONNRESET|UND_ERR_SOCKET|EPIPE/.test(code);
        if (retry && rt.backends.length > 0) {
          done = true;
          rt.inFlight--;
          backend.inFlight--;
          const next = rt.backends[rt.next++ % rt.backends.length]!;
          this.forward(slot, next, req, res, headers, hasBody, started, attempt + 1);
          return;
        }
        finish(true);
        if (res.headersSent) {
          // Part of the answer is out: ending it normally would write the final chunk (or leave a short
          // Content-Length body waiting forever). Breaking the connection is the only honest signal.
          res.destroy();
          return;
        }
        const timedOut = /UND_ERR_CONNECT_TIMEOUT|UND_ERR_HEADERS_TIMEOUT|UND_ERR_BODY_TIMEOUT/.test(code);
        res.writeHead(timedOut ? 504 : 502, { 'content-type': 'text/plain', 'x-bulwark-slot': slot });
        res.end(timedOut ? 'backend timed out\n' : 'backend unreachable\n');
      },
    };
    res.once('close', () => {
      // Client went away before the answer finished: stop the upstream request too (not an app error).
      if (!done && !res.writableFinished) {
        clientGone = true;
        ctrl?.abort(new Error('client closed the connection'));
      }
    });
    backend.pool.dispatch(
      {
        origin: backend.origin,
        method: method as Dispatcher.HttpMethod,
        path: req.url ?? '/',
        headers,
        body: hasBody ? req : null,
        headersTimeout: this.timeouts.headers,
        bodyTimeout: this.timeouts.idle,
      },
      handler,
    );
  }

  /**
   * An `Upgrade` request (WebSocket, ...): sent to a backend of the picked slot over its own connection,
   * and from then on a byte tunnel both ways, whatever the backend answers (101, or a plain answer the
   * app chose). The tunnel stays on that backend across switches; `drain` of its slot closes it.
   */
  private tunnel(req: IncomingMessage, client: Duplex, head: Buffer): void {
    const started = performance.now();
    client.on('error', () => {});
    const slot = this.pickSlot(req, undefined);
    if (!slot) {
      client.end(
        'HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 17\r\nconnection: close\r\n\r\nno ready backend\n',
      );
      return;
    }
    const rt = this.slots[slot];
    const backend = rt.backends[rt.next++ % rt.backends.length]!;
    const { headers } = this.upstreamHeaders(req, true);
    let lines = `${req.method} ${req.url} HTTP/1.1\r\n`;
    for (let i = 0; i < headers.length; i += 2) lines += `${headers[i]}: ${headers[i + 1]}\r\n`;
    const upstream = netConnect(backend.port, backend.hostname);
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
      const text = status === 504 ? 'backend timed out\n' : 'backend unreachable\n';
      client.end(
        `HTTP/1.1 ${status} ${status === 504 ? 'Gateway Timeout' : 'Bad Gateway'}\r\ncontent-type: text/plain\r\ncontent-length: ${text.length}\r\nconnection: close\r\nx-bulwark-slot: ${slot}\r\n\r\n${text}`,
      );
      upstream.destroy();
    };
    upstream.setTimeout(this.timeouts.connect, () => fail(504));
    upstream.once('connect', () => {
      upstream.setTimeout(this.timeouts.headers, () => fail(504));
      upstream.write(`${lines}\r\n`);
      if (head.length > 0) upstream.write(head);
      client.pipe(upstream);
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
    return {
      id,
      url,
      origin: u.origin,
      hostname: u.hostname.replace(/^\[|\]$/g, ''),
      port: Number(u.port || (u.protocol === 'https:' ? 443 : 80)),
      inFlight: 0,
      pool: this.newPool(u.origin),
    };
  }

  private newPool(origin: string): Pool {
    return new Pool(origin, {
      connections: this.opts.connections ?? 128,
      keepAliveTimeout: 30_000,
      keepAliveMaxTimeout: 60_000,
      connect: { timeout: this.timeouts.connect },
    });
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

/** Lower-case header names listed in a Connection header (undefined when there are none beyond the usual). */
function connectionTokens(value: string | string[] | undefined): Set<string> | undefined {
  if (value === undefined) return undefined;
  let set: Set<string> | undefined;
  for (const v of Array.isArray(value) ? value : [value])
    for (const token of v.split(',')) {
      const t = token.trim().toLowerCase();
      if (!t || t === 'keep-alive' || t === 'close' || t === 'upgrade') continue;
      set ??= new Set();
      set.add(t);
    }
  return set;
}

/** One RFC 7239 element for this hop: the peer, the Host asked for, the scheme (quoted where not a token). */
function forwardedElement(peer: string, host: string | undefined): string {
  const quote = (v: string) => (/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(v) ? v : `"${v.replace(/["\\]/g, '\\$&')}"`);
  const forId = peer.includes(':') ? `"[${peer}]"` : peer;
  return `for=${forId}${host ? `;host=${quote(host)}` : ''};proto=http`;
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

function listen(server: Server, port: number, host: string): Promise<void> {
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
