import { existsSync } from 'node:fs';
import { isIP } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { readSpec } from '../cluster/index.js';
import type { DeployConfig } from '../config/deploy.js';
import type { BulwarkConfig } from '../config/schema.js';
import { appConfigOf, storeFor } from '../deploy/index.js';
import { clusterStateReader } from './cluster-state.js';
import { DrillError } from './errors.js';
import type { StepName } from './types.js';

/** The user's system a configured drill runs against (from bulwark.config.ts). */
export interface DrillTarget {
  /** The config file it came from (named in messages). */
  file: string;
  /** Base URL of the shop under load. */
  url: string;
  /** postgresql:// URL of the primary (may hold a password: never printed, only its host and port). */
  pg?: string;
  /** Repository URI (file:// or s3://). */
  repo?: string;
  /** S3 options of the backup section (endpoint, region...). */
  s3?: { endpoint?: string; region?: string; forcePathStyle?: boolean; sse?: 'AES256' | 'aws:kms'; kmsKeyId?: string };
  rate?: number;
  /** Local cluster folder (cluster.dir) for the failover step, and the host its nodes listen on. */
  clusterDir?: string;
  clusterHost?: string;
  /** The config's monitors coordinate through etcd (cluster.monitor.etcd): the failover state is read there. */
  clusterEtcd?: { hosts: string[]; scope: string };
  /** The deploy steps: an app of the config's deploy section, its two releases, its router's hosts. */
  deploy?: DrillDeployTarget;
  /** The pitr step (drill.pitr): the copy's data folder (absolute), the table, its count query. */
  pitr?: { dir: string; table: string; count: string; scratchTable: boolean };
  /** The user's scenario (drill.load, absolute path) and how its acknowledged writes are checked. */
  load?: { scenario: string; acks?: { request: string; id: string; query: string } };
}

export interface DrillDeployTarget {
  app: string;
  goodRelease: string;
  badRelease: string;
  /** The config's deploy section (deployerFromConfig builds the app's router and provider from it). */
  config: DeployConfig;
  /** The config file's folder: deploy.stateDir and relative paths resolve from it. */
  baseDir: string;
  /** What the deploy steps contact besides the load's URL: router admin API, cloud APIs. */
  hosts: Array<{ what: string; host: string; hostname: string }>;
}

/**
 * Why each step cannot run against a configured system (yet). The embedded drill owns every part it
 * breaks (it kills the primary it created, deploys releases it built, drops a table of its own shop);
 * against someone's staging those actions need parts the config does not describe today.
 */
export const CONFIGURED_STEP_REFUSALS: Partial<Record<StepName, string>> = {
  'bad-release':
    'it needs drill.deploy: { app, goodRelease, badRelease } (an app of deploy.apps and a release of it that fails its analysis)',
  'good-release':
    'it needs drill.deploy: { app, goodRelease, badRelease } (an app of deploy.apps and a good release of it)',
  pitr: 'it needs drill.pitr: { dir, table, scratchTable: true } (where the copy goes, your table it must hold, and consent to a drill-owned scratch table that is dropped and recovered)',
};

/**
 * Steps a configured drill can run: `backup` with a database and a repository, `failover` with a
 * cluster folder, `bad-release` and `good-release` with drill.deploy.
 */
export const CONFIGURED_STEPS: StepName[] = ['backup', 'failover', 'bad-release', 'good-release', 'pitr'];

const NO_BACKUP_PARTS =
  "it needs the primary's postgresql:// URL (drill.pg or backup.pg) and a repository (drill.repo or backup.repo)";

const NO_CLUSTER_DIR =
  'kill -9 of the primary needs a local cluster folder (cluster.dir) whose processes the drill can signal';

/**
 * The steps of `bulwark drill --config`: all the config supports when none were chosen; a chosen step
 * that cannot run against it is refused up front, with the reason.
 */
