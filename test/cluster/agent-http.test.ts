import { describe, expect, it } from 'vitest';
import type { LocalPostgres } from '../../src/cluster/agent/decide.js';
import { type AgentStatus, healthCheck } from '../../src/cluster/agent/http.js';

const pg: LocalPostgres = {
  initialized: true,
  running: true,
  inRecovery: true,
  lsn: '0/3000000',
  timeline: 1,
  streamingFrom: null,
  upstream: null,
  needsRewind: false,
};
const replica: AgentStatus = {
  name: 'b',
  pg,
  leader: 'a',
  holdsLeader: false,
  leaderOptime: '0/3100000',
  paused: false,
};
const leader: AgentStatus = { ...replica, name: 'a', pg: { ...pg, inRecovery: false }, holdsLeader: true };

describe('agent REST health checks', () => {
  it('/primary is 200 only on the lease holder running a primary', () => {
    expect(healthCheck('GET', '/primary', leader).status).toBe(200);
    expect(healthCheck('GET', '/primary', replica).status).toBe(503);
    // writable but the lease is not trusted any more: not a primary for HAProxy
    expect(healthCheck('GET', '/primary', { ...leader, holdsLeader: false }).status).toBe(503);
  });
  it('/replica is 200 on a running replica, with ?lag bounding its distance to the leader', () => {
    expect(healthCheck('GET', '/replica', replica).status).toBe(200);
    expect(healthCheck('GET', '/replica', leader).status).toBe(503);
    expect(healthCheck('GET', '/replica?lag=2MB', replica).status).toBe(200);
    expect(healthCheck('GET', '/replica?lag=1024', replica).status).toBe(503);
  });
  it('/read-only and /health are 200 on any answering node and 503 on a stopped one', () => {
    for (const path of ['/read-only', '/health']) {
      expect(healthCheck('GET', path, replica).status).toBe(200);
      expect(healthCheck('GET', path, leader).status).toBe(200);
      expect(healthCheck('GET', path, { ...replica, pg: { ...pg, running: false, inRecovery: null } }).status).toBe(
        503,
      );
    }
  });
  it('bad input is a 4xx with a message, never a 500', () => {
    const bad = [
      ['GET', '/replica?lag=lots', 400],
      ['GET', '/primary?x=1', 400],
      ['GET', '/nope', 404],
      ['POST', '/primary', 405],
      ['DELETE', '/', 405],
    ] as const;
    for (const [method, path, code] of bad) {
      const r = healthCheck(method, path, leader);
      expect(r.status, `${method} ${path}`).toBe(code);
      expect(String(r.body.error)).toMatch(/\S/);
    }
  });
});
