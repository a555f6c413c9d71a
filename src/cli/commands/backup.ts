import { randomBytes } from 'node:crypto';
import { realpathSync } from 'node:fs';
import { tmpdir } from 'node:os';
import type { Command } from 'commander';
import { MISSING_FRESH_MS } from '../../backup/wal-names.js';
import type { BackupConfig } from '../../config/backup.js';
import { parseDuration } from '../../config/duration.js';
import { exitCodeOf, UsageError } from '../../lib/errors.js';
import type { createLogger } from '../../lib/log.js';

/**
 * `bulwark backup|wal|restore|schedule`. Where things come from (issue 3, "How commands find things"):
 * repository = --repo, else BULWARK_REPO, else backup.repo in bulwark.config.ts (--config FILE);
 * database = --pg URL, else libpq's PG* variables, else backup.pg in the config. The config file is read
 * only when a flag or variable leaves something open, or --config is given, so `wal push` (once per WAL
 * segment) does not pay for bundling it.
 */

interface CommonOpts {
  repo?: string;
  pg?: string;
  config?: string;
  logFormat?: 'text' | 'json';
  compress?: 'zstd' | 'gzip' | 'none';
  compressLevel?: number;
  encrypt?: boolean;
}

const PG_VARS = ['PGHOST', 'PGPORT', 'PGUSER', 'PGDATABASE', 'PGSERVICE', 'PGHOSTADDR'];

function intArg(flag: string, min = 0) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min) throw new UsageError(`${flag}: "${value}" must be a whole number >= ${min}`);
    return n;
  };
}

function compressionArg(v: string): 'zstd' | 'gzip' | 'none' {
  if (v !== 'zstd' && v !== 'gzip' && v !== 'none')
    throw new UsageError(`--compress: "${v}" must be zstd, gzip or none`);
  return v;
}

function targetTimelineArg(v: string): 'current' | 'latest' | number {
  if (v === 'current' || v === 'latest') return v;
  if (/^[1-9]\d{0,9}$/.test(v) && Number(v) <= 0xffffffff) return Number(v);
  throw new UsageError(`--target-timeline: "${v}" must be current, latest or a timeline number`);
}

function dumpFormatArg(v: string): 'custom' | 'directory' {
  if (v !== 'custom' && v !== 'directory') throw new UsageError(`--format: "${v}" must be custom or directory`);
  return v;
}

function withCommon(cmd: Command, what: { pg?: boolean; encoding?: boolean } = {}): Command {
  cmd
    .option('--repo <uri>', 'repository: file:///path or s3://bucket/prefix (default $BULWARK_REPO, then config)')
    .option('--config <file>', 'bulwark.config.ts to read (default ./bulwark.config.ts when needed)')
    .option('--log-format <format>', 'text or json (structured logs on stderr)', (v) => {
      if (v !== 'text' && v !== 'json') throw new UsageError(`--log-format: "${v}" must be text or json`);
      return v;
    });
  if (what.pg) cmd.option('--pg <url>', 'PostgreSQL connection URL (default libpq PG* variables, then config)');
  if (what.encoding)
    cmd
      .option('--compress <algo>', 'zstd, gzip or none (default zstd, or config)', compressionArg)
      .option('--compress-level <n>', 'compression level (zstd 1-19, gzip 1-9)', intArg('--compress-level', 0))
      .option('--encrypt', 'encrypt with age (key from BULWARK_ENCRYPTION_KEY_FILE or _PASSPHRASE)');
  return cmd;
}

interface Ctx {
  repoUri: string;
  cfg: BackupConfig;
  repo: import('../../backup/index.js').Repository;
  pg: import('../../backup/index.js').PgTarget;
  encoding: import('../../backup/index.js').Encoding;
  say: (line: string) => void;
  log: ReturnType<typeof createLogger> | undefined;
  progress: import('../../backup/index.js').ProgressListener;
}

async function context(o: CommonOpts): Promise<Ctx> {
  // only the modules every command needs (not the whole capability: `wal push` start-up matters)
  const [storageMod, codec, repoMod, progressMod] = await Promise.all([
    import('../../backup/storage/index.js'),
    import('../../backup/codec.js'),
    import('../../backup/repository.js'),
    import('../../backup/progress.js'),
  ]);
  const b = { ...storageMod, ...codec, ...repoMod, ...progressMod };
  b.progressIntervalMs(); // a bad BULWARK_PROGRESS_INTERVAL_MS is a usage error before anything starts
  const hasPgEnv = PG_VARS.some((v) => process.env[v]);
  const needConfig = o.config !== undefined || (!o.repo && !process.env.BULWARK_REPO) || (!o.pg && !hasPgEnv);
  // loaded lazily: the config loader (esbuild, zod) costs more start-up than a whole `wal push`
  const loaded = needConfig ? await (await import('../../config/index.js')).loadConfig(o.config) : undefined;
  const cfg: BackupConfig = (loaded?.config.backup as BackupConfig | undefined) ?? {};
  const repoUri = o.repo ?? process.env.BULWARK_REPO ?? cfg.repo;
  if (!repoUri)
    throw new UsageError(
      'no backup repository: pass --repo file:///path or s3://bucket/prefix, set BULWARK_REPO, or set backup.repo in bulwark.config.ts',
      'BULWARK_E_REPO',
    );
  const storage = b.openStorage(repoUri, cfg.s3 ?? {});
  // the key is read lazily by the codec; reading it here would fail commands that do not need it
  let key: ReturnType<typeof b.keyFromEnv>;
  try {
    key = b.keyFromEnv();
  } catch (err) {
    if (o.encrypt || cfg.encryption === 'age') throw err;
  }
  const repo = new b.Repository(storage, key);
  const pg = { url: o.pg ?? (hasPgEnv ? undefined : cfg.pg) };
  const compression = o.compress ?? cfg.compression ?? 'zstd';
  const encoding = {
    compression,
    level: o.compressLevel ?? cfg.level ?? b.DEFAULT_LEVEL[compression],
    encryption: o.encrypt || cfg.encryption === 'age' ? ('age' as const) : ('none' as const),
  };
  const json = o.logFormat === 'json';
  const log = json ? (await import('../../lib/log.js')).createLogger({ name: 'bulwark.backup' }) : undefined;
  const tty = process.stderr.isTTY;
  const progress = (e: import('../../backup/index.js').ProgressEvent) => {
    if (log) log.info({ event: 'progress', ...e }, e.phase);
    else if (!e.done) process.stderr.write(`${tty ? '\r\x1b[K' : ''}${b.formatProgress(e)}${tty ? '' : '\n'}`);
    else if (tty) process.stderr.write('\r\x1b[K');
  };
  const say = (line: string) => {
    if (log) log.info(line);
    else process.stderr.write(`${line}\n`);
  };
  return { repoUri, cfg, repo, pg, encoding, say, log, progress };
}

