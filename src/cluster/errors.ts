import { BulwarkError, ExitCode, registerErrorCodes } from '../lib/errors.js';

/** Error codes of the cluster capability (documented in the README's "Error codes" table). */
export const ClusterErrorCodes = {
  BULWARK_E_CLUSTER_DIR: {
    exit: ExitCode.usage,
    doc: 'cluster folder missing, not a Bulwark cluster, already initialised, or not reachable by the postgres user',
  },
  BULWARK_E_CLUSTER_NODE: { exit: ExitCode.failure, doc: 'a cluster node could not be started, stopped or rejoined' },
  BULWARK_E_CLUSTER_NO_PRIMARY: {
    exit: ExitCode.failure,
    doc: 'routing pool: no primary became available within writeTimeoutMillis',
  },
  BULWARK_E_CLUSTER_AMBIGUOUS_COMMIT: {
    exit: ExitCode.failure,
    doc: 'routing pool: the connection to the primary broke after a write was sent; it may or may not have committed',
  },
  BULWARK_E_CLUSTER_SWITCHOVER: {
    exit: ExitCode.failure,
    doc: 'switchover refused or aborted (target not streaming, did not catch up, monitor not leader)',
  },
  BULWARK_E_CLUSTER_SLOT: {
    exit: ExitCode.usage,
    doc: 'a permanent replication slot name is not a valid slot name, or is the name of a node',
  },
  BULWARK_E_CLUSTER_MONITOR: {
    exit: ExitCode.failure,
    doc: 'the monitor could not start (its HTTP port is busy)',
  },
  BULWARK_E_CLUSTER_AGENT: {
    exit: ExitCode.failure,
    doc: 'the node agent could not start (REST port busy, loop too slow for the TTL) or could not bootstrap',
  },
} as const;
registerErrorCodes(ClusterErrorCodes);

export type ClusterErrorCode = keyof typeof ClusterErrorCodes;

export class ClusterError extends BulwarkError {
  constructor(code: ClusterErrorCode, message: string, options?: { cause?: unknown }) {
    // the base class only knows the shared codes' exit codes
    super(code, message, { ...options, exitCode: ClusterErrorCodes[code].exit });
    this.name = 'ClusterError';
  }
}

/**
 * A write whose outcome is unknown: the statement reached the primary and then the connection broke,
 * so the commit may or may not have happened. Never retried automatically (it could apply twice).
 */
export class AmbiguousCommitError extends ClusterError {
  readonly node: string;
  constructor(node: string, cause: unknown) {
    super(
      'BULWARK_E_CLUSTER_AMBIGUOUS_COMMIT',
      `the connection to primary ${node} broke after the write was sent: it may or may not have committed (${(cause as Error)?.message ?? cause})`,
      { cause },
    );
    this.name = 'AmbiguousCommitError';
    this.node = node;
  }
}
