import { compressorFromEnum, compressorToEnum, type Compressor } from '../../codec/algorithms.js';
import { FormatError, NydusError } from '../../errors/errors.js';
import { align, readU64 } from '../../util/cursor.js';
import { BLOB_FEATURES_INCOMPAT_UNKNOWN, BlobFeature, ChunkFlag, Limits } from '../flags.js';
import type { ChunkInfo } from '../model.js';

/**
 * Blob meta, the per-blob compression-context ("ci") table of RAFS v6 (rafs-format.md 4.2).
 * In a data blob it is `ci array (compressed with ci_compressor) ‖ 4096-byte header`; the
 * uncompressed ci data is `ci entries ‖ optional context table ‖ optional dictionaries`.
 *
 * Header (4096 bytes):
 *
 * | off  | size | field                                                   |
 * |------|------|---------------------------------------------------------|
 * | 0    | u32  | magic 0xB10BB10B                                        |
 * | 4    | u32  | features (BlobFeature)                                  |
 * | 8    | u32  | ci_compressor (algorithm enum)                          |
 * | 12   | u32  | ci_entries (= chunk count)                              |
 * | 16   | u64  | ci_offset (absolute in the blob)                        |
 * | 24   | u64  | ci_compressed_size                                      |
 * | 32   | u64  | ci_uncompressed_size                                    |
 * | 40   | u64  | context offset (within the uncompressed ci data)        |
 * | 48   | u64  | context size (context table plus dictionaries)          |
 * | 56   | u32  | context count                                           |
 * | 60   | 4032 | reserved                                                |
 * | 4092 | u32  | magic2 0xB10BB10B                                       |
 *
 * ci entry v1 (16 bytes): u64 uncomp_info, u64 comp_info
 *   comp_info   bits 0-39 compressed_offset, 40-43 bits 20-23 of (csize - 1),
 *               44-63 bits 0-19 of (csize - 1)
 *   uncomp_info bits 0-7 reserved, 8-11 bits 20-23 of (usize - 1),
 *               12-43 uncompressed_offset (4 KiB aligned, stored in place),
 *               44-63 bits 0-19 of (usize - 1)
 *   A v1 chunk is compressed exactly when its two sizes differ.
 *
 * ci entry v2 (24 bytes): u64 uncomp_info, u64 comp_info, u64 data
 *   uncomp_info bits 0-31 uncompressed_offset / 4096, 32-55 usize - 1, 56-63 CiFlag
 *   comp_info   bits 0-39 compressed_offset, 40-63 csize (not minus one)
 *   data        zran: context index << 32 | offset in the context's output;
 *               batch: batch index << 32 | offset in the decompressed batch;
 *               otherwise the CRC-32C in bits 0-31 when HAS_CRC32
 *
 * Context entries (40 bytes each):
 *   zran:  u64 in_offset, u64 out_offset, u64 dict_offset, u32 in_len, u32 out_len,
 *          u32 dict_size, u8 ctx_byte, u8 ctx_bits, 2 reserved. Dictionaries follow the
 *          context array; dict_offset is relative to the start of that dictionary area.
 *   batch: u32 compressed_size, u32 uncompressed_size, 32 reserved.
 */

export const BLOB_META_MAGIC = 0xb10bb10b;
export const BLOB_META_HEADER_SIZE = 4096;
export const CI_V1_ENTRY_SIZE = 16;
export const CI_V2_ENTRY_SIZE = 24;
export const CI_CONTEXT_SIZE = 40;
/** A zran inflate dictionary is a deflate window at most. */
export const MAX_ZRAN_DICT_SIZE = 0x8000;
/**
 * Largest uncompressed ci data a reader accepts: the v2 entries of the largest blob (2^24
 * chunks) plus room for contexts and dictionaries. Bounds the allocation of decompression.
 */
export const MAX_CI_UNCOMPRESSED_SIZE = 0x2000_0000;

/** v2 ci flag byte (bits 56-63 of uncomp_info). */
export const CiFlag = {
  COMPRESSED: 0x01,
  ZRAN: 0x02,
  BATCH: 0x04,
  ENCRYPTED: 0x08,
  HAS_CRC32: 0x10,
} as const;
const CI_FLAGS_KNOWN = 0x1f;

