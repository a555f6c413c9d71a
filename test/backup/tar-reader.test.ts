import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readTar, type TarEntry } from '../../src/backup/tar-reader.js';

// Archives written by GNU tar in each format pg_basebackup and users produce; read back in small
// chunks so every header, long name and content crosses chunk boundaries.
const dir = mkdtempSync(join(tmpdir(), 'bulwark-tar-reader-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const src = join(dir, 'src');
const longFolder = 'a'.repeat(60);
const longFile = `${'b'.repeat(80)}.dat`; // with its folder, longer than ustar's 100-byte name field
mkdirSync(join(src, 'base', longFolder), { recursive: true });
const bodies: Record<string, Buffer> = {
  PG_VERSION: Buffer.from('15\n'),
  'base/empty': Buffer.alloc(0),
  [`base/${longFolder}/${longFile}`]: Buffer.from(Array.from({ length: 20_000 }, (_, i) => i % 251)),
};
for (const [p, b] of Object.entries(bodies)) writeFileSync(join(src, p), b);
symlinkSync('/elsewhere/tablespace', join(src, 'pg_tblspc_link'));

function* chunks(buf: Buffer, size: number): Generator<Buffer> {
  for (let o = 0; o < buf.length; o += size) yield buf.subarray(o, o + size);
}

async function read(tar: Buffer, chunkSize: number) {
  const entries: TarEntry[] = [];
  const contents = new Map<string, Buffer[]>();
  let current: string | undefined;
  const { truncated } = await readTar(chunks(tar, chunkSize) as unknown as AsyncIterable<Buffer>, {
    entry: (e) => {
      entries.push(e);
      if (e.type !== '0') return false;
      current = e.name;
      contents.set(e.name, []);
      return true;
    },
    data: (c) => contents.get(current!)!.push(Buffer.from(c)),
    end: () => {
      current = undefined;
    },
  });
  return { entries, contents, truncated };
}

describe('streaming tar reader (one for incremental listing and delta restore)', () => {
  for (const format of ['gnu', 'pax', 'ustar'] as const) {
    it(`reads ${format} archives: names (long ones too), sizes, modes, links and exact contents`, async () => {
      const tar = execFileSync('tar', [`--format=${format}`, '-C', src, '-cf', '-', '.'], { maxBuffer: 1 << 26 });
      for (const size of [7, 512, 4096, tar.length]) {
        const { entries, contents, truncated } = await read(tar, size);
        expect(truncated).toBe(false);
        const files = entries.filter((e) => e.type === '0').map((e) => e.name);
        // gnu: an 'L' entry before the long name; pax: an 'x' header; ustar: prefix + name fields
        expect(files.sort()).toEqual(Object.keys(bodies).sort());
        for (const [p, b] of Object.entries(bodies)) {
          expect(Buffer.concat(contents.get(p)!).equals(b)).toBe(true);
          expect(entries.find((e) => e.name === p)!.size).toBe(b.length);
        }
        const link = entries.find((e) => e.name === 'pg_tblspc_link')!;
        expect(link.type).toBe('2');
        expect(link.linkTarget).toBe('/elsewhere/tablespace');
        const folder = entries.find((e) => e.name === `base/${longFolder}`)!;
        expect(folder.type).toBe('5');
        expect(folder.mode).toBe(statSync(join(src, 'base', longFolder)).mode & 0o7777);
      }
    });
  }

  it('says the archive was cut short inside a file the caller reads', async () => {
    const tar = execFileSync('tar', ['--format=gnu', '-C', src, '-cf', '-', `base/${longFolder}`]);
    // cut inside the 20,000-byte file's content: no end-of-archive blocks either
    const cut = tar.subarray(0, 512 * 4 + 5000);
    const { truncated, contents } = await read(cut, 1000);
    expect(truncated).toBe(true);
    expect(Buffer.concat(contents.get(`base/${longFolder}/${longFile}`)!).length).toBeLessThan(20_000);
  });
});
