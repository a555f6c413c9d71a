#!/usr/bin/env node
// Microbenchmark of the embedded router's per-request head work, without sockets: parse a request head
// and a response head (http1.ts) and build the heads it sends on (proxy.ts), on heads shaped like the
// bench's (bulwark load's request, Node's http server's answer). Prints microseconds per call, 3 rounds.
//
//   npm run build && node bench/router/heads.mjs
//   DIST=/tmp/base/dist node bench/router/heads.mjs     # another build (A/B; run both, alternate)
import { pathToFileURL } from 'node:url';

const dist = (process.env.DIST ?? new URL('../../dist/', import.meta.url).pathname).replace(/\/$/, '');
const http1 = await import(pathToFileURL(`${dist}/deploy/routers/http1.js`).href);
const proxy = await import(pathToFileURL(`${dist}/deploy/routers/proxy.js`).href);

const request =
  'GET / HTTP/1.1\r\nhost: 127.0.0.1:18583\r\nconnection: keep-alive\r\nuser-agent: bulwark/0.1\r\naccept: */*';
const response =
  'HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\nx-served-by: blue\r\n' +
  'Date: Thu, 03 Dec 2026 17:00:00 GMT\r\nConnection: keep-alive\r\nKeep-Alive: timeout=65';
const parsedRequest = http1.parseRequestHead(request);
const parsedResponse = http1.parseResponseHead(response);
const N = Number(process.env.N ?? 500_000);

const cases = {
  'parse request': () => http1.parseRequestHead(request),
  'parse response': () => http1.parseResponseHead(response),
  'build upstream request': () =>
    proxy.upstreamRequestHead(parsedRequest, '127.0.0.1', { forwarded: false, upgrade: false, defaultHost: '' }),
  'build client response': () => proxy.clientResponseHead(parsedResponse, undefined, undefined),
};
let sink = 0;
for (let round = 0; round < 3; round++) {
  const out = [];
  for (const [name, fn] of Object.entries(cases)) {
    const t0 = performance.now();
    for (let i = 0; i < N; i++) sink += fn() ? 1 : 0;
    out.push(`${name} ${(((performance.now() - t0) * 1000) / N).toFixed(3)} us`);
  }
  console.log(out.join(' | '));
}
if (sink < 0) console.log(sink);
