import type { Readable } from 'node:stream';
import { BackupError } from '../errors.js';
import { MAX_PARTS, partSizeFor } from './parts.js';
import type { S3Options, StorageDriver, StoredObject } from './types.js';

/**
 * S3-compatible repository (`s3://bucket/prefix`): AWS S3, MinIO, R2, s3rver. Credentials come from
 * the SDK's usual chain (AWS_ACCESS_KEY_ID/..., AWS_PROFILE, instance roles); they never appear in the
 * URI. Streams are uploaded with our own multipart loop so the part size can grow (see parts.ts) and
 * at most `concurrency` parts are held in memory.
 */
export class S3Storage implements StorageDriver {
  readonly description: string;
  private sdk:
    | Promise<{ s3: typeof import('@aws-sdk/client-s3'); client: import('@aws-sdk/client-s3').S3Client }>
    | undefined;
  private prefix: string;

  constructor(
    readonly bucket: string,
    prefix: string,
    private options: S3Options = {},
  ) {
    this.prefix = prefix.replace(/^\/+|\/+$/g, '');
    if (this.prefix) this.prefix += '/';
    this.description = `s3://${bucket}/${this.prefix}`;
    // archive_command starts us once per WAL segment: the SDK's once-per-process Node-version notice
    // would fill PostgreSQL's log, so it is off unless the user set the variable themselves
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  }

  /** The SDK is loaded on first use: it costs ~80 ms of start-up that `wal push` on a file:// repo must not pay. */
  private load() {
    this.sdk ??= import('@aws-sdk/client-s3').then((s3) => ({
      s3,
      client: new s3.S3Client({
        region: this.options.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1',
        ...(this.options.endpoint ? { endpoint: this.options.endpoint } : {}),
        forcePathStyle: this.options.forcePathStyle ?? Boolean(this.options.endpoint),
        // the SDK retries throttling and 5xx itself; 5 attempts ride out a restarting MinIO
        maxAttempts: 5,
      }),
    }));
    return this.sdk;
  }

  private async send(make: (s3: typeof import('@aws-sdk/client-s3')) => any): Promise<any> {
    const { s3, client } = await this.load();
    return client.send(make(s3));
  }

  private k(key: string): string {
    return this.prefix + key;
  }

  private fail(op: string, key: string, err: unknown): never {
    if (err instanceof BackupError) throw err;
    const e = err as { name?: string; message?: string; code?: string; $metadata?: { httpStatusCode?: number } };
    // a missing bucket is a repository that is not there, never "this object does not exist"
    if (e.name === 'NoSuchBucket')
      throw new BackupError(
        'BULWARK_E_STORAGE',
        `S3 ${op}: bucket ${this.bucket} does not exist (${this.description})`,
        {
          cause: err,
        },
      );
    if (e.name === 'NoSuchKey' || e.name === 'NotFound' || e.$metadata?.httpStatusCode === 404)
      throw new BackupError('BULWARK_E_NOT_FOUND', `${key} not found in ${this.description}`);
    const net = networkCause(err);
    if (net)
      throw new BackupError(
        'BULWARK_E_STORAGE',
        `S3 endpoint ${this.options.endpoint ?? `of ${this.description}`} unreachable (${net}) during ${op} of ${key || this.description}`,
        { cause: err },
      );
    throw new BackupError(
      'BULWARK_E_STORAGE',
      `S3 ${op} ${this.description}${key} failed: ${e.name ?? ''} ${e.message ?? ''}`.trim(),
      {
        cause: err,
      },
    );
  }

  private sseParams() {
    const o = this.options;
    return {
      ...(o.sse ? { ServerSideEncryption: o.sse } : {}),
      ...(o.sse === 'aws:kms' && o.kmsKeyId ? { SSEKMSKeyId: o.kmsKeyId } : {}),
    } as const;
  }

  async put(key: string, body: Readable | Buffer | string): Promise<{ size: number }> {
    if (typeof body === 'string' || Buffer.isBuffer(body)) {
      const buf = Buffer.from(body);
      try {
        await this.send(
          (s3) =>
            new s3.PutObjectCommand({
              Bucket: this.bucket,
              Key: this.k(key),
              Body: buf,
              ContentLength: buf.length,
              ...this.sseParams(),
            }),
        );
      } catch (err) {
        this.fail('put', key, err);
      }
      return { size: buf.length };
    }
    return this.putStream(key, body);
  }