/** Features that change how the ci data is laid out; header and blob table must agree on them. */
export const CI_LAYOUT_FEATURES =
  BlobFeature.CHUNK_INFO_V2 | BlobFeature.ZRAN | BlobFeature.BATCH | BlobFeature.ENCRYPTED;

const TWO_32 = 0x1_0000_0000;
const MAX_CI_COMPRESSED_OFFSET = 2 ** 40 - 1;
/** v1 stores bits 12-43 of the uncompressed offset; v2 stores offset / 4096 in 32 bits. */
const MAX_CI_UNCOMPRESSED_OFFSET = 2 ** 44 - 0x1000;
const MAX_CI_V1_SIZE = 1 << 24;
const MAX_CI_V2_COMPRESSED_SIZE = (1 << 24) - 1;
const CHUNK_ALIGN = 0x1000;

export interface BlobMetaHeader {
  readonly features: number;
  readonly ciCompressor: Compressor;
  readonly ciEntries: number;
  readonly ciOffset: number;
  readonly ciCompressedSize: number;
  readonly ciUncompressedSize: number;
  /** zran/batch context table: offset and size (contexts + dictionaries) in the ci data. */
  readonly contextOffset: number;
  readonly contextSize: number;
  readonly contextCount: number;
}

export interface CiEntry {
  readonly compressedOffset: number;
  readonly compressedSize: number;
  readonly uncompressedOffset: number;
  readonly uncompressedSize: number;
  /** CiFlag bits; for v1 only COMPRESSED, derived from the sizes. */
  readonly flags: number;
  /** v2 `data` word, high and low 32 bits (0 for v1). */
  readonly dataHigh: number;
  readonly dataLow: number;
}

export interface ZranContext {
  readonly inOffset: number;
  readonly outOffset: number;
  /** Offset in the dictionary area that follows the context array. */
  readonly dictOffset: number;
  readonly inLen: number;
  readonly outLen: number;
  readonly dictSize: number;
  readonly ctxByte: number;
  readonly ctxBits: number;
}

export interface BatchContext {
  readonly compressedSize: number;
  readonly uncompressedSize: number;
}

export interface CiTable {
  readonly header: BlobMetaHeader;
  readonly version: 1 | 2;
  readonly entries: readonly CiEntry[];
  /**
   * The same facts as chunk records. `id` is a view into the given digest array, or one shared
   * all-zero 32-byte buffer when no digests were given.
   */
  readonly chunks: readonly ChunkInfo[];
  readonly zranContexts: readonly ZranContext[];
  readonly batchContexts: readonly BatchContext[];
  /** The dictionary area after the zran contexts (empty otherwise). */
  readonly zranDicts: Buffer;
}

function invalid(what: string): never {
  throw new NydusError('ERR_INVALID_ARG', what);
}

function checkRange(v: number, min: number, max: number, what: string): void {
  if (!Number.isSafeInteger(v) || v < min || v > max) invalid(`${what} ${v} out of range ${min}..${max}`);
}

/** Entry size selected by the features word. */
export function ciEntrySize(features: number): number {
  return features & BlobFeature.CHUNK_INFO_V2 ? CI_V2_ENTRY_SIZE : CI_V1_ENTRY_SIZE;
}

// ---------------------------------------------------------------------------------------------
// Header

