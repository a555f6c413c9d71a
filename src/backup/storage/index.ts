import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BackupError } from '../errors.js';
import { FsStorage } from './fs.js';
import { S3Storage } from './s3.js';
import type { S3Options, StorageDriver } from './types.js';

export { FsStorage } from './fs.js';
export { MAX_PARTS, maxObjectSize, partSizeFor } from './parts.js';
export { S3Storage } from './s3.js';
export type { S3Options, StorageDriver, StoredObject } from './types.js';

/**
 * Open a repository URI: `file:///abs/path` (or a plain path), or `s3://bucket/prefix` with optional
 * query settings `endpoint`, `region`, `forcePathStyle`, `sse`, `kmsKeyId` (for MinIO and friends);
 * `defaults` (from bulwark.config.ts backup.s3) fill what the URI leaves out.
 */
export function openStorage(uri: string, defaults: S3Options = {}): StorageDriver {
  if (uri.startsWith('s3://')) {
    let u: URL;
    try {
      u = new URL(uri);
    } catch {
      throw new BackupError('BULWARK_E_REPO', `repository "${uri}" is not a valid s3:// URI`);
    }
    if (!u.hostname) throw new BackupError('BULWARK_E_REPO', `repository "${uri}" names no bucket`);
    if (u.username || u.password)
      throw new BackupError(
        'BULWARK_E_REPO',
        'repository URI must not contain credentials: use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile',
      );
    const q = u.searchParams;
    const sse = q.get('sse') ?? defaults.sse;
    if (sse && sse !== 'AES256' && sse !== 'aws:kms')
      throw new BackupError('BULWARK_E_REPO', `repository "${uri}": sse must be AES256 or aws:kms`);
    const fps = q.get('forcePathStyle');
    return new S3Storage(u.hostname, decodeURIComponent(u.pathname), {
      ...defaults,
      endpoint: q.get('endpoint') ?? defaults.endpoint,
      region: q.get('region') ?? defaults.region,
      forcePathStyle: fps === null ? defaults.forcePathStyle : fps === 'true' || fps === '1',
      sse: sse as S3Options['sse'],
      kmsKeyId: q.get('kmsKeyId') ?? defaults.kmsKeyId,
    });
  }
  if (uri.startsWith('file://')) return new FsStorage(fileURLToPath(uri));
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(uri))
    throw new BackupError('BULWARK_E_REPO', `repository "${uri}": unsupported scheme (use file:// or s3://)`);
  return new FsStorage(resolve(uri));
}
