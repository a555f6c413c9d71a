import { STATUS_CODES } from 'node:http';
import { connect, type Server as NetServer, Socket } from 'node:net';
import type { SlotMetrics } from '../metrics.js';
import type { Slot } from '../types.js';
import {
  ChunkedScanner,
  CRLFCRLF,
  type Framing,
  type Head,
  HeadError,
  isChunked,
  keepsAlive,
  parseRequestHead,
  parseResponseHead,
  responseFraming,
} from './http1.js';

/**
 * The embedded router's data path on plain `net` sockets: each request head is parsed once (http1.ts),
 * sent to a pooled keep-alive upstream connection with a rewritten head, and the answer goes back with
 * a rewritten head and its body bytes as they came, framed by Content-Length, chunked or close. Node's
 * http server and undici did the same with a request and a response object each, header objects, a
 * second parser and re-encoding of every body: about 3x HAProxy's CPU per request (bench/router).
 */

/** Longest request / response head accepted (Node's and HAProxy's default order of magnitude). */
export const MAX_HEAD_BYTES = 16 * 1024;

// Hop-by-hop headers (RFC 9110 7.6.1) are for one connection only and are not forwarded.
export const HOP_BY_HOP = new Set([
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

/** An upgraded connection (WebSocket...): a byte tunnel pinned to the backend of the slot that accepted it. */
export interface Tunnel {
  client: Socket;
  upstream: Socket;
}

export interface LiveBackend {
  id: string;
  url: string;
  hostname: string;
  port: number;
  /** Host header for a request that came without one (HTTP/1.0). */
  hostHeader: string;
  inFlight: number;
  pool: BackendPool;
}

export interface SlotRuntime {
  backends: LiveBackend[];
  /** Backends removed from the slot that still finish requests. */
  leaving: Set<LiveBackend>;
  next: number;
  inFlight: number;
  tunnels: Set<Tunnel>;
  metrics: SlotMetrics;
}

export interface Route {
  slot: Slot;
  /** The sticky cookie to set on the answer, when the router assigned a bucket. */
  setCookie?: string;
}

/** What the data path needs from the router. */
export interface ProxyContext {
  readonly timeouts: { connect: number; headers: number; idle: number };
  readonly forwarded: boolean;
  readonly slots: Record<Slot, SlotRuntime>;
  route(head: Head): Route | undefined;
  retryable(method: string, hasBody: boolean): boolean;
  tunnel(client: Socket, head: Head, upstreamHead: string, rest: Buffer | null, route: Route, started: number): void;
  connectionClosed(conn: ClientConnection): void;
}

/**
 * The request head for the backend. Hop-by-hop headers and the ones the client named in `Connection`
 * are dropped (RFC 9110 7.6.1); an upgrade keeps `Upgrade` and gets `Connection: upgrade`. X-Forwarded-For
 * is extended, X-Forwarded-Proto/-Host replaced (the router is the edge), `Forwarded` added when configured.
 */
export function upstreamRequestHead(
  head: Head,
  peer: string,
  options: { forwarded: boolean; upgrade: boolean; defaultHost: string },
): string {
  let s = `${head.method} ${head.target} HTTP/1.${head.minor}\r\n`;
  let xff: string | undefined;
  let forwarded: string | undefined;
  let host: string | undefined;
  const named = head.connection;
  const n = head.lower.length;
  for (let i = 0; i < n; i++) {
    const lower = head.lower[i]!;
    const value = head.values[i]!;
    if (options.upgrade && lower === 'upgrade') {
      s += `${head.names[i]}: ${value}\r\n`;
      continue;
    }
    if (HOP_BY_HOP.has(lower)) continue;
    // The framing header stays whatever the client listed: the body is forwarded as it came.
    if (named.length > 0 && named.includes(lower) && lower !== 'content-length') continue;
    if (lower === 'host') host ??= value;
    if (lower === 'x-forwarded-for') xff = xff ? `${xff}, ${value}` : value;
    else if (lower === 'x-forwarded-proto' || lower === 'x-forwarded-host') continue;
    else if (lower === 'forwarded' && options.forwarded) forwarded = forwarded ? `${forwarded}, ${value}` : value;
    else s += `${head.names[i]}: ${value}\r\n`;
  }
  if (host === undefined) s += `host: ${options.defaultHost}\r\n`;
  if (head.transferEncoding) s += 'transfer-encoding: chunked\r\n';
  if (options.upgrade) s += 'connection: upgrade\r\n';
  else if (head.minor === 0) s += 'connection: keep-alive\r\n';
  s += `x-forwarded-for: ${xff ? `${xff}, ${peer}` : peer}\r\nx-forwarded-proto: http\r\n`;
  if (host !== undefined) s += `x-forwarded-host: ${host}\r\n`;
  if (options.forwarded) {
    const self = forwardedElement(peer, host);
    s += `forwarded: ${forwarded ? `${forwarded}, ${self}` : self}\r\n`;
  }
  return `${s}\r\n`;
}

/** One RFC 7239 element for this hop: the peer, the Host asked for, the scheme (quoted where not a token). */
function forwardedElement(peer: string, host: string | undefined): string {
  const quote = (v: string) => (/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(v) ? v : `"${v.replace(/["\\]/g, '\\$&')}"`);
  const forId = peer.includes(':') ? `"[${peer}]"` : peer;
  return `for=${forId}${host ? `;host=${quote(host)}` : ''};proto=http`;
}

/**
 * The answer's head for the client: the backend's status line and end-to-end headers (hop-by-hop ones
 * and the ones it named in `Connection` dropped; Content-Length / Transfer-Encoding kept since the body
 * goes out as it came), the sticky cookie after the app's own cookies, and our connection decision.
 */
export function clientResponseHead(
  head: Head,
  setCookie: string | undefined,
  connection: 'close' | 'keep-alive' | undefined,
): string {
  let s = `HTTP/1.1 ${head.status} ${head.reason}\r\n`;
  const named = head.connection;
  const n = head.lower.length;
  for (let i = 0; i < n; i++) {
    const lower = head.lower[i]!;
    if (lower === 'transfer-encoding') {
      s += `${head.names[i]}: ${head.values[i]}\r\n`;
      continue;
    }
    if (HOP_BY_HOP.has(lower)) continue;
    if (named.length > 0 && named.includes(lower) && lower !== 'content-length') continue;
    s += `${head.names[i]}: ${head.values[i]}\r\n`;
  }
  if (setCookie) s += `set-cookie: ${setCookie}\r\n`;
  if (connection) s += `connection: ${connection}\r\n`;
  return `${s}\r\n`;
}

function headerValue(head: Head, lower: string): string | undefined {
  const i = head.lower.indexOf(lower);
  return i < 0 ? undefined : head.values[i];
}

/** An answer made by the router itself (503 no backend, 502/504 backend failures, 400/431 bad requests). */
export function localResponse(status: number, text: string, close: boolean, slot?: Slot): string {
  return (
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\ncontent-type: text/plain\r\n` +
    `content-length: ${Buffer.byteLength(text)}\r\n${slot ? `x-bulwark-slot: ${slot}\r\n` : ''}` +
    `${close ? 'connection: close\r\n' : ''}\r\n${text}`
  );
}

// ---- upstream connection pool -------------------------------------------------------------------

/** Reads from every upstream connection land here; valid only during the read callback. */
const UPSTREAM_READ_BUFFER = Buffer.allocUnsafe(64 * 1024);

/** One keep-alive connection to a backend; its listeners stay for its life and call whoever owns it now. */
export class UpstreamConnection {
  readonly socket: Socket;
  owner: Exchange | undefined;
  connecting = true;
  dead = false;
  error: (Error & { code?: string }) | undefined;
  idleSince = 0;
  /** How long it may stay idle in the pool (30 s, less when the backend's Keep-Alive says so). */
  keepAliveMs: number;
  private timeoutMs = -1;

  constructor(readonly pool: BackendPool) {
    this.keepAliveMs = pool.keepAliveMs;
    // `onread`: the bytes arrive in one shared buffer, straight to onUpstreamData, without the stream
    // machinery and an allocation per read (the data path copies what it keeps: see onUpstreamData).
    const socket = connect({
      host: pool.hostname,
      port: pool.port,
      noDelay: true,
      onread: {
        buffer: UPSTREAM_READ_BUFFER,
        callback: (n: number, buf: Uint8Array) => {
          const d = Buffer.from(buf.buffer, buf.byteOffset, n);
          if (this.owner) this.owner.onUpstreamData(d);
          else socket.destroy(); // bytes nobody asked for: the connection cannot be trusted any more
          return true;
        },
      },
    });
    this.socket = socket;
    socket.on('connect', () => {
      this.connecting = false;
      this.owner?.onUpstreamConnect();
    });
    socket.on('error', (err) => {
      this.error = err;
    });
    socket.on('timeout', () => {
      if (this.owner) this.owner.onUpstreamTimeout();
      else socket.destroy();
    });
    socket.on('drain', () => this.owner?.onUpstreamDrain());
    socket.on('close', () => {
      this.dead = true;
      const owner = this.owner;
      this.owner = undefined;
      pool.closed(this);
      owner?.onUpstreamClose(this.error);
    });
  }

  /** Socket inactivity timeout; only touched when the value changes (each call allocates a timer). */
  setTimeout(ms: number): void {
    if (ms !== this.timeoutMs) {
      this.timeoutMs = ms;
      this.socket.setTimeout(ms);
    }
  }

  destroy(): void {
    this.owner = undefined;
    this.socket.destroy();
  }
}

/** Keep-alive connections to one backend: idle ones reused newest first, at most `max`, then a queue. */
export class BackendPool {
  private readonly idle: UpstreamConnection[] = [];
  private readonly waiting: Exchange[] = [];
  private readonly all = new Set<UpstreamConnection>();
  private closing = false;
  private whenClosed?: () => void;

  constructor(
    readonly hostname: string,
    readonly port: number,
    readonly max: number,
    readonly keepAliveMs: number,
  ) {}

  get size(): number {
    return this.all.size;
  }

  acquire(ex: Exchange): void {
    while (this.idle.length > 0) {
      const c = this.idle.pop()!;
      if (!c.dead) {
        ex.attach(c);
        return;
      }
    }
    if (this.all.size < this.max) {
      ex.attach(this.open());
      return;
    }
    this.waiting.push(ex);
  }

  private open(): UpstreamConnection {
    const c = new UpstreamConnection(this);
    this.all.add(c);
    return c;
  }

  release(c: UpstreamConnection): void {
    c.owner = undefined;
    if (this.closing || c.dead) {
      c.destroy();
      return;
    }
    while (this.waiting.length > 0) {
      const ex = this.waiting.shift()!;
      if (!ex.aborted) {
        ex.attach(c);
        return;
      }
    }
    c.idleSince = Date.now();
    this.idle.push(c);
  }

  closed(c: UpstreamConnection): void {
    this.all.delete(c);
    const i = this.idle.indexOf(c);
    if (i >= 0) this.idle.splice(i, 1);
    while (this.waiting.length > 0 && this.all.size < this.max) {
      const ex = this.waiting.shift()!;
      if (!ex.aborted) ex.attach(this.open());
    }
    if (this.closing && this.all.size === 0) this.whenClosed?.();
  }

  /** Close connections idle longer than their keep-alive (called every 500 ms). */
  sweep(now: number): void {
    for (let i = this.idle.length - 1; i >= 0; i--) {
      const c = this.idle[i]!;
      if (now - c.idleSince >= c.keepAliveMs) {
        this.idle.splice(i, 1);
        c.destroy();
      }
    }
  }

  /** Stop reusing connections; resolves when the last one (finishing its request) is gone. */
  close(): Promise<void> {
    this.closing = true;
    for (const c of this.idle.splice(0)) c.destroy();
    if (this.all.size === 0) return Promise.resolve();
    return new Promise((resolve) => {
      this.whenClosed = resolve;
    });
  }

  destroy(): void {
    this.closing = true;
    this.waiting.length = 0;
    for (const c of [...this.all]) c.destroy();
  }
}

// ---- client side --------------------------------------------------------------------------------

const CONTINUE = Buffer.from('HTTP/1.1 100 Continue\r\n\r\n');

/** Reads from every client connection accepted by acceptWithOnread land here; valid only during the read callback. */
const CLIENT_READ_BUFFER = Buffer.allocUnsafe(64 * 1024);

type ListeningHandle = {
  onconnection?: (err: number, clientHandle: unknown) => void;
  setNoDelay?: (enable: boolean) => number;
};

/**
 * Accept client connections that read through `onread` into one shared buffer, like the upstream
 * connections: no readable-stream machinery, no allocation and no 'data' event per read (user CPU
 * per request 24 -> 21 us in a closed-loop A/B, bench/router/README.md). net.Server has no `onread`
 * option, so the listening handle's `onconnection` (which net.Server sets itself) is replaced by one
 * that builds each socket with it, as net.Server would otherwise. Returns false, changing nothing,
 * where that handle is not there: the router then reads through the stream layer.
 */
export function acceptWithOnread(
  server: NetServer,
  accept: (socket: Socket, ownReads: true) => ClientConnection,
): boolean {
  const handle = (server as unknown as { _handle?: ListeningHandle })._handle;
  if (!handle || typeof handle.onconnection !== 'function') return false;
  // Linux gives each accepted socket the listener's TCP_NODELAY, so one setsockopt here replaces one
  // per connection (3 % of the router's CPU when every request comes on a new connection). Elsewhere,
  // or if the listener refuses it, each socket is set as before.
  const inherited = process.platform === 'linux' && handle.setNoDelay?.(true) === 0;
  handle.onconnection = (err, clientHandle) => {
    // An accept error (EMFILE...) is not the router's to crash on: the client retries or gives up.
    if (err || !clientHandle) return;
    let conn: ClientConnection | undefined;
    const socket = new Socket({
      handle: clientHandle,
      allowHalfOpen: true,
      readable: true,
      writable: true,
      onread: { buffer: CLIENT_READ_BUFFER, callback: (n: number) => (conn ? conn.onRead(n) : false) },
    } as ConstructorParameters<typeof Socket>[0]);
    if (!inherited) socket.setNoDelay(true);
    conn = accept(socket, true);
  };
  return true;
}

/** One client connection: requests are parsed and answered one at a time, in order (pipelining included). */
export class ClientConnection {
  buffered: Buffer | undefined;
  exchange: Exchange | undefined;
  closed = false;
  /** No more requests are read: the connection ends after the current answer. */
  ending = false;
  readonly peer: string;
  private parsing = false;
  /** Upgraded to a tunnel: reads go to the socket's readable side, which the tunnel pipes. */
  private tunneled = false;

  /** `ownReads`: the socket reads through onread (acceptWithOnread), which calls onRead. */
  constructor(
    readonly ctx: ProxyContext,
    readonly socket: Socket,
    ownReads = false,
  ) {
    this.peer = socket.remoteAddress ?? '';
    if (!ownReads) socket.on('data', (d: Buffer) => this.onData(d));
    socket.on('error', () => {});
    socket.on('end', () => {
      // The client sent everything it will send (half-close): answer what is pending, then close.
      this.ending = true;
      if (!this.exchange) this.parseNext();
      // Our own answer may have ended the connection already. A second end() is harmless, but Node
      // builds an error with a stack trace for it (ERR_STREAM_ALREADY_FINISHED) on every closed connection.
      if (!this.exchange && !socket.writableEnded) socket.end();
    });
    socket.on('close', () => {
      this.closed = true;
      ctx.connectionClosed(this);
      this.exchange?.onClientClose();
    });
    socket.on('drain', () => this.exchange?.onClientDrain());
    // Idle keep-alive connections close after 65 s without a byte (as the http server's keepAliveTimeout).
    socket.setTimeout(65_000);
    socket.on('timeout', () => {
      if (!this.exchange) socket.destroy();
    });
  }

  get idle(): boolean {
    return !this.exchange && !this.buffered;
  }

  /** `n` bytes read into CLIENT_READ_BUFFER; false stops reading (backpressure of a tunnel). */
  onRead(n: number): boolean {
    // A copy: the shared buffer is overwritten by the next read of any client.
    const d = Buffer.allocUnsafe(n);
    CLIENT_READ_BUFFER.copy(d, 0, 0, n);
    if (this.tunneled) return this.socket.push(d);
    this.onData(d);
    return true;
  }

  private onData(d: Buffer): void {
    const ex = this.exchange;
    if (ex?.readingBody) {
      const rest = ex.onClientBody(d);
      if (rest) this.stash(rest);
      return;
    }
    if (this.ending && !ex) return;
    this.stash(d);
    if (!ex) this.parseNext();
  }

  private stash(d: Buffer): void {
    this.buffered = this.buffered ? Buffer.concat([this.buffered, d]) : d;
    // Pipelined requests wait for the current answer; past a head's worth the client is paused.
    if (this.exchange && this.buffered.length > MAX_HEAD_BYTES) this.socket.pause();
  }

  /** Parse and start the next request from the buffered bytes (loop, not recursion, for pipelines). */
  parseNext(): void {
    if (this.parsing) return;
    this.parsing = true;
    try {
      while (!this.exchange && this.buffered && !this.closed) {
        const buf = this.buffered;
        let s = 0;
        while (s + 1 < buf.length && buf[s] === 13 && buf[s + 1] === 10) s += 2; // RFC 9112 2.2: stray CRLFs
        const end = buf.indexOf(CRLFCRLF, s);
        if (end < 0 || end - s > MAX_HEAD_BYTES) {
          if (buf.length - s > MAX_HEAD_BYTES) {
            this.refuse(431, 'request header fields too large\n');
            return;
          }
          this.buffered = s === buf.length ? undefined : s > 0 ? buf.subarray(s) : buf;
          if (this.ending && this.buffered) {
            this.refuse(400, 'incomplete request head\n');
            return;
          }
          return;
        }
        let head: Head;
        try {
          head = parseRequestHead(buf.toString('latin1', s, end));
          if (head.minor === 1 && head.lower.indexOf('host') < 0) throw new HeadError(400, 'no Host header');
        } catch (err) {
          const e = err as HeadError;
          this.refuse(e.status ?? 400, `${e.message}\n`);
          return;
        }
        this.buffered = end + 4 < buf.length ? buf.subarray(end + 4) : undefined;
        if (this.socket.isPaused()) this.socket.resume();
        this.start(head);
      }
    } finally {
      this.parsing = false;
    }
  }

  private start(head: Head): void {
    const started = performance.now();
    const ctx = this.ctx;
    const upgrade = head.lower.indexOf('upgrade') >= 0 && head.connection.includes('upgrade');
    if (head.method === 'CONNECT') {
      this.refuse(405, 'CONNECT is not supported\n');
      return;
    }
    const expect = headerValue(head, 'expect');
    if (expect !== undefined && expect.toLowerCase() !== '100-continue') {
      this.refuse(417, 'only Expect: 100-continue is supported\n');
      return;
    }
    const route = ctx.route(head);
    if (!route) {
      const hasBody = head.contentLength > 0 || head.transferEncoding !== '';
      this.reply(localResponse(503, 'no ready backend\n', hasBody || !keepsAlive(head)), hasBody || !keepsAlive(head));
      return;
    }
    if (upgrade) {
      // From here on the connection is a tunnel: the HTTP side lets go of the socket.
      const rest = this.buffered ?? null;
      this.buffered = undefined;
      this.closed = true;
      this.tunneled = true;
      ctx.connectionClosed(this);
      for (const ev of ['data', 'end', 'close', 'drain', 'timeout']) this.socket.removeAllListeners(ev);
      this.socket.setTimeout(0);
      const up = upstreamRequestHead(head, this.peer, {
        forwarded: ctx.forwarded,
        upgrade: true,
        defaultHost: '',
      });
      ctx.tunnel(this.socket, head, up, rest, route, started);
      return;
    }
    if (expect !== undefined && head.minor === 1 && (head.contentLength > 0 || head.transferEncoding))
      this.socket.write(CONTINUE);
    const ex = new Exchange(this, head, route, started);
    this.exchange = ex;
    const rest = this.buffered;
    this.buffered = undefined;
    ex.begin(rest);
  }

  /** Answer from the router itself and close the connection (used for requests it cannot parse). */
  refuse(status: number, text: string): void {
    this.buffered = undefined;
    this.ending = true;
    this.reply(localResponse(status, text, true), true);
  }

  private reply(text: string, close: boolean): void {
    if (this.closed) return;
    if (close) {
      this.ending = true;
      this.socket.end(text, 'latin1');
    } else this.socket.write(text, 'latin1');
  }

  /** The current exchange is over; `close` ends the connection, else the next pipelined request starts. */
  exchangeDone(close: boolean): void {
    this.exchange = undefined;
    if (this.closed) return;
    if (close || (this.ending && !this.buffered)) {
      this.ending = true;
      this.buffered = undefined;
      this.socket.end();
      return;
    }
    if (this.socket.isPaused()) this.socket.resume();
    if (this.buffered) this.parseNext();
  }
}

const RETRY_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'CLOSED']);

/** One request and its answer between a client connection and an upstream connection. */
export class Exchange {
  aborted = false;
  /** Request body bytes still expected from the client. */
  readingBody: boolean;
  private readonly hasBody: boolean;
  private bodyLeft = 0;
  private reqScanner: ChunkedScanner | undefined;
  private pending: Buffer[] | undefined;
  private up: UpstreamConnection | undefined;
  private backend!: LiveBackend;
  private readonly upstreamHead: string;
  private attempt = 0;
  private finished = false;
  private gotBytes = false;
  private resHead: Head | undefined;
  private resBuf: Buffer | undefined;
  private framing: Framing = 'none';
  private resLeft = 0;
  private resScanner: ChunkedScanner | undefined;
  private upReusable = false;
  private closeClient = false;
  private status = 0;
  private readonly rt: SlotRuntime;

  constructor(
    private readonly client: ClientConnection,
    private readonly head: Head,
    private readonly route: Route,
    private readonly started: number,
  ) {
    this.rt = client.ctx.slots[route.slot];
    this.hasBody = head.contentLength >= 0 || head.transferEncoding !== '';
    if (head.transferEncoding) {
      this.reqScanner = new ChunkedScanner();
      this.readingBody = true;
    } else {
      this.bodyLeft = Math.max(head.contentLength, 0);
      this.readingBody = this.bodyLeft > 0;
    }
    this.upstreamHead = upstreamRequestHead(head, client.peer, {
      forwarded: client.ctx.forwarded,
      upgrade: false,
      defaultHost: '',
    });
  }

  begin(rest: Buffer | undefined): void {
    const rt = this.rt;
    rt.inFlight++;
    this.pickBackend();
    if (rest) {
      const after = this.readingBody ? this.onClientBody(rest) : rest;
      if (after) this.client.buffered = after;
    }
    this.backend.pool.acquire(this);
  }

  private pickBackend(): void {
    const rt = this.rt;
    this.backend = rt.backends[rt.next++ % rt.backends.length]!;
    this.backend.inFlight++;
  }

  /** Body bytes from the client; returns the bytes after the body's end (the next pipelined request). */
  onClientBody(d: Buffer): Buffer | undefined {
    let part = d;
    let rest: Buffer | undefined;
    if (this.reqScanner) {
      let end: number;
      try {
        end = this.reqScanner.scan(d);
      } catch {
        // A broken chunked request body: the backend got part of it; nothing sensible can follow.
        this.abort(false);
        this.client.socket.destroy();
        return undefined;
      }
      if (end >= 0) {
        this.readingBody = false;
        if (end < d.length) {
          part = d.subarray(0, end);
          rest = d.subarray(end);
        }
      }
    } else {
      if (d.length > this.bodyLeft) {
        part = d.subarray(0, this.bodyLeft);
        rest = d.subarray(this.bodyLeft);
      }
      this.bodyLeft -= part.length;
      if (this.bodyLeft === 0) this.readingBody = false;
    }
    if (this.finished) return rest; // the answer came already; the rest of the body is not needed
    if (this.up) {
      if (!this.up.socket.write(part)) this.client.socket.pause();
    } else {
      if (!this.pending) this.pending = [];
      this.pending.push(part);
      this.client.socket.pause();
    }
    return rest;
  }

  attach(c: UpstreamConnection): void {
    if (this.aborted || this.finished) {
      c.pool.release(c);
      return;
    }
    this.up = c;
    c.owner = this;
    const t = this.client.ctx.timeouts;
    c.setTimeout(c.connecting ? t.connect : t.headers);
    const pending = this.pending;
    if (pending) {
      this.pending = undefined;
      c.socket.cork();
      c.socket.write(this.upstreamHead, 'latin1');
      for (const p of pending) c.socket.write(p);
      c.socket.uncork();
      if (!this.client.closed) this.client.socket.resume();
    } else {
      c.socket.write(this.upstreamHead, 'latin1');
    }
  }

  onUpstreamConnect(): void {
    this.up?.setTimeout(this.client.ctx.timeouts.headers);
  }

  onUpstreamDrain(): void {
    if (!this.client.closed && this.readingBody) this.client.socket.resume();
  }

  onClientDrain(): void {
    if (this.up && !this.finished) this.up.socket.resume();
  }

  onUpstreamData(d: Buffer): void {
    this.gotBytes = true;
    let out: Buffer;
    let part: Buffer;
    if (!this.resHead) {
      let buf = this.resBuf ? Buffer.concat([this.resBuf, d]) : d;
      let head: Head | undefined;
      let end = -1;
      for (;;) {
        end = buf.indexOf(CRLFCRLF);
        if (end < 0 || end > MAX_HEAD_BYTES) {
          if (buf.length > MAX_HEAD_BYTES) {
            this.fail('BAD_RESPONSE');
            return;
          }
          this.resBuf = Buffer.from(buf); // a copy: `d` lives in the shared read buffer
          return;
        }
        try {
          head = parseResponseHead(buf.toString('latin1', 0, end));
        } catch {
          this.fail('BAD_RESPONSE');
          return;
        }
        // Interim answers (100 Continue, 103) are the router's business with the backend: dropped.
        if (head.status >= 200) break;
        if (head.status === 101) {
          this.fail('BAD_RESPONSE');
          return;
        } // only for upgrades, which are tunnels
        buf = buf.subarray(end + 4);
        head = undefined;
        if (buf.length === 0) {
          this.resBuf = undefined;
          return;
        }
      }
      this.resBuf = undefined;
      this.resHead = head;
      this.status = head.status;
      const t = this.client.ctx.timeouts;
      this.up!.setTimeout(t.idle);
      this.framing = responseFraming(head, this.head.method);
      this.upReusable = keepsAlive(head) && this.framing !== 'close';
      if (this.upReusable) {
        const ka = headerValue(head, 'keep-alive');
        if (ka !== undefined) {
          // The backend says how long it keeps an idle connection: stop reusing it well before.
          const m = /timeout=(\d+)/i.exec(ka);
          if (m) this.up!.keepAliveMs = Math.min(this.up!.pool.keepAliveMs, Number(m[1]) * 1000 - 1500);
        }
      }
      if (this.framing === 'length') this.resLeft = head.contentLength;
      else if (this.framing === 'chunked') this.resScanner = new ChunkedScanner();
      const clientKeeps = keepsAlive(this.head) && !this.client.ending;
      this.closeClient = !clientKeeps || this.readingBody || this.framing === 'close';
      const connection = this.closeClient ? 'close' : this.head.minor === 0 ? 'keep-alive' : undefined;
      const text = clientResponseHead(head, this.route.setCookie, connection);
      part = buf.subarray(end + 4);
      const body = this.bodyPart(part);
      if (body === undefined) return;
      // Head and first body bytes in one write (one syscall for a small answer).
      const headLen = Buffer.byteLength(text, 'latin1');
      out = Buffer.allocUnsafe(headLen + body.length);
      out.write(text, 0, 'latin1');
      body.copy(out, headLen);
    } else {
      const body = this.bodyPart(d);
      if (body === undefined) return;
      out = Buffer.from(body); // a copy: `d` lives in the shared read buffer
    }
    const complete =
      this.framing === 'none' ||
      (this.framing === 'length' && this.resLeft === 0) ||
      (this.framing === 'chunked' && this.resScanner!.done);
    if (!this.client.closed && out.length > 0) {
      if (!this.client.socket.write(out) && !complete) this.up!.socket.pause();
    }
    if (complete) this.complete();
  }

  /** The part of `d` that belongs to the answer's body (undefined when the exchange failed on it). */
  private bodyPart(d: Buffer): Buffer | undefined {
    switch (this.framing) {
      case 'none':
        if (d.length > 0) this.upReusable = false;
        return d.subarray(0, 0);
      case 'close':
        return d;
      case 'length': {
        if (d.length > this.resLeft) {
          this.upReusable = false; // more than announced: the connection is out of step
          d = d.subarray(0, this.resLeft);
        }
        this.resLeft -= d.length;
        return d;
      }
      case 'chunked': {
        let end: number;
        try {
          end = this.resScanner!.scan(d);
        } catch {
          this.fail('BAD_RESPONSE');
          return undefined;
        }
        if (end >= 0 && end < d.length) {
          this.upReusable = false;
          return d.subarray(0, end);
        }
        return d;
      }
    }
  }

  /** The whole answer went to the client. */
  private complete(): void {
    if (this.finished) return;
    this.finished = true;
    this.record(this.status >= 500);
    const up = this.up!;
    this.up = undefined;
    if (this.upReusable && !this.readingBody && !up.dead) {
      if (up.socket.isPaused()) up.socket.resume();
      up.pool.release(up);
    } else up.destroy();
    this.client.exchangeDone(this.closeClient);
  }

  private record(isError: boolean): void {
    this.rt.inFlight--;
    this.backend.inFlight--;
    this.rt.metrics.record(performance.now() - this.started, isError);
  }

  onUpstreamClose(err: (Error & { code?: string }) | undefined): void {
    this.up = undefined;
    if (this.finished) return;
    if (this.resHead && this.framing === 'close' && !err) {
      // The body ended with the connection, as announced (and the client connection closes too).
      this.finished = true;
      this.record(this.status >= 500);
      this.client.exchangeDone(true);
      return;
    }
    this.fail(err?.code ?? 'CLOSED');
  }

  onUpstreamTimeout(): void {
    const up = this.up;
    this.fail(up?.connecting ? 'CONNECT_TIMEOUT' : this.resHead ? 'IDLE_TIMEOUT' : 'HEADERS_TIMEOUT');
  }

  /** The backend side failed: retry, answer 502/504, or break the client's transfer if the answer began. */
  private fail(code: string): void {
    if (this.finished) return;
    const up = this.up;
    this.up = undefined;
    up?.destroy();
    const client = this.client;
    if (
      !this.gotBytes &&
      this.attempt === 0 &&
      !client.closed &&
      RETRY_CODES.has(code) &&
      client.ctx.retryable(this.head.method, this.hasBody) &&
      this.rt.backends.length > 0
    ) {
      // Provably not answered and safe to send twice (idempotent, no body): once more, next backend.
      this.attempt++;
      this.backend.inFlight--;
      this.pickBackend();
      this.backend.pool.acquire(this);
      return;
    }
    this.finished = true;
    this.record(true);
    if (this.resHead) {
      // Part of the answer is out: ending it normally would write the final chunk (or leave a short
      // Content-Length body waiting forever). Breaking the connection is the only honest signal.
      client.exchange = undefined;
      client.socket.destroy();
      return;
    }
    const timedOut = code.endsWith('TIMEOUT');
    const close = this.readingBody || !keepsAlive(this.head) || client.ending;
    if (!client.closed)
      client.socket.write(
        localResponse(
          timedOut ? 504 : 502,
          timedOut ? 'backend timed out\n' : 'backend unreachable\n',
          close,
          this.route.slot,
        ),
        'latin1',
      );
    client.exchangeDone(close);
  }

  /** The client went away before the answer was complete: stop the backend request (not an app error). */
  onClientClose(): void {
    this.abort(false);
  }

  private abort(isError: boolean): void {
    if (this.finished) return;
    this.finished = true;
    this.aborted = true;
    this.up?.destroy();
    this.up = undefined;
    this.record(isError);
    this.client.exchange = undefined;
  }
}

export { isChunked };
