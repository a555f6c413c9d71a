#!/usr/bin/env node
// bench/failover multi-host mode: Bulwark's node agent and Patroni, each with one agent per "host"
// (a network namespace with its own etcd member and PostgreSQL 15), in the same run.
// Scenarios: kill -9 of the primary's PostgreSQL, and a network partition of the primary's host.
// Figures: write gap (last acknowledged write before the event -> first after, from a writer outside
// the hosts), how long the isolated old primary kept accepting writes (watchers inside every host),
// split-brain (overlapping writable periods of two hosts). Root only (ip netns); see README.md.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  appendFileSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '../..');
const require = createRequire(join(repo, 'package.json'));
const pg = require('pg');
const { pgBinDir } = await import(join(repo, 'dist/lib/postgres.js'));

const REPS = Number(process.env.REPS ?? 2);
const TTL = Number(process.env.TTL ?? 10);
const PATRONI_TIMING = (process.env.PATRONI_TIMING ?? `${TTL},2,4`).split(',').map(Number);
const MANAGERS = (process.env.MANAGERS ?? 'bulwark,patroni').split(',');
const SCENARIOS = (process.env.SCENARIOS ?? 'kill9,partition').split(',');
const log = (...a) => console.error(`[${new Date().toISOString().slice(11, 23)}]`, ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
if (process.getuid?.() !== 0) {
  console.error('bench/failover/hosts.mjs needs root (network namespaces); skipped');
  process.exit(0);
}
const pgUid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
const pgGid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
const chownPg = (p) => chownSync(p, pgUid, pgGid);

// ---- network: 3 namespaces on a bridge, and one veth for us (same layout as test/harness/netns.ts)
const id = randomBytes(2).toString('hex');
const work = mkdtempSync(join(tmpdir(), `bulwark-hosts-bench-${id}-`));
chownPg(work);
const routes = execFileSync('ip', ['-4', 'route', 'show', 'table', 'all'], { encoding: 'utf8' });
let subnet;
do subnet = `10.251.${1 + Math.floor(Math.random() * 254)}`;
while (routes.includes(`${subnet}.`));
const brNs = `bw${id}-br`;
const hostVeth = `bw${id}h`;
const namespaces = [];
const ip = (args) => execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
const nsPids = (ns) => {
  const r = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.split('\n').filter(Boolean).map(Number) : [];
};
const killPids = (pids) => {
  for (const p of pids) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {}
  }
};
let cleaned = false;
function cleanup() {
  if (cleaned) return;
  cleaned = true;
  for (const ns of namespaces) killPids(nsPids(ns));
  for (let i = 0; i < 50 && namespaces.some((ns) => nsPids(ns).length); i++) spawnSync('sleep', ['0.1']);
  for (const ns of namespaces) spawnSync('ip', ['netns', 'del', ns]);
  spawnSync('ip', ['link', 'del', hostVeth]);
  if (!process.env.KEEP_WORK) rmSync(work, { recursive: true, force: true });
}
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(1));
const hardLimit = setTimeout(() => {
  console.error('hard limit (25 min) reached');
  process.exit(1);
}, 25 * 60_000);
hardLimit.unref();

