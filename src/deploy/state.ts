import { randomBytes } from 'node:crypto';
import {
  appendFileSync,
  chmodSync,
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Judgement } from './analysis.js';
import { DeployError } from './errors.js';
import type { Slot, SlotInstances, SlotWindow, Weights } from './types.js';

export type DeploymentStatus = 'running' | 'paused' | 'succeeded' | 'rolled-back' | 'aborted' | 'failed';

export interface DeployEvent {
  at: string;
  /** What was decided and why, in one sentence (Patroni-style). */
  sentence: string;
  judgement?: Judgement;
}

export interface DeploymentRecord {
  id: string;
  app: string;
  version: string;
  strategy: 'blue-green' | 'canary' | 'rollback';
  /** Slot and version that served before; undefined on an app's first deploy. */
  from?: { slot: Slot; version: string };
  to: Slot;
  status: DeploymentStatus;
  phase: string;
  /** Canary: index of the current step. */
  step?: number;
  weights?: Weights;
  pausedReason?: string;
  /** Blue-green: the stable slot measured before the switch (the "vs stable" reference, kept for --resume). */
  baseline?: SlotWindow;
  keepOldUntil?: string;
  startedAt: string;
  updatedAt: string;
  finishedAt?: string;
  events: DeployEvent[];
}

export interface AppState {
  app: string;
  /** The slot that serves the stable version (all traffic when no deploy runs). */
  active?: Slot;
  slots: Record<Slot, SlotInstances | null>;
  deployment?: DeploymentRecord;
}

export type ControlAction = 'promote' | 'promote-full' | 'abort' | 'rollback';

export interface ControlRequest {
  action: ControlAction;
  at: string;
  by: number;
}

/**
 * Deployment state of one app under `<stateDir>/deploy/<app>/`: state.json (written atomically, with a
 * .copy the loader falls back to, as pgBackRest does its catalogs), history.jsonl (one line per finished
 * deployment), a lock file, and control.json through which `promote`/`abort`/`rollback` reach a running deploy.
 */
export class StateStore {
  readonly dir: string;
  constructor(
    stateDir: string,
    readonly app: string,
  ) {
    this.dir = join(stateDir, 'deploy', app);
  }

  private path(name: string): string {
    return join(this.dir, name);
  }

  ensureDir(): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
  }

  load(): AppState {
    for (const name of ['state.json', 'state.json.copy']) {
      try {
        return JSON.parse(readFileSync(this.path(name), 'utf8')) as AppState;
      } catch {
        // missing or torn: try the copy, then start empty
      }
    }
    return { app: this.app, slots: { blue: null, green: null } };
  }

  save(state: AppState): void {
    this.ensureDir();
    const text = `${JSON.stringify(state, null, 2)}\n`;
    for (const name of ['state.json', 'state.json.copy']) {
      const tmp = this.path(`${name}.tmp`);
      writeFileSync(tmp, text);
      renameSync(tmp, this.path(name));
    }
  }

  appendHistory(record: DeploymentRecord): void {
    this.ensureDir();
    appendFileSync(this.path('history.jsonl'), `${JSON.stringify(record)}\n`);
  }

  history(): DeploymentRecord[] {
    try {
      return readFileSync(this.path('history.jsonl'), 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as DeploymentRecord);
    } catch {
      return [];
    }
  }

  /** Who holds the deploy lock, if a live process does. */
  lockHolder(): { pid: number; startedAt: string; host: string } | undefined {
    try {
      const info = JSON.parse(readFileSync(this.path('lock'), 'utf8')) as {
        pid: number;
        startedAt: string;
        host: string;
      };
      return info.host === hostname() && pidAlive(info.pid) ? info : undefined;
    } catch {
      return undefined;
    }
  }

  /**
   * Take the app's lock (O_EXCL create). A lock left by a dead process on this host is taken over:
   * the interrupted deploy is then resumed or aborted by the new holder, never run twice.
   */
  acquireLock(): () => void {
    this.ensureDir();
    const file = this.path('lock');
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        writeFileSync(
          file,
          JSON.stringify({ pid: process.pid, startedAt: new Date().toISOString(), host: hostname() }),
          {
            flag: 'wx',
          },
        );
        return () => {
          try {
            const info = JSON.parse(readFileSync(file, 'utf8')) as { pid: number };
            if (info.pid === process.pid) rmSync(file, { force: true });
          } catch {
            // already gone
          }
        };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        const holder = this.lockHolder();
        if (holder)
          throw new DeployError(
            'BULWARK_E_DEPLOY_LOCKED',
            `another deploy of ${this.app} is running (pid ${holder.pid} since ${holder.startedAt}); use promote/abort/rollback to steer it`,
          );
        rmSync(file, { force: true }); // stale: its process is gone
      }
    }
    throw new DeployError('BULWARK_E_DEPLOY_LOCKED', `cannot take the deploy lock of ${this.app}`);
  }

  requestControl(action: ControlAction): void {
    this.ensureDir();
    const req: ControlRequest = { action, at: new Date().toISOString(), by: process.pid };
    const tmp = this.path('control.json.tmp');
    writeFileSync(tmp, JSON.stringify(req));
    renameSync(tmp, this.path('control.json'));
  }

  /** Take (and remove) a pending control request. */
  takeControl(): ControlRequest | undefined {
    const file = this.path('control.json');
    if (!existsSync(file)) return undefined;
    try {
      const req = JSON.parse(readFileSync(file, 'utf8')) as ControlRequest;
      rmSync(file, { force: true });
      return req;
    } catch {
      return undefined;
    }
  }

  clearControl(): void {
    rmSync(this.path('control.json'), { force: true });
  }

  /** Admin token of the embedded router: from the environment, else generated once into the state folder (0600). */
  routerToken(envName?: string): string {
    if (envName && process.env[envName]) return process.env[envName]!;
    this.ensureDir();
    const file = this.path('router.token');
    if (existsSync(file)) return readFileSync(file, 'utf8').trim();
    const token = randomBytes(24).toString('hex');
    writeFileSync(file, `${token}\n`, { mode: 0o600 });
    chmodSync(file, 0o600);
    return token;
  }

  routerTablePath(): string {
    this.ensureDir();
    return this.path('router.json');
  }

  logDir(): string {
    return this.path('logs');
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
