/**
 * The HTTP/1.x wire format as the embedded router needs it: parse a request or response head once,
 * decide how its body is framed, and find where a chunked body ends while its bytes are forwarded
 * untouched. Pure functions and a small state machine, no sockets (unit-tested in
 * test/deploy/http1.test.ts; the data path in embedded.ts uses them).
 */

export const CRLFCRLF = Buffer.from('\r\n\r\n');

/** A parsed head: start line parts and the header lines in order (names as sent and lower-cased). */
export interface Head {
  /** Request: method; response: '' */
  method: string;
  /** Request: target as sent; response: '' */
  target: string;
  /** Response: status code; request: 0 */
  status: number;
  /** Response: reason phrase as sent. */
  reason: string;
  /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
  minor: number;
  names: string[];
  lower: string[];
  values: string[];
  /** -1 when absent. */
  contentLength: number;
  /** Transfer-Encoding present (its value, lower-cased) or ''. */
  transferEncoding: string;
  /** Lower-cased tokens of the Connection header(s) or [] */
  connection: string[];
}

export class HeadError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
// A CR or LF that is not part of a CRLF, or a NUL: never valid in a head, and a smuggling vector if passed on.
const BAD_BYTES = /\r(?!\n)|(?<!\r)\n|\0/;

function parseHeaderLines(lines: string[], head: Head, onError: number): void {
  let cl = -1;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const colon = line.indexOf(':');
    if (colon <= 0) throw new HeadError(onError, `malformed header line ${JSON.stringify(line.slice(0, 60))}`);
    const name = line.slice(0, colon);
    // Also rejects obs-fold (a line starting with a space) and a space before the colon. A backend's
    // header names are only checked for that (CR/LF/NUL are excluded for the whole head already).
    if (onError === 400 ? !TOKEN.test(name) : isSpace(name.charCodeAt(0)) || isSpace(name.charCodeAt(colon - 1)))
      throw new HeadError(onError, `invalid header name ${JSON.stringify(name.slice(0, 60))}`);
    const value = line.slice(colon + 1).trim();
    const lower = name.toLowerCase();
    head.names.push(name);
    head.lower.push(lower);
    head.values.push(value);
    if (lower === 'content-length') {
      for (const part of value.split(',')) {
        const v = part.trim();
        if (!/^\d{1,15}$/.test(v)) throw new HeadError(onError, `invalid Content-Length ${JSON.stringify(value)}`);
        const n = Number(v);
        if (cl >= 0 && n !== cl) throw new HeadError(onError, 'conflicting Content-Length headers');
        cl = n;
      }
    } else if (lower === 'transfer-encoding') {
      head.transferEncoding = head.transferEncoding
        ? `${head.transferEncoding}, ${value.toLowerCase()}`
        : value.toLowerCase();
    } else if (lower === 'connection') {
      for (const t of value.split(',')) {
        const tok = t.trim().toLowerCase();
        if (tok) head.connection.push(tok);
      }
    }
  }
  head.contentLength = cl;
}

function newHead(): Head {
  return {
    method: '',
    target: '',
    status: 0,
    reason: '',
    minor: 1,
    names: [],
    lower: [],
    values: [],
    contentLength: -1,
    transferEncoding: '',
    connection: [],
  };
}

/** Parse a request head (`text` without the final CRLFCRLF); throws HeadError (400/505) when malformed. */
export function parseRequestHead(text: string): Head {
  if (BAD_BYTES.test(text)) throw new HeadError(400, 'bare CR, LF or NUL in the request head');
  const lines = text.split('\r\n');
  const start = lines[0]!;
  const s1 = start.indexOf(' ');
  const s2 = start.indexOf(' ', s1 + 1);
  if (s1 <= 0 || s2 < 0 || start.indexOf(' ', s2 + 1) >= 0)
    throw new HeadError(400, `malformed request line ${JSON.stringify(start.slice(0, 80))}`);
  const head = newHead();
  head.method = start.slice(0, s1);
  head.target = start.slice(s1 + 1, s2);
  const version = start.slice(s2 + 1);
  if (!TOKEN.test(head.method) || head.target.length === 0)
    throw new HeadError(400, `malformed request line ${JSON.stringify(start.slice(0, 80))}`);
  if (version === 'HTTP/1.1') head.minor = 1;
  else if (version === 'HTTP/1.0') head.minor = 0;
  else if (/^HTTP\/\d\.\d$/.test(version)) throw new HeadError(505, `unsupported version ${version}`);
  else throw new HeadError(400, `malformed request line ${JSON.stringify(start.slice(0, 80))}`);
  parseHeaderLines(lines, head, 400);
  if (head.transferEncoding) {
    // RFC 9112 6.1/6.3: both framings at once is the classic request-smuggling shape; a request whose
    // last transfer coding is not chunked has no knowable length. Both are refused, never guessed.
    if (head.contentLength >= 0) throw new HeadError(400, 'both Content-Length and Transfer-Encoding');
    if (!isChunked(head.transferEncoding)) throw new HeadError(400, 'Transfer-Encoding without final chunked');
  }
  return head;
}

