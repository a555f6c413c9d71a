import { describe, expect, it } from 'vitest';
import {
  type AgentObservation,
  decide,
  decideSync,
  fenceMarginMs,
  type LocalPostgres,
  leaseValid,
  type MemberInfo,
} from '../../src/cluster/agent/decide.js';
import { parseStandbyNames } from '../../src/cluster/agent/postgres.js';

const NOW = 1_000_000;
const TTL = 10_000;

const replica: LocalPostgres = {
  initialized: true,
  running: true,
  inRecovery: true,
  lsn: '0/3000000',
  timeline: 1,
  streamingFrom: '10.0.0.1:5432',
  upstream: '10.0.0.1:5432',
  needsRewind: false,
};
const primary: LocalPostgres = { ...replica, inRecovery: false, streamingFrom: null, upstream: null };

function obs(over: Partial<AgentObservation> = {}): AgentObservation {
  return {
    me: 'b',
    now: NOW,
    ttlMs: TTL,
    lastRenewalSentAt: NOW - 500,
    paused: false,
    nofailover: false,
    priority: 100,
    maxLagOnFailover: 16 * 1024 * 1024,
    pg: replica,
    leader: { name: 'a', host: '10.0.0.1', port: 5432 },
    members: [],
    initializedBy: 'a',
    leaderOptime: null,
    ...over,
  };
}

const member = (name: string, lsn: string, over: Partial<MemberInfo> = {}): MemberInfo => ({
  name,
  host: `h-${name}`,
  port: 5432,
  role: 'replica',
  lsn,
  timeline: 1,
  nofailover: false,
  priority: 100,
  ...over,
});

describe('agent decide(): the lease bounds the primary', () => {
  it('a primary whose lease renewal is older than TTL minus the margin fences itself (isolated primary never stays writable)', () => {
    const d = decide(obs({ me: 'a', pg: primary, lastRenewalSentAt: NOW - (TTL - fenceMarginMs(TTL)) }));
    expect(d.action).toBe('fence');
  });
  it('a primary renewed just inside the window keeps serving', () => {
    const d = decide(obs({ me: 'a', pg: primary, lastRenewalSentAt: NOW - (TTL - fenceMarginMs(TTL)) + 1 }));
    expect(d.action).toBe('none');
  });
  it('a primary that never renewed fences', () => {
    expect(decide(obs({ me: 'a', pg: primary, lastRenewalSentAt: null })).action).toBe('fence');
  });
  it('without a valid lease a replica takes no action (no promotion), a stopped node starts read-only', () => {
    expect(decide(obs({ leader: null, lastRenewalSentAt: null })).action).toBe('none');
    expect(decide(obs({ leader: null, lastRenewalSentAt: null, pg: { ...replica, running: false } })).action).toBe(
      'start-replica',
    );
  });
  it('the margin leaves at least 1.5 s and at most half the TTL', () => {
    expect(fenceMarginMs(10_000)).toBe(2500);
    expect(fenceMarginMs(3000)).toBe(1500);
    expect(leaseValid(NOW, NOW - 7000, 10_000)).toBe(true);
    expect(leaseValid(NOW, NOW - 7500, 10_000)).toBe(false);
  });
});

describe('agent decide(): leader and followers', () => {
  it('the leader restarts its crashed PostgreSQL in place', () => {
    expect(decide(obs({ me: 'a', pg: { ...primary, running: false, inRecovery: null } })).action).toBe('start-primary');
  });
  it('the leader holding a replica promotes it', () => {
    expect(decide(obs({ me: 'a', pg: replica })).action).toBe('promote');
  });
  it('a writable node while another holds the leader key is fenced (healed old primary)', () => {
    expect(decide(obs({ pg: primary })).action).toBe('fence');
  });
  it('a fenced former primary is rewound before it follows', () => {
    expect(decide(obs({ pg: { ...replica, needsRewind: true } })).action).toBe('rewind');
  });
  it('a replica streaming from elsewhere is re-pointed to the leader', () => {
    expect(decide(obs({ pg: { ...replica, upstream: '10.0.0.3:5432' } })).action).toBe('follow');
    expect(decide(obs()).action).toBe('none');
  });
  it('a stopped replica is started as a replica of the leader', () => {
    expect(decide(obs({ pg: { ...replica, running: false, inRecovery: null } })).action).toBe('start-replica');
  });
  it('a restarted agent takes its own stale leader key back', () => {
    expect(decide(obs({ me: 'a', pg: primary, leaderIsStale: true })).action).toBe('acquire');
  });
});

