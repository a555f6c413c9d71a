/**
 * The stream format of an incremental layer (object `layer`, then compressed and encrypted like every
 * other object). A sequence of records, each a 4-byte big-endian header length, a JSON header and a
 * payload whose length the header implies:
 *
 *   {"t":"layer","v":1}                                       first record, no payload
 *   {"t":"dir","p":"base/5","mode":448}                        no payload
 *   {"t":"file","p":"global/pg_control","size":8192,...}      `size` bytes: the whole file
 *   {"t":"blocks","p":"base/5/1259","size":N,"blocks":[...]}  8 KiB per listed block, in that order;
 *                                                             a file may have several such records
 *   {"t":"end","files":123}                                   last record: a cut stream is detected
 *
 * Every file and folder present at backup time has a record (a relation file with no changed page
 * gets a `blocks` record with none listed), so applying a layer also knows what to delete.
 */
import { BLOCK_SIZE } from './pages.js';

export type LayerRecord =
  | { t: 'layer'; v: 1 }
  | { t: 'dir'; p: string; mode: number }
  | { t: 'file'; p: string; size: number; mode: number }
  | { t: 'blocks'; p: string; size: number; mode: number; blocks: number[] }
  | { t: 'end'; files: number };

const MAX_HEADER = 16 * 1024 * 1024;

export function encodeRecord(r: LayerRecord): Buffer {
  const json = Buffer.from(JSON.stringify(r), 'utf8');
  const len = Buffer.allocUnsafe(4);
  len.writeUInt32BE(json.length);
  return Buffer.concat([len, json]);
}

/** Bytes of payload that follow a record's header. */
export function payloadBytes(r: LayerRecord): number {
  if (r.t === 'file') return r.size;
  if (r.t === 'blocks') return r.blocks.length * BLOCK_SIZE;
  return 0;
}

/** Reads records and payloads from a byte stream, exactly, without holding more than it must. */
export class LayerReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private done = false;
  private readonly it: AsyncIterator<Buffer>;

  constructor(source: AsyncIterable<Buffer>) {
    this.it = source[Symbol.asyncIterator]();
  }

  private async fill(n: number): Promise<boolean> {
    while (this.buffered < n && !this.done) {
      const r = await this.it.next();
      if (r.done) this.done = true;
      else {
        this.chunks.push(r.value);
        this.buffered += r.value.length;
      }
    }
    return this.buffered >= n;
  }

  private take(n: number): Buffer {
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.chunks = rest.length ? [rest] : [];
    this.buffered = rest.length;
    return out;
  }

  /** The next record's header, or undefined at a clean end of the stream. */
  async next(): Promise<LayerRecord | undefined> {
    if (!(await this.fill(4))) {
      if (this.buffered === 0) return undefined;
      throw new Error('layer stream cut inside a record header');
    }
    const len = this.take(4).readUInt32BE(0);
    if (len === 0 || len > MAX_HEADER) throw new Error(`layer stream damaged: header of ${len} bytes`);
    if (!(await this.fill(len))) throw new Error('layer stream cut inside a record header');
    return JSON.parse(this.take(len).toString('utf8')) as LayerRecord;
  }

  /** `n` payload bytes in pieces of at most `max` bytes. */
  async *payload(n: number, max = 1024 * 1024): AsyncGenerator<Buffer> {
    let left = n;
    while (left > 0) {
      const want = Math.min(left, max);
      if (!(await this.fill(Math.min(want, 1)))) throw new Error('layer stream cut inside a payload');
      const piece = this.take(Math.min(want, this.buffered));
      left -= piece.length;
      yield piece;
    }
  }
}
