import { z } from 'zod';
import { parseDuration, parseSize } from './duration.js';

/**
 * `cluster` section of bulwark.config.ts: defaults for `bulwark cluster ...` (flags win). Durations are
 * strings ('1s') or milliseconds, sizes strings ('16MB') or bytes, normalised here to numbers.
 */
const duration = z.union([z.string(), z.number()]).transform((v, ctx) => {
  try {
    return parseDuration(v);
  } catch {
    ctx.addIssue({ code: 'custom', message: `"${v}" is not a valid duration (use e.g. 1s, 500ms)` });
    return z.NEVER;
  }
});
const size = z.union([z.string(), z.number()]).transform((v, ctx) => {
  try {
    return parseSize(v);
  } catch {
    ctx.addIssue({ code: 'custom', message: `"${v}" is not a valid size (use e.g. 16MB)` });
    return z.NEVER;
  }
});

export const clusterConfigSchema = z
  .object({
    /** Local cluster folder used when --dir is not given. */
    dir: z.string().min(1).optional(),
    monitor: z
      .object({
        name: z.string().min(1).optional(),
        interval: duration.optional(),
        probeTimeout: duration.optional(),
        failures: z.number().int().min(1).optional(),
        maxLagOnFailover: size.optional(),
        httpHost: z.string().min(1).optional(),
        httpPort: z.number().int().min(0).max(65535).optional(),
        webhooks: z.array(z.url()).optional(),
        rejoin: z.boolean().optional(),
        /** Permanent physical replication slots kept on every node (--slot). */
        permanentSlots: z.array(z.string().regex(/^[a-z0-9_]{1,63}$/, 'slot names are 1-63 of a-z, 0-9, _')).optional(),
        etcd: z
          .object({
            hosts: z.array(z.url()).min(1),
            scope: z.string().min(1).optional(),
            leaseTtl: z.number().int().min(2).optional(),
          })
          .strict()
          .optional(),
      })
      .strict()
      .optional(),
  })
  .strict();

export type ClusterConfig = z.infer<typeof clusterConfigSchema>;
