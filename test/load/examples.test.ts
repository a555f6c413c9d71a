import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DemoServer, startDemoServer } from '../../src/demo/index.js';
import { runCli } from '../harness/cli.js';

// The shipped examples type-check and run against the demo shop (shortened with --users/--duration).
let server: DemoServer;
beforeAll(async () => {
  server = await startDemoServer({ port: 0 });
});
afterAll(async () => {
  await server.close();
});

describe('examples', () => {
  it.each(['shop.ts', 'spike.ts', 'stress.ts'])('%s runs against the demo shop', async (name) => {
    const file = join(import.meta.dirname, '..', '..', 'examples', name);
    const r = await runCli(['load', file, '--host', server.url, '-u', '3', '-d', '1s', '--quiet']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/TOTAL\s+[1-9]\d*\s+0\s/);
  });
});
