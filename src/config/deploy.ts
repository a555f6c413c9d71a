import { z } from 'zod';
import { parseDuration } from './duration.js';

/**
 * `deploy` section of bulwark.config.ts. Durations are strings ('30s') or milliseconds and are
 * normalised to milliseconds here, so the deploy capability only ever sees numbers.
 */
const durationSchema = z.union([z.string(), z.number()]).transform((v, ctx) => {
  try {
    return parseDuration(v);
  } catch {
    ctx.addIssue({ code: 'custom', message: `"${v}" is not a valid duration (use e.g. 30s, 1m30s, 250ms)` });
    return z.NEVER;
  }
});
const duration = (fallback: string) => durationSchema.default(parseDuration(fallback));

const slotName = z.enum(['blue', 'green']);
const loopback = /^(127\.\d+\.\d+\.\d+|localhost|::1)$/;

const stickySchema = z
  .object({
    header: z.string().min(1).optional(),
    cookie: z.string().min(1).optional(),
  })
  .strict()
  .refine((s) => !!s.header !== !!s.cookie, { message: 'sticky needs exactly one of header or cookie' });

const embeddedRouterSchema = z
  .object({
    type: z.literal('embedded'),
    /** Where clients connect. */
    host: z.string().default('127.0.0.1'),
    port: z.number().int().min(1).max(65535),
    /** Admin API: always loopback; the token comes from this env var or is generated into the state folder. */
    adminHost: z.string().regex(loopback, 'the admin API must bind to a loopback address').default('127.0.0.1'),
    adminPort: z.number().int().min(1).max(65535),
    adminTokenEnv: z.string().optional(),
    sticky: stickySchema.optional(),
    /** How long metrics are kept (per-second HDR histograms). */
    metricsRetention: duration('15m'),
    /** Backend timeouts: connect and response headers answer 504; idle (silence mid-body) breaks the transfer. */
    timeouts: z
      .object({ connect: duration('10s'), headers: duration('60s'), idle: duration('60s') })
      .strict()
      .prefault({}),
    /** Also send an RFC 7239 Forwarded header (X-Forwarded-For/-Proto/-Host are always sent). */
    forwarded: z.boolean().default(false),
    /** Retry a DELETE (no body) once on a refused/reset connection, as GET/HEAD are; POST and PATCH never are. */
    retryDelete: z.boolean().default(false),
  })
  .strict();

const haproxyRouterSchema = z
  .object({
    type: z.literal('haproxy'),
    /** HAProxy's runtime API socket (stats socket ... level admin). */
    socket: z.string().min(1),
    backend: z.string().min(1),
    /** Server lines pre-declared in the backend for each slot; instances are mapped onto them in order. */
    servers: z.object({ blue: z.array(z.string().min(1)).min(1), green: z.array(z.string().min(1)).min(1) }).strict(),
    /** URL clients use (for probes and the synthetic-traffic hook). */
    frontendUrl: z.string().url().optional(),
    /** Receive HAProxy's per-request log (UDP, loopback) for latency percentiles; see the README for haproxy.cfg. */
    log: z
      .object({
        port: z.number().int().min(1).max(65535),
        host: z.string().regex(loopback, 'the log receiver must bind to a loopback address').default('127.0.0.1'),
      })
      .strict()
      .optional(),
  })
  .strict();

const albRouterSchema = z
  .object({
    type: z.literal('aws-alb'),
    region: z.string().optional(),
    listenerArn: z.string().min(1),
    targetGroups: z.object({ blue: z.string().min(1), green: z.string().min(1) }).strict(),
    frontendUrl: z.string().url().optional(),
  })
  .strict();

