import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { TestProject } from 'vitest/node';

declare module 'vitest' {
  export interface ProvidedContext {
    /** The tarball `npm pack` made of this checkout, once for the whole run. */
    bulwarkTarball: string;
  }
}

/**
 * Global setup: `npm pack` once, before any test file runs. Each test file used to pack on its
 * own; two packs at once run `prepare` (tsc) twice, and one pack could read a dist/ file while
 * the other's tsc was rewriting it, which failed a CI run. Scripts are skipped: the suite runs
 * after `npm run build`, as test/harness/cli.ts does.
 */
export function setup(project: TestProject): () => void {
  const repo = resolve(import.meta.dirname, '..', '..');
  const dir = mkdtempSync(join(tmpdir(), 'bulwark-pack-'));
  execFileSync('npm', ['pack', '--silent', '--ignore-scripts', '--pack-destination', dir], {
    cwd: repo,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const tgz = readdirSync(dir).find((f) => f.endsWith('.tgz'));
  if (!tgz) throw new Error(`npm pack left no tarball in ${dir}`);
  project.provide('bulwarkTarball', join(dir, tgz));
  return () => rmSync(dir, { recursive: true, force: true });
}
