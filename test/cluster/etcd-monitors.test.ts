import { type ChildProcess, spawn } from 'node:child_process';
import { resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readHistory } from '../../src/cluster/index.js';
import { freePort } from '../../src/lib/net.js';
import { startTestEtcd, type TestEtcd } from '../harness/etcd.js';
import { createTestCluster, signalNode, type TestCluster, waitFor, waitHealthy, watchSplitBrain } from './helpers.js';

// Two monitor processes (as on two hosts) coordinating through a real etcd: only the lease holder
// ever acts, the other takes over when the holder dies, and a holder cut off from etcd stops acting.
const cli = resolve(import.meta.dirname, '../../dist/cli/main.js');
let c: TestCluster;
let etcd: TestEtcd;
const monitors: Record<string, { proc: ChildProcess; url: string; log: string[] }> = {};

async function startMonitor(name: string) {
  const port = await freePort({ below: 32768 });
  const proc = spawn(
    process.execPath,
    [
      cli,
      'cluster',
      'monitor',
      '--dir',
      c.dir,
      '--name',
      name,
      '--etcd',
      etcd.url,
      '--lease-ttl',
      '2',
      '--interval',
      '500ms',
      '--http-port',
      String(port),
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const log: string[] = [];
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => log.push(...d.split('\n').filter(Boolean)));
  monitors[name] = { proc, url: `http://127.0.0.1:${port}`, log };
  await waitFor(`monitor ${name} up`, async () => (await fetch(`${monitors[name]!.url}/health`)).status > 0, 20_000);
}

async function leaders(): Promise<string[]> {
  const out: string[] = [];
  for (const [name, m] of Object.entries(monitors)) {
    if (m.proc.exitCode !== null || m.proc.signalCode !== null) continue;
    const h = (await (
      await fetch(`${m.url}/health`, { signal: AbortSignal.timeout(1000) })
    )
      .json()
      .catch(() => ({}))) as any;
    if (h.leader) out.push(name);
  }
  return out;
}

const acted = (name: string) => monitors[name]!.log.filter((l) => /failover done|fenced|rejoined/.test(l));

beforeAll(async () => {
  etcd = await startTestEtcd();
  c = await createTestCluster();
  await startMonitor('mon-a');
  await startMonitor('mon-b');
});

afterAll(async () => {
  for (const m of Object.values(monitors)) m.proc.kill('SIGKILL');
  await c?.destroy();
  await etcd?.stop();
});

describe('two monitors with etcd', () => {
  it('never both act: one leader fails over, the other takes over only when the leader is gone', async () => {
    const watch = { stop: false, both: [] as string[][] };
    const poll = (async () => {
      while (!watch.stop) {
        const l = await leaders().catch(() => []);
        if (l.length > 1) watch.both.push(l);
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    const split = watchSplitBrain(c.dir);
    try {
      const [first] = await waitFor('one leader', async () => {
        const l = await leaders();
        return l.length === 1 ? l : null;
      });
      const other = first === 'mon-a' ? 'mon-b' : 'mon-a';
      const old = await waitHealthy(c.dir);
      signalNode(c.dir, old, 'SIGKILL');
      await waitFor('first failover', async () => readHistory(c.dir).length === 1);
      expect(readHistory(c.dir)[0]).toMatchObject({ kind: 'failover', from: old, by: first });
      await waitHealthy(c.dir, 90_000);
      expect(acted(other)).toEqual([]);

      // The leader dies; the other takes the lease after the TTL and handles the next failure alone.
      monitors[first!]!.proc.kill('SIGKILL');
      await waitFor('the other monitor leads', async () => (await leaders()).join() === other, 20_000);
      const second = await waitHealthy(c.dir);
      signalNode(c.dir, second, 'SIGKILL');
      await waitFor('second failover', async () => readHistory(c.dir).length === 2);
      expect(readHistory(c.dir)[1]).toMatchObject({ kind: 'failover', from: second, by: other });
      await waitHealthy(c.dir, 90_000);
    } finally {
      watch.stop = true;
      await poll;
    }
    expect(watch.both).toEqual([]);
    expect(await split.stop()).toEqual([]);
  });

  it('a leader cut off from etcd stops acting at once: no failover while nobody holds the lease', async () => {
    const [leader] = await leaders();
    expect(leader).toBeDefined();
    const primary = await waitHealthy(c.dir);
    const before = readHistory(c.dir).length;
    etcd.pause();
    try {
      await waitFor(
        'the leader to stand down',
        async () => monitors[leader!]!.log.some((l) => /not the leader any more/.test(l)),
        10_000,
      );
      signalNode(c.dir, primary, 'SIGKILL');
      await new Promise((r) => setTimeout(r, 4000)); // far past the 1.5 s detection window
      expect(readHistory(c.dir)).toHaveLength(before);
    } finally {
      etcd.resume();
    }
    // With etcd back, a monitor takes the lease and handles the dead primary.
    await waitFor('failover after etcd is back', async () => readHistory(c.dir).length === before + 1, 30_000);
    await waitHealthy(c.dir, 90_000);
  });
});
