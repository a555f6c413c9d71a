import { Client, type Dispatcher } from 'undici';
import { parseDuration } from '../../config/duration.js';
import { CookieJar } from './cookies.js';
import type { HttpClient, HttpResponse, RequestOptions, RequestRecorder, Timings } from './types.js';

/** Shared, read-only context of all VUs of one thread: built once before the run. */
export interface HttpContext {
  /** Base URL for relative paths ('http://127.0.0.1:8080' or with a path prefix). */
  baseUrl: string | undefined;
  defaultTimeoutMs: number;
  recorder: RequestRecorder;
  /** Set when the run stops for good: in-flight requests are aborted by closing their clients. */
  userAgent?: string;
}

interface Target {
  origin: string;
  host: string;
  path: string;
}

interface ClientEntry {
  origin: string;
  client: Client;
  connected: boolean;
  connectedAt: number;
}

// Shared listeners (no closure per VU): the entry is found from the client that emitted.
const CLIENT_ENTRY = new WeakMap<Client, ClientEntry>();
function onClientConnect(this: Client): void {
  const e = CLIENT_ENTRY.get(this);
  if (e) {
    e.connected = true;
    e.connectedAt = performance.now();
  }
}
function onClientDisconnect(this: Client): void {
  const e = CLIENT_ENTRY.get(this);
  if (e) e.connected = false;
}

const textDecoder = new TextDecoder();
const EMPTY = Buffer.alloc(0);

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

class Response implements HttpResponse {
  private parsed: unknown;
  private text: string | undefined;
  private headerObj: Record<string, string | string[]> | undefined;
  ok = true;
  failure: string | undefined;

  constructor(
    readonly status: number,
    private readonly rawHeaders: Buffer[] | undefined,
    readonly bodyBytes: Buffer,
    readonly timings: Timings,
    readonly url: string,
    readonly name: string,
    readonly error: string | undefined,
  ) {}

