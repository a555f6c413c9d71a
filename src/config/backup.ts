import { z } from 'zod';

const compression = z.enum(['zstd', 'gzip', 'none']);
const duration = z.union([z.string(), z.number()]);

/**
 * `backup` section of bulwark.config.ts. Encryption keys are NOT here on purpose: they come only from
 * BULWARK_ENCRYPTION_KEY_FILE / BULWARK_ENCRYPTION_PASSPHRASE.
 */
export const backupConfigSchema = z
  .object({
    /** file:///path or s3://bucket/prefix (--repo and BULWARK_REPO win). */
    repo: z.string().optional(),
    /** postgresql:// URL (--pg and libpq's PG* variables win). */
    pg: z.string().optional(),
    s3: z
      .object({
        endpoint: z.string().optional(),
        region: z.string().optional(),
        forcePathStyle: z.boolean().optional(),
        sse: z.enum(['AES256', 'aws:kms']).optional(),
        kmsKeyId: z.string().optional(),
      })
      .strict()
      .optional(),
    compression: compression.optional(),
    level: z.number().int().min(0).max(22).optional(),
    encryption: z.enum(['none', 'age']).optional(),
    /** logical backups (`backup create --kind logical`, scheduled logical backups): pg_dump format and jobs */
    logical: z
      .object({
        format: z.enum(['custom', 'directory']).optional(),
        /** tables dumped at once (pg_dump -j), directory format only; default 2 */
        jobs: z.number().int().min(1).optional(),
      })
      .strict()
      .refine((l) => l.jobs === undefined || l.format === 'directory', {
        message: 'jobs needs format: "directory" (pg_dump\'s custom format dumps with one job)',
        path: ['jobs'],
      })
      .optional(),
    retention: z
      .object({
        keepLast: z.number().int().min(1).optional(),
        maxAge: duration.optional(),
        daily: z.number().int().min(1).optional(),
        weekly: z.number().int().min(1).optional(),
        monthly: z.number().int().min(1).optional(),
      })
      .strict()
      .optional(),
    schedule: z
      .object({
        backup: z
          .object({ cron: z.string(), kind: z.enum(['physical', 'logical']).default('physical') })
          .strict()
          .optional(),
        /** incremental physical backups (only changed pages) between the full ones of `backup` */
        incremental: z.object({ cron: z.string() }).strict().optional(),
        expire: z.object({ cron: z.string() }).strict().optional(),
        verify: z
          .object({ cron: z.string(), restore: z.boolean().default(false) })
          .strict()
          .optional(),
        /** POSTed a JSON body when a job fails. */
        webhook: z.string().url().optional(),
        /** Serve Prometheus metrics on 127.0.0.1:<port>/metrics. */
        metricsPort: z.number().int().min(0).max(65535).optional(),
      })
      .strict()
      .optional(),
  })
  .strict();

export type BackupConfig = z.infer<typeof backupConfigSchema>;
