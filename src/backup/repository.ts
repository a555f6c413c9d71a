import { createHash } from 'node:crypto';
import { pipeline, Readable } from 'node:stream';
import {
  compressor,
  decompressor,
  decryptStream,
  type Encoding,
  encodingSuffix,
  encryptStream,
  HashCounter,
  type KeyMaterial,
} from './codec.js';
import { BackupError } from './errors.js';
import type { BackupManifest, ObjectEntry } from './manifest.js';
import type { StorageDriver } from './storage/index.js';
import { historyTimeline, parseHistory, type TimelineHistory } from './timelines.js';
import { isSegmentName } from './wal-names.js';

/** Passes bytes through and fails at the end if their SHA-256 is not `expected`, naming the object. */
class VerifyingCounter extends HashCounter {
  constructor(
    private expected: string,
    private what: string,
    onBytes?: (n: number) => void,
  ) {
    super(onBytes);
  }
  override _flush(cb: (err?: Error) => void): void {
    const got = this.digest();
    if (got !== this.expected)
      cb(
        new BackupError(
          'BULWARK_E_CHECKSUM',
          `${this.what}: SHA-256 mismatch (stored object is corrupted: want ${this.expected.slice(0, 16)}..., got ${got.slice(0, 16)}...)`,
        ),
      );
    else cb();
  }
}

/** A pipeline of Node streams that returns its tail, failing every stage if any one fails. */
function chain(streams: (NodeJS.ReadableStream | NodeJS.WritableStream | undefined)[]): Readable {
  const list = streams.filter((s): s is NodeJS.ReadableStream => s !== undefined);
  if (list.length === 1) return list[0] as Readable;
  return pipeline(list as any, () => {}) as unknown as Readable;
}

export interface WalObject {
  key: string;
  name: string;
  sha256: string;
  size: number;
}

/**
 * Repository layout (every driver):
 *   backups/<id>/<object>...         data objects (e.g. base.tar.zst, dump.pgdump.zst.age)
 *   backups/<id>/manifest.json       written LAST; its presence is what makes a backup exist
 *   backups/<id>/manifest.copy.json  same content, read if the first is damaged (as pgBackRest's .copy)
 *   backups/<id>/verify.json         result of the last `backup verify`
 *   wal/<timeline+log>/<segment>-<sha256 of the raw segment><suffix>
 *   wal/other/<name>-<sha256><suffix>   history and .backup files
 * The raw segment's hash is in the object name, so `wal push` can tell "already archived" from
 * "different content" with one list call, and `wal fetch` can verify without a side file.
 */
export class Repository {
  constructor(
    readonly storage: StorageDriver,
    readonly key?: KeyMaterial,
  ) {}

  get description(): string {
    return this.storage.description;
  }

  /** Encode `source` (compress, encrypt) and store it as backups/<id>/<name><suffix>. */
  async writeObject(
    id: string,
    name: string,
    source: Readable,
    encoding: Encoding,
    /** precompressed: `source` is already in `encoding.compression` (pg_basebackup server-side compression) */
    options: { threads?: number; onRawBytes?: (n: number) => void; precompressed?: boolean } = {},
  ): Promise<ObjectEntry> {
    const key = `backups/${id}/${name}${encodingSuffix(encoding)}`;
    const raw = new HashCounter(options.onRawBytes);
    let s = chain([
      source,
      raw,
      options.precompressed ? undefined : compressor(encoding.compression, encoding.level, options.threads),
    ]);
    if (encoding.encryption === 'age') s = await encryptStream(s, this.key);
    const stored = new HashCounter();
    const tail = chain([s, stored]);
    await this.storage.put(key, tail);
    return {
      name,
      key: key.slice(`backups/${id}/`.length),
      rawBytes: raw.bytes,
      storedBytes: stored.bytes,
      sha256: stored.digest(),
    };
  }

  /** The decoded bytes of one object, verified against the manifest's SHA-256 as they stream. */
  async readObject(
    m: BackupManifest,
    entry: ObjectEntry,
    onStoredBytes?: (n: number) => void,
    options: { decompress?: boolean } = {},
  ): Promise<Readable> {
    const key = `backups/${m.id}/${entry.key}`;
    const body = await this.storage.get(key);
    let s = chain([body, new VerifyingCounter(entry.sha256, `backup ${m.id} object ${entry.key}`, onStoredBytes)]);
    if (m.encoding.encryption === 'age') s = await decryptStream(s, this.key, key);
    // decompress: false lets a caller pipe the compressed bytes straight into a decompressor process
    return options.decompress === false ? s : chain([s, decompressor(m.encoding.compression)]);
  }

