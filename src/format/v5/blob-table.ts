import { FormatError } from '../../errors/errors.js';
import { BLOB_FEATURES_INCOMPAT_UNKNOWN, BlobFeature } from '../flags.js';
import { align, readU64 } from '../../util/cursor.js';
import { V5_EXT_BLOB_ENTRY_SIZE } from './superblock.js';

/**
 * RAFS v5 blob table and extended blob table (rafs-format.md 2.5).
 *
 * Blob table: entries back to back, one 0x00 byte between entries (none after the last), then
 * zero padding to a multiple of 8. `blob_table_size` in the superblock is the padded size.
 *
 * | off | type      | field                               |
 * |-----|-----------|-------------------------------------|
 * | 0   | u32       | readahead_offset                    |
 * | 4   | u32       | readahead_size                      |
 * | 8   | id bytes  | blob id, UTF-8, no length, no NUL   |
 *
 * Extended blob table: B entries of 64 bytes; entry i extends blob i.
 *
 * | off | type     | field             |
 * |-----|----------|-------------------|
 * | 0   | u32      | chunk_count       |
 * | 4   | u32      | features          |
 * | 8   | u64      | uncompressed_size |
 * | 16  | u64      | compressed_size   |
 * | 24  | 40 bytes | reserved, zero    |
 */
export interface V5BlobEntry {
  readonly readaheadOffset: number;
  readonly readaheadSize: number;
  readonly blobId: string;
}

export interface V5ExtBlobEntry {
  readonly chunkCount: number;
  readonly features: number;
  readonly uncompressedSize: number;
  readonly compressedSize: number;
}

/** Fixed part of a blob table entry, before the id. */
const BLOB_ENTRY_HEADER = 8;

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Decode the blob table occupying `[off, off + size)` of `buf`. An entry is read while at least
 * 9 bytes (header plus one id byte) remain; the id runs to the next NUL or the end of the table.
 */
export function decodeV5BlobTable(buf: Buffer, off: number, size: number): V5BlobEntry[] {
  if (off < 0 || size < 0 || off + size > buf.length) {
    throw new FormatError(`Blob table [${off}, ${off + size}) is outside the bootstrap`, off);
  }
  const end = off + size;
  const entries: V5BlobEntry[] = [];
  let pos = off;
  while (end - pos > BLOB_ENTRY_HEADER) {
    const idStart = pos + BLOB_ENTRY_HEADER;
    const nul = buf.subarray(idStart, end).indexOf(0);
    const idEnd = nul < 0 ? end : idStart + nul;
    if (idEnd === idStart) {
      throw new FormatError(`Blob table entry ${entries.length}: empty blob id`, idStart);
    }
    let blobId: string;
    try {
      blobId = utf8.decode(buf.subarray(idStart, idEnd));
    } catch {
      throw new FormatError(`Blob table entry ${entries.length}: blob id is not valid UTF-8`, idStart);
    }
    entries.push({
      readaheadOffset: buf.readUInt32LE(pos),
      readaheadSize: buf.readUInt32LE(pos + 4),
      blobId,
    });
    // Skip the separator (or the first padding byte after the last entry).
    pos = idEnd + 1;
  }
  return entries;
}

/** Unpadded size of the encoded entries: headers, ids and the separators between them. */
function blobTablePayloadSize(ids: readonly Buffer[]): number {
  if (ids.length === 0) return 0;
  return ids.reduce((n, id) => n + BLOB_ENTRY_HEADER + id.length, 0) + ids.length - 1;
}

function blobIdBytes(entries: readonly V5BlobEntry[]): Buffer[] {
  return entries.map((e, i) => {
    const id = Buffer.from(e.blobId, 'utf8');
    if (id.length === 0 || id.includes(0)) {
      throw new FormatError(`Blob table entry ${i}: blob id must be non-empty and free of NUL bytes`);
    }
    return id;
  });
}

/** `blob_table_size` for these entries: the padded size of the encoded table. */
export function v5BlobTableSize(entries: readonly V5BlobEntry[]): number {
  return align(blobTablePayloadSize(blobIdBytes(entries)), 8);
}

/** Encode the blob table including its zero padding (length = `v5BlobTableSize(entries)`). */
export function encodeV5BlobTable(entries: readonly V5BlobEntry[]): Buffer {
  const ids = blobIdBytes(entries);
  const buf = Buffer.alloc(align(blobTablePayloadSize(ids), 8));
  let pos = 0;
  ids.forEach((id, i) => {
    if (i > 0) pos += 1; // separator, already zero
    const e = entries[i]!;
    buf.writeUInt32LE(e.readaheadOffset, pos);
    buf.writeUInt32LE(e.readaheadSize, pos + 4);
    id.copy(buf, pos + BLOB_ENTRY_HEADER);
    pos += BLOB_ENTRY_HEADER + id.length;
  });
  return buf;
}

/**
 * Decode `count` extended blob table entries at `off`. Features with unknown incompatible bits,
 * or with the in-memory-only `_V5_NO_EXT_BLOB_TABLE` bit, are rejected.
 */
export function decodeV5ExtBlobTable(buf: Buffer, off: number, count: number): V5ExtBlobEntry[] {
  if (off < 0 || count < 0 || off + count * V5_EXT_BLOB_ENTRY_SIZE > buf.length) {
    throw new FormatError(`Extended blob table of ${count} entries at ${off} is outside the bootstrap`, off);
  }
  const entries: V5ExtBlobEntry[] = [];
  for (let i = 0; i < count; i++) {
    const at = off + i * V5_EXT_BLOB_ENTRY_SIZE;
    const features = buf.readUInt32LE(at + 4);
    if (
      (features & BLOB_FEATURES_INCOMPAT_UNKNOWN) !== 0 ||
      (features & BlobFeature.V5_NO_EXT_BLOB_TABLE) !== 0
    ) {
      throw new FormatError(
        `Extended blob table entry ${i}: unsupported features 0x${features.toString(16)}`,
        at + 4,
      );
    }
    entries.push({
      chunkCount: buf.readUInt32LE(at),
      features,
      uncompressedSize: readU64(buf, at + 8, `extended blob ${i} uncompressed_size`),
      compressedSize: readU64(buf, at + 16, `extended blob ${i} compressed_size`),
    });
  }
  return entries;
}

/** Encode extended blob table entries (64 bytes each, reserved bytes zero). */
export function encodeV5ExtBlobTable(entries: readonly V5ExtBlobEntry[]): Buffer {
  const buf = Buffer.alloc(entries.length * V5_EXT_BLOB_ENTRY_SIZE);
  entries.forEach((e, i) => {
    const at = i * V5_EXT_BLOB_ENTRY_SIZE;
    buf.writeUInt32LE(e.chunkCount, at);
    buf.writeUInt32LE(e.features >>> 0, at + 4);
    buf.writeBigUInt64LE(BigInt(e.uncompressedSize), at + 8);
    buf.writeBigUInt64LE(BigInt(e.compressedSize), at + 16);
  });
  return buf;
}
