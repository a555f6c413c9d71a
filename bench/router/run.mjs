#!/usr/bin/env node
// Router bench: the same upstream served directly, through Bulwark's embedded router and through
// HAProxy (Debian's, runtime API), in one run. Prints requests/s (wrk, closed loop), p99 at a fixed
// rate (bulwark load, open model) and the switch time from the switch command to the first response
// served by the new slot, with keep-alive clients running across the switch.
//
//   flock /tmp/bulwark-heavy.lock node bench/router/run.mjs
//   DURATION=10 CONNS=50 RATE=2000 REPS=3 SWITCHES=5 flock /tmp/bulwark-heavy.lock node bench/router/run.mjs
//   RATE=2000,5000 ... measures each fixed rate in the same run (same processes, interleaved reps).
//   QUIET_STEAL=5: a second reading of each fixed-rate ratio, from the reps with less steal than that.
//   CONTROL=1 adds a second, identical HAProxy as a fourth target and prints its ratios to the first:
//   an A/A control, the spread this machine gives two routers that are the same. CONTROL=plain makes
//   that fourth target a bare HAProxy instead (see below), which measures what the shared features cost.
//   FLOOR=1 adds a reference target, pipe.mjs: a bare Node byte pipe (no HTTP parsing, one upstream
//   connection per client connection), and prints its ratios to HAProxy: what Node's runtime alone gives here.
//
// HAProxy is configured to do the embedded router's job, as a Bulwark deploy runs it: it adds
// X-Forwarded-For/-Proto/-Host to every request (the embedded router always does, #10 item 4) and sends
// its per-request log (the log-format Bulwark's haproxy driver reads for latency percentiles, #10 item 10;
// the embedded router keeps those percentiles in process) to a UDP port this script holds open. HAPROXY=plain
// runs HAProxy bare (no forwarded headers, no log) instead, the comparison before 2026-12-03 session 5.
//
// Needs: npm run build (dist/), haproxy and wrk on PATH. Every process it starts is stopped by PID.
import { spawn, spawnSync } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Pool, request } from 'undici';

const here = dirname(fileURLToPath(import.meta.url));
const MAIN = join(here, '../../dist/cli/main.js');
// The log-format Bulwark's haproxy driver reads, from the build itself, so the bench cannot drift from it.
const { HAPROXY_LOG_FORMAT } = await import(new URL('../../dist/deploy/index.js', import.meta.url).href);
const DURATION = Number(process.env.DURATION ?? 10);
const CONNS = Number(process.env.CONNS ?? 50);
const RATES = String(process.env.RATE ?? 2000)
  .split(',')
  .map(Number)
  .filter((r) => r > 0);
const REPS = Number(process.env.REPS ?? 3);
const SWITCHES = Number(process.env.SWITCHES ?? 5);
const CONTROL = process.env.CONTROL === '1' || process.env.CONTROL === 'plain';
const CONTROL_PLAIN = process.env.CONTROL === 'plain';
const HAPROXY_PLAIN = process.env.HAPROXY === 'plain';
const FLOOR = process.env.FLOOR === '1';
// A rep counts as quiet when the hypervisor's steal during it stayed below this many % (second reading).
const QUIET_STEAL = Number(process.env.QUIET_STEAL ?? 5);
const dir = mkdtempSync(join(tmpdir(), 'bulwark-bench-router-'));
const children = [];
let logSink;

function freePort() {
  return new Promise((resolve, reject) => {
    const tryOne = () => {
      const port = 15000 + Math.floor(Math.random() * 17000);
      const s = createServer();
      s.once('error', tryOne);
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(port)));
    };
    tryOne();
    setTimeout(() => reject(new Error('no free port')), 5000).unref();
  });
}

