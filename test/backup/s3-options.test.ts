import { randomBytes } from 'node:crypto';
import { createServer, request } from 'node:http';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStorage } from '../../src/backup/index.js';
import { startTestS3, type TestS3 } from '../harness/s3.js';

// s3rver ignores server-side-encryption headers, so a loopback proxy in front of it records what the
// driver sends: the option must reach S3 on every request that creates an object.
describe('S3 driver options (recorded by a proxy in front of s3rver)', () => {
  let s3: TestS3;
  let proxyUrl: string;
  const seen: { method: string; url: string; sse?: string; kms?: string }[] = [];
  let close: () => void;

  beforeAll(async () => {
    s3 = await startTestS3();
    const target = new URL(s3.endpoint);
    const proxy = createServer((req, res) => {
      seen.push({
        method: req.method!,
        url: req.url!,
        sse: req.headers['x-amz-server-side-encryption'] as string | undefined,
        kms: req.headers['x-amz-server-side-encryption-aws-kms-key-id'] as string | undefined,
      });
      const up = request(
        { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
        (r) => {
          res.writeHead(r.statusCode!, r.headers);
          r.pipe(res);
        },
      );
      req.pipe(up);
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    proxyUrl = `http://127.0.0.1:${(proxy.address() as { port: number }).port}`;
    close = () => proxy.close();
  });
  afterAll(async () => {
    close?.();
    await s3?.stop();
  });

  it('sse=aws:kms with kmsKeyId is sent on PUT and on multipart create, not on reads', async () => {
    const storage = openStorage(
      `s3://${s3.bucket}/sse?endpoint=${encodeURIComponent(proxyUrl)}&forcePathStyle=true&sse=aws:kms&kmsKeyId=alias/pg`,
    );
    await storage.put('small', 'x');
    await storage.put('big', Readable.from([randomBytes(9 * 1024 * 1024)]));
    await storage.head('small');
    const puts = seen.filter((s) => s.method === 'PUT' && !/partNumber=/.test(s.url));
    const creates = seen.filter((s) => s.method === 'POST' && /uploads/.test(s.url));
    expect(puts.length).toBeGreaterThan(0);
    expect(creates.length).toBe(1);
    for (const r of [...puts, ...creates]) expect(r).toMatchObject({ sse: 'aws:kms', kms: 'alias/pg' });
    expect(seen.filter((s) => s.method === 'HEAD').every((s) => s.sse === undefined)).toBe(true);
  });

  it('rejects an unknown sse value as a usage error', () => {
    expect(() => openStorage('s3://b/p?sse=des')).toThrow(/sse must be AES256 or aws:kms/);
  });
});
