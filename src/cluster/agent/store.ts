import type { MemberInfo, SyncRecord } from './decide.js';

/** Deadline of every etcd call: a partitioned or frozen member must not stall the agent's loop. */
const CALL_MS = 1500;

export interface LeaderRecord {
  name: string;
  host: string;
  port: number;
  api?: string;
  /** The etcd lease the key is bound to (an agent restarted with a new lease may take its key back). */
  lease: string;
}

/** Cluster-wide settings under config (written by `bulwark cluster pause|resume|set`). */
export interface AgentClusterConfig {
  paused?: boolean;
  /** postgresql.conf settings every agent applies to its node (ALTER SYSTEM + reload). */
  settings?: Record<string, string>;
  /** Synchronous mode for the whole cluster (`bulwark cluster set --sync on`), as if every agent ran with --sync. */
  synchronous?: boolean;
}

/** Per-member tags under tags/<name> (written by `bulwark cluster tag`); they override the agent's flags. */
export interface MemberTags {
  nofailover?: boolean;
  priority?: number;
}

/** A planned switchover (written by `bulwark cluster switchover --etcd`): `to` takes over at `at` (ms epoch). */
export interface SwitchoverRequest {
  to: string;
  at: number;
}

export interface ClusterView {
  leader: LeaderRecord | null;
  members: MemberInfo[];
  initializedBy: string | null;
  optime: string | null;
  config: AgentClusterConfig;
  tags: Record<string, MemberTags>;
  switchover: SwitchoverRequest | null;
  /** The recorded synchronous set (synchronous mode), null when absent. */
  sync: SyncRecord | null;
}

/** etcd keys of the node agents: /bulwark-agents/<scope>/{leader,members/<name>,initialize,optime,config}. */
export function agentPrefix(scope: string): string {
  return `/bulwark-agents/${scope}/`;
}

/**
 * The agent's view of etcd, through etcd's JSON gateway (/v3/...) with plain HTTP requests: every
 * call has a hard deadline, and a member that fails or does not answer in time is left for the
 * next one (round robin), so one partitioned or frozen etcd member costs one call, not the lease.
 *
 * One lease per agent (TTL `ttlSeconds`) carries both its member key and, while it leads, the
 * leader key: when the agent or its host goes away, both vanish together after the TTL. The lease is
 * renewed explicitly once per loop so the agent knows when it *sent* its last successful renewal —
 * etcd's TTL counts from a moment after that, so fencing relative to the send time is always early
 * enough.
 */
export class AgentStore {
  private readonly prefix: string;
  private readonly endpoints: string[];
  private current = 0;
  private leaseId: string | null = null;
  /** Send time of the last successful renewal (or grant). */
  lastRenewalSentAt: number | null = null;

  constructor(
    hosts: string[],
    scope: string,
    private readonly ttlSeconds: number,
  ) {
    this.endpoints = hosts.map((h) => h.replace(/\/+$/, ''));
    this.prefix = agentPrefix(scope);
  }

  key(k: string): string {
    return this.prefix + k;
  }

  get leaseIdOrNull(): string | null {
    return this.leaseId;
  }

  /** POST to the current member; on failure move on to the next member and try once more there. */
  private async call<T = any>(path: string, body: unknown, attempts = 2): Promise<T> {
    let last: unknown;
    for (let i = 0; i < Math.min(attempts, this.endpoints.length); i++) {
      const endpoint = this.endpoints[this.current]!;
      try {
        const res = await fetch(`${endpoint}/v3/${path}`, {
          method: 'POST',
          body: JSON.stringify(body),
          headers: { 'content-type': 'application/json' },
          signal: AbortSignal.timeout(CALL_MS),
        });
        const text = await res.text();
        const json = text ? JSON.parse(text.split('\n')[0]!) : {};
        if (!res.ok || json.error) {
          const message = json.error?.message ?? json.message ?? json.error ?? `HTTP ${res.status}`;
          // a lease etcd does not know is an answer, not a failed member
          if (/lease not found/.test(String(message))) throw new LeaseNotFound();
          throw new Error(`etcd ${endpoint}: ${message}`);
        }
        return json as T;
      } catch (err) {
        if (err instanceof LeaseNotFound) throw err;
        last = err;
        this.current = (this.current + 1) % this.endpoints.length;
      }
    }
    throw last;
  }

  /** Renew our lease (granting a new one if it expired); records the send time on success. Never throws. */
  async renew(): Promise<boolean> {
    const sentAt = Date.now();
    try {
      if (this.leaseId) {
        const res = await this.call<{ result?: { TTL?: string } }>('lease/keepalive', { ID: this.leaseId }).catch(
          (err) => {
            if (err instanceof LeaseNotFound) return { result: { TTL: '0' } };
            throw err;
          },
        );
        if (Number(res.result?.TTL ?? 0) > 0) {
          this.lastRenewalSentAt = sentAt;
          return true;
        }
        // expired on etcd: our keys are gone; start over with a new lease
        this.leaseId = null;
        this.lastRenewalSentAt = null;
      }
      const granted = await this.call<{ ID: string }>('lease/grant', { TTL: this.ttlSeconds });
      this.leaseId = String(granted.ID);
      this.lastRenewalSentAt = sentAt;
      return true;
    } catch {
      return false;
    }
  }

  private put(key: string, value: string, lease?: string | null) {
    return { key: b64(key), value: b64(value), ...(lease ? { lease } : {}) };
  }

  private async txn(compare: Record<string, unknown>, success: Array<Record<string, unknown>>): Promise<boolean> {
    const res = await this.call<{ succeeded?: boolean }>('kv/txn', { compare: [compare], success });
    return !!res.succeeded;
  }

