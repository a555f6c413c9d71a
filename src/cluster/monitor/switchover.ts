import { ClusterError } from '../errors.js';
import type { HistoryEntry } from '../history.js';
import { findNode, markStandby, primaryConninfo, setAutoConf, sleep, sql, startNode } from '../local/cluster.js';
import { clusterPaths } from '../local/layout.js';
import { lsnDiff } from '../lsn.js';
import { probeAll, streamsFrom } from '../probe.js';
import { localTargets } from '../status.js';
import {
  checkpointLsn,
  dropStaleSlots,
  ensureSlots,
  fastShutdown,
  type Guard,
  type LocalCluster,
  promote,
  repoint,
  setSyncNames,
  waitReceived,
} from './actions.js';

export interface SwitchoverOptions {
  from: string;
  to: string;
  sync: boolean;
  term: number;
  by: string;
  guard?: Guard;
  /** How long to wait for the target to catch up before stopping the primary (default 30 s). */
  catchupTimeoutMs?: number;
  log?: (msg: string, data?: Record<string, unknown>) => void;
}

/**
 * Planned role change with zero loss: wait until the target has (almost) all the WAL, shut the
 * primary down cleanly (its WAL senders send everything up to the shutdown checkpoint before they
 * exit), check the target received past that checkpoint, promote it, and restart the old primary as
 * its replica (no rewind needed: it stopped at a point the target has). If the target does not get
 * the shutdown checkpoint, the old primary is started again as primary and nothing changed.
 */
export async function switchover(
  c: LocalCluster,
  o: SwitchoverOptions,
): Promise<{ entry: HistoryEntry; syncSet: string[] }> {
  const guard = o.guard ?? (() => {});
  const log = o.log ?? (() => {});
  const startedAt = new Date();
  findNode(c.spec, o.to);
  if (o.to === o.from) throw new ClusterError('BULWARK_E_CLUSTER_SWITCHOVER', `${o.to} is already the primary`);
  const deadline = Date.now() + (o.catchupTimeoutMs ?? 30_000);
  for (;;) {
    const obs = await probeAll(localTargets(c.dir), 2000);
    const p = obs.find((x) => x.name === o.from);
    const t = obs.find((x) => x.name === o.to);
    if (!p?.reachable || p.inRecovery)
      throw new ClusterError(
        'BULWARK_E_CLUSTER_SWITCHOVER',
        `the primary ${o.from} is not accepting writes: nothing to switch over`,
      );
    if (!t?.reachable || !t.inRecovery || !streamsFrom(t, p))
      throw new ClusterError(
        'BULWARK_E_CLUSTER_SWITCHOVER',
        `${o.to} is not a replica streaming from ${o.from}: refusing to switch over`,
      );
    const behind = lsnDiff(p.currentLsn, t.receiveLsn) ?? Number.POSITIVE_INFINITY;
    if (behind < 1024 * 1024) break;
    if (Date.now() > deadline)
      throw new ClusterError(
        'BULWARK_E_CLUSTER_SWITCHOVER',
        `${o.to} is still ${behind} bytes behind ${o.from}: not switching over`,
      );
    log(`switchover: waiting for ${o.to} to catch up (${behind} bytes behind)`);
    await sleep(100);
  }
  const others = c.spec.nodes.map((n) => n.name).filter((n) => n !== o.to);
  guard();
  if (o.sync) await setSyncNames(c, o.to, others);
  await sql(c.dir, c.spec, findNode(c.spec, o.from), ['CHECKPOINT']);
  guard();
  const stopAt = Date.now();
  await fastShutdown(c, o.from);
  const ckpt = await checkpointLsn(c, o.from);
  const got = ckpt ? await waitReceived(c, o.to, ckpt, 10_000) : false;
  if (!got) {
    log(
      `switchover aborted: ${o.to} did not receive ${o.from}'s shutdown checkpoint ${ckpt}; restarting ${o.from} as primary`,
    );
    await startNode(c.dir, c.spec, findNode(c.spec, o.from));
    throw new ClusterError(
      'BULWARK_E_CLUSTER_SWITCHOVER',
      `${o.to} did not receive the shutdown checkpoint ${ckpt} of ${o.from}: switchover aborted, ${o.from} is primary again`,
    );
  }
  guard();
  const decidedAt = new Date();
  await promote(c, o.to);
  const writableAt = new Date();
  log(
    `switchover: ${o.to} accepts writes ${writableAt.getTime() - stopAt} ms after ${o.from} began its shutdown (checkpoint ${ckpt})`,
  );
  await ensureSlots(c, o.to);
  const oldData = clusterPaths(c.dir).dataDir(o.from);
  setAutoConf(oldData, {
    primary_conninfo: primaryConninfo(c.dir, c.spec, findNode(c.spec, o.to), o.from),
    primary_slot_name: o.from,
    synchronous_standby_names: '',
  });
  markStandby(oldData);
  await startNode(c.dir, c.spec, findNode(c.spec, o.from));
  await dropStaleSlots(c, o.from);
  for (const n of c.spec.nodes) {
    if (n.name === o.to || n.name === o.from) continue;
    await repoint(c, n.name, o.to).catch((err) => log(`switchover: could not re-point ${n.name}: ${err.message}`));
  }
  const entry: HistoryEntry = {
    kind: 'switchover',
    term: o.term + 1,
    from: o.from,
    to: o.to,
    by: o.by,
    startedAt: startedAt.toISOString(),
    decidedAt: decidedAt.toISOString(),
    writableAt: writableAt.toISOString(),
    durationMs: writableAt.getTime() - startedAt.getTime(),
    promoteMs: writableAt.getTime() - stopAt,
    reason: `planned switchover to ${o.to}; it received the shutdown checkpoint ${ckpt} of ${o.from}`,
    oldPrimary: 'restarted as replica (clean shutdown, no rewind needed)',
  };
  return { entry, syncSet: o.sync ? others : [] };
}