describe('agent decide(): election without a leader', () => {
  it('the replica furthest ahead takes the key; the others wait for it', () => {
    const members = [member('c', '0/2000000')];
    expect(decide(obs({ leader: null, members })).action).toBe('acquire');
    expect(decide(obs({ leader: null, members: [member('c', '0/4000000')] })).action).toBe('none');
  });
  it('a tie on WAL position goes to the higher priority, then the smaller name', () => {
    expect(decide(obs({ leader: null, members: [member('c', '0/3000000', { priority: 200 })] })).action).toBe('none');
    expect(decide(obs({ leader: null, members: [member('a', '0/3000000')] })).action).toBe('none');
    expect(decide(obs({ leader: null, members: [member('c', '0/3000000')] })).action).toBe('acquire');
  });
  it('nofailover members never take the key and are not counted as competitors', () => {
    expect(decide(obs({ leader: null, nofailover: true })).action).toBe('none');
    expect(decide(obs({ leader: null, members: [member('c', '0/9000000', { nofailover: true })] })).action).toBe(
      'acquire',
    );
  });
  it('stopped members are not competitors', () => {
    expect(decide(obs({ leader: null, members: [member('c', '0/9000000', { role: 'stopped' })] })).action).toBe(
      'acquire',
    );
  });
  it('a replica too far behind the last primary position does not promote', () => {
    const d = decide(obs({ leader: null, leaderOptime: '0/9000000', maxLagOnFailover: 1024 }));
    expect(d.action).toBe('none');
    expect(d.reason).toMatch(/behind/);
  });
  it('a running primary without a leader key takes it', () => {
    expect(decide(obs({ leader: null, pg: primary })).action).toBe('acquire');
  });
  it('paused: no automatic action at all, not even fencing', () => {
    expect(decide(obs({ leader: null, paused: true })).action).toBe('none');
    expect(decide(obs({ me: 'a', pg: primary, paused: true, lastRenewalSentAt: null })).action).toBe('none');
  });
});

describe('agent decide(): bootstrap', () => {
  it('the first agent of an empty scope initializes; the others clone from the leader', () => {
    const empty = { ...replica, initialized: false, running: false, inRecovery: null };
    expect(decide(obs({ pg: empty, leader: null, initializedBy: null })).action).toBe('bootstrap');
    expect(decide(obs({ pg: empty })).action).toBe('clone');
    expect(decide(obs({ pg: empty, leader: null })).action).toBe('none');
  });
});

describe('agent decide(): planned switchover', () => {
  const leaderObs = (over: Partial<AgentObservation> = {}) =>
    obs({ me: 'a', pg: primary, members: [member('b', '0/3000000'), member('c', '0/3000000')], ...over });
  it('the leader steps down once the switchover time has come, not before', () => {
    expect(decide(leaderObs({ switchover: { to: 'b', at: NOW } })).action).toBe('step-down');
    expect(decide(leaderObs({ switchover: { to: 'b', at: NOW + 1 } })).action).toBe('none');
  });
  it('a switchover to a member that is not a running replica is cancelled', () => {
    expect(decide(leaderObs({ switchover: { to: 'zz', at: NOW } })).action).toBe('cancel-switchover');
    const stopped = [member('b', '0/3000000', { role: 'stopped' })];
    expect(decide(leaderObs({ switchover: { to: 'b', at: NOW }, members: stopped })).action).toBe('cancel-switchover');
  });
  it('without a leader the target takes the key even if another member is ahead; the others wait for it', () => {
    const ahead = [member('c', '0/9000000')];
    expect(decide(obs({ leader: null, members: ahead, switchover: { to: 'b', at: NOW } })).action).toBe('acquire');
    expect(
      decide(obs({ me: 'c', leader: null, members: [member('b', '0/1000000')], switchover: { to: 'b', at: NOW } }))
        .action,
    ).toBe('none');
  });
});

