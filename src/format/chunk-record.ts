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

/** Where each field of a record starts (the table above). */
export const ChunkRecordAt = {
  BLOB_INDEX: 32,
  FLAGS: 36,
  COMPRESSED_SIZE: 40,
  UNCOMPRESSED_SIZE: 44,
  COMPRESSED_OFFSET: 48,
  UNCOMPRESSED_OFFSET: 56,
  FILE_OFFSET: 64,
  INDEX: 72,
  CRC32: 76,
} as const;

/** Refuse a record at `off` that does not fit in `buf` (`base`: the offset of `buf[0]`, for errors). */
export function checkChunkRecordAt(buf: Buffer, off: number, base = 0): void {
  if (off < 0 || off + CHUNK_RECORD_SIZE > buf.length) {
    throw new FormatError('Truncated chunk record', base + off);
  }
}

/** A record's compressed_offset (checked as decodeChunkRecord checks it). */
export function recordCompressedOffset(buf: Buffer, off: number, base = 0): number {
  return readU64(buf, off + ChunkRecordAt.COMPRESSED_OFFSET, 'chunk compressed_offset', base);
}

/** A record's uncompressed_offset (checked as decodeChunkRecord checks it). */
export function recordUncompressedOffset(buf: Buffer, off: number, base = 0): number {
  return readU64(buf, off + ChunkRecordAt.UNCOMPRESSED_OFFSET, 'chunk uncompressed_offset', base);
}

/** A record's file_offset (checked as decodeChunkRecord checks it). */
export function recordFileOffset(buf: Buffer, off: number, base = 0): number {
  return readU64(buf, off + ChunkRecordAt.FILE_OFFSET, 'chunk file_offset', base);
}

/** Decode the record at `off` of `buf`; `base` is the absolute offset of `buf[0]` for errors. */
export function decodeChunkRecord(buf: Buffer, off: number, base = 0): ChunkInfo {
  checkChunkRecordAt(buf, off, base);
  return {
    id: buf.subarray(off, off + 32),
    blobIndex: buf.readUInt32LE(off + ChunkRecordAt.BLOB_INDEX),
    flags: buf.readUInt32LE(off + ChunkRecordAt.FLAGS),
    compressedSize: buf.readUInt32LE(off + ChunkRecordAt.COMPRESSED_SIZE),
    uncompressedSize: buf.readUInt32LE(off + ChunkRecordAt.UNCOMPRESSED_SIZE),
    compressedOffset: recordCompressedOffset(buf, off, base),
    uncompressedOffset: recordUncompressedOffset(buf, off, base),
    fileOffset: recordFileOffset(buf, off, base),
    index: buf.readUInt32LE(off + ChunkRecordAt.INDEX),
    crc32: buf.readUInt32LE(off + ChunkRecordAt.CRC32),
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
