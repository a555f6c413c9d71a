import { describe, expect, it } from 'vitest';
import { checkDumpOptions, finishedDumpFiles } from '../../src/backup/logical.js';

describe('finishedDumpFiles: which pg_dump -Fd files may be stored while pg_dump runs', () => {
  const listed = ['toc.dat', '3401.dat', '3402.dat', 'blob_16400.dat', 'blobs.toc'];

  it('a file some pg_dump process holds open is not finished; closed ones are, sorted', () => {
    expect(finishedDumpFiles(listed, new Set(['3402.dat']), new Set(), false)).toEqual([
      '3401.dat',
      'blob_16400.dat',
      'toc.dat',
    ]);
  });

  it('files already taken are not returned twice', () => {
    expect(finishedDumpFiles(listed, new Set(), new Set(['toc.dat', '3401.dat']), false)).toEqual([
      '3402.dat',
      'blob_16400.dat',
    ]);
  });

  it('the large-object lists (opened in append mode) wait until pg_dump exited', () => {
    const lo = ['blobs.toc', 'blobs_3410.toc', 'blob_1.dat'];
    expect(finishedDumpFiles(lo, new Set(), new Set(), false)).toEqual(['blob_1.dat']);
    expect(finishedDumpFiles(lo, new Set(), new Set(['blob_1.dat']), true)).toEqual(['blobs.toc', 'blobs_3410.toc']);
  });

  it('when open files cannot be read (no /proc), nothing is finished until pg_dump exited, then everything', () => {
    expect(finishedDumpFiles(listed, undefined, new Set(), false)).toEqual([]);
    expect(finishedDumpFiles(listed, undefined, new Set(['toc.dat']), true)).toEqual([
      '3401.dat',
      '3402.dat',
      'blob_16400.dat',
      'blobs.toc',
    ]);
  });
});

describe('checkDumpOptions', () => {
  it('accepts custom, directory, directory with jobs >= 1', () => {
    for (const [f, j] of [
      [undefined, undefined],
      ['custom', undefined],
      ['directory', undefined],
      ['directory', 1],
      ['directory', 8],
    ] as const)
      expect(() => checkDumpOptions(f, j)).not.toThrow();
  });

  it('rejects an unknown format, jobs < 1 or fractional, and jobs without the directory format, naming the flag', () => {
    const cases: [string | undefined, number | undefined, RegExp][] = [
      ['tar', undefined, /^--format: "tar" must be custom or directory$/],
      ['directory', 0, /^--jobs: "0" must be a whole number >= 1$/],
      ['directory', 1.5, /^--jobs: "1.5" must be a whole number >= 1$/],
      [undefined, 2, /^--jobs: .*--format directory/],
      ['custom', 2, /^--jobs: .*--format directory/],
    ];
    for (const [f, j, msg] of cases)
      expect(() => checkDumpOptions(f, j)).toThrow(
        expect.objectContaining({ exitCode: 2, message: expect.stringMatching(msg) }),
      );
  });
});
