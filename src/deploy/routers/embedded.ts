import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
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
}

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
}

interface SlotRuntime {
  weight: number;
  backends: LiveBackend[];
  /** Backends removed from the slot that still finish requests. */
  leaving: Set<LiveBackend>;
  next: number;
  inFlight: number;
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

  constructor(options: EmbeddedRouterOptions) {
    this.opts = options;
    const retention = options.metricsRetentionMs ?? 15 * 60_000;
    const mk = (): SlotRuntime => ({
      weight: 0,
      backends: [],
      leaving: new Set(),
      next: 0,
      inFlight: 0,
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
      const u = new URL(b.url);
      next.push({
        id: b.id,
        url: b.url,
        origin: u.origin,
        inFlight: 0,
        pool: this.newPool(u.origin),
      });
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

  async drain(slot: Slot, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (this.slots[slot].inFlight > 0) {
      if (Date.now() >= deadline) return false;
      await new Promise((r) => setTimeout(r, 10));
    }
    return true;
  }

  async window(slot: Slot, sinceMs: number): Promise<SlotWindow> {
    return this.slots[slot].metrics.window(sinceMs);
  }

  async close(): Promise<void> {
    const closing = [closeServer(this.server)];
    if (this.adminServer) closing.push(closeServer(this.adminServer));
    await Promise.all(closing);
    for (const slot of SLOTS) {
      const rt = this.slots[slot];
      await Promise.all([...rt.backends, ...rt.leaving].map((b) => b.pool.destroy().catch(() => {})));
      rt.metrics.reset();
    }
  }

  // ---- data path --------------------------------------------------------------------------------

  /** Traffic bucket 0..99: green owns [0, w.green), blue owns [w.green, 100), so a growing canary keeps its users. */
  private bucketOf(req: IncomingMessage, res: ServerResponse): number {
    const sticky = this.opts.sticky;
    if (sticky?.header) {
      const v = req.headers[sticky.header.toLowerCase()];
      if (typeof v === 'string' && v) return hashBucket(v);
    } else if (sticky?.cookie) {
      const found = readCookie(req.headers.cookie, sticky.cookie);
      if (found !== undefined && /^\d{1,2}$/.test(found)) return Number(found);
      const bucket = Math.floor(Math.random() * 100);
      res.setHeader('set-cookie', `${sticky.cookie}=${bucket}; Path=/; HttpOnly; SameSite=Lax`);
      return bucket;
    }
    return Math.floor(Math.random() * 100);
  }

  private pickSlot(req: IncomingMessage, res: ServerResponse): Slot | undefined {
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
    // Straight from the raw [name, value, ...] list into undici's flat form: no header object is built
    // or copied per request (repeated headers stay repeated lines, as received).
    const raw = req.rawHeaders;
    const headers: string[] = [];
    let xff: string | undefined;
    let hasBody = false;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]!.toLowerCase();
      const value = raw[i + 1]!;
      if (name === 'content-length' || name === 'transfer-encoding') hasBody = true;
      if (HOP_BY_HOP.has(name)) continue;
      if (name === 'x-forwarded-for') xff = xff ? `${xff}, ${value}` : value;
      else headers.push(name, value);
    }
    const peer = req.socket.remoteAddress ?? '';
    headers.push('x-forwarded-for', xff ? `${xff}, ${peer}` : peer);
    this.forward(slot, backend, req, res, headers, hasBody, started, 0);
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
        const out: Record<string, string | string[]> = {};
        for (const k in resHeaders) {
          const v = resHeaders[k];
          if (v !== undefined && !HOP_BY_HOP.has(k)) out[k] = v as string | string[];
        }
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
        // closed) is safe to send again when it has no body; one retry, on the slot's next backend.
        const retryable =
          !res.headersSent && !hasBody && attempt === 0 && /ECONNREFUSED|ECONNRESET|UND_ERR_SOCKET|EPIPE/.test(code);
        if (retryable && rt.backends.length > 0) {
          done = true;
          rt.inFlight--;
          backend.inFlight--;
          const next = rt.backends[rt.next++ % rt.backends.length]!;
          this.forward(slot, next, req, res, headers, hasBody, started, attempt + 1);
          return;
        }
        finish(true);
        if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain', 'x-bulwark-slot': slot });
        res.end();
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
        method: (req.method ?? 'GET') as Dispatcher.HttpMethod,
        path: req.url ?? '/',
        headers,
        body: hasBody ? req : null,
        headersTimeout: 60_000,
        bodyTimeout: 60_000,
      },
      handler,
    );
  }

  private newPool(origin: string): Pool {
    return new Pool(origin, {
      connections: this.opts.connections ?? 128,
      keepAliveTimeout: 30_000,
      keepAliveMaxTimeout: 60_000,
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
      this.slots[slot].backends = (table.backends[slot] ?? []).map((b) => {
        const u = new URL(b.url!);
        return { id: b.id, url: b.url!, origin: u.origin, inFlight: 0, pool: this.newPool(u.origin) };
      });
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
    const body = req.method === 'GET' ? {} : await readJson(req);
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
