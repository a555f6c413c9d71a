import { describe, expect, it } from 'vitest';
import { validateConfig } from '../../src/config/index.js';
import { configSchema } from '../../src/config/schema.js';
import {
  assertTargetsAllowed,
  configuredSteps,
  type DrillTarget,
  isLocalHost,
  targetFromConfig,
  targetHosts,
} from '../../src/drill/index.js';

const local: DrillTarget = {
  file: '/x/bulwark.config.ts',
  url: 'http://127.0.0.1:8080',
  pg: 'postgresql://postgres:s3cret@127.0.0.1:5432/postgres',
  repo: 'file:///var/backups/repo',
};

describe('drill --config: which targets are local (pure)', () => {
  it('loopback, localhost and Unix sockets are local; any other address or name is not', () => {
    for (const h of ['127.0.0.1', '127.10.0.3', 'localhost', '::1', '[::1]', '/var/run/postgresql', ''])
      expect(isLocalHost(h), h).toBe(true);
    for (const h of ['192.0.2.10', '10.0.0.1', '0.0.0.0', 'staging.example.com', '2001:db8::1', '128.0.0.1'])
      expect(isLocalHost(h), h).toBe(false);
  });

  it('names every host of the shop, the database (also ?host=) and an S3 endpoint; never the password', () => {
    const hosts = targetHosts({
      ...local,
      pg: 'postgresql://app:s3cret@127.0.0.1:5432/db?host=192.0.2.11',
      repo: 's3://bucket/p?endpoint=http://127.0.0.1:9000',
    });
    expect(hosts).toEqual([
      { what: 'shop (drill.url)', host: '127.0.0.1:8080', local: true },
      { what: 'database (drill.pg)', host: '127.0.0.1:5432', local: true },
      { what: 'database (drill.pg)', host: '192.0.2.11', local: false },
      { what: 'repository endpoint (S3)', host: '127.0.0.1:9000', local: true },
    ]);
    expect(JSON.stringify(hosts)).not.toContain('s3cret');
    expect(targetHosts({ ...local, repo: 's3://bucket/p' }).at(-1)).toMatchObject({ local: false });
  });

  it('refuses a non-local target without --yes-i-mean-it, naming it (and the file), never the password', () => {
    expect(() => assertTargetsAllowed(local, false)).not.toThrow();
    const remote = { ...local, pg: 'postgresql://postgres:s3cret@192.0.2.10:5432/postgres' };
    let err: { message: string; code: string; exitCode: number } | undefined;
    try {
      assertTargetsAllowed(remote, false);
    } catch (e) {
      err = e as typeof err;
    }
    expect(err?.code).toBe('BULWARK_E_DRILL_TARGET');
    expect(err?.exitCode).toBe(2);
    expect(err?.message).toContain('/x/bulwark.config.ts');
    expect(err?.message).toContain('192.0.2.10:5432');
    expect(err?.message).toContain('--yes-i-mean-it');
    expect(err?.message).not.toContain('s3cret');
    expect(() => assertTargetsAllowed(remote, true)).not.toThrow();
    expect(() => assertTargetsAllowed({ ...local, url: 'http://staging.example.com' }, false)).toThrow(
      /shop \(drill.url\) staging.example.com/,
    );
  });

  it('steps a configured system cannot support are refused up front with the reason; default = the supported ones', () => {
    expect(configuredSteps(undefined, 'f')).toEqual(['backup']);
    expect(configuredSteps(['backup'], 'f')).toEqual(['backup']);
    expect(() => configuredSteps(['backup', 'failover'], 'f')).toThrow(/f: step failover cannot run with --config: /);
    expect(() => configuredSteps(['pitr'], 'f')).toThrow(/schema/);
  });

  it('drill config section: unknown keys rejected naming the file and key; backup.pg/repo are the defaults', () => {
    expect(() => validateConfig(configSchema, { drill: { url: 'http://127.0.0.1:1', bogus: 1 } }, 'c.ts')).toThrow(
      /^c\.ts: drill: .*bogus/,
    );
    expect(() => validateConfig(configSchema, { drill: { url: 'not a url' } }, 'c.ts')).toThrow(/^c\.ts: drill\.url: /);
    const cfg = validateConfig(
      configSchema,
      { backup: { pg: local.pg, repo: local.repo }, drill: { url: local.url } },
      'c.ts',
    );
    expect(targetFromConfig(cfg, 'c.ts')).toMatchObject({ pg: local.pg, repo: local.repo, url: local.url });
    expect(() => targetFromConfig({}, 'c.ts')).toThrow(/c\.ts: drill: missing/);
  });
});
