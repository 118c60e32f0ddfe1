import type { ChunkCache } from '../storage/chunk-cache.js';
import { newBlobCacheStats, noteRequest, type BlobCacheStats } from './stats.js';

/**
 * Upstream `dummycache`: stores nothing. Every read goes to the backend (still single-flight in
 * the image); `validate` still verifies the chunks fetched. Prefetch has nothing to fill.
 */
export class DummyCache implements ChunkCache {
  readonly type = 'dummycache';
  readonly storesData = false;
  readonly validate: boolean;
  readonly stats: BlobCacheStats = newBlobCacheStats('');
  /** Reads issued to the backend by images using this cache, and their bytes. */
  backendReads = 0;
  backendBytes = 0;
  /** Always 0: nothing is cached, so nothing is found corrupt. */
  readonly corruptChunks = 0;

  constructor(validate: boolean) {
    this.validate = validate;
  }

  openBlob(): Promise<undefined> {
    return Promise.resolve(undefined);
  }

  noteRequest(chunks: number, hits: number): void {
    noteRequest(this.stats, chunks, hits);
  }

  noteBackendRead(bytes: number): void {
    this.backendReads++;
    this.backendBytes += bytes;
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
