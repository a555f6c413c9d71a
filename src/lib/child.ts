import { type SpawnOptions, spawn } from 'node:child_process';
import { BulwarkError } from './errors.js';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions extends SpawnOptions {
  /** Run as this system user (via runuser) when the current process is root. */
  asUser?: string;
  /** Text written to the child's stdin. */
  input?: string;
  /** Reject when the exit code is not 0 (default true). */
  check?: boolean;
}

export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/**
 * Wrap a command so it runs as `user` when we are root (PostgreSQL refuses to run as root). The
 * environment is passed through with `runuser --preserve-environment`-free semantics: we pass env
 * explicitly through spawn, and runuser -u keeps it.
 */
export function asUserCommand(user: string | undefined, command: string, args: string[]): [string, string[]] {
  if (user && isRoot()) return ['runuser', ['-u', user, '--', command, ...args]];
  return [command, args];
}

/** Run a program to completion and capture its output. Arguments never go through a shell. */
export function run(command: string, args: string[], options: RunOptions = {}): Promise<RunResult> {
  const { asUser, input, check = true, ...spawnOptions } = options;
  const [cmd, argv] = asUserCommand(asUser, command, args);
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, argv, { stdio: ['pipe', 'pipe', 'pipe'], ...spawnOptions });
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    child.once('error', (err) =>
      reject(new BulwarkError('BULWARK_E_CHILD', `cannot run ${command}: ${err.message}`, { cause: err })),
    );
    child.once('close', (code, signal) => {
      const result = { code: code ?? (signal ? 128 : 1), stdout, stderr };
      if (check && result.code !== 0) {
        const detail = (stderr || stdout).trim().split('\n').slice(-3).join(' | ');
        reject(new BulwarkError('BULWARK_E_CHILD', `${command} exited with ${result.code}: ${detail}`));
      } else resolve(result);
    });
    if (input !== undefined) child.stdin?.end(input);
    else child.stdin?.end();
  });
}
