import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command, CommanderError } from 'commander';
import { distDir } from '../lib/bundle.js';
import { BulwarkError, ExitCode, exitCodeOf } from '../lib/errors.js';
import { registerBackupCommands } from './commands/backup.js';
import { registerClusterCommands } from './commands/cluster.js';
import { registerDemoCommands } from './commands/demo.js';
import { registerDeployCommands } from './commands/deploy.js';
import { registerLoadCommands } from './commands/load.js';

export function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(join(distDir, '..', 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

/** The whole CLI. Each capability registers its own commands; this file only wires them. */
export function buildProgram(): Command {
  const program = new Command('bulwark')
    .description('Prove your HTTP services on PostgreSQL survive load, data loss, node failure and bad releases.')
    .version(packageVersion(), '-V, --version')
    .option('--verbose', 'print stack traces and debug logs')
    .showHelpAfterError('(run with --help for usage)')
    // Program options only before the subcommand, so `bulwark deploy shop --version v2` reaches deploy.
    .enablePositionalOptions()
    .exitOverride();
  registerLoadCommands(program);
  registerDemoCommands(program);
  registerBackupCommands(program);
  registerClusterCommands(program);
  registerDeployCommands(program);
  // Subcommands inherit exitOverride so a bad flag anywhere maps to exit code 2, not commander's 1.
  const applyOverride = (cmd: Command) => {
    cmd.exitOverride();
    for (const sub of cmd.commands) {
      // --verbose is accepted after any subcommand too (runCli reads it from argv).
      if (!sub.options.some((o) => o.long === '--verbose')) sub.option('--verbose', 'print stack traces and debug logs');
      applyOverride(sub);
    }
  };
  applyOverride(program);
  return program;
}

/** Run the CLI and return the process exit code. Errors print one line unless --verbose. */
export async function runCli(argv: string[]): Promise<number> {
  const program = buildProgram();
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
