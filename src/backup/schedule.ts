import { createServer, type Server } from 'node:http';
import { hostname } from 'node:os';
import { Cron } from 'croner';
import { Counter, Gauge, Registry } from 'prom-client';
import { BackupError } from './errors.js';

export interface ScheduledJob {
  /** 'backup', 'expire', 'verify', ... (the `job` label of every metric) */
  name: string;
  cron: string;
  /** Resolves with the size it produced (bytes), when that means something. */
  run: () => Promise<{ sizeBytes?: number } | undefined>;
}

export interface ScheduleOptions {
  jobs: ScheduledJob[];
  /** POSTed `{ job, error, at, host }` as JSON when a job fails. */
  webhook?: string;
  /** Serve Prometheus metrics on 127.0.0.1:<port>/metrics (0 picks a free port). */
  metricsPort?: number;
  /** Stop each job after this many runs (for tests and one-shot use). */
  maxRuns?: number;
  log?: (msg: string, fields?: Record<string, unknown>) => void;
}

export interface RunningSchedule {
  registry: Registry;
  metricsUrl?: string;
  /** Resolves when every job has reached maxRuns (never, without maxRuns) and finished. */
  done: Promise<void>;
  stop(): Promise<void>;
}

/**
 * Run backup/expire/verify jobs on cron expressions. Contracts:
 * - a job never overlaps itself: when its next time comes while it still runs, that run is skipped and
 *   counted (bulwark_backup_job_skipped_total), never queued;
 * - a failing job does not stop the schedule; it is logged, counted, and POSTed to the webhook;
 * - metrics are per job: last success time, last duration, last size, runs by result, running now.
 */
export async function startSchedule(o: ScheduleOptions): Promise<RunningSchedule> {
  if (!o.jobs.length)
    throw new BackupError('BULWARK_E_BACKUP', 'schedule: no jobs configured (backup.schedule in bulwark.config.ts)');
  const registry = new Registry();
  const labelNames = ['job'] as const;
  const lastSuccess = new Gauge({
    name: 'bulwark_backup_job_last_success_timestamp_seconds',
    help: 'Unix time of the last successful run',
    labelNames,
    registers: [registry],
  });
  const lastDuration = new Gauge({
    name: 'bulwark_backup_job_last_duration_seconds',
    help: 'Duration of the last run',
    labelNames,
    registers: [registry],
  });
  const lastSize = new Gauge({
    name: 'bulwark_backup_job_last_size_bytes',
    help: 'Bytes produced by the last successful run',
    labelNames,
    registers: [registry],
  });
  const runs = new Counter({
    name: 'bulwark_backup_job_runs_total',
    help: 'Runs by result',
    labelNames: ['job', 'result'],
    registers: [registry],
  });
  const skipped = new Counter({
    name: 'bulwark_backup_job_skipped_total',
    help: 'Runs skipped because the previous one was still running',
    labelNames,
    registers: [registry],
  });
  const running = new Gauge({
    name: 'bulwark_backup_job_running',
    help: '1 while the job runs',
    labelNames,
    registers: [registry],
  });

  const crons: Cron[] = [];
  const inflight = new Set<Promise<void>>();
  let resolveDone!: () => void;
  const done = new Promise<void>((r) => {
    resolveDone = r;
  });
  let finished = 0;

  for (const job of o.jobs) {
    lastSuccess.labels(job.name);
    running.labels(job.name).set(0);
    let count = 0;
    let cron: Cron;
    const exec = async () => {
      count++;
      const t0 = Date.now();
      running.labels(job.name).set(1);
      o.log?.(`schedule: ${job.name} started`, { job: job.name });
      try {
        const r = await job.run();
        const secs = (Date.now() - t0) / 1000;
        lastDuration.labels(job.name).set(secs);
        lastSuccess.labels(job.name).set(Date.now() / 1000);
        if (r?.sizeBytes !== undefined) lastSize.labels(job.name).set(r.sizeBytes);
        runs.labels(job.name, 'success').inc();
        o.log?.(`schedule: ${job.name} succeeded in ${secs.toFixed(1)}s`, { job: job.name, seconds: secs });
      } catch (err) {
        lastDuration.labels(job.name).set((Date.now() - t0) / 1000);
        runs.labels(job.name, 'failure').inc();
        const message = (err as Error).message ?? String(err);
        o.log?.(`schedule: ${job.name} FAILED: ${message}`, { job: job.name, error: message });
        if (o.webhook)
          await notify(
            o.webhook,
            { job: job.name, error: message, at: new Date().toISOString(), host: hostname() },
            o.log,
          );
      } finally {
        running.labels(job.name).set(0);
        if (o.maxRuns !== undefined && count >= o.maxRuns) {
          cron.stop();
          if (++finished === o.jobs.length) resolveDone();
        }
      }
    };
    try {
      cron = new Cron(
        job.cron,
        {
          name: `bulwark-${job.name}`,
          protect: () => {
            skipped.labels(job.name).inc();
            o.log?.(`schedule: ${job.name} still running; this run is skipped`, { job: job.name });
          },
        },
        () => {
          const p = exec();
          inflight.add(p);
          return p.finally(() => inflight.delete(p));
        },
      );
    } catch (err) {
      for (const c of crons) c.stop();
      throw new BackupError(
        'BULWARK_E_BACKUP',
        `schedule: job ${job.name}: invalid cron "${job.cron}": ${(err as Error).message}`,
      );
    }
    crons.push(cron);
  }

  let server: Server | undefined;
  let metricsUrl: string | undefined;
  if (o.metricsPort !== undefined) {
    server = createServer(async (req, res) => {
      if (req.url !== '/metrics') {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-type': registry.contentType });
      res.end(await registry.metrics());
    });
    await new Promise<void>((resolve) => server!.listen(o.metricsPort, '127.0.0.1', resolve));
    const addr = server.address();
    metricsUrl = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : o.metricsPort}/metrics`;
  }

  return {
    registry,
    metricsUrl,
    done,
    async stop() {
      for (const c of crons) c.stop();
      await Promise.allSettled([...inflight]);
      if (server) await new Promise<void>((r) => server!.close(() => r()));
    },
  };
}

async function notify(url: string, body: Record<string, unknown>, log?: ScheduleOptions['log']): Promise<void> {
  try {
    const r = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
    if (!r.ok) log?.(`schedule: webhook answered ${r.status}`, { status: r.status });
  } catch (err) {
    log?.(`schedule: webhook failed: ${(err as Error).message}`);
  }
}
