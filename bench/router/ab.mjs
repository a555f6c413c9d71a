#!/usr/bin/env node
// Diagnosis/A-B helper for the embedded router's tail latency: the same upstream served directly and
// through one or two builds of the embedded router (A = dist/ or $A_DIST, B = $B_DIST when set), at a
// fixed rate with `bulwark load`, interleaved, REPS rounds. After each run it reads the router's own
// side (event-loop delay p99/max, CPU ms per 1,000 requests) through embedded.mjs's probe.
//
//   npm run build
//   RATE=5000 DURATION=8 REPS=3 flock /tmp/bulwark-heavy.lock node bench/router/ab.mjs
//   mkdir -p /tmp/base && cp -r dist /tmp/base/dist && ln -s "$PWD/node_modules" /tmp/base/node_modules
//   # (a build of the old code), change and rebuild, then:
//   A_DIST=/tmp/base/dist RATE=5000 flock /tmp/bulwark-heavy.lock node bench/router/ab.mjs   # A=old, B=dist/
//   ROUTER_NODE_ARGS="--trace-gc" or "--cpu-prof --cpu-prof-dir=/tmp/prof" adds flags to the routers
//   (B_NODE_ARGS to B only: A/B of a flag on the same build).
//   GEN_CPU=1 SERVER_CPU=0: pin the generator and the servers (upstreams, routers) to CPUs (taskset).
//   ANALYSIS=1: while a router is measured, ask its admin API for both slots' last-60 s windows every
//   ANALYSIS_EVERY_MS (2000), as a deploy's analysis does during a monitoring window or canary pause.
//
// The figures for the README come from run.mjs (beside HAProxy); this one is for A/B of router changes.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const MAIN = join(here, '../../dist/cli/main.js');
const DURATION = Number(process.env.DURATION ?? 8);
const RATE = Number(process.env.RATE ?? 5000);
const REPS = Number(process.env.REPS ?? 3);
const NODE_ARGS = (process.env.ROUTER_NODE_ARGS ?? '').split(' ').filter(Boolean);
const dir = mkdtempSync(join(tmpdir(), 'bulwark-bench-ab-'));
const children = [];

function freePort() {
  return new Promise((resolve) => {
    const tryOne = () => {
      const port = 15000 + Math.floor(Math.random() * 17000);
      const s = createServer();
      s.once('error', tryOne);
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(port)));
    };
    tryOne();
  });
}

function start(args, env, ready, onLine) {
  return new Promise((resolve, reject) => {
    const pin = process.env.SERVER_CPU
      ? ['taskset', ['-c', process.env.SERVER_CPU, process.execPath, ...args]]
      : [process.execPath, args];
    const child = spawn(pin[0], pin[1], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    children.push(child);
    let out = '';
    let ok = false;
    const on = (d) => {
      out += d;
      for (const line of String(d).split('\n')) if (line) onLine?.(line);
      if (!ok && ready.test(out)) {
        ok = true;
        resolve(child);
      }
    };
    child.stdout.on('data', on);
    child.stderr.on('data', on);
    child.once('exit', (code) => reject(new Error(`${args.join(' ')} exited ${code}: ${out}`)));
    setTimeout(() => reject(new Error(`not ready: ${out}`)), 15_000).unref();
  });
}

async function fixedRate(url, name, admin) {
  const summary = join(dir, `${name}.json`);
  const gen = spawn(
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
    { stdio: 'ignore', env: { ...process.env, RATE: String(RATE), DURATION: `${DURATION}s` } },
  );
  const done = new Promise((r) => gen.once('exit', r));
  let polls = 0;
  if (admin && process.env.ANALYSIS) {
    const every = Number(process.env.ANALYSIS_EVERY_MS ?? 2000);
    let stop = false;
    done.then(() => {
      stop = true;
    });
    while (!stop) {
      await Promise.race([done, new Promise((r) => setTimeout(r, every))]);
      if (stop) break;
      for (const slot of ['blue', 'green']) {
        const r = await fetch(`${admin}/v1/slots/${slot}/window?since=${Date.now() - 60_000}`, {
          headers: { authorization: 'Bearer tok' },
        });
        await r.text();
        polls++;
      }
    }
  }
  await done;
  const s = JSON.parse(readFileSync(summary, 'utf8'));
  return {
    polls,
    p50: s.totals.latencyMs.p50,
    p95: s.totals.latencyMs.p95,
    p99: s.totals.latencyMs.p99,
    max: s.totals.latencyMs.max,
    vus: s.vusMax,
    rps: s.totals.rps,
    failures: s.totals.failures,
  };
}

const median = (xs) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)] : Number.NaN;
};
const f = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');