  private keyAbsent(k: string) {
    return { key: b64(this.key(k)), target: 'CREATE', result: 'EQUAL', create_revision: '0' };
  }

  private valueIs(k: string, value: string) {
    return { key: b64(this.key(k)), target: 'VALUE', result: 'EQUAL', value: b64(value) };
  }

  async putMember(info: MemberInfo): Promise<void> {
    if (!this.leaseId) return;
    await this.call('kv/put', this.put(this.key(`members/${info.name}`), JSON.stringify(info), this.leaseId));
  }

  /**
   * Take the leader key: create it if absent, or re-bind it when it names us under an older lease
   * (this agent restarted). Atomic on etcd; true when we now hold it.
   */
  async acquire(me: Omit<LeaderRecord, 'lease'>, current: LeaderRecord | null): Promise<boolean> {
    if (!this.leaseId) return false;
    const record: LeaderRecord = { ...me, lease: this.leaseId };
    const cond =
      current && current.name === me.name ? this.valueIs('leader', JSON.stringify(current)) : this.keyAbsent('leader');
    return this.txn(cond, [{ request_put: this.put(this.key('leader'), JSON.stringify(record), this.leaseId) }]);
  }

  /** Claim the right to initdb the cluster (once per scope). */
  async claimInitialize(name: string): Promise<boolean> {
    return this.txn(this.keyAbsent('initialize'), [{ request_put: this.put(this.key('initialize'), name) }]);
  }

  /** The leader's WAL position, only while we hold the leader key (a deposed leader writes nothing). */
  async putOptime(lsn: string, leader: LeaderRecord): Promise<void> {
    await this.txn(this.valueIs('leader', JSON.stringify(leader)), [
      { request_put: this.put(this.key('optime'), lsn) },
    ]);
  }

  /**
   * Record the synchronous set, only while we hold the leader key (atomic with that check): a deposed
   * leader must not change who may be promoted. True when written.
   */
  async putSync(record: SyncRecord, leader: LeaderRecord): Promise<boolean> {
    return this.txn(this.valueIs('leader', JSON.stringify(leader)), [
      { request_put: this.put(this.key('sync'), JSON.stringify(record)) },
    ]);
  }

  /** Remove the sync key (synchronous mode turned off), only while we hold the leader key. */
  async deleteSync(leader: LeaderRecord): Promise<boolean> {
    return this.txn(this.valueIs('leader', JSON.stringify(leader)), [
      { request_delete_range: { key: b64(this.key('sync')) } },
    ]);
  }

  /** Give the leader key up (clean shutdown): the others may elect at once instead of after the TTL. */
  async releaseLeader(leader: LeaderRecord): Promise<void> {
    await this.txn(this.valueIs('leader', JSON.stringify(leader)), [
      { request_delete_range: { key: b64(this.key('leader')) } },
    ]);
  }

  async read(): Promise<ClusterView> {
    const res = await this.call<{ kvs?: Array<{ key: string; value?: string }> }>('kv/range', {
      key: b64(this.prefix),
      range_end: b64(prefixEnd(this.prefix)),
    });
    const view: ClusterView = {
      leader: null,
      members: [],
      initializedBy: null,
      optime: null,
      config: {},
      tags: {},
      switchover: null,
      sync: null,
    };
    for (const kv of res.kvs ?? []) {
      const rel = unb64(kv.key).slice(this.prefix.length);
      const v = kv.value ? unb64(kv.value) : '';
      if (rel === 'leader') view.leader = JSON.parse(v) as LeaderRecord;
      else if (rel === 'initialize') view.initializedBy = v;
      else if (rel === 'optime') view.optime = v;
      else if (rel === 'config') view.config = JSON.parse(v) as AgentClusterConfig;
      else if (rel === 'switchover') view.switchover = JSON.parse(v) as SwitchoverRequest;
      else if (rel === 'sync') view.sync = JSON.parse(v) as SyncRecord;
      else if (rel.startsWith('tags/')) view.tags[rel.slice(5)] = JSON.parse(v) as MemberTags;
      else if (rel.startsWith('members/')) view.members.push(JSON.parse(v) as MemberInfo);
    }
    return view;
  }

  async setConfig(update: AgentClusterConfig): Promise<AgentClusterConfig> {
    const next = { ...(await this.read()).config, ...update };
    await this.call('kv/put', this.put(this.key('config'), JSON.stringify(next)));
    return next;
  }

  async setTags(name: string, update: MemberTags): Promise<MemberTags> {
    const next = { ...(await this.read()).tags[name], ...update };
    await this.call('kv/put', this.put(this.key(`tags/${name}`), JSON.stringify(next)));
    return next;
  }

  async requestSwitchover(request: SwitchoverRequest): Promise<void> {
    await this.call('kv/put', this.put(this.key('switchover'), JSON.stringify(request)));
  }

  /** Remove the switchover request, only if it is still the one we saw (a newer one stays). */
  async clearSwitchover(request: SwitchoverRequest): Promise<void> {
    await this.txn(this.valueIs('switchover', JSON.stringify(request)), [
      { request_delete_range: { key: b64(this.key('switchover')) } },
    ]);
  }

  /** Revoke the lease (member and leader keys go at once). */
  async close(): Promise<void> {
    const id = this.leaseId;
    this.leaseId = null;
    if (id) await this.call('lease/revoke', { ID: id }).catch(() => {});
  }
}

class LeaseNotFound extends Error {}

const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');
const unb64 = (s: string) => Buffer.from(s, 'base64').toString('utf8');

/** The range end that selects every key starting with `prefix` (etcd's prefix convention). */
function prefixEnd(prefix: string): string {
  return prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1);
}
