import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { run } from '../lib/child.js';
import { pgBinDir } from '../lib/postgres.js';
import { resolveChain } from './incremental/chain.js';
import { logicalRestore } from './logical.js';
import { type BackupManifest, isIncremental } from './manifest.js';
import { pgEnv, withClient } from './pg.js';
import type { Repository } from './repository.js';
import { physicalRestore } from './restore.js';
import { initThrowaway, scratchDir, socketOnlySettings, socketPort, socketTarget, stopServer } from './throwaway.js';
import { describeTimelines, walPlan } from './timelines.js';
import { segmentTimeline } from './wal-names.js';

export interface VerifyOptions {
  repo: Repository;
  backup?: string;
  /** Also restore into a throw-away instance and run sanity queries (and pg_amcheck). */
  restore?: boolean;
  /** restore_command for a physical restore (calls this bulwark's `wal fetch`). */
  restoreCommand?: string;
  log?: (msg: string) => void;
}

export interface VerifyReport {
  backup: string;
  kind: BackupManifest['kind'];
  ok: boolean;
  at: string;
  objectsChecked: number;
  bytesChecked: number;
  problems: { object: string; problem: string }[];
  wal?: {
    from: string;
    to?: string;
    segments: number;
    missing: string[];
    /** segments whose content was read back and matched the SHA-256 in their name */
    contentChecked: number;
    /** every timeline with a history file in the archive: "2 (from 1 at 0/5000000)" */
    timelines: string[];
  };
  restore?: { ok: boolean; durationMs: number; checks: string[]; amcheck: string };
}

/** Names of segments missing between `from` and the newest archived one on the same timeline (pure). */
export function walGaps(from: string, archived: string[]): { to?: string; segments: number; missing: string[] } {
  const p = walPlan({ startWal: from, timeline: segmentTimeline(from), archived });
  return { to: p.to, segments: p.segments.length, missing: p.missing };
}

/**
 * Check every stored byte of a backup against its manifest (a corrupted object is named), check that
 * the archived WAL after a physical backup has no gap, and with `restore` prove the backup restores:
 * a throw-away instance on a Unix socket only, sanity queries on every database, pg_amcheck when
 * installed; the instance is always removed. The report is stored as backups/<id>/verify.json.
 */
export async function verifyBackup(o: VerifyOptions): Promise<VerifyReport> {
  const m = await o.repo.resolveBackupId(o.backup);
  const problems = await o.repo.checkObjects(m);
  // an incremental backup restores only with every backup below it intact
  if (isIncremental(m)) {
    const r = resolveChain(await o.repo.listBackups(), m);
    if ('error' in r) problems.push({ object: `backups/${m.id}/manifest.json`, problem: r.error });
    else for (const b of r.chain.slice(0, -1)) problems.push(...(await o.repo.checkObjects(b)));
  }
  const report: VerifyReport = {
    backup: m.id,
    kind: m.kind,
    ok: false,
    at: new Date().toISOString(),
    objectsChecked: m.objects.length,
    bytesChecked: m.sizes.stored,
    problems,
  };
  if (m.kind === 'physical' && m.pg.startWal) {
    const wal = await o.repo.listWal();
    const histories = await o.repo.listHistories().catch((err) => {
      const msg = `cannot read the timeline history files: ${(err as Error).message}`;
      // encrypted and no identity here: verify needs no key for what it can check without one
      if ((err as { code?: string }).code === 'BULWARK_E_ENCRYPTION') o.log?.(`verify: ${msg}`);
      else problems.push({ object: 'wal/other/', problem: msg });
      return [];
    });
    // the backup's own timeline, as a restore follows it by default
    const tli = m.pg.timeline ?? segmentTimeline(m.pg.startWal);
    const g = walPlan({
      startWal: m.pg.startWal,
      timeline: tli,
      history: histories.find((h) => h.tli === tli),
      archived: wal.map((w) => w.name),
    });
    report.wal = {
      from: m.pg.startWal,
      to: g.to,
      segments: g.segments.length,
      missing: g.missing,
      contentChecked: 0,
      timelines: describeTimelines(histories),
    };
    if (g.missing.length)
      problems.push({
        object: 'wal/',
        problem: `WAL gap after backup: ${g.missing.length} segment(s) missing (first ${g.missing[0]}); recovery past it is impossible`,
      });
    // every stored segment in range is read back and checked against the SHA-256 in its name: a
    // flipped byte would otherwise only show when a restore needs that segment
    // (an encrypted segment needs the age identity or passphrase for that; without it, say so)
    const byName = new Map(wal.map((w) => [w.name, w]));
    const canDecrypt = Boolean(o.repo.key?.identity || o.repo.key?.passphrase);
    let unchecked = 0;
    for (const name of g.segments) {
      const w = byName.get(name)!;
      if (w.key.endsWith('.age') && !canDecrypt) {
        unchecked++;
        continue;
      }
      try {
        await o.repo.readWal(w);
        report.wal.contentChecked++;
      } catch (err) {
        problems.push({ object: w.key, problem: `WAL segment ${name} is corrupted: ${(err as Error).message}` });
      }
    }
    if (unchecked)
      o.log?.(
        `verify: content of ${unchecked} encrypted WAL segment(s) not checked: set BULWARK_ENCRYPTION_KEY_FILE to the age identity`,
      );
  }
  if (o.restore && !problems.length) report.restore = await restoreCheck(o, m);
  report.ok = !problems.length && (report.restore?.ok ?? true);
  await o.repo.storage.put(`backups/${m.id}/verify.json`, `${JSON.stringify(report, null, 2)}\n`);
  return report;
}

