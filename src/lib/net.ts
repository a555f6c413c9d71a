import { createServer } from 'node:net';

/**
 * A free TCP port on 127.0.0.1. For servers we start as separate programs (PostgreSQL, etcd, HAProxy),
 * pass `below: 32768` so the port is outside Linux's ephemeral range: otherwise an unrelated outgoing
 * connection can take it between this check and the server's start.
 */
export async function freePort(options: { below?: number; host?: string } = {}): Promise<number> {
  const host = options.host ?? '127.0.0.1';
  if (!options.below) return listenOnce(host, 0);
  const below = options.below;
  for (let attempt = 0; attempt < 200; attempt++) {
    const candidate = 15000 + Math.floor(Math.random() * (below - 15000));
    try {
      return await listenOnce(host, candidate);
    } catch {
      // taken; try another
    }
  }
  throw new Error(`no free port found below ${below}`);
}

function listenOnce(host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen({ host, port, exclusive: true }, () => {
      const addr = srv.address();
      const chosen = typeof addr === 'object' && addr ? addr.port : port;
      srv.close(() => resolve(chosen));
    });
  });
}
