import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { StateStore } from '../../src/deploy/index.js';

const dir = mkdtempSync(join(tmpdir(), 'bulwark-state-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('deploy state store', () => {
  it('falls back to the .copy when state.json is torn', () => {
    const store = new StateStore(dir, 'torn');
    store.save({ app: 'torn', active: 'green', slots: { blue: null, green: null } });
    writeFileSync(join(store.dir, 'state.json'), '{"app": "to');
    expect(store.load().active).toBe('green');
  });

  it('takes the admin token from the named environment variable, else generates one file (0600) once', () => {
    const store = new StateStore(dir, 'tok');
    process.env.BULWARK_TEST_ROUTER_TOKEN = 'from-env';
    try {
      expect(store.routerToken('BULWARK_TEST_ROUTER_TOKEN')).toBe('from-env');
      expect(existsSync(join(store.dir, 'router.token'))).toBe(false);
    } finally {
      delete process.env.BULWARK_TEST_ROUTER_TOKEN;
    }
    const generated = store.routerToken();
    expect(generated).toMatch(/^[0-9a-f]{48}$/);
    expect(statSync(join(store.dir, 'router.token')).mode & 0o777).toBe(0o600);
    expect(store.routerToken()).toBe(generated);
  });

  it('refuses a second lock holder while the first is alive, and takes over a dead holder’s lock', () => {
    const store = new StateStore(dir, 'lock');
    const release = store.acquireLock();
    expect(() => store.acquireLock()).toThrow(/another deploy of lock is running \(pid \d+/);
    release();
    // a lock left by a process that no longer exists
    writeFileSync(
      join(store.dir, 'lock'),
      JSON.stringify({ pid: 2 ** 22 + 12345, startedAt: 'then', host: hostname() }),
    );
    expect(store.lockHolder()).toBeUndefined();
    const again = store.acquireLock();
    again();
  });
});
