/** `import ... from 'bulwark'`: the scenario API for load tests, and defineConfig. */

export { defineConfig } from './config/define.js';
export * from './load/index.js';
