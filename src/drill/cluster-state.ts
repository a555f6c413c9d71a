import { type Dcs, EtcdDcs, LocalDcs, readState, type Topology } from '../cluster/index.js';

/**
 * Where a configured drill reads what the user's failover monitor decided: the current primary, the
 * published topology and whether a monitor runs. A monitor alone on its cluster folder writes them
 * there (state.json, topology.json, its lock file); monitors coordinated through etcd publish them
 * under /bulwark/<scope>/ (leader, state, topology). The drill only reads: it never takes the
 * leadership and never writes the state.
 */
export interface ClusterStateReader {
  /** Where the state is read, for messages. */
  readonly where: string;
  primary(): Promise<string | undefined>;
  topology(): Promise<Topology | null>;
  /** A monitor runs: a live pid holds the folder's lock, or a monitor holds the etcd leader key. */
  monitorRunning(): Promise<boolean>;
  close(): Promise<void>;
}

export function clusterStateReader(dir: string, etcd?: { hosts: string[]; scope: string }): ClusterStateReader {
  // The monitors' own store, read only (the reader never acquires, so it never takes the leadership).
  const dcs: Dcs = etcd
    ? new EtcdDcs({ hosts: etcd.hosts, cluster: etcd.scope, name: 'bulwark-drill-reader' })
    : new LocalDcs(dir, { name: 'bulwark-drill-reader' });
  // a store answering late, not at all or half-written is "not known yet" for a poll, never a crash of the step
  const orNull = <T>(p: Promise<T>) => p.catch(() => null);
  return {
    where: etcd ? `etcd ${etcd.hosts.join(',')} /bulwark/${etcd.scope}/` : dir,
    // as the monitors themselves: until a leader writes a state in etcd, the folder's is on record
    primary: async () => (await orNull(dcs.readState()))?.primary ?? readState(dir)?.primary ?? undefined,
    topology: async () => (await orNull(dcs.readTopology())) as Topology | null,
    monitorRunning: async () => Boolean(await orNull(dcs.leader())),
    close: () => dcs.close(),
  };
}
