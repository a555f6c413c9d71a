import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { homedir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { BundleFailure, bundleUserFile, distDir, importBundled } from '../lib/bundle.js';
import { BulwarkError, UsageError } from '../lib/errors.js';
import type { ScenarioDefinition } from './api.js';
import { resetData } from './data.js';

export interface LoadedScenario {
  /** Whether the TypeScript was type-checked now, found unchanged since a passed check, or not checked. */
  typecheck: 'checked' | 'cached' | 'skipped';
  definition: ScenarioDefinition;
  /** Absolute path of the user's file. */
  file: string;
  /** The bundled ES module on disk (workers import it); remove with cleanup(). */
  bundlePath: string;
  cleanup(): void;
}

function shown(file: string): string {
  return relative(process.cwd(), file) || file;
}

/**
 * Type-check a TypeScript scenario against the running bulwark's declarations, reporting the first
 * error as file:line:col. Only the user's own files are checked (not bulwark, not node_modules).
 */
export function typecheckScenario(file: string): string[] {
  const require = createRequire(import.meta.url);
  const ts = require('typescript') as typeof import('typescript');
  const typeRoots = [
    join(distDir, '..', 'node_modules', '@types'),
    join(dirname(require.resolve('@types/node/package.json')), '..'),
  ];
  const program = ts.createProgram([file], {
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.ESNext,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    strict: false,
    noEmit: true,
    skipLibCheck: true,
    esModuleInterop: true,
    allowImportingTsExtensions: true,
    resolveJsonModule: true,
    typeRoots,
    types: ['node'],
    lib: ['lib.es2023.d.ts', 'lib.dom.d.ts'],
    paths: { bulwark: [join(distDir, 'index.d.ts')], 'bulwark/*': [join(distDir, '*', 'index.d.ts')] },
  });
  const diagnostics = ts
    .getPreEmitDiagnostics(program)
    .filter(
      (d) =>
        d.category === ts.DiagnosticCategory.Error &&
        d.file &&
        !d.file.fileName.startsWith(distDir) &&
        !d.file.fileName.includes('/node_modules/'),
    );
  const d = diagnostics[0];
  if (!d?.file)
    return program
      .getSourceFiles()
      .map((f) => f.fileName)
      .filter((f) => !f.startsWith(distDir) && !f.includes('/node_modules/'));
  const { line, character } = d.file.getLineAndCharacterOfPosition(d.start ?? 0);
  const text = ts.flattenDiagnosticMessageText(d.messageText, ' ');
  const more = diagnostics.length > 1 ? ` (and ${diagnostics.length - 1} more)` : '';
  throw new UsageError(
    `${shown(d.file.fileName)}:${line + 1}:${character + 1}: type error: ${text}${more}`,
    'BULWARK_E_SCENARIO',
  );
}

/** Where passed type-checks are remembered: BULWARK_CACHE_DIR, else $XDG_CACHE_HOME/bulwark or ~/.cache/bulwark. */
function cacheDir(): string {
  return process.env.BULWARK_CACHE_DIR ?? join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'bulwark');
}

const sha256 = (data: string | Buffer) => createHash('sha256').update(data).digest('hex');

/**
 * Where a passed type-check of this entry file is remembered, for this Bulwark and TypeScript: a
 * record of every user file the check read (imports, type-only imports too) with its content hash.
 */
function typecheckRecordPath(entry: string): string {
  const require = createRequire(import.meta.url);
  const ts = (require('typescript/package.json') as { version: string }).version;
  const pkg = readFileSync(join(distDir, '..', 'package.json'));
  return join(cacheDir(), 'typecheck', sha256(`${sha256(pkg)}\0${ts}\0${entry}`));
}

function fileHashes(files: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of files) out[f] = sha256(readFileSync(f));
  return out;
}

/** True when a passed check of `entry` is on record and no file it read has changed since. */
export function typecheckCached(entry: string): boolean {
  try {
    const record = JSON.parse(readFileSync(typecheckRecordPath(entry), 'utf8')) as Record<string, string>;
    const files = Object.keys(record);
    if (!files.includes(entry)) return false;
    const now = fileHashes(files);
    return files.every((f) => now[f] === record[f]);
  } catch {
    return false;
  }
}

function rememberTypecheck(entry: string, files: string[]): void {
  try {
    const path = typecheckRecordPath(entry);
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, JSON.stringify(fileHashes([...new Set([entry, ...files])])));
  } catch {
    // A read-only cache folder only costs the next run its type-check.
  }
}

/** The line of the first occurrence of a string literal in a file (to point at a bad option). */
export function lineOf(file: string, literal: string): number | undefined {
  try {
    const lines = readFileSync(file, 'utf8').split('\n');
    const needles = [`'${literal}'`, `"${literal}"`, `\`${literal}\``];
    const i = lines.findIndex((l) => needles.some((n) => l.includes(n)));
    return i === -1 ? undefined : i + 1;
  } catch {
    return undefined;
  }
}

function fail(file: string, message: string): never {
  throw new UsageError(`${shown(file)}: ${message}`, 'BULWARK_E_SCENARIO');
}

const TOP_KEYS = [
  'host',
  'users',
  'load',
  'scenarios',
  'thresholds',
  'tags',
  'timeout',
  'redirects',
  'setup',
  'teardown',
];
const USER_KEYS = ['name', 'weight', 'wait', 'onStart', 'onStop', 'tasks'];

