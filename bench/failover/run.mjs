#!/usr/bin/env node
// bench/failover: write unavailability after kill -9 of the primary, Bulwark vs Patroni, in one run,
// plus acknowledged writes lost (async vs --sync) and the planned switchover gap.
//
//   npm run build && flock /tmp/bulwark-heavy.lock node bench/failover/run.mjs
//
// Env: REPS (3), TIGHT_REPS (2), SWITCHOVER_REPS (3), PATRONI_TIMINGS ("10,2,4"; add ";30,10,10" for
// Patroni's defaults), SKIP_PATRONI=1, INTERVAL_MS (100). Prints a markdown table and writes
// results.json into RESULTS_DIR (default: a temp folder). Must run as root (servers run as postgres).
import { execFileSync, spawn } from 'node:child_process';
import { chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '../..');
const dist = join(repo, 'dist');
const { initCluster, destroyCluster, clusterStatus, readHistory, createClusterPool } = await import(
  join(dist, 'cluster/index.js')
);
const { freePort } = await import(join(dist, 'lib/net.js'));
const { pgBinDir } = await import(join(dist, 'lib/postgres.js'));

const REPS = Number(process.env.REPS ?? 3);
const TIGHT_REPS = Number(process.env.TIGHT_REPS ?? 2);
const SWITCHOVER_REPS = Number(process.env.SWITCHOVER_REPS ?? 3);
const INTERVAL_MS = Number(process.env.INTERVAL_MS ?? 100);
const PATRONI_TIMINGS = (process.env.PATRONI_TIMINGS ?? '10,2,4').split(';').map((t) => t.split(',').map(Number));
const work = mkdtempSync(join(tmpdir(), 'bulwark-failover-bench-'));
chmodPg(work);
const resultsDir = process.env.RESULTS_DIR ?? work;
const results = [];
const children = new Set();
const log = (...a) => console.error(`[${new Date().toISOString().slice(11, 23)}]`, ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function chmodPg(path) {
  const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }));
  const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }));
  chownSync(path, uid, gid);
}

function procsOf(dataDir) {
  let pm;
  try {
    pm = Number(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  } catch {
    return [];
  }
  const out = [pm];
  for (const e of execFileSync('ps', ['-eo', 'pid=,ppid='], { encoding: 'utf8' }).trim().split('\n')) {
    const [pid, ppid] = e.trim().split(/\s+/).map(Number);
    if (ppid === pm) out.push(pid);
  }
  return out;
}
function killAll(pids) {
  for (const p of pids) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {}
  }
}

async function q(port, text, values) {
  const c = new pg.Client({
    host: '127.0.0.1',
    port,
    user: 'postgres',
    database: 'postgres',
    connectionTimeoutMillis: 2000,
  });
  c.on('error', () => {});
  await c.connect();
  try {
    return (await c.query(text, values)).rows;
  } finally {
    await c.end().catch(() => {});
  }
}

// ------------------------------------------------------------------------------ the writer
// The same client for both managers: it writes to whichever node says pg_is_in_recovery() = false,
// one INSERT per tick (or back to back when tight), and logs every attempt.
function startWriter(ports, runId, { tight = false } = {}) {
  const attempts = [];
  let stop = false;
  let client = null;
  let node = null;
  const find = async () => {
    for (const port of ports) {
      const c = new pg.Client({
        host: '127.0.0.1',
        port,
        user: 'postgres',
        database: 'postgres',
        connectionTimeoutMillis: 500,
        query_timeout: 2000,
      });
      c.on('error', () => {});
      try {
        await c.connect();
        const r = await c.query('SELECT pg_is_in_recovery() AS r');
        if (!r.rows[0].r) return [c, port];
      } catch {}
      c.end().catch(() => {});
    }
    return [null, null];
  };
  const done = (async () => {
    let id = 0;
    while (!stop) {
      const tick = Date.now();
      if (!client) [client, node] = await find();
      if (client) {
        id++;
        const t = Date.now();
        try {
          await client.query('INSERT INTO bench(run_id, c) VALUES ($1, $2)', [runId, id]);
          attempts.push({ t: Date.now(), sent: t, id, ok: true, node });
        } catch (err) {
          attempts.push({ t: Date.now(), sent: t, id, ok: false, node, err: String(err.code ?? err.message) });
          client.end().catch(() => {});
          client = null;
        }
      }
      const wait = tight && client ? 0 : Math.max(tight ? 10 : 0, INTERVAL_MS - (Date.now() - tick));
      if (wait) await sleep(wait);
    }
    client?.end().catch(() => {});
  })();
  return {
    attempts,
    okOn: (port, after = 0) => attempts.filter((a) => a.ok && a.node === port && a.t > after),
    async stop() {
      stop = true;
      await done;
    },
  };
}