  private async putStream(key: string, body: Readable): Promise<{ size: number }> {
    const concurrency = Math.max(1, this.options.concurrency ?? 2);
    let partNo = 1;
    let want = partSizeFor(1);
    let chunks: Buffer[] = [];
    let have = 0;
    let total = 0;
    let uploadId: string | undefined;
    const parts: { PartNumber: number; ETag: string }[] = [];
    const inflight = new Set<Promise<void>>();
    let failure: unknown;

    const startUpload = async () => {
      const r = await this.send(
        (s3) => new s3.CreateMultipartUploadCommand({ Bucket: this.bucket, Key: this.k(key), ...this.sseParams() }),
      );
      uploadId = r.UploadId;
    };
    const sendPart = (n: number, data: Buffer) => {
      const p = (async () => {
        const r = await this.send(
          (s3) =>
            new s3.UploadPartCommand({
              Bucket: this.bucket,
              Key: this.k(key),
              UploadId: uploadId,
              PartNumber: n,
              Body: data,
              ContentLength: data.length,
            }),
        );
        parts.push({ PartNumber: n, ETag: r.ETag! });
      })().catch((err) => {
        failure ??= err;
      });
      const tracked = p.finally(() => inflight.delete(tracked));
      inflight.add(tracked);
    };
    const flushPart = async (data: Buffer) => {
      if (!uploadId) await startUpload();
      if (partNo > MAX_PARTS) throw new Error(`object exceeds ${MAX_PARTS} parts`);
      sendPart(partNo, data);
      partNo++;
      want = partNo <= MAX_PARTS ? partSizeFor(partNo) : want;
      while (inflight.size >= concurrency) await Promise.race(inflight);
      if (failure) throw failure;
    };

    try {
      for await (const c of body as AsyncIterable<Buffer>) {
        let chunk = Buffer.isBuffer(c) ? c : Buffer.from(c);
        total += chunk.length;
        while (have + chunk.length >= want) {
          const take = want - have;
          chunks.push(chunk.subarray(0, take));
          chunk = chunk.subarray(take);
          const data = Buffer.concat(chunks);
          chunks = [];
          have = 0;
          await flushPart(data);
        }
        if (chunk.length) {
          chunks.push(chunk);
          have += chunk.length;
        }
      }
      const rest = Buffer.concat(chunks);
      if (!uploadId) {
        // small object: one PUT, no multipart bookkeeping
        await this.send(
          (s3) =>
            new s3.PutObjectCommand({
              Bucket: this.bucket,
              Key: this.k(key),
              Body: rest,
              ContentLength: rest.length,
              ...this.sseParams(),
            }),
        );
        return { size: total };
      }
      if (rest.length) await flushPart(rest);
      await Promise.all(inflight);
      if (failure) throw failure;
      parts.sort((a, b) => a.PartNumber - b.PartNumber);
      await this.send(
        (s3) =>
          new s3.CompleteMultipartUploadCommand({
            Bucket: this.bucket,
            Key: this.k(key),
            UploadId: uploadId,
            MultipartUpload: { Parts: parts },
          }),
      );
      return { size: total };
    } catch (err) {
      await Promise.allSettled(inflight);
      if (uploadId)
        await this.send(
          (s3) => new s3.AbortMultipartUploadCommand({ Bucket: this.bucket, Key: this.k(key), UploadId: uploadId }),
        ).catch(() => {});
      this.fail('put', key, err);
    }
  }

  async get(key: string): Promise<Readable> {
    try {
      const r = await this.send((s3) => new s3.GetObjectCommand({ Bucket: this.bucket, Key: this.k(key) }));
      return r.Body as Readable;
    } catch (err) {
      this.fail('get', key, err);
    }
  }

  async head(key: string): Promise<{ size: number } | undefined> {
    try {
      const r = await this.send((s3) => new s3.HeadObjectCommand({ Bucket: this.bucket, Key: this.k(key) }));
      return { size: r.ContentLength ?? 0 };
    } catch (err) {
      const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
      if (e.name === 'NotFound' || e.name === 'NoSuchKey' || e.$metadata?.httpStatusCode === 404) return undefined;
      this.fail('head', key, err);
    }
  }

  async list(prefix: string): Promise<StoredObject[]> {
    const out: StoredObject[] = [];
    let token: string | undefined;
    try {
      do {
        const r = await this.send(
          (s3) =>
            new s3.ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.k(prefix), ContinuationToken: token }),
        );
        for (const o of r.Contents ?? [])
          out.push({ key: o.Key!.slice(this.prefix.length), size: o.Size ?? 0, modified: o.LastModified });
        token = r.IsTruncated ? r.NextContinuationToken : undefined;
      } while (token);
    } catch (err) {
      this.fail('list', prefix, err);
    }
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  async delete(keys: string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += 1000) {
      const batch = keys.slice(i, i + 1000);
      try {
        const r = await this.send(
          (s3) =>
            new s3.DeleteObjectsCommand({
              Bucket: this.bucket,
              Delete: { Objects: batch.map((k) => ({ Key: this.k(k) })), Quiet: true },
            }),
        );
        if (r.Errors?.length)
          throw new Error(r.Errors.map((e: { Key?: string; Message?: string }) => `${e.Key}: ${e.Message}`).join('; '));
      } catch (err) {
        this.fail('delete', batch[0] ?? '', err);
      }
    }
  }
}

/** The network failure behind an SDK error (connection refused, DNS, timeout), or undefined. */
function networkCause(err: unknown): string | undefined {
  const codes = ['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH'];
  for (
    let e = err as { code?: string; name?: string; cause?: unknown; errors?: unknown[] } | undefined, i = 0;
    e && i < 5;
    i++
  ) {
    if (e.code && codes.includes(e.code)) return e.code;
    if (e.name === 'TimeoutError') return 'timeout';
    const inner = e.errors?.[0] ?? e.cause;
    e = inner as typeof e;
  }
  return undefined;
}