function start(cmd, args, ready) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let out = '';
    const on = (d) => {
      out += d;
      if (ready.test(out)) resolve(child);
    };
    child.stdout.on('data', on);
    child.stderr.on('data', on);
    child.once('exit', (code) => reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${out}`)));
    setTimeout(() => reject(new Error(`${cmd} not ready: ${out}`)), 15_000).unref();
  });
}

function hap(socket, line) {
  return new Promise((resolve, reject) => {
    const c = connect({ path: socket });
    let out = '';
    c.on('connect', () => c.write(`${line}\n`));
    c.on('data', (d) => {
      out += d;
    });
    c.on('end', () => resolve(out));
    c.on('error', reject);
  });
}

async function waitSocket(path) {
  for (let i = 0; i < 200; i++) {
    try {
      await hap(path, 'show info');
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error('haproxy socket not ready');
}

/** wrk closed loop: requests/s, p99 ms, errors. */
function wrk(url) {
  const r = spawnSync(
    'timeout',
    [String(DURATION + 20), 'wrk', '-t1', `-c${CONNS}`, `-d${DURATION}s`, '--latency', url],
    {
      encoding: 'utf8',
    },
  );
  const out = r.stdout;
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? Number.NaN);
  const p99 = /\s99%\s+([\d.]+)(us|ms|s)/.exec(out);
  const toMs = (v, u) => Number(v) * (u === 'us' ? 0.001 : u === 's' ? 1000 : 1);
  const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1] ?? 0);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const errors = non2xx + (sock ? sock.slice(1).reduce((n, x) => n + Number(x), 0) : 0);
  return { rps, p99: p99 ? toMs(p99[1], p99[2]) : Number.NaN, errors };
}

/** CPU time stolen by the hypervisor and total CPU time so far (/proc/stat, in ticks); NaN elsewhere. */
function cpuTicks() {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    return { steal: f[7] ?? 0, total: f.reduce((a, b) => a + b, 0) };
  } catch {
    return { steal: Number.NaN, total: Number.NaN };
  }
}

/** bulwark load at a fixed rate: p99 ms, failures, and the share of CPU the hypervisor took meanwhile. */
function fixedRate(url, name, rate) {
  const summary = join(dir, `${name}.json`);
  const before = cpuTicks();
  spawnSync(
    'timeout',
    [
      String(DURATION + 60),
      process.execPath,
      MAIN,
      'load',
      join(here, 'rate.ts'),
      '--host',
      url,
      '--summary-json',
      summary,
      '--quiet',
      '--no-typecheck',
    ],
    { encoding: 'utf8', env: { ...process.env, RATE: String(rate), DURATION: `${DURATION}s` } },
  );
  const after = cpuTicks();
  const s = JSON.parse(readFileSync(summary, 'utf8'));
  return {
    steal: (100 * (after.steal - before.steal)) / (after.total - before.total),
    rps: s.totals.rps,
    p99: s.totals.latencyMs.p99,
    p50: s.totals.latencyMs.p50,
    failures: s.totals.failures,
    dropped: s.droppedIterations,
  };
}

/**
 * Keep-alive clients loop on `url`; at 1 s the switch runs; returns ms from the switch call to the first
 * response served by `to`, and every failure seen across the switch.
 */
async function switchOnce(url, to, doSwitch) {
  const pool = new Pool(url, { connections: 16, keepAliveTimeout: 30_000 });
  let stop = false;
  let firstNew = 0;
  let switchedAt = 0;
  let failures = 0;
  let total = 0;
  const loop = async () => {
    while (!stop) {
      try {
        const r = await pool.request({ path: '/', method: 'GET' });
        await r.body.dump();
        total++;
        if (r.statusCode !== 200) failures++;
        else if (switchedAt && !firstNew && r.headers['x-served-by'] === to) firstNew = performance.now();
      } catch {
        failures++;
      }
    }
  };
  const loops = Array.from({ length: 16 }, loop);
  await new Promise((r) => setTimeout(r, 1000));
  switchedAt = performance.now();
  await doSwitch();
  await new Promise((r) => setTimeout(r, 1000));
  stop = true;
  await Promise.all(loops);
  await pool.close();
  return { ms: firstNew ? firstNew - switchedAt : Number.NaN, failures, total };
}

const median = (xs) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)] : Number.NaN;
};
const f = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');

try {
  const [bluePort, greenPort, routerPort, adminPort, hapPort, controlPort, pipePort] = await Promise.all(
    [1, 2, 3, 4, 5, 6, 7].map(() => freePort()),
  );
  await start(process.execPath, [join(here, 'upstream.mjs'), bluePort, 'blue'], /listening/);
  await start(process.execPath, [join(here, 'upstream.mjs'), greenPort, 'green'], /listening/);
  const blue = `http://127.0.0.1:${bluePort}`;
  const green = `http://127.0.0.1:${greenPort}`;
  const token = 'bench-token';
  await start(
    process.execPath,
    [join(here, 'embedded.mjs'), routerPort, adminPort, token, blue, green],
    /listening router/,
  );
  if (FLOOR) await start(process.execPath, [join(here, 'pipe.mjs'), pipePort, bluePort], /listening pipe/);
  const socket = join(dir, 'haproxy.sock');
  // The request log goes to a socket that is bound but not read while a measurement runs (this process
  // waits in spawnSync): HAProxy pays for each line as in a deploy, the datagrams cost no reader CPU.
  logSink = createSocket('udp4');
  await new Promise((resolve) => logSink.bind(0, '127.0.0.1', resolve));
  logSink.on('message', () => {});
  const logPort = logSink.address().port;
  const startHaproxy = async (name, port, stats, plain) => {
    const cfg = join(dir, `${name}.cfg`);
    const logGlobal = plain ? '' : `    log 127.0.0.1:${logPort} local0\n`;
    const asDeployed = plain ? '' : `    log global\n    log-format "${HAPROXY_LOG_FORMAT}"\n    option forwardfor\n`;
    const forwardedHeaders = plain
      ? ''
      : `    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)] if { req.hdr(host) -m found }
`;
    writeFileSync(
      cfg,
      `global
    nbthread 1
    maxconn 4000
    stats socket ${stats} mode 600 level admin
${logGlobal}defaults
    mode http
${asDeployed}    option http-keep-alive
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s
frontend fe
    bind 127.0.0.1:${port}
${forwardedHeaders}    default_backend be
backend be
    balance roundrobin
    server blue 127.0.0.1:${bluePort} weight 100
    server green 127.0.0.1:${greenPort} weight 100 disabled
`,
    );
    children.push(spawn('haproxy', ['-f', cfg, '-db'], { stdio: 'ignore' }));
    await waitSocket(stats);
  };
  await startHaproxy('haproxy', hapPort, socket, HAPROXY_PLAIN);
  if (CONTROL) await startHaproxy('control', controlPort, join(dir, 'control.sock'), HAPROXY_PLAIN || CONTROL_PLAIN);
  console.log(
    `haproxy: ${HAPROXY_PLAIN ? 'bare' : 'forwarded headers + per-request log, as deployed'}` +
      (CONTROL ? `; control: ${HAPROXY_PLAIN || CONTROL_PLAIN ? 'bare' : 'the same'}` : ''),
  );

  const targets = {
    direct: blue,
    embedded: `http://127.0.0.1:${routerPort}`,
    haproxy: `http://127.0.0.1:${hapPort}`,
    ...(CONTROL ? { control: `http://127.0.0.1:${controlPort}` } : {}),
    ...(FLOOR ? { pipe: `http://127.0.0.1:${pipePort}` } : {}),
  };
  const names = Object.keys(targets);
  for (const url of Object.values(targets)) wrk(url); // warm-up (JIT, connections) — not recorded
  const runs = Object.fromEntries(names.map((n) => [n, []]));
  const rated = Object.fromEntries(RATES.map((r) => [r, Object.fromEntries(names.map((n) => [n, []]))]));
  for (let rep = 0; rep < REPS; rep++) {
    // The order rotates each rep (direct, embedded, haproxy; then embedded, haproxy, direct; ...), so no
    // target always runs first after a pause or right after the same neighbour.
    const order = names.map((_, i) => names[(i + rep) % names.length]);
    for (const name of order) runs[name].push(wrk(targets[name]));
    for (const rate of RATES)
      for (const name of order) rated[rate][name].push(fixedRate(targets[name], `${name}-${rate}-${rep}`, rate));
  }

  const switches = { embedded: [], haproxy: [] };
  const admin = `http://127.0.0.1:${adminPort}`;
  const setWeights = async (w) => {
    const r = await request(`${admin}/v1/weights`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify(w),
    });
    await r.body.dump();
    if (r.statusCode !== 200) throw new Error(`admin API ${r.statusCode}`);
  };
  for (let i = 0; i < SWITCHES; i++) {
    const toGreen = i % 2 === 0;
    switches.embedded.push(
      await switchOnce(targets.embedded, toGreen ? 'green' : 'blue', () =>
        setWeights(toGreen ? { blue: 0, green: 100 } : { blue: 100, green: 0 }),
      ),
    );
    // Runtime API, make-before-break order in one line (what Bulwark's haproxy router sends).
    switches.haproxy.push(
      await switchOnce(targets.haproxy, toGreen ? 'green' : 'blue', () =>
        hap(
          socket,
          toGreen
            ? 'set server be/green state ready; set server be/blue state drain'
            : 'set server be/blue state ready; set server be/green state drain',
        ),
      ),
    );
  }

  const wrkRow = (name) => ({
    name,
    rps: median(runs[name].map((r) => r.rps)),
    p99: median(runs[name].map((r) => r.p99)),
    err: runs[name].reduce((n, r) => n + r.errors, 0),
  });
  const w = names.map(wrkRow);
  const wOf = Object.fromEntries(w.map((r) => [r.name, r]));
  console.log(`\nrouter bench — ${REPS} reps x ${DURATION}s; medians\n`);
  console.log(`closed loop (wrk -t1 -c${CONNS}):\n`);
  console.log('| target | wrk req/s | vs direct | wrk p99 ms | errors |');
  console.log('|---|---|---|---|---|');
  for (const r of w) console.log(`| ${r.name} | ${f(r.rps, 0)} | ${f(r.rps / w[0].rps)} | ${f(r.p99)} | ${r.err} |`);
  const ratios = [`closed-loop throughput embedded/haproxy: ${f(wOf.embedded.rps / wOf.haproxy.rps)} (goal >= 0.75)`];
  const control = CONTROL ? [`closed-loop throughput control/haproxy: ${f(wOf.control.rps / wOf.haproxy.rps)}`] : [];
  const floor = FLOOR ? [`closed-loop throughput pipe/haproxy: ${f(wOf.pipe.rps / wOf.haproxy.rps)}`] : [];
  for (const rate of RATES) {
    const row = (name) => {
      const xs = rated[rate][name];
      return {
        name,
        rp99: median(xs.map((r) => r.p99)),
        rp50: median(xs.map((r) => r.p50)),
        rfail: xs.reduce((n, r) => n + r.failures, 0),
        achieved: median(xs.map((r) => r.rps)),
        perRep: xs.map((r) => f(r.p99)).join(' / '),
        steal: xs.map((r) => f(r.steal, 0)).join(' / '),
      };
    };
    const rows = names.map(row);
    const rowOf = Object.fromEntries(rows.map((r) => [r.name, r]));
    const d = rowOf.direct;
    console.log(`\nfixed rate ${rate}/s (bulwark load, open model):\n`);
    // Steal: CPU the hypervisor gave to other guests during the rep, % of this machine's CPU time. A rep
    // with much of it measured the neighbours as much as the router.
    console.log(
      '| target | achieved/s | p50 ms | p99 ms | added p99 ms | failures | p99 ms per rep | steal % per rep |',
    );
    console.log('|---|---|---|---|---|---|---|---|');
    for (const r of rows)
      console.log(
        `| ${r.name} | ${f(r.achieved, 0)} | ${f(r.rp50)} | ${f(r.rp99)} | ${r.name === 'direct' ? '-' : f(r.rp99 - d.rp99)} | ${r.rfail} | ${r.perRep} | ${r.steal} |`,
      );
    const addH = rowOf.haproxy.rp99 - d.rp99;
    // A ratio to a non-positive HAProxy figure means nothing: say so instead of printing one.
    const versus = (name) => {
      const add = rowOf[name].rp99 - d.rp99;
      return `${addH > 0 ? f(add / addH) : `n/a (HAProxy added ${f(addH)} ms)`} (${f(add)} ms vs ${f(addH)} ms`;
    };
    ratios.push(`added p99 at ${rate}/s embedded/haproxy: ${versus('embedded')}; goal <= 1.5)`);
    if (CONTROL) control.push(`added p99 at ${rate}/s control/haproxy: ${versus('control')})`);
    if (FLOOR) floor.push(`added p99 at ${rate}/s pipe/haproxy: ${versus('pipe')})`);
    // Second reading, the headline above stays over all reps: the same ratio from each target's quiet reps
    // only, where the machine's neighbours took (almost) nothing. Needs two quiet reps per target.
    const quiet = (name) => rated[rate][name].filter((r) => r.steal < QUIET_STEAL).map((r) => r.p99);
    const q = Object.fromEntries(['direct', 'embedded', 'haproxy'].map((n) => [n, quiet(n)]));
    const counts = `quiet reps direct/embedded/haproxy: ${q.direct.length}/${q.embedded.length}/${q.haproxy.length}`;
    if (Object.values(q).every((xs) => xs.length >= 2)) {
      const qe = median(q.embedded) - median(q.direct);
      const qh = median(q.haproxy) - median(q.direct);
      ratios.push(
        `  over reps with steal < ${QUIET_STEAL} % only: ${qh > 0 ? f(qe / qh) : 'n/a'} (${f(qe)} ms vs ${f(qh)} ms; ${counts})`,
      );
    } else ratios.push(`  over reps with steal < ${QUIET_STEAL} % only: n/a (${counts}; needs 2 each)`);
  }
  console.log('\nsame-run ratios:');
  for (const line of ratios) console.log(`  ${line}`);
  if (CONTROL) {
    console.log(
      HAPROXY_PLAIN || !CONTROL_PLAIN
        ? 'A/A control (a second HAProxy, same config, measured like the others):'
        : 'control: a bare HAProxy (no forwarded headers, no request log), measured like the others:',
    );
    for (const line of control) console.log(`  ${line}`);
  }
  if (FLOOR) {
    console.log('floor: a bare Node byte pipe (pipe.mjs, no HTTP parsing), measured like the others:');
    for (const line of floor) console.log(`  ${line}`);
  }
  console.log(
    `\nswitch (16 keep-alive clients, ${SWITCHES} switches each): switch call -> first response from the new slot\n`,
  );
  console.log('| router | median ms | max ms | failed requests across switches | requests |');
  console.log('|---|---|---|---|---|');
  for (const name of ['embedded', 'haproxy']) {
    const s = switches[name];
    console.log(
      `| ${name} | ${f(median(s.map((x) => x.ms)))} | ${f(Math.max(...s.map((x) => x.ms)))} | ${s.reduce((n, x) => n + x.failures, 0)} | ${s.reduce((n, x) => n + x.total, 0)} |`,
    );
  }
} finally {
  for (const c of children.reverse()) {
    if (c.exitCode === null && c.signalCode === null) {
      c.kill('SIGTERM');
      await new Promise((r) => {
        const t = setTimeout(() => {
          c.kill('SIGKILL');
          r();
        }, 3000);
        c.once('exit', () => {
          clearTimeout(t);
          r();
        });
      });
    }
  }
  logSink?.close();
  rmSync(dir, { recursive: true, force: true });
}
