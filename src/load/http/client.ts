import { createRequire } from 'node:module';
import type { Client, Dispatcher } from 'undici';
import { parseDuration } from '../../config/duration.js';
import { turns } from '../turns.js';
import { CookieJar } from './cookies.js';
import { buildHead, type LeanExchange, type LeanOrigin, LeanPool, leanOrigin } from './lean.js';
import type {
  BatchRequest,
  HttpClient,
  HttpResponse,
  RequestOptions,
  RequestRecorder,
  RequestSample,
  Timings,
} from './types.js';

/** Shared, read-only context of all VUs of one thread: built once before the run. */
export interface HttpContext {
  /** Base URL for relative paths ('http://127.0.0.1:8080' or with a path prefix). */
  baseUrl: string | undefined;
  defaultTimeoutMs: number;
  recorder: RequestRecorder;
  /** Redirects followed unless a request says otherwise (default 10; 0 turns following off). */
  maxRedirects?: number;
}

interface Target {
  origin: string;
  host: string;
  path: string;
  /** The lean client's record of a plain-http origin; undefined for https (served by undici). */
  lean: LeanOrigin | undefined;
}

/**
 * `BULWARK_LOAD_HTTP=undici` sends plain-http requests through undici too (the client used for
 * https): an escape hatch, and the A/B baseline of bench/load-throughput.
 */
const LEAN = process.env.BULWARK_LOAD_HTTP !== 'undici';

function targetOf(u: URL, path: string): Target {
  return {
    origin: u.origin,
    host: u.host,
    path,
    lean: LEAN && u.protocol === 'http:' ? leanOrigin(u) : undefined,
  };
}

// undici is loaded only when an https origin (or BULWARK_LOAD_HTTP=undici) needs it: it costs
// memory a plain-http run does not need.
let undiciClient: typeof Client | undefined;
function newUndiciClient(origin: string): Client {
  undiciClient ??= (createRequire(import.meta.url)('undici') as typeof import('undici')).Client;
  return new undiciClient(origin, { pipelining: 1, keepAliveTimeout: 60_000, connect: { timeout: 10_000 } });
}

/** One keep-alive connection of a VU to an origin. */
interface Slot {
  client: Client;
  connected: boolean;
  connectedAt: number;
  /** Requests dispatched on it and not finished. */
  busy: number;
}

/** A VU's connections to one origin: one in the common case, up to MAX_CONNECTIONS_PER_ORIGIN. */
interface OriginPool {
  origin: string;
  slots: Slot[];
}

/**
 * Parallel requests of one VU (Promise.all, vu.http.batch) each get a connection of their own, up to
 * this many per origin (k6's batchPerHost default, and what browsers open); more wait for a free one.
 */
export const MAX_CONNECTIONS_PER_ORIGIN = 6;
/** Redirects followed by default (k6's maxRedirects). */
export const DEFAULT_MAX_REDIRECTS = 10;

// Shared listeners (no closure per VU): the slot is found from the client that emitted.
const CLIENT_SLOT = new WeakMap<Client, Slot>();
function onClientConnect(this: Client): void {
  const e = CLIENT_SLOT.get(this);
  if (e) {
    e.connected = true;
    e.connectedAt = performance.now();
  }
}
function onClientDisconnect(this: Client): void {
  const e = CLIENT_SLOT.get(this);
  if (e) e.connected = false;
}

const textDecoder = new TextDecoder();
const NO_OPTIONS: RequestOptions = Object.freeze({});
const EMPTY = Buffer.alloc(0);

/** Where a 301/302/303/307/308 response with a usable Location leads, else undefined. */
function redirectTarget(x: Exchange): URL | undefined {
  const s = x.status;
  if (s !== 301 && s !== 302 && s !== 303 && s !== 307 && s !== 308) return undefined;
  const location = x.headers.location;
  if (typeof location !== 'string' || !location) return undefined;
  try {
    const next = new URL(location, x.url);
    return next.protocol === 'http:' || next.protocol === 'https:' ? next : undefined;
  } catch {
    return undefined;
  }
}

