import { FormatError, NydusError } from '../../errors/errors.js';
import { Limits } from '../flags.js';
import { need, putU16, putU32 } from './bytes.js';

/**
 * Chunk-based regular files (rafs-format.md 3.12). The inode's `i_u` is the chunk format word
 * `0x20 (INDEXES) | (chunkbits - blkszbits)`; the index array starts at
 * `align8(inode_offset + inode_size + xattr_size)` and holds one 8-byte entry per chunk
 * (`ceil(i_size / fs chunk_size)` of them, whatever chunkbits says):
 *
 * | off | type | content                                                              |
 * |-----|------|----------------------------------------------------------------------|
 * | 0   | u16  | bits 0-15 of the ci index (chunk index within its blob)              |
 * | 2   | u16  | low byte: blob index + 1 (EROFS device id); high byte: ci bits 16-23 |
 * | 4   | u32  | block address = chunk uncompressed_offset / block size               |
 */

export const CHUNK_INDEX_SIZE = 8;
export const CHUNK_FORMAT_INDEXES = 0x20;
export const CHUNK_FORMAT_BLKBITS_MASK = 0x1f;
const CHUNK_FORMAT_KNOWN = CHUNK_FORMAT_INDEXES | CHUNK_FORMAT_BLKBITS_MASK;

/** One raw index entry. */
export interface ChunkRef {
  readonly blobIndex: number;
  /** Chunk index within the blob (24 bits). */
  readonly ciIndex: number;
  readonly blkaddr: number;
}

export function decodeChunkIndex(buf: Buffer, off: number): ChunkRef {
  need(buf, off, CHUNK_INDEX_SIZE, 'chunk index entry');
  const lo = buf.readUInt16LE(off);
  const hi = buf.readUInt16LE(off + 2);
  const deviceId = hi & 0xff;
  if (deviceId === 0)
    throw new FormatError('Chunk index entry has device id 0 (the bootstrap itself)', off + 2);
  return { blobIndex: deviceId - 1, ciIndex: ((hi >>> 8) << 16) | lo, blkaddr: buf.readUInt32LE(off + 4) };
}

export function encodeChunkIndex(ref: ChunkRef, buf: Buffer, off: number): void {
  if (!Number.isInteger(ref.blobIndex) || ref.blobIndex < 0 || ref.blobIndex >= Limits.MAX_BLOBS) {
    throw new NydusError(
      'ERR_INVALID_ARG',
      `Cannot encode chunk index: blob index ${ref.blobIndex} out of range`,
    );
  }
  if (!Number.isInteger(ref.ciIndex) || ref.ciIndex < 0 || ref.ciIndex >= Limits.MAX_CHUNKS_PER_BLOB) {
    throw new NydusError(
      'ERR_INVALID_ARG',
      `Cannot encode chunk index: ci index ${ref.ciIndex} out of range`,
    );
  }
  putU16(buf, off, ref.ciIndex & 0xffff, 'chunk index ci bits');
  putU16(buf, off + 2, ((ref.ciIndex >>> 16) << 8) | (ref.blobIndex + 1), 'chunk index device id');
  putU32(buf, off + 4, ref.blkaddr, 'chunk index blkaddr');
}

/** The i_u of a chunk-based file whose inode chunk size is `2^chunkBits`. */
export function chunkFormat(chunkBits: number, blkszbits = 12): number {
  const rel = chunkBits - blkszbits;
  if (!Number.isInteger(rel) || rel < 0 || rel > CHUNK_FORMAT_BLKBITS_MASK) {
    throw new NydusError('ERR_INVALID_ARG', `Cannot encode chunk format for chunkbits ${chunkBits}`);
  }
  return CHUNK_FORMAT_INDEXES | rel;
}

/** chunkbits of a chunk format word; rejects unknown bits and the non-indexed block-map format. */
export function decodeChunkFormat(iu: number, blkszbits = 12): number {
  if ((iu & ~CHUNK_FORMAT_KNOWN) !== 0) {
    throw new FormatError(`Chunk format 0x${(iu >>> 0).toString(16)} has unknown bits`);
  }
  if ((iu & CHUNK_FORMAT_INDEXES) === 0) {
    throw new NydusError(
      'ERR_UNSUPPORTED',
      `Chunk format 0x${iu.toString(16)} uses 4-byte block maps, not chunk indexes`,
    );
  }
  return blkszbits + (iu & CHUNK_FORMAT_BLKBITS_MASK);
}

/** Bytes of the index array for `chunkCount` chunks. */
export function chunkIndexSize(chunkCount: number): number {
  return chunkCount * CHUNK_INDEX_SIZE;
}