  get headers(): Record<string, string | string[]> {
    if (!this.headerObj) {
      const h: Record<string, string | string[]> = {};
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

/**
 * One keep-alive connection per origin for one VU (a VU is a user with its own browser-like
 * connection, as Locust's FastHttpUser), requests dispatched through undici's low-level handler API
 * so no stream objects are built per request. A request never throws: network failures come back as a
 * response with status 0 and `error` set, and are recorded as failed requests.
 */
export class VuHttp implements HttpClient {
  // Most VUs talk to one origin: keep its client in a field; other origins go to a Map made on demand.
  private primary: ClientEntry | undefined;
  private others: Map<string, ClientEntry> | undefined;
  private jarStore: CookieJar | undefined;
  private readonly baseTarget: Target | undefined;
  private closed = false;

  constructor(private readonly ctx: HttpContext) {
    if (ctx.baseUrl) {
      const u = new URL(ctx.baseUrl);
      this.baseTarget = {
        origin: u.origin,
        host: u.host,
        path: u.pathname === '/' ? '' : u.pathname.replace(/\/$/, ''),
      };
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

  /** Close this VU's connections (in-flight requests fail with 'aborted'). */
  async close(): Promise<void> {
    this.closed = true;
    const all = [...(this.primary ? [this.primary] : []), ...(this.others?.values() ?? [])];
    this.primary = undefined;
    this.others = undefined;
    await Promise.all(all.map((c) => c.client.destroy().catch(() => {})));
  }

  private clientFor(origin: string): ClientEntry {
    if (this.primary?.origin === origin) return this.primary;
    const other = this.others?.get(origin);
    if (other) return other;
    const client = new Client(origin, { pipelining: 1, keepAliveTimeout: 60_000, connect: { timeout: 10_000 } });
    const entry: ClientEntry = { origin, client, connected: false, connectedAt: 0 };
    CLIENT_ENTRY.set(client, entry);
    client.on('connect', onClientConnect);
    client.on('disconnect', onClientDisconnect);
    if (!this.primary) this.primary = entry;
    else {
      this.others ??= new Map();
      this.others.set(origin, entry);
    }
    return entry;
  }

  private resolve(url: string): { target: Target; pathAndQuery: string } {
    if (url.startsWith('/') && this.baseTarget) {
      return { target: this.baseTarget, pathAndQuery: this.baseTarget.path + url };
    }
    if (/^https?:\/\//i.test(url)) {
      const u = new URL(url);
      return { target: { origin: u.origin, host: u.host, path: '' }, pathAndQuery: u.pathname + u.search };
    }
    if (!this.baseTarget) throw new Error(`relative URL "${url}" but the scenario has no host (set host or --host)`);
    return { target: this.baseTarget, pathAndQuery: `${this.baseTarget.path}/${url}` };
  }

  request(method: string, url: string, options: RequestOptions = {}): Promise<HttpResponse> {
    const { target, pathAndQuery } = this.resolve(url);
    let path = pathAndQuery;
    if (options.query) {
      const qs = new URLSearchParams(options.query as Record<string, string>).toString();
      if (qs) path += (path.includes('?') ? '&' : '?') + qs;
    }
    const name = options.name ?? url;
    let body: string | Buffer | Uint8Array | undefined = options.body;
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
    const fullUrl = target.origin + path;
    if (this.closed)
      return Promise.resolve(
        this.finish(options, name, method, fullUrl, 0, undefined, EMPTY, 0, 0, 0, 0, 'aborted', 0),
      );

    const entry = this.clientFor(target.origin);
    const wasConnected = entry.connected;
    let bytesSent =
      method.length + path.length + 12 + (typeof body === 'string' ? Buffer.byteLength(body) : (body?.byteLength ?? 0));
    if (headers) for (const k in headers) bytesSent += k.length + (headers[k]?.length ?? 0) + 4;

    return new Promise<HttpResponse>((resolvePromise) => {
      const start = performance.now();
      let headersAt = 0;
      let status = 0;
      let rawHeaders: Buffer[] | undefined;
      let chunks: Buffer[] | undefined;
      let single: Buffer | undefined;
      let received = 0;
      const done = (error: string | undefined) => {
        const end = performance.now();
        const connect = wasConnected || !entry.connected ? 0 : Math.max(0, entry.connectedAt - start);
        const sentAt = start + connect;
        const bytes = chunks ? Buffer.concat(chunks) : (single ?? EMPTY);
        resolvePromise(
          this.finish(
            options,
            name,
            method,
            fullUrl,
            status,
            rawHeaders,
            bytes,
            connect,
            headersAt ? headersAt - sentAt : end - sentAt,
            headersAt ? end - headersAt : 0,
            end - sentAt,
            error,
            bytesSent,
            received,
          ),
        );
      };
      const handler: Dispatcher.DispatchHandler = {
        onConnect() {},
        onError(err) {
          done(classifyNetworkError(err));
        },
        onHeaders(statusCode, raw) {
          headersAt = performance.now();
          status = statusCode;
          rawHeaders = raw as Buffer[];
          received += 17;
          for (const b of rawHeaders) received += b.length + 2;
          return true;
        },
        onData(chunk) {
          received += chunk.length;
          if (single === undefined && chunks === undefined) single = chunk;
          else {
            chunks ??= [single!];
            chunks.push(chunk);
          }
          return true;
        },
        onComplete() {
          done(undefined);
        },
      };
      entry.client.dispatch(
        {
          origin: target.origin,
          path,
          method: method as Dispatcher.HttpMethod,
          headers: headers ?? undefined,
          body: body ?? null,
          headersTimeout: timeoutMs,
          bodyTimeout: timeoutMs,
        },
        handler,
      );
    });
  }

  private finish(
    options: RequestOptions,
    name: string,
    method: string,
    url: string,
    status: number,
    rawHeaders: Buffer[] | undefined,
    bytes: Buffer,
    connect: number,
    waiting: number,
    receiving: number,
    duration: number,
    error: string | undefined,
    bytesSent: number,
    bytesReceived = 0,
  ): HttpResponse {
    const res = new Response(status, rawHeaders, bytes, { connect, waiting, receiving, duration }, url, name, error);
    if (rawHeaders) this.storeCookies(url, rawHeaders);
    let failure: string | undefined;
    if (error) failure = error;
    else if (options.expect) {
      try {
        const verdict = options.expect(res);
        if (verdict === false) failure = 'expect: failed';
        else if (typeof verdict === 'string') failure = `expect: ${verdict}`;
      } catch (err) {
        failure = `expect: ${(err as Error)?.message ?? String(err)}`;
      }
    } else if (status >= 400) failure = statusClass(status);
    res.ok = failure === undefined;
    res.failure = failure;
    this.ctx.recorder.request({
      name,
      method,
      status,
      durationMs: duration,
      failed: failure !== undefined,
      failure,
      bytesSent,
      bytesReceived,
      tags: options.tags,
    });
    return res;
  }

  private storeCookies(url: string, raw: Buffer[]): void {
    for (let i = 0; i + 1 < raw.length; i += 2) {
      const k = raw[i]!;
      if (k.length !== 10) continue;
      if (k.toString('latin1').toLowerCase() !== 'set-cookie') continue;
      const host = new URL(url).host;
      this.jar.setFromHeader(host, raw[i + 1]!.toString('latin1'));
    }
  }
}

export { statusClass };
