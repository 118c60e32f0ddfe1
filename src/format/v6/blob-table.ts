import {
  compressorFromEnum,
  compressorToEnum,
  digesterFromEnum,
  digesterToEnum,
  type Compressor,
  type Digester,
} from '../../codec/algorithms.js';
import { FormatError } from '../../errors/errors.js';
import { readU64 } from '../../util/cursor.js';
import { BLOB_FEATURES_INCOMPAT_UNKNOWN, BlobFeature, Limits } from '../flags.js';
import type { BlobInfo } from '../model.js';
import { fieldString, need, putBytes, putString, putU32, putU64, putZeros } from './bytes.js';
import type { DeviceSlot } from './device-table.js';
import { BLOB_ENTRY_SIZE } from './superblock.js';

/**
 * RAFS v6 blob table entry, 256 bytes (rafs-format.md 3.5); B entries at blob_table_offset.
 *
 * | off | type     | field                                                   |
 * |-----|----------|---------------------------------------------------------|
 * | 0   | 64 bytes | blob_id (ASCII, NUL padded)                             |
 * | 64  | u32      | blob_index (must equal the entry's position)            |
 * | 68  | u32      | chunk_size (must equal the ext superblock chunk_size)   |
 * | 72  | u32      | chunk_count (<= 2^24)                                   |
 * | 76  | u32      | compression_algo (0 none, 1 lz4_block, 2 gzip, 3 zstd)  |
 * | 80  | u32      | digest_algo (0 blake3, 1 sha256)                        |
 * | 84  | u32      | features (BlobFeature)                                  |
 * | 88  | u64      | compressed_size                                         |
 * | 96  | u64      | uncompressed_size                                       |
 * | 104 | u32      | blob_toc_size                                           |
 * | 108 | u32      | ci_compressor                                           |
 * | 112 | u64      | ci_offset                                               |
 * | 120 | u64      | ci_compressed_size                                      |
 * | 128 | u64      | ci_uncompressed_size                                    |
 * | 136 | 32 bytes | blob_toc_digest                                         |
 * | 168 | 32 bytes | blob_meta_digest (AES mode: the key)                    |
 * | 200 | u64      | blob_meta_size (AES mode: IV bytes 0-7)                 |
 * | 208 | 8 bytes  | cipher_iv (AES mode: IV bytes 8-15)                     |
 * | 216 | u32      | cipher_algo (0 none, 1 aes-128-xts, 2 aes-256-xts, 3 aes-256-gcm) |
 * | 220 | 36 bytes | reserved                                                |
 */

export const CI_ENTRY_V1_SIZE = 16;
export const CI_ENTRY_V2_SIZE = 24;
export const MAX_CIPHER = 3;

export interface BlobTableEntry {
  readonly blobId: string;
  readonly blobIndex: number;
  readonly chunkSize: number;
  readonly chunkCount: number;
  readonly compressor: Compressor;
  readonly digester: Digester;
  readonly features: number;
  readonly compressedSize: number;
  readonly uncompressedSize: number;
  readonly tocSize: number;
  readonly ciCompressor: Compressor;
  readonly ciOffset: number;
  readonly ciCompressedSize: number;
  readonly ciUncompressedSize: number;
  /** 32 bytes. */
  readonly tocDigest: Buffer;
  /** 32 bytes; the AES key in encrypted images. */
  readonly metaDigest: Buffer;
  /** Raw u64: the separate meta blob size, or IV bytes 0-7 in encrypted images. */
  readonly metaSize: bigint;
  /** 8 bytes: IV bytes 8-15 in encrypted images. */
  readonly cipherIv: Buffer;
  readonly cipher: number;
}

function algo<T>(decode: (v: number) => T, v: number, what: string, off: number): T {
  try {
    return decode(v);
  } catch (e) {
    throw new FormatError(`Unknown ${what} ${v}`, off, { cause: e });
  }
}

