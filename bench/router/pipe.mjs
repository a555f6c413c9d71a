// Reference target for run.mjs (FLOOR=1): the thinnest proxy Node can be. Each client connection is
// piped byte for byte to its own upstream connection: no HTTP parsing, no header rewriting, no pool,
// no metrics. Whatever its tail latency is beside HAProxy's, no Node proxy can expect to do better on
// the same machine. usage: node pipe.mjs PORT UPSTREAM_PORT
import { connect, createServer } from 'node:net';

const [port, upstreamPort] = process.argv.slice(2).map(Number);
const server = createServer({ noDelay: true }, (client) => {
  const upstream = connect({ host: '127.0.0.1', port: upstreamPort, noDelay: true });
  client.pipe(upstream);
  upstream.pipe(client);
  client.on('error', () => upstream.destroy());
  upstream.on('error', () => client.destroy());
  client.on('close', () => upstream.destroy());
  upstream.on('close', () => client.destroy());
});
server.listen(port, '127.0.0.1', () => console.log('listening pipe'));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
