import { isIP } from 'node:net';
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
}

/**
 * Why each step cannot run against a configured system (yet). The embedded drill owns every part it
 * breaks (it kills the primary it created, deploys releases it built, drops a table of its own shop);
 * against someone's staging those actions need parts the config does not describe today.
 */
export const CONFIGURED_STEP_REFUSALS: Partial<Record<StepName, string>> = {
  failover:
    "kill -9 of the primary needs the drill's own failover monitor on a cluster it can signal; against a configured cluster it would race your own monitor",
  'bad-release': 'the config names no bad release of your app (the embedded drill builds one of the demo shop)',
  'good-release': 'the config names no release of your app to deploy (the embedded drill builds one of the demo shop)',
  pitr: "dropping a table in your database and copying it back needs your table's schema, which the config does not describe",
};

/** Steps a configured drill runs: `backup` only, for now (see CONFIGURED_STEP_REFUSALS). */
export const CONFIGURED_STEPS: StepName[] = ['backup'];

/**
 * The steps of `bulwark drill --config`: all supported ones when none were chosen; a chosen step that
 * cannot run against a configured system is refused up front, with the reason.
 */
export function configuredSteps(chosen: StepName[] | undefined, file: string): StepName[] {
  if (!chosen) return [...CONFIGURED_STEPS];
  for (const step of chosen) {
    const why = CONFIGURED_STEP_REFUSALS[step];
    if (why) throw new DrillError('BULWARK_E_DRILL_TARGET', `${file}: step ${step} cannot run with --config: ${why}`);
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
