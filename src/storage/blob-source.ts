import type { BlobInfo } from '../format/model.js';

/** How a read is made: a prefetch read gets the prefetch retry budget and proxy priority. */
export interface ReadOptions {
  prefetch?: boolean | undefined;
  signal?: AbortSignal | undefined;
}

/**
 * Where chunk bytes come from. The blob device (blob-device.ts) asks for byte ranges of a blob;
 * a backend (localfs, localdisk, registry, s3, oss, http-proxy) answers them and does nothing else:
 * merging, priorities, single flight, caching and verification are the device's. Ranges are in
 * the blob file's (compressed) address space.
 */
export interface BlobReader {
  /** Size of the blob file in bytes. */
  readonly size: number;
  /**
   * Exactly `length` bytes at `offset`; rejects with ERR_IO / ERR_FORMAT when the blob is
   * shorter. With `into` (at least `length` bytes) the bytes land at its start and the result is
   * that prefix; a reader that cannot do that may answer with a buffer of its own.
   */
  read(offset: number, length: number, into?: Buffer, opts?: ReadOptions): Promise<Buffer>;
  /**
   * The same bytes at once when they can be had without waiting (a local file's pages in the
   * page cache); undefined otherwise, or when the range is not inside the blob: `read` then
   * answers (and words any error). Optional: a reader without it is always read with `read`.
   */
  readNow?(offset: number, length: number, into?: Buffer): Buffer | undefined;
  close(): Promise<void>;
}

export interface BlobSource {
  /** Open the data blob described by `blob`; rejects with ERR_NOT_FOUND when it is missing. */
  open(blob: BlobInfo): Promise<BlobReader>;
}