ip(['netns', 'add', brNs]);
namespaces.push(brNs);
ip(['-n', brNs, 'link', 'add', 'br0', 'type', 'bridge']);
ip(['-n', brNs, 'link', 'set', 'br0', 'up']);
const hosts = [];
for (let i = 1; i <= 3; i++) {
  const ns = `bw${id}-n${i}`;
  const veth = `bw${id}n${i}`;
  ip(['netns', 'add', ns]);
  namespaces.push(ns);
  ip(['link', 'add', veth, 'type', 'veth', 'peer', 'name', `${veth}b`]);
  ip(['link', 'set', veth, 'netns', ns]);
  ip(['link', 'set', `${veth}b`, 'netns', brNs]);
  ip(['-n', brNs, 'link', 'set', `${veth}b`, 'master', 'br0', 'up']);
  ip(['-n', ns, 'addr', 'add', `${subnet}.${i}/24`, 'dev', veth]);
  ip(['-n', ns, 'link', 'set', veth, 'up']);
  ip(['-n', ns, 'link', 'set', 'lo', 'up']);
  hosts.push({ name: `n${i}`, ns, addr: `${subnet}.${i}`, port: `${veth}b` });
}
ip(['link', 'add', hostVeth, 'type', 'veth', 'peer', 'name', `${hostVeth}b`]);
ip(['link', 'set', `${hostVeth}b`, 'netns', brNs]);
ip(['-n', brNs, 'link', 'set', `${hostVeth}b`, 'master', 'br0', 'up']);
ip(['addr', 'add', `${subnet}.200/24`, 'dev', hostVeth]);
ip(['link', 'set', hostVeth, 'up']);
const partition = (h) => ip(['-n', brNs, 'link', 'set', h.port, 'down']);
const heal = (h) => ip(['-n', brNs, 'link', 'set', h.port, 'up']);
const spawnIn = (h, cmd, args, file, env = {}) => {
  const fd = openSync(file, 'a');
  return spawn('ip', ['netns', 'exec', h.ns, cmd, ...args], {
    stdio: ['ignore', fd, fd],
    env: { ...process.env, TZ: 'UTC', ...env },
  });
};

// ---- etcd: one member per host, fresh for each manager
function startEtcd(tag) {
  const peers = hosts.map((h) => `${h.name}=http://${h.addr}:2380`).join(',');
  return hosts.map((h) =>
    spawnIn(
      h,
      'etcd',
      [
        '--name',
        h.name,
        '--data-dir',
        join(work, `${tag}-etcd-${h.name}`),
        '--listen-client-urls',
        `http://${h.addr}:2379`,
        '--advertise-client-urls',
        `http://${h.addr}:2379`,
        '--listen-peer-urls',
        `http://${h.addr}:2380`,
        '--initial-advertise-peer-urls',
        `http://${h.addr}:2380`,
        '--initial-cluster',
        peers,
        '--initial-cluster-state',
        'new',
        '--initial-cluster-token',
        `${tag}-${id}`,
        '--log-level',
        'error',
      ],
      join(work, `${tag}-etcd-${h.name}.log`),
    ),
  );
}
async function waitUntil(what, fn, timeoutMs = 120_000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch {}
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}
const etcdUrls = hosts.map((h) => `http://${h.addr}:2379`);

async function q(h, text, values, timeout = 1000) {
  const c = new pg.Client({
    host: h.addr,
    port: 5432,
    user: 'postgres',
    database: 'postgres',
    password: 'bench',
    connectionTimeoutMillis: timeout,
    query_timeout: timeout,
  });
  c.on('error', () => {});
  try {
    await c.connect();
    return (await c.query(text, values)).rows;
  } finally {
    c.end().catch(() => {});
  }
}
async function primaries() {
  const r = await Promise.all(
    hosts.map((h) =>
      q(h, 'SELECT pg_is_in_recovery() AS r', [], 700).then(
        (x) => (x[0].r ? null : h),
        () => null,
      ),
    ),
  );
  return r.filter(Boolean);
}
async function healthy() {
  return waitUntil(
    'one primary and two streaming replicas',
    async () => {
      const p = await primaries();
      if (p.length !== 1) return null;
      const r = await q(p[0], "SELECT count(*)::int AS n FROM pg_stat_replication WHERE state = 'streaming'");
      return r[0].n === 2 ? p[0] : null;
    },
    180_000,
  );
}

