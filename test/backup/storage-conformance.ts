import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { expect, it } from 'vitest';
import type { StorageDriver } from '../../src/backup/storage/index.js';

async function readAll(r: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of r) chunks.push(Buffer.from(c));
  return Buffer.concat(chunks);
}

/**
 * The contract of src/backup/storage/types.ts, run against every driver. `make` returns a driver on an
 * empty location.
 */
export function storageConformance(make: () => Promise<StorageDriver>): void {
  it('put/get round-trips a buffer, head reports the size', async () => {
    const s = await make();
    await s.put('a/b/c.txt', 'hello');
    expect((await readAll(await s.get('a/b/c.txt'))).toString()).toBe('hello');
    expect(await s.head('a/b/c.txt')).toEqual({ size: 5 });
  });

  it('stores an empty object', async () => {
    const s = await make();
    await s.put('empty', Buffer.alloc(0));
    expect(await s.head('empty')).toEqual({ size: 0 });
    expect((await readAll(await s.get('empty'))).length).toBe(0);
  });

  it('streams an object larger than one multipart part, byte for byte', async () => {
    const s = await make();
    // 8 MiB is the first part size: 20 MiB means three parts, the last one short
    const chunk = randomBytes(1024 * 1024);
    const total = 20;
    const hash = createHash('sha256');
    async function* gen() {
      for (let i = 0; i < total; i++) {
        const c = Buffer.from(chunk);
        c.writeUInt32BE(i, 0);
        hash.update(c);
        yield c;
      }
    }
    const r = await s.put('big/object.bin', Readable.from(gen()));
    expect(r.size).toBe(total * 1024 * 1024);
    const back = createHash('sha256');
    let n = 0;
    for await (const c of await s.get('big/object.bin')) {
      back.update(c as Buffer);
      n += (c as Buffer).length;
    }
    expect(n).toBe(total * 1024 * 1024);
    expect(back.digest('hex')).toBe(hash.digest('hex'));
  });

  it('a missing key: get rejects with BULWARK_E_NOT_FOUND, head is undefined, delete is fine', async () => {
    const s = await make();
    await expect(s.get('nope/missing')).rejects.toMatchObject({ code: 'BULWARK_E_NOT_FOUND' });
    expect(await s.head('nope/missing')).toBeUndefined();
    await s.delete(['nope/missing']);
  });

  it('lists recursively under a prefix, sorted, with sizes; other prefixes are not listed', async () => {
    const s = await make();
    await s.put('backups/2/manifest.json', '{}');
    await s.put('backups/1/data/x', 'xx');
    await s.put('backups/1/manifest.json', '{}');
    await s.put('wal/0000000100000000/seg', 'seg');
    const listed = await s.list('backups/');
    // every driver reports when an object was written (expire ages out interrupted backups with it)
    for (const o of listed) expect(Math.abs(Date.now() - (o.modified?.getTime() ?? 0))).toBeLessThan(10 * 60_000);
    expect(listed.map(({ key, size }) => ({ key, size }))).toEqual([
      { key: 'backups/1/data/x', size: 2 },
      { key: 'backups/1/manifest.json', size: 2 },
      { key: 'backups/2/manifest.json', size: 2 },
    ]);
    expect((await s.list('backups/1/')).map((o) => o.key)).toEqual(['backups/1/data/x', 'backups/1/manifest.json']);
    expect((await s.list('wal/0000000100000000/se')).map((o) => o.key)).toEqual(['wal/0000000100000000/seg']);
    expect(await s.list('nothing/')).toEqual([]);
  });

  it('overwrites atomically and deletes', async () => {
    const s = await make();
    await s.put('k', 'one');
    await s.put('k', 'second');
    expect((await readAll(await s.get('k'))).toString()).toBe('second');
    await s.delete(['k']);
    expect(await s.head('k')).toBeUndefined();
    expect(await s.list('')).toEqual([]);
  });

  it('a failing source stream leaves no object behind', async () => {
    const s = await make();
    async function* broken() {
      yield randomBytes(9 * 1024 * 1024);
      throw new Error('source died');
    }
    await expect(s.put('half/written', Readable.from(broken()))).rejects.toThrow();
    expect(await s.head('half/written')).toBeUndefined();
    expect(await s.list('half/')).toEqual([]);
  });
}