/** Decode the header at `buf[off, off + 4096)`; `base` is the absolute offset of `buf[0]`. */
export function decodeBlobMetaHeader(buf: Buffer, off = 0, base = 0): BlobMetaHeader {
  const at = base + off;
  if (off < 0 || off + BLOB_META_HEADER_SIZE > buf.length) {
    throw new FormatError(
      `Truncated blob meta header: ${Math.max(0, buf.length - off)} of ${BLOB_META_HEADER_SIZE} bytes`,
      at,
    );
  }
  const magic = buf.readUInt32LE(off);
  const magic2 = buf.readUInt32LE(off + BLOB_META_HEADER_SIZE - 4);
  if (magic !== BLOB_META_MAGIC || magic2 !== BLOB_META_MAGIC) {
    throw new FormatError(
      `Bad blob meta header: magic 0x${magic.toString(16)}/0x${magic2.toString(16)}, expected 0xb10bb10b`,
      at,
    );
  }
  const features = buf.readUInt32LE(off + 4);
  if (features & BLOB_FEATURES_INCOMPAT_UNKNOWN || features & BlobFeature.V5_NO_EXT_BLOB_TABLE) {
    throw new FormatError(`Bad blob meta header: unsupported features 0x${features.toString(16)}`, at + 4);
  }
  const compressorEnum = buf.readUInt32LE(off + 8);
  if (compressorEnum > 3)
    throw new FormatError(`Bad blob meta header: ci compressor ${compressorEnum}`, at + 8);
  const ciCompressor = compressorFromEnum(compressorEnum);
  const ciEntries = buf.readUInt32LE(off + 12);
  if (ciEntries > Limits.MAX_CHUNKS_PER_BLOB) {
    throw new FormatError(
      `Bad blob meta header: ${ciEntries} ci entries, at most ${Limits.MAX_CHUNKS_PER_BLOB}`,
      at + 12,
    );
  }
  const h: BlobMetaHeader = {
    features,
    ciCompressor,
    ciEntries,
    ciOffset: readU64(buf, off + 16, 'ci_offset', base),
    ciCompressedSize: readU64(buf, off + 24, 'ci_compressed_size', base),
    ciUncompressedSize: readU64(buf, off + 32, 'ci_uncompressed_size', base),
    contextOffset: readU64(buf, off + 40, 'context offset', base),
    contextSize: readU64(buf, off + 48, 'context size', base),
    contextCount: buf.readUInt32LE(off + 56),
  };
  checkHeaderFields(h, at);
  return h;
}

/** Consistency of the size fields among themselves; shared by the decoder and the encoder. */
function headerProblem(h: BlobMetaHeader): [string, number] | undefined {
  if (h.ciUncompressedSize > MAX_CI_UNCOMPRESSED_SIZE) {
    return [`ci_uncompressed_size ${h.ciUncompressedSize} exceeds ${MAX_CI_UNCOMPRESSED_SIZE}`, 32];
  }
  if (h.ciCompressedSize > h.ciUncompressedSize) {
    return [
      `ci_compressed_size ${h.ciCompressedSize} exceeds ci_uncompressed_size ${h.ciUncompressedSize}`,
      24,
    ];
  }
  if (
    h.ciCompressor === 'none' &&
    !(h.features & BlobFeature.ENCRYPTED) &&
    h.ciCompressedSize !== h.ciUncompressedSize
  ) {
    return [`uncompressed ci but sizes differ (${h.ciCompressedSize} vs ${h.ciUncompressedSize})`, 24];
  }
  const entriesSize = h.ciEntries * ciEntrySize(h.features);
  if (entriesSize > h.ciUncompressedSize) {
    return [
      `${h.ciEntries} ci entries need ${entriesSize} bytes, ci_uncompressed_size is ${h.ciUncompressedSize}`,
      32,
    ];
  }
  const special = BlobFeature.ZRAN | BlobFeature.BATCH | BlobFeature.ENCRYPTED;
  if (!(h.features & BlobFeature.CHUNK_INFO_V2) && h.features & special) {
    return [`features 0x${h.features.toString(16)} need CHUNK_INFO_V2 ci entries`, 4];
  }
  if (h.features & BlobFeature.ZRAN && h.features & BlobFeature.BATCH) {
    return ['features ZRAN and BATCH are exclusive', 4];
  }
  if (!(h.features & special) && entriesSize !== h.ciUncompressedSize) {
    return [
      `${h.ciEntries} ci entries need exactly ${entriesSize} bytes, ci_uncompressed_size is ${h.ciUncompressedSize}`,
      32,
    ];
  }
  if (h.contextCount > 0 || h.contextSize > 0) {
    if (!(h.features & (BlobFeature.ZRAN | BlobFeature.BATCH))) {
      return [`context table without ZRAN or BATCH feature`, 56];
    }
    if (h.contextOffset < entriesSize || h.contextOffset + h.contextSize > h.ciUncompressedSize) {
      return [
        `context table [${h.contextOffset}, +${h.contextSize}) outside ci data [${entriesSize}, ${h.ciUncompressedSize})`,
        40,
      ];
    }
    if (h.contextCount * CI_CONTEXT_SIZE > h.contextSize) {
      return [`${h.contextCount} contexts do not fit in ${h.contextSize} bytes`, 56];
    }
    if (h.features & BlobFeature.BATCH && h.contextCount * CI_CONTEXT_SIZE !== h.contextSize) {
      return [
        `${h.contextCount} batch contexts need exactly ${h.contextCount * CI_CONTEXT_SIZE} bytes, got ${h.contextSize}`,
        48,
      ];
    }
  }
  return undefined;
}

