import { z } from 'zod';

/**
 * `drill` section of bulwark.config.ts: which parts of the user's own system `bulwark drill --config`
 * runs its game day against. Only what the supported steps need (see src/drill/target.ts); the
 * database and repository default to the `backup` section's `pg` and `repo`.
 */
export const drillConfigSchema = z
  .object({
    /** Base URL of the shop under load. It must speak the demo shop's API (login, products, orders). */
    url: z.url(),
    /** postgresql:// URL of the primary the backup step backs up (default: backup.pg). */
    pg: z.string().min(1).optional(),
    /** Repository the backup step writes to: file:///path or s3://bucket/prefix (default: backup.repo). */
    repo: z.string().min(1).optional(),
    /** Requests per second of the drill's load (default 40; half of them are orders). */
    rate: z.number().int().min(1).optional(),
  })
  .strict();

export type DrillConfig = z.infer<typeof drillConfigSchema>;