/** Structural validation: every mistake names the file and the key. */
export function validateScenario(def: unknown, file: string): asserts def is ScenarioDefinition {
  if (!def || typeof def !== 'object') fail(file, 'no default export: export default scenario({...})');
  const d = def as Record<string, unknown>;
  for (const k of Object.keys(d))
    if (!TOP_KEYS.includes(k)) fail(file, `unknown option "${k}" (known: ${TOP_KEYS.join(', ')})`);
  if (d.host !== undefined) {
    if (typeof d.host !== 'string' || !/^https?:\/\/[^/]/.test(d.host))
      fail(file, `host must be an http(s) URL (got ${JSON.stringify(d.host)})`);
  }
  if (!Array.isArray(d.users) || d.users.length === 0)
    fail(file, 'users must be a non-empty list of user(...) definitions');
  const names = new Set<string>();
  d.users.forEach((u: any, i: number) => {
    const at = `users[${i}]`;
    if (!u || typeof u !== 'object') fail(file, `${at} must be user('Name', {...})`);
    for (const k of Object.keys(u)) if (!USER_KEYS.includes(k)) fail(file, `${at}: unknown option "${k}"`);
    if (typeof u.name !== 'string' || !u.name) fail(file, `${at}: name must be a non-empty string`);
    if (names.has(u.name)) fail(file, `${at}: user type "${u.name}" is declared twice`);
    names.add(u.name);
    if (u.weight !== undefined && !(typeof u.weight === 'number' && u.weight > 0))
      fail(file, `${at}.weight must be a number > 0`);
    if (u.wait !== undefined && !['between', 'constant', 'none'].includes(u.wait?.kind))
      fail(file, `${at}.wait must be between(a, b), constant(s) or none()`);
    for (const hook of ['onStart', 'onStop'])
      if (u[hook] !== undefined && typeof u[hook] !== 'function') fail(file, `${at}.${hook} must be a function`);
    if (!Array.isArray(u.tasks) || u.tasks.length === 0) fail(file, `${at}.tasks must be a non-empty list`);
    u.tasks.forEach((t: any, j: number) => {
      if (typeof t === 'function') return;
      if (!t || typeof t.run !== 'function') fail(file, `${at}.tasks[${j}] must be a function or { weight, run }`);
      for (const k of Object.keys(t))
        if (!['name', 'weight', 'run'].includes(k)) fail(file, `${at}.tasks[${j}]: unknown option "${k}"`);
      if (t.weight !== undefined && !(typeof t.weight === 'number' && t.weight > 0))
        fail(file, `${at}.tasks[${j}].weight must be a number > 0`);
    });
  });
  if (d.redirects !== undefined && !(Number.isInteger(d.redirects) && (d.redirects as number) >= 0))
    fail(file, `redirects must be a whole number >= 0 (got ${JSON.stringify(d.redirects)})`);
  for (const hook of ['setup', 'teardown'])
    if (d[hook] !== undefined && typeof d[hook] !== 'function') fail(file, `${hook} must be a function`);
  if (
    d.tags !== undefined &&
    (typeof d.tags !== 'object' || Object.values(d.tags as object).some((v) => typeof v !== 'string'))
  )
    fail(file, 'tags must map names to strings');
}

/**
 * Load a scenario file from anywhere on disk: type-check (TypeScript), bundle with `bulwark`
 * resolved to this package, import, validate. Every failure is a UsageError naming the file.
 */
export async function loadScenarioFile(path: string, options: { typecheck?: boolean } = {}): Promise<LoadedScenario> {
  const file = resolve(path);
  try {
    readFileSync(file);
  } catch {
    throw new UsageError(`${shown(file)}: scenario file not found`, 'BULWARK_E_SCENARIO');
  }
  let code: string;
  try {
    ({ code } = await bundleUserFile(file));
  } catch (err) {
    if (err instanceof BundleFailure) {
      const e = err.errors[0]!;
      throw new UsageError(`${shown(e.file)}:${e.line}:${e.column}: ${e.text}`, 'BULWARK_E_SCENARIO');
    }
    throw err;
  }
  let typecheck: LoadedScenario['typecheck'] = 'skipped';
  if (options.typecheck !== false && /\.[cm]?tsx?$/.test(file)) {
    if (typecheckCached(file)) typecheck = 'cached';
    else {
      rememberTypecheck(file, typecheckScenario(file));
      typecheck = 'checked';
    }
  }
  // Map exceptions thrown in tasks back to the user's TypeScript lines.
  process.setSourceMapsEnabled(true);
  let imported: Awaited<ReturnType<typeof importBundled>>;
  // data() loaders run during this import, once for the whole run.
  resetData();
  try {
    imported = await importBundled(code, { keep: true, name: 'scenario' });
  } catch (err) {
    if (err instanceof BulwarkError) throw err;
    throw new UsageError(
      `${shown(file)}: error while loading the scenario: ${(err as Error)?.message ?? String(err)}`,
      'BULWARK_E_SCENARIO',
    );
  }
  const definition = imported.module.default;
  if (definition === undefined) {
    imported.cleanup();
    fail(file, 'no default export: export default scenario({...})');
  }
  try {
    validateScenario(definition, file);
  } catch (err) {
    imported.cleanup();
    throw err;
  }
  return { definition, file, bundlePath: imported.path, cleanup: imported.cleanup, typecheck };
}
