import { z } from 'zod';
import { backupConfigSchema } from './backup.js';
import { clusterConfigSchema } from './cluster.js';
import { deployConfigSchema } from './deploy.js';
import { drillConfigSchema } from './drill.js';

/**
 * The whole bulwark.config.ts schema, one section per capability. Each capability owns its section's
 * schema in its own file here (config/<capability>.ts) and adds one line below; types are z.infer of
 * these schemas, never written twice. Unknown top-level keys are an error.
 */
export const configSchema = z
  .object({
    backup: backupConfigSchema.optional(),
    cluster: clusterConfigSchema.optional(),
    deploy: deployConfigSchema.optional(),
    drill: drillConfigSchema.optional(),
  })
  .strict();

export type BulwarkConfig = z.infer<typeof configSchema>;

/** What users write in bulwark.config.ts (defaults not yet applied). */
export type BulwarkConfigInput = z.input<typeof configSchema>;
