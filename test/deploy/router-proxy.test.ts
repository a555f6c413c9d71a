import { spawn, spawnSync } from 'node:child_process';
import { createServer as createHttpServer, request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { type AddressInfo, createServer as createNetServer, type Server, type Socket } from 'node:net';
import { request } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { type EmbeddedRouterOptions, startEmbeddedRouter } from '../../src/deploy/index.js';
import type { EmbeddedRouter } from '../../src/deploy/routers/embedded.js';

/**
 * The embedded router as an HTTP proxy (issue #10, items 1-8): real upstream servers that misbehave on
 * purpose (raw TCP where HTTP libraries would tidy up), real clients (curl, node:http), the router in
 * between. Each test is named after the defect it guards.
 */

const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

/** A raw TCP upstream: `onRequest` gets the socket once a full request head arrived. */
async function rawUpstream(onRequest: (socket: Socket, head: string) => void): Promise<{ url: string; hits: number }> {
  const state = { url: '', hits: 0 };
  const sockets = new Set<Socket>();
  const server: Server = createNetServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let buf = '';
    socket.on('data', (d) => {
      buf += d.toString('latin1');
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = buf.slice(0, end);
      buf = buf.slice(end + 4);
      state.hits++;
      onRequest(socket, head);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  );
  return state;
}

/** An HTTP upstream that answers with what it received (headers) and the given response headers. */
async function echoUpstream(
  responseHeaders: Record<string, string | string[]> = {},
  label = 'echo',
): Promise<{ url: string; seen: IncomingHttpHeaders[]; methods: string[] }> {
  const seen: IncomingHttpHeaders[] = [];
  const methods: string[] = [];
  const server = createHttpServer((req, res) => {
    seen.push(req.headers);
    methods.push(req.method ?? '');
    req.resume();
    req.on('end', () => {
      const body = JSON.stringify(req.headers);
      res.writeHead(200, { ...responseHeaders, 'content-type': 'application/json', 'x-served-by': label });
      res.end(body);
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
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen, methods };
}

async function routerTo(
  blue: string[],
  options: Partial<EmbeddedRouterOptions> = {},
  green?: string[],
): Promise<EmbeddedRouter> {
  const router = await startEmbeddedRouter({ port: 0, ...options });
  cleanups.push(() => router.close());
  await router.setBackends(
    'blue',
    blue.map((url, i) => ({ id: `b${i}`, url })),
  );
  if (green)
    await router.setBackends(
      'green',
      green.map((url, i) => ({ id: `g${i}`, url })),
    );
  await router.setWeights({ blue: 100, green: 0 });
  return router;
}

/** curl's exit code and output (curl is what a user tries first; its exit code says whether a transfer was whole). */
function curl(args: string[]): Promise<{ code: number; stdout: string }> {
  return new Promise((resolve) => {
    const p = spawn('curl', ['-sS', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    p.stdout.on('data', (d) => {
      stdout += d;
    });
    p.on('close', (code) => resolve({ code: code ?? -1, stdout }));
  });
}

describe('embedded router: proxy correctness', () => {
  it('a backend closing mid-response in chunked encoding reaches the client as a broken transfer (no final chunk)', async () => {
    const up = await rawUpstream((socket) => {
      socket.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n');
      setTimeout(() => socket.destroy(), 50);
    });
    const router = await routerTo([up.url]);
    const r = await curl(['--max-time', '10', `${router.url}/stream`]);
    expect(r.stdout).toBe('hello');
    // 18 = partial file: the client knows the body is incomplete. 0 would be a complete-looking 200.
    expect(r.code).toBe(18);
    const w = await router.window('blue', Date.now() - 60_000);
    expect(w.errors).toBe(1);
  });

  it('a backend dying mid-body with Content-Length closes the client connection instead of leaving it hanging', async () => {
    const up = await rawUpstream((socket) => {
      socket.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n0123456789');
      setTimeout(() => socket.destroy(), 50);
    });
    const router = await routerTo([up.url]);
    const r = await curl(['--max-time', '10', `${router.url}/file`]);
    expect(r.stdout).toBe('0123456789');
    expect(r.code).toBe(18); // 28 would be curl giving up after --max-time: the hang
  });

  it('drops hop-by-hop headers and the headers named in Connection, in both directions (RFC 9110 7.6.1)', async () => {
    const up = await echoUpstream({
      connection: 'x-internal-hop',
      'x-internal-hop': 'backend-secret',
      'keep-alive': 'timeout=5',
      'x-end-to-end': 'kept',
    });
    const router = await routerTo([up.url]);
    const res = await new Promise<{ headers: IncomingHttpHeaders; body: string }>((resolve, reject) => {
      const req = httpRequest(
        `${router.url}/h`,
        {
          headers: {
            connection: 'keep-alive, X-Secret',
            'x-secret': 'client-secret',
            'keep-alive': 'timeout=9',
            te: 'trailers',
            'proxy-connection': 'keep-alive',
            'x-app': 'kept',
          },
          agent: false,
        },
        (r) => {
          let body = '';
          r.on('data', (d) => {
            body += d;
          });
          r.on('end', () => resolve({ headers: r.headers, body }));
        },
      );
      req.on('error', reject);
      req.end();
    });
    const upstreamSaw = up.seen[0]!;
    expect(upstreamSaw['x-secret']).toBeUndefined();
    expect(upstreamSaw.te).toBeUndefined();
    expect(upstreamSaw['proxy-connection']).toBeUndefined();
    expect(upstreamSaw['x-app']).toBe('kept');
    expect(res.headers['x-internal-hop']).toBeUndefined();
    expect(res.headers['keep-alive']).not.toBe('timeout=5');
    expect(res.headers['x-end-to-end']).toBe('kept');
  });

  it('adds X-Forwarded-Proto and X-Forwarded-Host, keeps X-Forwarded-For, and adds Forwarded when configured', async () => {
    const up = await echoUpstream();
    const plain = await routerTo([up.url]);
    const a = await request(`${plain.url}/f`, { headers: { host: 'shop.example', 'x-forwarded-for': '10.1.2.3' } });
    const seenA = (await a.body.json()) as Record<string, string>;
    expect(seenA['x-forwarded-proto']).toBe('http');
    expect(seenA['x-forwarded-host']).toBe('shop.example');
    expect(seenA['x-forwarded-for']).toBe('10.1.2.3, 127.0.0.1');
    expect(seenA.forwarded).toBeUndefined();
    expect(seenA.host).toBe('shop.example');

    const withForwarded = await routerTo([up.url], { forwarded: true });
    const b = await request(`${withForwarded.url}/f`, {
      headers: { host: 'shop.example', forwarded: 'for=10.1.2.3;proto=https' },
    });
    const seenB = (await b.body.json()) as Record<string, string>;
    expect(seenB.forwarded).toBe('for=10.1.2.3;proto=https, for=127.0.0.1;host=shop.example;proto=http');
  });

  it('adds the sticky cookie even when the app sets its own Set-Cookie', async () => {
    const up = await echoUpstream({ 'set-cookie': ['session=abc; Path=/', 'theme=dark; Path=/'] });
    const router = await routerTo([up.url], { sticky: { cookie: 'bw_slot' } }, [up.url]);
    await router.setWeights({ blue: 50, green: 50 }); // a split: the router assigns a bucket cookie
    const r = await request(`${router.url}/login`);
    await r.body.dump();
    const cookies = ([] as string[]).concat(r.headers['set-cookie'] as string | string[]);
    expect(cookies.map((c) => c.split('=')[0])).toEqual(['session', 'theme', 'bw_slot']);
  });

  it('never retries a non-idempotent request (POST, PATCH, DELETE by default), body or no body, even when the backend reset the connection', async () => {
    // The first backend receives the request (the app may have acted on it) and then resets the connection.
    const resetting = await rawUpstream((socket) => socket.resetAndDestroy());
    const healthy = await echoUpstream();
    for (const [method, body] of [
      ['POST', undefined],
      ['POST', '{"order":1}'],
      ['PATCH', undefined],
      ['DELETE', undefined],
    ] as const) {
      const router = await routerTo([resetting.url, healthy.url]);
      const before = { reset: resetting.hits, healthy: healthy.methods.length };
      // curl -X without data sends no Content-Length: a request with no body at all.
      const r = await curl([
        '-o',
        '/dev/null',
        '-w',
        '%{http_code}',
        '-X',
        method,
        ...(body ? ['--data', body] : []),
        `${router.url}/orders`,
      ]);
      expect(r.stdout, `${method} ${body ? 'with' : 'without'} body`).toBe('502');
      expect(resetting.hits - before.reset).toBe(1);
      expect(healthy.methods.length - before.healthy, `${method} executed a second time`).toBe(0);
    }
    // Idempotent GET is still retried once, and DELETE too when configured.
    const getRouter = await routerTo([resetting.url, healthy.url]);
    const g = await request(`${getRouter.url}/orders`);
    await g.body.dump();
    expect(g.statusCode).toBe(200);
    const delRouter = await routerTo([resetting.url, healthy.url], { retryDelete: true });
    const d = await request(`${delRouter.url}/orders/1`, { method: 'DELETE' });
    await d.body.dump();
    expect(d.statusCode).toBe(200);
  });

  it('answers 504 when a backend does not send response headers within the header timeout', async () => {
    const up = await rawUpstream(() => {}); // accepts, reads, never answers
    const router = await routerTo([up.url], { timeouts: { headers: 300 } });
    const r = await request(`${router.url}/slow`, { headersTimeout: 20_000 });
    await r.body.dump();
    expect(r.statusCode).toBe(504);
    expect((await router.window('blue', Date.now() - 60_000)).errors).toBe(1);
  });

  it('breaks the client transfer when a backend goes idle mid-body longer than the idle timeout', async () => {
    const up = await rawUpstream((socket) => {
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789'); // then silence, connection open
    });
    const router = await routerTo([up.url], { timeouts: { idle: 300 } });
    const r = await curl(['--max-time', '15', `${router.url}/stall`]);
    expect(r.stdout).toBe('0123456789');
    expect(r.code).toBe(18);
  });

  it('answers 504 when the backend connection cannot be established within the connect timeout', async () => {
    // A listener whose accept queue is full: the kernel drops further SYNs, so connect() hangs.
    const py = spawn(
      'python3',
      [
        '-c',
        'import socket,sys,time\ns=socket.socket()\ns.bind(("127.0.0.1",0))\ns.listen(0)\nprint(s.getsockname()[1],flush=True)\nsys.stdin.read()',
      ],
      { stdio: ['pipe', 'pipe', 'inherit'] },
    );
    cleanups.push(() => py.kill());
    const port = await new Promise<number>((resolve) => py.stdout.once('data', (d) => resolve(Number(String(d)))));
    const fillers: Socket[] = [];
    cleanups.push(() => {
      for (const s of fillers) s.destroy();
    });
    const { connect } = await import('node:net');
    for (let i = 0; i < 4; i++) {
      const s = connect(port, '127.0.0.1');
      s.on('error', () => {});
      fillers.push(s);
    }
    await new Promise((r) => setTimeout(r, 200));
    const router = await routerTo([`http://127.0.0.1:${port}`], { timeouts: { connect: 300 } });
    const r = await request(`${router.url}/x`, { headersTimeout: 30_000 });
    await r.body.dump();
    expect(r.statusCode).toBe(504);
  });

  it('tunnels a WebSocket upgrade (101 and bytes both ways), pinned to its slot across a switch, closed when that slot drains', async () => {
    const wsUpstream = async (label: string) => {
      const server = createHttpServer((_req, res) => {
        res.writeHead(426, { 'content-type': 'text/plain' }).end('upgrade required\n');
      });
      const upgraded = new Set<Socket>();
      server.on('upgrade', (req, socket: Socket) => {
        upgraded.add(socket);
        socket.write(
          `HTTP/1.1 101 Switching Protocols\r\nUpgrade: ${req.headers.upgrade}\r\nConnection: Upgrade\r\nX-Served-By: ${label}\r\n\r\n`,
        );
        socket.on('data', (d) => socket.write(`${label}:${d}`));
        socket.on('error', () => {});
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      cleanups.push(
        () =>
          new Promise<void>((r) => {
            for (const s of upgraded) s.destroy(); // upgraded sockets are no longer the server's to close
            server.closeAllConnections();
            server.close(() => r());
          }),
      );
      return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    };
    const router = await routerTo([await wsUpstream('blue')], {}, [await wsUpstream('green')]);
    const open = () =>
      new Promise<{ status: number; socket?: Socket; headers: IncomingHttpHeaders }>((resolve, reject) => {
        const req = httpRequest(`${router.url}/ws`, {
          headers: { connection: 'Upgrade', upgrade: 'websocket' },
          agent: false,
        });
        req.on('upgrade', (res, socket) => resolve({ status: res.statusCode!, socket, headers: res.headers }));
        req.on('response', (res) => {
          res.resume();
          resolve({ status: res.statusCode!, headers: res.headers });
        });
        req.on('error', reject);
        req.end();
      });
    const say = (socket: Socket, text: string) =>
      new Promise<string>((resolve) => {
        socket.once('data', (d) => resolve(String(d)));
        socket.write(text);
      });

    const ws = await open();
    expect(ws.status).toBe(101);
    expect(ws.headers['x-served-by']).toBe('blue');
    cleanups.push(() => ws.socket?.destroy());
    expect(await say(ws.socket!, 'hi')).toBe('blue:hi');
    // The switch moves new connections only: the open tunnel stays with the slot that accepted it.
    await router.setWeights({ blue: 0, green: 100 });
    expect(await say(ws.socket!, 'still')).toBe('blue:still');
    const fresh = await open();
    expect(fresh.status).toBe(101);
    expect(fresh.headers['x-served-by']).toBe('green');
    cleanups.push(() => fresh.socket?.destroy());
    expect((await router.state()).slots.blue.tunnels).toBe(1);
    // Draining blue waits for its tunnels, then closes the ones still open at the deadline.
    const closed = new Promise((r) => ws.socket!.once('close', r));
    await router.drain('blue', 300);
    await closed;
    expect((await router.state()).slots.blue.tunnels).toBe(0);
    expect(await say(fresh.socket!, 'green-ok')).toBe('green:green-ok');
  });

  it('answers 502 to an upgrade whose backend is unreachable, and counts the error', async () => {
    const router = await routerTo(['http://127.0.0.1:9']);
    const status = await new Promise<number>((resolve, reject) => {
      const req = httpRequest(`${router.url}/ws`, {
        headers: { connection: 'Upgrade', upgrade: 'websocket' },
        agent: false,
      });
      req.on('upgrade', (r, socket) => {
        socket.destroy();
        resolve(r.statusCode!);
      });
      req.on('response', (r) => {
        r.resume();
        resolve(r.statusCode!);
      });
      req.on('error', reject);
      req.end();
    });
    expect(status).toBe(502);
    expect((await router.window('blue', Date.now() - 60_000)).errors).toBe(1);
    expect((await router.state()).slots.blue.tunnels).toBe(0);
  });

  it('passes a non-101 answer to an upgrade through as the backend sent it (never a made-up 200)', async () => {
    const up = await echoUpstream(); // an app without WebSocket support answers the upgrade request with 200
    const router = await routerTo([up.url]);
    const res = await new Promise<number>((resolve, reject) => {
      const req = httpRequest(`${router.url}/ws`, {
        headers: { connection: 'Upgrade', upgrade: 'websocket' },
        agent: false,
      });
      req.on('upgrade', (r, socket) => {
        socket.destroy();
        resolve(r.statusCode!);
      });
      req.on('response', (r) => {
        r.resume();
        resolve(r.statusCode!);
      });
      req.on('error', reject);
      req.end();
    });
    // The app saw the Upgrade header (it decided, not the router).
    expect(up.seen[0]!.upgrade).toBe('websocket');
    expect(res).toBe(200);
  });
});

// Only a sanity check that python3 (used for the connect-timeout listener) exists on this machine.
if (spawnSync('python3', ['--version']).status !== 0) throw new Error('python3 is needed by router-proxy.test.ts');
