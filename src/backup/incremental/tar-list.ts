/**
 * File sizes in a base backup's tar stream. An incremental backup on top of a full one needs the
 * full's file list: which files existed, and how long they were.
 */
import { readTar } from '../tar-reader.js';

/** path (without a leading "./", without a trailing "/") -> size, for regular files. */
export async function listTar(source: AsyncIterable<Buffer>): Promise<Map<string, number>> {
  const files = new Map<string, number>();
  await readTar(source, {
    entry: (e) => {
      if (e.type === '0' || e.type === '\0') files.set(e.name, e.size);
      return false; // sizes only: contents are skipped
    },
  });
  return files;
}
