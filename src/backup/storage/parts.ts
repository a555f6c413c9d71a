/**
 * S3 allows at most 10,000 parts per multipart upload and 5 GiB per part. A fixed part size either
 * wastes memory on small objects or breaks on big ones (pgBackRest's fixed repo-s3-part-size did), and
 * a streamed object's size is unknown up front. So the part size starts small and doubles every 1,000
 * parts: 8 MiB x 1000 + 16 MiB x 1000 + ... reaches ~8 TiB by part 10,000 (beyond S3's 5 TiB object
 * limit), and no part exceeds 4 GiB.
 */
export const MIN_PART_SIZE = 8 * 1024 * 1024;
export const MAX_PARTS = 10_000;
export const MAX_PART_SIZE = 5 * 1024 ** 3;

/** Size of part number `n` (1-based). */
export function partSizeFor(n: number, base = MIN_PART_SIZE): number {
  if (!Number.isInteger(n) || n < 1 || n > MAX_PARTS) throw new RangeError(`part number ${n} outside 1..${MAX_PARTS}`);
  return Math.min(base * 2 ** Math.floor((n - 1) / 1000), MAX_PART_SIZE);
}

/** Largest object size reachable with `partSizeFor` (used by the unit test and the docs). */
export function maxObjectSize(base = MIN_PART_SIZE): number {
  let total = 0;
  for (let n = 1; n <= MAX_PARTS; n++) total += partSizeFor(n, base);
  return total;
}
