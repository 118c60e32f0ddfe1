import { FormatError, NydusError } from '../errors/errors.js';
import { crc32cOf, digest } from '../codec/digest.js';
import { ChunkFlag, Limits } from '../format/flags.js';
import type { BlobInfo, ChunkInfo } from '../format/model.js';

/** Digest checking of a read: none, only chunks with a recorded digest, or every chunk. */
export type Check = 0 | 1 | 2;

/** Largest stored size accepted for one chunk: compressed data can exceed raw size slightly. */
const MAX_STORED_CHUNK = Limits.MAX_CHUNK_SIZE + (Limits.MAX_CHUNK_SIZE >> 4) + 1024;

export function hasDigest(c: ChunkInfo): boolean {
  return c.id.some((x) => x !== 0);
}

/**
 * Refuse a chunk record the device cannot serve: sizes out of bounds, a range past the end of
 * its blob (`blobSize` bytes), inconsistent sizes, encrypted or batch chunks.
 */
export function checkChunkRecord(c: ChunkInfo, blob: BlobInfo | undefined, blobSize: number): void {
  const where = `Chunk ${c.index} of blob ${c.blobIndex}`;
  if (c.uncompressedSize > Limits.MAX_CHUNK_SIZE)
    throw new FormatError(`${where}: uncompressed size ${c.uncompressedSize} is too large`);
  if (c.compressedSize > MAX_STORED_CHUNK)
    throw new FormatError(`${where}: compressed size ${c.compressedSize} is too large`);
  if (c.compressedOffset + c.compressedSize > blobSize) {
    throw new FormatError(
      `${where} (${c.compressedSize} bytes at ${c.compressedOffset}) points past the end of blob ${blob?.blobId ?? '?'} (${blobSize} bytes)`,
    );
  }
  if ((c.flags & ChunkFlag.COMPRESSED) === 0 && c.compressedSize !== c.uncompressedSize) {
    throw new FormatError(
      `${where}: stored uncompressed but sizes differ (${c.compressedSize} vs ${c.uncompressedSize})`,
    );
  }
  if (c.flags & (ChunkFlag.ENCRYPTED | ChunkFlag.BATCH)) {
    throw new NydusError('ERR_UNSUPPORTED', `${where}: encrypted and batch chunks are not supported yet`);
  }
}

/** Why `data` is not chunk `c` of `blob` (digest, then CRC-32C when recorded); undefined when it is. */
export function chunkMismatch(blob: BlobInfo, c: ChunkInfo, data: Buffer): string | undefined {
  const h = digest(blob.digester, data);
  if (!h.equals(c.id)) return `has digest ${h.toString('hex')}, expected ${c.id.toString('hex')}`;
  if (c.flags & ChunkFlag.HAS_CRC32 && crc32cOf(data) !== c.crc32) return 'fails its CRC-32C check';
  return undefined;
}

/** Throw ERR_DIGEST unless `data` passes the check `check` asks of chunk `c` of `blob`. */
export function verifyChunk(blob: BlobInfo, c: ChunkInfo, data: Buffer, check: Check): void {
  if (check === 0) return;
  if (!hasDigest(c)) {
    if (check === 1) return;
    throw new NydusError(
      'ERR_DIGEST',
      `Chunk ${c.index} of blob ${blob.blobId} has no recorded digest to verify against`,
    );
  }
  const bad = chunkMismatch(blob, c, data);
  if (bad !== undefined) throw new NydusError('ERR_DIGEST', `Chunk ${c.index} of blob ${blob.blobId} ${bad}`);
}
