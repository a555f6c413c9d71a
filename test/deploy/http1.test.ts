import { describe, expect, it } from 'vitest';
import {
  ChunkedScanner,
  HeadError,
  keepsAlive,
  parseRequestHead,
  parseResponseHead,
  responseFraming,
} from '../../src/deploy/routers/http1.js';
import { clientResponseHead, upstreamRequestHead } from '../../src/deploy/routers/proxy.js';

/** The embedded router's HTTP/1.x head parsing and body framing (pure parts of src/deploy/routers/http1.ts). */

describe('http1: request heads', () => {
  it('parses the start line and headers, names kept as sent', () => {
    const h = parseRequestHead(
      'POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\nConnection: keep-alive, X-Hop',
    );
    expect([h.method, h.target, h.minor]).toEqual(['POST', '/a?b=1', 1]);
    expect(h.names).toEqual(['Host', 'Content-Length', 'Connection']);
    expect(h.contentLength).toBe(12);
    expect(h.connection).toEqual(['keep-alive', 'x-hop']);
  });

  it('refuses what would let two parsers disagree on where a request ends', () => {
    const bad = [
      'POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked',
      'POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2',
      'POST / HTTP/1.1\r\nContent-Length: -1',
      'POST / HTTP/1.1\r\nContent-Length: 1e3',
      'POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip',
      'GET / HTTP/1.1\r\nX: a\nY: b',
      'GET / HTTP/1.1\r\nX: a\rY: b',
      'GET / HTTP/1.1\r\n folded: x',
      'GET / HTTP/1.1\r\nBad Name: x',
      'GET /  HTTP/1.1',
      'GET / HTTP/1.1 extra',
      'GET / HTTP/2.0',
    ];
    for (const text of bad) expect(() => parseRequestHead(text), JSON.stringify(text)).toThrow(HeadError);
    // Repeated identical lengths are one length (RFC 9110 8.6).
    expect(parseRequestHead('POST / HTTP/1.1\r\nContent-Length: 3, 3\r\nContent-Length: 3').contentLength).toBe(3);
  });

  it('trims only SP and HTAB around a value (RFC 9110 5.6.3), so a length padded with other bytes is refused', () => {
    const h = parseRequestHead('GET / HTTP/1.1\r\nX-A: \t a b \t\r\nX-B:\r\nX-C: \u00a0x\u00a0');
    expect(h.values).toEqual(['a b', '', '\u00a0x\u00a0']);
    expect(h.lower).toEqual(['x-a', 'x-b', 'x-c']);
    expect(() => parseRequestHead('POST / HTTP/1.1\r\nContent-Length: \v5')).toThrow(/invalid Content-Length/);
    expect(() => parseRequestHead('POST / HTTP/1.1\r\nContent-Length: 1, 2')).toThrow(/conflicting/);
    expect(() => parseRequestHead('GET / HTTP/1.1\r\nX-A: b\r\n')).toThrow(/malformed header line/);
    expect(() => parseRequestHead('GET / HTTP/1.1\r\nX: \0')).toThrow(/bare CR, LF or NUL/);
    expect(() => parseResponseHead('HTTP/1.1 200 OK\r\nX: a\r')).toThrow(/bare CR, LF or NUL/);
    expect(parseResponseHead('HTTP/1.0 404').reason).toBe('');
    expect(parseResponseHead('HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1').status).toBe(503);
    expect(() => parseResponseHead('HTTP/1.1 2000')).toThrow(/malformed status line/);
  });

  it('keep-alive: HTTP/1.1 unless close, HTTP/1.0 only when asked', () => {
    expect(keepsAlive(parseRequestHead('GET / HTTP/1.1'))).toBe(true);
    expect(keepsAlive(parseRequestHead('GET / HTTP/1.1\r\nConnection: close'))).toBe(false);
    expect(keepsAlive(parseRequestHead('GET / HTTP/1.0'))).toBe(false);
    expect(keepsAlive(parseRequestHead('GET / HTTP/1.0\r\nConnection: Keep-Alive'))).toBe(true);
  });
});

