import { createServer, type Server, type Socket } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { VuHttp } from '../../src/load/http/client.js';
import type { RequestSample } from '../../src/load/http/types.js';

// The lean HTTP/1.1 client (plain http) against a real TCP server that writes exact bytes: framing
// split at awkward places, connections closed at the worst moment, oversized heads. Each request the
// server reads is recorded with the connection it came on and how many were outstanding on it.

interface Received {
  conn: number;
  method: string;
  path: string;
  headers: Record<string, string>;
  body: string;
  /** Requests on this connection read but not yet answered when this one arrived. */
  outstanding: number;
}

type Handler = (r: Received, socket: Socket, answered: () => void) => void;

let server: Server;
let base: string;
let received: Received[] = [];
let handler: Handler;
const sockets = new Set<Socket>();

beforeAll(async () => {
  let connections = 0;
  server = createServer((socket) => {
    const conn = ++connections;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let buf = Buffer.alloc(0);
    let outstanding = 0;
    socket.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end === -1) return;
        const head = buf.subarray(0, end).toString('latin1').split('\r\n');
        const [method, path] = head[0]!.split(' ');
        const headers: Record<string, string> = {};
        for (const line of head.slice(1)) {
          const i = line.indexOf(':');
          headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
        }
        const length = Number(headers['content-length'] ?? 0);
        if (buf.length < end + 4 + length) return;
        const body = buf.subarray(end + 4, end + 4 + length).toString();
        buf = buf.subarray(end + 4 + length);
        const r: Received = { conn, method: method!, path: path!, headers, body, outstanding };
        outstanding++;
        received.push(r);
        handler(r, socket, () => outstanding--);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  base = `http://127.0.0.1:${port}`;
});
afterEach(() => {
  received = [];
  for (const s of sockets) s.destroy();
});
afterAll(async () => {
  await new Promise((r) => server.close(r));
});

/** Write the pieces with a pause between them, so the client reads them separately. */
async function writeInPieces(socket: Socket, pieces: Array<string | Buffer>): Promise<void> {
  for (const p of pieces) {
    socket.write(p);
    await new Promise((r) => setTimeout(r, 15));
  }
}

function client(): { http: VuHttp; samples: RequestSample[] } {
  const samples: RequestSample[] = [];
  const http = new VuHttp({
    baseUrl: base,
    defaultTimeoutMs: 5000,
    recorder: { request: (s) => samples.push(s), interrupted: () => {} },
  });
  return { http, samples };
}

const ok = (body: string, extra = '') =>
  `HTTP/1.1 200 OK\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`;

describe('lean HTTP/1.1 client: response framing', () => {
  it('reads a content-length body whose head and body arrive split across reads', async () => {
    handler = (_r, socket, answered) => {
      answered();
      void writeInPieces(socket, [
        'HTTP/1.1 20',
        '0 OK\r\nContent-Type: application/json\r\ncontent-len',
        'gth: 26\r\nX-Twice: a\r\nX-Twice: b\r\n\r\n{"products":',
        '[1,2,3],"n":3}',
      ]);
    };
    const { http, samples } = client();
    const res = await http.get('/products');
    expect(res.status).toBe(200);
    expect(res.json()).toEqual({ products: [1, 2, 3], n: 3 });
    expect(res.headers['content-type']).toBe('application/json');
    expect(res.headers['x-twice']).toEqual(['a', 'b']);
    expect(res.error).toBeUndefined();
    expect(samples).toHaveLength(1);
    expect(samples[0]!.failed).toBe(false);
    await http.close();
  });

  it('reads a chunked body with extensions and trailers, split inside sizes and CRLFs', async () => {
    handler = (_r, socket, answered) => {
      answered();
      void writeInPieces(socket, [
        'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n',
        '5;ext=1\r\nhel',
        'lo\r',
        '\n1',
        '0\r\n, chunked world!\r\n0\r\nX-Trailer: t\r\n',
        '\r\n',
      ]);
    };
    const { http } = client();
    const res = await http.get('/chunked');
    expect(res.status).toBe(200);
    expect(res.body).toBe('hello, chunked world!');
    // The connection is still usable: the next request goes on it.
    handler = (_r, socket, answered) => {
      answered();
      socket.write(ok('again'));
    };
    expect((await http.get('/next')).body).toBe('again');
    expect(new Set(received.map((r) => r.conn)).size).toBe(1);
    await http.close();
  });

  it('expects no body after HEAD, 204 and 304 (even with a content-length) and reuses the connection', async () => {
    handler = (r, socket, answered) => {
      answered();
      if (r.method === 'HEAD') socket.write('HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n');
      else if (r.path === '/204') socket.write('HTTP/1.1 204 No Content\r\n\r\n');
      else if (r.path === '/304') socket.write('HTTP/1.1 304 Not Modified\r\ncontent-length: 99\r\n\r\n');
      else socket.write(ok('last'));
    };
    const { http, samples } = client();
    const head = await http.head('/thing');
    expect([head.status, head.body, head.headers['content-length']]).toEqual([200, '', '1234']);
    expect((await http.get('/204')).status).toBe(204);
    expect((await http.get('/304')).status).toBe(304);
    expect((await http.get('/last')).body).toBe('last');
    expect(samples.map((s) => s.failed)).toEqual([false, false, false, false]);
    expect(new Set(received.map((r) => r.conn)).size).toBe(1);
    await http.close();
  });

  it('reads an HTTP/1.0 body that ends when the server closes, and does not reuse that connection', async () => {
    handler = (r, socket, answered) => {
      answered();
      if (r.path === '/old') socket.end('HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end');
      else socket.write(ok('fresh'));
    };
    const { http } = client();
    const res = await http.get('/old');
    expect([res.status, res.body, res.error]).toEqual([200, 'until the end', undefined]);
    expect((await http.get('/new')).body).toBe('fresh');
    expect(received.map((r) => r.conn)[0]).not.toBe(received.map((r) => r.conn)[1]);
    await http.close();
  });

  it('never reads stale bytes of the shared read buffer as part of a later response', async () => {
    // The first body leaves blank lines all over the read buffer; the second head arrives in two
    // reads, and its first part must not be "completed" by what the buffer held before.
    const stale = '\r\n\r\n'.repeat(8000);
    handler = (r, socket, answered) => {
      answered();
      if (r.path === '/stale') socket.write(ok(stale));
      else void writeInPieces(socket, ['HTTP/1.1 200 OK\r\nx-part: 1\r\n', 'content-length: 5\r\n\r\nfresh']);
    };
    const { http } = client();
    expect((await http.get('/stale')).body).toBe(stale);
    const res = await http.get('/fresh');
    expect([res.status, res.body, res.headers['x-part']]).toEqual([200, 'fresh', '1']);
    await http.close();
  });

  it('skips a 100 Continue before the real response', async () => {
    handler = (_r, socket, answered) => {
      answered();
      socket.write(`HTTP/1.1 100 Continue\r\n\r\n${ok('after continue')}`);
    };
    const { http } = client();
    const res = await http.get('/continue');
    expect([res.status, res.body]).toEqual([200, 'after continue']);
    await http.close();
  });

  it('reads a 40 KB response head split across reads, and fails one over 64 KB', async () => {
    const big = 'x'.repeat(40 * 1024);
    const huge = 'y'.repeat(70 * 1024);
    handler = (r, socket, answered) => {
      answered();
      const value = r.path === '/huge' ? huge : big;
      const head = `HTTP/1.1 200 OK\r\nx-big: ${value}\r\ncontent-length: 2\r\n\r\nok`;
      void writeInPieces(socket, [head.slice(0, 10_000), head.slice(10_000, 30_000), head.slice(30_000)]);
    };
    const { http, samples } = client();
    const res = await http.get('/big');
    expect(res.status).toBe(200);
    expect(res.headers['x-big']).toBe(big);
    expect(res.body).toBe('ok');
    const over = await http.get('/huge');
    expect(over.status).toBe(0);
    expect(over.error).toBe('headers too large');
    expect(samples.map((s) => s.failed)).toEqual([false, true]);
    await http.close();
  });
});

describe('lean HTTP/1.1 client: connections', () => {
  it('keeps one connection alive for sequential requests and never pipelines', async () => {
    handler = (_r, socket, answered) => {
      // Answer a little later, so a pipelining client would have sent the next request already.
      setTimeout(() => {
        answered();
        socket.write(ok('k'));
      }, 5);
    };
    const { http } = client();
    for (let i = 0; i < 5; i++) expect((await http.get(`/seq/${i}`)).body).toBe('k');
    await Promise.all([http.get('/par/1'), http.get('/par/2'), http.get('/par/3')]);
    await http.batch(['/b/1', '/b/2', '/b/3', '/b/4']);
    expect(new Set(received.filter((r) => r.path.startsWith('/seq')).map((r) => r.conn)).size).toBe(1);
    // Parallel requests of one VU use several connections, each with one request at a time.
    expect(new Set(received.filter((r) => r.path.startsWith('/par')).map((r) => r.conn)).size).toBe(3);
    expect(Math.max(...received.map((r) => r.outstanding))).toBe(0);
    await http.close();
  });

  it('a server closing mid-response is a failed request (connection reset), never a success', async () => {
    handler = (_r, socket, answered) => {
      answered();
      socket.write('HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b');
      setTimeout(() => socket.destroy(), 20);
    };
    const { http, samples } = client();
    const res = await http.get('/cut');
    expect(res.ok).toBe(false);
    expect(res.error).toBe('connection reset');
    expect(samples).toHaveLength(1);
    expect(samples[0]!.failed).toBe(true);
    expect(samples[0]!.failure).toBe('connection reset');
    // A chunked body cut before its last chunk fails the same way.
    handler = (_r, socket, answered) => {
      answered();
      socket.end('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n');
    };
    const chunked = await http.get('/cut-chunked');
    expect([chunked.ok, chunked.error]).toEqual([false, 'connection reset']);
    await http.close();
  });

  it('retries a GET on a fresh connection when the server closed the kept-alive one as it was reused, but not a POST', async () => {
    // The server answers the first request on a connection and closes the connection when the
    // second one arrives, without a byte of response: an idle-timeout race.
    handler = (r, socket, answered) => {
      answered();
      if (received.filter((o) => o.conn === r.conn).length >= 2) socket.destroy();
      else socket.write(ok(`answered on ${r.conn}`));
    };
    const { http, samples } = client();
    expect((await http.get('/first')).status).toBe(200);
    const again = await http.get('/second');
    expect(again.status).toBe(200);
    expect(again.body).toBe(`answered on ${received.at(-1)!.conn}`);
    expect(received.map((r) => r.path)).toEqual(['/first', '/second', '/second']);
    expect(samples.map((s) => s.failed)).toEqual([false, false]);

    // Not idempotent: a POST that may have reached the server is not sent twice.
    const post = await http.post('/order', { json: { item: 1 } });
    expect([post.status, post.error]).toEqual([0, 'connection reset']);
    expect(received.filter((r) => r.path === '/order')).toHaveLength(1);
    await http.close();
  });

  it('opens a fresh connection when the server closed an idle one', async () => {
    handler = (_r, socket, answered) => {
      answered();
      socket.end(ok('bye', 'connection: keep-alive\r\n'));
    };
    const { http, samples } = client();
    expect((await http.get('/a')).body).toBe('bye');
    await new Promise((r) => setTimeout(r, 50)); // the server's FIN arrives while the connection is idle
    expect((await http.get('/b')).body).toBe('bye');
    expect(received[0]!.conn).not.toBe(received[1]!.conn);
    expect(samples.map((s) => s.failed)).toEqual([false, false]);
    await http.close();
  });

  it('honours connection: close from the server', async () => {
    handler = (_r, socket, answered) => {
      answered();
      socket.write(ok('once', 'connection: close\r\n'));
    };
    const { http } = client();
    await http.get('/1');
    await http.get('/2');
    expect(received[0]!.conn).not.toBe(received[1]!.conn);
    await http.close();
  });

  it('times out a request the server never answers, and does not reuse its connection', async () => {
    handler = (r, socket, answered) => {
      if (r.path === '/never') return;
      answered();
      socket.write(ok('late answer'));
    };
    const { http, samples } = client();
    const res = await http.get('/never', { timeout: '150ms' });
    expect([res.status, res.error]).toEqual([0, 'timeout']);
    expect((await http.get('/after')).body).toBe('late answer');
    expect(received[0]!.conn).not.toBe(received[1]!.conn);
    expect(samples.map((s) => s.failure)).toEqual(['timeout', undefined]);
    await http.close();
  });

  it('sends bodies with their length (small and large) and refuses a header that would split the request', async () => {
    handler = (r, socket, answered) => {
      answered();
      socket.write(ok(`${r.method} ${r.headers['content-type'] ?? '-'} ${r.body.length}`));
    };
    const { http, samples } = client();
    expect((await http.post('/json', { json: { a: 1 } })).body).toBe('POST application/json 7');
    const large = 'z'.repeat(100_000);
    expect((await http.put('/large', { body: large, headers: { 'content-type': 'text/plain' } })).body).toBe(
      'PUT text/plain 100000',
    );
    expect(received[1]!.body).toBe(large);
    expect(received[0]!.headers.host).toBe(new URL(base).host);
    const bad = await http.get('/x', { headers: { 'x-evil': 'a\r\nx-injected: 1' } });
    expect(bad.status).toBe(0);
    expect(bad.error).toMatch(/invalid header x-evil/);
    expect(received).toHaveLength(2);
    expect(samples.at(-1)!.failed).toBe(true);
    await http.close();
  });

  it('counts the bytes sent and received once, exactly as they crossed the wire', async () => {
    const response = ok('twelve bytes', 'x-a: b\r\n');
    let request = '';
    handler = (r, socket, answered) => {
      answered();
      request = `${r.method} ${r.path}`;
      socket.write(response);
    };
    const { http, samples } = client();
    await http.get('/bytes');
    expect(request).toBe('GET /bytes');
    expect(samples[0]!.bytesReceived).toBe(Buffer.byteLength(response));
    const head = `GET /bytes HTTP/1.1\r\nhost: ${new URL(base).host}\r\nconnection: keep-alive\r\n\r\n`;
    expect(samples[0]!.bytesSent).toBe(head.length);
    await http.close();
  });

  it('sends https origins through undici (a refused https connection is classified the same way)', async () => {
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const { port } = probe.address() as { port: number };
    await new Promise((r) => probe.close(r));
    const { http } = client();
    const res = await http.get(`https://127.0.0.1:${port}/secure`);
    expect([res.status, res.error]).toEqual([0, 'connection refused']);
    await http.close();
  });

  it('reports a refused connection as connection refused', async () => {
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const { port } = probe.address() as { port: number };
    await new Promise((r) => probe.close(r));
    const { http } = client();
    const res = await http.get(`http://127.0.0.1:${port}/nothing`);
    expect([res.status, res.error]).toEqual([0, 'connection refused']);
    await http.close();
  });
});
