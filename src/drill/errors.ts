import { BulwarkError, ExitCode, registerErrorCodes } from '../lib/errors.js';

export const DrillErrorCodes = {
  BULWARK_E_DRILL: {
    exit: ExitCode.failure,
    doc: '`bulwark drill` could not set up or run its game day (cluster, router, load or a step failed to run)',
  },
  BULWARK_E_DRILL_TARGET: {
    exit: ExitCode.usage,
    doc: '`bulwark drill --config`: a target is not local (pass --yes-i-mean-it), the drill section is missing or incomplete, or a step cannot run against a configured system',
  },
} as const;
registerErrorCodes(DrillErrorCodes);

export type DrillErrorCode = keyof typeof DrillErrorCodes;

export class DrillError extends BulwarkError {
  constructor(code: DrillErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, { ...options, exitCode: DrillErrorCodes[code].exit });
    this.name = 'DrillError';
  }
}
