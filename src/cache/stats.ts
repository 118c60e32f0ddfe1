/**
 * Counters of one chunk cache, in upstream's `BlobcacheMetrics` terms (served as
 * `GET /api/v1/metrics/blobcache`). Plain mutable fields: the cache and prefetch update them,
 * the API reads them.
 */
export interface BlobCacheStats {
  /** The cache's work directory ("" for dummycache). */
  storePath: string;
  /** Paths of the cache data files in use, so an external GC knows what belongs to this daemon. */
  underlyingFiles: Set<string>;
  /** On-demand read requests served partly from the cache. */
  partialHits: number;
  /** On-demand read requests served wholly from the cache. */
  wholeHits: number;
  /** On-demand read requests handled; hit ratio = (partialHits + wholeHits) / total. */
  total: number;
  /** Chunks in ready state (found ready at open plus stored since; never evicted). */
  entriesCount: number;
  /** Bytes of blob data asked for by prefetch requests (their merged compressed spans). */
  prefetchDataAmount: number;
  /** Merged prefetch requests issued; prefetchDataAmount / prefetchRequestsCount is the mean size. */
  prefetchRequestsCount: number;
  /** Prefetch workers currently running. */
  prefetchWorkers: number;
  /** Chunks covered by prefetch requests before merging. */
  prefetchUnmergedChunks: number;
  /** Sum over prefetch requests of the time from being planned to being stored. */
  prefetchCumulativeTimeMillis: number;
  /** When prefetch began: seconds, and the milliseconds part. */
  prefetchBeginTimeSecs: number;
  prefetchBeginTimeMillis: number;
  /** When the last prefetch request ended: seconds, and the milliseconds part. */
  prefetchEndTimeSecs: number;
  prefetchEndTimeMillis: number;
  /** Bytes fetched from the backend and waiting to be written to the cache. */
  bufferedBackendSize: number;
  /** Every chunk of every opened blob is ready in the cache. */
  dataAllReady: boolean;
}

export function newBlobCacheStats(storePath: string): BlobCacheStats {
  return {
    storePath,
    underlyingFiles: new Set(),
    partialHits: 0,
    wholeHits: 0,
    total: 0,
    entriesCount: 0,
    prefetchDataAmount: 0,
    prefetchRequestsCount: 0,
    prefetchWorkers: 0,
    prefetchUnmergedChunks: 0,
    prefetchCumulativeTimeMillis: 0,
    prefetchBeginTimeSecs: 0,
    prefetchBeginTimeMillis: 0,
    prefetchEndTimeSecs: 0,
    prefetchEndTimeMillis: 0,
    bufferedBackendSize: 0,
    dataAllReady: false,
  };
}

/** Account one on-demand request of `chunks` chunks with `hits` served by the cache. */
export function noteRequest(s: BlobCacheStats, chunks: number, hits: number): void {
  s.total++;
  if (hits > 0 && hits >= chunks) s.wholeHits++;
  else if (hits > 0) s.partialHits++;
}
