import { Etcd3, EtcdLeaseInvalidError, type Lease } from 'etcd3';
import type { MemberInfo } from './decide.js';

/** Deadline of every etcd call: a partitioned member must not stall the agent's loop. */
const CALL_MS = 1500;

/** Reject when `p` has not settled within `ms` (etcd3 streams ignore call deadlines in some states). */
export function within<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`etcd did not answer within ${ms} ms`)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}

export interface LeaderRecord {
  name: string;
  host: string;
  port: number;
  api?: string;
  /** The etcd lease the key is bound to (an agent restarted with a new lease may take its key back). */
  lease: string;
}

/** Cluster-wide settings under config (written by `bulwark cluster pause|resume`). */
export interface AgentClusterConfig {
  paused?: boolean;
}

export interface ClusterView {
  leader: LeaderRecord | null;
  members: MemberInfo[];
  initializedBy: string | null;
  optime: string | null;
  config: AgentClusterConfig;
}

/** etcd keys of the node agents: /bulwark-agents/<scope>/{leader,members/<name>,initialize,optime,config}. */
export function agentPrefix(scope: string): string {
  return `/bulwark-agents/${scope}/`;
}

/**
 * The agent's view of etcd. One lease per agent (TTL `ttlSeconds`) carries both its member key and,
 * while it leads, the leader key: when the agent or its host goes away, both vanish together after the
 * TTL. The lease is renewed explicitly once per loop (not by etcd3's background keepalive) so that
 * the agent knows when it *sent* its last successful renewal — etcd's TTL counts from a moment after
 * that, so fencing relative to the send time is always early enough.
 */
export class AgentStore {
  readonly client: Etcd3;
  private readonly prefix: string;
  private lease: Lease | null = null;
  private leaseId: string | null = null;
  /** Send time of the last successful renewal (or grant). */
  lastRenewalSentAt: number | null = null;

  constructor(
    hosts: string[],
    scope: string,
    private readonly ttlSeconds: number,
  ) {
    this.client = new Etcd3({
      hosts,
      dialTimeout: 1000,
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + CALL_MS }),
    });
    this.prefix = agentPrefix(scope);
  }

  key(k: string): string {
    return this.prefix + k;
  }

  get leaseIdOrNull(): string | null {
    return this.leaseId;
  }

  /** Renew our lease (granting a new one if it expired); records the send time on success. Never throws. */
  async renew(): Promise<boolean> {
    const sentAt = Date.now();
    try {
      if (this.lease && this.leaseId) {
        const lease = this.lease;
        const res = await within(lease.keepaliveOnce({ deadline: Date.now() + CALL_MS }), CALL_MS).catch((err) => {
          if (err instanceof EtcdLeaseInvalidError) return { TTL: '0' };
          throw err;
        });
        if (Number(res.TTL) > 0) {
          this.lastRenewalSentAt = sentAt;
          return true;
        }
        // expired on etcd: our keys are gone; start over with a new lease
        this.lease = null;
        this.leaseId = null;
        this.lastRenewalSentAt = null;
      }
      const lease = this.client.lease(this.ttlSeconds, { autoKeepAlive: false });
      lease.on('lost', () => {});
      this.leaseId = await within(lease.grant(), CALL_MS);
      this.lease = lease;
      this.lastRenewalSentAt = sentAt;
      return true;
    } catch {
      return false;
    }
  }

  async putMember(info: MemberInfo): Promise<void> {
    if (!this.leaseId) return;
    await this.client
      .put(this.key(`members/${info.name}`))
      .value(JSON.stringify(info))
      .lease(this.leaseId);
  }

  /**
   * Take the leader key: create it if absent, or re-bind it when it names us under an older lease
   * (this agent restarted). Atomic on etcd; true when we now hold it.
   */
  async acquire(me: Omit<LeaderRecord, 'lease'>, current: LeaderRecord | null): Promise<boolean> {
    if (!this.leaseId) return false;
    const record: LeaderRecord = { ...me, lease: this.leaseId };
    const put = this.client.put(this.key('leader')).value(JSON.stringify(record)).lease(this.leaseId);
    const cond =
      current && current.name === me.name
        ? this.client.if(this.key('leader'), 'Value', '==', JSON.stringify(current))
        : this.client.if(this.key('leader'), 'Create', '==', 0);
    const res = await cond.then(put).commit();
    return res.succeeded;
  }

  /** Claim the right to initdb the cluster (once per scope). */
  async claimInitialize(name: string): Promise<boolean> {
    const res = await this.client
      .if(this.key('initialize'), 'Create', '==', 0)
      .then(this.client.put(this.key('initialize')).value(name))
      .commit();
    return res.succeeded;
  }

  /** The leader's WAL position, only while we hold the leader key (a deposed leader writes nothing). */
  async putOptime(lsn: string, leader: LeaderRecord): Promise<void> {
    await this.client
      .if(this.key('leader'), 'Value', '==', JSON.stringify(leader))
      .then(this.client.put(this.key('optime')).value(lsn))
      .commit();
  }

  /** Give the leader key up (clean shutdown): the others may elect at once instead of after the TTL. */
  async releaseLeader(leader: LeaderRecord): Promise<void> {
    await this.client
      .if(this.key('leader'), 'Value', '==', JSON.stringify(leader))
      .then(this.client.delete().key(this.key('leader')))
      .commit();
  }

  async read(): Promise<ClusterView> {
    const all = await within(this.client.getAll().prefix(this.prefix).strings(), CALL_MS);
    const view: ClusterView = { leader: null, members: [], initializedBy: null, optime: null, config: {} };
    for (const [k, v] of Object.entries(all)) {
      const rel = k.slice(this.prefix.length);
      if (rel === 'leader') view.leader = JSON.parse(v) as LeaderRecord;
      else if (rel === 'initialize') view.initializedBy = v;
      else if (rel === 'optime') view.optime = v;
      else if (rel === 'config') view.config = JSON.parse(v) as AgentClusterConfig;
      else if (rel.startsWith('members/')) view.members.push(JSON.parse(v) as MemberInfo);
    }
    return view;
  }

  async setConfig(update: AgentClusterConfig): Promise<AgentClusterConfig> {
    const cur = await this.client.get(this.key('config')).string();
    const next = { ...(cur ? (JSON.parse(cur) as AgentClusterConfig) : {}), ...update };
    await this.client.put(this.key('config')).value(JSON.stringify(next));
    return next;
  }

  /** Revoke the lease (member and leader keys go at once) and close the client. */
  async close(): Promise<void> {
    const lease = this.lease;
    this.lease = null;
    this.leaseId = null;
    if (lease) await lease.revoke().catch(() => {});
    this.client.close();
  }
}
