import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HAPROXY_LOG_FORMAT } from '../../src/deploy/routers/haproxy.js';
import { freePort } from '../../src/lib/net.js';

export interface HaproxyHarness {
  socket: string;
  frontendUrl: string;
  backend: string;
  servers: { blue: string[]; green: string[] };
  configText: string;
  stop(): Promise<void>;
}

/**
 * Debian's haproxy on a free loopback port (below 32768), with a runtime-API socket at admin level and
 * one backend whose blue/green servers start in maintenance: Bulwark's haproxy router fills them in.
 * No health checks: state is driven only through the runtime API, as the router expects.
 */
export async function startHaproxy(
  options: { perSlot?: number; threads?: number; logPort?: number } = {},
): Promise<HaproxyHarness> {
  const dir = mkdtempSync(join(tmpdir(), 'bulwark-haproxy-'));
  const port = await freePort({ below: 32768 });
  const socket = join(dir, 'admin.sock');
  const perSlot = options.perSlot ?? 2;
  const servers = {
    blue: Array.from({ length: perSlot }, (_, i) => `blue${i + 1}`),
    green: Array.from({ length: perSlot }, (_, i) => `green${i + 1}`),
  };
  const lines = [...servers.blue, ...servers.green].map((s) => `    server ${s} 127.0.0.1:9 weight 0 disabled`);
  const configText = `global
    nbthread ${options.threads ?? 1}
    maxconn 4000
    stats socket ${socket} mode 600 level admin
    stats timeout 30s
${options.logPort ? `    log 127.0.0.1:${options.logPort} local0\n` : ''}defaults
    mode http
${options.logPort ? `    log global\n    log-format "${HAPROXY_LOG_FORMAT}"\n` : ''}
    option http-keep-alive
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s
    retries 2
    option redispatch
frontend fe
    bind 127.0.0.1:${port}
    default_backend app
backend app
    balance roundrobin
${lines.join('\n')}
`;
  const cfg = join(dir, 'haproxy.cfg');
  writeFileSync(cfg, configText);
  const child: ChildProcess = spawn('haproxy', ['-f', cfg, '-db'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    stderr = (stderr + d).slice(-4000);
  });
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 15_000;
  while (!(existsSync(socket) && (await canConnect(socket)))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`haproxy did not start: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { socket, frontendUrl: `http://127.0.0.1:${port}`, backend: 'app', servers, configText, stop };
}

function canConnect(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = connect({ path });
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}
