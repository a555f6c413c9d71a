import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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

  it('reads the failover state of monitors coordinated through etcd there (cluster.monitor.etcd), and guards the etcd hosts', () => {
    const dir = mkdtempSync(join(tmpdir(), 'bulwark-drill-etcd-'));
    try {
      writeFileSync(join(dir, 'cluster.json'), JSON.stringify({ name: 'staging-pg', host: '127.0.0.1' }));
      const raw = {
        backup: { pg: 'postgresql://127.0.0.1/x', repo: 'file:///r' },
        drill: { url: 'http://127.0.0.1:1' },
      };
      const file = join(dir, 'c.ts');
      const etcd = (e: object) =>
        targetFromConfig(validateConfig(configSchema, { ...raw, cluster: { dir, monitor: { etcd: e } } }, file), file);
      const t = etcd({ hosts: ['http://127.0.0.1:2379'] });
      // the scope defaults to the cluster's name, as `bulwark cluster monitor --etcd` does
      expect(t.clusterEtcd).toEqual({ hosts: ['http://127.0.0.1:2379'], scope: 'staging-pg' });
      expect(configuredSteps(undefined, t)).toEqual(['backup', 'failover']);
      expect(etcd({ hosts: ['http://127.0.0.1:2379'], scope: 'x' }).clusterEtcd?.scope).toBe('x');
      const plain = targetFromConfig(validateConfig(configSchema, { ...raw, cluster: { dir } }, file), file);
      expect(plain.clusterEtcd).toBeUndefined();
      // an etcd that is not on this machine is a target of the guard (the drill reads it, kills the primary)
      const remote = etcd({ hosts: ['http://192.0.2.7:2379'] });
      expect(() => assertTargetsAllowed(remote, false)).toThrow(/etcd \(cluster\.monitor\.etcd\) 192\.0\.2\.7:2379/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('steps a configured system cannot support are refused up front with the reason; default = the supported ones', () => {
    const f = { file: 'f', pg: 'postgresql://127.0.0.1/x', repo: 'file:///r' };
    const withCluster = { ...f, clusterDir: '/c' };
    expect(configuredSteps(undefined, f)).toEqual(['backup']);
    expect(configuredSteps(undefined, withCluster)).toEqual(['backup', 'failover']);
    expect(configuredSteps(['failover'], withCluster)).toEqual(['failover']);
    expect(() => configuredSteps(['backup', 'failover'], f)).toThrow(
      /f: step failover cannot run with --config: .*cluster\.dir/,
    );
    expect(() => configuredSteps(['good-release'], withCluster)).toThrow(
      /step good-release cannot run with --config: it needs drill\.deploy/,
    );
    expect(() => configuredSteps(undefined, { file: 'f' })).toThrow(/f: drill\.pg \(or backup\.pg\): missing/);
    expect(() => configuredSteps(['pitr'], withCluster)).toThrow(
      /step pitr cannot run with --config: it needs drill\.pitr/,
    );
    const pitr = { dir: '/copy', table: 'orders', count: 'SELECT count(*) FROM orders', scratchTable: false };
    expect(() => configuredSteps(['pitr'], { ...f, pitr })).toThrow(/drill\.pitr\.scratchTable is not true/);
    expect(configuredSteps(undefined, { ...f, pitr: { ...pitr, scratchTable: true } })).toEqual(['backup', 'pitr']);
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

describe('drill --config: the deploy steps against an app of the config (pure)', () => {
  const app = (router: object, provider: object = { type: 'process', command: 'sh app.sh' }) => ({
    deploy: { apps: { shop: { router, provider } } },
  });
  const embedded = { type: 'embedded', port: 8400, adminPort: 8401 };
  const releases = { app: 'shop', goodRelease: 'v3', badRelease: 'v2-bad' };

  it('drill.deploy adds bad-release and good-release; the load goes to the app router (drill.url defaults to it)', () => {
    const cfg = validateConfig(configSchema, { ...app(embedded), drill: { deploy: releases } }, '/x/c.ts');
    const t = targetFromConfig(cfg, '/x/c.ts');
    expect(t.url).toBe('http://127.0.0.1:8400');
    expect(t.deploy).toMatchObject({ app: 'shop', goodRelease: 'v3', badRelease: 'v2-bad', baseDir: '/x' });
    expect(configuredSteps(undefined, t)).toEqual(['bad-release', 'good-release']);
    expect(targetHosts(t).map((h) => `${h.what} ${h.host} ${h.local}`)).toEqual([
      'shop (drill.url) 127.0.0.1:8400 true',
      'router frontend (deploy.apps.shop.router) 127.0.0.1:8400 true',
      'router admin API (deploy.apps.shop.router) 127.0.0.1:8401 true',
    ]);
    // backup parts too: all four steps
    const both = validateConfig(
      configSchema,
      { ...app(embedded), backup: { pg: local.pg, repo: local.repo }, drill: { deploy: releases } },
      '/x/c.ts',
    );
    expect(configuredSteps(undefined, targetFromConfig(both, '/x/c.ts'))).toEqual([
      'backup',
      'bad-release',
      'good-release',
    ]);
  });

  it('refuses a load URL that bypasses the router, an unknown app, and a cloud router or provider without --yes-i-mean-it', () => {
    const bypass = validateConfig(
      configSchema,
      { ...app(embedded), drill: { url: 'http://127.0.0.1:9999', deploy: releases } },
      '/x/c.ts',
    );
    expect(() => targetFromConfig(bypass, '/x/c.ts')).toThrow(
      /\/x\/c\.ts: drill\.url: http:\/\/127\.0\.0\.1:9999 is not the router of deploy\.apps\.shop/,
    );
    const unknown = validateConfig(
      configSchema,
      { ...app(embedded), drill: { deploy: { ...releases, app: 'nope' } } },
      'c.ts',
    );
    expect(() => targetFromConfig(unknown, 'c.ts')).toThrow(
      /drill\.deploy\.app: c\.ts: deploy\.apps\.nope is not defined/,
    );
    const ecs = validateConfig(
      configSchema,
      {
        ...app(embedded, {
          type: 'aws-ecs',
          cluster: 'prod',
          services: { blue: 'b', green: 'g' },
          taskDefinition: 'shop:{version}',
        }),
        drill: { deploy: releases },
      },
      'c.ts',
    );
    expect(() => assertTargetsAllowed(targetFromConfig(ecs, 'c.ts'), false)).toThrow(
      /provider \(deploy\.apps\.shop\.provider: AWS ECS\) prod: not local/,
    );
    const hooked = validateConfig(
      configSchema,
      {
        deploy: { ...app(embedded).deploy, webhooks: [{ url: 'https://hooks.example.com/x?token=s3cret' }] },
        drill: { deploy: releases },
      },
      'c.ts',
    );
    expect(() => assertTargetsAllowed(targetFromConfig(hooked, 'c.ts'), false)).toThrow(
      /webhook \(deploy\.webhooks\) hooks\.example\.com: not local/,
    );
  });

  it('drill.deploy is validated: unknown keys, the same release twice, a release that is no version; url or deploy needed', () => {
    const v = (drill: object) => () => validateConfig(configSchema, { ...app(embedded), drill }, 'c.ts');
    expect(v({ deploy: { ...releases, strategy: 'canary' } })).toThrow(/^c\.ts: drill\.deploy: .*strategy/);
    expect(v({ deploy: { ...releases, badRelease: 'v3' } })).toThrow(/^c\.ts: drill\.deploy\.badRelease: .*different/);
    expect(v({ deploy: { ...releases, goodRelease: 'v 3' } })).toThrow(/^c\.ts: drill\.deploy\.goodRelease: /);
    expect(v({ rate: 5 })).toThrow(/^c\.ts: drill\.url: missing/);
  });
});
