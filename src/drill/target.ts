import { existsSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { readSpec } from '../cluster/index.js';
import type { BulwarkConfig } from '../config/schema.js';
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
}

/**
 * Why each step cannot run against a configured system (yet). The embedded drill owns every part it
 * breaks (it kills the primary it created, deploys releases it built, drops a table of its own shop);
 * against someone's staging those actions need parts the config does not describe today.
 */
export const CONFIGURED_STEP_REFUSALS: Partial<Record<StepName, string>> = {
  'bad-release': 'the config names no bad release of your app (the embedded drill builds one of the demo shop)',
  'good-release': 'the config names no release of your app to deploy (the embedded drill builds one of the demo shop)',
  pitr: "dropping a table in your database and copying it back needs your table's schema, which the config does not describe",
};

/** Steps a configured drill can run: `backup`, and `failover` when the config names a cluster folder. */
export const CONFIGURED_STEPS: StepName[] = ['backup', 'failover'];

const NO_CLUSTER_DIR =
  'kill -9 of the primary needs a local cluster folder (cluster.dir) whose processes the drill can signal';

/**
 * The steps of `bulwark drill --config`: all the config supports when none were chosen; a chosen step
 * that cannot run against it is refused up front, with the reason.
 */
export function configuredSteps(
  chosen: StepName[] | undefined,
  t: Pick<DrillTarget, 'file' | 'clusterDir'>,
): StepName[] {
  const supported = CONFIGURED_STEPS.filter((s) => s !== 'failover' || t.clusterDir);
  if (!chosen) return supported;
  for (const step of chosen) {
    const why = step === 'failover' && !t.clusterDir ? NO_CLUSTER_DIR : CONFIGURED_STEP_REFUSALS[step];
    if (why) throw new DrillError('BULWARK_E_DRILL_TARGET', `${t.file}: step ${step} cannot run with --config: ${why}`);
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
  return {
    file,
    url: d.url,
    pg: d.pg ?? config.backup?.pg,
    repo: d.repo ?? config.backup?.repo,
    s3: config.backup?.s3,
    rate: d.rate,
    ...clusterOf(config.cluster?.dir, file),
  };
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

/** The cluster folder of the config (a local file read, nothing contacted) and its nodes' host. */
function clusterOf(dir: string | undefined, file: string): Pick<DrillTarget, 'clusterDir' | 'clusterHost'> {
  if (!dir) return {};
  const abs = resolve(dirname(file), dir);
  if (!existsSync(join(abs, 'cluster.json')))
    throw new DrillError('BULWARK_E_DRILL_TARGET', `${file}: cluster.dir: ${abs} holds no cluster (cluster.json)`);
  return { clusterDir: abs, clusterHost: readSpec(abs).host };
}

/**
 * The failover step tests the user's own failover: a monitor must hold the cluster folder's lock
 * (bulwark cluster monitor --dir ...). The drill never brings a second one (two would race).
 */
export function requireRunningMonitor(t: DrillTarget): void {
  if (!t.clusterDir) return;
  let pid: number | undefined;
  try {
    pid = JSON.parse(readFileSync(join(t.clusterDir, 'monitor.lock'), 'utf8')).pid;
  } catch {
    // no lock: no local monitor
  }
  let alive = false;
  if (pid)
    try {
      process.kill(pid, 0);
      alive = true;
    } catch (err) {
      alive = (err as NodeJS.ErrnoException).code === 'EPERM';
    }
  if (!alive)
    throw new DrillError(
      'BULWARK_E_DRILL_TARGET',
      `${t.file}: step failover: no failover monitor is running on ${t.clusterDir} (start \`bulwark cluster monitor --dir ${t.clusterDir}\`): the drill tests your failover, it does not bring its own`,
    );
}