function checkHeaderFields(h: BlobMetaHeader, at: number): void {
  const p = headerProblem(h);
  if (p !== undefined) throw new FormatError(`Bad blob meta header: ${p[0]}`, at + p[1]);
}

export function encodeBlobMetaHeader(h: BlobMetaHeader): Buffer {
  checkRange(h.features, 0, 0xffff_ffff, 'features');
  checkRange(h.ciEntries, 0, Limits.MAX_CHUNKS_PER_BLOB, 'ci_entries');
  checkRange(h.contextCount, 0, 0xffff_ffff, 'context count');
  for (const [what, v] of [
    ['ci_offset', h.ciOffset],
    ['ci_compressed_size', h.ciCompressedSize],
    ['ci_uncompressed_size', h.ciUncompressedSize],
    ['context offset', h.contextOffset],
    ['context size', h.contextSize],
  ] as const) {
    checkRange(v, 0, Number.MAX_SAFE_INTEGER, what);
  }
  const p = headerProblem(h);
  if (p !== undefined) invalid(`Cannot encode blob meta header: ${p[0]}`);
  const buf = Buffer.alloc(BLOB_META_HEADER_SIZE);
  buf.writeUInt32LE(BLOB_META_MAGIC, 0);
  buf.writeUInt32LE(h.features >>> 0, 4);
  buf.writeUInt32LE(compressorToEnum(h.ciCompressor), 8);
  buf.writeUInt32LE(h.ciEntries, 12);
  buf.writeBigUInt64LE(BigInt(h.ciOffset), 16);
  buf.writeBigUInt64LE(BigInt(h.ciCompressedSize), 24);
  buf.writeBigUInt64LE(BigInt(h.ciUncompressedSize), 32);
  buf.writeBigUInt64LE(BigInt(h.contextOffset), 40);
  buf.writeBigUInt64LE(BigInt(h.contextSize), 48);
  buf.writeUInt32LE(h.contextCount, 56);
  buf.writeUInt32LE(BLOB_META_MAGIC, BLOB_META_HEADER_SIZE - 4);
  return buf;
}

// ---------------------------------------------------------------------------------------------
// ci entries

/** Decode the v1 entry at `buf[off, off + 16)`. Every bit pattern is a valid v1 entry. */
export function decodeCiV1(buf: Buffer, off = 0, base = 0): CiEntry {
  if (off < 0 || off + CI_V1_ENTRY_SIZE > buf.length)
    throw new FormatError('Truncated ci v1 entry', base + off);
  const uLo = buf.readUInt32LE(off);
  const uHi = buf.readUInt32LE(off + 4);
  const cLo = buf.readUInt32LE(off + 8);
  const cHi = buf.readUInt32LE(off + 12);
  const uncompressedSize = ((((uLo >>> 8) & 0xf) << 20) | (uHi >>> 12)) + 1;
  const uncompressedOffset = ((uLo & 0xffff_f000) >>> 0) + (uHi & 0xfff) * TWO_32;
  const compressedSize = ((((cHi >>> 8) & 0xf) << 20) | (cHi >>> 12)) + 1;
  const compressedOffset = cLo + (cHi & 0xff) * TWO_32;
  return {
    compressedOffset,
    compressedSize,
    uncompressedOffset,
    uncompressedSize,
    flags: compressedSize !== uncompressedSize ? CiFlag.COMPRESSED : 0,
    dataHigh: 0,
    dataLow: 0,
  };
}

export function encodeCiV1(e: CiEntry): Buffer {
  return encodeCiV1Into(e, Buffer.alloc(CI_V1_ENTRY_SIZE), 0);
}

