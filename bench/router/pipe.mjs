// Reference target for run.mjs (FLOOR=1): about the simplest proxy Node can run. Each client connection
// is piped byte for byte to its own upstream connection: no HTTP parsing, no header rewriting, no pool,
// no metrics. Its tail latency beside HAProxy's shows what Node's runtime alone gives on this machine,
// so a router's ratio can be read against it. usage: node pipe.mjs PORT UPSTREAM_PORT
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
