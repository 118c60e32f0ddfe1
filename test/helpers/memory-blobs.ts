import { NydusError } from '../../src/errors/errors.js';
import type { BlobInfo } from '../../src/format/model.js';
import type { BlobReader, BlobSource } from '../../src/rafs/blob-source.js';

/** Blobs held in memory, by id: a unit-test stand-in for a storage backend. */
export class MemoryBlobSource implements BlobSource {
  readonly blobs: Map<string, Buffer>;
  reads = 0;

  constructor(blobs: Iterable<[string, Buffer]>) {
    this.blobs = new Map(blobs);
  }

  open(blob: BlobInfo): Promise<BlobReader> {
    const data = this.blobs.get(blob.blobId);
    if (data === undefined)
      return Promise.reject(new NydusError('ERR_NOT_FOUND', `Blob ${blob.blobId} not found`));
    const read = (offset: number, length: number): Promise<Buffer> => {
      this.reads++;
      if (offset < 0 || length < 0 || offset + length > data.length) {
        return Promise.reject(new NydusError('ERR_FORMAT', `Read past the end of blob ${blob.blobId}`));
      }
      return Promise.resolve(data.subarray(offset, offset + length));
    };
    return Promise.resolve({ size: data.length, read, close: () => Promise.resolve() });
  }
}