/** The absolute command line PostgreSQL should run to call this same bulwark (restore_command). */
export function selfCommand(): string {
  const q = (s: string) => `"${s.replace(/(["\\$`])/g, '\\$1')}"`;
  return `${q(process.execPath)} ${q(realpathSync(process.argv[1]!))}`;
}

/**
 * restore_command for a restored data folder. Recovery runs it once per segment, and starting Node
 * costs more than replaying a segment, so a tiny shell step comes first: record the segment asked for
 * (the prefetcher's window follows it), move the segment in if the prefetcher already downloaded and
 * verified it (or copy its second copy, when recovery asks again for a segment it already took), or
 * answer "not in the archive" from the prefetcher's marker while it is fresh (younger than
 * MISSING_FRESH_MS; `find -mmin` takes fractions of a minute); only otherwise start bulwark
 * (`wal fetch --prefetch`, which also starts a prefetcher when none runs). The spool is private to
 * this restore; `restore --start` runs the prefetcher itself (see startRestorePrefetcher).
 */
export function restoreCommandFor(repoUri: string, depth = 8, spool = restoreSpool()): string {
  const fresh = String(MISSING_FRESH_MS / 60_000);
  const script = `echo "$1" > "$3/want" 2>/dev/null; mv -f "$3/in/$1" "$2" 2>/dev/null && exit 0; cp "$3/again/$1" "$2" 2>/dev/null && exit 0; test -e "$3/missing/$1" && test -n "$(find "$3/missing/$1" -mmin -${fresh} 2>/dev/null)" && exit 1; exec ${selfCommand()} wal fetch "$1" "$2" --prefetch ${depth} --spool "$3" --repo "$4"`;
  return `sh -c ${shellQuote(script)} sh "%f" "%p" ${shellQuote(spool)} ${shellQuote(repoUri)}`;
}

