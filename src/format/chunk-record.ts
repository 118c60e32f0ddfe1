import { FormatError } from '../errors/errors.js';
import { readU64, writeU64 } from '../util/cursor.js';
import type { ChunkInfo } from './model.js';

/**
 * The 80-byte chunk record shared by v5 inodes and the v6 chunk table (rafs-format.md 2.7).
 *
 * | off | type     | field              |
 * |-----|----------|--------------------|
 * | 0   | 32 bytes | chunk id           |
 * | 32  | u32      | blob_index         |
 * | 36  | u32      | flags              |
 * | 40  | u32      | compressed_size    |
 * | 44  | u32      | uncompressed_size  |
 * | 48  | u64      | compressed_offset  |
 * | 56  | u64      | uncompressed_offset|
 * | 64  | u64      | file_offset        |
 * | 72  | u32      | index              |
 * | 76  | u32      | crc32              |
 */
export const CHUNK_RECORD_SIZE = 80;

/** Decode the record at `off` of `buf`; `base` is the absolute offset of `buf[0]` for errors. */
export function decodeChunkRecord(buf: Buffer, off: number, base = 0): ChunkInfo {
  if (off < 0 || off + CHUNK_RECORD_SIZE > buf.length) {
    throw new FormatError('Truncated chunk record', base + off);
  }
  return {
    id: buf.subarray(off, off + 32),
    blobIndex: buf.readUInt32LE(off + 32),
    flags: buf.readUInt32LE(off + 36),
    compressedSize: buf.readUInt32LE(off + 40),
    uncompressedSize: buf.readUInt32LE(off + 44),
    compressedOffset: readU64(buf, off + 48, 'chunk compressed_offset', base),
    uncompressedOffset: readU64(buf, off + 56, 'chunk uncompressed_offset', base),
    fileOffset: readU64(buf, off + 64, 'chunk file_offset', base),
    index: buf.readUInt32LE(off + 72),
    crc32: buf.readUInt32LE(off + 76),
  };
}

/** An offset of a record to encode: a non-negative safe integer (what BigInt() also refused). */
function u64Field(v: number, what: string): number {
  if (!Number.isSafeInteger(v) || v < 0)
    throw new FormatError(`Chunk ${what} must be a non-negative safe integer, got ${v}`);
  return v;
}

export function encodeChunkRecord(c: ChunkInfo, buf: Buffer, off: number): void {
  if (c.id.length !== 32) throw new FormatError(`Chunk id must be 32 bytes, got ${c.id.length}`);
  c.id.copy(buf, off);
  buf.writeUInt32LE(c.blobIndex, off + 32);
  buf.writeUInt32LE(c.flags, off + 36);
  buf.writeUInt32LE(c.compressedSize, off + 40);
  buf.writeUInt32LE(c.uncompressedSize, off + 44);
  writeU64(buf, off + 48, u64Field(c.compressedOffset, 'compressed_offset'));
  writeU64(buf, off + 56, u64Field(c.uncompressedOffset, 'uncompressed_offset'));
  writeU64(buf, off + 64, u64Field(c.fileOffset, 'file_offset'));
  buf.writeUInt32LE(c.index, off + 72);
  buf.writeUInt32LE(c.crc32 >>> 0, off + 76);
}