// ---- the writer (outside the hosts) and the watchers (inside each host)
function startWriter(runId) {
  const acks = [];
  let stop = false;
  let target = null;
  let seq = 0;
  const done = (async () => {
    while (!stop) {
      const c = ++seq;
      const t0 = Date.now();
      try {
        if (!target) target = (await primaries())[0] ?? null;
        if (target) {
          await q(target, 'INSERT INTO bench(run_id, c) VALUES ($1, $2)', [runId, c], 1000);
          acks.push({ c, at: Date.now(), node: target.name });
        }
      } catch {
        target = null;
      }
      await sleep(Math.max(0, 100 - (Date.now() - t0)));
    }
  })();
  return {
    acks,
    stop: async () => {
      stop = true;
      await done;
    },
  };
}
const WATCHER = `
const { Client } = require('pg'); const fs = require('fs');
const [host, node, out] = process.argv.slice(2); let client = null;
(async () => { for (;;) { const sent = Date.now();
  try { if (!client) { client = new Client({ host, port: 5432, user: 'postgres', database: 'postgres', password: 'bench',
      connectionTimeoutMillis: 1000, query_timeout: 1000 }); client.on('error', () => {}); await client.connect(); }
    await client.query('INSERT INTO watch(node, sent_ms) VALUES ($1, $2)', [node, sent]);
    fs.appendFileSync(out, sent + ' ' + Date.now() + '\\n');
  } catch (err) { if (err && err.code !== '25006' && err.code !== '42P01') { client && client.end().catch(() => {}); client = null; } }
  await new Promise((r) => setTimeout(r, 50)); } })();`;
writeFileSync(join(work, 'watcher.cjs'), WATCHER);
function startWatchers(tag) {
  return hosts.map((h) =>
    spawnIn(
      h,
      process.execPath,
      [join(work, 'watcher.cjs'), h.addr, h.name, join(work, `${tag}-watch-${h.name}.log`)],
      join(work, `${tag}-watch-${h.name}.err`),
      { NODE_PATH: join(repo, 'node_modules') },
    ),
  );
}
function writablePeriods(tag) {
  const periods = [];
  for (const h of hosts) {
    const f = join(work, `${tag}-watch-${h.name}.log`);
    if (!existsSync(f)) continue;
    let cur = null;
    for (const l of readFileSync(f, 'utf8').trim().split('\n').filter(Boolean)) {
      const [sent, ack] = l.split(' ').map(Number);
      if (cur && sent - cur.to <= 1000) cur.to = ack;
      else {
        if (cur) periods.push(cur);
        cur = { node: h.name, from: sent, to: ack };
      }
    }
    if (cur) periods.push(cur);
  }
  return periods;
}
function overlapMs(tag, sinceMs) {
  const p = writablePeriods(tag).filter((x) => x.to >= sinceMs);
  let worst = 0;
  for (const a of p)
    for (const b of p) if (a.node < b.node) worst = Math.max(worst, Math.min(a.to, b.to) - Math.max(a.from, b.from));
  return worst;
}
/** Last acknowledged watcher commit on `node` (its own host) after `since`. */
function lastLocalAck(tag, node, since) {
  const f = join(work, `${tag}-watch-${node}.log`);
  const acks = readFileSync(f, 'utf8')
    .trim()
    .split('\n')
    .map((l) => Number(l.split(' ')[1]))
    .filter((t) => t >= since);
  return acks.length ? Math.max(...acks) : null;
}