/** A new private spool folder name for one restore's prefetched WAL. */
export function restoreSpool(): string {
  return `${tmpdir()}/bulwark-get-${randomBytes(6).toString('hex')}`;
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

function fmtSize(b: typeof import('../../backup/index.js'), n: number) {
  return b.formatBytes(n);
}

export function registerBackupCommands(program: Command): void {
  const backup = program.command('backup').description('take, list, inspect, verify and expire PostgreSQL backups');

  withCommon(
    backup
      .command('create')
      .description('take a backup now: physical (whole instance, PITR base) or logical (pg_dump of one database)')
      .option('--kind <kind>', 'physical or logical', 'physical')
      .option('--database <name>', 'logical: database to dump (default: the connection database)')
      .option(
        '--format <format>',
        'logical: custom (one object, no local copy; default, or config) or directory (parallel dump, one object per file)',
        dumpFormatArg,
      )
      .option(
        '--jobs <n>',
        'logical --format directory: tables dumped at once (pg_dump -j; default 2, or config)',
        intArg('--jobs', 1),
      )
      .option(
        '--type <type>',
        'physical: full, incr (only the pages changed since the newest physical backup) or diff (since the newest full one); incr and diff need WAL archiving into the repository',
      )
      .option('--label <text>', 'free text stored in the manifest'),
    { pg: true, encoding: true },
  ).action(async (opts) => {
    if (opts.kind !== 'physical' && opts.kind !== 'logical')
      throw new UsageError(`--kind: "${opts.kind}" must be physical or logical`);
    if (opts.type !== undefined && !['full', 'incr', 'incremental', 'diff', 'differential'].includes(opts.type))
      throw new UsageError(`--type: "${opts.type}" must be full, incr or diff`);
    if (opts.type !== undefined && opts.kind !== 'physical')
      throw new UsageError('--type: applies to --kind physical only');
    const changesOnly: 'incremental' | 'differential' | undefined =
      opts.type === 'incr' || opts.type === 'incremental'
        ? 'incremental'
        : opts.type === 'diff' || opts.type === 'differential'
          ? 'differential'
          : undefined;
    if (opts.kind !== 'logical' && (opts.format !== undefined || opts.jobs !== undefined))
      throw new UsageError(`${opts.format !== undefined ? '--format' : '--jobs'}: applies to --kind logical only`);
    const b = await import('../../backup/index.js');
    if (opts.format !== undefined) b.checkDumpOptions(opts.format, opts.jobs);
    const c = await context(opts);
    const format = opts.format ?? c.cfg.logical?.format ?? 'custom';
    if (opts.kind === 'logical') b.checkDumpOptions(format, opts.jobs);
    c.say(`backup (${opts.kind}${opts.kind === 'logical' ? `, ${format} format` : ''}) to ${c.repo.description} ...`);
    // Ctrl-C / SIGTERM stop pg_dump and remove what was stored and the local temp folder
    const stop = new AbortController();
    const onSignal = () => stop.abort();
    if (opts.kind === 'logical') process.once('SIGINT', onSignal).once('SIGTERM', onSignal);
    // one backup create (or expire) at a time per repository; a dead holder's lock is taken over
    const lock = await b.acquireRepoLock(c.repo, 'backup create', { log: c.say });
    let m: import('../../backup/index.js').BackupManifest;
    try {
      m =
        opts.kind === 'logical'
          ? await b
              .logicalBackup({
                repo: c.repo,
                pg: c.pg,
                database: opts.database,
                encoding: c.encoding,
                label: opts.label,
                format,
                jobs: format === 'directory' ? (opts.jobs ?? c.cfg.logical?.jobs) : undefined,
                onProgress: c.progress,
                signal: stop.signal,
                log: c.say,
              })
              .finally(() => process.off('SIGINT', onSignal).off('SIGTERM', onSignal))
          : changesOnly
            ? await b.incrementalBackup({
                repo: c.repo,
                pg: c.pg,
                encoding: c.encoding,
                label: opts.label,
                onProgress: c.progress,
                log: c.say,
                type: changesOnly,
              })
            : await b.physicalBackup({
                repo: c.repo,
                pg: c.pg,
                encoding: c.encoding,
                label: opts.label,
                onProgress: c.progress,
              });
    } finally {
      await lock.release().catch(() => {});
    }
    const mibs = m.sizes.raw / 1048576 / (m.durationMs / 1000);
    if (m.incremental)
      c.say(
        `${m.type === 'differential' ? 'differential' : 'incremental'} on ${m.incremental.reference}: read ${fmtSize(b, m.incremental.scannedBytes)}, copied ${m.incremental.changedBlocks} changed pages and ${m.incremental.wholeFiles} whole files`,
      );
    console.log(
      `backup ${m.id} complete: ${fmtSize(b, m.sizes.raw)} -> ${fmtSize(b, m.sizes.stored)} (${m.encoding.compression}${m.encoding.encryption === 'age' ? '+age' : ''}) in ${(m.durationMs / 1000).toFixed(1)}s (${mibs.toFixed(0)} MiB/s)`,
    );
  });

  withCommon(
    backup
      .command('list')
      .description('complete backups in the repository, oldest first')
      .option('--json', 'print JSON'),
  ).action(async (opts) => {
    const b = await import('../../backup/index.js');
    const c = await context(opts);
    const list = await c.repo.listBackups();
    if (opts.json) {
      console.log(JSON.stringify(list.map(summary), null, 2));
      return;
    }
    if (!list.length) {
      console.log(`no backups in ${c.repo.description}`);
      return;
    }
    const rows = list.map((m) => [
      m.id,
      m.incremental ? `physical ${m.type === 'differential' ? 'diff' : 'incr'}` : m.kind,
      m.stoppedAt.replace('T', ' ').replace(/\.\d+Z$/, 'Z'),
      `${(m.durationMs / 1000).toFixed(1)}s`,
      fmtSize(b, m.sizes.raw),
      fmtSize(b, m.sizes.stored),
      m.kind === 'physical'
        ? `${m.pg.startWal}..${m.pg.stopWal}`
        : `${m.pg.database ?? ''} (${m.pg.dumpFormat ?? 'custom'})`,
    ]);
    printTable(['id', 'kind', 'stopped', 'duration', 'size', 'stored', 'WAL needed / database (format)'], rows);
  });

  withCommon(
    backup
      .command('info <id>')
      .description("one backup's manifest: type, times, LSNs, sizes, checksums")
      .option('--json', 'print JSON'),
  ).action(async (id: string, opts) => {
    const b = await import('../../backup/index.js');
    const c = await context(opts);
    const m = await c.repo.resolveBackupId(id);
    const verify = await readVerify(c.repo, m.id);
    if (opts.json) {
      const timelines = await c.repo.listHistories().catch(() => undefined);
      console.log(
        JSON.stringify(
          { ...summary(m), objects: m.objects, timelines: timelines ?? null, lastVerify: verify ?? null },
          null,
          2,
        ),
      );
      return;
    }
    const s = summary(m);
    const lines: [string, string][] = [
      ['id', m.id],
      ['kind', m.kind + (m.label ? ` (${m.label})` : '')],
      ['started', m.startedAt],
      ['stopped', m.stoppedAt],
      ['duration', `${(m.durationMs / 1000).toFixed(2)}s`],
      ['throughput', `${s.throughputMiBps.toFixed(1)} MiB/s`],
      ['size', `${fmtSize(b, m.sizes.raw)} (${m.sizes.raw} bytes)`],
      [
        'stored',
        `${fmtSize(b, m.sizes.stored)} (${m.sizes.stored} bytes), ${m.encoding.compression}${m.encoding.level !== undefined ? ` level ${m.encoding.level}` : ''}, encryption ${m.encoding.encryption}`,
      ],
      ['server', `PostgreSQL ${m.pg.serverVersion ?? '?'}, system ${m.pg.systemIdentifier ?? '?'}`],
    ];
    if (m.kind === 'physical') {
      if (m.incremental) {
        lines.push([
          'type',
          `${m.type === 'differential' ? 'differential' : 'incremental'} on ${m.incremental.reference} (pages changed since LSN ${m.incremental.sinceLsn})`,
        ]);
        lines.push([
          'changes',
          `${m.incremental.changedBlocks} pages + ${m.incremental.wholeFiles} whole files, of ${fmtSize(b, m.incremental.scannedBytes)} read`,
        ]);
      } else lines.push(['type', 'full']);
      lines.push(['timeline', String(m.pg.timeline)]);
      const histories = await c.repo.listHistories().catch((err: Error) => {
        lines.push(['timelines', `cannot read the history files: ${err.message}`]);
        return undefined;
      });
      if (histories)
        lines.push([
          'timelines',
          histories.length
            ? `${b.describeTimelines(histories).join(', ')} (history files in the archive; restores follow ${m.pg.timeline} unless --target-timeline)`
            : `${m.pg.timeline} only (no history file in the archive)`,
        ]);
      lines.push(['LSN', `${m.pg.startLsn} .. ${m.pg.stopLsn}`]);
      lines.push(['WAL needed', `${m.pg.startWal} .. ${m.pg.stopWal} (and every later segment for PITR)`]);
    } else lines.push(['database', `${m.pg.database} (pg_dump ${m.pg.dumpFormat} format)`]);
    lines.push([
      'checksums',
      `SHA-256 per object; last verify: ${verify ? `${verify.ok ? 'ok' : 'FAILED'} at ${verify.at}` : 'never'}`,
    ]);
    for (const o of m.objects) lines.push([`object`, `${o.key} ${fmtSize(b, o.storedBytes)} sha256=${o.sha256}`]);
    for (const [k, v] of lines) console.log(`${k.padEnd(11)} ${v}`);
  });

  withCommon(
    backup
      .command('expire')
      .description('delete backups no retention rule keeps, and WAL no kept backup needs')
      .option('--keep-last <n>', 'keep the N newest backups of each kind', intArg('--keep-last', 1))
      .option('--max-age <duration>', 'keep backups younger than this (e.g. 14d)')
      .option(
        '--keep-daily <n>',
        'keep the newest backup of each of the last N days with one',
        intArg('--keep-daily', 1),
      )
      .option('--keep-weekly <n>', 'same, per ISO week', intArg('--keep-weekly', 1))
      .option('--keep-monthly <n>', 'same, per month', intArg('--keep-monthly', 1))
      .option('--orphan-age <duration>', 'also delete data of interrupted backups (no manifest) older than this', '24h')
      .option('--dry-run', 'print what would be deleted, delete nothing'),
  ).action(async (opts) => {
    const c = await context(opts);
    const r = c.cfg.retention ?? {};
    const flagsGiven = [opts.keepLast, opts.maxAge, opts.keepDaily, opts.keepWeekly, opts.keepMonthly].some(
      (v) => v !== undefined,
    );
    const maxAge = flagsGiven ? opts.maxAge : r.maxAge;
    const policy = flagsGiven
      ? { keepLast: opts.keepLast, daily: opts.keepDaily, weekly: opts.keepWeekly, monthly: opts.keepMonthly }
      : { keepLast: r.keepLast, daily: r.daily, weekly: r.weekly, monthly: r.monthly };
    const full = { ...policy, maxAgeMs: maxAge === undefined ? undefined : parseDuration(maxAge, '--max-age') };
    const orphanAge = parseDuration(opts.orphanAge, '--orphan-age');
    if (opts.dryRun) await runExpire(c, full, true, orphanAge);
    else
      await (await import('../../backup/lock.js')).withRepoLock(
        c.repo,
        'backup expire',
        () => runExpire(c, full, false, orphanAge),
        { log: c.say },
      );
  });

  withCommon(
    backup
      .command('verify [id]')
      .description(
        'check every object against its SHA-256 and the WAL after it; --restore also restores it into a throw-away instance',
      )
      .option('--restore', 'restore into a throw-away instance, run sanity queries and pg_amcheck, then remove it'),
  ).action(async (id: string | undefined, opts) => {
    const b = await import('../../backup/index.js');
    const c = await context({ ...opts, pg: 'unused' });
    const r = await b.verifyBackup({
      repo: c.repo,
      backup: id ?? 'latest',
      restore: opts.restore,
      restoreCommand: restoreCommandFor(c.repoUri),
      log: c.say,
    });
    if (opts.logFormat === 'json') console.log(JSON.stringify(r, null, 2));
    else {
      console.log(
        `backup ${r.backup}: ${r.objectsChecked} object(s), ${b.formatBytes(r.bytesChecked)} checked against SHA-256`,
      );
      if (r.wal)
        console.log(
          `WAL from ${r.wal.from}: ${r.wal.segments} segment(s) archived${r.wal.to ? ` up to ${r.wal.to}` : ''}, ${r.wal.missing.length} missing, ${r.wal.contentChecked} read back against their SHA-256`,
        );
      if (r.wal)
        console.log(
          `timelines: ${r.wal.timelines.length ? r.wal.timelines.map((t) => `timeline ${t}`).join(', ') : 'one (no history file in the archive)'}`,
        );
      for (const p of r.problems) console.log(`PROBLEM ${p.object}: ${p.problem}`);
      if (r.restore) {
        for (const ch of r.restore.checks) console.log(`restore: ${ch}`);
        console.log(`restore: pg_amcheck ${r.restore.amcheck}`);
      }
      console.log(r.ok ? `verify ${r.backup}: ok` : `verify ${r.backup}: FAILED`);
    }
    if (!r.ok) {
      const first = r.problems[0];
      throw new b.BackupError(
        'BULWARK_E_VERIFY',
        first
          ? `verify ${r.backup} failed: ${first.object}: ${first.problem}`
          : `verify ${r.backup} failed: the test restore did not pass`,
      );
    }
  });

  withCommon(
    program
      .command('schedule')
      .description(
        'run the backup, expire and verify jobs of backup.schedule in bulwark.config.ts on their cron expressions',
      )
      .option(
        '--metrics-port <n>',
        'serve Prometheus metrics on 127.0.0.1:<n>/metrics (overrides config)',
        intArg('--metrics-port', 0),
      )
      .option(
        '--max-runs <n>',
        'stop each job after N runs and exit (default: run until stopped)',
        intArg('--max-runs', 1),
      ),
    { pg: true, encoding: true },
  ).action(async (opts) => {
    const b = await import('../../backup/index.js');
    const c = await context({ ...opts, config: opts.config ?? 'bulwark.config.ts' });
    const s = c.cfg.schedule;
    if (!s || (!s.backup && !s.incremental && !s.expire && !s.verify))
      throw new UsageError(
        'schedule: bulwark.config.ts has no backup.schedule.backup/incremental/expire/verify job',
        'BULWARK_E_CONFIG',
      );
    const jobs: import('../../backup/index.js').ScheduledJob[] = [];
    if (s.backup) {
      const kind = s.backup.kind;
      jobs.push({
        name: 'backup',
        cron: s.backup.cron,
        run: async () => {
          const m = await b.withRepoLock(c.repo, 'backup create (schedule)', async () =>
            kind === 'logical'
              ? await b.logicalBackup({
                  repo: c.repo,
                  pg: c.pg,
                  encoding: c.encoding,
                  format: c.cfg.logical?.format,
                  jobs: c.cfg.logical?.jobs,
                })
              : await b.physicalBackup({ repo: c.repo, pg: c.pg, encoding: c.encoding }),
          );
          c.say(`schedule: backup ${m.id} complete (${b.formatBytes(m.sizes.stored)} stored)`);
          return { sizeBytes: m.sizes.stored };
        },
      });
    }
    if (s.incremental) {
      jobs.push({
        name: 'incremental',
        cron: s.incremental.cron,
        run: async () => {
          const m = await b.withRepoLock(c.repo, 'backup create (schedule)', () =>
            b.incrementalBackup({ repo: c.repo, pg: c.pg, encoding: c.encoding, log: c.say }),
          );
          c.say(
            `schedule: ${m.incremental ? 'incremental ' : ''}backup ${m.id} complete (${b.formatBytes(m.sizes.stored)} stored)`,
          );
          return { sizeBytes: m.sizes.stored };
        },
      });
    }
    if (s.expire) {
      const r = c.cfg.retention ?? {};
      const policy = {
        keepLast: r.keepLast,
        daily: r.daily,
        weekly: r.weekly,
        monthly: r.monthly,
        maxAgeMs: r.maxAge === undefined ? undefined : parseDuration(r.maxAge, 'backup.retention.maxAge'),
      };
      if (!b.hasRule(policy))
        throw new UsageError('schedule: the expire job needs backup.retention rules', 'BULWARK_E_CONFIG');
      jobs.push({
        name: 'expire',
        cron: s.expire.cron,
        run: async () => {
          await b.withRepoLock(c.repo, 'backup expire (schedule)', () => runExpire(c, policy, false));
          return undefined;
        },
      });
    }
    if (s.verify) {
      const restore = s.verify.restore;
      jobs.push({
        name: 'verify',
        cron: s.verify.cron,
        run: async () => {
          const r = await b.verifyBackup({
            repo: c.repo,
            backup: 'latest',
            restore,
            restoreCommand: restoreCommandFor(c.repoUri),
          });
          if (!r.ok)
            throw new Error(
              `verify ${r.backup} failed: ${r.problems[0]?.problem ?? r.restore?.checks.at(-1) ?? 'restore check failed'}`,
            );
          return { sizeBytes: r.bytesChecked };
        },
      });
    }
    const running = await b.startSchedule({
      jobs,
      webhook: s.webhook,
      metricsPort: opts.metricsPort ?? s.metricsPort,
      maxRuns: opts.maxRuns,
      log: (msg, fields) => (c.log ? c.log.info(fields ?? {}, msg) : process.stderr.write(`${msg}\n`)),
    });
    c.say(
      `schedule: ${jobs.map((j) => `${j.name} "${j.cron}"`).join(', ')}${running.metricsUrl ? `; metrics on ${running.metricsUrl}` : ''}`,
    );
    await new Promise<void>((resolve) => {
      const stop = () => resolve();
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
      running.done.then(stop);
    });
    await running.stop();
  });

  const wal = program.command('wal').description('WAL archive: archive_command and restore_command for PostgreSQL');
  withCommon(
    wal
      .command('push <path>')
      .description(
        "archive one WAL file (archive_command = 'bulwark wal push %p --repo ...'); exits non-zero unless stored and verified",
      )
      // these three are handled by walFastPath (bulwark wal runs without loading this CLI); declared
      // here for --help and for the one-line errors of bad values
      .option('--async', 'confirm from a background pusher that stores and verifies ready segments ahead')
      .option('--parallel <n>', 'with --async: segments the pusher stores at once (default 2)', intArg('--parallel', 1))
      .option('--spool <dir>', "with --async: the pusher's markers and log (default: in the temp folder)"),
    { encoding: true },
  ).action(async (path: string, opts) => {
    const b = await import('../../backup/index.js');
    const c = await context({ ...opts, pg: 'unused' });
    const t0 = Date.now();
    const r = await b.walPush(c.repo, path, c.encoding);
    if (c.log) c.log.info({ event: 'wal-push', segment: path, result: r, ms: Date.now() - t0 }, 'wal push');
  });
  withCommon(
    wal
      .command('archive-command')
      .description('print the archive_command line for postgresql.conf (absolute paths of this node and bulwark)')
      .option(
        '--async',
        'the default: a background pusher stores and verifies segments ahead, a shell step confirms them (no Node start per segment)',
      )
      .option('--sync', 'one `bulwark wal push` (a Node start) per segment instead')
      .option('--parallel <n>', '--async: segments pushed at once', intArg('--parallel', 1), 2)
      .option('--spool <dir>', '--async: spool folder (default: in the temp folder, one per repository)'),
    { encoding: true },
  ).action(async (opts) => {
    if (opts.async && opts.sync) throw new UsageError('wal archive-command: give --async or --sync, not both');
    const repoUri = opts.repo ?? process.env.BULWARK_REPO;
    if (!repoUri)
      throw new UsageError('wal archive-command: pass --repo (the line must name the repository)', 'BULWARK_E_REPO');
    const extra = [
      opts.compress ? `--compress ${opts.compress}` : '',
      opts.compressLevel !== undefined ? `--compress-level ${opts.compressLevel}` : '',
      opts.encrypt ? '--encrypt' : '',
    ]
      .filter(Boolean)
      .join(' ');
    let line: string;
    // the default is the pusher's line: bench/backup measured it at 0.82x pgBackRest's archive-push per
    // segment where the plain one costs 1.78x (a Node start each)
    if (opts.sync) line = `${selfCommand()} wal push "%p" ${extra ? `${extra} ` : ''}--repo ${shellQuote(repoUri)}`;
    else {
      const { createHash } = await import('node:crypto');
      const spool =
        opts.spool ?? `${tmpdir()}/bulwark-push-${createHash('sha256').update(repoUri).digest('hex').slice(0, 16)}`;
      // a marker exists only for a segment the pusher stored and read back: removing it is the whole
      // confirmation. With no marker yet but a live pusher, it is storing this segment (it sees a
      // .ready within 10 ms): wait for its marker (up to ~3 s, or until it marks the segment failed)
      // instead of starting Node to push the same segment a second time. Anything else (no pusher,
      // a failure, too slow) goes through bulwark itself, which pushes synchronously.
      const script = `rm "$3/ok/$2" 2>/dev/null && exit 0; p=$(cat "$3/pusher.pid" 2>/dev/null) && kill -0 "$p" 2>/dev/null && { i=0; while [ $i -lt 150 ]; do sleep 0.02; rm "$3/ok/$2" 2>/dev/null && exit 0; [ -e "$3/failed/$2" ] && break; i=$((i+1)); done; }; exec ${selfCommand()} wal push "$1" --async --parallel ${opts.parallel} --spool "$3" ${extra ? `${extra} ` : ''}--repo "$4"`;
      line = `sh -c ${shellQuote(script)} sh "%p" "%f" ${shellQuote(spool)} ${shellQuote(repoUri)}`;
    }
    console.log(`archive_command = '${line.replace(/'/g, "''")}'`);
  });

  withCommon(
    wal
      .command('fetch <name> <dest>')
      .description("restore one WAL file (restore_command = 'bulwark wal fetch %f %p --repo ...')")
      // handled by walFastPath; declared for --help and for the one-line errors of bad values
      .option(
        '--prefetch <n>',
        'a background prefetcher downloads and verifies the next N segments',
        intArg('--prefetch', 1),
      )
      .option('--spool <dir>', "with --prefetch: the prefetcher's folder (default: in the temp folder)"),
  ).action(async (name: string, dest: string, opts) => {
    const w = await import('../../backup/wal.js');
    try {
      const c = await context({ ...opts, pg: 'unused' });
      await w.walFetch(c.repo, name, dest);
    } catch (err) {
      throw w.fetchFailure(err); // exit 1 only for "not in the archive" (restore_command contract)
    }
  });

  withCommon(
    program
      .command('restore')
      .description(
        'restore a physical backup into a data folder (with point-in-time recovery), or a logical one into a database',
      )
      .option('--pgdata <dir>', 'physical: data folder to create (must be empty unless --force)')
      .option('--backup <id>', 'backup to restore (default: the newest one that fits the target)', 'latest')
      .option('--to-time <timestamp>', 'recover up to this time (ISO 8601, e.g. 2026-01-02T03:04:05Z)')
      .option('--to-lsn <lsn>', 'recover up to this WAL position')
      .option('--to-xid <xid>', 'recover up to and including this transaction')
      .option('--to-name <name>', "recover up to a restore point made with pg_create_restore_point('name')")
      .option('--to-latest', 'recover every archived transaction (the default)')
      .option(
        '--delta',
        'over an existing data folder (PG_VERSION, server stopped): rewrite only the files whose content differs from the backup, remove the ones it does not hold',
      )
      .option('--start', 'start the server, wait until recovery reached the target and it was promoted')
      .option('--port <n>', 'port for the restored server (written to postgresql.auto.conf)', intArg('--port', 1))
      .option(
        '--archive-mode <mode>',
        "off (default: the restored server does not archive) or preserve (it archives with the backup's archive_command, into the repository: for a restore that becomes the new primary)",
        'off',
      )
      .option(
        '--target-timeline <tli>',
        "timeline recovery follows: current (the backup's own), latest (the newest in the archive) or a number; default: the backup's own, and a timeline that replaced it (failover), never a side branch",
      )
      .option(
        '--accept-wal-gap',
        'to latest: when a WAL segment is missing from the archive, recover up to it anyway (every later commit is lost)',
      )
      .option('--timeout <duration>', 'how long --start waits for recovery', '30m')
      .option('--database <name>', 'logical: target database (default: the dumped one)')
      .option('--jobs <n>', 'logical: pg_restore -j', intArg('--jobs', 1), 2)
      .option('--force', 'overwrite a non-empty data folder / an existing database'),
    { pg: true },
  ).action(async (opts) => {
    const b = await import('../../backup/index.js');
    const targets = ['toTime', 'toLsn', 'toXid', 'toName', 'toLatest'].filter((k) => opts[k] !== undefined);
    if (targets.length > 1)
      throw new UsageError('give at most one of --to-time, --to-lsn, --to-xid, --to-name, --to-latest');
    if (opts.archiveMode !== 'preserve' && opts.archiveMode !== 'off')
      throw new UsageError(`--archive-mode: "${opts.archiveMode}" must be preserve or off`);
    const timeline = opts.targetTimeline === undefined ? undefined : targetTimelineArg(opts.targetTimeline);
    if (opts.pgdata && opts.database !== undefined)
      throw new UsageError(
        '--database: applies to logical backups; a physical restore (--pgdata) restores the whole instance, every database',
      );
    // check every flag before touching the repository: a typo is a usage error (exit 2), not a failed restore
    let target: import('../../backup/index.js').RecoveryTarget = { kind: 'latest' };
    if (opts.toTime) {
      const t = new Date(opts.toTime);
      if (Number.isNaN(t.getTime()))
        throw new UsageError(`--to-time: "${opts.toTime}" is not a timestamp (use ISO 8601)`);
      target = { kind: 'time', time: opts.toTime };
    } else if (opts.toLsn) {
      if (!/^[0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8}$/.test(opts.toLsn))
        throw new UsageError(`--to-lsn: "${opts.toLsn}" is not an LSN like 0/16B3748`);
      target = { kind: 'lsn', lsn: opts.toLsn.toUpperCase() };
    } else if (opts.toXid) {
      if (!/^\d+$/.test(opts.toXid)) throw new UsageError(`--to-xid: "${opts.toXid}" is not a transaction id`);
      target = { kind: 'xid', xid: opts.toXid };
    } else if (opts.toName !== undefined) {
      // PostgreSQL keeps restore point names below 64 bytes (MAXFNAMELEN)
      if (!opts.toName || Buffer.byteLength(opts.toName) > 63)
        throw new UsageError(`--to-name: "${opts.toName}" must be a restore point name of 1 to 63 bytes`);
      target = { kind: 'name', name: opts.toName };
    }
    const c = await context(opts);
    const m = await c.repo.resolveBackupId(opts.backup);
    const logical = opts.backup !== 'latest' ? m.kind === 'logical' : !opts.pgdata;
    if (logical) {
      if (opts.pgdata || targets.length)
        throw new UsageError('--pgdata and --to-* apply to physical backups; this restore is logical');
      if (opts.acceptWalGap || opts.delta || opts.targetTimeline !== undefined)
        throw new UsageError(
          '--accept-wal-gap, --delta and --target-timeline apply to physical backups; this restore is logical',
        );
      const r = await b.logicalRestore({
        repo: c.repo,
        pg: c.pg,
        backup: opts.backup,
        database: opts.database,
        force: opts.force,
        jobs: opts.jobs,
        onProgress: c.progress,
      });
      console.log(
        `restored ${r.backup.id} (${r.backup.pg.dumpFormat ?? 'custom'} format, ${fmtSize(b, r.backup.sizes.raw)}) into database ${r.database}${r.created ? ' (created)' : ' (existing, --force)'} in ${(r.durationMs / 1000).toFixed(1)}s`,
      );
      return;
    }
    if (opts.database !== undefined)
      throw new UsageError(
        `--database: backup ${m.id} is physical; a physical restore restores the whole instance, every database`,
      );
    if (!opts.pgdata)
      throw new UsageError(`--pgdata: backup ${m.id} is physical: name the data folder to restore into`);
    const { resolve } = await import('node:path');
    const spool = restoreSpool();
    const restoreCommand = restoreCommandFor(c.repoUri, 8, spool);
    // overlap the disk writes of the extracted files with the extraction (PostgreSQL fsyncs them all
    // before recovery starts)
    const writeback = (await import('../../backup/writeback.js')).startWriteback(resolve(opts.pgdata));
    // --start waits for recovery anyway: prefetch WAL from this process, from before the server starts
    const prefetcher = opts.start
      ? await (await import('../../backup/wal.js')).startRestorePrefetcher({
          repo: c.repo,
          spool,
          pgdata: resolve(opts.pgdata),
          log: c.say,
        })
      : undefined;
    const r = await b
      .physicalRestore({
        repo: c.repo,
        pgdata: resolve(opts.pgdata),
        backup: opts.backup,
        target,
        restoreCommand,
        force: opts.force,
        start: opts.start,
        port: opts.port,
        archiveMode: opts.archiveMode,
        timeline,
        acceptWalGap: Boolean(opts.acceptWalGap),
        delta: Boolean(opts.delta),
        timeoutMs: parseDuration(opts.timeout, '--timeout'),
        onProgress: c.progress,
        log: c.say,
      })
      .finally(() => Promise.all([writeback.stop(), prefetcher?.stop()]));
    console.log(
      `restored ${r.backup.id} into ${r.pgdata} in ${(r.restoreMs / 1000).toFixed(1)}s (${r.reason})${r.delta ? `; delta: ${r.delta.rewritten} of ${r.delta.files} files rewritten, ${r.delta.removed} removed` : ''}`,
    );
    if (r.started)
      console.log(
        `recovery finished in ${(r.started.recoveryMs / 1000).toFixed(1)}s (total ${(r.started.totalMs / 1000).toFixed(1)}s): ${r.started.stoppedAt ?? r.started.redoDone ?? 'end of archive'}${r.started.timeline ? `; new timeline ${r.started.timeline}` : ''}`,
      );
    else console.log(`start it with: pg_ctl -D ${r.pgdata} start   (recovery.signal and restore_command are in place)`);
  });
}

export function summary(m: import('../../backup/index.js').BackupManifest) {
  return {
    id: m.id,
    kind: m.kind,
    type: m.kind === 'physical' ? (m.incremental ? (m.type ?? 'incremental') : 'full') : undefined,
    reference: m.incremental?.reference,
    label: m.label,
    startedAt: m.startedAt,
    stoppedAt: m.stoppedAt,
    durationMs: m.durationMs,
    throughputMiBps: m.durationMs > 0 ? m.sizes.raw / 1048576 / (m.durationMs / 1000) : 0,
    sizeBytes: m.sizes.raw,
    storedBytes: m.sizes.stored,
    compression: m.encoding.compression,
    encryption: m.encoding.encryption,
    timeline: m.pg.timeline,
    startLsn: m.pg.startLsn,
    stopLsn: m.pg.stopLsn,
    walNeeded: m.kind === 'physical' ? { from: m.pg.startWal, to: m.pg.stopWal } : undefined,
    database: m.pg.database,
    dumpFormat: m.pg.dumpFormat,
  };
}

async function readVerify(repo: import('../../backup/index.js').Repository, id: string) {
  try {
    const chunks: Buffer[] = [];
    for await (const c of await repo.storage.get(`backups/${id}/verify.json`)) chunks.push(c as Buffer);
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as { ok: boolean; at: string };
  } catch {
    return undefined;
  }
}

async function runExpire(
  c: Ctx,
  policy: import('../../backup/index.js').RetentionPolicy,
  dryRun: boolean,
  orphanAgeMs = 24 * 3600_000,
) {
  const b = await import('../../backup/index.js');
  if (!b.hasRule(policy))
    throw new UsageError(
      'backup expire: no retention rule: pass --keep-last, --max-age or --keep-daily/weekly/monthly, or set backup.retention',
    );
  const plan = b.planExpire(await c.repo.listBackups(), await c.repo.listWal(), policy);
  const verb = dryRun ? 'would delete' : 'deleted';
  for (const k of plan.keep) console.log(`keep    ${k.id}  (${k.reasons.join('; ')})`);
  for (const e of plan.expire) {
    if (!dryRun) await c.repo.deleteBackup(e.id);
    console.log(`${dryRun ? 'expire' : 'expired'} ${e.id}  (${e.kind}, ended ${e.stoppedAt})`);
  }
  if (!dryRun && plan.walExpire.length) await c.repo.storage.delete(plan.walExpire.map((w) => w.key));
  const orphans = b.findOrphans(await c.repo.storage.list('backups/'), orphanAgeMs);
  for (const o of orphans) {
    if (!dryRun) await c.repo.storage.delete(o.keys);
    console.log(
      `${dryRun ? 'remove' : 'removed'} ${o.id}  (interrupted backup: no manifest, ${b.formatBytes(o.bytes)})`,
    );
  }
  // temp files of writes that never finished (kill -9, crash): invisible to listings, same age rule
  const leftovers = b.findLeftovers((await c.repo.storage.listLeftovers?.('')) ?? [], orphanAgeMs);
  if (leftovers.length) {
    if (!dryRun) await c.repo.storage.removeLeftovers?.(leftovers.map((l) => l.key));
    for (const l of leftovers)
      console.log(`${dryRun ? 'remove' : 'removed'} ${l.key}  (unfinished write, ${b.formatBytes(l.size)})`);
  }
  console.log(
    `${verb} ${plan.expire.length} backup(s), ${plan.walExpire.length} WAL file(s) and ${orphans.length} interrupted backup(s), ${leftovers.length} unfinished write(s); ${plan.walReason}`,
  );
}

function printTable(head: string[], rows: string[][]) {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => c.padEnd(w[i]!))
      .join('  ')
      .trimEnd();
  console.log(line(head));
  for (const r of rows) console.log(line(r));
}

