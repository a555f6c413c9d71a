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

// The head is parsed with index loops over the latin1 string, not regular expressions, split and trim:
// it runs for every request and every answer, and the string version was ~60 % of a 5-6 us parse and
// rewrite of both heads (node microbenchmark, bench/router/README.md).

/** 1 for the characters of an RFC 9110 token (method, header name). */
const TOKEN_CHARS = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
  TOKEN_CHARS[c.charCodeAt(0)] = 1;

function isToken(text: string, from: number, to: number): boolean {
  if (to <= from) return false;
  for (let i = from; i < to; i++) {
    const c = text.charCodeAt(i);
    if (c >= 128 || TOKEN_CHARS[c] === 0) return false;
  }
  return true;
}

/** A CR or LF that is not part of a CRLF, or a NUL: never valid in a head, and a smuggling vector if passed on. */
function hasBareCrLfOrNul(text: string): boolean {
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c > 13) continue;
    if (c === 13) {
      if (text.charCodeAt(i + 1) !== 10) return true;
      i++;
    } else if (c === 10 || c === 0) return true;
  }
  return false;
}

/** Optional whitespace around a field value (RFC 9110 5.6.3: SP and HTAB). */
function trimOws(text: string, from: number, to: number): string {
  while (from < to && isSpace(text.charCodeAt(from))) from++;
  while (to > from && isSpace(text.charCodeAt(to - 1))) to--;
  return text.slice(from, to);
}

/** Content-Length: digits, or a list of equal ones (RFC 9110 8.6); -2 when invalid, -3 when they differ. */
function contentLengthOf(value: string): number {
  let cl = -1;
  let from = 0;
  while (from <= value.length) {
    let to = value.indexOf(',', from);
    if (to < 0) to = value.length;
    let a = from;
    let b = to;
    while (a < b && isSpace(value.charCodeAt(a))) a++;
    while (b > a && isSpace(value.charCodeAt(b - 1))) b--;
    const len = decimal(value, a, b);
    if (len < 0) return -2;
    if (cl >= 0 && len !== cl) return -3;
    cl = len;
    from = to + 1;
  }
  return cl;
}

/** The value of text[from, to) when it is 1 to 15 decimal digits, else -1. */
function decimal(text: string, from: number, to: number): number {
  if (to <= from || to - from > 15) return -1;
  let v = 0;
  for (let i = from; i < to; i++) {
    const c = text.charCodeAt(i);
    if (c < 48 || c > 57) return -1;
    v = v * 10 + (c - 48);
  }
  return v;
}

/**
 * The header lines after the start line, which ends at `startEnd` (lines separated by CRLF; CR, LF and
 * NUL already checked). Every CRLF starts a line, so an empty one is malformed, as with split('\r\n').
 */
function parseHeaderLines(text: string, startEnd: number, head: Head, onError: number): void {
  const n = text.length;
  let cl = -1;
  let more = startEnd < n;
  let pos = startEnd + 2;
  while (more) {
    let eol = text.indexOf('\r\n', pos);
    if (eol < 0) {
      eol = n;
      more = false;
    }
    let colon = -1;
    let token = true;
    let upper = false;
    for (let i = pos; i < eol; i++) {
      const c = text.charCodeAt(i);
      if (c === 58) {
        colon = i;
        break;
      }
      if (c >= 128) {
        token = false;
        upper = true; // latin1 letters have a lower case too
      } else if (TOKEN_CHARS[c] === 0) token = false;
      else if (c >= 65 && c <= 90) upper = true;
    }
    if (colon <= pos)
      throw new HeadError(onError, `malformed header line ${JSON.stringify(text.slice(pos, Math.min(eol, pos + 60)))}`);
    // A request's names must be tokens, which also rejects obs-fold (a line starting with a space) and a
    // space before the colon; a backend's names are only checked for those two.
    if (onError === 400 ? !token : isSpace(text.charCodeAt(pos)) || isSpace(text.charCodeAt(colon - 1)))
      throw new HeadError(onError, `invalid header name ${JSON.stringify(text.slice(pos, Math.min(colon, pos + 60)))}`);
    const name = text.slice(pos, colon);
    const value = trimOws(text, colon + 1, eol);
    const lower = upper ? name.toLowerCase() : name;
    head.names.push(name);
    head.lower.push(lower);
    head.values.push(value);
    if (lower === 'content-length') {
      const len = contentLengthOf(value);
      if (len === -2) throw new HeadError(onError, `invalid Content-Length ${JSON.stringify(value)}`);
      if (len === -3 || (cl >= 0 && len !== cl)) throw new HeadError(onError, 'conflicting Content-Length headers');
      cl = len;
    } else if (lower === 'transfer-encoding') {
      head.transferEncoding = head.transferEncoding
        ? `${head.transferEncoding}, ${value.toLowerCase()}`
        : value.toLowerCase();
    } else if (lower === 'connection') {
      for (const t of value.split(',')) {
        const tok = trimOws(t, 0, t.length).toLowerCase();
        if (tok) head.connection.push(tok);
      }
    }
    pos = eol + 2;
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
  if (hasBareCrLfOrNul(text)) throw new HeadError(400, 'bare CR, LF or NUL in the request head');
  let eol = text.indexOf('\r\n');
  if (eol < 0) eol = text.length;
  const s1 = text.indexOf(' ');
  const s2 = s1 < 0 ? -1 : text.indexOf(' ', s1 + 1);
  const s3 = s2 < 0 ? -1 : text.indexOf(' ', s2 + 1);
  if (s1 <= 0 || s2 < 0 || s2 >= eol || (s3 >= 0 && s3 < eol) || !isToken(text, 0, s1) || s2 === s1 + 1)
    throw new HeadError(400, `malformed request line ${JSON.stringify(text.slice(0, Math.min(eol, 80)))}`);
  const head = newHead();
  head.method = text.slice(0, s1);
  head.target = text.slice(s1 + 1, s2);
  const version = text.slice(s2 + 1, eol);
  if (version === 'HTTP/1.1') head.minor = 1;
  else if (version === 'HTTP/1.0') head.minor = 0;
  else if (/^HTTP\/\d\.\d$/.test(version)) throw new HeadError(505, `unsupported version ${version}`);
  else throw new HeadError(400, `malformed request line ${JSON.stringify(text.slice(0, Math.min(eol, 80)))}`);
  parseHeaderLines(text, eol, head, 400);
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
  if (hasBareCrLfOrNul(text)) throw new HeadError(502, 'bare CR, LF or NUL in the response head');
  let eol = text.indexOf('\r\n');
  if (eol < 0) eol = text.length;
  // HTTP/1.x SP 3DIGIT [SP reason]
  const minor = text.charCodeAt(7) - 48;
  const d1 = text.charCodeAt(9) - 48;
  const d2 = text.charCodeAt(10) - 48;
  const d3 = text.charCodeAt(11) - 48;
  if (
    eol < 12 ||
    !text.startsWith('HTTP/1.') ||
    (minor !== 0 && minor !== 1) ||
    text.charCodeAt(8) !== 32 ||
    !(d1 >= 0 && d1 <= 9 && d2 >= 0 && d2 <= 9 && d3 >= 0 && d3 <= 9) ||
    (eol > 12 && text.charCodeAt(12) !== 32)
  )
    throw new HeadError(502, `malformed status line ${JSON.stringify(text.slice(0, Math.min(eol, 80)))}`);
  const head = newHead();
  head.minor = minor;
  head.status = d1 * 100 + d2 * 10 + d3;
  head.reason = eol > 12 ? text.slice(13, eol) : '';
  parseHeaderLines(text, eol, head, 502);
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
