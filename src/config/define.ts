import type { BulwarkConfigInput } from './schema.js';

// Type-only import: scenarios import defineConfig through 'bulwark', and must not pay for zod and
// every config schema at run time (12 MB of RSS in a load generator).

export type ConfigInput = BulwarkConfigInput;
export type ConfigFactory =
  | ConfigInput
  | Promise<ConfigInput>
  | ((env: NodeJS.ProcessEnv) => ConfigInput | Promise<ConfigInput>);

/** Identity function that gives bulwark.config.ts type checking and editor completion (as Vite's). */
export function defineConfig(config: ConfigInput): ConfigInput;
export function defineConfig(config: Promise<ConfigInput>): Promise<ConfigInput>;
export function defineConfig(config: (env: NodeJS.ProcessEnv) => ConfigInput | Promise<ConfigInput>): typeof config;
export function defineConfig(config: ConfigFactory): ConfigFactory {
  return config;
}
