import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { EtcdDcs, readState, type Topology } from '../cluster/index.js';

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
  if (etcd) {
    const dcs = new EtcdDcs({ hosts: etcd.hosts, cluster: etcd.scope, name: 'bulwark-drill-reader' });
    // etcd answering late or not at all is "not known yet" for a poll, never a crash of the step
    const orNull = <T>(p: Promise<T>) => p.catch(() => null);
    return {
      where: `etcd ${etcd.hosts.join(',')} /bulwark/${etcd.scope}/`,
      // as the monitors themselves: until a leader writes a state in etcd, the folder's is on record
      primary: async () => (await orNull(dcs.readState()))?.primary ?? readState(dir)?.primary ?? undefined,
      topology: async () => (await orNull(dcs.readTopology())) as Topology | null,
      monitorRunning: async () => Boolean(await orNull(dcs.leader())),
      close: () => dcs.close(),
    };
  }
  return {
    where: dir,
    primary: async () => readState(dir)?.primary ?? undefined,
    topology: async () => {
      try {
        return JSON.parse(readFileSync(join(dir, 'topology.json'), 'utf8')) as Topology;
      } catch {
        return null;
      }
    },
    monitorRunning: async () => {
      let pid: number | undefined;
      try {
        pid = JSON.parse(readFileSync(join(dir, 'monitor.lock'), 'utf8')).pid;
      } catch {
        return false; // no lock: no local monitor
      }
      if (!pid) return false;
      try {
        process.kill(pid, 0);
        return true;
      } catch (err) {
        return (err as NodeJS.ErrnoException).code === 'EPERM';
      }
    },
    close: async () => {},
  };
}