const processProviderSchema = z
  .object({
    type: z.literal('process'),
    /** Run through /bin/sh; {version}, {slot} and {port} are substituted; PORT, BULWARK_VERSION, BULWARK_SLOT are set. */
    command: z.string().min(1),
    cwd: z.string().optional(),
    instances: z.number().int().min(1).max(64).default(1),
    env: z.record(z.string(), z.string()).default({}),
    /** Fixed ports per slot (one per instance); free ports below 32768 are picked when absent. */
    ports: z
      .object({ blue: z.array(z.number().int()), green: z.array(z.number().int()) })
      .strict()
      .optional(),
    readiness: z
      .object({ path: z.string().startsWith('/').default('/health'), timeout: duration('30s') })
      .strict()
      .prefault({}),
    /** After SIGTERM, wait this long before SIGKILL. */
    stopTimeout: duration('10s'),
  })
  .strict();

const ecsProviderSchema = z
  .object({
    type: z.literal('aws-ecs'),
    region: z.string().optional(),
    cluster: z.string().min(1),
    services: z.object({ blue: z.string().min(1), green: z.string().min(1) }).strict(),
    /** Task definition for a version; {version} is substituted (e.g. "shop:{version}"). */
    taskDefinition: z.string().includes('{version}', { message: 'must contain {version}' }),
    desiredCount: z.number().int().min(1).default(2),
    stableTimeout: duration('10m'),
    pollInterval: duration('10s'),
  })
  .strict();

const httpCheckSchema = z
  .object({
    name: z.string().optional(),
    method: z.enum(['GET', 'HEAD', 'POST']).default('GET'),
    path: z.string().startsWith('/'),
    status: z.number().int().min(100).max(599).default(200),
    bodyContains: z.string().optional(),
    timeout: duration('5s'),
  })
  .strict();

const loadHookSchema = z
  .object({
    scenario: z.string().min(1),
    users: z.number().int().min(1).default(5),
    duration: z.string().default('10s'),
  })
  .strict();

const prometheusSchema = z
  .object({
    type: z.literal('prometheus'),
    url: z.string().url(),
    /** PromQL with {slot}, {version} and {window} (e.g. "30s") substituted; each must return one number. */
    queries: z
      .object({
        requests: z.string().min(1),
        errors: z.string().min(1),
        p99Ms: z.string().min(1).optional(),
        p95Ms: z.string().min(1).optional(),
      })
      .strict(),
  })
  .strict();

const analysisSchema = z
  .object({
    source: z.union([z.literal('router'), prometheusSchema]).default('router'),
    /** How often analysis runs during a pause or monitoring window; each judgement covers the traffic since the last. */
    interval: duration('10s'),
    /** The first judgement after a traffic change comes this early (a bad release is caught in seconds). */
    firstJudgement: duration('1s'),
    /** Failed judgements in a row that are tolerated (one noisy interval); one more rolls back. Decisive error counts roll back at once. */
    failureLimit: z.number().int().min(0).default(1),
    /** Minimum samples per judgement: below this many requests in its window it cannot pass (never pass on no data). */
    minRequests: z.number().int().min(1).default(50),
    maxErrorRate: z.number().min(0).max(1).default(0.01),
    maxP99Ms: z.number().positive().optional(),
    maxP95Ms: z.number().positive().optional(),
    /** Versus the stable slot over the same window. */
    vsStable: z
      .object({
        maxErrorRateIncrease: z.number().min(0).max(1).default(0.01),
        maxP99Ratio: z.number().min(1).default(1.5),
        /** Latency differences below this are noise, whatever the ratio. */
        p99SlackMs: z.number().min(0).default(50),
      })
      .strict()
      .optional(),
    /** A short `bulwark load` run against the router when the verdict is inconclusive (quiet services). */
    syntheticTraffic: loadHookSchema.optional(),
  })
  .strict();

const canaryStepSchema = z
  .object({
    weight: z.number().int().min(0, 'must be 0..100').max(100, 'must be 0..100'),
    pause: duration('1m'),
  })
  .strict();

