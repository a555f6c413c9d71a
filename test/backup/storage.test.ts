import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FsStorage, MAX_PARTS, maxObjectSize, openStorage, partSizeFor } from '../../src/backup/storage/index.js';
import { startTestS3, type TestS3 } from '../harness/s3.js';
import { storageConformance } from './storage-conformance.js';

describe('storage driver: fs', () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });
  storageConformance(async () => {
    const d = mkdtempSync(join(tmpdir(), 'bulwark-fs-'));
    dirs.push(d);
    return new FsStorage(join(d, 'repo'));
  });
});

describe('storage driver: s3 (s3rver on loopback)', () => {
  let s3: TestS3;
  let n = 0;
  beforeAll(async () => {
    s3 = await startTestS3();
  });
  afterAll(async () => {
    await s3?.stop();
  });
  storageConformance(async () => openStorage(s3.repoUri(`conf-${++n}/deep`)));
});

describe('multipart part size', () => {
  it('grows so 10,000 parts hold more than S3 allows in one object (5 TiB), no part above 5 GiB', () => {
    expect(partSizeFor(1)).toBe(8 * 1024 * 1024);
    expect(partSizeFor(1000)).toBe(8 * 1024 * 1024);
    expect(partSizeFor(1001)).toBe(16 * 1024 * 1024);
    expect(partSizeFor(MAX_PARTS)).toBeLessThanOrEqual(5 * 1024 ** 3);
    expect(maxObjectSize()).toBeGreaterThan(5 * 1024 ** 4);
    expect(() => partSizeFor(MAX_PARTS + 1)).toThrow(RangeError);
  });
});

describe('repository URIs', () => {
  it('rejects credentials in the URI and unknown schemes with a usage error', () => {
    expect(() => openStorage('s3://AKIA:secret@bucket/x')).toThrow(/must not contain credentials/);
    expect(() => openStorage('ftp://host/x')).toThrow(/unsupported scheme/);
    try {
      openStorage('gs://b/x');
    } catch (e) {
      expect((e as { exitCode: number }).exitCode).toBe(2);
    }
  });
  it('maps file:// and s3:// with settings', () => {
    expect(openStorage('file:///var/backups/pg').description).toBe('file:///var/backups/pg');
    expect(openStorage('s3://bkt/a/b?endpoint=http%3A%2F%2F127.0.0.1%3A9000&forcePathStyle=true').description).toBe(
      's3://bkt/a/b/',
    );
  });
});
