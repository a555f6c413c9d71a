import { connect, type Socket } from 'node:net';
import { turns } from '../turns.js';

/**
 * A lean HTTP/1.1 client for plain-http origins: one `net` socket per connection, request heads
 * built once per (origin, method, path) and written as bytes, responses parsed straight out of one
 * read buffer shared by every socket of the thread (the `onread` option: no stream objects, no
 * per-read allocation). It parses only what a VU needs to go on: the status, the framing headers
 * (content-length, transfer-encoding, connection), and keeps the header block as one string the
 * response parses only if the scenario reads `headers`. Bodies are copied out of the shared buffer
 * (it is reused by the next read). No pipelining: one request at a time per connection.
 *
 * The exchange it drives is the VU client's Exchange (client.ts): this module sets its wire fields
 * and calls complete() exactly once per request.
 */

/** What this transport needs of a request in flight (implemented by client.ts's Exchange). */
export interface LeanExchange {
  readonly method: string;
  start: number;
  sentAt: number;
  headersAt: number;
  connectMs: number;
  status: number;
  headerText: string | undefined;
  hasSetCookie: boolean;
  bytesReceived: number;
  /** Bytes to write: the request head (with the body appended when small), and a separate body if large. */
  wire: Buffer;
  wireBody: Buffer | undefined;
  timeoutMs: number;
  /** Set once the request was retried on a fresh connection (a stale keep-alive socket). */
  retried: boolean;
  onData(chunk: Buffer): void;
  complete(error: string | undefined, end?: number): void;
}

/** Time allowed to open a connection (as the undici client: 10 s), reported as 'timeout'. */
const CONNECT_TIMEOUT_MS = 10_000;
/** A response head larger than this fails the request ('headers too large'), as undici's limit does. */
export const MAX_HEAD_BYTES = 64 * 1024;
/** Per-thread read buffer shared by all sockets: each read is parsed synchronously before the next. */
const READ_BUFFER = Buffer.allocUnsafe(64 * 1024);
const CRLF = Buffer.from('\r\n');
const CRLFCRLF = Buffer.from('\r\n\r\n');

/** Methods that may be repeated safely (RFC 9110 9.2.2): only these are retried on a fresh connection. */
function idempotent(method: string): boolean {
  return (
    method === 'GET' ||
    method === 'HEAD' ||
    method === 'PUT' ||
    method === 'DELETE' ||
    method === 'OPTIONS' ||
    method === 'TRACE'
  );
}

enum Phase {
  Head = 0,
  Length = 1,
  ChunkSize = 2,
  ChunkData = 3,
  ChunkEnd = 4,
  Trailers = 5,
  UntilClose = 6,
}

// Timeouts: one sweep timer per thread over the connections with a request in flight, instead of
// a timer per request.
const inFlight = new Set<LeanConnection>();
let sweeper: NodeJS.Timeout | undefined;
const SWEEP_MS = 20;
function sweep(): void {
  const now = performance.now();
  for (const c of inFlight) if (now >= c.deadline) c.timedOut();
  if (inFlight.size === 0 && sweeper) {
    clearInterval(sweeper);
    sweeper = undefined;
  }
}
function watch(c: LeanConnection): void {
  inFlight.add(c);
  if (!sweeper) {
    sweeper = setInterval(sweep, SWEEP_MS);
    sweeper.unref();
  }
}

/** One origin as the thread sees it: where to connect, and the request heads built so far. */
export class LeanOrigin {
  private readonly heads = new Map<string, Map<string, Buffer>>();
  private headCount = 0;
  /** Where to connect ('[::1]' without the brackets). */
  readonly connectHost: string;
  readonly port: number;

  constructor(
    readonly origin: string,
    hostname: string,
    port: string,
    /** The Host header: host[:port] as in the URL. */
    readonly hostHeader: string,
  ) {
    this.connectHost = hostname.startsWith('[') ? hostname.slice(1, -1) : hostname;
    this.port = port ? Number(port) : 80;
  }