/** Parse a response head; throws HeadError(502) when the backend sent something that is not HTTP/1.x. */
export function parseResponseHead(text: string): Head {
  if (BAD_BYTES.test(text)) throw new HeadError(502, 'bare CR, LF or NUL in the response head');
  const lines = text.split('\r\n');
  const start = lines[0]!;
  const m = /^HTTP\/1\.([01]) (\d{3})(?: (.*))?$/.exec(start);
  if (!m) throw new HeadError(502, `malformed status line ${JSON.stringify(start.slice(0, 80))}`);
  const head = newHead();
  head.minor = Number(m[1]);
  head.status = Number(m[2]);
  head.reason = m[3] ?? '';
  parseHeaderLines(lines, head, 502);
  return head;
}

/** Last transfer coding is chunked (RFC 9112 6.3). */
export function isChunked(transferEncoding: string): boolean {
  const i = transferEncoding.lastIndexOf(',');
  return (i < 0 ? transferEncoding : transferEncoding.slice(i + 1)).trim() === 'chunked';
}

/** How a response body ends. */
export type Framing = 'none' | 'length' | 'chunked' | 'close';

/** RFC 9112 6.3: a response to HEAD, 1xx, 204 and 304 never has a body whatever its headers say. */
export function responseFraming(head: Head, requestMethod: string): Framing {
  if (requestMethod === 'HEAD' || head.status < 200 || head.status === 204 || head.status === 304) return 'none';
  if (head.transferEncoding) return isChunked(head.transferEncoding) ? 'chunked' : 'close';
  if (head.contentLength >= 0) return head.contentLength === 0 ? 'none' : 'length';
  return 'close';
}

/** The connection stays open after this message (HTTP/1.1 unless `close`; HTTP/1.0 only with `keep-alive`). */
export function keepsAlive(head: Head): boolean {
  if (head.minor === 1) return !head.connection.includes('close');
  return head.connection.includes('keep-alive');
}

/**
 * Finds the end of a chunked body in the bytes as they pass (sizes, extensions, CRLFs and trailers are
 * checked, data is skipped in bulk), so the body can be forwarded byte for byte without re-encoding.
 */
export class ChunkedScanner {
  private state = 0;
  private size = 0;
  private digits = 0;
  done = false;

  /** Bytes of `buf` from `from` on: index just after the body's end, -1 when more is needed; throws when invalid. */
  scan(buf: Buffer, from = 0): number {
    let i = from;
    const len = buf.length;
    while (i < len) {
      switch (this.state) {
        case 0: // size digits
        case 1: {
          const c = buf[i]!;
          const v = hexValue(c);
          if (v >= 0) {
            if (++this.digits > 12) throw new Error('chunk size too large');
            this.size = this.size * 16 + v;
            this.state = 1;
          } else if (this.state === 0) {
            throw new Error('chunk size expected');
          } else if (c === 0x3b || c === 0x20 || c === 0x09) {
            this.state = 2; // extension (or whitespace before it): skipped
          } else if (c === 0x0d) {
            this.state = 3;
          } else {
            throw new Error('invalid chunk size');
          }
          i++;
          break;
        }
        case 2: // chunk extension up to CR
          if (buf[i] === 0x0d) this.state = 3;
          else if (buf[i] === 0x0a) throw new Error('bare LF in chunk extension');
          i++;
          break;
        case 3: // LF after the size line
          if (buf[i] !== 0x0a) throw new Error('LF expected after chunk size');
          i++;
          this.state = this.size === 0 ? 7 : 4;
          break;
        case 4: {
          // data: skipped in bulk
          const take = Math.min(this.size, len - i);
          this.size -= take;
          i += take;
          if (this.size === 0) this.state = 5;
          break;
        }
        case 5:
          if (buf[i] !== 0x0d) throw new Error('CR expected after chunk data');
          i++;
          this.state = 6;
          break;
        case 6:
          if (buf[i] !== 0x0a) throw new Error('LF expected after chunk data');
          i++;
          this.state = 0;
          this.digits = 0;
          break;
        case 7: // start of a trailer line, or the final CRLF
          if (buf[i] === 0x0d) this.state = 9;
          else this.state = 8;
          i++;
          break;
        case 8: // trailer line
          if (buf[i] === 0x0a) this.state = 7;
          i++;
          break;
        case 9:
          if (buf[i] !== 0x0a) throw new Error('LF expected at the end of a chunked body');
          this.done = true;
          return i + 1;
      }
    }
    return -1;
  }
}

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x09;
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  return -1;
}
