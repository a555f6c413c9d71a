import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DemoServer, startDemoServer } from '../../src/demo/index.js';
import { runCli } from '../harness/cli.js';

// Issue #11: type-checking cost seconds on every run. A passed check is remembered by the content hash
// of every file it read (type-only imports included), so an unchanged scenario is not checked again
// and any change is.
let dir: string;
let cache: string;
let server: DemoServer;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'bulwark-tc-'));
  cache = mkdtempSync(join(tmpdir(), 'bulwark-tc-cache-'));
  server = await startDemoServer({ port: 0 });
});
afterAll(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
  rmSync(cache, { recursive: true, force: true });
});

const ENTRY = `import { scenario, user } from 'bulwark';
import type { Item } from './types.ts';
const first: Item = { id: 1 };
export default scenario({
  users: [user('U', { tasks: [async (vu) => { await vu.http.get('/api/products/' + first.id); }] })],
  load: { vus: 1, duration: '1s', gracefulStop: '1s' },
});
`;

function load() {
  return runCli(['load', join(dir, 'entry.ts'), '--host', server.url], { env: { BULWARK_CACHE_DIR: cache } });
}

describe('type-check cache', () => {
  it('skips the check of an unchanged scenario and re-checks on any change, type-only imports included', async () => {
    writeFileSync(join(dir, 'types.ts'), 'export interface Item { id: number }\n');
    writeFileSync(join(dir, 'entry.ts'), ENTRY);
    const first = await load();
    expect(first.code).toBe(0);
    expect(first.stderr).not.toMatch(/type-check cached/);
    expect(readdirSync(join(cache, 'typecheck'))).toHaveLength(1);

    const second = await load();
    expect(second.code).toBe(0);
    expect(second.stderr).toMatch(/type-check cached/);

    // A type-only import changes: esbuild erases it, the type-checker does not.
    writeFileSync(join(dir, 'types.ts'), 'export interface Item { id: string }\n');
    const third = await load();
    expect(third.code).toBe(2);
    expect(third.stderr).toMatch(/entry\.ts:3:\d+: type error: .*number.*string/);

    writeFileSync(join(dir, 'types.ts'), 'export interface Item { id: number }\n');
    const fourth = await load();
    expect(fourth.code).toBe(0);
    expect(fourth.stderr).toMatch(/type-check cached/);
  });
});
