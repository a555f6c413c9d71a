import { type ChildProcess, spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { destroyCluster } from '../../src/cluster/index.js';
import { CLI } from '../harness/cli.js';

/**
 * The user's shop of a configured drill: the demo shop storing orders in the cluster folder, started
 * by the test (as staging would run it), never by the drill. Resolves with its URL once it listens.
 */
export async function startStagingShop(
  pgDir: string,
  label = 'staging',
): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, [CLI, 'demo-server', '--port', '0', '--label', label, '--cluster-dir', pgDir], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (d) => {
      out += d;
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    child.on('exit', (code) => reject(new Error(`demo-server exited ${code}`)));
  });
  return { child, url };
}

/**
 * Tear down what a configured-drill test started: the shop, a `cluster monitor` process (waited for,
 * so it releases its lock before the cluster goes), the cluster folder's servers and the temp folder.
 */
export async function stopStagingSystem(s: {
  shop?: ChildProcess;
  monitor?: ChildProcess;
  pgDir?: string;
  dir?: string;
}): Promise<void> {
  s.shop?.kill('SIGTERM');
  const monitor = s.monitor;
  if (monitor && monitor.exitCode === null && monitor.signalCode === null) {
    monitor.kill('SIGTERM');
    await new Promise((r) => monitor.once('exit', r));
  }
  if (s.pgDir) await destroyCluster(s.pgDir).catch(() => {});
  if (s.dir) rmSync(s.dir, { recursive: true, force: true });
}