// The same schedule through Bulwark's routing pool following the monitor: the gap an application sees.
function startPoolWriter(pool, runId) {
  const attempts = [];
  let stop = false;
  const done = (async () => {
    let id = 0;
    while (!stop) {
      const tick = Date.now();
      id++;
      const t = Date.now();
      try {
        const r = await pool.query(
          'INSERT INTO bench(run_id, c) VALUES ($1, $2) RETURNING inet_server_port() AS port',
          [runId, id],
        );
        attempts.push({ t: Date.now(), sent: t, id, ok: true, node: r.rows[0].port });
      } catch (err) {
        attempts.push({ t: Date.now(), sent: t, id, ok: false, node: null, err: String(err.code ?? err.message) });
      }
      const wait = INTERVAL_MS - (Date.now() - tick);
      if (wait > 0) await sleep(wait);
    }
  })();
  return {
    attempts,
    okOn: (port, after = 0) => attempts.filter((a) => a.ok && a.node === port && a.t > after),
    async stop() {
      stop = true;
      await done;
    },
  };
}

function analyse(w, oldPort, killAt) {
  const okOld = w.attempts.filter((a) => a.ok && a.node === oldPort);
  const okNew = w.attempts.filter((a) => a.ok && a.node !== oldPort && a.t > killAt);
  const last = okOld.at(-1)?.t ?? null;
  const first = okNew[0] ?? null;
  return {
    gapS: last && first ? (first.t - last) / 1000 : null,
    eventToFirstWriteS: first ? (first.t - killAt) / 1000 : null,
    newPrimaryPort: first?.node ?? null,
    acked: w.attempts.filter((a) => a.ok).length,
    failedAttempts: w.attempts.filter((a) => !a.ok).length,
  };
}

async function lostAcked(w, runId, port) {
  const have = new Set((await q(port, 'SELECT c FROM bench WHERE run_id = $1', [runId])).map((r) => r.c));
  return w.attempts.filter((a) => a.ok && !have.has(a.id)).length;
}

async function waitUntil(what, fn, timeoutMs = 120_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch {}
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await sleep(200);
  }
}

