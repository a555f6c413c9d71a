import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { Duplex, PassThrough, Readable, Transform } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { createGunzip, createGzip, gzip } from 'node:zlib';
import { BackupError } from './errors.js';

export type Compression = 'zstd' | 'gzip' | 'none';

/** How a stored object was encoded: compression first, then (optionally) age encryption. */
export interface Encoding {
  compression: Compression;
  level?: number;
  encryption: 'none' | 'age';
}

export const DEFAULT_LEVEL: Record<Compression, number> = { zstd: 1, gzip: 6, none: 0 };

/** File-name suffix of an encoded object: `.zst`, `.gz`, plus `.age` when encrypted. */
export function encodingSuffix(e: Encoding): string {
  return (
    (e.compression === 'zstd' ? '.zst' : e.compression === 'gzip' ? '.gz' : '') + (e.encryption === 'age' ? '.age' : '')
  );
}

/**
 * A child process as a Duplex (stdin -> stdout). The readable side ends only after the child exited
 * with 0, so a compressor that dies half-way fails the pipeline instead of producing a short object.
 */
export function spawnFilter(command: string, args: string[]): Duplex {
  const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    stderr = (stderr + d).slice(-2000);
  });
  const out = new PassThrough({ highWaterMark: 1024 * 1024 });
  child.stdout.pipe(out, { end: false });
  let ended = false;
  let code: number | null = null;
  const finish = () => {
    if (!ended || code === null) return;
    if (code === 0) out.end();
    else out.destroy(new Error(`${command} exited with ${code}: ${stderr.trim().split('\n').pop() ?? ''}`));
  };
  child.stdout.on('end', () => {
    ended = true;
    finish();
  });
  child.on('close', (c, signal) => {
    code = c ?? (signal ? 128 : 1);
    ended = true;
    finish();
  });
  child.on('error', (err) => out.destroy(new Error(`cannot run ${command}: ${err.message}`)));
  // a write after the child died (EPIPE) is reported by the exit code above
  child.stdin.on('error', () => {});
  const duplex = Duplex.from({ writable: child.stdin, readable: out });
  duplex.on('close', () => {
    if (code === null) child.kill('SIGKILL');
  });
  return duplex;
}

/** Counts bytes and computes SHA-256 of what flows through. */
export class HashCounter extends Transform {
  readonly hash = createHash('sha256');
  bytes = 0;
  constructor(private onBytes?: (n: number) => void) {
    super({ highWaterMark: 1024 * 1024 });
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    this.onBytes?.(chunk.length);
    this.push(chunk);
    cb();
  }
  digest(): string {
    return this.hash.digest('hex');
  }
}

/**
 * gzip on several cores: the stream is cut into 4 MiB pieces compressed in the libuv thread pool, and
 * the resulting gzip members are emitted in order. Concatenated members are one valid gzip file (RFC
 * 1952; `gzip -d` and zlib read them), so single-threaded gzip stops being the bottleneck it is for
 * pgBackRest on one big relation file.
 */
export class ParallelGzip extends Transform {
  private buf: Buffer[] = [];
  private size = 0;
  private queue: Promise<Buffer>[] = [];
  constructor(
    private level: number,
    private concurrency = Math.max(1, availableParallelism()),
    private piece = 4 * 1024 * 1024,
  ) {
    super({ highWaterMark: 1024 * 1024 });
  }
  private enqueue(data: Buffer) {
    this.queue.push(
      new Promise((resolve, reject) =>
        gzip(data, { level: this.level }, (err, out) => (err ? reject(err) : resolve(out))),
      ),
    );
  }
  override async _transform(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error) => void): Promise<void> {
    try {
      this.buf.push(chunk);
      this.size += chunk.length;
      while (this.size >= this.piece) {
        const all = Buffer.concat(this.buf);
        this.enqueue(all.subarray(0, this.piece));
        const rest = all.subarray(this.piece);
        this.buf = rest.length ? [rest] : [];
        this.size = rest.length;
        while (this.queue.length > this.concurrency) this.push(await this.queue.shift()!);
      }
      cb();
    } catch (err) {
      cb(err as Error);
    }
  }
  override async _flush(cb: (err?: Error) => void): Promise<void> {
    try {
      if (this.size || !this.queue.length) this.enqueue(Buffer.concat(this.buf));
      while (this.queue.length) this.push(await this.queue.shift()!);
      cb();
    } catch (err) {
      cb(err as Error);
    }
  }
}

