import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { connect } from 'node:net';
import { request } from 'undici';
import { DeployError } from '../errors.js';
import { SlotMetrics } from '../metrics.js';
import { assertSafeBackends, assertSafeWeights, changeOrder } from '../safety.js';
import type { Backend, Router, RouterState, Slot, SlotWindow, Weights } from '../types.js';

export interface HaproxyRouterOptions {
  /** Runtime API socket (`stats socket PATH level admin`). */
  socket: string;
  backend: string;
  /** Server names pre-declared in the backend for each slot; instances are mapped onto them in order. */
  servers: Record<Slot, string[]>;
  frontendUrl?: string;
  /**
   * Where the driver receives HAProxy's per-request log (syslog over UDP on loopback) for latency
   * percentiles: haproxy.cfg has `log 127.0.0.1:PORT local0` and a log-format containing
   * `bulwark %b/%s %ST %Ta` (see HAPROXY_LOG_FORMAT). Without it, latency thresholds are inconclusive.
   */
  log?: { port: number; host?: string };
}

/** The fields the driver reads from each HAProxy log line: backend/server, status, total active time (ms). */
export const HAPROXY_LOG_FORMAT = 'bulwark %b/%s %ST %Ta';
const LOG_LINE = /bulwark (\S+)\/(\S+) (-?\d+) (-?\d+)/;

/** One HAProxy log line as the driver sees it, or undefined when the line is not in HAPROXY_LOG_FORMAT. */
export function parseHaproxyLogLine(
  line: string,
): { backend: string; server: string; status: number; totalMs: number } | undefined {
  const m = LOG_LINE.exec(line);
  if (!m) return undefined;
  return { backend: m[1]!, server: m[2]!, status: Number(m[3]), totalMs: Number(m[4]) };
}

/** Send one line to HAProxy's runtime API (non-interactive: HAProxy runs the `;`-separated commands, answers, closes). */
export function haproxyCommand(socket: string, line: string, timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = connect({ path: socket });
    let out = '';
    const timer = setTimeout(
      () => c.destroy(new Error(`HAProxy runtime API timed out after ${timeoutMs} ms`)),
      timeoutMs,
    );
    c.setEncoding('utf8');
    c.on('connect', () => c.write(`${line}\n`));
    c.on('data', (d: string) => {
      out += d;
    });
    c.on('end', () => {
      clearTimeout(timer);
      resolve(out);
    });
    c.on('error', (err) => {
      clearTimeout(timer);
      reject(
        new DeployError('BULWARK_E_DEPLOY_ROUTER', `HAProxy runtime API ${socket}: ${err.message}`, { cause: err }),
      );
    });
  });
}

// Replies to `set server`/`set weight` are empty on success, informational for an address change,
// and one of these on failure.
const FAILURE = /no such|unknown|require|invalid|error|failed|not found|cannot|can't|permission denied/i;

interface StatRow {
  [column: string]: string;
}

/** Parse `show stat` CSV into rows keyed by column name. */
export function parseShowStat(csv: string): StatRow[] {
  const lines = csv.split('\n').filter((l) => l.trim());
  const header = lines.find((l) => l.startsWith('# '));
  if (!header) return [];
  const cols = header.slice(2).split(',');
  return lines
    .filter((l) => !l.startsWith('#'))
    .map((l) => {
      const cells = l.split(',');
      const row: StatRow = {};
      cols.forEach((c, i) => {
        if (c) row[c] = cells[i] ?? '';
      });
      return row;
    });
}

interface CounterSample {
  at: number;
  byServer: Map<string, { requests: number; errors: number }>;
}

// HAProxy weights are 0..256; a slot's share is split evenly over its servers.
const WEIGHT_SCALE = 240;

/**
 * HAProxy driven through its runtime API: addresses, weights and state change at run time, never by a
 * reload (measured here: reloads broke keep-alive connections, the runtime API did not). Traffic
 * analysis reads `show stat` counters; HAProxy keeps only latency averages, so percentiles come from its
 * per-request log when `log` is configured (else latency thresholds are inconclusive, never pass).
 */
export class HaproxyRouter implements Router {
  readonly kind = 'haproxy';
  readonly frontendUrl?: string;
  private readonly samples: CounterSample[] = [];
  private logSocket?: Promise<UdpSocket>;
  private readonly logged: Record<Slot, SlotMetrics> = {
    blue: new SlotMetrics(15 * 60_000),
    green: new SlotMetrics(15 * 60_000),
  };
  private readonly slotOfServer = new Map<string, Slot>();

