import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * "Hosts" for multi-host tests: Linux network namespaces the test creates itself. Layout:
 *
 *   bw<id>-br   a namespace holding only the bridge br0
 *   bw<id>-n1.. one namespace per host, veth pair n<i> (in the host) <-> n<i>b (on the bridge),
 *               address 10.251.<x>.<i>/24 on that link only
 *   the test process reaches them through one more veth pair (bw<id>h in our namespace, 10.251.<x>.200),
 *   with a route for 10.251.<x>.0/24 only, so it talks to nothing else.
 *
 * A partition sets the bridge end of a host's link down: the host keeps its address (local
 * connections still work) but reaches nobody and nobody reaches it. destroy() kills every process
 * left in the namespaces, deletes them and the veth pair; an exit hook does the same when the
 * test process dies first.
 */
export interface NetHost {
  name: string;
  ns: string;
  addr: string;
  /** The bridge end of this host's link (the one a partition takes down). */
  bridgePort: string;
}

export interface TestNet {
  id: string;
  subnet: string;
  /** Our own address on the test network. */
  localAddr: string;
  hosts: NetHost[];
  /** Start a long-running process inside a host's namespace; stdout+stderr go to `logFile`. */
  spawnIn(host: NetHost, command: string, args: string[], logFile: string, env?: NodeJS.ProcessEnv): ChildProcess;
  /** Cut a host off the network (link down on the bridge side). */
  partition(host: NetHost): void;
  heal(host: NetHost): void;
  /** SIGKILL every process in a host's namespace (PostgreSQL, agent, etcd: the host "dies"). */
  killAll(host: NetHost): number[];
  destroy(): void;
  /** Scratch folder for the test's data (removed by destroy). */
  dir: string;
}

function ip(args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Why network namespaces cannot be used here (not root, no `ip netns`), or null when they can. */
export function netnsUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'network namespaces need root';
  const probe = `bwprobe${randomBytes(3).toString('hex')}`;
  const add = spawnSync('ip', ['netns', 'add', probe], { encoding: 'utf8' });
  if (add.status !== 0) return `ip netns add failed: ${(add.stderr || add.error?.message || '').trim()}`;
  spawnSync('ip', ['netns', 'del', probe]);
  return null;
}

function nsPids(ns: string): number[] {
  const r = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.split('\n').filter(Boolean).map(Number) : [];
}

function killNs(ns: string): number[] {
  const pids = nsPids(ns);
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }
  return pids;
}

function pickSubnet(): string {
  const routes = execFileSync('ip', ['-4', 'route', 'show', 'table', 'all'], { encoding: 'utf8' });
  for (let i = 0; i < 50; i++) {
    const x = 1 + Math.floor(Math.random() * 254);
    const subnet = `10.251.${x}`;
    if (!routes.includes(`${subnet}.`)) return subnet;
  }
  throw new Error('no free 10.251.x.0/24 subnet for the test network');
}

export function createTestNet(count: number): TestNet {
  const id = randomBytes(2).toString('hex');
  const subnet = pickSubnet();
  const brNs = `bw${id}-br`;
  const hostVeth = `bw${id}h`;
  const dir = mkdtempSync(join(tmpdir(), `bulwark-netns-${id}-`));
  const hosts: NetHost[] = [];
  const namespaces: string[] = [];
  let destroyed = false;
  const destroy = () => {
    if (destroyed) return;
    destroyed = true;
    for (const ns of [...namespaces].reverse()) killNs(ns);
    // processes die asynchronously; a namespace with members left would linger after `del`
    for (let i = 0; i < 50 && namespaces.some((ns) => nsPids(ns).length); i++) spawnSync('sleep', ['0.1']);
    for (const ns of namespaces) spawnSync('ip', ['netns', 'del', ns]);
    spawnSync('ip', ['link', 'del', hostVeth]);
    rmSync(dir, { recursive: true, force: true });
    process.off('exit', destroy);
  };
  process.on('exit', destroy);
  try {
    ip(['netns', 'add', brNs]);
    namespaces.push(brNs);
    ip(['-n', brNs, 'link', 'add', 'br0', 'type', 'bridge']);
    ip(['-n', brNs, 'link', 'set', 'br0', 'up']);
    for (let i = 1; i <= count; i++) {
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
      hosts.push({ name: `n${i}`, ns, addr: `${subnet}.${i}`, bridgePort: `${veth}b` });
    }
    ip(['link', 'add', hostVeth, 'type', 'veth', 'peer', 'name', `${hostVeth}b`]);
    ip(['link', 'set', `${hostVeth}b`, 'netns', brNs]);
    ip(['-n', brNs, 'link', 'set', `${hostVeth}b`, 'master', 'br0', 'up']);
    ip(['addr', 'add', `${subnet}.200/24`, 'dev', hostVeth]);
    ip(['link', 'set', hostVeth, 'up']);
  } catch (err) {
    destroy();
    throw err;
  }
  const brNsName = brNs;
  return {
    id,
    subnet: `${subnet}.0/24`,
    localAddr: `${subnet}.200`,
    hosts,
    dir,
    spawnIn(host, command, args, logFile, env) {
      const fd = openSync(logFile, 'a');
      try {
        return spawn('ip', ['netns', 'exec', host.ns, command, ...args], {
          stdio: ['ignore', fd, fd],
          env: { ...process.env, ...env },
        });
      } finally {
        closeSync(fd);
      }
    },
    partition(host) {
      ip(['-n', brNsName, 'link', 'set', host.bridgePort, 'down']);
    },
    heal(host) {
      ip(['-n', brNsName, 'link', 'set', host.bridgePort, 'up']);
    },
    killAll(host) {
      return killNs(host.ns);
    },
    destroy,
  };
}
