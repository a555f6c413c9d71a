import type { Readable } from 'node:stream';

/**
 * One storage driver per kind of place a repository lives (pgBackRest's storage/{posix,s3}): a flat
 * namespace of keys ("backups/20260101T000000Z-phys/base.tar.zst") holding immutable byte objects.
 *
 * Contracts every driver honours (test/backup/storage-conformance.ts checks them):
 * - `put` is atomic: a reader sees either the whole previous object, nothing, or the whole new one,
 *   never a partial write (fs: temp file + fsync + rename; S3: a PUT or a completed multipart upload).
 *   When `put` resolves, the object is durable (fs: file and folder fsynced).
 * - `put` consumes a stream without buffering the whole object in memory: big objects stream through
 *   (S3: multipart upload whose part size grows so the 10,000-part limit is never reached).
 * - `get` of a missing key rejects with BULWARK_E_NOT_FOUND; `head` resolves undefined instead.
 * - `list(prefix)` returns every key under the prefix, recursively, sorted, with sizes.
 * - `delete` of a missing key is not an error.
 */
export interface StorageDriver {
  /** Display form of the location (no credentials). */
  readonly description: string;
  put(key: string, body: Readable | Buffer | string): Promise<{ size: number }>;
  get(key: string): Promise<Readable>;
  head(key: string): Promise<{ size: number } | undefined>;
  list(prefix: string): Promise<StoredObject[]>;
  delete(keys: string[]): Promise<void>;
  /**
   * Fail (BULWARK_E_STORAGE) when the location holds no repository at all: a folder that does not
   * exist or is empty (an unmounted mount point). Readers call it before answering "not found".
   * Drivers whose list already fails when the place is unreachable (S3) need not implement it.
   */
  assertRepository?(): Promise<void>;
  /**
   * Leftovers of interrupted writes (fs: `*.bulwark-tmp-*` files; S3: incomplete multipart uploads)
   * under `prefix`, with their age; removed by `removeLeftovers`.
   */
  listLeftovers?(prefix: string): Promise<StoredObject[]>;
  removeLeftovers?(keys: string[]): Promise<void>;
}

export interface StoredObject {
  key: string;
  size: number;
  /** last modification (fs mtime, S3 LastModified); used to age out leftovers of interrupted backups */
  modified?: Date;
}

/** S3-specific settings (from the repo URI's query string or bulwark.config.ts backup.s3). */
export interface S3Options {
  endpoint?: string;
  region?: string;
  forcePathStyle?: boolean;
  /** Server-side encryption: 'AES256' or 'aws:kms' (with kmsKeyId). */
  sse?: 'AES256' | 'aws:kms';
  kmsKeyId?: string;
  /** Parts uploaded at once per object. */
  concurrency?: number;
}
