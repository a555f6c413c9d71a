import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { distDir } from '../lib/bundle.js';

let cached: string | undefined;

/** The version of the running Bulwark (its package.json): coordinator and workers must agree. */
export function bulwarkVersion(): string {
  cached ??= (JSON.parse(readFileSync(join(distDir, '..', 'package.json'), 'utf8')) as { version: string }).version;
  return cached;
}