  constructor(private readonly opts: HaproxyRouterOptions) {
    this.frontendUrl = opts.frontendUrl;
    for (const slot of ['blue', 'green'] as const) for (const s of opts.servers[slot]) this.slotOfServer.set(s, slot);
  }

  /** Start receiving HAProxy's request log (idempotent); every line of this backend's servers is recorded per slot. */
  listenLog(): Promise<UdpSocket> | undefined {
    const log = this.opts.log;
    if (!log) return undefined;
    this.logSocket ??= new Promise((resolve, reject) => {
      const sock = createSocket('udp4');
      sock.on('message', (msg) => {
        const line = parseHaproxyLogLine(msg.toString('latin1'));
        if (!line || line.backend !== this.opts.backend) return;
        const slot = this.slotOfServer.get(line.server);
        if (!slot || line.totalMs < 0) return;
        this.logged[slot].record(line.totalMs, line.status >= 500 || line.status < 0);
      });
      sock.once('error', (err) =>
        reject(
          new DeployError(
            'BULWARK_E_DEPLOY_ROUTER',
            `cannot receive HAProxy's log on udp ${log.host ?? '127.0.0.1'}:${log.port}: ${err.message}`,
          ),
        ),
      );
      sock.bind(log.port, log.host ?? '127.0.0.1', () => resolve(sock));
    });
    return this.logSocket;
  }

  private cmd(line: string): Promise<string> {
    return haproxyCommand(this.opts.socket, line);
  }

