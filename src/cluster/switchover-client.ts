import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ClusterError } from './errors.js';
import { appendHistory, type HistoryEntry } from './history.js';
import { readState, writeState } from './local/cluster.js';
import { clusterPaths, readSpec } from './local/layout.js';
import { switchover } from './monitor/switchover.js';
import { afterPromotion, initialState } from './monitor/tick.js';
import { probeAll } from './probe.js';
import { localTargets } from './status.js';

function liveMonitors(dir: string): Array<{ name: string; pid: number; http?: string }> {
  const d = clusterPaths(dir).monitorsDir;
  if (!existsSync(d)) return [];
  return readdirSync(d)
    .filter((f) => f.endsWith('.json'))
    .flatMap((f) => {
      try {
        const m = JSON.parse(readFileSync(join(d, f), 'utf8'));
        process.kill(m.pid, 0);
        return [m];
      } catch {
        return [];
      }
    });
}

/**
 * `bulwark cluster switchover --to NODE`: when a monitor runs, ask it (the leader does the work, so
 * it cannot mistake the planned shutdown for a failure); when none runs, do it here.
 */
export async function requestSwitchover(
  dir: string,
  to: string,
  log: (line: string) => void = () => {},
): Promise<HistoryEntry> {
  const spec = readSpec(dir);
  const monitors = liveMonitors(dir);
  if (monitors.length) {
    let url = monitors.find((m) => m.http)?.http;
    if (!url)
      throw new ClusterError(
        'BULWARK_E_CLUSTER_SWITCHOVER',
        `monitor ${monitors[0]!.name} runs without an HTTP endpoint, so it cannot be asked to switch over (and switching over behind its back would look like a failure to it)`,
      );
    for (let hop = 0; url && hop < 3; hop++) {
      log(`asking monitor at ${url}`);
      const res = await fetch(`${url}/switchover`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ to }),
        signal: AbortSignal.timeout(120_000),
      });
      const body = (await res.json()) as any;
      if (res.status === 200) return body as HistoryEntry;
      if (res.status === 409 && body.leader?.http && body.leader.http !== url) {
        url = body.leader.http;
        continue;
      }
      throw new ClusterError(
        'BULWARK_E_CLUSTER_SWITCHOVER',
        `monitor refused the switchover: ${body.error ?? res.status}`,
      );
    }
    throw new ClusterError('BULWARK_E_CLUSTER_SWITCHOVER', 'no monitor leader with an HTTP endpoint found');
  }
  const obs = await probeAll(localTargets(dir), 2000);
  const writable = obs.filter((o) => o.reachable && o.inRecovery === false);
  const stored = readState(dir);
  const from = stored?.primary && writable.some((w) => w.name === stored.primary) ? stored.primary : writable[0]?.name;
  if (!from || writable.length !== 1)
    throw new ClusterError('BULWARK_E_CLUSTER_SWITCHOVER', `expected exactly one primary, found ${writable.length}`);
  const { entry, syncSet } = await switchover(
    { dir, spec },
    { from, to, sync: spec.sync, term: stored?.term ?? 1, by: 'cli', log },
  );
  const next = afterPromotion(
    initialState({ ...stored, primary: from, term: stored?.term ?? 1 }),
    from,
    to,
    syncSet,
    false,
  );
  writeState(dir, {
    primary: next.primary,
    term: next.term,
    syncSet: next.syncSet,
    fenced: next.fenced,
    updatedBy: 'cli',
  });
  appendHistory(dir, entry);
  return entry;
}
