import { BulwarkError, ExitCode, registerErrorCodes } from '../lib/errors.js';

/** Error codes of the backup capability (documented in the README's "Error codes" table). */
export const BackupErrorCodes = {
  BULWARK_E_REPO: {
    exit: ExitCode.usage,
    doc: 'backup repository URI missing or invalid (--repo, BULWARK_REPO, config)',
  },
  BULWARK_E_STORAGE: {
    exit: ExitCode.failure,
    doc: 'the backup storage (folder or S3) failed a read, write, list or delete',
  },
  BULWARK_E_NOT_FOUND: { exit: ExitCode.failure, doc: 'a backup, WAL segment or repository object does not exist' },
  BULWARK_E_CHECKSUM: {
    exit: ExitCode.failure,
    doc: 'a stored object does not match its SHA-256 (the object is named)',
  },
  BULWARK_E_WAL_MISMATCH: {
    exit: ExitCode.failure,
    doc: 'wal push: the archive already holds this segment with different content (refused)',
  },
  BULWARK_E_ENCRYPTION: {
    exit: ExitCode.failure,
    doc: 'encryption key or passphrase missing or wrong (BULWARK_ENCRYPTION_PASSPHRASE / _KEY_FILE)',
  },
  BULWARK_E_TARGET_EXISTS: {
    exit: ExitCode.failure,
    doc: 'restore target (database or data folder) exists or is not empty; pass --force to overwrite',
  },
  BULWARK_E_BACKUP: { exit: ExitCode.failure, doc: 'a backup could not be taken (pg_dump / pg_basebackup failed)' },
  BULWARK_E_WAL_GAP: {
    exit: ExitCode.failure,
    doc: 'restore to latest: a WAL segment is missing from the archive (named); --accept-wal-gap recovers up to it',
  },
  BULWARK_E_LOCKED: {
    exit: ExitCode.failure,
    doc: 'another backup create or expire holds the repository lock (its pid, host and start are named)',
  },
  BULWARK_E_RESTORE: { exit: ExitCode.failure, doc: 'a restore or recovery failed or did not reach its target' },
  BULWARK_E_VERIFY: {
    exit: ExitCode.failure,
    doc: 'backup verify found a problem (checksum, restore or sanity query)',
  },
} as const;

registerErrorCodes(BackupErrorCodes);

export type BackupErrorCode = keyof typeof BackupErrorCodes;

export class BackupError extends BulwarkError {
  constructor(code: BackupErrorCode, message: string, options?: { cause?: unknown }) {
    // the shared registry only knows its own codes' exits, so pass ours explicitly
    super(code, message, { ...options, exitCode: BackupErrorCodes[code].exit });
    this.name = 'BackupError';
  }
}
