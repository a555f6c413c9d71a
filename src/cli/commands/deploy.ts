import type { Command } from 'commander';

/** Commands of the deploy capability; filled in by its issue. */
export function registerDeployCommands(_program: Command): void {}