  /** The request head of a request with no headers of its own and no body, built once. */
  plainHead(method: string, path: string): Buffer | string {
    const byMethod = this.heads.get(path);
    const cached = byMethod?.get(method);
    if (cached) return cached;
    const built = buildHead(method, path, this.hostHeader, undefined, -1);
    if (typeof built === 'string') return built;
    // Bounded: a scenario with unbounded paths (an id in every URL) builds heads as it goes.
    if (this.headCount >= 1000) {
      this.heads.clear();
      this.headCount = 0;
    }
    let m = byMethod;
    if (!m) {
      m = new Map();
      this.heads.set(path, m);
    }
    m.set(method, built);
    this.headCount++;
    return built;
  }
}

const thread = new Map<string, LeanOrigin>();
/** The thread's record of an http: origin (shared by its VUs). */
export function leanOrigin(u: { origin: string; hostname: string; port: string; host: string }): LeanOrigin {
  let o = thread.get(u.origin);
  if (!o) {
    o = new LeanOrigin(u.origin, u.hostname, u.port, u.host);
    thread.set(u.origin, o);
  }
  return o;
}

// Characters that would let a header or path break out of its line (request smuggling).
/** A path with a space or control character (it would end or split the request line). */
function badPath(path: string): boolean {
  for (let i = 0; i < path.length; i++) {
    const c = path.charCodeAt(i);
    if (c <= 32 || c === 127) return true;
  }
  return false;
}
/** A header value with CR, LF or NUL (it would start a header of its own). */
function badValue(value: string): boolean {
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c === 13 || c === 10 || c === 0) return true;
  }
  return false;
}
const BAD_NAME = /[^!#$%&'*+\-.^_`|~0-9A-Za-z]/;
const BAD_METHOD = /[^A-Za-z]/;

/**
 * The request head as bytes, or a string naming what is invalid (the request then fails with it).
 * `contentLength` -1 means no body (content-length: 0 is still sent for POST/PUT/PATCH, as undici does).
 */
export function buildHead(
  method: string,
  path: string,
  hostHeader: string,
  headers: Record<string, string> | undefined,
  contentLength: number,
): Buffer | string {
  if (BAD_METHOD.test(method)) return 'invalid method';
  if (badPath(path)) return 'invalid request path';
  let head = `${method} ${path} HTTP/1.1\r\n`;
  let host = hostHeader;
  let extra = '';
  if (headers) {
    for (const k in headers) {
      const v = headers[k];
      if (v === undefined) continue;
      const value = String(v);
      if (BAD_NAME.test(k) || badValue(value)) return `invalid header ${k}`;
      const lower = k.toLowerCase();
      if (lower === 'host') host = value;
      else if (lower === 'content-length' || lower === 'connection' || lower === 'transfer-encoding') continue;
      else extra += `${k}: ${value}\r\n`;
    }
  }
  head += `host: ${host}\r\nconnection: keep-alive\r\n${extra}`;
  if (contentLength > 0 || (contentLength === 0 && method !== 'GET' && method !== 'HEAD'))
    head += `content-length: ${contentLength}\r\n`;
  else if (contentLength < 0 && (method === 'POST' || method === 'PUT' || method === 'PATCH'))
    head += 'content-length: 0\r\n';
  return Buffer.from(`${head}\r\n`, 'latin1');
}

/** A VU's connections to one origin: up to `max`, and a queue for requests when all are busy. */
export class LeanPool {
  readonly conns: LeanConnection[] = [];
  private queue: LeanExchange[] | undefined;
  closed = false;

  constructor(
    readonly origin: LeanOrigin,
    private readonly max: number,
  ) {}

  /** `at`: when the request is handed over (its start, or now for a queued or retried one). */
  dispatch(x: LeanExchange, at: number): void {
    if (this.closed) {
      x.complete('aborted');
      return;
    }
    const conns = this.conns;
    for (let i = 0; i < conns.length; i++) {
      const c = conns[i]!;
      if (c.x === undefined && !c.dead) {
        c.send(x, at);
        return;
      }
    }
    if (conns.length < this.max) {
      let c: LeanConnection;
      try {
        c = new LeanConnection(this);
      } catch (err) {
        // net.connect refusing its arguments: a failed request, never an exception in the VU.
        x.complete(`network error: ${(err as Error)?.message ?? String(err)}`);
        return;
      }
      conns.push(c);
      c.send(x, at);
      return;
    }
    if (!this.queue) this.queue = [];
    this.queue.push(x);
  }

  /** A connection is free again (or gone): the next queued request takes a connection. */
  next(): void {
    const q = this.queue;
    if (q && q.length > 0) this.dispatch(q.shift()!, performance.now());
  }

  remove(c: LeanConnection): void {
    const i = this.conns.indexOf(c);
    if (i !== -1) this.conns.splice(i, 1);
  }

  /** Close every connection: requests in flight and queued fail with 'aborted'. */
  destroy(): void {
    this.closed = true;
    const q = this.queue;
    this.queue = undefined;
    for (const c of this.conns.splice(0)) c.abort();
    if (q) for (const x of q) x.complete('aborted');
  }
}

/** One keep-alive connection: a socket and the parser state of the response it is reading. */
export class LeanConnection {
  readonly socket: Socket;
  x: LeanExchange | undefined;
  dead = false;
  deadline = 0;
  private connected = false;
  private connectStart: number;
  /** A response was read on this connection before: the server may have closed it while idle. */
  private reused = false;
  private gotBytes = false;
  private closeAfter = false;
  private phase = Phase.Head;
  private remaining = 0;
  private pending: Buffer | undefined;
  private error: Error | undefined;

  constructor(readonly pool: LeanPool) {
    const o = pool.origin;
    this.connectStart = performance.now();
    this.socket = connect({
      host: o.connectHost,
      port: o.port,
      noDelay: true,
      keepAlive: true,
      keepAliveInitialDelay: 60_000,
      onread: {
        buffer: READ_BUFFER,
        callback: (n: number) => {
          this.onRead(n, READ_BUFFER);
          return true;
        },
      },
    });
    this.socket.on('connect', () => this.onConnect());
    this.socket.on('error', (err) => {
      this.error = err;
    });
    this.socket.on('close', () => this.onClose());
  }

  send(x: LeanExchange, at: number): void {
    this.x = x;
    this.gotBytes = false;
    this.closeAfter = false;
    this.phase = Phase.Head;
    this.pending = undefined;
    if (this.connected) this.write(x, at);
    else this.deadline = this.connectStart + CONNECT_TIMEOUT_MS;
    watch(this);
  }

  private write(x: LeanExchange, at: number): void {
    x.sentAt = at;
    this.deadline = at + x.timeoutMs;
    const s = this.socket;
    if (x.wireBody) {
      s.cork();
      s.write(x.wire);
      s.write(x.wireBody);
      s.uncork();
    } else s.write(x.wire);
  }

  private onConnect(): void {
    const now = performance.now();
    this.connected = true;
    const x = this.x;
    if (x) {
      x.connectMs = Math.max(0, now - Math.max(x.start, this.connectStart));
      this.write(x, now);
    }
  }

  /** The socket is gone (closed by either side, or failed): finish what was in flight. */
  private onClose(): void {
    this.dead = true;
    this.pool.remove(this);
    inFlight.delete(this);
    const x = this.x;
    this.x = undefined;
    if (x) {
      if (this.phase === Phase.UntilClose) this.done(x, performance.now());
      else if (this.reused && !this.gotBytes && !x.retried && idempotent(x.method) && !this.pool.closed) {
        // The server closed a kept-alive connection as we reused it (its idle timeout): nothing of
        // a response arrived, so the request is sent again, once, on a fresh connection.
        x.retried = true;
        x.connectMs = 0;
        this.pool.dispatch(x, performance.now());
        return;
      } else x.complete(this.error ? classifySocketError(this.error) : 'connection reset');
    }
    this.pool.next();
  }

  /** The request's time ran out (the sweep timer): it fails, and the connection is not reused. */
  timedOut(): void {
    const x = this.x;
    this.x = undefined;
    inFlight.delete(this);
    this.dead = true;
    this.pool.remove(this);
    this.socket.destroy();
    if (x) x.complete('timeout');
    this.pool.next();
  }

  /** Closed by the VU: what was in flight fails with 'aborted'. */
  abort(): void {
    const x = this.x;
    this.x = undefined;
    this.dead = true;
    inFlight.delete(this);
    this.socket.destroy();
    if (x) x.complete('aborted');
  }

  private fail(error: string): void {
    const x = this.x;
    this.x = undefined;
    this.dead = true;
    inFlight.delete(this);
    this.pool.remove(this);
    this.socket.destroy();
    if (x) x.complete(error);
    this.pool.next();
  }

  private done(x: LeanExchange, end: number): void {
    this.x = undefined;
    inFlight.delete(this);
    this.reused = true;
    if (this.closeAfter || this.dead) {
      this.dead = true;
      this.pool.remove(this);
      this.socket.destroy();
    }
    x.complete(undefined, end);
    this.pool.next();
  }

  private onRead(n: number, buf: Buffer): void {
    const x = this.x;
    if (x === undefined) {
      // Bytes with no request in flight (pipelining is not used): the connection cannot be trusted.
      this.dead = true;
      this.pool.remove(this);
      this.socket.destroy();
      return;
    }
    this.gotBytes = true;
    if (this.pending) {
      const data = Buffer.concat([this.pending, buf.subarray(0, n)]);
      this.pending = undefined;
      this.parse(x, data, data.length);
    } else this.parse(x, buf, n); // the shared buffer itself: bytes past n are stale
  }

  /** Parse data[0, end): `data` may be the shared read buffer, so searches ignore matches past `end`. */
  private parse(x: LeanExchange, data: Buffer, end: number): void {
    let pos = 0;
    let now = 0;
    while (pos < end || this.phase === Phase.Head) {
      switch (this.phase) {
        case Phase.Head: {
          if (pos >= end) return;
          let idx = data.indexOf(CRLFCRLF, pos);
          if (idx + 4 > end) idx = -1;
          if (idx === -1) {
            if (end - pos > MAX_HEAD_BYTES) {
              this.fail('headers too large');
              return;
            }
            this.pending = Buffer.copyBytesFrom(data, pos, end - pos);
            return;
          }
          if (idx - pos > MAX_HEAD_BYTES) {
            this.fail('headers too large');
            return;
          }
          // "HTTP/1.x SSS"
          if (
            idx - pos < 12 ||
            data[pos] !== 72 /* H */ ||
            data[pos + 4] !== 47 /* / */ ||
            data[pos + 5] !== 49 /* 1 */ ||
            data[pos + 8] !== 32
          ) {
            this.fail('network error: invalid HTTP response');
            return;
          }
          const status = (data[pos + 9]! - 48) * 100 + (data[pos + 10]! - 48) * 10 + (data[pos + 11]! - 48);
          if (!(status >= 100 && status <= 999)) {
            this.fail('network error: invalid HTTP response');
            return;
          }
          const http10 = data[pos + 7] === 48; /* 0 */
          const lineEnd = data.indexOf(CRLF, pos);
          const headEnd = idx + 4;
          if (status < 200 && status !== 101) {
            // 100 Continue, 103 Early Hints: informational, the real response follows.
            x.bytesReceived += headEnd - pos;
            pos = headEnd;
            continue;
          }
          now = performance.now();
          const text = lineEnd + 2 < idx ? data.toString('latin1', lineEnd + 2, idx) : '';
          let length = -1;
          let chunked = false;
          let close = http10;
          let setCookie = false;
          // Only the framing headers are looked at here; the rest stays one string until read.
          let i = 0;
          while (i < text.length) {
            let eol = text.indexOf('\r\n', i);
            if (eol === -1) eol = text.length;
            const c0 = text.charCodeAt(i) | 0x20;
            if (c0 === 99 /* c */ || c0 === 116 /* t */ || c0 === 115 /* s */) {
              const colon = text.indexOf(':', i);
              if (colon !== -1 && colon < eol) {
                const name = text.slice(i, colon).toLowerCase();
                if (name === 'content-length') length = Number(text.slice(colon + 1, eol).trim());
                else if (name === 'transfer-encoding')
                  chunked = /(^|,)\s*chunked\s*$/i.test(text.slice(colon + 1, eol));
                else if (name === 'connection') {
                  const v = text
                    .slice(colon + 1, eol)
                    .trim()
                    .toLowerCase();
                  if (v.includes('close')) close = true;
                  else if (http10 && v.includes('keep-alive')) close = false;
                } else if (name === 'set-cookie') setCookie = true;
              }
            }
            i = eol + 2;
          }
          turns.n++;
          x.status = status;
          x.headerText = text;
          x.hasSetCookie = setCookie;
          x.headersAt = now;
          x.bytesReceived += headEnd - pos;
          this.closeAfter = close;
          this.deadline = now + x.timeoutMs;
          pos = headEnd;
          if (x.method === 'HEAD' || status === 204 || status === 304 || status === 101) {
            if (status === 101) this.closeAfter = true;
            if (pos < end) this.closeAfter = true; // bytes past the response: not trustworthy
            this.done(x, now);
            return;
          }
          if (chunked) this.phase = Phase.ChunkSize;
          else if (length >= 0) {
            if (!Number.isSafeInteger(length)) {
              this.fail('network error: invalid content-length');
              return;
            }
            if (length === 0) {
              if (pos < end) this.closeAfter = true;
              this.done(x, now);
              return;
            }
            this.phase = Phase.Length;
            this.remaining = length;
          } else {
            this.phase = Phase.UntilClose;
            this.closeAfter = true;
          }
          break;
        }
        case Phase.Length:
        case Phase.ChunkData:
        case Phase.UntilClose: {
          const take = this.phase === Phase.UntilClose ? end - pos : Math.min(this.remaining, end - pos);
          // Copied: the read buffer is reused by the next read (onData counts the bytes received).
          x.onData(Buffer.copyBytesFrom(data, pos, take));
          pos += take;
          if (this.phase === Phase.UntilClose) break;
          this.remaining -= take;
          if (this.remaining > 0) break;
          if (this.phase === Phase.ChunkData) {
            this.phase = Phase.ChunkEnd;
            this.remaining = 2;
            break;
          }
          if (pos < end) this.closeAfter = true;
          this.done(x, now || performance.now());
          return;
        }
        case Phase.ChunkEnd: {
          const skip = Math.min(this.remaining, end - pos);
          pos += skip;
          x.bytesReceived += skip;
          this.remaining -= skip;
          if (this.remaining === 0) this.phase = Phase.ChunkSize;
          break;
        }
        case Phase.ChunkSize:
        case Phase.Trailers: {
          let eol = data.indexOf(CRLF, pos);
          if (eol + 2 > end) eol = -1;
          if (eol === -1) {
            if (end - pos > MAX_HEAD_BYTES) {
              this.fail('network error: invalid chunked body');
              return;
            }
            this.pending = Buffer.copyBytesFrom(data, pos, end - pos);
            return;
          }
          x.bytesReceived += eol + 2 - pos;
          if (this.phase === Phase.Trailers) {
            const empty = eol === pos;
            pos = eol + 2;
            if (empty) {
              if (pos < end) this.closeAfter = true;
              this.done(x, now || performance.now());
              return;
            }
            break;
          }
          let size = 0;
          let digits = 0;
          for (let k = pos; k < eol; k++) {
            const ch = data[k]!;
            let d: number;
            if (ch >= 48 && ch <= 57) d = ch - 48;
            else if ((ch | 0x20) >= 97 && (ch | 0x20) <= 102) d = (ch | 0x20) - 87;
            else if (ch === 59 /* ; */ || ch === 32 || ch === 9) break;
            else {
              this.fail('network error: invalid chunked body');
              return;
            }
            size = size * 16 + d;
            digits++;
          }
          if (digits === 0 || size > Number.MAX_SAFE_INTEGER) {
            this.fail('network error: invalid chunked body');
            return;
          }
          pos = eol + 2;
          if (size === 0) this.phase = Phase.Trailers;
          else {
            this.phase = Phase.ChunkData;
            this.remaining = size;
          }
          break;
        }
      }
    }
    // The read ended inside a body: the idle clock restarts (as undici's bodyTimeout).
    this.deadline = (now || performance.now()) + x.timeoutMs;
  }
}

function classifySocketError(err: Error): string {
  const code = (err as { code?: string }).code ?? '';
  switch (code) {
    case 'ECONNREFUSED':
      return 'connection refused';
    case 'ECONNRESET':
    case 'EPIPE':
      return 'connection reset';
    case 'ETIMEDOUT':
      return 'timeout';
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return 'dns error';
    default:
      return code ? `network error ${code}` : `network error: ${err.message}`;
  }
}