  /** Read every stored byte of every object and compare with the manifest; returns the problems. */
  async checkObjects(m: BackupManifest): Promise<{ object: string; problem: string }[]> {
    const problems: { object: string; problem: string }[] = [];
    for (const entry of m.objects) {
      const key = `backups/${m.id}/${entry.key}`;
      try {
        const h = createHash('sha256');
        let n = 0;
        for await (const c of await this.storage.get(key)) {
          h.update(c as Buffer);
          n += (c as Buffer).length;
        }
        const got = h.digest('hex');
        if (n !== entry.storedBytes)
          problems.push({ object: key, problem: `size ${n} bytes, manifest says ${entry.storedBytes}` });
        else if (got !== entry.sha256)
          problems.push({
            object: key,
            problem: `SHA-256 ${got.slice(0, 16)}... does not match the manifest's ${entry.sha256.slice(0, 16)}...`,
          });
      } catch (err) {
        problems.push({ object: key, problem: (err as Error).message });
      }
    }
    return problems;
  }

  async writeManifest(m: BackupManifest): Promise<void> {
    const text = `${JSON.stringify(m, null, 2)}\n`;
    await this.storage.put(`backups/${m.id}/manifest.json`, text);
    await this.storage.put(`backups/${m.id}/manifest.copy.json`, text);
  }

  async readManifest(id: string): Promise<BackupManifest> {
    let lastErr: unknown;
    for (const name of ['manifest.json', 'manifest.copy.json']) {
      try {
        const chunks: Buffer[] = [];
        for await (const c of await this.storage.get(`backups/${id}/${name}`)) chunks.push(c as Buffer);
        const m = JSON.parse(Buffer.concat(chunks).toString('utf8')) as BackupManifest;
        if (m.format !== 1 || m.id !== id) throw new Error('not a Bulwark manifest');
        return m;
      } catch (err) {
        lastErr = err;
      }
    }
    if (lastErr instanceof BackupError && lastErr.code === 'BULWARK_E_NOT_FOUND')
      throw new BackupError('BULWARK_E_NOT_FOUND', `backup ${id} not found in ${this.description}`);
    throw new BackupError('BULWARK_E_STORAGE', `backup ${id}: cannot read its manifest: ${(lastErr as Error).message}`);
  }

  /** Complete backups (those with a manifest), oldest first. */
  async listBackups(): Promise<BackupManifest[]> {
    const objects = await this.storage.list('backups/');
    const ids = [
      ...new Set(
        objects.filter((o) => /^backups\/[^/]+\/manifest(\.copy)?\.json$/.test(o.key)).map((o) => o.key.split('/')[1]!),
      ),
    ].sort();
    const out: BackupManifest[] = [];
    for (const id of ids) out.push(await this.readManifest(id));
    return out;
  }

  async resolveBackupId(ref: string | undefined, kind?: 'logical' | 'physical'): Promise<BackupManifest> {
    const all = (await this.listBackups()).filter((m) => !kind || m.kind === kind);
    if (!ref || ref === 'latest') {
      const last = all.at(-1);
      if (!last)
        throw new BackupError(
          'BULWARK_E_NOT_FOUND',
          `no ${kind ?? ''} backup in ${this.description}`.replace('  ', ' '),
        );
      return last;
    }
    const m = all.find((b) => b.id === ref);
    if (!m) throw new BackupError('BULWARK_E_NOT_FOUND', `backup ${ref} not found in ${this.description}`);
    return m;
  }

  /** Manifest first (the backup stops existing at once), then its data objects. */
  async deleteBackup(id: string): Promise<void> {
    await this.storage.delete([`backups/${id}/manifest.json`, `backups/${id}/manifest.copy.json`]);
    const rest = await this.storage.list(`backups/${id}/`);
    await this.storage.delete(rest.map((o) => o.key));
  }

  // ---------------------------------------------------------------- WAL archive

  static walDir(name: string): string {
    return isSegmentName(name.slice(0, 24)) && /^[0-9A-F]{24}/.test(name) ? name.slice(0, 16) : 'other';
  }

  static parseWalKey(key: string): WalObject | undefined {
    const m = /^wal\/[^/]+\/([^/]+)-([0-9a-f]{64})(\.[a-z.]+)?$/.exec(key);
    return m ? { key, name: m[1]!, sha256: m[2]!, size: 0 } : undefined;
  }

