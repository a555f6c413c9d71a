import type { request } from 'undici';
import { BulwarkError } from '../../lib/errors.js';
import type { FlushMessage } from '../recorder.js';
import { PROTOCOL_VERSION, type RunRequest, type WorkerEvent } from './protocol.js';

export interface RemoteRun {
  name: string;
  stop(): void;
  done: Promise<void>;
}

/**
 * A worker that took its share and then died, disconnected or failed mid-run. Its deltas merged so
 * far stay in the run; the coordinator goes on or stops per --on-worker-loss. (A worker that refuses
 * the run at the start is a BulwarkError: nothing ran.)
 */
export class WorkerLost extends Error {
  constructor(
    readonly worker: string,
    message: string,
  ) {
    super(message);
  }
}

function headers(token: string | undefined): Record<string, string> {
  return token
    ? { authorization: `Bearer ${token}`, 'content-type': 'application/json' }
    : { 'content-type': 'application/json' };
}

/** Start one share of the run on a remote `bulwark worker` and feed its deltas to `onFlush`. */
export function startRemote(
  url: string,
  run: RunRequest,
  token: string | undefined,
  onFlush: (m: FlushMessage) => void,
): RemoteRun {
  const base = url.replace(/\/$/, '');
  const done = (async () => {
    let res: Awaited<ReturnType<typeof request>>;
    try {
      // Loaded here, not at the top: undici costs ~20 MB of RSS a run without remote workers does not need.
      const { request } = await import('undici');
      res = await request(`${base}/run`, {
        method: 'POST',
        headers: headers(token),
        body: JSON.stringify({ ...run, protocol: PROTOCOL_VERSION }),
        bodyTimeout: 0,
        headersTimeout: 30_000,
      });
    } catch (err) {
      throw new BulwarkError('BULWARK_E_WORKER', `worker ${base}: ${(err as Error).message}`);
    }
    if (res.statusCode !== 200) {
      const text = await res.body.text();
      let reason: string | undefined;
      try {
        reason = res.statusCode === 409 ? (JSON.parse(text) as { error?: string }).error : undefined;
      } catch {}
      throw new BulwarkError(
        'BULWARK_E_WORKER',
        reason
          ? `worker ${base}: ${reason}`
          : `worker ${base} refused the run: HTTP ${res.statusCode} ${text.slice(0, 200)}`,
      );
    }
    let pending = '';
    let finished = false;
    try {
      for await (const chunk of res.body) {
        pending += chunk.toString();
        let nl = pending.indexOf('\n');
        while (nl !== -1) {
          const event = JSON.parse(pending.slice(0, nl)) as WorkerEvent;
          pending = pending.slice(nl + 1);
          if (event.type === 'flush') onFlush(event.message);
          else if (event.type === 'error') throw new WorkerLost(base, `failed: ${event.message}`);
          else finished = true;
          nl = pending.indexOf('\n');
        }
      }
    } catch (err) {
      if (err instanceof WorkerLost) throw err;
      throw new WorkerLost(base, `connection lost (${(err as Error)?.message ?? String(err)})`);
    }
    if (!finished) throw new WorkerLost(base, 'ended the run without finishing it');
  })();
  return {
    name: base,
    stop: () => {
      import('undici')
        .then(({ request }) => request(`${base}/stop`, { method: 'POST', headers: headers(token) }))
        .then(
          (r) => r.body.dump(),
          () => {},
        );
    },
    done,
  };
}