async function restoreCheck(o: VerifyOptions, m: BackupManifest): Promise<NonNullable<VerifyReport['restore']>> {
  const t0 = Date.now();
  const scratch = await scratchDir('bulwark-verify-');
  const checks: string[] = [];
  let pgdata = join(scratch.dir, 'data');
  let amcheck = 'not run';
  try {
    let port: number;
    if (m.kind === 'physical') {
      port = await socketPort();
      o.log?.(`verify: restoring ${m.id} into a throw-away instance (socket ${scratch.dir})`);
      const r = await physicalRestore({
        repo: o.repo,
        pgdata,
        backup: m.id,
        target: { kind: 'immediate' },
        restoreCommand: o.restoreCommand ?? 'false',
        start: true,
        archiveMode: 'off',
        settings: socketOnlySettings(scratch.dir, port),
        trustLocalSocket: true,
        timeoutMs: 30 * 60_000,
      });
      checks.push(`restored and recovered to consistency in ${((r.started?.totalMs ?? 0) / 1000).toFixed(1)}s`);
    } else {
      const inst = await initThrowaway(scratch.dir);
      pgdata = inst.pgdata;
      port = inst.port;
      const r = await logicalRestore({ repo: o.repo, pg: socketTarget(scratch.dir, port), backup: m.id, jobs: 2 });
      checks.push(`pg_restore into a new instance in ${(r.durationMs / 1000).toFixed(1)}s`);
    }
    const target = socketTarget(scratch.dir, port);
    const dbs = await withClient(target, async (c) =>
      (await c.query<{ datname: string }>('select datname from pg_database where datallowconn order by 1')).rows.map(
        (r) => r.datname,
      ),
    );
    for (const db of dbs) {
      const n = await withClient(
        target,
        async (c) => {
          const r = await c.query<{ rels: string; rows: string }>(
            `select count(*)::text as rels,
                    coalesce(sum((xpath('/row/n/text()', query_to_xml(format('select count(*) as n from %I.%I', n.nspname, c.relname), false, true, '')))[1]::text::bigint), 0)::text as rows
               from pg_class c join pg_namespace n on n.oid = c.relnamespace
              where c.relkind = 'r' and n.nspname not in ('pg_catalog', 'information_schema')`,
          );
          return r.rows[0]!;
        },
        db,
      );
      checks.push(`${db}: ${n.rels} table(s), ${n.rows} row(s) readable`);
    }
    if (existsSync(join(pgBinDir(), 'pg_amcheck'))) {
      const r = await run(join(pgBinDir(), 'pg_amcheck'), ['--all', '--install-missing', '--no-password'], {
        env: pgEnv(target),
        check: false,
      });
      amcheck =
        r.code === 0
          ? 'ok'
          : `failed (exit ${r.code}): ${(r.stdout + r.stderr).trim().split('\n').slice(0, 3).join(' | ')}`;
    } else amcheck = 'not available (pg_amcheck not installed)';
    return {
      ok: amcheck === 'ok' || amcheck.startsWith('not available'),
      durationMs: Date.now() - t0,
      checks,
      amcheck,
    };
  } catch (err) {
    checks.push(`restore failed: ${(err as Error).message}`);
    return { ok: false, durationMs: Date.now() - t0, checks, amcheck };
  } finally {
    await stopServer(pgdata);
    await scratch.remove();
  }
}
