/** `bulwark/backup`: repositories, logical and physical backups, WAL archive, restore and PITR. */
import './errors.js';

export * from './codec.js';
export { BackupError, BackupErrorCodes } from './errors.js';
export * from './incremental/backup.js';
export { resolveChain } from './incremental/chain.js';
export * from './lock.js';
export * from './logical.js';
export * from './manifest.js';
export * from './pg.js';
export * from './physical.js';
export * from './pitr.js';
export * from './progress.js';
export * from './repository.js';
export * from './restore.js';
export * from './retention.js';
export * from './schedule.js';
export * from './storage/index.js';
export * from './timelines.js';
export * from './verify.js';
export * from './wal.js';
export * from './wal-names.js';
