import { describe, expect, it } from 'vitest';
import { initialState, type MonitorState, type TickConfig, tick } from '../../src/cluster/monitor/tick.js';
import type { NodeObservation } from '../../src/cluster/probe.js';

// The failover decision without servers: every branch of tick() on hand-made observations.
const config: TickConfig = {
  failureThreshold: 3,
  sync: false,
  maxLagOnFailover: 16 * 1024 * 1024,
  repointAfter: 3,
  rejoinAfter: 10,
  priorities: { node1: 100, node2: 90, node3: 80 },
};
const port = { node1: 15001, node2: 15002, node3: 15003 } as const;
type Name = keyof typeof port;

function primary(name: Name, lsn = '0/5000000', sync = ''): NodeObservation {
  return {
    name,
    host: '127.0.0.1',
    port: port[name],
    reachable: true,
    inRecovery: false,
    currentLsn: lsn,
    syncStandbyNames: sync,
  };
}
function replica(name: Name, from: Name | null, receiveLsn = '0/5000000'): NodeObservation {
  return {
    name,
    host: '127.0.0.1',
    port: port[name],
    reachable: true,
    inRecovery: true,
    receiveLsn,
    replayLsn: receiveLsn,
    walReceiver: from ? { status: 'streaming', senderHost: '127.0.0.1', senderPort: port[from], lastMsgAt: 0 } : null,
  };
}
function down(name: Name): NodeObservation {
  return { name, host: '127.0.0.1', port: port[name], reachable: false, error: 'connect ECONNREFUSED' };
}

function run(state: MonitorState, rounds: NodeObservation[][], cfg = config) {
  let s = state;
  const decisions = [];
  for (const [i, obs] of rounds.entries()) {
    const d = tick(s, obs, cfg, 1000 * i);
    decisions.push(d);
    s = d.state;
  }
  return decisions;
}

const healthy = () => [primary('node1'), replica('node2', 'node1'), replica('node3', 'node1')];
const start = () => initialState({ primary: 'node1' });