  private async run(commands: string[]): Promise<void> {
    if (commands.length === 0) return;
    const reply = await this.cmd(commands.join('; '));
    const bad = reply
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && FAILURE.test(l) && !/no need to change/i.test(l));
    if (bad.length > 0)
      throw new DeployError('BULWARK_E_DEPLOY_ROUTER', `HAProxy refused "${commands.join('; ')}": ${bad.join(' | ')}`);
  }

  private async rows(): Promise<Map<string, StatRow>> {
    const rows = parseShowStat(await this.cmd('show stat'));
    const out = new Map<string, StatRow>();
    for (const r of rows) if (r.pxname === this.opts.backend) out.set(r.svname!, r);
    for (const slot of ['blue', 'green'] as const)
      for (const s of this.opts.servers[slot])
        if (!out.has(s))
          throw new DeployError(
            'BULWARK_E_DEPLOY_ROUTER',
            `HAProxy backend ${this.opts.backend} has no server ${s} (declare it in haproxy.cfg)`,
          );
    return out;
  }

  async state(): Promise<RouterState> {
    const rows = await this.rows();
    const slotRows = (slot: Slot) => this.opts.servers[slot].map((s) => rows.get(s)!);
    const active = (r: StatRow) => !/MAINT|DRAIN/.test(r.status ?? '');
    let total = 0;
    const sums = { blue: 0, green: 0 };
    for (const slot of ['blue', 'green'] as const) {
      for (const r of slotRows(slot)) if (active(r)) sums[slot] += Number(r.weight || 0);
      total += sums[slot];
    }
    const share = (slot: Slot) => (total === 0 ? 0 : Math.round((sums[slot] / total) * 100));
    const slot = (s: Slot) => ({
      weight: share(s),
      backends: slotRows(s)
        .filter((r) => !/MAINT/.test(r.status ?? ''))
        .map((r) => ({
          id: r.svname!,
          url: `http://${r.addr}`,
          // A server in DRAIN belongs to a slot with weight 0: registered and ready to take traffic again.
          state: 'ready' as const,
          inFlight: Number(r.scur || 0),
        })),
    });
    return { kind: this.kind, slots: { blue: slot('blue'), green: slot('green') } };
  }

  async setBackends(slot: Slot, backends: Backend[]): Promise<void> {
    const state = await this.state();
    assertSafeBackends(slot, backends.length, state);
    const names = this.opts.servers[slot];
    if (backends.length > names.length)
      throw new DeployError(
        'BULWARK_E_DEPLOY_ROUTER',
        `${backends.length} instances for ${slot} but HAProxy backend ${this.opts.backend} declares ${names.length} ${slot} servers`,
      );
    const weight = state.slots[slot].weight;
    const commands: string[] = [];
    names.forEach((name, i) => {
      const b = backends[i];
      const target = `${this.opts.backend}/${name}`;
      if (!b) {
        commands.push(`set server ${target} state maint`);
        return;
      }
      if (!b.url) throw new DeployError('BULWARK_E_DEPLOY_ROUTER', `backend ${b.id} of ${slot} has no url`);
      const u = new URL(b.url);
      commands.push(`set server ${target} addr ${u.hostname} port ${u.port || 80}`);
      if (weight > 0) {
        commands.push(`set weight ${target} ${serverWeight(weight, backends.length)}`);
        commands.push(`set server ${target} state ready`);
      } else commands.push(`set server ${target} state drain`);
    });
    await this.run(commands);
  }

  async setWeights(weights: Weights): Promise<void> {
    const state = await this.state();
    assertSafeWeights(weights, state);
    const current = { blue: state.slots.blue.weight, green: state.slots.green.weight };
    const commands: string[] = [];
    // One runtime-API line, slots gaining traffic first: HAProxy runs it in order, so there is never
    // an instant without a ready server.
    for (const slot of changeOrder(current, weights)) {
      const live = state.slots[slot].backends;
      for (const b of live) {
        const target = `${this.opts.backend}/${b.id}`;
        if (weights[slot] > 0) {
          commands.push(`set weight ${target} ${serverWeight(weights[slot], live.length)}`);
          commands.push(`set server ${target} state ready`);
        } else commands.push(`set server ${target} state drain`);
      }
    }
    await this.run(commands);
  }

  async confirmServing(slot: Slot, path = '/health'): Promise<boolean> {
    const state = await this.state();
    const backends = state.slots[slot].backends;
    if (backends.length === 0) return false;
    const oks = await Promise.all(
      backends.map(async (b) => {
        try {
          const r = await request(`${b.url}${path}`, { headersTimeout: 5000, bodyTimeout: 5000 });
          await r.body.dump();
          return r.statusCode < 500;
        } catch {
          return false;
        }
      }),
    );
    return oks.every(Boolean);
  }

  async drain(slot: Slot, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const rows = await this.rows();
      const inFlight = this.opts.servers[slot].reduce((n, s) => n + Number(rows.get(s)?.scur || 0), 0);
      if (inFlight === 0) return true;
      if (Date.now() >= deadline) return false;
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /**
   * HAProxy's counters only grow, so a window is the difference between now and the last sample taken
   * at or before `sinceMs` (every call takes a sample; call once at the window's start).
   */
  async window(slot: Slot, sinceMs: number): Promise<SlotWindow> {
    const rows = await this.rows();
    const now: CounterSample = { at: Date.now(), byServer: new Map() };
    for (const [name, r] of rows) {
      const requests = Number(r.req_tot || r.stot || 0);
      const errors = Number(r.hrsp_5xx || 0) + Number(r.econ || 0) + Number(r.eresp || 0);
      now.byServer.set(name, { requests, errors });
    }
    const base = [...this.samples].reverse().find((s) => s.at <= sinceMs) ?? this.samples[0];
    this.samples.push(now);
    if (this.samples.length > 1000) this.samples.splice(0, this.samples.length - 1000);
    let requests = 0;
    let errors = 0;
    let weightedAvg = 0;
    for (const name of this.opts.servers[slot]) {
      const cur = now.byServer.get(name)!;
      const prev = base?.byServer.get(name) ?? (base ? { requests: 0, errors: 0 } : cur);
      const dr = Math.max(0, cur.requests - prev.requests);
      requests += dr;
      errors += Math.max(0, cur.errors - prev.errors);
      weightedAvg += dr * Number(rows.get(name)?.rtime || 0);
    }
    // rtime is HAProxy's average over the server's last 1024 requests: an average, never a percentile.
    const latencyMs: SlotWindow['latencyMs'] = requests > 0 ? { avg: weightedAvg / requests } : {};
    if (this.opts.log) {
      await this.listenLog();
      // Percentiles from the request log, when it saw (nearly) every request the counters did: a log
      // that is not configured, or lost lines, must not stand in for the whole window.
      const seen = this.logged[slot].window(sinceMs);
      if (requests > 0 && seen.requests >= requests * 0.8) {
        const { p50, p90, p95, p99, max } = seen.latencyMs;
        Object.assign(latencyMs, { p50, p90, p95, p99, max });
      }
    }
    return { requests, errors, latencyMs };
  }

  async close(): Promise<void> {
    if (this.logSocket) (await this.logSocket.catch(() => undefined))?.close();
  }
}

function serverWeight(slotWeight: number, servers: number): number {
  return Math.max(1, Math.round((slotWeight * WEIGHT_SCALE) / 100 / Math.max(1, servers)));
}
