/**
 * The agent's dead man's switch, a separate small process: `node deadman.js <dataDir>`, its stdin a
 * pipe from the agent. When that pipe closes — the agent exited or was killed, even with SIGKILL —
 * it SIGKILLs the PostgreSQL of <dataDir> and exits. Without it, a primary whose agent died would stay
 * writable after its lease expired and another host was promoted (Patroni relies on a hardware or
 * softdog watchdog for the same hole). A clean agent stop has already stopped PostgreSQL: then there is
 * nothing left to kill.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

function postmaster(dataDir: string): number | null {
  try {
    const pid = Number(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
    if (!pid) return null;
    process.kill(pid, 0);
    return pid;
  } catch {
    return null;
  }
}

function children(pid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid) out.push(Number(entry));
    } catch {
      // ended while we looked
    }
  }
  return out;
}

export function killPostgres(dataDir: string): number[] {
  const pm = postmaster(dataDir);
  if (!pm) return [];
  const pids = [pm, ...children(pm)];
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  return pids;
}

const dataDir = process.argv[2];
if (dataDir && process.argv[1]?.endsWith('deadman.js')) {
  // the agent's own signals (Ctrl-C in a terminal, systemd's SIGTERM to the group) must not end us first
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => {});
  process.stdin.resume();
  process.stdin.on('close', () => {
    killPostgres(dataDir);
    process.exit(0);
  });
  process.stdin.on('end', () => {
    killPostgres(dataDir);
    process.exit(0);
  });
}