/**
 * `bulwark wal push|fetch` without loading the rest of the CLI. PostgreSQL starts one process per WAL
 * segment, and loading every command (commander, AWS SDK, etcd, ...) costs ~300 ms, more than the push
 * itself. Handles exactly the documented flags; anything else (--help, a typo) returns undefined so
 * the full CLI parses it and prints the usual usage error.
 */
export async function walFastPath(argv: string[]): Promise<number | undefined> {
  const [, verb, ...rest] = argv;
  if (verb !== 'push' && verb !== 'fetch' && verb !== 'pusher' && verb !== 'prefetcher') return undefined;
  const positional: string[] = [];
  const o: CommonOpts & { async?: boolean; spool?: string; parallel?: number; pgdata?: string; prefetch?: number } = {};
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i]!;
    const value = () => {
      const v = rest[++i];
      if (v === undefined) throw new Error('missing value');
      return v;
    };
    const pushy = verb === 'push' || verb === 'pusher';
    try {
      if (a === '--repo') o.repo = value();
      else if (a === '--config') o.config = value();
      else if (a === '--log-format') o.logFormat = value() as 'text' | 'json';
      else if (pushy && a === '--compress') o.compress = compressionArg(value());
      else if (pushy && a === '--compress-level') o.compressLevel = intArg('--compress-level', 0)(value());
      else if (pushy && a === '--encrypt') o.encrypt = true;
      else if (pushy && a === '--spool') o.spool = value();
      else if (pushy && a === '--parallel') o.parallel = intArg('--parallel', 1)(value());
      else if (verb === 'push' && a === '--async') o.async = true;
      else if (verb === 'pusher' && a === '--pgdata') o.pgdata = value();
      else if ((verb === 'fetch' || verb === 'prefetcher') && a === '--prefetch')
        o.prefetch = intArg('--prefetch', 1)(value());
      else if ((verb === 'fetch' || verb === 'prefetcher') && a === '--spool') o.spool = value();
      else if (a === '--verbose') continue;
      else if (a.startsWith('-')) return undefined;
      else positional.push(a);
    } catch {
      return undefined;
    }
  }
  if (o.logFormat !== undefined && o.logFormat !== 'text' && o.logFormat !== 'json') return undefined;
  if (positional.length !== (verb === 'push' ? 1 : verb === 'fetch' ? 2 : 0)) return undefined;
  if (verb === 'pusher' && (!o.pgdata || !o.spool)) return undefined;
  if (verb === 'prefetcher' && !o.spool) return undefined;
  const verbose = argv.includes('--verbose');
  try {
    const w = await import('../../backup/wal.js');
    if (verb === 'push' && o.async) {
      // the common case must not pay for anything else: marker present -> done
      const { basename } = await import('node:path');
      const repoUri = o.repo ?? process.env.BULWARK_REPO;
      const spool = o.spool ?? (repoUri ? w.spoolFor(process.cwd(), repoUri) : undefined);
      if (spool) {
        const done = await w.consumeOkMarker(spool, basename(positional[0]!));
        if (!(await w.pusherRunning(spool))) await startPusher(spool, o, repoUri);
        if (done) return 0;
      }
    }
    if (verb === 'fetch' && o.prefetch) {
      // the common case during recovery: the prefetcher already downloaded and verified it
      const repoUri = o.repo ?? process.env.BULWARK_REPO;
      const spool = o.spool ?? (repoUri ? `${w.spoolFor(process.cwd(), repoUri)}-get` : undefined);
      if (spool) {
        const done = await w.takePrefetched(spool, positional[0]!, positional[1]!);
        if (!(await w.pusherRunning(spool))) await startDaemon(spool, 'prefetcher', o, repoUri);
        if (done) return 0;
      }
    }
    const c = await context({ ...o, pg: 'unused' });
    if (verb === 'prefetcher') {
      const r = await w.runPrefetcher({
        repo: c.repo,
        spool: o.spool!,
        count: o.prefetch,
        removeSpoolOnExit: /(^|\/)bulwark-get-[0-9a-f]+\/?$/.test(o.spool!),
        log: (m) => process.stderr.write(`${new Date().toISOString()} ${m}\n`),
      });
      process.stderr.write(`${new Date().toISOString()} prefetcher: idle, exiting after ${r.fetched} segment(s)\n`);
    } else if (verb === 'pusher') {
      const r = await w.runPusher({
        repo: c.repo,
        pgdata: o.pgdata!,
        spool: o.spool!,
        encoding: c.encoding,
        parallel: o.parallel,
        log: (m) => process.stderr.write(`${new Date().toISOString()} ${m}\n`),
      });
      process.stderr.write(`${new Date().toISOString()} pusher: idle, exiting after ${r.pushed} segment(s)\n`);
    } else if (verb === 'push') {
      const t0 = Date.now();
      const r = await w.walPush(c.repo, positional[0]!, c.encoding);
      c.log?.info({ event: 'wal-push', segment: positional[0], result: r, ms: Date.now() - t0 }, 'wal push');
    } else await w.walFetch(c.repo, positional[0]!, positional[1]!);
    return 0;
  } catch (err) {
    if (verbose) console.error(err);
    else console.error(`bulwark: ${(err as Error)?.message ?? String(err)}`);
    // restore_command: any exit up to 125 tells PostgreSQL "not in the archive"; keep that answer true
    if (verb === 'fetch') return exitCodeOf((await import('../../backup/wal.js')).fetchFailure(err));
    return exitCodeOf(err);
  }
}