export function configuredSteps(
  chosen: StepName[] | undefined,
  t: Pick<DrillTarget, 'file' | 'clusterDir' | 'deploy' | 'pg' | 'repo' | 'pitr' | 's3'>,
): StepName[] {
  const why = (step: StepName): string | undefined => {
    if (step === 'backup') return t.pg && t.repo ? undefined : NO_BACKUP_PARTS;
    if (step === 'failover') return t.clusterDir ? undefined : NO_CLUSTER_DIR;
    if (step === 'bad-release' || step === 'good-release') return t.deploy ? undefined : CONFIGURED_STEP_REFUSALS[step];
    if (step === 'pitr') {
      if (!t.pitr) return CONFIGURED_STEP_REFUSALS.pitr;
      if (!t.pitr.scratchTable)
        return 'drill.pitr.scratchTable is not true: the step drops a table to recover it, and it only ever drops its own (bulwark_drill_oops_<run id>), created in your database with your consent';
      if (!t.pg || !t.repo) return NO_BACKUP_PARTS;
      return undefined;
    }
    return CONFIGURED_STEP_REFUSALS[step];
  };
  if (!chosen) {
    const supported = CONFIGURED_STEPS.filter((s) => !why(s));
    if (!supported.length) {
      if (!t.clusterDir) requireBackupParts({ ...t, url: '' }); // names the missing database or repository
      throw new DrillError(
        'BULWARK_E_DRILL_TARGET',
        `${t.file}: drill: no step can run against this config (backup: ${NO_BACKUP_PARTS}; bad-release and good-release need drill.deploy)`,
      );
    }
    return supported;
  }
  for (const step of chosen) {
    const reason = why(step);
    if (reason)
      throw new DrillError('BULWARK_E_DRILL_TARGET', `${t.file}: step ${step} cannot run with --config: ${reason}`);
  }
  return chosen;
}

/** True for a host that is this machine: 127.0.0.0/8, ::1, localhost, or a Unix socket folder. */
export function isLocalHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === '' || h.startsWith('/')) return true; // libpq: empty host or a socket folder
  if (h === 'localhost' || h.endsWith('.localhost')) return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  if (isIP(h) === 6) return h === '::1' || h === '0:0:0:0:0:0:0:1' || /^::ffff:127\./.test(h);
  return false; // any other name may resolve anywhere: not local
}

/** Host (and port) of a postgresql:// URL; never its user or password. */
function pgHosts(url: string, file: string): string[] {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new DrillError('BULWARK_E_DRILL_TARGET', `${file}: drill.pg is not a postgresql:// URL`);
  }
  if (u.protocol !== 'postgresql:' && u.protocol !== 'postgres:')
    throw new DrillError('BULWARK_E_DRILL_TARGET', `${file}: drill.pg is not a postgresql:// URL`);
  // libpq lets ?host= override (or add, comma-separated) hosts; every one of them is a target
  const hosts = [u.hostname, ...(u.searchParams.get('host')?.split(',') ?? [])].filter((h, i) => i === 0 || h);
  return hosts.map((h) => (u.port && h === u.hostname ? `${h}:${u.port}` : h));
}

/** Every host the drill would send something to, each with what it is. */
export function targetHosts(t: DrillTarget): Array<{ what: string; host: string; local: boolean }> {
  const out: Array<{ what: string; host: string; local: boolean }> = [];
  const add = (what: string, host: string, hostname = host) => out.push({ what, host, local: isLocalHost(hostname) });
  const shop = new URL(t.url);
  add('shop (drill.url)', shop.host, shop.hostname);
  if (t.clusterHost !== undefined) add('cluster (cluster.dir)', t.clusterHost);
  for (const h of t.clusterEtcd?.hosts ?? []) {
    const u = new URL(h);
    add('etcd (cluster.monitor.etcd)', u.host, u.hostname);
  }
  for (const h of t.deploy?.hosts ?? []) add(h.what, h.host, h.hostname);
  if (t.pg)
    for (const h of pgHosts(t.pg, t.file))
      add('database (drill.pg)', h, h.replace(/:\d+$/, '').replace(/^\[|\]$/g, ''));
  if (t.repo?.startsWith('s3://')) {
    const endpoint = new URL(t.repo).searchParams.get('endpoint') ?? t.s3?.endpoint;
    if (endpoint) {
      const e = new URL(endpoint);
      add('repository endpoint (S3)', e.host, e.hostname);
    } else out.push({ what: 'repository (S3)', host: `AWS S3${t.s3?.region ? ` ${t.s3.region}` : ''}`, local: false });
  }
  return out;
}

/**
 * The safety guard of `bulwark drill --config`: the drill breaks things, so a target that is not this
 * machine needs --yes-i-mean-it. Decided from the config alone, before anything is contacted.
 */
export function assertTargetsAllowed(t: DrillTarget, yesIMeanIt: boolean): void {
  if (yesIMeanIt) return;
  const remote = targetHosts(t).filter((h) => !h.local);
  if (remote.length)
    throw new DrillError(
      'BULWARK_E_DRILL_TARGET',
      `${t.file}: refusing to run a drill against ${remote.map((r) => `${r.what} ${r.host}`).join(', ')}: not local; pass --yes-i-mean-it to break that system on purpose`,
    );
}

