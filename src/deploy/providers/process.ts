import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'undici';
import { freePort } from '../../lib/net.js';
import { DeployError } from '../errors.js';
import type { Provider, Slot, SlotInstances } from '../types.js';

export interface ProcessProviderOptions {
  /** Run through /bin/sh; {version}, {slot} and {port} are substituted. */
  command: string;
  cwd?: string;
  instances?: number;
  env?: Record<string, string>;
  ports?: Record<Slot, number[]>;
  readiness?: { path?: string; timeoutMs?: number };
  stopTimeoutMs?: number;
  /** Instance logs go to `<logDir>/<slot>-<n>.log`. */
  logDir: string;
}

export interface ProcessHandle {
  pid: number;
  /** /proc start time: a recycled PID is never mistaken for our instance. */
  startTicks?: string;
  port: number;
  log: string;
}

function startTicks(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

function isAlive(h: ProcessHandle): boolean {
  try {
    process.kill(h.pid, 0);
  } catch {
    return false;
  }
  const ticks = startTicks(h.pid);
  if (h.startTicks && ticks && ticks !== h.startTicks) return false;
  // A zombie still answers kill(0); it is not serving.
  try {
    return !/^\S+ \(.*\) Z/.test(readFileSync(`/proc/${h.pid}/stat`, 'utf8'));
  } catch {
    return true;
  }
}

function tail(file: string): string {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-3).join(' | ');
  } catch {
    return '';
  }
}

/**
 * Instances as local processes. Each runs in its own process group, detached from the `bulwark deploy`
 * command (it outlives it: the state file records PIDs so `status`, `rollback` or the next deploy can
 * stop it). `start` resolves only when every instance answers its readiness path with 2xx.
 */
export class ProcessProvider implements Provider {
  readonly kind = 'process';
  constructor(private readonly opts: ProcessProviderOptions) {}

  async start(slot: Slot, version: string, options: { signal?: AbortSignal } = {}): Promise<SlotInstances> {
    const count = this.opts.instances ?? 1;
    const fixed = this.opts.ports?.[slot];
    if (fixed && fixed.length < count)
      throw new DeployError(
        'BULWARK_E_DEPLOY_PROVIDER',
        `${count} instances but only ${fixed.length} ports for ${slot}`,
      );
    mkdirSync(this.opts.logDir, { recursive: true });
    const handles: ProcessHandle[] = [];
    try {
      for (let i = 0; i < count; i++) {
        let port = fixed?.[i] ?? (await freePort({ below: 32768 }));
        // freePort only checks that a port is free now: never hand the same one to two instances.
        while (!fixed && handles.some((h) => h.port === port)) port = await freePort({ below: 32768 });
        const log = join(this.opts.logDir, `${slot}-${i + 1}.log`);
        const fd = openSync(log, 'a');
        const command = this.opts.command
          .replaceAll('{version}', version)
          .replaceAll('{slot}', slot)
          .replaceAll('{port}', String(port));
        const child = spawn('/bin/sh', ['-c', command], {
          cwd: this.opts.cwd,
          env: {
            ...process.env,
            ...this.opts.env,
            PORT: String(port),
            BULWARK_VERSION: version,
            BULWARK_SLOT: slot,
            BULWARK_LABEL: `${slot}-${version}`,
          },
          detached: true,
          stdio: ['ignore', fd, fd],
        });
        closeSync(fd);
        if (child.pid === undefined)
          throw new DeployError('BULWARK_E_DEPLOY_PROVIDER', `cannot start "${command}" for ${slot}`);
        child.unref();
        handles.push({ pid: child.pid, startTicks: startTicks(child.pid), port, log });
      }
      const path = this.opts.readiness?.path ?? '/health';
      const timeoutMs = this.opts.readiness?.timeoutMs ?? 30_000;
      await Promise.all(handles.map((h) => waitReady(h, path, timeoutMs, options.signal)));
    } catch (err) {
      await this.stopHandles(handles);
      throw err;
    }
    return {
      version,
      backends: handles.map((h, i) => ({ id: `${slot}-${i + 1}`, url: `http://127.0.0.1:${h.port}` })),
      handles,
      startedAt: new Date().toISOString(),
    };
  }

  async stop(_slot: Slot, instances: SlotInstances): Promise<void> {
    await this.stopHandles(instances.handles as ProcessHandle[]);
  }

  async alive(instances: SlotInstances): Promise<boolean> {
    return (instances.handles as ProcessHandle[]).every(isAlive);
  }

  /** SIGTERM to each instance's process group, SIGKILL after stopTimeout. */
  private async stopHandles(handles: ProcessHandle[]): Promise<void> {
    const timeout = this.opts.stopTimeoutMs ?? 10_000;
    await Promise.all(
      handles.map(async (h) => {
        if (!isAlive(h)) return;
        signal(h.pid, 'SIGTERM');
        const deadline = Date.now() + timeout;
        while (isAlive(h) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
        if (isAlive(h)) signal(h.pid, 'SIGKILL');
      }),
    );
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(-pid, sig); // the whole group: sh and the app it started
  } catch {
    try {
      process.kill(pid, sig);
    } catch {
      // already gone
    }
  }
}

async function waitReady(h: ProcessHandle, path: string, timeoutMs: number, signal?: AbortSignal): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer yet';
  while (Date.now() < deadline) {
    if (signal?.aborted) throw new DeployError('BULWARK_E_DEPLOY_ABORTED', 'aborted while waiting for readiness');
    if (!isAlive(h))
      throw new DeployError(
        'BULWARK_E_DEPLOY_PROVIDER',
        `instance on port ${h.port} exited before it was ready (log ${h.log}: ${tail(h.log)})`,
      );
    try {
      const r = await request(`http://127.0.0.1:${h.port}${path}`, { headersTimeout: 2000, bodyTimeout: 2000 });
      await r.body.dump();
      if (r.statusCode >= 200 && r.statusCode < 300) return;
      last = `status ${r.statusCode}`;
    } catch (err) {
      last = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new DeployError(
    'BULWARK_E_DEPLOY_PROVIDER',
    `instance on port ${h.port} not ready on ${path} after ${timeoutMs} ms (${last}; log ${h.log})`,
  );
}