const appSchema = z
  .object({
    router: z.discriminatedUnion('type', [embeddedRouterSchema, haproxyRouterSchema, albRouterSchema]),
    provider: z.discriminatedUnion('type', [processProviderSchema, ecsProviderSchema]),
    strategy: z.enum(['blue-green', 'canary']).default('blue-green'),
    /** Declarative checks run against the new slot's instances directly, before any traffic. */
    healthChecks: z.array(httpCheckSchema).prefault([{ path: '/health' }]),
    smoke: loadHookSchema.optional(),
    analysis: analysisSchema.prefault({}),
    blueGreen: z
      .object({
        /** Watch the new slot for this long after the switch; a failed analysis rolls back. */
        monitor: duration('5m'),
        /** Measure the stable slot this long before the switch, as the "vs stable" baseline (default: analysis.interval). */
        baseline: durationSchema.optional(),
        /** Keep the old slot running this long after success, for an instant rollback. */
        keepOldFor: duration('10m'),
      })
      .strict()
      .prefault({}),
    canary: z
      .object({
        steps: z
          .array(canaryStepSchema)
          .min(1)
          .refine((s) => s.every((step, i) => i === 0 || step.weight > s[i - 1]!.weight), {
            message: 'weights must increase from step to step',
          })
          .prefault([
            { weight: 5, pause: '1m' },
            { weight: 25, pause: '1m' },
            { weight: 50, pause: '1m' },
            { weight: 100, pause: 0 },
          ]),
        keepOldFor: duration('10m'),
      })
      .strict()
      .prefault({}),
    /** What `bulwark deploy abort` (and a failed analysis) does to the new slot once traffic is back on stable. */
    abort: z
      .object({ newSlot: z.enum(['stop', 'keep']).default('stop') })
      .strict()
      .prefault({}),
    /** How long to wait for in-flight requests of a slot that lost its traffic. */
    drainTimeout: duration('30s'),
  })
  .strict()
  .superRefine((app, ctx) => {
    // An analysis that can never see traffic would skip every check: refuse it instead of ignoring it.
    if (app.router.type === 'aws-alb' && app.analysis.source === 'router')
      ctx.addIssue({
        code: 'custom',
        path: ['analysis', 'source'],
        message: 'the aws-alb router has no traffic metrics: set a prometheus source',
      });
  });

const RESERVED = new Set(['status', 'history', 'promote', 'abort', 'rollback', 'router', 'down', 'expire-warm']);

export const deployConfigSchema = z
  .object({
    /** Deployment state, locks and history (relative to the config file's folder). */
    stateDir: z.string().default('.bulwark'),
    webhooks: z
      .array(
        z
          .object({
            url: z.string().url(),
            headers: z.record(z.string(), z.string()).optional(),
            timeout: duration('5s'),
          })
          .strict(),
      )
      .default([]),
    apps: z.record(z.string(), appSchema).superRefine((apps, ctx) => {
      for (const name of Object.keys(apps)) {
        if (!/^[a-z0-9][a-z0-9_-]*$/.test(name))
          ctx.addIssue({ code: 'custom', path: [name], message: 'app names are lowercase letters, digits, - and _' });
        else if (RESERVED.has(name))
          ctx.addIssue({ code: 'custom', path: [name], message: 'is a reserved word of `bulwark deploy`' });
      }
    }),
  })
  .strict();

export type DeployConfig = z.infer<typeof deployConfigSchema>;
export type DeployConfigInput = z.input<typeof deployConfigSchema>;
export type AppConfig = z.infer<typeof appSchema>;
export type AppConfigInput = z.input<typeof appSchema>;
export type EmbeddedRouterConfig = z.infer<typeof embeddedRouterSchema>;
export type HaproxyRouterConfig = z.infer<typeof haproxyRouterSchema>;
export type AlbRouterConfig = z.infer<typeof albRouterSchema>;
export type ProcessProviderConfig = z.infer<typeof processProviderSchema>;
export type EcsProviderConfig = z.infer<typeof ecsProviderSchema>;
export type AnalysisConfig = z.infer<typeof analysisSchema>;
export type HttpCheck = z.infer<typeof httpCheckSchema>;
export type LoadHook = z.infer<typeof loadHookSchema>;
export type SlotName = z.infer<typeof slotName>;
export { appSchema as deployAppSchema };