/** The target described by a loaded config: the `drill` section, with `backup.pg/repo/s3` as defaults. */
export function targetFromConfig(config: BulwarkConfig, file: string): DrillTarget {
  const d = config.drill;
  if (!d)
    throw new DrillError(
      'BULWARK_E_DRILL_TARGET',
      `${file}: drill: missing (bulwark drill --config needs a drill section)`,
    );
  const deploy = d.deploy ? deployTargetOf(config, d.deploy, file) : undefined;
  const routerUrl = deploy?.hosts.find((h) => h.what.startsWith('router frontend'))?.url;
  let url = d.url;
  if (!url) {
    if (!routerUrl)
      throw new DrillError(
        'BULWARK_E_DRILL_TARGET',
        `${file}: drill.url: missing (the router of deploy.apps.${d.deploy!.app} has no frontendUrl to send the load to)`,
      );
    url = routerUrl;
  } else if (deploy && routerUrl && new URL(url).origin !== new URL(routerUrl).origin)
    throw new DrillError(
      'BULWARK_E_DRILL_TARGET',
      `${file}: drill.url: ${new URL(url).origin} is not the router of deploy.apps.${d.deploy!.app} (${routerUrl}): the deploy steps measure the load that goes through that router (leave drill.url out to use it)`,
    );
  return {
    file,
    url,
    ...(deploy ? { deploy: { ...deploy, hosts: deploy.hosts.map(({ url: _u, ...h }) => h) } } : {}),
    pg: d.pg ?? config.backup?.pg,
    repo: d.repo ?? config.backup?.repo,
    s3: config.backup?.s3,
    rate: d.rate,
    ...clusterOf(config.cluster?.dir, file, config.cluster?.monitor?.etcd),
    ...(d.load ? { load: { scenario: resolve(dirname(file), d.load.scenario), acks: d.load.acks } } : {}),
    ...(d.pitr
      ? {
          pitr: {
            dir: resolve(dirname(file), d.pitr.dir),
            table: d.pitr.table,
            count: d.pitr.count ?? `SELECT count(*) FROM ${d.pitr.table}`,
            scratchTable: d.pitr.scratchTable,
          },
        }
      : {}),
  };
}

/**
 * The deploy steps' part of the target, from the config alone: the app must exist in deploy.apps; the
 * hosts are its router's (frontend, admin API, cloud API) and the provider's when it is a cloud's.
 */
function deployTargetOf(
  config: BulwarkConfig,
  d: { app: string; goodRelease: string; badRelease: string },
  file: string,
): Omit<DrillDeployTarget, 'hosts'> & { hosts: Array<DrillDeployTarget['hosts'][number] & { url?: string }> } {
  if (!config.deploy)
    throw new DrillError(
      'BULWARK_E_DRILL_TARGET',
      `${file}: drill.deploy: the config has no deploy section (deploy.apps.${d.app})`,
    );
  let app: ReturnType<typeof appConfigOf>;
  try {
    app = appConfigOf(config.deploy, d.app, file);
  } catch (err) {
    throw new DrillError('BULWARK_E_DRILL_TARGET', `drill.deploy.app: ${(err as Error).message}`);
  }
  const hosts: Array<DrillDeployTarget['hosts'][number] & { url?: string }> = [];
  const r = app.router;
  const where = `deploy.apps.${d.app}.router`;
  if (r.type === 'embedded') {
    const host = r.host === '0.0.0.0' ? '127.0.0.1' : r.host;
    const url = `http://${host.includes(':') ? `[${host}]` : host}:${r.port}`;
    hosts.push({ what: `router frontend (${where})`, host: new URL(url).host, hostname: host, url });
    hosts.push({ what: `router admin API (${where})`, host: `${r.adminHost}:${r.adminPort}`, hostname: r.adminHost });
  } else if (r.type === 'haproxy') {
    // the runtime API is a local socket; only the frontend URL (when given) is a host
    if (r.frontendUrl) {
      const u = new URL(r.frontendUrl);
      hosts.push({ what: `router frontend (${where})`, host: u.host, hostname: u.hostname, url: u.origin });
    }
  } else {
    hosts.push({ what: `router (${where}: AWS ALB)`, host: r.listenerArn.split(':')[3] ?? 'AWS', hostname: 'aws' });
    if (r.frontendUrl) {
      const u = new URL(r.frontendUrl);
      hosts.push({ what: `router frontend (${where})`, host: u.host, hostname: u.hostname, url: u.origin });
    }
  }
  if (app.analysis.source !== 'router') {
    const u = new URL(app.analysis.source.url);
    hosts.push({ what: `metrics (deploy.apps.${d.app}.analysis.source)`, host: u.host, hostname: u.hostname });
  }
  // a deploy notifies the webhooks: the drill's deploys would too
  for (const w of config.deploy.webhooks) {
    const u = new URL(w.url);
    hosts.push({ what: 'webhook (deploy.webhooks)', host: u.host, hostname: u.hostname });
  }
  if (app.provider.type === 'aws-ecs')
    hosts.push({
      what: `provider (deploy.apps.${d.app}.provider: AWS ECS)`,
      host: `${app.provider.cluster}${app.provider.region ? ` ${app.provider.region}` : ''}`,
      hostname: 'aws',
    });
  return {
    app: d.app,
    goodRelease: d.goodRelease,
    badRelease: d.badRelease,
    config: config.deploy,
    baseDir: dirname(file),
    hosts,
  };
}