/** Classify a network error by its code (undici's stable codes and Node's errno names). */
export function classifyNetworkError(err: unknown): string {
  const e = err as { code?: string; cause?: { code?: string }; name?: string; message?: string };
  const code = e?.code ?? e?.cause?.code ?? '';
  switch (code) {
    case 'ECONNREFUSED':
      return 'connection refused';
    case 'ECONNRESET':
    case 'EPIPE':
    case 'UND_ERR_SOCKET':
    case 'UND_ERR_CLOSED':
      return 'connection reset';
    case 'UND_ERR_HEADERS_TIMEOUT':
    case 'UND_ERR_BODY_TIMEOUT':
    case 'UND_ERR_CONNECT_TIMEOUT':
    case 'ETIMEDOUT':
      return 'timeout';
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return 'dns error';
    case 'UND_ERR_ABORTED':
      return 'aborted';
    default:
      return code ? `network error ${code}` : `network error: ${e?.message ?? String(err)}`;
  }
}

function statusClass(status: number): string {
  return `HTTP ${Math.floor(status / 100)}xx`;
}

/**
 * One request and its response. The same object is undici's dispatch handler while the request runs,
 * the response the scenario gets, and the sample the recorder counts: one allocation per request
 * instead of a dozen (closures, timings, sample), which is what keeps the GC out of the way at 1,000
 * connections.
 */
class Exchange implements HttpResponse, Dispatcher.DispatchHandler, RequestSample, LeanExchange {
  status = 0;
  rawHeaders: Buffer[] | undefined;
  /** The lean client's header block (lines without the status line), parsed only if read. */
  headerText: string | undefined;
  hasSetCookie = false;
  wire: Buffer = EMPTY;
  wireBody: Buffer | undefined;
  timeoutMs = 0;
  retried = false;
  private chunks: Buffer[] | undefined;
  private single: Buffer | undefined;
  private bytes: Buffer | undefined;
  private parsed: unknown;
  private text: string | undefined;
  private headerObj: Record<string, string | string[]> | undefined;
  private timingsObj: Timings | undefined;
  start = 0;
  /** When undici wrote the request on its connection: time queued behind other requests is not latency. */
  sentAt = 0;
  headersAt = 0;
  /** Redirects this request may still follow. */
  redirectsLeft = 0;
  connectMs = 0;
  durationMs = 0;
  waitingMs = 0;
  receivingMs = 0;
  bytesReceived = 0;
  failed = false;
  failure: string | undefined;
  error: string | undefined;
  ok = true;
  resolve: ((r: HttpResponse) => void) | undefined;

  constructor(
    readonly owner: VuHttp,
    readonly slot: Slot | undefined,
    readonly wasConnected: boolean,
    readonly origin: string,
    readonly path: string,
    readonly name: string,
    readonly method: string,
    readonly options: RequestOptions,
    readonly bytesSent: number,
  ) {}

  get tags(): Record<string, string> | undefined {
    return this.options.tags;
  }

  get url(): string {
    return this.origin + this.path;
  }

  // --- undici handler (legacy API: raw header buffers, parsed only if the scenario asks) ---
  onConnect(): void {
    this.sentAt = performance.now();
  }
  onError(err: Error): void {
    this.complete(classifyNetworkError(err));
  }
  onHeaders(statusCode: number, raw: Buffer[]): boolean {
    turns.n++;
    this.headersAt = performance.now();
    this.status = statusCode;
    this.rawHeaders = raw;
    let received = 17;
    for (let i = 0; i < raw.length; i++) received += raw[i]!.length + 2;
    this.bytesReceived += received;
    return true;
  }
  onData(chunk: Buffer): boolean {
    this.bytesReceived += chunk.length;
    if (this.single === undefined && this.chunks === undefined) this.single = chunk;
    else {
      this.chunks ??= [this.single!];
      this.chunks.push(chunk);
    }
    return true;
  }
  onComplete(): void {
    this.complete(undefined);
  }