/** `encodeCiV1` into `buf` at `off`; returns `buf`. */
function encodeCiV1Into(e: CiEntry, buf: Buffer, off: number): Buffer {
  checkRange(e.compressedOffset, 0, MAX_CI_COMPRESSED_OFFSET, 'ci compressed_offset');
  checkRange(e.compressedSize, 1, MAX_CI_V1_SIZE, 'ci compressed_size');
  checkRange(e.uncompressedOffset, 0, MAX_CI_UNCOMPRESSED_OFFSET, 'ci uncompressed_offset');
  checkRange(e.uncompressedSize, 1, MAX_CI_V1_SIZE, 'ci uncompressed_size');
  if (e.uncompressedOffset % CHUNK_ALIGN !== 0)
    invalid(`ci v1 uncompressed_offset ${e.uncompressedOffset} is not 4 KiB aligned`);
  if ((e.flags & ~CiFlag.COMPRESSED) !== 0)
    invalid(`ci v1 entries cannot carry flags 0x${e.flags.toString(16)}`);
  if ((e.flags === CiFlag.COMPRESSED) !== (e.compressedSize !== e.uncompressedSize)) {
    invalid('ci v1 entries are compressed exactly when their sizes differ');
  }
  const us = e.uncompressedSize - 1;
  const cs = e.compressedSize - 1;
  buf.writeUInt32LE(((e.uncompressedOffset % TWO_32) | (((us >>> 20) & 0xf) << 8)) >>> 0, off);
  buf.writeUInt32LE((Math.floor(e.uncompressedOffset / TWO_32) | ((us & 0xfffff) << 12)) >>> 0, off + 4);
  buf.writeUInt32LE(e.compressedOffset % TWO_32, off + 8);
  buf.writeUInt32LE(
    (Math.floor(e.compressedOffset / TWO_32) | (((cs >>> 20) & 0xf) << 8) | ((cs & 0xfffff) << 12)) >>> 0,
    off + 12,
  );
  return buf;
}

/** Decode the v2 entry at `buf[off, off + 24)`; unknown flag bits are rejected. */
export function decodeCiV2(buf: Buffer, off = 0, base = 0): CiEntry {
  if (off < 0 || off + CI_V2_ENTRY_SIZE > buf.length)
    throw new FormatError('Truncated ci v2 entry', base + off);
  const uLo = buf.readUInt32LE(off);
  const uHi = buf.readUInt32LE(off + 4);
  const cLo = buf.readUInt32LE(off + 8);
  const cHi = buf.readUInt32LE(off + 12);
  const flags = uHi >>> 24;
  if (flags & ~CI_FLAGS_KNOWN)
    throw new FormatError(`Bad ci v2 entry: unknown flags 0x${flags.toString(16)}`, base + off + 7);
  if (flags & CiFlag.ZRAN && flags & CiFlag.BATCH) {
    throw new FormatError('Bad ci v2 entry: both ZRAN and BATCH flags', base + off + 7);
  }
  return {
    compressedOffset: cLo + (cHi & 0xff) * TWO_32,
    compressedSize: cHi >>> 8,
    uncompressedOffset: uLo * CHUNK_ALIGN,
    uncompressedSize: (uHi & 0xff_ffff) + 1,
    flags,
    dataHigh: buf.readUInt32LE(off + 20),
    dataLow: buf.readUInt32LE(off + 16),
  };
}

export function encodeCiV2(e: CiEntry): Buffer {
  return encodeCiV2Into(e, Buffer.alloc(CI_V2_ENTRY_SIZE), 0);
}

/** `encodeCiV2` into `buf` at `off`; returns `buf`. */
function encodeCiV2Into(e: CiEntry, buf: Buffer, off: number): Buffer {
  checkRange(e.compressedOffset, 0, MAX_CI_COMPRESSED_OFFSET, 'ci compressed_offset');
  checkRange(e.compressedSize, 0, MAX_CI_V2_COMPRESSED_SIZE, 'ci compressed_size');
  checkRange(e.uncompressedOffset, 0, MAX_CI_UNCOMPRESSED_OFFSET, 'ci uncompressed_offset');
  checkRange(e.uncompressedSize, 1, MAX_CI_V1_SIZE, 'ci uncompressed_size');
  checkRange(e.flags, 0, CI_FLAGS_KNOWN, 'ci flags');
  checkRange(e.dataHigh, 0, 0xffff_ffff, 'ci data (high)');
  checkRange(e.dataLow, 0, 0xffff_ffff, 'ci data (low)');
  if (e.uncompressedOffset % CHUNK_ALIGN !== 0)
    invalid(`ci v2 uncompressed_offset ${e.uncompressedOffset} is not 4 KiB aligned`);
  buf.writeUInt32LE(e.uncompressedOffset / CHUNK_ALIGN, off);
  buf.writeUInt32LE(((e.uncompressedSize - 1) | (e.flags << 24)) >>> 0, off + 4);
  buf.writeUInt32LE(e.compressedOffset % TWO_32, off + 8);
  buf.writeUInt32LE((Math.floor(e.compressedOffset / TWO_32) | (e.compressedSize << 8)) >>> 0, off + 12);
  buf.writeUInt32LE(e.dataLow, off + 16);
  buf.writeUInt32LE(e.dataHigh, off + 20);
  return buf;
}

