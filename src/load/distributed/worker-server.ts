import { timingSafeEqual } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { distDir } from '../../lib/bundle.js';
import { resetData } from '../data.js';
import { Engine } from '../engine.js';
import { bulwarkVersion } from '../version.js';
import { PROTOCOL_VERSION, type RunRequest, type WorkerEvent } from './protocol.js';

export interface WorkerServer {
  url: string;
  close(): Promise<void>;
}

function authorized(req: IncomingMessage, token: string | undefined): boolean {
  if (!token) return true;
  const given = Buffer.from(req.headers.authorization ?? '');
  const want = Buffer.from(`Bearer ${token}`);
  return given.length === want.length && timingSafeEqual(given, want);
}

async function readBody(req: IncomingMessage, limit = 50_000_000): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > limit) throw new Error('request too large');
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * `bulwark worker`: runs one share of a coordinator's load at a time and streams its metric deltas
 * back. The bundled scenario arrives with bare `bulwark` imports; it is written to a private temp
 * folder whose node_modules/bulwark links to this worker's own install, so the scenario shares module
 * state (custom metrics) with the engine that runs it, wherever either Bulwark is installed. A
 * coordinator of another version is refused: the scenario API and the metric deltas must match.
 */
export async function startWorkerServer(options: {
  host?: string;
  port?: number;
  token?: string;
  log?: (line: string) => void;
}): Promise<WorkerServer> {
  let current: Engine | undefined;
  // The version this process started as (an upgrade in place does not change the running code).
  const version = bulwarkVersion();
  const log = options.log ?? (() => {});

  async function run(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (current) {
      res.writeHead(409, { 'content-type': 'application/json' }).end('{"error":"a run is in progress"}');
      return;
    }
    const body = JSON.parse(await readBody(req)) as RunRequest & { protocol?: number };
    if (body.protocol !== PROTOCOL_VERSION) {
      res
        .writeHead(400, { 'content-type': 'application/json' })
        .end(JSON.stringify({ error: `protocol ${body.protocol} not supported (worker speaks ${PROTOCOL_VERSION})` }));
      return;
    }
    if (body.bulwarkVersion !== version) {
      res.writeHead(409, { 'content-type': 'application/json' }).end(
        JSON.stringify({
          error: `version mismatch: coordinator runs bulwark ${body.bulwarkVersion ?? '(unknown)'}, worker ${version} (install the same version on every load host)`,
        }),
      );
      return;
    }
    const dir = mkdtempSync(join(tmpdir(), 'bulwark-worker-'));
    mkdirSync(join(dir, 'node_modules'));
    symlinkSync(resolve(distDir, '..'), join(dir, 'node_modules', 'bulwark'), 'dir');
    const file = join(dir, `${body.scenarioName.replace(/[^\w.-]/g, '_')}.mjs`);
    writeFileSync(file, body.code);
    res.writeHead(200, { 'content-type': 'application/x-ndjson' });
    const send = (e: WorkerEvent) => res.write(`${JSON.stringify(e)}\n`);
    try {
      process.setSourceMapsEnabled(true);
      resetData(body.sharedData);
      const mod = await import(pathToFileURL(file).href);
      const { code: _code, scenarioName, bulwarkVersion: _version, ...engineOptions } = body;
      current = new Engine({
        ...engineOptions,
        scenario: mod.default,
        scenarioFile: scenarioName,
        onFlush: (message) => send({ type: 'flush', message }),
      });
      // A coordinator that disappears stops the run.
      res.on('close', () => current?.requestStop());
      log(`run started: worker ${body.workerIndex + 1}/${body.workerCount}, ${scenarioName}`);
      await current.run();
      send({ type: 'done' });
      log('run finished');
    } catch (err) {
      send({ type: 'error', message: (err as Error)?.message ?? String(err) });
    } finally {
      current = undefined;
      rmSync(dir, { recursive: true, force: true });
      res.end();
    }
  }

  const server = createServer((req, res) => {
    if (!authorized(req, options.token)) {
      res.writeHead(401).end();
      return;
    }
    if (req.method === 'GET' && req.url === '/health') {
      res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ busy: Boolean(current), protocol: PROTOCOL_VERSION, version }));
      return;
    }
    if (req.method === 'POST' && req.url === '/stop') {
      current?.requestStop();
      res.writeHead(202).end();
      return;
    }
    if (req.method === 'POST' && req.url === '/run') {
      run(req, res).catch((err) => {
        if (!res.headersSent)
          res
            .writeHead(400, { 'content-type': 'application/json' })
            .end(JSON.stringify({ error: (err as Error).message }));
      });
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => resolve());
  });
  const addr = server.address() as AddressInfo;
  return {
    url: `http://${options.host ?? '127.0.0.1'}:${addr.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        current?.requestStop();
        server.close(() => resolve());
        server.closeIdleConnections();
      }),
  };
}