// ---- managers
function startBulwark(h) {
  mkdirSync(join(work, 'bw', h.name), { recursive: true });
  chownPg(join(work, 'bw'));
  chownPg(join(work, 'bw', h.name));
  return spawnIn(
    h,
    'runuser',
    [
      '-u',
      'postgres',
      '--',
      process.execPath,
      join(repo, 'dist/cli/main.js'),
      'cluster',
      'agent',
      '--name',
      h.name,
      '--data-dir',
      join(work, 'bw', h.name, 'data'),
      '--host',
      h.addr,
      '--etcd',
      etcdUrls.join(','),
      '--scope',
      'bench',
      '--api',
      `${h.addr}:8008`,
      '--ttl',
      String(TTL),
      '--allow',
      `${subnet}.0/24`,
      '--password-file',
      join(work, 'pgpass'),
      '--log-format',
      'text',
    ],
    join(work, `bulwark-agent-${h.name}.log`),
  );
}
function startPatroni(h) {
  const [ttl, loopWait, retry] = PATRONI_TIMING;
  const dir = join(work, 'pat');
  mkdirSync(dir, { recursive: true });
  chownPg(dir);
  const cfg = join(dir, `${h.name}.yml`);
  // every host shares this file system: each PostgreSQL needs its own socket folder (same port 5432)
  mkdirSync(join(dir, `${h.name}-sock`), { recursive: true });
  chownPg(join(dir, `${h.name}-sock`));
  writeFileSync(
    cfg,
    `scope: bench
namespace: /bulwark-hosts-bench/
name: ${h.name}
log: { level: INFO, format: '%(asctime)s %(levelname)s: %(message)s' }
restapi: { listen: '${h.addr}:8008', connect_address: '${h.addr}:8008' }
etcd3: { hosts: [${hosts.map((x) => `'${x.addr}:2379'`).join(', ')}] }
watchdog: { mode: 'off' }
bootstrap:
  dcs:
    ttl: ${ttl}
    loop_wait: ${loopWait}
    retry_timeout: ${retry}
    maximum_lag_on_failover: 16777216
    postgresql: { use_pg_rewind: true, use_slots: true, parameters: { wal_keep_size: 256MB, wal_log_hints: 'on' } }
  initdb: [{ encoding: UTF8 }, { locale: C }]
  pg_hba:
  - local all all trust
  - host all all ${subnet}.0/24 scram-sha-256
  - host replication all ${subnet}.0/24 scram-sha-256
postgresql:
  listen: '${h.addr}:5432'
  connect_address: '${h.addr}:5432'
  data_dir: ${dir}/${h.name}-data
  bin_dir: ${pgBinDir()}
  pgpass: ${dir}/pgpass-${h.name}
  authentication:
    superuser: { username: postgres, password: bench }
    replication: { username: replicator, password: bench }
    rewind: { username: rewinder, password: bench }
  parameters: { unix_socket_directories: '${dir}/${h.name}-sock', shared_buffers: 32MB }
`,
  );
  chownPg(cfg);
  return spawnIn(h, 'runuser', ['-u', 'postgres', '--', 'patroni', cfg], join(work, `patroni-${h.name}.log`));
}
function pgPids(h) {
  // every postgres process in the host's namespace (postmaster and children)
  return nsPids(h.ns).filter((p) => {
    try {
      return readFileSync(`/proc/${p}/comm`, 'utf8').trim().startsWith('postgres');
    } catch {
      return false;
    }
  });
}

const results = [];
function gapOf(acks, at, oldNode) {
  const before = acks.filter((a) => a.at <= at);
  const after = acks.filter((a) => a.at > at);
  const last = before.at(-1);
  const first = oldNode ? (after.find((a) => a.node !== oldNode) ?? after[0]) : after[0];
  return last && first ? first.at - last.at : null;
}

