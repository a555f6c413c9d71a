import { defineConfig } from 'vitest/config';

// Tests start real servers (PostgreSQL, etcd, HAProxy, s3rver); give them room, and run files in
// separate processes so a crashed server cannot take the whole suite with it.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/harness/pack-once.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
    maxWorkers: 2,
    fileParallelism: true,
  },
});
