/**
 * The daemon's chunk cache layer (upstream storage/src/cache: `blobcache`/`filecache`,
 * `dummycache`) and filesystem prefetch.
 *
 * Design
 * - The blob device under each RafsImage (storage/blob-device.ts) owns chunk fetching:
 *   single-flight per (blob, chunk) so concurrent readers share one backend read and one
 *   decompression, contiguous chunks merged into one backend read, digest checks. It talks to a
 *   `ChunkCache` (interface in storage/chunk-cache.ts, so storage/ and rafs/ do not depend on
 *   this layer): for each claimed chunk it asks the blob's `CachedBlob` first, fetches the
 *   rest from the backend, verifies them, hands the readers their bytes and stores them. A chunk stays joinable in flight until it is stored, so it is
 *   never fetched twice.
 * - `blobcache`: per blob, `<work_dir>/<blob_id>.blob.data` holds decompressed chunk data at each
 *   chunk's uncompressed offset (a sparse file sized to the blob's uncompressed size), and
 *   `<work_dir>/<blob_id>.blob.data.chunk_map` its chunk-ready bitmap in upstream's indexed chunk
 *   map layout (chunk-map.ts), so upstream nydusd and this one can use each other's cache
 *   directories. A chunk is marked ready only after its data is written; the changed map byte is
 *   written at once, so another process opening the same work_dir serves ready chunks with no
 *   backend read. A data file larger than the blob, or a map of the wrong size or header, is
 *   started afresh with a warning. Blobs without a chunk count (old v5 images) are not cached.
 * - Validation: `validate` (cache.validate) checks chunks read back from the cache and chunks
 *   fetched before they are stored (chunks with no recorded digest pass); the image's own
 *   `validate` (rafs.validate) or a read's `verify` checks every chunk used, wherever it came
 *   from, and refuses chunks without a digest. A wrong backend chunk fails with ERR_DIGEST
 *   naming blob and chunk, for the reads that need it only, and is never stored; a wrong cached
 *   chunk is logged, marked not ready and fetched again from the backend.
 * - `dummycache`: stores nothing; reads go to the backend (still single-flight), validation
 *   still applies, prefetch is skipped.
 * - Prefetch (prefetch.ts): plans the chunks of the chosen files that are not cached, merges
 *   contiguous ones per blob up to the merging size, and issues them with a fixed number in
 *   flight under a token-bucket bandwidth limit. Its backend reads wait while on-demand reads
 *   are waiting for the backend (a gate in the blob device), unless an on-demand read needs one of
 *   their chunks. Errors are logged, never fatal; cancel() stops it at the next request or gate.
 * - Counters follow upstream's BlobcacheMetrics (stats.ts); `backendReads`/`backendBytes` on
 *   the cache count backend reads made through it.
 */
import type { Logger } from '../log/logger.js';
import { silentLogger } from '../log/logger.js';
import { BlobCache } from './blobcache.js';
import { DummyCache } from './dummycache.js';

export type { CachedBlob, ChunkCache } from '../storage/chunk-cache.js';
export type { RafsImageOptions } from '../rafs/image.js';
export { BlobCache, BLOB_DATA_SUFFIX } from './blobcache.js';
export { DummyCache } from './dummycache.js';
export {
  ChunkMapFile,
  CHUNK_MAP_ALL_READY,
  CHUNK_MAP_HEADER_SIZE,
  CHUNK_MAP_MAGIC,
  CHUNK_MAP_MAGIC2,
  CHUNK_MAP_SUFFIX,
  CHUNK_MAP_VERSION,
} from './chunk-map.js';
export { newBlobCacheStats, type BlobCacheStats } from './stats.js';
export { prefetchInodes, startPrefetch, type PrefetchHandle, type PrefetchOptions } from './prefetch.js';

/** `cache.type`: `filecache` is upstream's other name for `blobcache`. */
export type ChunkCacheType = 'blobcache' | 'filecache' | 'dummycache';

export interface ChunkCacheOptions {
  type: ChunkCacheType;
  /** blobcache: directory of the cache files (upstream default "."), created when missing. */
  workDir?: string;
  /** cache.validate: verify chunks read back from the cache and fetched into it. */
  validate?: boolean;
  logger?: Logger;
}

/**
 * A chunk cache to pass to `new RafsImage(bootstrap, source, { cache })`. For blobcache the work
 * directory is created now; throws a NydusError (ERR_IO) when it cannot be created or written.
 * One cache may serve several images; close it after them.
 */
export function createChunkCache(opts: ChunkCacheOptions): BlobCache | DummyCache {
  const validate = opts.validate === true;
  if (opts.type === 'dummycache') return new DummyCache(validate);
  return new BlobCache(opts.workDir ?? '.', validate, opts.logger ?? silentLogger);
}
