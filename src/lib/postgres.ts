import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { BulwarkError } from './errors.js';

/** The system user that owns and runs PostgreSQL files when Bulwark itself runs as root. */
export const POSTGRES_USER = process.env.BULWARK_PG_USER ?? 'postgres';

let pgIds: { uid: number; gid: number } | undefined;
/** uid and gid of POSTGRES_USER (looked up once): what files made for PostgreSQL are chowned to as root. */
export function postgresIds(): { uid: number; gid: number } {
  pgIds ??= {
    uid: Number(execFileSync('id', ['-u', POSTGRES_USER], { encoding: 'utf8' }).trim()),
    gid: Number(execFileSync('id', ['-g', POSTGRES_USER], { encoding: 'utf8' }).trim()),
  };
  return pgIds;
}

let cachedBinDir: string | undefined;

/**
 * Where PostgreSQL's programs live: `PG_BIN`, else `pg_config --bindir`, else the newest
 * `/usr/lib/postgresql/<major>/bin` (Debian). pg_config on Debian points at /usr/bin wrappers for
 * client tools only, so we check that initdb is really there before trusting it.
 */
export function pgBinDir(): string {
  if (cachedBinDir) return cachedBinDir;
  const candidates: string[] = [];
  if (process.env.PG_BIN) candidates.push(process.env.PG_BIN);
  try {
    candidates.push(execFileSync('pg_config', ['--bindir'], { encoding: 'utf8' }).trim());
  } catch {
    // pg_config not installed; fall through to the Debian layout
  }
  const debianRoot = '/usr/lib/postgresql';
  if (existsSync(debianRoot)) {
    const majors = readdirSync(debianRoot)
      .filter((d) => /^\d+$/.test(d))
      .sort((a, b) => Number(b) - Number(a));
    for (const m of majors) candidates.push(join(debianRoot, m, 'bin'));
  }
  for (const dir of candidates) {
    if (existsSync(join(dir, 'initdb')) && existsSync(join(dir, 'pg_ctl'))) {
      cachedBinDir = dir;
      return dir;
    }
  }
  throw new BulwarkError(
    'BULWARK_E_PG_BINARY',
    `PostgreSQL server programs not found: set PG_BIN or install postgresql (tried ${candidates.join(', ')})`,
  );
}

/** Absolute path of one PostgreSQL program (initdb, pg_ctl, pg_dump, pg_basebackup, pg_rewind, ...). */
export function pgBin(program: string): string {
  const path = join(pgBinDir(), program);
  if (!existsSync(path))
    throw new BulwarkError('BULWARK_E_PG_BINARY', `PostgreSQL program ${program} not found in ${pgBinDir()}`);
  return path;
}
