import type { Command } from 'commander';

/** Commands of the cluster capability; filled in by its issue. */
export function registerClusterCommands(_program: Command): void {}
