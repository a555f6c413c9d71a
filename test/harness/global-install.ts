import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

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
  const repo = resolve(import.meta.dirname, '..', '..');
  const prefix = mkdtempSync(join(tmpdir(), 'bulwark-global-'));
  chmodSync(prefix, 0o755);
  execFileSync('npm', ['pack', '--silent', '--pack-destination', prefix], {
    cwd: repo,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const tgz = readdirSync(prefix).find((f) => f.endsWith('.tgz'));
  if (!tgz) throw new Error('npm pack produced no tarball');
  execFileSync(
    'npm',
    [
      'install',
      '-g',
      '--prefix',
      prefix,
      '--no-audit',
      '--no-fund',
      '--loglevel=error',
      '--prefer-offline',
      join(prefix, tgz),
    ],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  execFileSync('chmod', ['-R', 'a+rX', prefix]);
  return {
    bin: join(prefix, 'bin', 'bulwark'),
    prefix,
    remove: () => rmSync(prefix, { recursive: true, force: true }),
  };
}
