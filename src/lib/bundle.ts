import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type * as esbuild from 'esbuild';

/** The folder of the running bulwark package's compiled entry points (dist/). */
export const distDir = resolve(dirname(fileURLToPath(import.meta.url)), '..');

export interface BundleError {
  file: string;
  line: number;
  column: number;
  text: string;
}

export class BundleFailure extends Error {
  constructor(readonly errors: BundleError[]) {
    const first = errors[0];
    super(first ? `${first.file}:${first.line}:${first.column}: ${first.text}` : 'bundle failed');
  }
}

/**
 * Bundle a user's TypeScript/JavaScript file (a scenario or bulwark.config.ts) into one ESM file.
 * `bulwark` and `bulwark/<capability>` resolve to the running package, so a file anywhere on disk
 * works with no install next to it, and the scenario shares module state (metric registries) with
 * the runtime that loads it. Other bare imports resolve from the file's own folder as usual.
 */
export async function bundleUserFile(
  entry: string,
  options: {
    /**
     * Leave `bulwark` imports bare, for code that runs on another machine (a remote load worker): it
     * resolves them to its own install. By default they point at this package's files.
     */
    bareBulwark?: boolean;
  } = {},
): Promise<{ code: string }> {
  const absEntry = resolve(entry);
  // Loaded on demand: a command that bundles nothing should not pay esbuild's memory.
  const { build } = await import('esbuild');
  let result: esbuild.BuildResult<{ write: false }>;
  try {
    result = await build({
      entryPoints: [absEntry],
      bundle: true,
      write: false,
      format: 'esm',
      platform: 'node',
      target: 'node20',
      sourcemap: 'inline',
      logLevel: 'silent',
      plugins: [
        {
          // The bundle runs from a temp folder: `import.meta.url` (and dirname/filename) in the user's
          // own files must still name those files, so test data next to a scenario can be read.
          name: 'bulwark-import-meta',
          setup(build: esbuild.PluginBuild) {
            build.onLoad({ filter: /\.[cm]?[jt]sx?$/ }, (args: esbuild.OnLoadArgs) => {
              if (args.path.includes('/node_modules/')) return undefined;
              const source = readFileSync(args.path, 'utf8');
              if (!source.includes('import.meta.')) return undefined;
              const ext = /\.([cm]?)([jt]sx?)$/.exec(args.path)!;
              const loader = (ext[2] === 'tsx' ? 'tsx' : ext[2] === 'jsx' ? 'jsx' : ext[2]) as esbuild.Loader;
              const contents = source
                .replace(/\bimport\.meta\.url\b/g, JSON.stringify(pathToFileURL(args.path).href))
                .replace(/\bimport\.meta\.dirname\b/g, JSON.stringify(dirname(args.path)))
                .replace(/\bimport\.meta\.filename\b/g, JSON.stringify(args.path));
              return { contents, loader, resolveDir: dirname(args.path) };
            });
          },
        },
        {
          name: 'bulwark-self',
          setup(build: esbuild.PluginBuild) {
            build.onResolve({ filter: /^bulwark(\/[a-z-]+)?$/ }, (args: esbuild.OnResolveArgs) => {
              if (options.bareBulwark) return { path: args.path, external: true };
              const sub = args.path === 'bulwark' ? 'index.js' : `${args.path.slice('bulwark/'.length)}/index.js`;
              return { path: pathToFileURL(join(distDir, sub)).href, external: true };
            });
          },
        },
      ],
      packages: 'external',
    });
  } catch (err) {
    const failure = err as esbuild.BuildFailure;
    if (Array.isArray(failure.errors)) {
      throw new BundleFailure(
        failure.errors.map((e) => ({
          file: e.location?.file ? resolve(e.location.file) : absEntry,
          line: e.location?.line ?? 0,
          column: (e.location?.column ?? 0) + 1,
          text: e.text,
        })),
      );
    }
    throw err;
  }
  const out = result.outputFiles?.[0];
  if (!out) throw new BundleFailure([{ file: absEntry, line: 0, column: 0, text: 'bundler produced no output' }]);
  return { code: out.text };
}

/**
 * Write bundled code beside nothing the user owns and import it. The temp file is removed after
 * import; the code stays loaded. Returns the module and the path (workers re-import the same file,
 * so callers that need it alive pass keep: true and remove it themselves).
 */
export async function importBundled(
  code: string,
  options: { keep?: boolean; name?: string } = {},
): Promise<{ module: any; path: string; cleanup(): void }> {
  const dir = mkdtempSync(join(tmpdir(), 'bulwark-bundle-'));
  const path = join(dir, `${options.name ?? 'bundle'}.mjs`);
  writeFileSync(path, code);
  const cleanup = () => rmSync(dir, { recursive: true, force: true });
  try {
    const module = await import(pathToFileURL(path).href);
    return { module, path, cleanup };
  } finally {
    if (!options.keep) cleanup();
  }
}
