import { NydusError } from '../../src/errors/errors.js';
import type { BlobInfo } from '../../src/format/model.js';
import type { BlobReader, BlobSource } from '../../src/storage/blob-source.js';

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

/** A blob table entry of blob `index` with id `blobId`: zero and empty fields but for `over`. */
export function blobInfo(index: number, blobId: string, over: Partial<BlobInfo> = {}): BlobInfo {
  return {
    index,
    blobId,
    chunkSize: 0x100000,
    chunkCount: 0,
    compressor: 'zstd',
    digester: 'blake3',
    features: 0,
    compressedSize: 0,
    uncompressedSize: 0,
    readaheadOffset: 0,
    readaheadSize: 0,
    ciCompressor: 'none',
    ciOffset: 0,
    ciCompressedSize: 0,
    ciUncompressedSize: 0,
    tocSize: 0,
    tocDigest: Buffer.alloc(32),
    metaDigest: Buffer.alloc(32),
    metaSize: 0,
    cipher: 0,
    deviceBlocks: 0,
    mappedBlkaddr: 0,
    ...over,
  };
}
