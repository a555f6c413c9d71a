import type { Command } from 'commander';

/** `bulwark load` and `bulwark worker`: wired in by the load-testing capability. */
export function registerLoadCommands(_program: Command): void {}
