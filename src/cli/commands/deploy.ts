import { spawn } from 'node:child_process';
import { dirname } from 'node:path';
import type { Command } from 'commander';
import type { DeployConfig } from '../../config/deploy.js';
import { loadConfig } from '../../config/index.js';
import {
  type AppState,
  appConfigOf,
  type DeploymentRecord,
  deployerFromConfig,
  formatJudgement,
  startEmbeddedRouter,
  storeFor,
} from '../../deploy/index.js';
import { UsageError } from '../../lib/errors.js';

async function deployConfig(
  file: string | undefined,
): Promise<{ config: DeployConfig; baseDir: string; file: string }> {
  const loaded = await loadConfig(file);
  if (!loaded)
    throw new UsageError(
      'no bulwark.config.ts in this folder (deploy needs deploy.apps.<app>; pass --config FILE)',
      'BULWARK_E_CONFIG',
    );
  if (!loaded.config.deploy) throw new UsageError(`${loaded.file}: no deploy section`, 'BULWARK_E_CONFIG');
  return { config: loaded.config.deploy, baseDir: dirname(loaded.file), file: loaded.file };
}

const stamp = () => new Date().toISOString().slice(11, 23);

function printer(app: string) {
  return (sentence: string, judgement?: Parameters<typeof formatJudgement>[0]) => {
    console.log(`${stamp()} ${app}: ${sentence}`);
    if (judgement) for (const line of formatJudgement(judgement)) console.log(`             ${line}`);
  };
}

function describeState(s: AppState & { running?: { pid: number; startedAt: string } }): string[] {
  const lines = [`app ${s.app}: active slot ${s.active ?? '(none)'}`];
  for (const slot of ['blue', 'green'] as const) {
    const inst = s.slots[slot];
    lines.push(
      `  ${slot.padEnd(5)} ${inst ? `${inst.version}  ${inst.backends.map((b) => b.url ?? b.id).join(', ')}  since ${inst.startedAt}` : '(empty)'}`,
    );
  }
  const d = s.deployment;
  if (d) {
    lines.push(
      `  last deploy ${d.version} -> ${d.to} (${d.strategy}): ${d.status}, phase ${d.phase}${d.weights ? `, weights blue ${d.weights.blue}% / green ${d.weights.green}%` : ''}`,
    );
    if (d.pausedReason && d.status === 'paused') lines.push(`  paused: ${d.pausedReason}`);
    const last = d.events[d.events.length - 1];
    if (last) lines.push(`  last decision ${last.at}: ${last.sentence}`);
  }
  lines.push(
    s.running
      ? `  deploy process running: pid ${s.running.pid} since ${s.running.startedAt}`
      : '  no deploy process running',
  );
  return lines;
}

function describeRecord(d: DeploymentRecord): string {
  return `${d.startedAt}  ${d.version.padEnd(12)} ${d.strategy.padEnd(10)} -> ${d.to.padEnd(5)} ${d.status.padEnd(11)} ${d.events[d.events.length - 1]?.sentence ?? ''}`;
}