// ---------------------------------------------------------------------------------------------
// Context tables

export function decodeZranContext(buf: Buffer, off = 0, base = 0): ZranContext {
  if (off < 0 || off + CI_CONTEXT_SIZE > buf.length)
    throw new FormatError('Truncated zran context', base + off);
  return {
    inOffset: readU64(buf, off, 'zran in_offset', base),
    outOffset: readU64(buf, off + 8, 'zran out_offset', base),
    dictOffset: readU64(buf, off + 16, 'zran dict_offset', base),
    inLen: buf.readUInt32LE(off + 24),
    outLen: buf.readUInt32LE(off + 28),
    dictSize: buf.readUInt32LE(off + 32),
    ctxByte: buf.readUInt8(off + 36),
    ctxBits: buf.readUInt8(off + 37),
  };
}

export function encodeZranContext(z: ZranContext): Buffer {
  checkRange(z.inOffset, 0, Number.MAX_SAFE_INTEGER, 'zran in_offset');
  checkRange(z.outOffset, 0, Number.MAX_SAFE_INTEGER, 'zran out_offset');
  checkRange(z.dictOffset, 0, Number.MAX_SAFE_INTEGER, 'zran dict_offset');
  checkRange(z.inLen, 0, 0xffff_ffff, 'zran in_len');
  checkRange(z.outLen, 0, 0xffff_ffff, 'zran out_len');
  checkRange(z.dictSize, 0, MAX_ZRAN_DICT_SIZE, 'zran dict_size');
  checkRange(z.ctxByte, 0, 0xff, 'zran ctx_byte');
  checkRange(z.ctxBits, 0, 0xff, 'zran ctx_bits');
  const buf = Buffer.alloc(CI_CONTEXT_SIZE);
  buf.writeBigUInt64LE(BigInt(z.inOffset), 0);
  buf.writeBigUInt64LE(BigInt(z.outOffset), 8);
  buf.writeBigUInt64LE(BigInt(z.dictOffset), 16);
  buf.writeUInt32LE(z.inLen, 24);
  buf.writeUInt32LE(z.outLen, 28);
  buf.writeUInt32LE(z.dictSize, 32);
  buf.writeUInt8(z.ctxByte, 36);
  buf.writeUInt8(z.ctxBits, 37);
  return buf;
}

export function decodeBatchContext(buf: Buffer, off = 0, base = 0): BatchContext {
  if (off < 0 || off + CI_CONTEXT_SIZE > buf.length)
    throw new FormatError('Truncated batch context', base + off);
  return { compressedSize: buf.readUInt32LE(off), uncompressedSize: buf.readUInt32LE(off + 4) };
}

export function encodeBatchContext(b: BatchContext): Buffer {
  checkRange(b.compressedSize, 0, 0xffff_ffff, 'batch compressed_size');
  checkRange(b.uncompressedSize, 0, 0xffff_ffff, 'batch uncompressed_size');
  const buf = Buffer.alloc(CI_CONTEXT_SIZE);
  buf.writeUInt32LE(b.compressedSize, 0);
  buf.writeUInt32LE(b.uncompressedSize, 4);
  return buf;
}

// ---------------------------------------------------------------------------------------------
// The whole table

