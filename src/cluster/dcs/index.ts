import type { ClusterState } from '../local/cluster.js';

/** Who holds the monitor leadership (published with the lease so others can forward requests). */
export interface LeaderInfo {
  name: string;
  /** HTTP address of that monitor's status endpoint, if it serves one. */
  http?: string;
  token: string;
}

/**
 * Where monitors coordinate (one file per backend, as Patroni's DCS drivers): who may act, the
 * cluster state (current primary, sync set, fenced nodes) and the published topology.
 *
 * Timing contract: `isLeader()` is synchronous and must return false as soon as this monitor cannot
 * be sure it still holds the leadership (lease lost, or not renewed within its TTL), without waiting
 * for an event; the monitor calls it before every step of every action, so a monitor that loses the
 * lease stops acting at once. `writeState()` writes only while the leadership is held (checked by the
 * backend itself, e.g. an etcd transaction on the leader key), so a deposed monitor cannot overwrite
 * its successor's decisions.
 */
export interface Dcs {
  readonly kind: 'local' | 'etcd';
  /** Try to take or keep the leadership; true when this monitor may act now. Never throws. */
  acquire(): Promise<boolean>;
  isLeader(): boolean;
  leader(): Promise<LeaderInfo | null>;
  readState(): Promise<ClusterState | null>;
  writeState(state: ClusterState): Promise<boolean>;
  publishTopology(topology: unknown): Promise<void>;
  readTopology(): Promise<unknown | null>;
  /** Give the leadership up (if held) and release resources. */
  close(): Promise<void>;
}