export function registerDeployCommands(program: Command): void {
  const deploy = program
    .command('deploy')
    .description('blue-green and canary deployments with automatic rollback')
    .argument('[app]', 'app to deploy (deploy.apps.<app> in bulwark.config.ts)')
    .option(
      '--version <version>',
      'version to deploy (the process provider passes it as BULWARK_VERSION and {version})',
    )
    .option('--strategy <strategy>', 'blue-green or canary (default: the app config)')
    .option('--resume', 'continue an interrupted deploy from where it stopped')
    .option('-c, --config <file>', 'config file (default: bulwark.config.ts in this folder)')
    .action(
      async (
        app: string | undefined,
        opts: { version?: string; strategy?: string; resume?: boolean; config?: string },
      ) => {
        if (!app) throw new UsageError('bulwark deploy: which app? (bulwark deploy APP --version V)');
        if (!opts.version && !opts.resume) throw new UsageError('bulwark deploy: --version is required');
        if (opts.strategy && opts.strategy !== 'blue-green' && opts.strategy !== 'canary')
          throw new UsageError(`--strategy: "${opts.strategy}" must be blue-green or canary`);
        const { config, baseDir } = await deployConfig(opts.config);
        const deployer = deployerFromConfig(config, app, { baseDir, log: printer(app) });
        // Ctrl-C leaves the deploy where it is (traffic included): say how to continue or undo it.
        const onSignal = (sig: NodeJS.Signals) => {
          console.error(
            `bulwark: ${sig}: deploy of ${app} interrupted; continue with \`bulwark deploy ${app} --resume\` or undo with \`bulwark deploy abort ${app}\``,
          );
          process.exit(130);
        };
        process.once('SIGINT', onSignal);
        process.once('SIGTERM', onSignal);
        const d = await deployer.deploy(opts.version ?? '', {
          strategy: opts.strategy as 'blue-green' | 'canary' | undefined,
          resume: opts.resume,
        });
        console.log(`${stamp()} ${app}: deployed ${d.version} (${d.id})`);
        const warm = deployer.warmSlot(d.id);
        if (warm) {
          // The warm period runs without this command: a detached helper stops the old slot at its
          // end (or finds it already replaced, rolled back to or stopped, and exits).
          spawn(
            process.execPath,
            [
              process.argv[1]!,
              'deploy',
              'expire-warm',
              app,
              '--id',
              d.id,
              ...(opts.config ? ['--config', opts.config] : []),
            ],
            { detached: true, stdio: 'ignore', cwd: process.cwd() },
          ).unref();
          console.log(
            `${stamp()} ${app}: ${warm.version} stays warm on ${warm.slot} until ${warm.until}: \`bulwark deploy rollback ${app}\` switches back in one weight change; it is stopped then (now: \`bulwark deploy promote ${app}\`; a new deploy may start at any time)`,
          );
        }
      },
    );

  deploy
    .command('expire-warm', { hidden: true })
    .description('stop the old slot kept warm by deploy ID at the end of its warm period (started by `bulwark deploy`)')
    .argument('<app>', 'app name')
    .requiredOption('--id <id>', 'deployment id')
    .option('-c, --config <file>', 'config file (default: bulwark.config.ts in this folder)')
    .action(async (app: string, opts: { id: string; config?: string }) => {
      const { config, baseDir } = await deployConfig(opts.config);
      const deployer = deployerFromConfig(config, app, { baseDir });
      // Poll rather than sleep through: a rollback, a new deploy or `down` ends the wait early.
      for (;;) {
        let warm: ReturnType<typeof deployer.warmSlot>;
        try {
          warm = deployer.warmSlot(opts.id);
        } catch {
          return; // the state folder is gone
        }
        if (!warm) return;
        if (Date.parse(warm.until) <= Date.now()) {
          await deployer.stopWarm('warm period over', opts.id);
          return;
        }
        await new Promise((r) => setTimeout(r, Math.min(1000, Date.parse(warm.until) - Date.now())));
      }
    });

  const withApp = (name: string, description: string) =>
    deploy
      .command(name)
      .description(description)
      .argument('<app>', 'app name')
      .option('-c, --config <file>', 'config file (default: bulwark.config.ts in this folder)');

  withApp('status', 'slots, versions, weights and the current or last deploy')
    .option('--json', 'print the state as JSON')
    .action(async (app: string, opts: { config?: string; json?: boolean }) => {
      const { config, baseDir } = await deployConfig(opts.config);
      const deployer = deployerFromConfig(config, app, { baseDir });
      const s = deployer.status();
      const router = await deployer.routerState();
      if (opts.json) console.log(JSON.stringify({ ...s, router }, null, 2));
      else {
        for (const l of describeState(s)) console.log(l);
        if ('error' in router) console.log(`  router: ${router.error}`);
        else
          console.log(
            `  router (${router.kind}): ${(['blue', 'green'] as const)
              .map((slot) => {
                const st = router.slots[slot];
                const ready = st.backends.filter((b) => b.state === 'ready').length;
                const tunnels = st.tunnels ? `, ${st.tunnels} open tunnel${st.tunnels === 1 ? '' : 's'}` : '';
                return `${slot} ${st.weight}% (${ready} ready backend${ready === 1 ? '' : 's'}${tunnels})`;
              })
              .join(', ')}`,
          );
      }
    });

  withApp('history', 'past deploys with their decisions')
    .option('--json', 'print JSON lines with every decision and its evidence')
    .option('-n, --limit <n>', 'last N deploys', (v) => Number(v), 20)
    .action(async (app: string, opts: { config?: string; json?: boolean; limit: number }) => {
      const { config, baseDir } = await deployConfig(opts.config);
      const h = deployerFromConfig(config, app, { baseDir }).history().slice(-opts.limit);
      if (opts.json) for (const d of h) console.log(JSON.stringify(d));
      else if (h.length === 0) console.log(`no deploys of ${app} yet`);
      else for (const d of h) console.log(describeRecord(d));
    });

  withApp('promote', 'skip the current pause (canary step, monitoring, inconclusive analysis, warm old slot)')
    .option('--full', 'canary: go to 100% now, skipping the remaining steps')
    .action(async (app: string, opts: { config?: string; full?: boolean }) => {
      const { config, baseDir } = await deployConfig(opts.config);
      console.log(
        await deployerFromConfig(config, app, { baseDir, log: printer(app) }).control(
          opts.full ? 'promote-full' : 'promote',
        ),
      );
    });

  withApp('abort', 'return all traffic to the stable slot; the new slot is stopped or kept per abort.newSlot').action(
    async (app: string, opts: { config?: string }) => {
      const { config, baseDir } = await deployConfig(opts.config);
      console.log(await deployerFromConfig(config, app, { baseDir, log: printer(app) }).control('abort'));
    },
  );

  withApp('rollback', 'emergency: back to the previous version now, no analysis, no steps').action(
    async (app: string, opts: { config?: string }) => {
      const { config, baseDir } = await deployConfig(opts.config);
      console.log(await deployerFromConfig(config, app, { baseDir, log: printer(app) }).control('rollback'));
    },
  );

  withApp('down', 'stop every instance of the app (both slots)').action(
    async (app: string, opts: { config?: string }) => {
      const { config, baseDir } = await deployConfig(opts.config);
      await deployerFromConfig(config, app, { baseDir }).down();
      console.log(`${app}: all instances stopped`);
    },
  );

  withApp('router', 'run the embedded router of an app (foreground; admin API on loopback with a token)').action(
    async (app: string, opts: { config?: string }) => {
      const { config, baseDir, file } = await deployConfig(opts.config);
      const appConfig = appConfigOf(config, app, file);
      const r = appConfig.router;
      if (r.type !== 'embedded')
        throw new UsageError(
          `${file}: deploy.apps.${app}.router.type is ${r.type}; only the embedded router runs in Bulwark`,
          'BULWARK_E_CONFIG',
        );
      const store = storeFor(config, app, baseDir);
      const router = await startEmbeddedRouter({
        host: r.host,
        port: r.port,
        sticky: r.sticky,
        metricsRetentionMs: r.metricsRetention,
        timeouts: r.timeouts,
        forwarded: r.forwarded,
        retryDelete: r.retryDelete,
        admin: { host: r.adminHost, port: r.adminPort, token: store.routerToken(r.adminTokenEnv) },
        statePath: store.routerTablePath(),
      });
      console.log(`router for ${app} listening on ${router.url}; admin API on ${router.adminUrl}`);
      await new Promise<void>((resolve) => {
        const stop = () => {
          router.close().then(resolve);
        };
        process.once('SIGTERM', stop);
        process.once('SIGINT', stop);
      });
    },
  );
}
