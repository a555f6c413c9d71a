import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
// s3rver ships CommonJS without types
// @ts-expect-error no type declarations
import S3rver from 's3rver';
import { freePort } from '../../src/lib/net.js';

export interface TestS3 {
  endpoint: string;
  bucket: string;
  /** A repository URI under a fresh prefix: s3://bucket/<prefix>?endpoint=...&forcePathStyle=true */
  repoUri(prefix: string): string;
  /** Environment a child process (bulwark, archive_command) needs to reach this server. */
  env: Record<string, string>;
  stop(): Promise<void>;
}

/**
 * s3rver on 127.0.0.1 (a port below 32768) over real HTTP, with one bucket. Its fixed credentials
 * (S3RVER/S3RVER) are exported into process.env too, so in-process drivers and children that inherit
 * the environment (PostgreSQL's archiver) sign requests the same way as against AWS.
 */
export async function startTestS3(bucket = 'bulwark-test'): Promise<TestS3> {
  const directory = mkdtempSync(join(tmpdir(), 'bulwark-s3-'));
  chmodSync(directory, 0o755);
  const port = await freePort({ below: 32768 });
  const server = new S3rver({ address: '127.0.0.1', port, directory, silent: true, allowMismatchedSignatures: false });
  await server.run();
  const endpoint = `http://127.0.0.1:${port}`;
  const env = { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER', AWS_REGION: 'us-east-1' };
  Object.assign(process.env, env);
  const client = new S3Client({
    endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
  });
  await client.send(new CreateBucketCommand({ Bucket: bucket }));
  client.destroy();
  return {
    endpoint,
    bucket,
    env,
    repoUri: (prefix) => `s3://${bucket}/${prefix}?endpoint=${encodeURIComponent(endpoint)}&forcePathStyle=true`,
    async stop() {
      await server.close().catch(() => {});
      rmSync(directory, { recursive: true, force: true });
    },
  };
}