describe('monitor tick()', () => {
  it('adopts the only writable node when no primary is recorded', () => {
    const d = tick(initialState(), healthy(), config, 0);
    expect(d.action).toEqual({ type: 'adopt', node: 'node1' });
  });

  it('refuses to choose between two writable nodes with no recorded primary', () => {
    const d = tick(initialState(), [primary('node1'), primary('node2')], config, 0);
    expect(d.action.type).toBe('none');
    expect(d.reason).toMatch(/refusing to choose/);
  });

  it('does nothing while the primary is healthy', () => {
    const d = tick(start(), healthy(), config, 0);
    expect(d.action.type).toBe('none');
    expect(d.reason).toMatch(/node1 healthy/);
  });

  it('does not fail over on a one-off blip (failures below the threshold, then recovery)', () => {
    const ds = run(start(), [
      [down('node1'), replica('node2', null), replica('node3', null)],
      [down('node1'), replica('node2', null), replica('node3', null)],
      healthy(),
      [down('node1'), replica('node2', null), replica('node3', null)],
    ]);
    expect(ds.map((d) => d.action.type)).toEqual(['none', 'none', 'none', 'none']);
    expect(ds[3]!.reason).toMatch(/failed probe 1\/3/);
  });

  it('fails over after N consecutive failures to the replica with the highest received LSN', () => {
    const lost = [down('node1'), replica('node2', null, '0/5000100'), replica('node3', null, '0/5000200')];
    const ds = run(start(), [healthy(), lost, lost, lost]);
    expect(ds.map((d) => d.action.type)).toEqual(['none', 'none', 'none', 'failover']);
    expect(ds[3]!.action).toEqual({ type: 'failover', from: 'node1', to: 'node3' });
    expect(ds[3]!.reason).toMatch(/promoting node3 \(received 0\/5000200/);
    expect(ds[3]!.evidence).toMatchObject({ failedProbes: 3, primary: 'node1' });
  });

  it('breaks a tie on received LSN by priority', () => {
    const lost = [down('node1'), replica('node2', null), replica('node3', null)];
    const ds = run(start(), [lost, lost, lost], { ...config, priorities: { node2: 10, node3: 50 } });
    expect(ds[2]!.action).toEqual({ type: 'failover', from: 'node1', to: 'node3' });
  });

  it('never promotes a node with priority 0', () => {
    const lost = [down('node1'), replica('node2', null, '0/6000000'), replica('node3', null)];
    const ds = run(start(), [lost, lost, lost], { ...config, priorities: { node2: 0, node3: 1 } });
    expect(ds[2]!.action).toEqual({ type: 'failover', from: 'node1', to: 'node3' });
  });

  it('does not fail over while a replica still streams from the primary (monitor cut off)', () => {
    const partitioned = [down('node1'), replica('node2', 'node1'), replica('node3', null)];
    const ds = run(start(), [partitioned, partitioned, partitioned, partitioned]);
    expect(ds.every((d) => d.action.type === 'none')).toBe(true);
    expect(ds[3]!.reason).toMatch(/node2 still stream from it/);
  });

  it('counts a primary that went into recovery as failed', () => {
    const demoted = [replica('node1', null), replica('node2', null), replica('node3', null, '0/5000001')];
    const ds = run(start(), [demoted, demoted, demoted]);
    expect(ds[2]!.action).toEqual({ type: 'failover', from: 'node1', to: 'node3' });
  });

  it('has nothing to promote when no replica is reachable', () => {
    const ds = run(start(), [
      [down('node1'), down('node2'), down('node3')],
      [down('node1'), down('node2'), down('node3')],
      [down('node1'), down('node2'), down('node3')],
    ]);
    expect(ds[2]!.action.type).toBe('none');
    expect(ds[2]!.reason).toMatch(/no replica can be promoted/);
  });

  it('async: refuses a candidate too far behind the last primary position seen', () => {
    const lost = [down('node1'), replica('node2', null, '0/1000000'), replica('node3', null, '0/1000000')];
    const ds = run(start(), [
      [primary('node1', '0/9000000'), replica('node2', 'node1'), replica('node3', 'node1')],
      lost,
      lost,
      lost,
    ]);
    expect(ds[3]!.action.type).toBe('none');
    expect(ds[3]!.reason).toMatch(/bytes behind/);
  });

  it('sync: waits while a member of the synchronous set cannot be observed', () => {
    const cfg = { ...config, sync: true };
    const s = initialState({ primary: 'node1', syncSet: ['node2', 'node3'] });
    const lost = [down('node1'), replica('node2', null), down('node3')];
    const ds = run(s, [lost, lost, lost], cfg);
    expect(ds[2]!.action.type).toBe('none');
    expect(ds[2]!.reason).toMatch(/sync standby node3 cannot be checked/);
  });

  it('sync: keeps synchronous_standby_names listing the replicas, never empty', () => {
    const cfg = { ...config, sync: true };
    const d = tick(initialState({ primary: 'node1' }), healthy(), cfg, 0);
    expect(d.action).toEqual({ type: 'set-sync', node: 'node1', names: ['node2', 'node3'] });
    const d2 = tick(
      initialState({ primary: 'node1' }),
      [primary('node1'), replica('node2', null), down('node3')],
      cfg,
      0,
    );
    expect(d2.action).toEqual({ type: 'set-sync', node: 'node1', names: ['node2', 'node3'] });
    const ok = tick(
      d.state,
      [primary('node1', '0/1', 'ANY 1 ("node2", "node3")'), replica('node2', 'node1'), replica('node3', 'node1')],
      cfg,
      0,
    );
    expect(ok.action.type).toBe('none');
  });

  it('async: clears a leftover synchronous_standby_names', () => {
    const d = tick(start(), [primary('node1', '0/1', 'ANY 1 (node2)'), replica('node2', 'node1')], config, 0);
    expect(d.action).toEqual({ type: 'set-sync', node: 'node1', names: [] });
  });

  it('adopts a node promoted by a failover whose bookkeeping was lost, instead of promoting another', () => {
    // regression guard: a monitor that died after pg_promote() but before recording the new primary
    const obs = [down('node1'), primary('node2'), replica('node3', null)];
    const ds = run(start(), [obs, obs, obs]);
    expect(ds[0]!.action).toEqual({ type: 'adopt', node: 'node2', fence: 'node1' });
    expect(ds.every((d) => d.action.type !== 'failover')).toBe(true);
  });

  it('fences a second writable node', () => {
    const d = tick(start(), [primary('node1'), primary('node2'), replica('node3', 'node1')], config, 0);
    expect(d.action).toEqual({ type: 'fence', node: 'node2' });
  });

  it('rejoins a fenced old primary that is down, and forgets it once it streams', () => {
    const s = initialState({ primary: 'node2', fenced: ['node1'] });
    const d = tick(s, [down('node1'), primary('node2'), replica('node3', 'node2')], config, 0);
    expect(d.action).toEqual({ type: 'rejoin', node: 'node1' });
    const d2 = tick(d.state, [replica('node1', 'node2'), primary('node2'), replica('node3', 'node2')], config, 0);
    expect(d2.action.type).toBe('none');
    expect(d2.state.fenced).toEqual([]);
  });

  it('re-points a replica that does not stream from the primary, then rewinds it if that did not help', () => {
    const obs = [primary('node2'), replica('node1', 'node2'), replica('node3', 'node1')];
    const actions = run(
      initialState({ primary: 'node2' }),
      Array.from({ length: 10 }, () => obs),
    ).map((d) => d.action);
    expect(actions[2]).toEqual({ type: 'repoint', node: 'node3' });
    expect(actions[9]).toEqual({ type: 'rejoin', node: 'node3' });
    expect(actions.filter((a) => a.type !== 'none')).toHaveLength(2);
  });

  it('sync: a dead sync replica leaves the recorded set once a remaining member flushed past the switch, so a later primary loss fails over (bug: it never did)', () => {
    const cfg = { ...config, sync: true };
    const s = initialState({ primary: 'node1', syncSet: ['node2', 'node3'] });
    const names = 'ANY 1 ("node2", "node3")';
    const withNode2 = (lsn: string, flush: string, sync: string) => ({
      ...primary('node1', lsn, sync),
      replication: [
        {
          name: 'node2',
          state: 'streaming',
          flushLsn: flush,
          replayLsn: flush,
          replayLagSeconds: 0,
          syncState: 'quorum',
        },
      ],
    });
    const ds = run(
      s,
      [
        // node3 died: synchronous_standby_names is narrowed to the replica that streams
        [withNode2('0/5000000', '0/5000000', names), replica('node2', 'node1'), down('node3')],
        // the narrowed setting is seen in force; one probe later the primary's position is the mark
        [withNode2('0/5000100', '0/5000100', 'ANY 1 ("node2")'), replica('node2', 'node1', '0/5000100'), down('node3')],
        [withNode2('0/6000000', '0/5000100', 'ANY 1 ("node2")'), replica('node2', 'node1', '0/5000100'), down('node3')],
        // node2 has not flushed up to the mark yet: node3 stays in the record
        [withNode2('0/6000100', '0/5FFFFFF', 'ANY 1 ("node2")'), replica('node2', 'node1', '0/5FFFFFF'), down('node3')],
        [withNode2('0/6000200', '0/6000000', 'ANY 1 ("node2")'), replica('node2', 'node1', '0/6000000'), down('node3')],
      ],
      cfg,
    );
    expect(ds[0]!.action).toEqual({ type: 'set-sync', node: 'node1', names: ['node2'] });
    expect(ds[0]!.state.syncSet).toEqual(['node2', 'node3']);
    expect(ds.slice(1, 4).map((d) => d.state.syncSet)).toEqual([
      ['node2', 'node3'],
      ['node2', 'node3'],
      ['node2', 'node3'],
    ]);
    expect(ds[4]!.state.syncSet).toEqual(['node2']);
    expect(ds[4]!.reason).toMatch(/node3 left the synchronous set.*node2 flushed 0\/6000000, past 0\/6000000/);
    // now the primary dies too: node2 holds every acknowledged commit, it is promoted
    const lost = [down('node1'), replica('node2', null, '0/6000300'), down('node3')];
    const after = run(ds[4]!.state, [lost, lost, lost], cfg);
    expect(after[2]!.action).toEqual({ type: 'failover', from: 'node1', to: 'node2' });
  });

  it('sync: a member joins the recorded set before synchronous_standby_names names it', () => {
    const cfg = { ...config, sync: true };
    const s = initialState({ primary: 'node1', syncSet: ['node2'] });
    const d = tick(
      s,
      [primary('node1', '0/1', 'ANY 1 ("node2")'), replica('node2', 'node1'), replica('node3', 'node1')],
      cfg,
      0,
    );
    expect(d.action).toEqual({ type: 'set-sync', node: 'node1', names: ['node2', 'node3'] });
    expect(d.state.syncSet).toEqual(['node2', 'node3']);
  });

  it('restarts a crashed replica in place, at most once per backoff; leaves a cleanly stopped one down', () => {
    const crashed = { ...down('node3'), local: { running: false, crashed: true } };
    const ds = run(start(), [
      [primary('node1'), replica('node2', 'node1'), crashed],
      [primary('node1'), replica('node2', 'node1'), crashed],
    ]);
    expect(ds[0]!.action).toEqual({ type: 'restart', node: 'node3', role: 'replica' });
    expect(ds[1]!.action.type).toBe('none');
    const later = tick(ds[1]!.state, [primary('node1'), replica('node2', 'node1'), crashed], config, 20_000);
    expect(later.action).toEqual({ type: 'restart', node: 'node3', role: 'replica' });
    const stopped = { ...down('node3'), local: { running: false, crashed: false } };
    expect(tick(start(), [primary('node1'), replica('node2', 'node1'), stopped], config, 0).action.type).toBe('none');
  });

  it('never restarts a fenced old primary: it is rejoined as a replica instead', () => {
    const s = initialState({ primary: 'node2', fenced: ['node1'] });
    const fencedDown = { ...down('node1'), local: { running: false, crashed: true } };
    const d = tick(s, [fencedDown, primary('node2'), replica('node3', 'node2')], config, 0);
    expect(d.action).toEqual({ type: 'rejoin', node: 'node1' });
  });

  it('restarts a crashed primary in place when no replica can be promoted and none is on a newer timeline', () => {
    const alone = { ...config, priorities: { node1: 100 } };
    const crashedPrimary = { ...down('node1'), timeline: 3, local: { running: false, crashed: true } };
    const ds = run(initialState({ primary: 'node1' }), [[crashedPrimary], [crashedPrimary], [crashedPrimary]], alone);
    expect(ds.map((d) => d.action.type)).toEqual(['none', 'none', 'restart']);
    expect(ds[2]!.action).toEqual({ type: 'restart', node: 'node1', role: 'primary' });
    expect(ds[2]!.reason).toMatch(/no replica can be promoted.*restarting it in place as the primary/);
    // a node on a newer timeline was promoted by someone: never restart the old one as a primary
    const newer = { ...replica('node2', null), reachable: false, inRecovery: undefined, timeline: 4 };
    const blocked = run(
      initialState({ primary: 'node1' }),
      [
        [crashedPrimary, newer],
        [crashedPrimary, newer],
        [crashedPrimary, newer],
      ],
      alone,
    );
    expect(blocked.every((d) => d.action.type === 'none')).toBe(true);
    // a cleanly stopped primary is left down
    const stopped = { ...crashedPrimary, local: { running: false, crashed: false } };
    const left = run(initialState({ primary: 'node1' }), [[stopped], [stopped], [stopped]], alone);
    expect(left.every((d) => d.action.type === 'none')).toBe(true);
  });

  it('prefers a failover to restarting a crashed primary when a replica can be promoted', () => {
    const crashedPrimary = { ...down('node1'), local: { running: false, crashed: true } };
    const lost = [crashedPrimary, replica('node2', null), replica('node3', null)];
    const ds = run(start(), [healthy(), lost, lost, lost]);
    expect(ds[3]!.action).toEqual({ type: 'failover', from: 'node1', to: 'node2' });
  });

  it('sync: restarts a crashed sync member while the primary is lost, so the failover can check it', () => {
    const cfg = { ...config, sync: true };
    const s = initialState({ primary: 'node1', syncSet: ['node2', 'node3'] });
    const lost = [
      down('node1'),
      replica('node2', null),
      { ...down('node3'), local: { running: false, crashed: true } },
    ];
    const d = tick(s, lost, cfg, 0);
    expect(d.action).toEqual({ type: 'restart', node: 'node3', role: 'replica' });
  });

  it('permanent slots: created on the primary first, then on replicas; a replica copy advances to the primary slot, capped at its replay position', () => {
    const cfg = { ...config, permanentSlots: ['archiver'] };
    const slot = (restartLsn: string | null) => [{ name: 'archiver', type: 'physical', restartLsn, active: false }];
    const p0 = { ...primary('node1'), slots: [] };
    expect(tick(start(), [p0, replica('node2', 'node1')], cfg, 0).action).toEqual({
      type: 'slots',
      node: 'node1',
      create: ['archiver'],
      advance: [],
    });
    const p1 = { ...primary('node1', '0/9000000'), slots: slot('0/8000000') };
    const r2 = { ...replica('node2', 'node1', '0/7000000'), slots: [] };
    expect(tick(start(), [p1, r2], cfg, 0).action).toEqual({
      type: 'slots',
      node: 'node2',
      create: ['archiver'],
      advance: [],
    });
    // behind by more than a segment: advanced, but not past what the replica replayed
    const behind = { ...replica('node2', 'node1', '0/7000000'), slots: slot('0/1000000') };
    expect(tick(start(), [p1, behind], cfg, 0).action).toEqual({
      type: 'slots',
      node: 'node2',
      create: [],
      advance: [{ name: 'archiver', lsn: '0/7000000' }],
    });
    // within a segment: left alone
    const close = { ...replica('node2', 'node1', '0/9000000'), slots: slot('0/7800000') };
    expect(tick(start(), [p1, close], cfg, 0).action.type).toBe('none');
  });
});
