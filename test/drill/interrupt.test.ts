import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { runCli } from '../harness/cli.js';

function processesMentioning(text: string): number[] {
  const pids: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      if (readFileSync(`/proc/${e}/cmdline`, 'utf8').includes(text)) pids.push(Number(e));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

describe('bulwark drill: Ctrl-C', () => {
  it('stops the load and removes everything it started (instances, router, monitor, cluster, folder), exit 130', async () => {
    let stderr = '';
    const r = await runCli(['drill', '--steps', 'failover', '--duration', '60s'], {
      timeoutMs: 150_000,
      onSpawn: (child) => {
        let sent = false;
        child.stderr!.on('data', (d) => {
          stderr += d;
          // interrupt while the steady traffic runs: cluster, monitor, router, shop and load are all up
          if (!sent && /setup {2}load:/.test(stderr)) {
            sent = true;
            setTimeout(() => child.kill('SIGINT'), 1500);
          }
        });
      },
    });
    expect(r.stderr).toMatch(/stopping and cleaning up everything it started/);
    expect(r.code, r.stderr).toBe(130);
    expect(r.stdout).toMatch(/interrupted/);
    expect(r.stderr).toMatch(/cleanup {2}shop instances stopped/);
    expect(r.stderr).toMatch(/cleanup {2}cluster destroyed/);
    const dir = /in (\/\S+)\/pg,/.exec(r.stderr)?.[1];
    expect(dir).toBeTruthy();
    expect(existsSync(dir!)).toBe(false);
    expect(processesMentioning(dir!)).toEqual([]);
  }, 200_000);
});

describe('bulwark drill --keep', () => {
  it('keeps the shop, router and cluster running after the last step until Ctrl-C, then cleans up (exit 0: every hypothesis held)', async () => {
    let stderr = '';
    let served: number | undefined;
    const r = await runCli(['drill', '--steps', 'backup', '--duration', '1s', '--keep'], {
      timeoutMs: 150_000,
      onSpawn: (child) => {
        let sent = false;
        child.stderr!.on('data', (d) => {
          stderr += d;
          const url = /shop through the router: (http:\/\/127\.0\.0\.1:\d+)/.exec(stderr)?.[1];
          if (!sent && url) {
            sent = true;
            fetch(`${url}/api/products`)
              .then((res) => {
                served = res.status;
              })
              .finally(() => child.kill('SIGINT'));
          }
        });
      },
    });
    expect(served).toBe(200);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/every hypothesis held/);
    const dir = /in (\/\S+)\/pg,/.exec(r.stderr)?.[1];
    expect(existsSync(dir!)).toBe(false);
    expect(processesMentioning(dir!)).toEqual([]);
  }, 200_000);
});