/** Decode the entry at `off`; checks length and the algorithm enums, nothing else. */
export function decodeBlobEntry(buf: Buffer, off: number): BlobTableEntry {
  need(buf, off, BLOB_ENTRY_SIZE, 'blob table entry');
  return {
    blobId: fieldString(buf, off, 64),
    blobIndex: buf.readUInt32LE(off + 64),
    chunkSize: buf.readUInt32LE(off + 68),
    chunkCount: buf.readUInt32LE(off + 72),
    compressor: algo(compressorFromEnum, buf.readUInt32LE(off + 76), 'blob compression_algo', off + 76),
    digester: algo(digesterFromEnum, buf.readUInt32LE(off + 80), 'blob digest_algo', off + 80),
    features: buf.readUInt32LE(off + 84),
    compressedSize: readU64(buf, off + 88, 'blob compressed_size'),
    uncompressedSize: readU64(buf, off + 96, 'blob uncompressed_size'),
    tocSize: buf.readUInt32LE(off + 104),
    ciCompressor: algo(compressorFromEnum, buf.readUInt32LE(off + 108), 'blob ci_compressor', off + 108),
    ciOffset: readU64(buf, off + 112, 'blob ci_offset'),
    ciCompressedSize: readU64(buf, off + 120, 'blob ci_compressed_size'),
    ciUncompressedSize: readU64(buf, off + 128, 'blob ci_uncompressed_size'),
    tocDigest: Buffer.from(buf.subarray(off + 136, off + 168)),
    metaDigest: Buffer.from(buf.subarray(off + 168, off + 200)),
    metaSize: buf.readBigUInt64LE(off + 200),
    cipherIv: Buffer.from(buf.subarray(off + 208, off + 216)),
    cipher: buf.readUInt32LE(off + 216),
  };
}

export function encodeBlobEntry(e: BlobTableEntry, buf: Buffer, off: number): void {
  putString(buf, off, e.blobId, 64, 'blob id');
  putU32(buf, off + 64, e.blobIndex, 'blob_index');
  putU32(buf, off + 68, e.chunkSize, 'blob chunk_size');
  putU32(buf, off + 72, e.chunkCount, 'blob chunk_count');
  putU32(buf, off + 76, compressorToEnum(e.compressor), 'blob compression_algo');
  putU32(buf, off + 80, digesterToEnum(e.digester), 'blob digest_algo');
  putU32(buf, off + 84, e.features >>> 0, 'blob features');
  putU64(buf, off + 88, e.compressedSize, 'blob compressed_size');
  putU64(buf, off + 96, e.uncompressedSize, 'blob uncompressed_size');
  putU32(buf, off + 104, e.tocSize, 'blob_toc_size');
  putU32(buf, off + 108, compressorToEnum(e.ciCompressor), 'blob ci_compressor');
  putU64(buf, off + 112, e.ciOffset, 'blob ci_offset');
  putU64(buf, off + 120, e.ciCompressedSize, 'blob ci_compressed_size');
  putU64(buf, off + 128, e.ciUncompressedSize, 'blob ci_uncompressed_size');
  putBytes(buf, off + 136, e.tocDigest, 32, 'blob_toc_digest');
  putBytes(buf, off + 168, e.metaDigest, 32, 'blob_meta_digest');
  putU64(buf, off + 200, e.metaSize, 'blob_meta_size');
  putBytes(buf, off + 208, e.cipherIv, 8, 'blob cipher_iv');
  putU32(buf, off + 216, e.cipher, 'blob cipher_algo');
  putZeros(buf, off + 220, 36, 'blob entry reserved');
}

/**
 * Reader checks of rafs-format.md 1.5 and 3.5 for the entry at table position `position`
 * (absolute offset `off`), in a filesystem whose chunk size is `chunkSize`.
 */
