import { writeFileSync } from 'node:fs';
import type { Command } from 'commander';
import { parseDuration } from '../../config/duration.js';
import { UsageError } from '../../lib/errors.js';
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
    .option(
      '-c, --config <file>',
      'run against your own system named in the config (drill section: shop URL, deploy app and releases, pitr copy folder and table, load scenario; backup: database, repository; cluster.dir) instead of embedded defaults',
    )
    .option('--yes-i-mean-it', 'with --config: allow targets that are not on this machine (anything but loopback)')
    .action(async (opts, command: Command) => {
      const drill = await import('../../drill/index.js');
      const { runDrill, parseSteps } = drill;
      const { liveDrillView, formatVerdict } = await import('../../drill/terminal.js');
      let steps = parseSteps(opts.steps);
      let target: import('../../drill/index.js').DrillTarget | undefined;
      if (opts.yesIMeanIt && !opts.config) throw new UsageError('--yes-i-mean-it goes with --config');
      if (opts.config) {
        // Everything here is decided from the config file alone: nothing is contacted before the guard passed.
        for (const [flag, set] of [
          ['--sync', opts.sync],
          ['--replica-lag', opts.replicaLag !== undefined],
          ['--keep', opts.keep],
          ['--dir', opts.dir !== undefined],
        ] as const)
          if (set) throw new UsageError(`${flag} applies to the embedded drill only, not with --config`);
        const { loadConfig } = await import('../../config/index.js');
        const loaded = (await loadConfig(opts.config))!;
        target = drill.targetFromConfig(loaded.config, loaded.file);
        drill.assertTargetsAllowed(target, Boolean(opts.yesIMeanIt));
        steps = drill.configuredSteps(opts.steps === 'all' ? undefined : steps, target);
        if (steps.includes('failover')) await drill.requireRunningMonitor(target);
        if (steps.includes('bad-release') || steps.includes('good-release')) drill.requireDeployedApp(target);
        if (steps.includes('pitr')) {
          drill.requirePitrFolder(target);
          await drill.requireArchivingIntoRepo(target); // the one check that connects (the guard has passed)
        } else target.pitr = undefined;
        if (command.getOptionValueSource('rate') === 'default' && target.rate) opts.rate = target.rate;
      }
      const steadyMs = parseDuration(opts.duration, '--duration');
      // the user's scenario is bundled and checked here: a bad file is exit 2, before anything runs
      let load: import('../../drill/traffic.js').UserLoad | undefined;
      let unloadScenario = () => {};
      if (target?.load) {
        const { loadScenarioFile } = await import('../../load/loader.js');
        const loaded = await loadScenarioFile(target.load.scenario, { typecheck: false });
        unloadScenario = () => loaded.cleanup();
        load = { definition: loaded.definition, acks: target.load.acks };
      }
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
        target
          ? `bulwark drill: ${steps.length} steps (${steps.join(', ')}) against ${target.file}, ${opts.rate} req/s\n`
          : `bulwark drill: ${steps.length} steps (${steps.join(', ')}), ${opts.sync ? 'synchronous' : 'asynchronous'} replication, ${opts.rate} req/s\n`,
      );
      try {
        const journal = await runDrill({
          steps,
          sync: Boolean(opts.sync),
          steadyMs,
          replicaLagMs: opts.replicaLag === undefined ? undefined : parseDuration(opts.replicaLag, '--replica-lag'),
          rate: opts.rate,
          dir: opts.dir,
          target,
          load,
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
        unloadScenario();
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
    });
}
