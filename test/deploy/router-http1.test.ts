import { createHash } from 'node:crypto';
import { createServer as createHttpServer, request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { type AddressInfo, connect, createServer as createNetServer, type Socket } from 'node:net';
import { request } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { startEmbeddedRouter } from '../../src/deploy/index.js';
import type { EmbeddedRouter } from '../../src/deploy/routers/embedded.js';

/**
 * The embedded router's own HTTP/1.1 data path (src/deploy/routers/proxy.ts + http1.ts) on real sockets:
 * request framing (pipelining, Content-Length and chunked bodies, Expect: 100-continue), answers without
 * a body (HEAD, 204, 304), large heads, malformed requests, and the upstream keep-alive pool.
 */

const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

interface Seen {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  bodyLength: number;
  sha: string;
}

/** An HTTP upstream (Node's server decodes the body) answering what it received: method, headers, body hash. */
async function echoUpstream(options: { keepAliveTimeout?: number } = {}) {
  const seen: Seen[] = [];
  let connections = 0;
  let closed = 0;
  const server = createHttpServer((req, res) => {
    const hash = createHash('sha256');
    let bodyLength = 0;
    req.on('data', (d: Buffer) => {
      hash.update(d);
      bodyLength += d.length;
    });
    req.on('end', () => {
      const s: Seen = {
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        bodyLength,
        sha: hash.digest('hex'),
      };
      seen.push(s);
      const body = JSON.stringify(s);
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
  });
  if (options.keepAliveTimeout !== undefined) server.keepAliveTimeout = options.keepAliveTimeout;
  server.on('connection', (socket: Socket) => {
    connections++;
    socket.on('close', () => {
      closed++;
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  );
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    connections: () => connections,
    closed: () => closed,
  };
}

/** A raw TCP upstream: `onRequest` gets the socket and the head of each request. */
async function rawUpstream(onRequest: (socket: Socket, head: string) => void) {
  const sockets = new Set<Socket>();
  const heads: string[] = [];
  const server = createNetServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let buf = '';
    socket.on('data', (d) => {
      buf += d.toString('latin1');
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.slice(0, end);
        buf = buf.slice(end + 4);
        heads.push(head);
        onRequest(socket, head);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  );
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, heads };
}

async function routerTo(url: string): Promise<EmbeddedRouter> {
  const router = await startEmbeddedRouter({ port: 0 });
  cleanups.push(() => router.close());
  await router.setBackends('blue', [{ id: 'b', url }]);
  await router.setWeights({ blue: 100, green: 0 });
  return router;
}

/** Send raw bytes on one connection to the router and collect everything until the router closes it. */
function rawClient(routerUrl: string, chunks: Array<string | Buffer>): Promise<string> {
  const port = Number(new URL(routerUrl).port);
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let out = '';
    socket.on('data', (d) => {
      out += d.toString('latin1');
    });
    socket.on('error', reject);
    socket.on('close', () => resolve(out));
    socket.on('connect', () => {
      for (const c of chunks) socket.write(c);
    });
  });
}

/** Split a byte stream of Content-Length answers into [status line, headers, body] triples. */
function splitAnswers(stream: string): Array<{ status: string; headers: Record<string, string>; body: string }> {
  const out: Array<{ status: string; headers: Record<string, string>; body: string }> = [];
  let rest = stream;
  while (rest.length > 0) {
    const end = rest.indexOf('\r\n\r\n');
    if (end < 0) throw new Error(`incomplete answer: ${JSON.stringify(rest.slice(0, 200))}`);
    const [status, ...lines] = rest.slice(0, end).split('\r\n');
    const headers: Record<string, string> = {};
    for (const l of lines) {
      const i = l.indexOf(':');
      headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
    }
    const len = Number(headers['content-length'] ?? 0);
    out.push({ status: status!, headers, body: rest.slice(end + 4, end + 4 + len) });
    rest = rest.slice(end + 4 + len);
  }
  return out;
}

describe('embedded router: HTTP/1.1 data path', () => {
  it('answers pipelined requests in order on one connection, bodies included', async () => {
    const up = await echoUpstream();
    const router = await routerTo(up.url);
    const stream = await rawClient(router.url, [
      'GET /one HTTP/1.1\r\nHost: a\r\n\r\n' +
        'POST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello' +
        'POST /three HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n' +
        'GET /four HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n',
    ]);
    const answers = splitAnswers(stream);
    expect(answers.map((a) => a.status)).toEqual(Array(4).fill('HTTP/1.1 200 OK'));
    const bodies = answers.map((a) => JSON.parse(a.body) as Seen);
    expect(bodies.map((b) => `${b.method} ${b.url} ${b.bodyLength}`)).toEqual([
      'GET /one 0',
      'POST /two 5',
      'POST /three 3',
      'GET /four 0',
    ]);
    expect(bodies[1]!.sha).toBe(createHash('sha256').update('hello').digest('hex'));
    expect(answers[3]!.headers.connection).toBe('close');
  });

  it('forwards large request bodies intact, with Content-Length and chunked, split across many packets', async () => {
    const up = await echoUpstream();
    const router = await routerTo(up.url);
    const big = Buffer.alloc(3 * 1024 * 1024 + 17);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7919) & 0xff;
    const sha = createHash('sha256').update(big).digest('hex');
    const send = (chunked: boolean) =>
      new Promise<Seen>((resolve, reject) => {
        const req = httpRequest(
          `${router.url}/upload`,
          {
            method: 'PUT',
            agent: false,
            headers: chunked ? { 'transfer-encoding': 'chunked' } : { 'content-length': big.length },
          },
          (res) => {
            let body = '';
            res.on('data', (d) => {
              body += d;
            });
            res.on('end', () => resolve(JSON.parse(body) as Seen));
          },
        );
        req.on('error', reject);
        // Many writes of odd sizes: chunk boundaries land anywhere in the router's reads.
        for (let off = 0; off < big.length; off += 65_521) req.write(big.subarray(off, off + 65_521));
        req.end();
      });
    const viaLength = await send(false);
    expect(viaLength.bodyLength).toBe(big.length);
    expect(viaLength.sha).toBe(sha);
    const viaChunks = await send(true);
    expect(viaChunks.bodyLength).toBe(big.length);
    expect(viaChunks.sha).toBe(sha);
    expect(viaChunks.headers['transfer-encoding']).toBe('chunked');
  });

  it('streams a large chunked answer to a slow reader intact (backpressure, no re-encoding)', async () => {
    const piece = Buffer.alloc(64 * 1024, 'x');
    const pieces = 80; // 5 MiB
    const server = createHttpServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream' }); // no length: chunked
      let i = 0;
      const more = () => {
        while (i < pieces) {
          i++;
          if (!res.write(piece)) return void res.once('drain', more);
        }
        res.end();
      };
      more();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise((r) => server.close(r)));
    const router = await routerTo(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    const got = await new Promise<{ length: number; te: string | undefined }>((resolve, reject) => {
      httpRequest(`${router.url}/big`, { agent: false }, (res) => {
        let length = 0;
        res.on('data', (d: Buffer) => {
          length += d.length;
          // A slow reader: the router must hold the backend back instead of buffering everything.
          res.pause();
          setImmediate(() => res.resume());
        });
        res.on('end', () => resolve({ length, te: res.headers['transfer-encoding'] }));
        res.on('error', reject);
      })
        .on('error', reject)
        .end();
    });
    expect(got.length).toBe(piece.length * pieces);
    expect(got.te).toBe('chunked');
  });

  it('answers Expect: 100-continue with 100 Continue, forwards the body, and does not pass Expect on', async () => {
    const up = await echoUpstream();
    const router = await routerTo(up.url);
    const result = await new Promise<{ continued: boolean; seen: Seen }>((resolve, reject) => {
      let continued = false;
      const req = httpRequest(`${router.url}/expect`, {
        method: 'POST',
        agent: false,
        headers: { expect: '100-continue', 'content-length': 4 },
      });
      req.on('continue', () => {
        continued = true;
        req.end('data'); // the body only after the 100
      });
      req.on('response', (res) => {
        let body = '';
        res.on('data', (d) => {
          body += d;
        });
        res.on('end', () => resolve({ continued, seen: JSON.parse(body) as Seen }));
      });
      req.on('error', reject);
    });
    expect(result.continued).toBe(true);
    expect(result.seen.bodyLength).toBe(4);
    expect(result.seen.headers.expect).toBeUndefined();
  });

  it('sends no body for HEAD, 204 and 304 whatever their headers say, and the connection stays usable', async () => {
    const up = await rawUpstream((socket, head) => {
      const path = head.split(' ')[1];
      if (head.startsWith('HEAD')) socket.write('HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n');
      else if (path === '/204') socket.write('HTTP/1.1 204 No Content\r\nX-Kind: none\r\n\r\n');
      else if (path === '/304') socket.write('HTTP/1.1 304 Not Modified\r\nContent-Length: 1000\r\n\r\n');
      else socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
    });
    const router = await routerTo(up.url);
    const stream = await rawClient(router.url, [
      'HEAD /h HTTP/1.1\r\nHost: a\r\n\r\nGET /204 HTTP/1.1\r\nHost: a\r\n\r\nGET /304 HTTP/1.1\r\nHost: a\r\n\r\n' +
        'GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n',
    ]);
    // Each answer is a head only (a body would show up as garbage before the next status line).
    const heads = stream.split('\r\n\r\n');
    expect(heads[0]).toMatch(/^HTTP\/1\.1 200 OK\r\n.*Content-Length: 1000/s);
    expect(heads[1]).toMatch(/^HTTP\/1\.1 204 No Content/);
    expect(heads[2]).toMatch(/^HTTP\/1\.1 304 Not Modified/);
    expect(heads[3]).toMatch(/^HTTP\/1\.1 200 OK/);
    expect(heads[4]).toBe('ok');
    // All four went over the router's one pooled upstream connection, in order.
    expect(up.heads.map((h) => h.split(' ').slice(0, 2).join(' '))).toEqual([
      'HEAD /h',
      'GET /204',
      'GET /304',
      'GET /last',
    ]);
  });

  it('passes large heads both ways and answers 431 to a request head over 16 KiB, without calling the backend', async () => {
    const up = await rawUpstream((socket, head) => {
      const big = /x-big: (\w+)/i.exec(head)?.[1] ?? '';
      socket.write(`HTTP/1.1 200 OK\r\nX-Echo: ${big}\r\nContent-Length: 0\r\n\r\n`);
    });
    const router = await routerTo(up.url);
    const value = 'v'.repeat(12 * 1024);
    const r = await request(`${router.url}/big`, { headers: { 'x-big': value } });
    await r.body.dump();
    expect(r.statusCode).toBe(200);
    expect(r.headers['x-echo']).toBe(value);
    const hits = up.heads.length;
    const tooBig = await rawClient(router.url, [
      `GET / HTTP/1.1\r\nHost: a\r\nX-Big: ${'v'.repeat(20 * 1024)}\r\n\r\n`,
    ]);
    expect(tooBig).toMatch(/^HTTP\/1\.1 431 /);
    expect(up.heads.length).toBe(hits);
  });

  it('refuses ambiguous or malformed requests with 400 and never forwards them (request smuggling)', async () => {
    const up = await echoUpstream();
    const router = await routerTo(up.url);
    for (const bad of [
      'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
      'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd',
      'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nabc',
      'GET / HTTP/1.1\r\nHost: a\r\nX-Evil: a\nGET /smuggled HTTP/1.1\r\n\r\n',
      'GET / HTTP/1.1\r\nHost: a\r\n folded: line\r\n\r\n',
      'GET / HTTP/1.1\r\n\r\n',
    ]) {
      const out = await rawClient(router.url, [bad]);
      expect(out, JSON.stringify(bad)).toMatch(/^HTTP\/1\.1 400 /);
    }
    expect(up.seen).toEqual([]);
  });

  it('opens a fresh upstream connection when the backend closed an idle keep-alive one, even for a POST', async () => {
    // The backend closes idle connections after 50 ms; the router's pooled one dies while idle.
    const up = await echoUpstream({ keepAliveTimeout: 50 });
    const router = await routerTo(up.url);
    const first = await request(`${router.url}/a`);
    await first.body.dump();
    expect(up.connections()).toBe(1);
    // Wait until the backend has closed it (observed on the backend's side, not a guessed time).
    while (up.closed() < 1) await new Promise((r) => setTimeout(r, 10));
    // A POST is never retried: had the router sent it on the dead connection it would be a 502.
    const post = await request(`${router.url}/b`, { method: 'POST', body: 'x' });
    const seen = (await post.body.json()) as Seen;
    expect(post.statusCode).toBe(200);
    expect(seen.bodyLength).toBe(1);
    expect(up.connections()).toBe(2);
  });

  it('keeps and reuses upstream connections: sequential requests share one backend connection', async () => {
    const up = await echoUpstream();
    const router = await routerTo(up.url);
    for (let i = 0; i < 20; i++) {
      const r = await request(`${router.url}/n${i}`);
      await r.body.dump();
      expect(r.statusCode).toBe(200);
    }
    expect(up.connections()).toBe(1);
    expect(up.seen.map((s) => s.url)).toEqual(Array.from({ length: 20 }, (_, i) => `/n${i}`));
  });

  it('answers an HTTP/1.0 client (no Host) and a client that half-closes after its request', async () => {
    const up = await echoUpstream();
    const router = await routerTo(up.url);
    const old = await rawClient(router.url, ['GET /old HTTP/1.0\r\n\r\n']);
    const [answer] = splitAnswers(old);
    expect(answer!.status).toMatch(/^HTTP\/1\.1 200/);
    expect((JSON.parse(answer!.body) as Seen).url).toBe('/old');
    const port = Number(new URL(router.url).port);
    const halfClosed = await new Promise<string>((resolve, reject) => {
      const s = connect(port, '127.0.0.1', () => s.end('GET /half HTTP/1.1\r\nHost: a\r\n\r\n'));
      let out = '';
      s.on('data', (d) => {
        out += d;
      });
      s.on('close', () => resolve(out));
      s.on('error', reject);
    });
    const [half] = splitAnswers(halfClosed);
    expect((JSON.parse(half!.body) as Seen).url).toBe('/half');
  });

  it('drops interim 1xx answers of the backend (103 Early Hints) and passes the final answer', async () => {
    const up = await rawUpstream((socket) => {
      socket.write('HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n');
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal');
    });
    const router = await routerTo(up.url);
    const stream = await rawClient(router.url, ['GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n']);
    const [answer, ...more] = splitAnswers(stream);
    expect(answer!.status).toBe('HTTP/1.1 200 OK');
    expect(answer!.body).toBe('final');
    expect(more).toEqual([]);
  });

  it('queues requests beyond the connection limit per backend and answers them all over that many connections', async () => {
    const up = await echoUpstream();
    const router = await startEmbeddedRouter({ port: 0, connections: 2 });
    cleanups.push(() => router.close());
    await router.setBackends('blue', [{ id: 'b', url: up.url }]);
    await router.setWeights({ blue: 100, green: 0 });
    const answers = await Promise.all(
      Array.from({ length: 12 }, async (_, i) => {
        const r = await request(`${router.url}/q${i}`, { method: 'POST', body: `body-${i}` });
        return { status: r.statusCode, seen: (await r.body.json()) as Seen };
      }),
    );
    expect(answers.map((a) => a.status)).toEqual(Array(12).fill(200));
    expect(answers.map((a) => a.seen.url)).toEqual(Array.from({ length: 12 }, (_, i) => `/q${i}`));
    expect(up.connections()).toBeLessThanOrEqual(2);
  });

  it('forwards a chunked answer byte for byte, trailers included, and ends it properly', async () => {
    const body = '4\r\nwiki\r\n5;ext=1\r\npedia\r\n0\r\nX-Checksum: 42\r\n\r\n';
    const up = await rawUpstream((socket) => {
      socket.write(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n`);
      // In pieces that cut sizes, CRLFs and the trailer apart.
      for (let i = 0; i < body.length; i += 3) socket.write(body.slice(i, i + 3));
    });
    const router = await routerTo(up.url);
    const stream = await rawClient(router.url, ['GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n']);
    const end = stream.indexOf('\r\n\r\n');
    expect(stream.slice(0, end)).toMatch(/Transfer-Encoding: chunked/);
    expect(stream.slice(end + 4)).toBe(body);
  });

  it('close() waits for an answer in flight: the client gets it whole, then the router is closed', async () => {
    let answer: (() => void) | undefined;
    const up = await rawUpstream((socket) => {
      answer = () => socket.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello');
    });
    const router = await startEmbeddedRouter({ port: 0 });
    await router.setBackends('blue', [{ id: 'b', url: up.url }]);
    await router.setWeights({ blue: 100, green: 0 });
    const got = rawClient(router.url, ['GET / HTTP/1.1\r\nHost: a\r\n\r\n']);
    while (!answer) await new Promise((r) => setTimeout(r, 10));
    let closed = false;
    const closing = router.close().then(() => {
      closed = true;
    });
    await new Promise((r) => setTimeout(r, 200));
    // Still open while the answer is pending: it has not resolved, and it did not cut the request off.
    expect(closed).toBe(false);
    answer();
    await closing;
    const stream = await got;
    expect(stream).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(stream.endsWith('\r\n\r\nhello')).toBe(true);
  });
});