export function checkBlobEntry(e: BlobTableEntry, position: number, chunkSize: number, off: number): void {
  const fail = (msg: string, rel: number): never => {
    throw new FormatError(`Blob table entry ${position}: ${msg}`, off + rel);
  };
  if (e.blobIndex !== position) fail(`blob_index ${e.blobIndex} does not match its position`, 64);
  if (e.chunkSize !== chunkSize) {
    fail(
      `chunk_size 0x${e.chunkSize.toString(16)} differs from the filesystem's 0x${chunkSize.toString(16)}`,
      68,
    );
  }
  if (e.chunkCount > Limits.MAX_CHUNKS_PER_BLOB) fail(`chunk_count ${e.chunkCount} exceeds 2^24`, 72);
  if ((e.features & BLOB_FEATURES_INCOMPAT_UNKNOWN) !== 0) {
    fail(`features 0x${hex(e.features)} contain unknown incompatible bits`, 84);
  }
  if ((e.features & BlobFeature.V5_NO_EXT_BLOB_TABLE) !== 0) {
    fail(`features 0x${hex(e.features)} contain the in-memory-only bit 0x80000000`, 84);
  }
  const tarfs = (e.features & BlobFeature.TARFS) !== 0;
  if (!tarfs && (e.features & BlobFeature.ALIGNED) === 0) {
    fail(`features 0x${hex(e.features)} lack ALIGNED, required for non-tarfs blobs`, 84);
  }
  if (e.cipher > MAX_CIPHER) fail(`unknown cipher_algo ${e.cipher}`, 216);
  if (e.cipher === 0 && e.metaSize > BigInt(Number.MAX_SAFE_INTEGER))
    fail(`blob_meta_size ${e.metaSize} is too large`, 200);
  if (tarfs) return; // tarfs blobs carry no blob meta
  if (e.ciCompressedSize > e.ciUncompressedSize) {
    fail(
      `ci_compressed_size ${e.ciCompressedSize} exceeds ci_uncompressed_size ${e.ciUncompressedSize}`,
      120,
    );
  }
  const v2 = (e.features & BlobFeature.CHUNK_INFO_V2) !== 0;
  const needsV2 = (e.features & (BlobFeature.BATCH | BlobFeature.ZRAN | BlobFeature.ENCRYPTED)) !== 0;
  if (needsV2) {
    if (!v2) fail(`features 0x${hex(e.features)} need CHUNK_INFO_V2 for batch, zran or encrypted blobs`, 84);
    if (e.ciUncompressedSize < CI_ENTRY_V2_SIZE * e.chunkCount) {
      fail(`ci_uncompressed_size ${e.ciUncompressedSize} is less than 24 * ${e.chunkCount} chunks`, 128);
    }
  } else {
    const entry = v2 ? CI_ENTRY_V2_SIZE : CI_ENTRY_V1_SIZE;
    if (e.ciUncompressedSize !== entry * e.chunkCount) {
      fail(`ci_uncompressed_size ${e.ciUncompressedSize} is not ${entry} * ${e.chunkCount} chunks`, 128);
    }
  }
}

/** The version-independent view of a blob-table entry and its device slot. */
export function blobInfoOf(e: BlobTableEntry, position: number, slot: DeviceSlot): BlobInfo {
  return {
    index: position,
    blobId: e.blobId,
    chunkSize: e.chunkSize,
    chunkCount: e.chunkCount,
    compressor: e.compressor,
    digester: e.digester,
    features: e.features,
    compressedSize: e.compressedSize,
    uncompressedSize: e.uncompressedSize,
    readaheadOffset: 0,
    readaheadSize: 0,
    ciCompressor: e.ciCompressor,
    ciOffset: e.ciOffset,
    ciCompressedSize: e.ciCompressedSize,
    ciUncompressedSize: e.ciUncompressedSize,
    tocSize: e.tocSize,
    tocDigest: e.tocDigest,
    metaDigest: e.metaDigest,
    // In encrypted images the field holds IV bytes; the key and IV stay in BlobTableEntry.
    metaSize: e.cipher === 0 ? Number(e.metaSize) : 0,
    cipher: e.cipher,
    deviceBlocks: slot.blocks,
    mappedBlkaddr: slot.mappedBlkaddr,
  };
}

function hex(v: number): string {
  return (v >>> 0).toString(16);
}
