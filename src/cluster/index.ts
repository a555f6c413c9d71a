/**
 * bulwark/cluster: local clusters, node probing, the failover monitor and the routing pool.
 * Importing this module registers the capability's error codes.
 */

export { EtcdDcs, type EtcdDcsOptions } from './dcs/etcd.js';
export type { Dcs, LeaderInfo } from './dcs/index.js';
export { LocalDcs } from './dcs/local.js';
export { AmbiguousCommitError, ClusterError, ClusterErrorCodes } from './errors.js';
export { formatHistory, type HistoryEntry, readHistory } from './history.js';
export {
  type ClusterState,
  crashNode,
  destroyCluster,
  type InitOptions,
  initCluster,
  readState,
  startCluster,
  stopCluster,
} from './local/cluster.js';
export { clusterPaths, type LocalClusterSpec, type LocalNodeSpec, readSpec } from './local/layout.js';
export { compareLsn, formatLsn, lsnDiff, parseLsn } from './lsn.js';
export { ClusterMonitor, type MonitorOptions, type Topology } from './monitor/monitor.js';
export { switchover } from './monitor/switchover.js';
export {
  type Action,
  afterPromotion,
  type Decision,
  initialState,
  type MonitorState,
  type TickConfig,
  tick,
} from './monitor/tick.js';
export { ClusterPool, type ClusterPoolOptions, createClusterPool, type QueryOptions } from './pool.js';
export { type NodeObservation, type NodeStatus, type ProbeTarget, probeAll, probeNode, summarize } from './probe.js';
export { clusterStatus, formatStatusTable, localConnectionStrings, localTargets } from './status.js';
export { requestSwitchover } from './switchover-client.js';
