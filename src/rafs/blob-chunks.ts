import { NydusError } from '../errors/errors.js';
import { readBlobMeta, readBlobTrailer } from '../format/blob/blob-layout.js';
import type { BlobInfo, ChunkInfo } from '../format/model.js';
import type { BlobReader } from '../storage/blob-source.js';

/**
 * The chunk table a v6 data blob carries itself (blob meta ci entries), with chunk ids from its
 * `blob.digest` section when it has one. Used when a bootstrap's chunk table lacks a chunk.
 * Without a digest section the ids are unknown (all zero) and reads that ask for verification
 * of such chunks fail rather than pass unchecked.
 */
export async function loadBlobChunks(reader: BlobReader, blob: BlobInfo): Promise<ChunkInfo[]> {
  const readAt = (o: number, l: number): Promise<Buffer> => reader.read(o, l);
  const table = await readBlobMeta(readAt, blob, reader.size);
  if (table.chunks.length !== blob.chunkCount) {
    throw new NydusError(
      'ERR_FORMAT',
      `Blob ${blob.blobId}: ci table has ${table.chunks.length} entries, blob table says ${blob.chunkCount}`,
    );
  }
  const trailer = await readBlobTrailer(readAt, reader.size);
  const digests = trailer?.sections.get('blob.digest');
  if (digests === undefined || digests.size !== 32 * blob.chunkCount) return [...table.chunks];
  const ids = await reader.read(digests.offset, digests.size);
  return table.chunks.map((c, i) => ({ ...c, blobIndex: blob.index, id: ids.subarray(i * 32, i * 32 + 32) }));
}