async function runManager(manager) {
  const tag = manager;
  log(`${manager}: starting etcd, agents`);
  const etcd = startEtcd(tag);
  await waitUntil('etcd', async () => (await (await fetch(`${etcdUrls[0]}/health`)).json()).health === 'true', 60_000);
  const start = manager === 'bulwark' ? startBulwark : startPatroni;
  let agents = hosts.map((h) => start(h));
  let primary = await healthy();
  await q(primary, 'CREATE TABLE IF NOT EXISTS bench(run_id text, c int, t timestamptz DEFAULT clock_timestamp())');
  await q(primary, 'CREATE TABLE IF NOT EXISTS watch(node text, sent_ms bigint)');
  const watchers = startWatchers(tag);
  try {
    for (const scenario of SCENARIOS) {
      for (let i = 0; i < REPS; i++) {
        primary = await healthy();
        const w = startWriter(`${manager}-${scenario}-${i}`);
        await sleep(2000 + Math.random() * 2000);
        const at = Date.now();
        let row;
        if (scenario === 'kill9') {
          killPids(pgPids(primary));
          await waitUntil('writes after kill -9', async () => w.acks.some((a) => a.at > at), 120_000);
          await sleep(1000);
          await w.stop();
          row = {
            manager,
            scenario,
            rep: i,
            gapMs: gapOf(w.acks, at, null),
            newPrimary: w.acks.at(-1).node,
            oldPrimary: primary.name,
          };
        } else {
          partition(primary);
          await waitUntil(
            'writes on another host',
            async () => w.acks.some((a) => a.at > at && a.node !== primary.name),
            120_000,
          );
          await sleep(1000);
          await w.stop();
          const oldLast = lastLocalAck(tag, primary.name, at - 2000);
          heal(primary);
          const healedAt = Date.now();
          await healthy();
          row = {
            manager,
            scenario,
            rep: i,
            gapMs: gapOf(w.acks, at, primary.name),
            oldPrimary: primary.name,
            newPrimary: w.acks.at(-1).node,
            oldWritableAfterCutMs: oldLast ? oldLast - at : null,
            rejoinMs: Date.now() - healedAt,
          };
        }
        row.splitBrainMs = overlapMs(tag, at - 5000);
        row.load1 = Number(loadavg()[0].toFixed(2));
        results.push(row);
        appendFileSync(join(work, 'results.jsonl'), `${JSON.stringify(row)}\n`);
        log(JSON.stringify(row));
      }
    }
  } finally {
    for (const p of [...agents, ...watchers]) p.kill('SIGKILL');
    for (const h of hosts) killPids(pgPids(h));
    for (const p of etcd) p.kill('SIGKILL');
    await sleep(1000);
    agents = [];
  }
}

writeFileSync(join(work, 'pgpass'), '*:*:*:postgres:bench\n', { mode: 0o600 });
chownPg(join(work, 'pgpass'));
for (const m of MANAGERS) await runManager(m);

const median = (xs) => {
  const s = xs.filter((x) => x !== null && x !== undefined).sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)] : null;
};
const fmt = (xs) => {
  const v = xs.filter((x) => x !== null && x !== undefined);
  return v.length
    ? `${(median(v) / 1000).toFixed(2)} s (${(Math.min(...v) / 1000).toFixed(2)}-${(Math.max(...v) / 1000).toFixed(2)})`
    : '-';
};
console.log(
  `\nmulti-host failover (3 namespaces, etcd x3), Bulwark agent ttl ${TTL} loop 1s vs Patroni ttl/loop_wait/retry ${PATRONI_TIMING.join('/')}, ${REPS} reps; median (min-max)\n`,
);
console.log(
  '| manager | scenario | write gap | old primary writable after the cut | split-brain overlap (max) | rejoin after heal | load1 |',
);
console.log('|---|---|---|---|---|---|---|');
for (const m of MANAGERS)
  for (const s of SCENARIOS) {
    const rows = results.filter((r) => r.manager === m && r.scenario === s);
    console.log(
      `| ${m} | ${s} | ${fmt(rows.map((r) => r.gapMs))} | ${s === 'partition' ? fmt(rows.map((r) => r.oldWritableAfterCutMs)) : '-'} | ${Math.max(0, ...rows.map((r) => r.splitBrainMs))} ms | ${s === 'partition' ? fmt(rows.map((r) => r.rejoinMs)) : '-'} | ${median(rows.map((r) => r.load1))} |`,
    );
  }
console.log(
  `\nraw rows: ${join(work, 'results.jsonl')}${process.env.KEEP_WORK ? '' : ' (removed; KEEP_WORK=1 keeps it)'}`,
);
process.exit(0);
