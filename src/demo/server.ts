import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { OrderStore } from './orders.js';
import { PRODUCTS, PRODUCTS_PAGE, searchProducts, validateOrder } from './shop.js';

export interface DemoServerOptions {
  port?: number;
  host?: string;
  /** Share 0..1 of /api requests answered with 500. */
  errorRate?: number;
  /** Extra latency added to every /api request. */
  latencyMs?: number;
  /** Every `stallEveryMs` the whole server stops answering for `stallForMs` (responses are held). */
  stallEveryMs?: number;
  stallForMs?: number;
  /** Returned in `x-served-by` and in /health (blue/green tests tell slots apart by it). */
  label?: string;
  /** Random source for fault injection (tests pass a seeded one). */
  random?: () => number;
  /** Keep orders here (e.g. PostgreSQL) instead of in memory; a failed store answers 503. */
  orders?: OrderStore;
  /**
   * Sign bearer tokens with this secret, so every instance sharing it accepts every token (a user
   * keeps working when a deploy moves them to another instance). Without it tokens live in memory.
   */
  tokenSecret?: string;
  /** Status /health answers (default 200); 503 makes a release that fails its health checks. */
  healthStatus?: number;
}

export interface DemoServer {
  url: string;
  port: number;
  close(): Promise<void>;
}

interface Session {
  email: string;
  orders: Array<{ order_id: string; items: unknown; created_at: string }>;
}

const MAX_SESSIONS = 100_000;
const MAX_ORDERS_KEPT = 20;

/**
 * The origin document's shop API, made to be a fast, predictable load target: static bodies are
 * serialized once, state is bounded in memory, and faults are injected on demand.
 */