// ------------------------------------------------------------------------------ Bulwark
async function bulwarkPhase({ sync, tightReps, reps, switchovers, replicas = 1, timing = ['1s', 3], poolReps = 0 }) {
  const label = `${sync ? 'sync' : 'async'}-${replicas + 1}n-${timing.join('x')}`;
  const dir = join(work, `bulwark-${label}`);
  const spec = await initCluster({ dir, replicas, sync });
  const ports = spec.nodes.map((n) => n.port);
  const portOf = (name) => spec.nodes.find((n) => n.name === name).port;
  const nameOf = (port) => spec.nodes.find((n) => n.port === port).name;
  await q(ports[0], 'CREATE TABLE bench(run_id text, c int, t timestamptz DEFAULT clock_timestamp())');
  const httpPort = await freePort({ below: 32768 });
  const mon = spawn(
    process.execPath,
    [
      join(dist, 'cli/main.js'),
      'cluster',
      'monitor',
      '--dir',
      dir,
      '--http-port',
      String(httpPort),
      '--interval',
      timing[0],
      '--failures',
      String(timing[1]),
    ],
    {
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  children.add(mon);
  const monLog = [];
  mon.stderr.setEncoding('utf8').on('data', (d) => monLog.push(d));
  const healthy = () =>
    waitUntil('bulwark cluster healthy', async () => {
      const s = await clusterStatus(dir, 1500);
      const p = s.nodes.filter((n) => n.role === 'primary');
      return p.length === 1 &&
        s.nodes.every((n) => n.role === 'primary' || n.streaming) &&
        (!sync || s.nodes.some((n) => n.syncState === 'quorum' || n.syncState === 'sync'))
        ? p[0].name
        : null;
    });
  try {
    const kinds = [...Array(reps).fill('100ms'), ...Array(tightReps).fill('tight'), ...Array(poolReps).fill('pool')];
    const pool = poolReps
      ? createClusterPool({
          monitor: `http://127.0.0.1:${httpPort}`,
          user: 'postgres',
          database: 'postgres',
          writeTimeoutMillis: 60_000,
        })
      : null;
    for (const [i, writer] of kinds.entries()) {
      const primary = await healthy();
      const oldPort = portOf(primary);
      const runId = `bulwark-${label}-${writer}-${i}`;
      const w =
        writer === 'pool' ? startPoolWriter(pool, runId) : startWriter(ports, runId, { tight: writer === 'tight' });
      await sleep(2000 + Math.random() * 1000); // random phase against the probe interval
      const killAt = Date.now();
      killAll(procsOf(join(dir, 'nodes', primary)));
      await waitUntil(
        'writes on the new primary',
        async () => {
          const ok = w.attempts.filter((x) => x.ok && x.node !== oldPort && x.t > killAt);
          return ok.length > 0 && Date.now() - ok[0].t > 1500;
        },
        60_000,
      );
      await w.stop();
      const a = analyse(w, oldPort, killAt);
      const lost = await lostAcked(w, runId, a.newPrimaryPort);
      const h = readHistory(dir)
        .filter((e) => e.kind === 'failover')
        .at(-1);
      const t0 = Date.now();
      await healthy();
      const row = {
        manager: 'bulwark',
        kind: 'failover',
        repl: sync ? 'sync' : 'async',
        writer: writer === 'pool' ? '100ms via createClusterPool' : writer,
        timing: `${timing[0]} x ${timing[1]}${timing[0] === '1s' && timing[1] === 3 ? ' (defaults)' : ''}`,
        nodes: replicas + 1,
        ...a,
        lost,
        detectS: h ? (Date.parse(h.decidedAt) - killAt) / 1000 : null,
        promoteS: h ? h.promoteMs / 1000 : null,
        rejoinS: (Date.now() - t0) / 1000,
        from: primary,
        to: nameOf(a.newPrimaryPort),
        loadavg: loadavg()[0],
      };
      results.push(row);
      log(JSON.stringify(row));
    }
    await pool?.end();
    for (let i = 0; i < switchovers; i++) {
      const primary = await healthy();
      const target = spec.nodes.find((n) => n.name !== primary).name;
      const runId = `bulwark-${label}-switchover-${i}`;
      const w = startWriter(ports, runId);
      await sleep(2000);
      const at = Date.now();
      const r = spawn(
        process.execPath,
        [join(dist, 'cli/main.js'), 'cluster', 'switchover', '--dir', dir, '--to', target, '--json'],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      let out = '';
      r.stdout.on('data', (d) => (out += d));
      await new Promise((res) => r.once('exit', res));
      const doneAt = Date.now();
      await waitUntil('writes after switchover', async () => w.okOn(portOf(target), at).length > 10, 30_000);
      await w.stop();
      const a = analyse(w, portOf(primary), at);
      const lost = await lostAcked(w, runId, portOf(target));
      const row = {
        manager: 'bulwark',
        kind: 'switchover',
        repl: sync ? 'sync' : 'async',
        writer: '100ms',
        ...a,
        lost,
        commandS: (doneAt - at) / 1000,
        from: primary,
        to: target,
        loadavg: loadavg()[0],
      };
      results.push(row);
      log(JSON.stringify(row));
    }
  } finally {
    mon.kill('SIGTERM');
    await new Promise((r) => mon.once('exit', r));
    children.delete(mon);
    writeFileSync(join(resultsDir, `monitor-${label}.log`), monLog.join(''));
    await destroyCluster(dir);
  }
}

// ------------------------------------------------------------------------------ Patroni
async function startEtcd() {
  const client = await freePort({ below: 32768 });
  const peer = await freePort({ below: 32768 });
  const dataDir = join(work, 'etcd');
  const p = spawn(
    'etcd',
    [
      '--name',
      'bench',
      '--data-dir',
      dataDir,
      '--listen-client-urls',
      `http://127.0.0.1:${client}`,
      '--advertise-client-urls',
      `http://127.0.0.1:${client}`,
      '--listen-peer-urls',
      `http://127.0.0.1:${peer}`,
      '--initial-advertise-peer-urls',
      `http://127.0.0.1:${peer}`,
      '--initial-cluster',
      `bench=http://127.0.0.1:${peer}`,
      '--log-level',
      'error',
    ],
    { stdio: 'ignore' },
  );
  children.add(p);
  await waitUntil(
    'etcd',
    async () => (await (await fetch(`http://127.0.0.1:${client}/health`)).json()).health === 'true',
    30_000,
  );
  return { port: client, proc: p };
}

async function patroniPhase(etcd, [ttl, loopWait, retry], { reps, switchovers }) {
  const scope = `pat-${ttl}-${loopWait}`;
  const dir = join(work, scope);
  mkdirSync(dir);
  chmodPg(dir);
  const tmpl = readFileSync(join(here, 'patroni.yml.tmpl'), 'utf8');
  const members = [];
  for (let i = 1; i <= 2; i++) {
    const m = {
      name: `${scope}-n${i}`,
      pgPort: await freePort({ below: 32768 }),
      restPort: await freePort({ below: 32768 }),
    };
    m.dataDir = join(dir, m.name);
    m.config = join(dir, `${m.name}.yml`);
    m.log = join(dir, `${m.name}.log`);
    const vars = {
      SCOPE: scope,
      NAME: m.name,
      REST_PORT: m.restPort,
      ETCD_PORT: etcd.port,
      TTL: ttl,
      LOOP_WAIT: loopWait,
      RETRY_TIMEOUT: retry,
      PG_PORT: m.pgPort,
      DATA_DIR: m.dataDir,
      PG_BIN: pgBinDir(),
      WORK: dir,
    };
    writeFileSync(
      m.config,
      tmpl.replace(/\{\{(\w+)\}\}/g, (_, k) => String(vars[k])),
    );
    chmodPg(m.config);
    members.push(m);
  }
  const start = (m) => {
    const { openSync } = awaitFs;
    const fd = openSync(m.log, 'a');
    m.proc = spawn('runuser', ['-u', 'postgres', '--', 'patroni', m.config], {
      stdio: ['ignore', fd, fd],
      env: { ...process.env, TZ: 'UTC' },
    });
    children.add(m.proc);
  };
  const stopMember = async (m) => {
    if (!m.proc || m.proc.exitCode !== null || m.proc.signalCode) return;
    m.proc.kill('SIGTERM');
    await Promise.race([new Promise((r) => m.proc.once('exit', r)), sleep(30_000)]);
    children.delete(m.proc);
  };
  const leader = async () => {
    for (const m of members) {
      try {
        if (
          (await fetch(`http://127.0.0.1:${m.restPort}/primary`, { signal: AbortSignal.timeout(1000) })).status === 200
        )
          return m;
      } catch {}
    }
    return null;
  };
  // healthy = one leader and the other streaming (checked in pg_stat_replication, not Patroni's word)
  const healthy = () =>
    waitUntil(
      'patroni healthy',
      async () => {
        const l = await leader();
        if (!l) return null;
        const r = await q(l.pgPort, "SELECT count(*)::int AS n FROM pg_stat_replication WHERE state = 'streaming'");
        return r[0].n === 1 ? l : null;
      },
      180_000,
    );
  const ports = members.map((m) => m.pgPort);
  const timing = `ttl ${ttl} / loop_wait ${loopWait} / retry ${retry}`;
  try {
    start(members[0]);
    await waitUntil('patroni bootstrap', async () => (await leader()) === members[0], 120_000);
    await q(members[0].pgPort, 'CREATE TABLE bench(run_id text, c int, t timestamptz DEFAULT clock_timestamp())');
    start(members[1]);
    for (let i = 0; i < reps; i++) {
      const l = await healthy();
      const runId = `${scope}-failover-${i}`;
      const w = startWriter(ports, runId);
      await sleep(2000 + Math.random() * loopWait * 1000);
      // crash the whole node: its Patroni and every postgres process
      const killAt = Date.now();
      killAll([l.proc.pid, ...procsOf(l.dataDir)]);
      try {
        execFileSync('pkill', ['-KILL', '-f', `patroni ${l.config}`]);
      } catch {}
      const other = members.find((m) => m !== l);
      await waitUntil(
        'writes on the new leader',
        async () => {
          const ok = w.okOn(other.pgPort, killAt);
          return ok.length > 0 && Date.now() - ok[0].t > 1500;
        },
        ttl * 1000 + 60_000,
      );
      await w.stop();
      const a = analyse(w, l.pgPort, killAt);
      const lost = await lostAcked(w, runId, other.pgPort);
      const t0 = Date.now();
      start(l);
      await healthy();
      const row = {
        manager: 'patroni',
        kind: 'failover',
        repl: 'async',
        writer: '100ms',
        timing,
        ...a,
        lost,
        rejoinS: (Date.now() - t0) / 1000,
        from: l.name,
        to: other.name,
        loadavg: loadavg()[0],
      };
      results.push(row);
      log(JSON.stringify(row));
    }
    for (let i = 0; i < switchovers; i++) {
      const l = await healthy();
      const other = members.find((m) => m !== l);
      const runId = `${scope}-switchover-${i}`;
      const w = startWriter(ports, runId);
      await sleep(2000);
      const at = Date.now();
      try {
        execFileSync(
          'patronictl',
          ['-c', l.config, 'switchover', '--leader', l.name, '--candidate', other.name, '--force'],
          { stdio: 'ignore' },
        );
      } catch {}
      const doneAt = Date.now();
      await waitUntil('writes after switchover', async () => w.okOn(other.pgPort, at).length > 10, 60_000);
      await w.stop();
      const a = analyse(w, l.pgPort, at);
      const lost = await lostAcked(w, runId, other.pgPort);
      const row = {
        manager: 'patroni',
        kind: 'switchover',
        repl: 'async',
        writer: '100ms',
        timing,
        ...a,
        lost,
        commandS: (doneAt - at) / 1000,
        from: l.name,
        to: other.name,
        loadavg: loadavg()[0],
      };
      results.push(row);
      log(JSON.stringify(row));
    }
  } finally {
    for (const m of members) await stopMember(m);
    for (const m of members) killAll(procsOf(m.dataDir));
  }
}
const awaitFs = await import('node:fs');

// ------------------------------------------------------------------------------ report
function median(xs) {
  const s = xs.filter((x) => x !== null).sort((a, b) => a - b);
  if (!s.length) return null;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
const fmt = (xs) => {
  const v = xs.filter((x) => x !== null);
  return v.length ? `${median(v).toFixed(2)} (${Math.min(...v).toFixed(2)}-${Math.max(...v).toFixed(2)})` : '-';
};

function report() {
  const groups = new Map();
  for (const r of results) {
    const key = [r.manager, r.kind, r.repl, r.writer, r.timing ?? '', r.nodes ?? 2].join('|');
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(r);
  }
  const lines = [
    '| manager | kind | nodes | repl | writer | timing | reps | write gap s | event -> first write s | lost acked (per rep) | failed attempts (per rep) |',
    '|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const [key, rows] of groups) {
    const [manager, kind, repl, writer, timing, nodes] = key.split('|');
    lines.push(
      `| ${manager} | ${kind} | ${nodes} | ${repl} | ${writer} | ${timing || '-'} | ${rows.length} | ${fmt(rows.map((r) => r.gapS))} | ${fmt(rows.map((r) => r.eventToFirstWriteS))} | ${rows.map((r) => r.lost).join(',')} | ${rows.map((r) => r.failedAttempts).join(',')} |`,
    );
  }
  const gap = (m, k, extra = () => true) =>
    median(
      results
        .filter((r) => r.manager === m && r.kind === k && r.writer === '100ms' && r.repl === 'async' && extra(r))
        .map((r) => r.gapS),
    );
  const bf = gap('bulwark', 'failover', (r) => r.timing.endsWith('(defaults)'));
  const bs = gap('bulwark', 'switchover');
  for (const [ttl, lw, rt] of PATRONI_TIMINGS) {
    const t = `ttl ${ttl} / loop_wait ${lw} / retry ${rt}`;
    const pf = gap('patroni', 'failover', (r) => r.timing === t);
    const ps = gap('patroni', 'switchover', (r) => r.timing === t);
    if (bf && pf)
      lines.push(
        '',
        `Failover write gap, Patroni (${t}) / Bulwark (defaults): ${(pf / bf).toFixed(1)}x (${pf.toFixed(2)} s vs ${bf.toFixed(2)} s)`,
      );
    if (bs && ps)
      lines.push(
        `Switchover write gap, Patroni (${t}) / Bulwark: ${(ps / bs).toFixed(1)}x (${ps.toFixed(2)} s vs ${bs.toFixed(2)} s)`,
      );
  }
  lines.push(
    '',
    `loadavg (1 min) during the run: ${Math.min(...results.map((r) => r.loadavg)).toFixed(2)}-${Math.max(...results.map((r) => r.loadavg)).toFixed(2)}`,
  );
  return lines.join('\n');
}

async function cleanup() {
  for (const c of children) {
    try {
      c.kill('SIGKILL');
    } catch {}
  }
}
process.on('SIGINT', async () => {
  await cleanup();
  process.exit(130);
});

const hardLimit = setTimeout(async () => {
  log('hard time limit reached (20 min): stopping');
  await cleanup();
  process.exit(1);
}, 20 * 60_000);
try {
  log(`work dir ${work}`);
  // 2 nodes, as the Patroni runs; then the faster timing; then --sync on 3 nodes (with 2 nodes the
  // new primary has no standby to confirm commits until the old one rejoins: writes wait for that).
  await bulwarkPhase({ sync: false, reps: REPS, tightReps: TIGHT_REPS, switchovers: SWITCHOVER_REPS, poolReps: REPS });
  if (process.env.SKIP_TUNED !== '1')
    await bulwarkPhase({ sync: false, reps: REPS, tightReps: 0, switchovers: 0, timing: ['500ms', 3] });
  await bulwarkPhase({ sync: false, reps: 0, tightReps: TIGHT_REPS, switchovers: 0, replicas: 2 });
  await bulwarkPhase({ sync: true, reps: 0, tightReps: TIGHT_REPS, switchovers: 0, replicas: 2 });
  if (process.env.SKIP_PATRONI !== '1') {
    const etcd = await startEtcd();
    for (const timing of PATRONI_TIMINGS)
      await patroniPhase(etcd, timing, { reps: REPS, switchovers: SWITCHOVER_REPS });
    etcd.proc.kill('SIGTERM');
  }
  const table = report();
  writeFileSync(join(resultsDir, 'results.json'), JSON.stringify(results, null, 2));
  console.log(table);
  log(`results: ${join(resultsDir, 'results.json')}`);
} finally {
  clearTimeout(hardLimit);
  await cleanup();
  if (!process.env.KEEP_WORK && resultsDir !== work) rmSync(work, { recursive: true, force: true });
}
