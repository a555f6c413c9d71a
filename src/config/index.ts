import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { z } from 'zod';
import { BundleFailure, bundleUserFile, importBundled } from '../lib/bundle.js';
import { UsageError } from '../lib/errors.js';
import { type BulwarkConfig, configSchema } from './schema.js';

export { type ConfigFactory, type ConfigInput, defineConfig } from './define.js';
export { formatDuration, parseDuration, parseSize } from './duration.js';
export { type BulwarkConfig, configSchema } from './schema.js';

export const CONFIG_NAMES = ['bulwark.config.ts', 'bulwark.config.mts', 'bulwark.config.js', 'bulwark.config.mjs'];

/** Find bulwark.config.* in `dir` (the current folder by default). */
export function findConfigFile(dir = process.cwd()): string | undefined {
  for (const name of CONFIG_NAMES) {
    const candidate = join(dir, name);
    if (existsSync(candidate)) return candidate;
  }
  return undefined;
}

/** Format a zod issue path the way users read config keys: deploy.apps.shop.steps[1].weight */
export function formatIssuePath(path: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else out += out ? `.${String(key)}` : String(key);
  }
  return out || '(root)';
}

/** Validate `value` with `schema`; on failure throw one line naming the file and the key. */
export function validateConfig<S extends z.ZodType>(schema: S, value: unknown, file: string, prefix = ''): z.infer<S> {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  const key = [prefix, formatIssuePath(issue.path)].filter((p) => p && p !== '(root)').join('.') || '(root)';
  throw new UsageError(`${file}: ${key}: ${issue.message}`, 'BULWARK_E_CONFIG');
}

/**
 * Load and validate a config file. With no `file`, look for bulwark.config.* in the current folder and
 * return undefined when there is none (every capability has embedded defaults).
 */
export async function loadConfig(file?: string): Promise<{ file: string; config: BulwarkConfig } | undefined> {
  const path = file ? resolve(file) : findConfigFile();
  if (!path) return undefined;
  if (!existsSync(path)) throw new UsageError(`${path}: config file not found`, 'BULWARK_E_CONFIG');
  let raw: unknown;
  try {
    const { code } = await bundleUserFile(path);
    const { module } = await importBundled(code, { name: 'bulwark.config' });
    raw = module.default;
    if (typeof raw === 'function') raw = await raw(process.env);
    raw = await raw;
  } catch (err) {
    if (err instanceof BundleFailure) throw new UsageError(err.message, 'BULWARK_E_CONFIG');
    if (err instanceof UsageError) throw err;
    throw new UsageError(`${path}: cannot load config: ${(err as Error).message}`, 'BULWARK_E_CONFIG');
  }
  if (raw === undefined)
    throw new UsageError(`${path}: no default export (export default defineConfig({...}))`, 'BULWARK_E_CONFIG');
  return { file: path, config: validateConfig(configSchema, raw, path) };
}
