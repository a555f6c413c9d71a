import { writeFileSync } from 'node:fs';
import type { Command } from 'commander';
import { parseDuration } from '../../config/duration.js';
import { intArg } from './load.js';

export function registerDrillCommands(program: Command): void {
  program
    .command('drill')
    .description(
      'a game day in one command: local cluster + demo shop behind the router under load, then backup, kill -9 of the primary, bad release, good release and a dropped table, each with a measured hypothesis (exit 0 when all hold)',
    )
    .option('--steps <list>', 'steps to run, by number or name: backup,failover,bad-release,good-release,pitr', 'all')
    .option('--duration <duration>', 'steady traffic before the first step and after the last', '5s')
    .option('--sync', 'synchronous replication (every acknowledged commit is on a replica)')
    .option(
      '--replica-lag <duration>',
      "failover step: pause the primary's WAL senders this long before the kill (replicas lag behind)",
    )
    .option('--rate <n>', 'requests per second through the router (half are orders)', intArg('--rate', 1), 40)
    .option('--dir <dir>', 'work folder (default: a new temp folder, removed at the end)')
    .option('--keep', 'after the last step, keep everything running for inspection until Ctrl-C')
    .option('--json <file>', 'write the journal (Chaos Toolkit field names plus measured fields) as JSON')
    .option('--html <file>', 'write a self-contained HTML report: verdict, steps, charts with the faults marked')
    .action(async (opts) => {
      const { runDrill, parseSteps, drillExitCode } = await import('../../drill/index.js');
      const { liveDrillView, formatVerdict } = await import('../../drill/terminal.js');
      const steps = parseSteps(opts.steps);
      const steadyMs = parseDuration(opts.duration, '--duration');
      const controller = new AbortController();
      let interrupts = 0;
      const onSignal = () => {
        interrupts++;
        if (interrupts === 1) {
          process.stderr.write(
            '\nbulwark drill: stopping and cleaning up everything it started (Ctrl-C again to exit at once)\n',
          );
          controller.abort();
        } else process.exit(130);
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      const view = liveDrillView();
      process.stderr.write(
        `bulwark drill: ${steps.length} steps (${steps.join(', ')}), ${opts.sync ? 'synchronous' : 'asynchronous'} replication, ${opts.rate} req/s\n`,
      );
      try {
        const journal = await runDrill({
          steps,
          sync: Boolean(opts.sync),
          steadyMs,
          replicaLagMs: opts.replicaLag === undefined ? undefined : parseDuration(opts.replicaLag, '--replica-lag'),
          rate: opts.rate,
          dir: opts.dir,
          signal: controller.signal,
          onEvent: view,
          beforeCleanup: opts.keep
            ? async (info) => {
                process.stderr.write(
                  `\nkept running for inspection (Ctrl-C stops and removes everything):\n  shop through the router: ${info.url}\n  cluster: bulwark cluster status --dir ${info.clusterDir}\n  repository: bulwark backup list --repo ${info.repoUri}\n`,
                );
                await new Promise<void>((resolve) => {
                  if (controller.signal.aborted) resolve();
                  controller.signal.addEventListener('abort', () => resolve(), { once: true });
                });
              }
            : undefined,
        });
        if (opts.json) writeFileSync(opts.json, `${JSON.stringify(journal, null, 2)}\n`);
        if (opts.html) {
          const { drillHtml } = await import('../../drill/html.js');
          writeFileSync(opts.html, drillHtml(journal));
        }
        console.log(formatVerdict(journal));
        const kept = opts.keep && journal.status === 'interrupted';
        process.exitCode =
          journal.verdict.ok && (journal.status === 'completed' || kept)
            ? 0
            : journal.status === 'interrupted'
              ? 130
              : 1;
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
    });
}