export function compressor(c: Compression, level?: number, threads = 0): Duplex | undefined {
  const lv = level ?? DEFAULT_LEVEL[c];
  if (c === 'none') return undefined;
  // zstd's -T splits the stream into jobs compressed on all cores (one big relation file no longer
  // pins one core, the bottleneck pgBackRest has with its per-file parallelism)
  if (c === 'zstd') return spawnFilter('zstd', [`-${lv}`, `-T${threads}`, '-q', '-c']);
  return threads === 1 ? createGzip({ level: lv }) : new ParallelGzip(lv, threads || undefined);
}

export function decompressor(c: Compression): Duplex | undefined {
  if (c === 'none') return undefined;
  if (c === 'zstd') return spawnFilter('zstd', ['-d', '-q', '-c']);
  return createGunzip();
}

/**
 * Encryption keys come only from the environment (never argv, never the config file), so they stay
 * out of `ps`, shell history and logs:
 * - BULWARK_ENCRYPTION_KEY_FILE: a file holding an age identity (AGE-SECRET-KEY-1...; `age-keygen`
 *   output works) or only a recipient (age1..., enough to encrypt on hosts that must not decrypt);
 * - BULWARK_ENCRYPTION_PASSPHRASE: an age scrypt passphrase (slow by design: ~1 s per object, so
 *   prefer a key file for WAL archiving).
 */
export interface KeyMaterial {
  passphrase?: string;
  identity?: string;
  recipient?: string;
}

export function keyFromEnv(env: NodeJS.ProcessEnv = process.env): KeyMaterial | undefined {
  const file = env.BULWARK_ENCRYPTION_KEY_FILE;
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new BackupError(
        'BULWARK_E_ENCRYPTION',
        `BULWARK_ENCRYPTION_KEY_FILE: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      );
    }
    const identity = /^AGE-SECRET-KEY-1[0-9A-Z]+$/m.exec(text)?.[0];
    const recipient = /^(?:# public key: )?(age1[0-9a-z]+)$/m.exec(text)?.[1];
    if (!identity && !recipient)
      throw new BackupError(
        'BULWARK_E_ENCRYPTION',
        `BULWARK_ENCRYPTION_KEY_FILE: ${file} holds no age identity or recipient`,
      );
    return { identity, recipient };
  }
  if (env.BULWARK_ENCRYPTION_PASSPHRASE) return { passphrase: env.BULWARK_ENCRYPTION_PASSPHRASE };
  return undefined;
}

function requireKey(key: KeyMaterial | undefined, what: string): KeyMaterial {
  if (!key)
    throw new BackupError(
      'BULWARK_E_ENCRYPTION',
      `${what} needs a key: set BULWARK_ENCRYPTION_KEY_FILE (age identity) or BULWARK_ENCRYPTION_PASSPHRASE`,
    );
  return key;
}

export async function encryptStream(input: Readable, key: KeyMaterial | undefined): Promise<Readable> {
  const k = requireKey(key, 'encryption');
  // loaded on first use: ~60 ms of start-up that unencrypted `wal push` must not pay
  const { Encrypter, identityToRecipient } = await import('age-encryption');
  const e = new Encrypter();
  if (k.passphrase) e.setPassphrase(k.passphrase);
  else e.addRecipient(k.recipient ?? (await identityToRecipient(k.identity!)));
  const out = await e.encrypt(Readable.toWeb(input) as unknown as ReadableStream<Uint8Array>);
  return Readable.fromWeb(out as unknown as WebReadableStream<Uint8Array>);
}

export async function decryptStream(input: Readable, key: KeyMaterial | undefined, name: string): Promise<Readable> {
  const k = requireKey(key, `decrypting ${name}`);
  if (!k.passphrase && !k.identity)
    throw new BackupError('BULWARK_E_ENCRYPTION', `decrypting ${name} needs the age identity, not only the recipient`);
  const { Decrypter } = await import('age-encryption');
  const d = new Decrypter();
  if (k.passphrase) d.addPassphrase(k.passphrase);
  else d.addIdentity(k.identity!);
  try {
    const out = await d.decrypt(Readable.toWeb(input) as unknown as ReadableStream<Uint8Array>);
    return Readable.fromWeb(out as unknown as WebReadableStream<Uint8Array>);
  } catch (err) {
    throw new BackupError('BULWARK_E_ENCRYPTION', `cannot decrypt ${name}: ${(err as Error).message}`, { cause: err });
  }
}
