import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { keepAliveTraffic, newTally, type TrafficTally } from './helpers.js';

export const MAIN = join(import.meta.dirname, '../../dist/cli/main.js');
export const APP_SH = join(import.meta.dirname, 'fixtures/app.sh');
export const TRAFFIC = join(import.meta.dirname, 'fixtures/traffic.ts');
export const SMOKE = join(import.meta.dirname, 'fixtures/smoke.ts');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run the built CLI (dist/) to completion, bounded in time. */
export function cli(
  args: string[],
  cwd: string,
  env: Record<string, string> = {},
  timeoutMs = 120_000,
): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [MAIN, ...args], { cwd, env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 1, stdout, stderr });
    });
  });
}

/** Start a CLI command and return the child (to kill it mid-way) and its completion. */
export function cliChild(args: string[], cwd: string): { child: ChildProcess; done: Promise<CliResult> } {
  const child = spawn(process.execPath, [MAIN, ...args], { cwd });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
  });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
  const done = new Promise<CliResult>((resolve) =>
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
    }),
  );
  return { child, done };
}

/** Start a long-running CLI command (the embedded router); resolves once it printed `ready`. */
export async function startCli(
  args: string[],
  cwd: string,
  ready: RegExp,
): Promise<{ child: ChildProcess; stop(): Promise<void> }> {
  const child = spawn(process.execPath, [MAIN, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  await new Promise<void>((resolve, reject) => {
    const onData = (d: Buffer) => {
      out += d.toString();
      if (ready.test(out)) resolve();
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => reject(new Error(`${args.join(' ')} exited with ${code}: ${out}`)));
    setTimeout(() => reject(new Error(`${args.join(' ')} not ready: ${out}`)), 20_000).unref();
  });
  return {
    child,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    },
  };
}

export interface LoadSummary {
  totals: { requests: number; failures: number; errorRate: number };
}

/** `bulwark load` in its own process against `host` for `duration`; resolves with its summary JSON. */
export async function load(
  host: string,
  duration: string,
  dir: string,
  name: string,
): Promise<LoadSummary & { result: CliResult }> {
  const file = join(dir, `${name}.summary.json`);
  const result = await cli(
    ['load', TRAFFIC, '--host', host, '--duration', duration, '--summary-json', file, '--quiet', '--no-typecheck'],
    dir,
  );
  if (result.code !== 0) throw new Error(`bulwark load exited ${result.code}: ${result.stderr}${result.stdout}`);
  return { ...(JSON.parse(readFileSync(file, 'utf8')) as LoadSummary), result };
}

/**
 * A watched trickle of keep-alive traffic next to `bulwark load`: every answer is timed and labelled, so
 * a test can prove traffic was flowing on both versions around a switch (and it must fail nothing either).
 */
export function watchedTraffic(url: string): { tally: TrafficTally; stop(): Promise<TrafficTally> } {
  const tally = newTally();
  let release!: () => void;
  const done = keepAliveTraffic(url, new Promise<void>((r) => (release = r)), { connections: 2, tally });
  return {
    tally,
    stop: () => {
      release();
      return done;
    },
  };
}

/** When the last deploy of `app` (state in `<dir>/.bulwark`) made each traffic change, by its sentence. */
export function trafficChanges(dir: string, app = 'shop'): Array<{ at: number; sentence: string }> {
  const state = JSON.parse(readFileSync(join(dir, '.bulwark/deploy', app, 'state.json'), 'utf8')) as {
    deployment?: { events: Array<{ at: string; sentence: string }> };
  };
  return (state.deployment?.events ?? [])
    .filter((e) => e.sentence.startsWith('traffic blue'))
    .map((e) => ({ at: Date.parse(e.at), sentence: e.sentence }));
}
