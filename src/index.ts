/** `import ... from 'bulwark'`: the scenario API for load tests, and defineConfig. */

export { defineConfig } from './config/index.js';
export * from './load/index.js';
