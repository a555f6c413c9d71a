import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { freePort } from '../../src/lib/net.js';

export interface PrometheusHarness {
  url: string;
  stop(): Promise<void>;
}

/**
 * Debian's prometheus on a free loopback port (below 32768) with a throw-away TSDB, scraping the given
 * targets every second. `bearer` is sent as the Authorization credentials (the embedded router's
 * admin API needs its token).
 */
export async function startPrometheus(scrape: {
  target: string;
  path?: string;
  bearer?: string;
}): Promise<PrometheusHarness> {
  const dir = mkdtempSync(join(tmpdir(), 'bulwark-prometheus-'));
  const port = await freePort({ below: 32768 });
  const auth = scrape.bearer ? `\n    authorization:\n      credentials: ${JSON.stringify(scrape.bearer)}` : '';
  writeFileSync(
    join(dir, 'prometheus.yml'),
    `global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: bulwark
    metrics_path: ${scrape.path ?? '/metrics'}${auth}
    static_configs:
      - targets: [${JSON.stringify(scrape.target)}]
`,
  );
  const child: ChildProcess = spawn(
    'prometheus',
    [
      `--config.file=${join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    stderr = (stderr + d).slice(-4000);
  });
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      const r = await request(`${url}/-/ready`);
      await r.body.dump();
      if (r.statusCode === 200) break;
    } catch {
      // not listening yet
    }
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`prometheus did not start: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  // Prometheus hands new targets to its scrape manager every 5 s: wait for the first successful scrape.
  for (;;) {
    const r = await request(`${url}/api/v1/targets`);
    const body = (await r.body.json()) as { data: { activeTargets: Array<{ health: string }> } };
    if (body.data.activeTargets[0]?.health === 'up') break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`prometheus never scraped ${scrape.target}: ${JSON.stringify(body.data.activeTargets)}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return { url, stop };
}