/** Start the detached pusher for `spool` (it exits by itself when idle); its output goes to spool/pusher.log. */
function startPusher(spool: string, o: CommonOpts & { parallel?: number }, repoUri: string | undefined): Promise<void> {
  return startDaemon(spool, 'pusher', o, repoUri);
}

/** Start a detached pusher or prefetcher for `spool` (both exit when idle); output in spool/pusher.log. */
async function startDaemon(
  spool: string,
  kind: 'pusher' | 'prefetcher',
  o: CommonOpts & { parallel?: number; prefetch?: number },
  repoUri: string | undefined,
): Promise<void> {
  const { mkdir, open } = await import('node:fs/promises');
  const { spawn } = await import('node:child_process');
  const { join } = await import('node:path');
  await mkdir(join(spool, 'ok'), { recursive: true, mode: 0o700 });
  const log = await open(join(spool, 'pusher.log'), 'a');
  const args = [realpathSync(process.argv[1]!), 'wal', kind, '--spool', spool];
  if (kind === 'pusher') args.push('--pgdata', process.cwd());
  if (o.prefetch) args.push('--prefetch', String(o.prefetch));
  if (repoUri) args.push('--repo', repoUri);
  if (o.config) args.push('--config', o.config);
  if (o.compress) args.push('--compress', o.compress);
  if (o.compressLevel !== undefined) args.push('--compress-level', String(o.compressLevel));
  if (o.encrypt) args.push('--encrypt');
  if (o.parallel) args.push('--parallel', String(o.parallel));
  const child = spawn(process.execPath, args, { detached: true, stdio: ['ignore', log.fd, log.fd] });
  child.unref();
  await log.close();
}