describe('http1: response framing', () => {
  const frame = (head: string, method = 'GET') => responseFraming(parseResponseHead(head), method);
  it('HEAD, 1xx, 204 and 304 have no body; chunked wins over a length; no framing means until close', () => {
    expect(frame('HTTP/1.1 200 OK\r\nContent-Length: 10', 'HEAD')).toBe('none');
    expect(frame('HTTP/1.1 204 No Content\r\nContent-Length: 10')).toBe('none');
    expect(frame('HTTP/1.1 304 Not Modified\r\nContent-Length: 10')).toBe('none');
    expect(frame('HTTP/1.1 200 OK\r\nContent-Length: 0')).toBe('none');
    expect(frame('HTTP/1.1 200 OK\r\nContent-Length: 10')).toBe('length');
    expect(frame('HTTP/1.1 200 OK\r\nContent-Length: 10\r\nTransfer-Encoding: chunked')).toBe('chunked');
    expect(frame('HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip')).toBe('close');
    expect(frame('HTTP/1.1 200 OK')).toBe('close');
    expect(frame('HTTP/1.0 200')).toBe('close');
  });

  it('a status line that is not HTTP/1.x is a bad gateway', () => {
    expect(() => parseResponseHead('ICY 200 OK')).toThrow(/malformed status line/);
    expect(() => parseResponseHead('HTTP/1.1 20 OK')).toThrow(HeadError);
  });
});

describe('http1: chunked scanner', () => {
  const body = '4\r\nwiki\r\n5;name=val\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nTrailer: x\r\n\r\n';

  it('finds the end of a chunked body fed in any split, and the bytes after it', () => {
    const bytes = Buffer.from(`${body}NEXT`);
    for (let size = 1; size <= bytes.length; size++) {
      const s = new ChunkedScanner();
      let end = -1;
      let offset = 0;
      for (let i = 0; i < bytes.length && end < 0; i += size) {
        const r = s.scan(bytes.subarray(i, i + size));
        if (r >= 0) end = offset + r;
        offset += Math.min(size, bytes.length - i);
      }
      expect(end, `split every ${size} bytes`).toBe(body.length);
    }
  });

  it('refuses malformed chunk sizes and missing CRLFs', () => {
    for (const bad of ['x\r\n', '4\r\nwikiXX', '4\nwiki', '1234567890abcdef\r\n', '\r\n']) {
      expect(() => new ChunkedScanner().scan(Buffer.from(bad)), JSON.stringify(bad)).toThrow();
    }
  });
});

describe('proxy heads', () => {
  it('the backend gets end-to-end headers only, the X-Forwarded set, and chunked framing when the body is chunked', () => {
    const h = parseRequestHead(
      'POST /x HTTP/1.1\r\nHost: shop\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nTE: trailers\r\nTransfer-Encoding: chunked\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\nX-App: yes',
    );
    const text = upstreamRequestHead(h, '127.0.0.1', { forwarded: true, upgrade: false, defaultHost: '' });
    expect(text.split('\r\n')).toEqual([
      'POST /x HTTP/1.1',
      'Host: shop',
      'X-App: yes',
      'transfer-encoding: chunked',
      'x-forwarded-for: 10.0.0.1, 127.0.0.1',
      'x-forwarded-proto: http',
      'x-forwarded-host: shop',
      'forwarded: for=127.0.0.1;host=shop;proto=http',
      '',
      '',
    ]);
  });

  it('the client gets the app headers minus hop-by-hop ones, the sticky cookie after the app cookies', () => {
    const h = parseResponseHead(
      'HTTP/1.1 200 OK\r\nConnection: x-internal\r\nX-Internal: 1\r\nKeep-Alive: timeout=5\r\nSet-Cookie: a=1\r\nContent-Length: 2',
    );
    expect(clientResponseHead(h, 'bw=3; Path=/', undefined).split('\r\n')).toEqual([
      'HTTP/1.1 200 OK',
      'Set-Cookie: a=1',
      'Content-Length: 2',
      'set-cookie: bw=3; Path=/',
      '',
      '',
    ]);
  });
});