/**
 * The deploy steps need the app already deployed (a stable release the bad one is rolled back to)
 * and no deploy of it running. Read from the app's state folder (a local file), nothing contacted.
 */
export function requireDeployedApp(t: DrillTarget): void {
  const d = t.deploy;
  if (!d) return;
  const store = storeFor(d.config, d.app, d.baseDir);
  const state = store.load();
  const stable = state.active ? state.slots[state.active] : null;
  if (!stable)
    throw new DrillError(
      'BULWARK_E_DRILL_TARGET',
      `${t.file}: drill.deploy: ${d.app} is not deployed (no active slot in its deploy state): deploy a stable release first (bulwark deploy ${d.app} --version V --config ${t.file})`,
    );
  if (stable.version === d.badRelease || stable.version === d.goodRelease)
    throw new DrillError(
      'BULWARK_E_DRILL_TARGET',
      `${t.file}: drill.deploy: ${d.app} already runs ${stable.version}: the drill deploys ${d.badRelease} and ${d.goodRelease} over a different stable release`,
    );
  const holder = store.lockHolder();
  if (holder)
    throw new DrillError(
      'BULWARK_E_DRILL_TARGET',
      `${t.file}: drill.deploy: a deploy of ${d.app} is running (pid ${holder.pid}): wait for it to end`,
    );
}

/** The pitr step's copy goes into a folder the drill creates: an existing one is refused (never overwritten). */
export function requirePitrFolder(t: DrillTarget): void {
  if (t.pitr && existsSync(t.pitr.dir))
    throw new DrillError(
      'BULWARK_E_DRILL_TARGET',
      `${t.file}: drill.pitr.dir: ${t.pitr.dir} exists: the drill restores into a new folder it creates (remove it or name another)`,
    );
}

/** What the backup step needs of the target, or the reason it cannot run (named in the config's terms). */
export function requireBackupParts(t: DrillTarget): { pg: string; repo: string } {
  if (!t.pg)
    throw new DrillError(
      'BULWARK_E_DRILL_TARGET',
      `${t.file}: drill.pg (or backup.pg): missing: the backup step needs the primary's postgresql:// URL`,
    );
  if (!t.repo)
    throw new DrillError(
      'BULWARK_E_DRILL_TARGET',
      `${t.file}: drill.repo (or backup.repo): missing: the backup step needs a repository`,
    );
  return { pg: t.pg, repo: t.repo };
}

/**
 * The cluster folder of the config (a local file read, nothing contacted), its nodes' host, and where
 * its monitors publish their state when they coordinate through etcd (scope: as `cluster monitor`).
 */
function clusterOf(
  dir: string | undefined,
  file: string,
  etcd: { hosts: string[]; scope?: string } | undefined,
): Pick<DrillTarget, 'clusterDir' | 'clusterHost' | 'clusterEtcd'> {
  if (!dir) return {};
  const abs = resolve(dirname(file), dir);
  if (!existsSync(join(abs, 'cluster.json')))
    throw new DrillError('BULWARK_E_DRILL_TARGET', `${file}: cluster.dir: ${abs} holds no cluster (cluster.json)`);
  const spec = readSpec(abs);
  return {
    clusterDir: abs,
    clusterHost: spec.host,
    ...(etcd ? { clusterEtcd: { hosts: etcd.hosts, scope: etcd.scope ?? spec.name } } : {}),
  };
}

/**
 * The failover step tests the user's own failover: a monitor must hold the cluster folder's lock
 * (bulwark cluster monitor --dir ...) or, for monitors coordinated through etcd, the etcd leader key.
 * The drill never brings a second one (two would race).
 */
export async function requireRunningMonitor(t: DrillTarget): Promise<void> {
  if (!t.clusterDir) return;
  const reader = clusterStateReader(t.clusterDir, t.clusterEtcd);
  let running: boolean;
  try {
    running = await reader.monitorRunning();
  } finally {
    await reader.close();
  }
  if (!running)
    throw new DrillError(
      'BULWARK_E_DRILL_TARGET',
      t.clusterEtcd
        ? `${t.file}: step failover: no failover monitor holds the leadership in ${reader.where} (start \`bulwark cluster monitor --dir ${t.clusterDir} --etcd ...\`): the drill tests your failover, it does not bring its own`
        : `${t.file}: step failover: no failover monitor is running on ${t.clusterDir} (start \`bulwark cluster monitor --dir ${t.clusterDir}\`): the drill tests your failover, it does not bring its own`,
    );
}
