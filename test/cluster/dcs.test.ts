import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EtcdDcs } from '../../src/cluster/dcs/etcd.js';
import type { Dcs } from '../../src/cluster/dcs/index.js';
import { LocalDcs } from '../../src/cluster/dcs/local.js';
import { startTestEtcd, type TestEtcd } from '../harness/etcd.js';
import { makePostgresOwnedTempDir } from '../harness/postgres.js';
import { waitFor } from './helpers.js';

// One conformance suite for every DCS driver: what the monitor relies on.
let etcd: TestEtcd;
beforeAll(async () => {
  etcd = await startTestEtcd();
});
const tempDirs: string[] = [];
afterAll(async () => {
  await etcd?.stop();
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

let scope = 0;
const drivers: Record<string, () => (name: string) => Dcs> = {
  local: () => {
    const dir = makePostgresOwnedTempDir('bulwark-dcs-');
    tempDirs.push(dir);
    return (name) => new LocalDcs(dir, { name, http: `http://${name}` });
  },
  etcd: () => {
    const cluster = `conformance-${++scope}`;
    return (name) => new EtcdDcs({ hosts: [etcd.url], cluster, name, http: `http://${name}`, ttl: 2 });
  },
};

for (const [driver, factory] of Object.entries(drivers)) {
  describe(`DCS conformance: ${driver}`, () => {
    it('lets one monitor lead at a time, and hands over when it closes', async () => {
      const make = factory();
      const a = make('a');
      const b = make('b');
      try {
        expect(await a.acquire()).toBe(true);
        expect(await b.acquire()).toBe(false);
        expect(a.isLeader()).toBe(true);
        expect(b.isLeader()).toBe(false);
        expect((await b.leader())?.name).toBe('a');
        await a.close();
        expect(await b.acquire()).toBe(true);
        expect((await b.leader())?.name).toBe('b');
      } finally {
        await a.close();
        await b.close();
      }
    });

    it('writes state only while leading', async () => {
      const make = factory();
      const a = make('a');
      const b = make('b');
      try {
        expect(await a.acquire()).toBe(true);
        const state = { primary: 'node2', term: 7, syncSet: ['node3'], fenced: ['node1'] };
        expect(await a.writeState(state)).toBe(true);
        expect(await b.readState()).toMatchObject(state);
        expect(await b.writeState({ ...state, primary: 'node3' })).toBe(false);
        expect((await a.readState())?.primary).toBe('node2');
        await a.publishTopology({ primary: 'node2' });
        expect(await b.readTopology()).toEqual({ primary: 'node2' });
      } finally {
        await a.close();
        await b.close();
      }
    });
  });
}

describe('etcd lease loss', () => {
  it('isLeader() turns false within the TTL when etcd stops answering, with no event needed', async () => {
    const make = drivers.etcd!();
    const a = make('a');
    const b = make('b');
    try {
      expect(await a.acquire()).toBe(true);
      etcd.pause();
      try {
        await waitFor('a to stand down', async () => !a.isLeader(), 5000);
        expect(await a.writeState({ primary: 'x', term: 1, syncSet: [], fenced: [] }).catch(() => false)).toBe(false);
      } finally {
        etcd.resume();
      }
      await waitFor('b to take over', () => b.acquire(), 15_000);
      expect(a.isLeader()).toBe(false);
    } finally {
      await a.close();
      await b.close();
    }
  });
});
