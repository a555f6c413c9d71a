import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { parseDuration } from '../../config/duration.js';
import { distDir } from '../../lib/bundle.js';
import { UsageError } from '../../lib/errors.js';
import { intArg, runLoadFromCli } from './load.js';

function parseRate(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0 || n > 1)
    throw new UsageError(`--error-rate: "${value}" must be a number from 0 to 1`);
  return n;
}

function parseNonNegativeInt(flag: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 0) throw new UsageError(`${flag}: "${value}" must be a whole number >= 0`);
    return n;
  };
}

export function registerDemoCommands(program: Command): void {
  program
    .command('demo')
    .description(
      'the main job on embedded defaults: start the demo shop API and load-test it with examples/shop.ts (~20 s)',
    )
    .option('--html <file>', 'where to write the HTML report', 'bulwark-demo-report.html')
    .option('--summary-json <file>', 'also write the summary as JSON')
    .option('-u, --users <n>', "replace the example's load with N users for --duration", intArg('--users'))
    .option('-d, --duration <duration>', 'run time with --users')
    .option('-q, --quiet', 'no live progress')
    .action(async (opts) => {
      const scenario = join(distDir, '..', 'examples', 'shop.ts');
      if (!existsSync(scenario)) throw new UsageError(`${scenario}: the packaged example is missing`);
      const { startDemoServer } = await import('../../demo/index.js');
      const server = await startDemoServer({ port: 0 });
      console.log(`demo shop API listening on ${server.url}; running ${scenario}`);
      try {
        const { code } = await runLoadFromCli(scenario, {
          host: server.url,
          html: opts.html,
          summaryJson: opts.summaryJson,
          users: opts.users,
          duration: opts.duration,
          quiet: opts.quiet,
        });
        process.exitCode = code;
      } finally {
        await server.close();
      }
    });

  program
    .command('demo-server')
    .description('serve the demo shop API (load target for examples, tests and the drill)')
    .option(
      '-p, --port <port>',
      'port to listen on (0 picks a free one; default $PORT or 8080)',
      parseNonNegativeInt('--port'),
    )
    .option('--host <host>', 'address to bind', '127.0.0.1')
    .option('--error-rate <0..1>', 'share of /api requests answered with HTTP 500', parseRate, 0)
    .option('--latency-ms <n>', 'extra latency added to every /api request', parseNonNegativeInt('--latency-ms'), 0)
    .option('--stall-every <duration>', 'every this long, the whole server stops answering...', (v) =>
      parseDuration(v, '--stall-every'),
    )
    .option('--stall-for <duration>', '...for this long', (v) => parseDuration(v, '--stall-for'))
    .option('--label <label>', 'returned in the x-served-by header and in /health', process.env.BULWARK_LABEL ?? 'demo')
    .option('--unhealthy', '/health answers 503 (a release that fails its health checks)')
    .option(
      '--cluster-dir <dir>',
      'store orders in PostgreSQL: the local cluster in this folder, through the routing pool (writes follow failovers)',
    )
    .action(async (opts) => {
      if ((opts.stallEvery === undefined) !== (opts.stallFor === undefined)) {
        throw new UsageError('--stall-every and --stall-for go together');
      }
      if (opts.stallEvery !== undefined && opts.stallFor >= opts.stallEvery) {
        throw new UsageError('--stall-for must be shorter than --stall-every');
      }
      const { startDemoServer, sqlOrderStore, ORDERS_TABLE_SQL } = await import('../../demo/index.js');
      const port = opts.port ?? (process.env.PORT ? parseNonNegativeInt('PORT')(process.env.PORT) : 8080);
      let orders: import('../../demo/index.js').OrderStore | undefined;
      if (opts.clusterDir) {
        const cluster = await import('../../cluster/index.js');
        const pool = cluster.createClusterPool({ nodes: cluster.localConnectionStrings(opts.clusterDir), max: 5 });
        pool.on('error', () => {}); // a node going away is the pool's business (it re-routes), not a crash
        await pool.query(ORDERS_TABLE_SQL);
        orders = sqlOrderStore(pool);
      }
      const server = await startDemoServer({
        port,
        host: opts.host,
        errorRate: opts.errorRate,
        latencyMs: opts.latencyMs,
        stallEveryMs: opts.stallEvery,
        stallForMs: opts.stallFor,
        label: opts.label,
        healthStatus: opts.unhealthy ? 503 : 200,
        // shared by every instance of a deploy, so a token survives a switch (from the environment: never in ps)
        tokenSecret: process.env.BULWARK_DEMO_TOKEN_SECRET || undefined,
        orders,
      });
      console.log(`listening on ${server.url}`);
      await new Promise<void>((resolve) => {
        const stop = () => {
          server
            .close()
            .then(() => orders?.close?.())
            .then(resolve, resolve);
        };
        process.once('SIGTERM', stop);
        process.once('SIGINT', stop);
      });
    });
}
