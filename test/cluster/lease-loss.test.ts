import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Dcs } from '../../src/cluster/dcs/index.js';
import { LocalDcs } from '../../src/cluster/dcs/local.js';
import { ClusterMonitor, readHistory } from '../../src/cluster/index.js';
import {
  createTestCluster,
  primaryOf,
  quietLogger,
  signalNode,
  type TestCluster,
  waitFor,
  waitHealthy,
} from './helpers.js';

// Regression guard for "a monitor that loses the lease stops acting at once": the leadership goes away
// in the middle of a failover (after the old primary was fenced); the monitor must not promote.
let c: TestCluster;
beforeAll(async () => {
  c = await createTestCluster({ replicas: 1 });
});
afterAll(async () => {
  await c?.destroy();
});

/** A DCS whose leadership ends after `budget` isLeader() checks, as when a lease expires mid-action. */
function expiringDcs(inner: Dcs, budget: { left: number; armed: boolean }): Dcs {
  return {
    kind: inner.kind,
    acquire: () => inner.acquire(),
    isLeader: () => {
      if (!budget.armed) return inner.isLeader();
      return budget.left-- > 0 && inner.isLeader();
    },
    leader: () => inner.leader(),
    readState: () => inner.readState(),
    writeState: (s) => (budget.armed && budget.left <= 0 ? Promise.resolve(false) : inner.writeState(s)),
    publishTopology: (t) => inner.publishTopology(t),
    readTopology: () => inner.readTopology(),
    close: () => inner.close(),
  };
}

describe('lease lost in the middle of a failover', () => {
  it('fences the old primary but promotes nothing once the leadership is gone', async () => {
    const budget = { left: 1, armed: false };
    const lines: string[] = [];
    const logger = quietLogger();
    const m = new ClusterMonitor({
      dir: c.dir,
      intervalMs: 300,
      logger: Object.assign(Object.create(logger), {
        error: (...args: unknown[]) => lines.push(String(args.at(-1))),
        warn: (...args: unknown[]) => lines.push(String(args.at(-1))),
        info: () => {},
        debug: () => {},
      }),
      dcs: (info) => expiringDcs(new LocalDcs(c.dir, info), budget),
    });
    await m.start();
    try {
      const primary = await waitHealthy(c.dir);
      await waitFor('monitor leads', async () => m.isLeader());
      // When the failover starts, one more check passes (the one before fencing), then the lease is gone.
      m.on('decision', (d) => {
        if (d.action.type === 'failover' && !budget.armed) Object.assign(budget, { armed: true, left: 1 });
      });
      signalNode(c.dir, primary, 'SIGKILL');
      await waitFor(
        'the monitor to notice',
        async () => lines.some((l) => /lost the leadership: stopping at once/.test(l)),
        20_000,
      );
      await new Promise((r) => setTimeout(r, 1500));
      expect(lines.some((l) => /fenced old primary/.test(l))).toBe(true);
      expect(readHistory(c.dir)).toEqual([]);
      expect(await primaryOf(c.dir)).toEqual([]);
    } finally {
      await m.stop();
    }
  });
});
