import type { PrefetchConfig } from './schema.js';

/**
 * The config layer's constants, apart from the zod schemas (schema-define.ts) so that a daemon
 * reads its config without loading zod (fast.ts).
 */

/** Largest config file accepted, as upstream (`from_file`). */
export const MAX_CONFIG_SIZE = 0x100000;
/** Default user I/O amplification (`rafs.batch_size`, v1 `amplify_io`) and prefetch batch. */
export const DEFAULT_BATCH_SIZE = 0x100000;
/** Upper bound of `rafs.batch_size` and of an enabled prefetch's `batch_size`. */
export const MAX_BATCH_SIZE = 0x10000000;
/** Default prefetch worker count when a prefetch table is present. */
export const DEFAULT_PREFETCH_THREADS = 8;
/** Prefetch worker count range when prefetch is enabled. */
export const MAX_PREFETCH_THREADS = 1024;

export const BACKEND_TYPES = ['localfs', 'localdisk', 'oss', 's3', 'registry', 'http-proxy'] as const;
export type BackendType = (typeof BACKEND_TYPES)[number];

/** What a missing prefetch table means (Rust's derived `Default`). */
export const PREFETCH_OFF: PrefetchConfig = Object.freeze({
  enable: false,
  threads: 0,
  batch_size: 0,
  bandwidth_limit: 0,
  prefetch_all: false,
  stream_prefetch: false,
});

/** Accepted spellings; `blobcache` is `filecache`, and `""` is `dummycache` (no cache). */
export const CACHE_TYPE_NAMES = ['', 'dummycache', 'blobcache', 'filecache', 'fscache'] as const;
export type CacheType = 'filecache' | 'fscache' | 'dummycache';

export const RAFS_MODES = ['direct', 'cached'] as const;
