import { request } from 'undici';
import type { Backend } from './types.js';

export interface HttpCheckSpec {
  name?: string;
  method?: 'GET' | 'HEAD' | 'POST';
  path: string;
  status?: number;
  bodyContains?: string;
  timeoutMs?: number;
}

export interface CheckOutcome {
  ok: boolean;
  /** One line per failed check and instance. */
  failures: string[];
  passed: number;
}

/**
 * Declarative HTTP checks run against every instance of a slot directly (not through the router), so a
 * bad instance is caught before it gets a single user request.
 */
export async function runHttpChecks(backends: Backend[], checks: HttpCheckSpec[]): Promise<CheckOutcome> {
  const failures: string[] = [];
  let passed = 0;
  for (const b of backends) {
    if (!b.url) continue; // platform-managed instances (ECS) are checked by the load balancer
    for (const c of checks) {
      const label = `${c.name ?? `${c.method ?? 'GET'} ${c.path}`} on ${b.id} (${b.url})`;
      try {
        const r = await request(`${b.url}${c.path}`, {
          method: c.method ?? 'GET',
          headersTimeout: c.timeoutMs ?? 5000,
          bodyTimeout: c.timeoutMs ?? 5000,
        });
        const body = await r.body.text();
        const want = c.status ?? 200;
        if (r.statusCode !== want) failures.push(`${label}: status ${r.statusCode}, expected ${want}`);
        else if (c.bodyContains && !body.includes(c.bodyContains))
          failures.push(`${label}: body does not contain "${c.bodyContains}"`);
        else passed++;
      } catch (err) {
        failures.push(`${label}: ${(err as Error).message}`);
      }
    }
  }
  return { ok: failures.length === 0, failures, passed };
}