  complete(error: string | undefined, end = performance.now()): void {
    const slot = this.slot;
    let connect = this.connectMs;
    if (slot) {
      slot.busy--;
      connect = this.wasConnected || slot.connectedAt < this.start ? 0 : Math.max(0, slot.connectedAt - this.start);
    }
    const sentAt = this.sentAt || this.start + connect;
    this.connectMs = connect;
    this.waitingMs = this.headersAt ? this.headersAt - sentAt : end - sentAt;
    this.receivingMs = this.headersAt ? end - this.headersAt : 0;
    this.durationMs = end - sentAt;
    this.error = error;
    const resolve = this.resolve;
    this.resolve = undefined;
    // A followed redirect resolves the caller's promise with the last response instead.
    if (this.owner.finish(this, resolve)) return;
    resolve?.(this);
  }

  // --- the response, as the scenario sees it ---
  get timings(): Timings {
    this.timingsObj ??= {
      connect: this.connectMs,
      waiting: this.waitingMs,
      receiving: this.receivingMs,
      duration: this.durationMs,
    };
    return this.timingsObj;
  }

  get bodyBytes(): Buffer {
    this.bytes ??= this.chunks ? Buffer.concat(this.chunks) : (this.single ?? EMPTY);
    return this.bytes;
  }

  get headers(): Record<string, string | string[]> {
    if (!this.headerObj) {
      const h: Record<string, string | string[]> = {};
      if (this.headerText !== undefined) {
        this.headerObj = parseHeaderText(this.headerText);
        return this.headerObj;
      }
      const raw = this.rawHeaders ?? [];
      for (let i = 0; i + 1 < raw.length; i += 2) {
        const k = raw[i]!.toString('latin1').toLowerCase();
        const v = raw[i + 1]!.toString('latin1');
        const prior = h[k];
        if (prior === undefined) h[k] = v;
        else if (Array.isArray(prior)) prior.push(v);
        else h[k] = [prior, v];
      }
      this.headerObj = h;
    }
    return this.headerObj;
  }

  get body(): string {
    this.text ??= textDecoder.decode(this.bodyBytes);
    return this.text;
  }

  json<T = any>(): T {
    if (this.parsed === undefined) this.parsed = JSON.parse(this.body);
    return this.parsed as T;
  }
}

/** "Name: value" lines (CRLF-separated) as Node does: lower-case names, repeated ones as arrays. */
export function parseHeaderText(text: string): Record<string, string | string[]> {
  const h: Record<string, string | string[]> = {};
  let i = 0;
  while (i < text.length) {
    let eol = text.indexOf('\r\n', i);
    if (eol === -1) eol = text.length;
    const colon = text.indexOf(':', i);
    if (colon !== -1 && colon < eol) {
      const k = text.slice(i, colon).trim().toLowerCase();
      const v = text.slice(colon + 1, eol).trim();
      const prior = h[k];
      if (prior === undefined) h[k] = v;
      else if (Array.isArray(prior)) prior.push(v);
      else h[k] = [prior, v];
    }
    i = eol + 2;
  }
  return h;
}

/**
 * One keep-alive connection per origin for one VU (a VU is a user with its own browser-like
 * connection, as Locust's FastHttpUser), requests dispatched through undici's low-level handler API
 * so no stream objects are built per request. A request never throws: network failures come back as a
 * response with status 0 and `error` set, and are recorded as failed requests.
 */
export class VuHttp implements HttpClient {
  // Most VUs talk to one origin: keep its pool in a field; other origins go to a Map made on demand.
  private primary: OriginPool | undefined;
  private others: Map<string, OriginPool> | undefined;
  // The lean client's pools (plain http), kept the same way.
  private leanPrimary: LeanPool | undefined;
  private leanOthers: Map<LeanOrigin, LeanPool> | undefined;
  private jarStore: CookieJar | undefined;
  private readonly baseTarget: Target | undefined;
  private closed = false;
  /** Set when the VU is interrupted (its grace period ran out): its requests are abandoned, not timed. */
  private interrupted = false;

