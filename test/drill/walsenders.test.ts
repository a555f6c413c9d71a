import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clusterPaths, destroyCluster, initCluster } from '../../src/cluster/index.js';
import { walSenders } from '../../src/drill/steps.js';

/** Every walsender process on the machine whose postmaster is the given node's (independent of the code under test). */
function sendersOf(pgDir: string, node: string): number[] {
  const pm = Number(readFileSync(join(clusterPaths(pgDir).dataDir(node), 'postmaster.pid'), 'utf8').split('\n')[0]);
  return readdirSync('/proc')
    .filter((e) => /^\d+$/.test(e))
    .filter((e) => {
      try {
        const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
        return (
          Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pm &&
          readFileSync(`/proc/${e}/cmdline`, 'utf8').includes('walsender')
        );
      } catch {
        return false;
      }
    })
    .map(Number);
}

/**
 * The failover step's --replica-lag pauses (SIGSTOP) the WAL senders of the primary. Two local clusters
 * on one machine both name their first node node1, so process titles alike: the drill must pause only
 * the senders of its own cluster's node (a test running next to a drill lost 40 of 44 orders in async
 * mode when its cluster's senders were paused by another drill's replica-lag step).
 */
describe('drill --replica-lag: WAL senders of the drill cluster only', () => {
  let dir: string;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'bulwark-drill-walsenders-'));
    chmodSync(dir, 0o755);
    await initCluster({ dir: join(dir, 'a'), replicas: 1, name: 'walsa' });
    await initCluster({ dir: join(dir, 'b'), replicas: 1, name: 'walsb' });
  }, 120_000);
  afterAll(async () => {
    await destroyCluster(join(dir, 'a')).catch(() => {});
    await destroyCluster(join(dir, 'b')).catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  it("finds the primary's senders in its own cluster folder and none of another cluster's node of the same name", async () => {
    const a = join(dir, 'a');
    const b = join(dir, 'b');
    let own: number[] = [];
    let other: number[] = [];
    for (let i = 0; i < 100; i++) {
      own = sendersOf(a, 'node1');
      other = sendersOf(b, 'node1');
      if (own.length && other.length) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(own.length).toBeGreaterThan(0);
    expect(other.length).toBeGreaterThan(0);
    // a sender can be restarting at any moment (the machine is shared): look until both agree
    let found: number[] = [];
    for (let i = 0; i < 100; i++) {
      found = walSenders(a, 'node1');
      own = sendersOf(a, 'node1');
      if (found.length && found.sort().join() === own.sort().join()) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(found.length).toBeGreaterThan(0);
    expect(found.sort()).toEqual(own.sort());
    other = sendersOf(b, 'node1');
    for (const pid of other) expect(found).not.toContain(pid);
    for (const pid of walSenders(b, 'node1')) expect(own).not.toContain(pid);
  }, 60_000);
});
