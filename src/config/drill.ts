import { z } from 'zod';

/** A release as `bulwark deploy APP --version V` names it (the process provider's {version}). */
const release = z
  .string()
  .min(1)
  .regex(
    /^[A-Za-z0-9][A-Za-z0-9._+-]*$/,
    'a release is a version as `bulwark deploy --version` takes it (letters, digits, . _ + -)',
  );

/**
 * `drill.deploy`: the deploy steps against an app of the `deploy` section. The drill deploys
 * `badRelease` (it must fail the app's analysis: the hypothesis is an automatic rollback) and then
 * `goodRelease` (zero failed requests), each with the app's own router, provider and strategy.
 */
const drillDeploySchema = z
  .object({
    /** deploy.apps.<app> of this config. */
    app: z.string().min(1),
    goodRelease: release,
    badRelease: release,
  })
  .strict()
  .refine((d) => d.goodRelease !== d.badRelease, {
    message: 'goodRelease and badRelease must be different releases',
    path: ['badRelease'],
  });

const sqlName = z
  .string()
  .regex(
    /^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$/,
    'a table name (table or schema.table) as SQL writes it',
  );

/**
 * `drill.pitr`: the PITR step against the configured database and repository. The "oops" is the drop
 * of a table the drill creates and fills itself (bulwark_drill_oops_<run id>) — never one of yours —
 * and the copy is restored into a new local instance in `dir`, which the drill creates.
 */
const drillPitrSchema = z
  .object({
    /** Data folder of the restored copy: created by the drill (it must not exist), removed at the end. */
    dir: z.string().min(1),
    /** Your table whose rows the copy must hold (checked with `count`). */
    table: sqlName,
    /** SQL answering one number, run on the primary before the recovery target and on the copy (default: SELECT count(*) FROM <table>). */
    count: z.string().min(1).optional(),
    /**
     * Your consent to the one write the step makes in your database: it creates, fills and drops its
     * own table bulwark_drill_oops_<run id> (the drop is the "oops" PITR recovers). Without it the
     * pitr step is refused.
     */
    scratchTable: z.boolean().default(false),
  })
  .strict();

/**
 * `drill.load`: the user's own scenario file instead of the drill's shopper. `acks` says how to tell an
 * acknowledged write (RPO after a failover); without it the write gap and RPO are "not measured".
 */
const drillLoadSchema = z
  .object({
    /** A `bulwark load` scenario file (relative to the config file's folder); its users and tasks run at drill.rate. */
    scenario: z.string().min(1),
    acks: z
      .object({
        /** The endpoint name a write is recorded under (the request's `name`, else its URL path). */
        request: z.string().min(1),
        /** Dot path of the id in the JSON answer of that request (e.g. `order_id` or `order.id`). */
        id: z.string().regex(/^[A-Za-z_$][\w$]*(\.[A-Za-z_$][\w$]*)*$/, 'a dot path of JSON keys (e.g. order.id)'),
        /** SQL run on the (new) primary with $1 = the acknowledged ids as text[]: answers the ids it finds (first column). */
        query: z.string().includes('$1', { message: 'must use $1 (the acknowledged ids, text[])' }),
      })
      .strict()
      .optional(),
  })
  .strict();

/**
 * `drill` section of bulwark.config.ts: which parts of the user's own system `bulwark drill --config`
 * runs its game day against. Only what the supported steps need (see src/drill/target.ts); the
 * database and repository default to the `backup` section's `pg` and `repo`.
 */
export const drillConfigSchema = z
  .object({
    /**
     * Base URL of the shop under load. It must speak the demo shop's API (login, products, orders).
     * With `deploy`, it defaults to the app's router (the load must go through it).
     */
    url: z.url().optional(),
    /** postgresql:// URL of the primary the backup step backs up (default: backup.pg). */
    pg: z.string().min(1).optional(),
    /** Repository the backup step writes to: file:///path or s3://bucket/prefix (default: backup.repo). */
    repo: z.string().min(1).optional(),
    /** Requests per second of the drill's load (default 40; half of them are orders). */
    rate: z.number().int().min(1).optional(),
    /** The bad-release and good-release steps: an app of the deploy section and two of its releases. */
    deploy: drillDeploySchema.optional(),
    /** The pitr step: where the copy goes, which table it must hold, and consent to a scratch table. */
    pitr: drillPitrSchema.optional(),
    /** The load: your scenario file instead of the drill's shopper (which needs the demo shop's API). */
    load: drillLoadSchema.optional(),
  })
  .strict()
  .refine((d) => d.url !== undefined || d.deploy !== undefined, {
    message: 'missing: the URL of the shop under load (or drill.deploy, whose router the load then goes through)',
    path: ['url'],
  });

export type DrillConfig = z.infer<typeof drillConfigSchema>;