  constructor(private readonly ctx: HttpContext) {
    if (ctx.baseUrl) {
      const u = new URL(ctx.baseUrl);
      this.baseTarget = targetOf(u, u.pathname === '/' ? '' : u.pathname.replace(/\/$/, ''));
    }
  }

  get(url: string, options?: RequestOptions) {
    return this.request('GET', url, options);
  }
  post(url: string, options?: RequestOptions) {
    return this.request('POST', url, options);
  }
  put(url: string, options?: RequestOptions) {
    return this.request('PUT', url, options);
  }
  patch(url: string, options?: RequestOptions) {
    return this.request('PATCH', url, options);
  }
  delete(url: string, options?: RequestOptions) {
    return this.request('DELETE', url, options);
  }
  head(url: string, options?: RequestOptions) {
    return this.request('HEAD', url, options);
  }
  cookies(host?: string): Record<string, string> {
    return this.jarStore?.entries(host ?? this.baseTarget?.host ?? '') ?? {};
  }

  private get jar(): CookieJar {
    this.jarStore ??= new CookieJar();
    return this.jarStore;
  }

  /**
   * Send several requests at once (k6's http.batch): each gets its own connection (up to
   * MAX_CONNECTIONS_PER_ORIGIN per origin); the responses come back in the order of the requests.
   */
  batch(requests: BatchRequest[]): Promise<HttpResponse[]> {
    return Promise.all(
      requests.map((r) => {
        if (typeof r === 'string') return this.request('GET', r);
        if (Array.isArray(r)) return this.request(r[0], r[1], r[2]);
        return this.request(r.method ?? 'GET', r.url, r.options);
      }),
    );
  }

  /** Close this VU's connections (in-flight requests fail with 'aborted'). */
  async close(): Promise<void> {
    this.closed = true;
    const pools = [...(this.primary ? [this.primary] : []), ...(this.others?.values() ?? [])];
    this.primary = undefined;
    this.others = undefined;
    this.leanPrimary?.destroy();
    if (this.leanOthers) for (const p of this.leanOthers.values()) p.destroy();
    this.leanPrimary = undefined;
    this.leanOthers = undefined;
    await Promise.all(pools.flatMap((p) => p.slots.map((c) => c.client.destroy().catch(() => {}))));
  }

  /** The VU's grace period ran out: abandon its requests (counted as interrupted, never timed). */
  interrupt(): Promise<void> {
    this.interrupted = true;
    return this.close();
  }

  private slotFor(origin: string): Slot {
    let pool = this.primary?.origin === origin ? this.primary : this.others?.get(origin);
    if (!pool) {
      pool = { origin, slots: [] };
      if (!this.primary) this.primary = pool;
      else {
        this.others ??= new Map();
        this.others.set(origin, pool);
      }
    }
    const slots = pool.slots;
    let least: Slot | undefined;
    for (let i = 0; i < slots.length; i++) {
      const slot = slots[i]!;
      if (slot.busy === 0) return slot;
      if (!least || slot.busy < least.busy) least = slot;
    }
    if (least && slots.length >= MAX_CONNECTIONS_PER_ORIGIN) return least;
    const client = newUndiciClient(origin);
    const slot: Slot = { client, connected: false, connectedAt: 0, busy: 0 };
    CLIENT_SLOT.set(client, slot);
    client.on('connect', onClientConnect);
    client.on('disconnect', onClientDisconnect);
    slots.push(slot);
    return slot;
  }

  request(method: string, url: string, options: RequestOptions = NO_OPTIONS): Promise<HttpResponse> {
    let target = this.baseTarget;
    let path: string;
    if (url.charCodeAt(0) === 47 /* / */ && target) path = target.path ? target.path + url : url;
    else if (/^https?:\/\//i.test(url)) {
      const u = new URL(url);
      target = targetOf(u, '');
      path = u.pathname + u.search;
    } else if (target) path = `${target.path}/${url}`;
    else throw new Error(`relative URL "${url}" but the scenario has no host (set host or --host)`);
    if (options.query) {
      const qs = new URLSearchParams(options.query as Record<string, string>).toString();
      if (qs) path += (path.includes('?') ? '&' : '?') + qs;
    }
    const redirects = options.redirects ?? this.ctx.maxRedirects ?? DEFAULT_MAX_REDIRECTS;
    return new Promise<HttpResponse>((resolve) => {
      this.send(method, target, path, options.name ?? url, options, options.body, redirects, resolve);
    });
  }

