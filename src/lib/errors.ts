/**
 * One registry of error codes (as fastify's lib/errors.js). Every error Bulwark raises on purpose is a
 * BulwarkError with a stable code; the CLI prints its message (no stack unless --verbose) and exits with
 * its exitCode. `test/lib/errors.test.ts` checks that every code here is documented in the README.
 */

/** Exit codes of every command (ARCHITECTURE.md, "Contracts"). */
export const ExitCode = {
  ok: 0,
  failure: 1,
  usage: 2,
  thresholds: 99,
} as const;

export const ErrorCodes = {
  BULWARK_E_USAGE: { exit: ExitCode.usage, doc: 'bad command-line usage (unknown flag, missing argument)' },
  BULWARK_E_CONFIG: { exit: ExitCode.usage, doc: 'bulwark.config.ts missing, unreadable or invalid' },
  BULWARK_E_SCENARIO: {
    exit: ExitCode.usage,
    doc: 'scenario file cannot be loaded (syntax/type error, no default export, bad option)',
  },
  BULWARK_E_DURATION: { exit: ExitCode.usage, doc: 'a duration such as "30s" or "1m30s" cannot be parsed' },
  BULWARK_E_THRESHOLD: { exit: ExitCode.usage, doc: 'a threshold expression cannot be parsed' },
  BULWARK_E_THRESHOLDS_CROSSED: { exit: ExitCode.thresholds, doc: 'one or more load-test thresholds were crossed' },
  BULWARK_E_WORKER: { exit: ExitCode.failure, doc: 'a remote load worker refused or failed its share of the run' },
  BULWARK_E_PG_BINARY: { exit: ExitCode.failure, doc: 'a PostgreSQL program (initdb, pg_dump, ...) was not found' },
  BULWARK_E_CHILD: { exit: ExitCode.failure, doc: 'a child process exited with an error' },
  BULWARK_E_INTERNAL: { exit: ExitCode.failure, doc: 'an unexpected internal error' },
} as const satisfies Record<string, { exit: number; doc: string }>;

export type ErrorCode = keyof typeof ErrorCodes | `BULWARK_E_${string}`;

export class BulwarkError extends Error {
  readonly code: ErrorCode;
  readonly exitCode: number;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; exitCode?: number }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'BulwarkError';
    this.code = code;
    const known = (ErrorCodes as Record<string, { exit: number }>)[code];
    this.exitCode = options?.exitCode ?? known?.exit ?? ExitCode.failure;
  }
}

/** Bad usage, bad config or bad scenario: exit code 2. */
export class UsageError extends BulwarkError {
  constructor(message: string, code: ErrorCode = 'BULWARK_E_USAGE') {
    super(code, message, { exitCode: ExitCode.usage });
    this.name = 'UsageError';
  }
}

/**
 * Capabilities register their own codes here at import time so the registry stays one table while
 * each capability keeps its codes next to its code. Registering a code twice with a different exit is a bug.
 */
const extraCodes = new Map<string, { exit: number; doc: string }>();
export function registerErrorCodes(codes: Record<string, { exit: number; doc: string }>): void {
  for (const [code, info] of Object.entries(codes)) {
    const prior = extraCodes.get(code) ?? (ErrorCodes as Record<string, { exit: number; doc: string }>)[code];
    if (prior && prior.exit !== info.exit) throw new Error(`error code ${code} registered twice with different exits`);
    extraCodes.set(code, info);
  }
}
export function allErrorCodes(): Record<string, { exit: number; doc: string }> {
  return { ...ErrorCodes, ...Object.fromEntries(extraCodes) };
}

export function exitCodeOf(err: unknown): number {
  if (err instanceof BulwarkError) return err.exitCode;
  return ExitCode.failure;
}
