import type { IncomingMessage, ServerResponse } from 'node:http';
import { parseSize } from '../../config/duration.js';
import { lsnDiff } from '../lsn.js';
import type { LocalPostgres } from './decide.js';

export interface AgentStatus {
  name: string;
  pg: LocalPostgres | null;
  leader: string | null;
  /** This agent holds the leader key under a lease it can still trust. */
  holdsLeader: boolean;
  leaderOptime: string | null;
  paused: boolean;
}

export type HealthCheck = 'primary' | 'replica' | 'read-only' | 'health';

export interface CheckResult {
  status: number;
  body: Record<string, unknown>;
}

/**
 * The health checks HAProxy (or any load balancer) points at each agent, Patroni-style:
 *   /primary    200 only on the node that holds the leader key and runs a writable primary
 *   /replica    200 on a running replica (`?lag=16MB`: and at most that far behind the leader)
 *   /read-only  200 on any node that answers queries (primary or replica)
 *   /health     200 when PostgreSQL is running and answering
 * 503 otherwise; 400 for a bad parameter, 404 for an unknown path, 405 for a method other than GET/HEAD.
 * Pure: (method, url, status) -> response, unit-tested in test/cluster/agent-http.test.ts.
 */
export function healthCheck(method: string, rawUrl: string, s: AgentStatus): CheckResult {
  if (method !== 'GET' && method !== 'HEAD')
    return { status: 405, body: { error: `method ${method} not allowed: use GET or HEAD` } };
  let url: URL;
  try {
    url = new URL(rawUrl, 'http://agent');
  } catch {
    return { status: 400, body: { error: `bad request path: ${rawUrl}` } };
  }
  const path = url.pathname.replace(/\/+$/, '') || '/';
  const known: Record<string, string[]> = {
    '/': [],
    '/primary': [],
    '/replica': ['lag'],
    '/read-only': [],
    '/health': [],
  };
  if (!(path in known))
    return { status: 404, body: { error: `no endpoint ${path} (try /primary, /replica, /read-only, /health)` } };
  for (const key of url.searchParams.keys())
    if (!known[path]!.includes(key)) return { status: 400, body: { error: `${path}: unknown parameter "${key}"` } };
  let maxLag: number | null = null;
  const lagParam = url.searchParams.get('lag');
  if (lagParam !== null) {
    try {
      maxLag = parseSize(lagParam, 'lag');
    } catch {
      return {
        status: 400,
        body: { error: `/replica: lag must be a size such as 16MB or 1048576, got "${lagParam}"` },
      };
    }
  }
  const pg = s.pg;
  const answering = !!pg?.running && pg.inRecovery !== null;
  const role = !answering ? 'stopped' : pg!.inRecovery ? 'replica' : 'primary';
  const lag = role === 'replica' ? lsnDiff(s.leaderOptime, pg!.lsn) : null;
  const body = {
    name: s.name,
    role,
    leader: s.leader,
    holdsLeader: s.holdsLeader,
    timeline: pg?.timeline ?? null,
    lsn: pg?.lsn ?? null,
    lagBytes: lag,
    paused: s.paused,
  };
  let ok: boolean;
  switch (path) {
    case '/primary':
      ok = role === 'primary' && s.holdsLeader;
      break;
    case '/replica':
      ok = role === 'replica' && !s.holdsLeader && (maxLag === null || (lag !== null && lag <= maxLag));
      break;
    case '/read-only':
    case '/health':
      ok = answering;
      break;
    default:
      ok = true;
  }
  return { status: ok ? 200 : 503, body };
}

export function handleApiRequest(req: IncomingMessage, res: ServerResponse, status: () => AgentStatus): void {
  const r = healthCheck(req.method ?? 'GET', req.url ?? '/', status());
  const text = `${JSON.stringify(r.body)}\n`;
  res.writeHead(r.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(req.method === 'HEAD' ? undefined : text);
}