  private send(
    method: string,
    target: Target,
    path: string,
    name: string,
    options: RequestOptions,
    rawBody: string | Buffer | Uint8Array | undefined,
    redirectsLeft: number,
    resolve: (r: HttpResponse) => void,
  ): void {
    let body = rawBody;
    let headers: Record<string, string> | undefined = options.headers;
    const cookie = this.jarStore?.header(target.host);
    if (options.json !== undefined || cookie) {
      headers = { ...headers };
      if (options.json !== undefined) {
        body = JSON.stringify(options.json);
        if (!Object.keys(headers).some((k) => k.toLowerCase() === 'content-type'))
          headers['content-type'] = 'application/json';
      }
      if (cookie) headers.cookie = headers.cookie ? `${headers.cookie}; ${cookie}` : cookie;
    }
    const timeoutMs =
      options.timeout === undefined ? this.ctx.defaultTimeoutMs : parseDuration(options.timeout, 'timeout');
    if (target.lean) {
      this.sendLean(method, target.lean, path, name, options, headers, body, timeoutMs, redirectsLeft, resolve);
      return;
    }
    let bytesSent = method.length + path.length + 12;
    if (body !== undefined) bytesSent += typeof body === 'string' ? Buffer.byteLength(body) : body.byteLength;
    if (headers) for (const k in headers) bytesSent += k.length + (headers[k]?.length ?? 0) + 4;

    if (this.closed) {
      const x = new Exchange(this, undefined, false, target.origin, path, name, method, options, 0);
      x.resolve = resolve;
      x.start = performance.now();
      x.complete('aborted');
      return;
    }
    const slot = this.slotFor(target.origin);
    const x = new Exchange(this, slot, slot.connected, target.origin, path, name, method, options, bytesSent);
    x.resolve = resolve;
    x.redirectsLeft = redirectsLeft;
    x.start = performance.now();
    slot.busy++;
    slot.client.dispatch(
      {
        origin: target.origin,
        path,
        method: method as Dispatcher.HttpMethod,
        headers,
        body: body ?? null,
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
      },
      x,
    );
  }

  private sendLean(
    method: string,
    origin: LeanOrigin,
    path: string,
    name: string,
    options: RequestOptions,
    headers: Record<string, string> | undefined,
    body: string | Buffer | Uint8Array | undefined,
    timeoutMs: number,
    redirectsLeft: number,
    resolve: (r: HttpResponse) => void,
  ): void {
    let wire: Buffer | string;
    let wireBody: Buffer | undefined;
    if (headers === undefined && body === undefined) wire = origin.plainHead(method, path);
    else {
      const bodyBytes =
        body === undefined
          ? undefined
          : typeof body === 'string'
            ? Buffer.from(body)
            : Buffer.isBuffer(body)
              ? body
              : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
      wire = buildHead(method, path, origin.hostHeader, headers, bodyBytes ? bodyBytes.length : -1);
      if (typeof wire !== 'string' && bodyBytes && bodyBytes.length > 0) {
        // A small body goes out in the same write as the head.
        if (bodyBytes.length <= 16 * 1024) wire = Buffer.concat([wire, bodyBytes]);
        else wireBody = bodyBytes;
      }
    }
    const x = new Exchange(
      this,
      undefined,
      false,
      origin.origin,
      path,
      name,
      method,
      options,
      typeof wire === 'string' ? 0 : wire.length + (wireBody?.length ?? 0),
    );
    x.resolve = resolve;
    x.redirectsLeft = redirectsLeft;
    x.timeoutMs = timeoutMs;
    x.start = performance.now();
    if (typeof wire === 'string') {
      // Invalid method, path or header: fails as undici's invalid-argument error did.
      x.complete(`network error UND_ERR_INVALID_ARG: ${wire}`, x.start);
      return;
    }
    x.wire = wire;
    x.wireBody = wireBody;
    if (this.closed) {
      x.complete('aborted', x.start);
      return;
    }
    this.leanPool(origin).dispatch(x, x.start);
  }