export async function startDemoServer(options: DemoServerOptions = {}): Promise<DemoServer> {
  const random = options.random ?? Math.random;
  const label = options.label ?? 'demo';
  const errorRate = options.errorRate ?? 0;
  const latencyMs = options.latencyMs ?? 0;
  const stallEvery = options.stallEveryMs ?? 0;
  const stallFor = options.stallForMs ?? 0;
  const startedAt = Date.now();
  const sessions = new Map<string, Session>();
  let orderSeq = 0;

  const baseHeaders = { 'content-type': 'application/json', 'x-served-by': label };
  const productsBody = Buffer.from(PRODUCTS_PAGE);
  const healthStatus = options.healthStatus ?? 200;
  const healthBody = Buffer.from(JSON.stringify({ status: healthStatus < 400 ? 'ok' : 'failing', label }));
  const secret = options.tokenSecret;
  const sign = (payload: string) => createHmac('sha256', secret!).update(payload).digest('base64url');

  /** A signed token: base64url(email) "." HMAC. */
  function issueToken(email: string): string {
    const payload = Buffer.from(email).toString('base64url');
    return `${payload}.${sign(payload)}`;
  }

  function verifiedEmail(token: string): string | undefined {
    const dot = token.indexOf('.');
    if (dot <= 0) return undefined;
    const payload = token.slice(0, dot);
    const given = Buffer.from(token.slice(dot + 1));
    const wanted = Buffer.from(sign(payload));
    if (given.length !== wanted.length || !timingSafeEqual(given, wanted)) return undefined;
    return Buffer.from(payload, 'base64url').toString('utf8');
  }

  /** Milliseconds until the current stall ends, or 0 when the server is answering. */
  function stallRemaining(now: number): number {
    if (!stallEvery || !stallFor) return 0;
    const phase = (now - startedAt) % stallEvery;
    const stallStart = stallEvery - stallFor;
    return phase >= stallStart ? stallEvery - phase : 0;
  }

  function send(res: ServerResponse, status: number, body: string | Buffer): void {
    const buf = typeof body === 'string' ? Buffer.from(body) : body;
    const finish = () => {
      if (res.destroyed) return;
      res.writeHead(status, { ...baseHeaders, 'content-length': buf.length });
      res.end(buf);
    };
    const wait = stallRemaining(Date.now());
    if (wait > 0) setTimeout(finish, wait);
    else finish();
  }

  function sessionOf(req: IncomingMessage): Session | undefined {
    const auth = req.headers.authorization;
    if (!auth?.startsWith('Bearer ')) return undefined;
    const token = auth.slice(7);
    const known = sessions.get(token);
    if (known || !secret) return known;
    const email = verifiedEmail(token);
    if (email === undefined) return undefined;
    if (sessions.size >= MAX_SESSIONS) sessions.delete(sessions.keys().next().value!);
    const session: Session = { email, orders: [] };
    sessions.set(token, session);
    return session;
  }

  async function readJson(req: IncomingMessage): Promise<unknown> {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > 1_000_000) throw new Error('body too large');
      chunks.push(chunk as Buffer);
    }
    if (size === 0) return undefined;
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  }

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q === -1 ? url : url.slice(0, q);
    const method = req.method ?? 'GET';

    if (path === '/health') return send(res, healthStatus, healthBody);

    if (latencyMs > 0) await new Promise((r) => setTimeout(r, latencyMs));
    if (errorRate > 0 && path.startsWith('/api/') && random() < errorRate) {
      req.resume();
      return send(res, 500, '{"error":"injected failure"}');
    }

    if (method === 'GET' && path === '/api/products') return send(res, 200, productsBody);
    if (method === 'GET' && path === '/api/products/search') {
      const term = new URLSearchParams(q === -1 ? '' : url.slice(q + 1)).get('q') ?? '';
      return send(res, 200, searchProducts(term));
    }
    if (method === 'GET' && path.startsWith('/api/products/')) {
      const product = PRODUCTS[Number(path.slice('/api/products/'.length)) - 1];
      return product ? send(res, 200, JSON.stringify(product)) : send(res, 404, '{"error":"not found"}');
    }
    if (method === 'POST' && path === '/auth/login') {
      const body = (await readJson(req)) as { email?: unknown; password?: unknown } | undefined;
      if (!body || typeof body.email !== 'string' || typeof body.password !== 'string' || !body.password) {
        return send(res, 400, '{"error":"email and password required"}');
      }
      if (sessions.size >= MAX_SESSIONS) sessions.delete(sessions.keys().next().value!);
      const token = secret ? issueToken(body.email) : randomBytes(16).toString('hex');
      sessions.set(token, { email: body.email, orders: [] });
      return send(res, 200, JSON.stringify({ access_token: token, token_type: 'bearer', expires_in: 3600 }));
    }
    if (method === 'POST' && path === '/api/orders') {
      const session = sessionOf(req);
      if (!session) {
        req.resume();
        return send(res, 401, '{"error":"missing or invalid bearer token"}');
      }
      const order = validateOrder(await readJson(req));
      if (typeof order === 'string') return send(res, 400, JSON.stringify({ error: order }));
      let order_id: string;
      if (options.orders) {
        try {
          order_id = await options.orders.create({ email: session.email, ...order });
        } catch (err) {
          // not acknowledged: the client must not count on this order (it may or may not exist)
          return send(res, 503, JSON.stringify({ error: `order not stored: ${(err as Error).message}` }));
        }
      } else order_id = `ord_${++orderSeq}`;
      session.orders.push({ order_id, items: order.items, created_at: new Date().toISOString() });
      if (session.orders.length > MAX_ORDERS_KEPT) session.orders.shift();
      return send(res, 201, JSON.stringify({ order_id, status: 'created' }));
    }
    if (method === 'GET' && path === '/api/orders/history') {
      const session = sessionOf(req);
      if (!session) return send(res, 401, '{"error":"missing or invalid bearer token"}');
      return send(res, 200, JSON.stringify({ orders: session.orders }));
    }
    if (method === 'GET' && path === '/api/heavy-query') {
      // Simulates a slow database query without burning the server's CPU (so it stays a fair target).
      await new Promise((r) => setTimeout(r, 20 + Math.floor(random() * 60)));
      return send(res, 200, '{"rows":1000,"ok":true}');
    }
    if (method === 'GET' && path === '/api/critical') return send(res, 200, '{"ok":true}');
    req.resume();
    return send(res, 404, '{"error":"not found"}');
  }

  const server = createServer({ keepAliveTimeout: 65_000 }, (req, res) => {
    route(req, res).catch((err: Error) => {
      if (!res.headersSent) send(res, 400, JSON.stringify({ error: err.message }));
    });
  });
  server.headersTimeout = 60_000;
  server.requestTimeout = 0;

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    url: `http://${options.host ?? '127.0.0.1'}:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
        // In-flight requests finish; connections that stay idle-open are cut after a grace period.
        setTimeout(() => server.closeAllConnections(), 2000).unref();
      }),
  };
}
