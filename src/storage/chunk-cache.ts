import type { BlobInfo, ChunkInfo } from '../format/model.js';

/**
 * The stored decompressed chunks of one blob, as a chunk cache keeps them (src/cache). Chunks
 * are addressed by their index in the blob.
 */
export interface CachedBlob {
  /** Whether chunk `index` is stored and marked ready. */
  isReady(index: number): boolean;
  /** Whether `c` can be stored at all (inside the blob's chunk count and data size). */
  canStore(c: ChunkInfo): boolean;
  /**
   * The stored bytes of a ready chunk; undefined when they cannot be read back. With `into` (at
   * least the chunk's size) the bytes land at its start and the result is that prefix.
   */
  read(c: ChunkInfo, into?: Buffer): Promise<Buffer | undefined>;
  /** Store the bytes of `c`, then mark it ready. Never rejects: a failure is logged, the chunk stays not ready. */
  write(c: ChunkInfo, data: Buffer): Promise<void>;
  /** Forget a stored chunk found to be wrong; `why` goes to the log. Never rejects. */
  invalidate(c: ChunkInfo, why: string): Promise<void>;
}

/**
 * Where decompressed chunks are kept between reads (upstream's blob cache manager). A BlobDevice
 * asks it before going to the backend and hands it every chunk it fetches. The implementations
 * (blobcache, dummycache) live in src/cache, above this layer.
 */
export interface ChunkCache {
  /** Verify chunks read back from the cache and chunks fetched to be cached (upstream `cache.validate`). */
  readonly validate: boolean;
  /** Whether anything is stored at all (false for dummycache, where prefetch is pointless). */
  readonly storesData: boolean;
  /**
   * The storage of a blob, opened once per blob id; undefined when the blob is not cached.
   * Rejects with a NydusError when its cache files cannot be opened.
   */
  openBlob(blob: BlobInfo): Promise<CachedBlob | undefined>;
  /** An on-demand read request of `chunks` chunks, `hits` of which came from the cache. */
  noteRequest(chunks: number, hits: number): void;
  /** One read of `bytes` issued to the backend. */
  noteBackendRead(bytes: number): void;
}
