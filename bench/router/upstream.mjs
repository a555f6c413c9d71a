// Bench upstream: answers every request with its label (no work), keep-alive kept for 65 s so idle
// upstream connections are never closed during a run. usage: node upstream.mjs PORT LABEL
import { createServer } from 'node:http';

const [port, label] = process.argv.slice(2);
const body = Buffer.from(`${label}\n`);
const server = createServer({ keepAliveTimeout: 65_000 }, (req, res) => {
  req.resume();
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length, 'x-served-by': label });
  res.end(body);
});
server.listen(Number(port), '127.0.0.1', () => console.log(`listening ${label}`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