  async findWal(name: string): Promise<WalObject | undefined> {
    const objs = await this.storage.list(`wal/${Repository.walDir(name)}/${name}-`);
    for (const o of objs) {
      const w = Repository.parseWalKey(o.key);
      if (w && w.name === name) return { ...w, size: o.size };
    }
    return undefined;
  }

  async listWal(): Promise<WalObject[]> {
    const out: WalObject[] = [];
    for (const o of await this.storage.list('wal/')) {
      const w = Repository.parseWalKey(o.key);
      if (w) out.push({ ...w, size: o.size });
    }
    return out;
  }

  /**
   * Archive one WAL file. Resolves only once the object is stored and read back intact, so
   * archive_command never acknowledges a segment that is not safely in the repository.
   * Returns 'exists' when the same content is already archived (a retried archive_command).
   */
  async pushWal(name: string, data: Buffer, encoding: Encoding): Promise<'stored' | 'exists'> {
    const sha = createHash('sha256').update(data).digest('hex');
    const prior = await this.findWal(name);
    if (prior) {
      if (prior.sha256 === sha) return 'exists';
      throw new BackupError(
        'BULWARK_E_WAL_MISMATCH',
        `wal push ${name}: the archive already holds ${name} with different content (${prior.key}); refusing to overwrite. Is another server archiving into ${this.description}?`,
      );
    }
    const key = `wal/${Repository.walDir(name)}/${name}-${sha}${encodingSuffix(encoding)}`;
    let s = chain([Readable.from([data]), compressor(encoding.compression, encoding.level, 1)]);
    if (encoding.encryption === 'age') s = await encryptStream(s, this.key);
    const chunks: Buffer[] = [];
    for await (const c of s) chunks.push(c as Buffer);
    const stored = Buffer.concat(chunks);
    await this.storage.put(key, stored);
    // read back: the storage must return exactly the bytes we sent
    const h = createHash('sha256');
    let n = 0;
    for await (const c of await this.storage.get(key)) {
      h.update(c as Buffer);
      n += (c as Buffer).length;
    }
    if (n !== stored.length || h.digest('hex') !== createHash('sha256').update(stored).digest('hex'))
      throw new BackupError('BULWARK_E_CHECKSUM', `wal push ${name}: ${key} read back differs from what was written`);
    return 'stored';
  }

  /**
   * findWal for a reader (restore_command, the prefetcher): "not archived" is only an answer when the
   * repository itself is there. A folder that does not exist or holds no repository (a mount point
   * with nothing mounted) is a storage failure, never "not in the archive", which would make
   * PostgreSQL end recovery early.
   */
  async locateWal(name: string): Promise<WalObject | undefined> {
    const w = await this.findWal(name);
    if (!w) await this.storage.assertRepository?.();
    return w;
  }

  /** Decoded and verified content of an archived WAL file. */
  async fetchWal(name: string): Promise<Buffer> {
    const w = await this.locateWal(name);
    if (!w) throw new BackupError('BULWARK_E_NOT_FOUND', `wal fetch ${name}: not in ${this.description}`);
    return this.readWal(w);
  }

  /** Timeline history files in the archive, parsed (history files are small). */
  async listHistories(): Promise<TimelineHistory[]> {
    const out: TimelineHistory[] = [];
    for (const w of await this.listWal()) {
      const tli = historyTimeline(w.name);
      if (tli !== undefined) out.push(parseHistory(tli, (await this.readWal(w)).toString('utf8')));
    }
    return out.sort((a, b) => a.tli - b.tli);
  }

  /** Decoded content of one archived WAL object, checked against the SHA-256 in its name. */
  async readWal(w: WalObject): Promise<Buffer> {
    const name = w.name;
    const suffix = w.key.slice(w.key.indexOf(w.sha256) + 64);
    const encoding: Encoding = {
      compression: suffix.startsWith('.zst') ? 'zstd' : suffix.startsWith('.gz') ? 'gzip' : 'none',
      encryption: suffix.endsWith('.age') ? 'age' : 'none',
    };
    let s: Readable = await this.storage.get(w.key);
    if (encoding.encryption === 'age') s = await decryptStream(s, this.key, w.key);
    s = chain([s, decompressor(encoding.compression)]);
    const chunks: Buffer[] = [];
    for await (const c of s) chunks.push(c as Buffer);
    const data = Buffer.concat(chunks);
    if (createHash('sha256').update(data).digest('hex') !== w.sha256)
      throw new BackupError('BULWARK_E_CHECKSUM', `wal fetch ${name}: ${w.key} is corrupted (SHA-256 mismatch)`);
    return data;
  }
}
