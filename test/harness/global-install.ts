import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inject } from 'vitest';

export interface GlobalInstall {
  /** Absolute path of the installed `bulwark` executable. */
  bin: string;
  prefix: string;
  remove(): void;
}

/**
 * What a user gets from `npm pack` + `npm install -g`: the packed tarball installed into a fresh
 * global prefix. Tests call `bin` exactly as archive_command or a shell would (never via the repo's
 * dist/), which proves the published package is complete. The prefix is world-readable so the
 * postgres user (archive_command runs as postgres) can execute it.
 */
export function installGlobally(): GlobalInstall {
  const prefix = mkdtempSync(join(tmpdir(), 'bulwark-global-'));
  chmodSync(prefix, 0o755);
  // packed once per run by test/harness/pack-once.ts (vitest globalSetup)
  const tarball = inject('bulwarkTarball');
  execFileSync(
    'npm',
    ['install', '-g', '--prefix', prefix, '--no-audit', '--no-fund', '--loglevel=error', '--prefer-offline', tarball],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  execFileSync('chmod', ['-R', 'a+rX', prefix]);
  return {
    bin: join(prefix, 'bin', 'bulwark'),
    prefix,
    remove: () => rmSync(prefix, { recursive: true, force: true }),
  };
}
