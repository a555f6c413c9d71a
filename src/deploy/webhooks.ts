import { request } from 'undici';

export interface Webhook {
  url: string;
  headers?: Record<string, string>;
  timeoutMs?: number;
}

export type DeployEventName =
  | 'deploy.started'
  | 'deploy.step'
  | 'deploy.analysis'
  | 'deploy.paused'
  | 'deploy.succeeded'
  | 'deploy.rolled_back'
  | 'deploy.aborted'
  | 'deploy.failed';

/**
 * POST one JSON event to every webhook. Delivery is best effort and bounded in time: a slow or broken
 * receiver is reported back (the caller logs it) but never changes what the deploy does.
 */
export async function notifyWebhooks(
  hooks: Webhook[],
  event: DeployEventName,
  payload: Record<string, unknown>,
): Promise<string[]> {
  const problems: string[] = [];
  await Promise.all(
    hooks.map(async (h) => {
      try {
        const r = await request(h.url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...h.headers },
          body: JSON.stringify({ event, at: new Date().toISOString(), ...payload }),
          headersTimeout: h.timeoutMs ?? 5000,
          bodyTimeout: h.timeoutMs ?? 5000,
        });
        await r.body.dump();
        if (r.statusCode >= 300) problems.push(`webhook ${new URL(h.url).origin} answered ${r.statusCode} to ${event}`);
      } catch (err) {
        problems.push(`webhook ${new URL(h.url).origin} failed for ${event}: ${(err as Error).message}`);
      }
    }),
  );
  return problems;
}