function chunkFlagsOf(e: CiEntry): number {
  let flags = 0;
  if (e.flags & CiFlag.COMPRESSED) flags |= ChunkFlag.COMPRESSED;
  if (e.flags & CiFlag.ENCRYPTED) flags |= ChunkFlag.ENCRYPTED;
  if (e.flags & CiFlag.BATCH) flags |= ChunkFlag.BATCH;
  if (e.flags & CiFlag.HAS_CRC32 && !(e.flags & (CiFlag.ZRAN | CiFlag.BATCH))) flags |= ChunkFlag.HAS_CRC32;
  return flags;
}

/**
 * Decode the uncompressed ci data `ci` described by `header` into per-chunk facts. `blobIndex`
 * goes into every ChunkInfo; `chunkDigests` (the `blob.digest` array, 32 bytes per chunk)
 * supplies the chunk ids when given. ChunkInfo.fileOffset is 0: the ci table does not know files.
 * Error offsets are relative to the start of the uncompressed ci data.
 */
export function decodeCiTable(
  header: BlobMetaHeader,
  ci: Buffer,
  blobIndex: number,
  chunkDigests?: Buffer,
): CiTable {
  const p = headerProblem(header);
  if (p !== undefined) throw new FormatError(`Bad blob meta header: ${p[0]}`);
  if (ci.length !== header.ciUncompressedSize) {
    throw new FormatError(`Bad ci data: ${ci.length} bytes, header says ${header.ciUncompressedSize}`);
  }
  const n = header.ciEntries;
  if (chunkDigests !== undefined && chunkDigests.length !== n * 32) {
    throw new FormatError(`Bad chunk digest array: ${chunkDigests.length} bytes for ${n} chunks`);
  }
  const v2 = (header.features & BlobFeature.CHUNK_INFO_V2) !== 0;
  const entrySize = v2 ? CI_V2_ENTRY_SIZE : CI_V1_ENTRY_SIZE;

  const zranContexts: ZranContext[] = [];
  const batchContexts: BatchContext[] = [];
  let zranDicts: Buffer = Buffer.alloc(0);
  const ctxTableEnd = header.contextOffset + header.contextCount * CI_CONTEXT_SIZE;
  if (header.contextCount > 0 && header.features & BlobFeature.ZRAN) {
    const dictBase = ctxTableEnd;
    zranDicts = ci.subarray(dictBase, header.contextOffset + header.contextSize);
    for (let i = 0; i < header.contextCount; i++) {
      const off = header.contextOffset + i * CI_CONTEXT_SIZE;
      const z = decodeZranContext(ci, off);
      if (z.dictSize > MAX_ZRAN_DICT_SIZE || z.dictOffset + z.dictSize > zranDicts.length) {
        throw new FormatError(
          `Bad zran context ${i}: dictionary [${z.dictOffset}, +${z.dictSize}) outside the ${zranDicts.length}-byte dictionary area`,
          off,
        );
      }
      zranContexts.push(z);
    }
  } else if (header.contextCount > 0 && header.features & BlobFeature.BATCH) {
    for (let i = 0; i < header.contextCount; i++) {
      batchContexts.push(decodeBatchContext(ci, header.contextOffset + i * CI_CONTEXT_SIZE));
    }
  }

  const zeroId = Buffer.alloc(32);
  const entries: CiEntry[] = new Array<CiEntry>(n);
  const chunks: ChunkInfo[] = new Array<ChunkInfo>(n);
  for (let i = 0; i < n; i++) {
    const off = i * entrySize;
    const e = v2 ? decodeCiV2(ci, off) : decodeCiV1(ci, off);
    if (e.flags & CiFlag.ZRAN) {
      if (!(header.features & BlobFeature.ZRAN))
        throw new FormatError(`Bad ci entry ${i}: ZRAN flag on a non-zran blob`, off);
      if (e.dataHigh >= zranContexts.length) {
        throw new FormatError(
          `Bad ci entry ${i}: zran context ${e.dataHigh} of ${zranContexts.length}`,
          off + 20,
        );
      }
    }
    if (e.flags & CiFlag.BATCH) {
      if (!(header.features & BlobFeature.BATCH))
        throw new FormatError(`Bad ci entry ${i}: BATCH flag on a non-batch blob`, off);
      const b = batchContexts[e.dataHigh];
      if (b === undefined)
        throw new FormatError(`Bad ci entry ${i}: batch ${e.dataHigh} of ${batchContexts.length}`, off + 20);
      if (e.dataLow + e.uncompressedSize > b.uncompressedSize) {
        throw new FormatError(
          `Bad ci entry ${i}: data beyond the ${b.uncompressedSize}-byte batch ${e.dataHigh}`,
          off + 16,
        );
      }
    }
    if (e.flags & CiFlag.ENCRYPTED && !(header.features & BlobFeature.ENCRYPTED)) {
      throw new FormatError(`Bad ci entry ${i}: ENCRYPTED flag on a plain blob`, off);
    }
    entries[i] = e;
    const flags = chunkFlagsOf(e);
    chunks[i] = {
      id: chunkDigests === undefined ? zeroId : chunkDigests.subarray(i * 32, i * 32 + 32),
      blobIndex,
      flags,
      compressedOffset: e.compressedOffset,
      compressedSize: e.compressedSize,
      uncompressedOffset: e.uncompressedOffset,
      uncompressedSize: e.uncompressedSize,
      fileOffset: 0,
      index: i,
      crc32: flags & ChunkFlag.HAS_CRC32 ? e.dataLow : 0,
    };
  }
  return { header, version: v2 ? 2 : 1, entries, chunks, zranContexts, batchContexts, zranDicts };
}

