import { createHash, type Hash } from 'node:crypto';
import { NydusError } from '../../errors/errors.js';
import { readBlobTrailerFromBuffer } from './blob-layout.js';
import { SectionName } from './toc.js';

/**
 * Blob ids (rafs-format.md 4.7). The builder hashes with SHA-256 every byte it writes through
 * its write path (chunk data, tar headers, ci array and header, inline bootstrap, ToC) except
 * the chunk digest array (`blob.digest` body); the hex digest is the blob id. So for plain
 * blobs the id is sha256(file), for blob-toc blobs sha256(file without the digest array).
 */

/** Incremental blob-id hash for a blob writer: feed it what goes through the write path. */
export class BlobIdHasher {
  #hash: Hash = createHash('sha256');
  #bytes = 0;
  #done = false;

  /** Hash bytes written through the write path. */
  update(data: Uint8Array): this {
    if (this.#done) throw new NydusError('ERR_INVALID_ARG', 'Blob id hasher already finished');
    this.#hash.update(data);
    this.#bytes += data.length;
    return this;
  }

  /** Number of bytes hashed so far. */
  get bytesHashed(): number {
    return this.#bytes;
  }

  /**
   * sha256 of everything hashed so far, without finishing: the `image.blob` ToC digest (the
   * state after the chunk data and its tar header) and the ids 2022-23 builders put into
   * inline bootstraps are such intermediate states.
   */
  peek(): Buffer {
    if (this.#done) throw new NydusError('ERR_INVALID_ARG', 'Blob id hasher already finished');
    return this.#hash.copy().digest();
  }

  /** Finish and return the 32-byte digest. */
  digest(): Buffer {
    if (this.#done) throw new NydusError('ERR_INVALID_ARG', 'Blob id hasher already finished');
    this.#done = true;
    return this.#hash.digest();
  }

  /** Finish and return the blob id (lower-case hex). */
  blobId(): string {
    return this.digest().toString('hex');
  }
}

/**
 * Recompute the id of a blob held in memory: sha256 of the file with the `blob.digest` section
 * data left out (plain blobs: the whole file). `sections` defaults to the blob's own trailers.
 */
export function blobIdOfFile(
  bytes: Buffer,
  sections?: ReadonlyMap<string, { readonly offset: number; readonly size: number }>,
): string {
  const secs = sections ?? readBlobTrailerFromBuffer(bytes)?.sections;
  const digests = secs?.get(SectionName.BLOB_DIGEST);
  const h = new BlobIdHasher();
  if (digests === undefined) return h.update(bytes).blobId();
  if (digests.offset < 0 || digests.size < 0 || digests.offset + digests.size > bytes.length) {
    throw new NydusError(
      'ERR_INVALID_ARG',
      `Section blob.digest [${digests.offset}, +${digests.size}) is outside the blob`,
    );
  }
  h.update(bytes.subarray(0, digests.offset));
  h.update(bytes.subarray(digests.offset + digests.size));
  return h.blobId();
}
