import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, describe, expect, it } from 'vitest';
import { ProcessProvider } from '../../src/deploy/providers/process.js';

const MAIN = join(import.meta.dirname, '../../dist/cli/main.js');
const dir = mkdtempSync(join(tmpdir(), 'bulwark-provider-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('process provider', () => {
  it('starts instances with PORT and the version in the environment, waits for readiness, stops with SIGTERM', async () => {
    const provider = new ProcessProvider({
      command: `exec node ${MAIN} demo-server --label "$BULWARK_SLOT-$BULWARK_VERSION"`,
      instances: 2,
      logDir: dir,
    });
    const inst = await provider.start('green', 'v7');
    try {
      expect(inst.version).toBe('v7');
      expect(inst.backends).toHaveLength(2);
      for (const b of inst.backends) {
        const r = await request(`${b.url}/health`);
        expect(await r.body.json()).toMatchObject({ status: 'ok', label: 'green-v7' });
      }
      expect(await provider.alive(inst)).toBe(true);
    } finally {
      await provider.stop('green', inst);
    }
    expect(await provider.alive(inst)).toBe(false);
    await expect(request(inst.backends[0]!.url!)).rejects.toThrow();
  });

  it('fails with the log tail when the app exits before it is ready, leaving nothing running', async () => {
    const provider = new ProcessProvider({ command: 'echo "boom: missing DATABASE_URL" >&2; exit 3', logDir: dir });
    await expect(provider.start('blue', 'bad')).rejects.toThrow(/exited before it was ready.*missing DATABASE_URL/);
  });

  it('gives up after the readiness timeout and kills what it started', async () => {
    const provider = new ProcessProvider({ command: 'exec sleep 30', logDir: dir, readiness: { timeoutMs: 500 } });
    await expect(provider.start('blue', 'slow')).rejects.toMatchObject({ code: 'BULWARK_E_DEPLOY_PROVIDER' });
  });
});