/**
 * Fail with ERR_UNSUPPORTED for chunks whose data this implementation cannot read yet (zran,
 * batch and encrypted chunks); their ci entries still decode.
 */
export function assertReadableChunk(e: CiEntry, index: number): void {
  if (e.flags & CiFlag.ZRAN) throw new NydusError('ERR_UNSUPPORTED', `Chunk ${index} is a zran chunk`);
  if (e.flags & CiFlag.BATCH) throw new NydusError('ERR_UNSUPPORTED', `Chunk ${index} is a batch chunk`);
  if (e.flags & CiFlag.ENCRYPTED) throw new NydusError('ERR_UNSUPPORTED', `Chunk ${index} is encrypted`);
}

/** Encode a ci array (entries, then the context area) to its uncompressed bytes. */
export function encodeCiEntries(features: number, entries: readonly CiEntry[]): Buffer {
  const v2 = (features & BlobFeature.CHUNK_INFO_V2) !== 0;
  const [size, encodeInto] = v2 ? [CI_V2_ENTRY_SIZE, encodeCiV2Into] : [CI_V1_ENTRY_SIZE, encodeCiV1Into];
  // One buffer for the table, each entry encoded in its place.
  const out = Buffer.allocUnsafe(entries.length * size);
  entries.forEach((e, i) => encodeInto(e, out, i * size));
  return out;
}

// ---------------------------------------------------------------------------------------------
// `<blob id>.blob.meta` cache file (rafs-format.md 4.8)

/** The cache file: uncompressed ci data, zero padded to 4 KiB, then the 4096-byte header. */
export function encodeBlobMetaCacheFile(header: BlobMetaHeader, ci: Buffer): Buffer {
  if (ci.length !== header.ciUncompressedSize) {
    invalid(
      `Cannot encode blob meta cache file: ${ci.length} bytes of ci data, header says ${header.ciUncompressedSize}`,
    );
  }
  const padded = align(ci.length, BLOB_META_HEADER_SIZE);
  const out = Buffer.alloc(padded + BLOB_META_HEADER_SIZE);
  ci.copy(out, 0);
  encodeBlobMetaHeader(header).copy(out, padded);
  return out;
}

export function decodeBlobMetaCacheFile(file: Buffer): { header: BlobMetaHeader; ci: Buffer } {
  if (file.length < BLOB_META_HEADER_SIZE || file.length % BLOB_META_HEADER_SIZE !== 0) {
    throw new FormatError(
      `Bad blob meta cache file: size ${file.length} is not a positive multiple of 4096`,
      0,
    );
  }
  const hdrOff = file.length - BLOB_META_HEADER_SIZE;
  const header = decodeBlobMetaHeader(file, hdrOff);
  if (align(header.ciUncompressedSize, BLOB_META_HEADER_SIZE) !== hdrOff) {
    throw new FormatError(
      `Bad blob meta cache file: ${header.ciUncompressedSize} bytes of ci data do not pad to ${hdrOff}`,
      hdrOff + 32,
    );
  }
  return { header, ci: file.subarray(0, header.ciUncompressedSize) };
}