describe('agent decide(): synchronous mode, failover only from the recorded sync set', () => {
  const noLeader = { leader: null };
  it('a replica outside the recorded synchronous set is never promoted, even when it is furthest ahead', () => {
    const d = decide(
      obs({
        ...noLeader,
        me: 'c',
        pg: { ...replica, lsn: '0/9000000' },
        members: [member('b', '0/3000000')],
        sync: { leader: 'a', members: ['b'] },
      }),
    );
    expect(d.action).toBe('none');
    expect(d.reason).toMatch(/not in the synchronous set/);
  });
  it('a member of the set promotes, not waiting for a non-member further ahead', () => {
    const d = decide(
      obs({ ...noLeader, me: 'b', members: [member('c', '0/9000000')], sync: { leader: 'a', members: ['b'] } }),
    );
    expect(d.action).toBe('acquire');
  });
  it('between two members of the set, the one with the most WAL (it has every acknowledged commit) promotes', () => {
    const sync = { leader: 'a', members: ['b', 'c'] };
    expect(decide(obs({ ...noLeader, me: 'b', members: [member('c', '0/3000100')], sync })).action).toBe('none');
    const c = decide(
      obs({ ...noLeader, me: 'c', pg: { ...replica, lsn: '0/3000100' }, members: [member('b', '0/3000000')], sync }),
    );
    expect(c.action).toBe('acquire');
  });
  it('a member of the set waits while another member is not visible (it may hold newer acknowledged commits)', () => {
    const d = decide(obs({ ...noLeader, me: 'b', members: [], sync: { leader: 'a', members: ['b', 'c'] } }));
    expect(d.action).toBe('none');
    expect(d.reason).toMatch(/c not visible/);
  });
  it('an empty recorded set (no healthy replica was synchronous): nobody is promoted', () => {
    expect(decide(obs({ ...noLeader, me: 'b', sync: { leader: 'a', members: [] } })).action).toBe('none');
  });
  it('without a sync key (asynchronous cluster) election is unchanged', () => {
    expect(decide(obs({ ...noLeader, me: 'b', sync: null })).action).toBe('acquire');
  });
});

describe('agent synchronous_standby_names parsing', () => {
  it('reads member names from the forms PostgreSQL accepts', () => {
    expect(parseStandbyNames('')).toEqual([]);
    expect(parseStandbyNames('ANY 1 ("n2", "n3")')).toEqual(['n2', 'n3']);
    expect(parseStandbyNames('FIRST 1 (n2)')).toEqual(['n2']);
    expect(parseStandbyNames('n2, n3')).toEqual(['n2', 'n3']);
  });
});

describe('agent decideSync(): the leader keeps synchronous_standby_names and the recorded set in step', () => {
  const base = {
    me: 'a',
    recorded: { leader: 'a', members: [] as string[] },
    streaming: [],
    inForce: [],
    caughtUp: [],
  };
  it("a new leader first records an empty set of its own (the old leader's members do not hold its commits)", () => {
    const s = decideSync({ ...base, recorded: { leader: 'z', members: ['a', 'b'] }, streaming: ['b'] });
    expect(s).toMatchObject({ action: 'record', members: [] });
  });
  it('into an empty set: the setting names the replica first, it is recorded only after it flushed past the switch', () => {
    expect(decideSync({ ...base, streaming: ['b'] })).toMatchObject({ action: 'configure', names: ['b'] });
    expect(decideSync({ ...base, streaming: ['b'], inForce: ['b'] }).action).toBe('wait-catch-up');
    expect(decideSync({ ...base, streaming: ['b'], inForce: ['b'], caughtUp: ['b'] })).toMatchObject({
      action: 'record',
      members: ['b'],
    });
  });
  it('a member joins the recorded set before synchronous_standby_names names it', () => {
    const s = decideSync({ ...base, recorded: { leader: 'a', members: ['b'] }, streaming: ['b', 'c'], inForce: ['b'] });
    expect(s).toMatchObject({ action: 'record', members: ['b', 'c'] });
    const next = decideSync({
      ...base,
      recorded: { leader: 'a', members: ['b', 'c'] },
      streaming: ['b', 'c'],
      inForce: ['b'],
    });
    expect(next).toMatchObject({ action: 'configure', names: ['b', 'c'] });
  });
  it('a dead member leaves the recorded set only after the setting without it is in force and a remaining member caught up', () => {
    const recorded = { leader: 'a', members: ['b', 'c'] };
    expect(decideSync({ ...base, recorded, streaming: ['b'], inForce: ['b', 'c'] })).toMatchObject({
      action: 'configure',
      names: ['b'],
    });
    expect(decideSync({ ...base, recorded, streaming: ['b'], inForce: ['b'] }).action).toBe('wait-catch-up');
    expect(decideSync({ ...base, recorded, streaming: ['b'], inForce: ['b'], caughtUp: ['b'] })).toMatchObject({
      action: 'record',
      members: ['b'],
    });
  });
  it('no healthy replica: the recorded set is emptied before the setting is cleared (no failover, writes go on)', () => {
    const recorded = { leader: 'a', members: ['b'] };
    expect(decideSync({ ...base, recorded, inForce: ['b'] })).toMatchObject({ action: 'record', members: [] });
    expect(decideSync({ ...base, inForce: ['b'] })).toMatchObject({ action: 'configure', names: [] });
    expect(decideSync(base).action).toBe('none');
  });
  it('steady state: nothing to do', () => {
    const s = decideSync({
      ...base,
      recorded: { leader: 'a', members: ['b', 'c'] },
      streaming: ['c', 'b'],
      inForce: ['b', 'c'],
    });
    expect(s.action).toBe('none');
  });
});
