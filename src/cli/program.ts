import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command, CommanderError } from 'commander';
import { distDir } from '../lib/bundle.js';
import { BulwarkError, ExitCode, exitCodeOf } from '../lib/errors.js';

export function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(join(distDir, '..', 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

type Register = (program: Command) => void;

/**
 * Which module registers each top-level command. Only the module of the command being run is
 * imported: the AWS SDK, etcd's gRPC client and the load engine each cost tens of MB of RSS, and a
 * load generator's memory is part of what it is judged on. Help and unknown commands load them all.
 */
const COMMAND_MODULES: Record<string, () => Promise<Register>> = {
  load: () => import('./commands/load.js').then((m) => m.registerLoadCommands),
  worker: () => import('./commands/load.js').then((m) => m.registerLoadCommands),
  demo: () => import('./commands/demo.js').then((m) => m.registerDemoCommands),
  'demo-server': () => import('./commands/demo.js').then((m) => m.registerDemoCommands),
  backup: () => import('./commands/backup.js').then((m) => m.registerBackupCommands),
  wal: () => import('./commands/backup.js').then((m) => m.registerBackupCommands),
  restore: () => import('./commands/backup.js').then((m) => m.registerBackupCommands),
  schedule: () => import('./commands/backup.js').then((m) => m.registerBackupCommands),
  cluster: () => import('./commands/cluster.js').then((m) => m.registerClusterCommands),
  deploy: () => import('./commands/deploy.js').then((m) => m.registerDeployCommands),
  drill: () => import('./commands/drill.js').then((m) => m.registerDrillCommands),
};

/** The registration functions needed to run `argv` (all of them for help or an unknown command). */
export async function registrationsFor(argv: string[]): Promise<Register[]> {
  const first = argv.find((a) => !a.startsWith('-'));
  const loader = first === undefined ? undefined : COMMAND_MODULES[first];
  const loaders = loader ? [loader] : [...new Set(Object.values(COMMAND_MODULES))];
  const registers = await Promise.all(loaders.map((l) => l()));
  return [...new Set(registers)];
}

/** The whole CLI. Each capability registers its own commands; this file only wires them. */
export function buildProgram(registers: Register[]): Command {
  const program = new Command('bulwark')
    .description('Prove your HTTP services on PostgreSQL survive load, data loss, node failure and bad releases.')
    .version(packageVersion(), '-V, --version')
    .option('--verbose', 'print stack traces and debug logs')
    .showHelpAfterError('(run with --help for usage)')
    // Program options only before the subcommand, so `bulwark deploy shop --version v2` reaches deploy.
    .enablePositionalOptions()
    .exitOverride();
  for (const register of registers) register(program);
  // Subcommands inherit exitOverride so a bad flag anywhere maps to exit code 2, not commander's 1.
  const applyOverride = (cmd: Command) => {
    cmd.exitOverride();
    for (const sub of cmd.commands) {
      // --verbose is accepted after any subcommand too (runCli reads it from argv).
      if (!sub.options.some((o) => o.long === '--verbose'))
        sub.option('--verbose', 'print stack traces and debug logs');
      applyOverride(sub);
    }
  };
  applyOverride(program);
  return program;
}

/** Run the CLI and return the process exit code. Errors print one line unless --verbose. */
export async function runCli(argv: string[]): Promise<number> {
  const program = buildProgram(await registrationsFor(argv));
  const verbose = argv.includes('--verbose');
  try {
    await program.parseAsync(argv, { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : ExitCode.ok;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help')
        return 0;
      return ExitCode.usage; // commander already printed the message
    }
    if (verbose) console.error(err);
    else if (err instanceof BulwarkError) console.error(`bulwark: ${err.message}`);
    else console.error(`bulwark: ${(err as Error)?.message ?? String(err)}`);
    return exitCodeOf(err);
  }
}
