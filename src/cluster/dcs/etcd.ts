import { randomBytes } from 'node:crypto';
import { Etcd3, type Lease } from 'etcd3';
import type { ClusterState } from '../local/cluster.js';
import type { Dcs, LeaderInfo } from './index.js';

export interface EtcdDcsOptions {
  /** etcd client URLs, e.g. ['http://127.0.0.1:2379']. */
  hosts: string[];
  /** Cluster name: keys live under /bulwark/<cluster>/. */
  cluster: string;
  name: string;
  http?: string;
  /** Leader lease TTL in seconds (default 5): how long a dead monitor blocks its successor. */
  ttl?: number;
}

/**
 * Monitor leadership through an etcd lease. The leader key /bulwark/<cluster>/leader is created
 * (only if absent) bound to our lease; while the lease lives nobody else can create it.
 *
 * Losing it: the etcd3 client emits 'lost' when a keepalive finds the lease gone, but if etcd is
 * unreachable no event comes in time, so isLeader() also says false once the last successful
 * keepalive is older than the TTL minus a safety margin — the other monitors may take over after the
 * TTL, and we must have stopped before then.
 */
export class EtcdDcs implements Dcs {
  readonly kind = 'etcd' as const;
  private readonly client: Etcd3;
  private readonly prefix: string;
  private readonly me: LeaderInfo;
  private readonly ttl: number;
  private lease: Lease | null = null;
  private held = false;
  private lastRenewal = 0;

  constructor(options: EtcdDcsOptions) {
    this.client = new Etcd3({
      hosts: options.hosts,
      dialTimeout: 1000,
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + 2000 }),
    });
    this.prefix = `/bulwark/${options.cluster}/`;
    this.ttl = options.ttl ?? 5;
    this.me = { name: options.name, http: options.http, token: randomBytes(8).toString('hex') };
  }

  private key(k: string): string {
    return this.prefix + k;
  }

  async acquire(): Promise<boolean> {
    if (this.held) return this.isLeader();
    try {
      const lease = this.client.lease(this.ttl, { autoKeepAlive: true });
      lease.on('lost', () => this.drop());
      lease.on('keepaliveSucceeded', () => {
        this.lastRenewal = Date.now();
      });
      const id = await lease.grant();
      const granted = Date.now();
      const res = await this.client
        .if(this.key('leader'), 'Create', '==', 0)
        .then(this.client.put(this.key('leader')).value(JSON.stringify(this.me)).lease(id))
        .commit();
      if (!res.succeeded) {
        lease.removeAllListeners();
        await lease.revoke().catch(() => {});
        return false;
      }
      this.lease = lease;
      this.lastRenewal = granted;
      this.held = true;
      return this.isLeader();
    } catch {
      return false;
    }
  }

  isLeader(): boolean {
    if (!this.held) return false;
    // Stand down before the lease can expire on etcd's clock (a successor may take the key then);
    // keepalives come every ttl/3, so the margin leaves room for one late renewal.
    const margin = Math.min(1000, this.ttl * 250);
    if (Date.now() - this.lastRenewal > this.ttl * 1000 - margin) {
      this.drop();
      return false;
    }
    return true;
  }

  private drop(): void {
    this.held = false;
    const lease = this.lease;
    this.lease = null;
    if (lease) {
      lease.removeAllListeners();
      lease.revoke().catch(() => {});
    }
  }

  async leader(): Promise<LeaderInfo | null> {
    const v = await this.client.get(this.key('leader')).string();
    return v ? (JSON.parse(v) as LeaderInfo) : null;
  }

  async readState(): Promise<ClusterState | null> {
    const v = await this.client.get(this.key('state')).string();
    return v ? (JSON.parse(v) as ClusterState) : null;
  }

  async writeState(state: ClusterState): Promise<boolean> {
    if (!this.isLeader()) return false;
    // Written only if the leader key still holds our token: a deposed monitor writes nothing.
    const res = await this.client
      .if(this.key('leader'), 'Value', '==', JSON.stringify(this.me))
      .then(this.client.put(this.key('state')).value(JSON.stringify({ ...state, updatedAt: new Date().toISOString() })))
      .commit();
    return res.succeeded;
  }

  async publishTopology(topology: unknown): Promise<void> {
    if (!this.isLeader()) return;
    await this.client
      .if(this.key('leader'), 'Value', '==', JSON.stringify(this.me))
      .then(this.client.put(this.key('topology')).value(JSON.stringify(topology)))
      .commit();
  }

  async readTopology(): Promise<unknown | null> {
    const v = await this.client.get(this.key('topology')).string();
    return v ? JSON.parse(v) : null;
  }

  async close(): Promise<void> {
    const wasLeader = this.held;
    const lease = this.lease;
    this.held = false;
    this.lease = null;
    if (wasLeader && lease) await lease.revoke().catch(() => {});
    this.client.close();
  }
}
