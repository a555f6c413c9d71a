import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type ClusterState, readState, writeState } from '../local/cluster.js';
import { writeFileAtomic } from '../local/layout.js';
import type { Dcs, LeaderInfo } from './index.js';

/**
 * The embedded default: one monitor per cluster folder, enforced with a lock file (D/monitor.lock,
 * created with O_EXCL; a lock whose process is gone is taken over). Only for monitors on one host.
 */
export class LocalDcs implements Dcs {
  readonly kind = 'local' as const;
  private held = false;
  private readonly lock: string;
  private readonly me: LeaderInfo;

  constructor(
    private readonly dir: string,
    info: { name: string; http?: string },
  ) {
    this.lock = join(dir, 'monitor.lock');
    this.me = { ...info, token: randomBytes(8).toString('hex') };
  }

  async acquire(): Promise<boolean> {
    if (this.held) {
      // Someone removed or replaced our lock: we are no longer the only monitor.
      const cur = this.readLock();
      this.held = cur?.token === this.me.token;
      return this.held;
    }
    const cur = this.readLock();
    if (cur && cur.token !== this.me.token && pidAlive(cur.pid)) return false;
    if (cur) rmSync(this.lock, { force: true });
    try {
      writeFileSync(this.lock, JSON.stringify({ ...this.me, pid: process.pid }), { flag: 'wx' });
      this.held = true;
    } catch {
      this.held = false;
    }
    return this.held;
  }

  isLeader(): boolean {
    return this.held;
  }

  async leader(): Promise<LeaderInfo | null> {
    const cur = this.readLock();
    return cur && pidAlive(cur.pid) ? { name: cur.name, http: cur.http, token: cur.token } : null;
  }

  async readState(): Promise<ClusterState | null> {
    return readState(this.dir);
  }

  async writeState(state: ClusterState): Promise<boolean> {
    if (!(await this.acquire())) return false;
    writeState(this.dir, state);
    return true;
  }

  async publishTopology(topology: unknown): Promise<void> {
    if (this.held) writeFileAtomic(join(this.dir, 'topology.json'), `${JSON.stringify(topology)}\n`);
  }

  async readTopology(): Promise<unknown | null> {
    const p = join(this.dir, 'topology.json');
    return existsSync(p) ? JSON.parse(readFileSync(p, 'utf8')) : null;
  }

  async close(): Promise<void> {
    if (this.held && this.readLock()?.token === this.me.token) rmSync(this.lock, { force: true });
    this.held = false;
  }

  private readLock(): (LeaderInfo & { pid: number }) | null {
    try {
      return JSON.parse(readFileSync(this.lock, 'utf8'));
    } catch {
      return null;
    }
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