try {
  const [bluePort, greenPort] = await Promise.all([freePort(), freePort()]);
  await start([join(here, 'upstream.mjs'), bluePort, 'blue'], {}, /listening/);
  await start([join(here, 'upstream.mjs'), greenPort, 'green'], {}, /listening/);
  const blue = `http://127.0.0.1:${bluePort}`;
  const green = `http://127.0.0.1:${greenPort}`;
  const targets = { direct: { url: blue } };
  const variants = {
    A: process.env.A_DIST,
    ...(process.env.B_DIST || process.env.A_DIST ? { B: process.env.B_DIST } : {}),
  };
  for (const [name, dist] of Object.entries(variants)) {
    const [p, a] = await Promise.all([freePort(), freePort()]);
    const probes = [];
    const env = { BENCH_PROBE: '1', ...(dist ? { BULWARK_DIST: dist } : {}) };
    const args =
      name === 'B' && process.env.B_NODE_ARGS ? process.env.B_NODE_ARGS.split(' ').filter(Boolean) : NODE_ARGS;
    const child = await start(
      [...args, join(here, 'embedded.mjs'), p, a, 'tok', blue, green],
      env,
      /listening router/,
      (line) => {
        if (line.startsWith('probe ')) probes.push(JSON.parse(line.slice(6)));
        else if (process.env.SHOW_ROUTER_OUTPUT) console.log(`[${name}] ${line}`);
      },
    );
    targets[name] = {
      url: `http://127.0.0.1:${p}`,
      admin: `http://127.0.0.1:${a}`,
      child,
      probes,
      dist: `${dist ?? 'dist/'}${args.length ? ` ${args.join(' ')}` : ''}`,
    };
  }
  const probe = async (t) => {
    const n = t.probes.length;
    t.child.kill('SIGUSR2');
    for (let i = 0; i < 100 && t.probes.length === n; i++) await new Promise((r) => setTimeout(r, 20));
    return t.probes[n];
  };
  // warm-up (JIT, connections), not recorded
  for (const [name, t] of Object.entries(targets)) {
    await fixedRate(t.url, `warm-${name}`, t.admin);
    if (t.child) await probe(t);
  }
  const res = Object.fromEntries(Object.keys(targets).map((k) => [k, []]));
  for (let rep = 0; rep < REPS; rep++) {
    // alternate the order so no variant always runs right after another
    const order = Object.keys(targets);
    if (rep % 2) order.reverse();
    for (const name of order) {
      const t = targets[name];
      const r = await fixedRate(t.url, `${name}-${rep}`, t.admin);
      if (t.child) r.probe = await probe(t);
      res[name].push(r);
      if (process.env.SHOW_PROBE) console.log(JSON.stringify(r.probe));
      const pr = r.probe;
      console.log(
        `rep ${rep} ${name}: p50 ${f(r.p50)} p95 ${f(r.p95)} p99 ${f(r.p99)} max ${f(r.max)} ms, ${f(r.rps, 0)}/s, vus ${r.vus}, failures ${r.failures}${r.polls ? `, ${r.polls} window calls` : ''}` +
          (pr
            ? `; router-side p99 ${pr.routerP99} max ${pr.routerMax} ms; eld p99 ${pr.eldP99} max ${pr.eldMax} ms, cpu ${f((pr.cpuMs / pr.requests) * 1000, 1)} ms/1k req (${f((pr.cpuMs / pr.wallMs) * 100, 0)} % of a core)`
            : ''),
      );
    }
  }
  const d = median(res.direct.map((r) => r.p99));
  console.log(`\nfixed ${RATE}/s x ${DURATION}s, ${REPS} reps, medians`);
  console.log(
    '| target | build | p50 ms | p99 ms | added p99 ms | router eld p99 ms | router cpu ms/1k req | failures |',
  );
  console.log('|---|---|---|---|---|---|---|---|');
  for (const [name, rs] of Object.entries(res)) {
    const p99 = median(rs.map((r) => r.p99));
    const pr = rs.map((r) => r.probe).filter(Boolean);
    console.log(
      `| ${name} | ${targets[name].dist ?? '-'} | ${f(median(rs.map((r) => r.p50)))} | ${f(p99)} | ${name === 'direct' ? '-' : f(p99 - d)} | ${pr.length ? f(median(pr.map((p) => p.eldP99))) : '-'} | ${pr.length ? `${f(median(pr.map((p) => (p.cpuMs / p.requests) * 1000)), 1)} (${f(median(pr.map((p) => (p.userMs / p.requests) * 1000)), 1)})` : '-'} | ${rs.reduce((n, r) => n + r.failures, 0)} |`,
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
  rmSync(dir, { recursive: true, force: true });
}