  private leanPool(origin: LeanOrigin): LeanPool {
    const primary = this.leanPrimary;
    if (primary?.origin === origin) return primary;
    let pool = this.leanOthers?.get(origin);
    if (!pool) {
      pool = new LeanPool(origin, MAX_CONNECTIONS_PER_ORIGIN);
      if (!primary) this.leanPrimary = pool;
      else {
        this.leanOthers ??= new Map();
        this.leanOthers.set(origin, pool);
      }
    }
    return pool;
  }

  /** Send the request x's redirect leads to; it resolves the caller's promise. */
  private follow(x: Exchange, next: URL, resolve: (r: HttpResponse) => void): void {
    const s = x.status;
    // As browsers and k6: 303 (and 301/302 after a POST) continue as a GET without a body.
    const toGet = s === 303 || ((s === 301 || s === 302) && x.method === 'POST');
    const method = toGet && x.method !== 'HEAD' ? 'GET' : x.method;
    let options = x.options;
    if (toGet && (options.json !== undefined || options.body !== undefined)) options = { ...options, json: undefined };
    if (next.origin !== x.origin && options.headers) {
      // Credentials meant for one origin are not sent to another.
      const headers: Record<string, string> = {};
      for (const k in options.headers) if (k.toLowerCase() !== 'authorization') headers[k] = options.headers[k]!;
      options = { ...options, headers };
    }
    const target = targetOf(next, '');
    const path = next.pathname + next.search;
    const name = x.options.name ?? (next.origin === this.baseTarget?.origin ? path : next.href);
    this.send(method, target, path, name, options, toGet ? undefined : options.body, x.redirectsLeft - 1, resolve);
  }

  /**
   * Decide success (expect, status), store cookies and record the sample, then follow a redirect.
   * Called once per exchange; returns true when a redirect was followed (it resolves the caller).
   */
  finish(x: Exchange, resolve: ((r: HttpResponse) => void) | undefined): boolean {
    if (this.interrupted) {
      // Abandoned by a ramp-down or the end of the run: not a failure of the server, and not timed.
      x.ok = false;
      x.failed = true;
      x.failure = 'interrupted';
      if (!x.error) x.error = 'interrupted';
      this.ctx.recorder.interrupted();
      return false;
    }
    if (x.rawHeaders) this.storeCookies(x.origin, x.rawHeaders);
    else if (x.hasSetCookie) {
      const set = x.headers['set-cookie'];
      const host = new URL(x.origin).host;
      for (const c of Array.isArray(set) ? set : [set!]) this.jar.setFromHeader(host, c);
    }
    let failure: string | undefined;
    const expect = x.options.expect;
    const next = resolve && x.redirectsLeft > 0 && !x.error && !this.closed ? redirectTarget(x) : undefined;
    if (x.error) failure = x.error;
    else if (expect && !next) {
      try {
        const verdict = expect(x);
        if (verdict === false) failure = 'expect: failed';
        else if (typeof verdict === 'string') failure = `expect: ${verdict}`;
      } catch (err) {
        failure = `expect: ${(err as Error)?.message ?? String(err)}`;
      }
    } else if (x.status >= 400) failure = statusClass(x.status);
    x.ok = failure === undefined;
    x.failed = failure !== undefined;
    x.failure = failure;
    this.ctx.recorder.request(x);
    if (!next) return false;
    this.follow(x, next, resolve!);
    return true;
  }

  private storeCookies(origin: string, raw: Buffer[]): void {
    for (let i = 0; i + 1 < raw.length; i += 2) {
      const k = raw[i]!;
      if (k.length !== 10) continue;
      if (k.toString('latin1').toLowerCase() !== 'set-cookie') continue;
      this.jar.setFromHeader(new URL(origin).host, raw[i + 1]!.toString('latin1'));
    }
  }
}

export { statusClass };
