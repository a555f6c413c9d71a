import type { Command } from 'commander';

/** Commands of the backup capability; filled in by its issue. */
export function registerBackupCommands(_program: Command): void {}
