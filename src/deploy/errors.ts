import { BulwarkError, ExitCode, registerErrorCodes } from '../lib/errors.js';

export const DeployErrorCodes = {
  BULWARK_E_DEPLOY_UNSAFE: {
    exit: ExitCode.failure,
    doc: 'a traffic change was refused because it would leave no ready backend (make-before-break)',
  },
  BULWARK_E_DEPLOY_LOCKED: { exit: ExitCode.failure, doc: 'another deploy of this app holds the lock' },
  BULWARK_E_DEPLOY_FAILED: {
    exit: ExitCode.failure,
    doc: 'the deploy failed (start, health check, smoke test or analysis); traffic stayed on or returned to the stable slot',
  },
  BULWARK_E_DEPLOY_ABORTED: { exit: ExitCode.failure, doc: 'the deploy was aborted; traffic is on the stable slot' },
  BULWARK_E_DEPLOY_ROUTER: {
    exit: ExitCode.failure,
    doc: 'the router (embedded admin API, HAProxy socket, ALB) refused or failed',
  },
  BULWARK_E_DEPLOY_PROVIDER: { exit: ExitCode.failure, doc: 'instances could not be started, made ready or stopped' },
  BULWARK_E_DEPLOY_STATE: {
    exit: ExitCode.failure,
    doc: 'no deploy state for the app, nothing to promote/abort/roll back, or an interrupted deploy to resume first',
  },
} as const;
registerErrorCodes(DeployErrorCodes);

export type DeployErrorCode = keyof typeof DeployErrorCodes;

export class DeployError extends BulwarkError {
  constructor(code: DeployErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = 'DeployError';
  }
}
