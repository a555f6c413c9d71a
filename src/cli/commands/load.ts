import { resolve } from 'node:path';
import type { Command } from 'commander';
import { UsageError } from '../../lib/errors.js';
import type { LoadResult, RunLoadOptions } from '../../load/runner.js';

export function intArg(flag: string, min = 0) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min) throw new UsageError(`${flag}: "${value}" must be a whole number >= ${min}`);
    return n;
  };
}

function numberArg(flag: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isFinite(n) || n <= 0) throw new UsageError(`${flag}: "${value}" must be a number > 0`);
    return n;
  };
}

function envArg(value: string, prior: Record<string, string> = {}): Record<string, string> {
  const eq = value.indexOf('=');
  if (eq <= 0) throw new UsageError(`--env: "${value}" must be KEY=VALUE`);
  return { ...prior, [value.slice(0, eq)]: value.slice(eq + 1) };
}

function collect(value: string, prior: string[] = []): string[] {
  if (!/^https?:\/\/[^/]+/.test(value)) throw new UsageError(`--remote-worker: "${value}" must be an http(s) URL`);
  return [...prior, value];
}

function workerLossArg(value: string): 'abort' | 'continue' {
  if (value !== 'abort' && value !== 'continue')
    throw new UsageError(`--on-worker-loss: "${value}" must be abort or continue`);
  return value;
}

function workersArg(value: string): number | 'auto' {
  if (value === 'auto') return 'auto';
  return intArg('--workers', 1)(value);
}

export interface LoadCliOptions {
  host?: string;
  users?: number;
  spawnRate?: number;
  duration?: string;
  workers?: number | 'auto';
  env?: Record<string, string>;
  seed?: number;
  summaryJson?: string;
  html?: string;
  junit?: string;
  csv?: string;
  typecheck?: boolean;
  quiet?: boolean;
  remoteWorker?: string[];
  onWorkerLoss?: 'abort' | 'continue';
}

/**
 * Run a load test the way the CLI does: live view on stderr, Ctrl-C for a graceful stop (twice to
 * quit at once), summary on stdout, optional JSON and HTML reports. Returns the exit code.
 */
