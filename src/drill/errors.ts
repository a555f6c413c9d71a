import { BulwarkError, ExitCode, registerErrorCodes } from '../lib/errors.js';

export const DrillErrorCodes = {
  BULWARK_E_DRILL: {
    exit: ExitCode.failure,
    doc: '`bulwark drill` could not set up or run its game day (cluster, router, load or a step failed to run)',
  },
} as const;
registerErrorCodes(DrillErrorCodes);

export type DrillErrorCode = keyof typeof DrillErrorCodes;

export class DrillError extends BulwarkError {
  constructor(code: DrillErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = 'DrillError';
  }
}
