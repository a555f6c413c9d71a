/**
 * bulwark/cluster: local clusters, node probing, the failover monitor and the routing pool.
 * Importing this module registers the capability's error codes.
 */
export { AmbiguousCommitError, ClusterError, ClusterErrorCodes } from './errors.js';
export {
  type ClusterState,
  destroyCluster,
  type InitOptions,
  initCluster,
  readState,
  startCluster,
  stopCluster,
} from './local/cluster.js';
export { clusterPaths, type LocalClusterSpec, type LocalNodeSpec, readSpec } from './local/layout.js';
export { compareLsn, formatLsn, lsnDiff, parseLsn } from './lsn.js';
export { type NodeObservation, type NodeStatus, type ProbeTarget, probeAll, probeNode, summarize } from './probe.js';
export { clusterStatus, formatStatusTable, localTargets } from './status.js';
export { type Action, type Decision, initialState, type MonitorState, type TickConfig, tick } from './monitor/tick.js';