export async function runLoadFromCli(
  scenario: RunLoadOptions['scenario'],
  opts: LoadCliOptions,
): Promise<{ code: number; result: LoadResult }> {
  const controller = new AbortController();
  // The exit code of a run stopped by a signal is 128 + its number (130 for Ctrl-C, 143 for SIGTERM),
  // as the shells and the anchors' users expect; the reports are written all the same.
  let stoppedBy: number | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    const code = signal === 'SIGINT' ? 130 : 143;
    if (stoppedBy === undefined) {
      stoppedBy = code;
      process.stderr.write(`\nstopping gracefully (${signal === 'SIGINT' ? 'Ctrl-C' : signal} again to quit now)...\n`);
      controller.abort();
    } else process.exit(code);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  if (opts.env) Object.assign(process.env, opts.env);
  // Loaded here, not at the top: every other command would pay the load engine's memory otherwise.
  const [{ runLoad }, { formatSummary, liveView }, { writeHtmlReport }, { writeJunit, writeCsv }] = await Promise.all([
    import('../../load/runner.js'),
    import('../../load/reporters/terminal.js'),
    import('../../load/reporters/html.js'),
    import('../../load/reporters/junit.js'),
  ]);
  const live = opts.quiet ? undefined : liveView();
  try {
    const result = await runLoad({
      scenario,
      host: opts.host,
      users: opts.users,
      spawnRate: opts.spawnRate,
      duration: opts.duration,
      workers: opts.workers,
      env: opts.env,
      seed: opts.seed,
      typecheck: opts.typecheck,
      signal: controller.signal,
      summaryJson: opts.summaryJson ? resolve(opts.summaryJson) : undefined,
      onProgress: live?.onProgress,
      onStart: live?.onStart,
      remoteWorkers: opts.remoteWorker,
      workerToken: process.env.BULWARK_WORKER_TOKEN,
      onWorkerLoss: opts.onWorkerLoss,
      commandLine: ['bulwark', ...process.argv.slice(2)],
      onWorkerLost: (loss) =>
        process.stderr.write(
          `\nworker ${loss.worker} lost at ${loss.atSeconds.toFixed(1)}s: ${loss.error}; its metrics up to then are kept, ${
            opts.onWorkerLoss === 'abort' ? 'stopping the run (--on-worker-loss abort)' : 'the others go on'
          }\n`,
        ),
    });
    live?.end();
    process.stdout.write(`${formatSummary(result.summary)}\n`);
    if (opts.html) {
      writeHtmlReport(resolve(opts.html), result.summary);
      process.stdout.write(`HTML report: ${resolve(opts.html)}\n`);
    }
    if (opts.junit) writeJunit(resolve(opts.junit), result.summary);
    if (opts.csv) writeCsv(resolve(opts.csv), result.summary);
    if (opts.summaryJson) process.stdout.write(`summary JSON: ${resolve(opts.summaryJson)}\n`);
    return { code: stoppedBy ?? result.exitCode, result };
  } finally {
    live?.end();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

export function registerLoadCommands(program: Command): void {
  program
    .command('load')
    .description('run a TypeScript/JavaScript load-test scenario (exit 99 when a threshold is crossed)')
    .argument('<scenario>', 'scenario file (anywhere on disk; it may import from "bulwark")')
    .option('--host <url>', "replace the scenario's host")
    .option('-u, --users <n>', "Locust style: run N users (replaces the scenario's load)", intArg('--users'))
    .option(
      '-r, --spawn-rate <n>',
      'users started per second with --users (default: all at once)',
      numberArg('--spawn-rate'),
    )
    .option('-d, --duration <duration>', 'run time with --users (default 30s), or of a constant-vus/arrival-rate load')
    .option('-w, --workers <n|auto>', 'worker threads (merged exactly; default 1)', workersArg)
    .option(
      '--remote-worker <url>',
      'a `bulwark worker` on another host runs a share of the load (repeatable)',
      collect,
    )
    .option(
      '--on-worker-loss <abort|continue>',
      'a worker dying mid-run: finish with the others (continue, default) or stop the run (abort, exit 1)',
      workerLossArg,
    )
    .option('-e, --env <KEY=VALUE>', 'environment variable for the scenario (repeatable)', envArg)
    .option('--seed <n>', 'seed vu.random for a repeatable run', intArg('--seed'))
    .option('--summary-json <file>', 'write the summary as JSON (schema version 1)')
    .option('--html <file>', 'write a self-contained HTML report')
    .option('--junit <file>', 'write thresholds and checks as JUnit XML test cases')
    .option('--csv <file>', 'write the endpoint table as CSV')
    .option('--no-typecheck', 'skip type-checking a TypeScript scenario')
    .option('-q, --quiet', 'no live progress')
    .action(async (file: string, opts: LoadCliOptions) => {
      const { code } = await runLoadFromCli(file, opts);
      process.exitCode = code;
    });

  program
    .command('worker')
    .description('serve as a remote load worker for `bulwark load --remote-worker URL` (token: BULWARK_WORKER_TOKEN)')
    .option('--listen <host:port>', 'address to listen on', '127.0.0.1:7701')
    .action(async (opts: { listen: string }) => {
      const m = /^(.+):(\d+)$/.exec(opts.listen);
      if (!m) throw new UsageError(`--listen: "${opts.listen}" must be host:port`);
      const { startWorkerServer } = await import('../../load/distributed/worker-server.js');
      const server = await startWorkerServer({
        host: m[1],
        port: Number(m[2]),
        token: process.env.BULWARK_WORKER_TOKEN,
        log: (line) => console.error(line),
      });
      if (!process.env.BULWARK_WORKER_TOKEN && m[1] !== '127.0.0.1' && m[1] !== 'localhost') {
        console.error('warning: no BULWARK_WORKER_TOKEN set: anyone who can reach this port can run code here');
      }
      console.log(`worker listening on ${server.url}`);
      await new Promise<void>((resolve) => {
        const stop = () => void server.close().then(resolve);
        process.once('SIGTERM', stop);
        process.once('SIGINT', stop);
      });
    });
}
