import type { Compressor, Digester } from '../../codec/algorithms.js';
import { FormatError } from '../../errors/errors.js';
import { compressorOfFlags, digesterOfFlags, Limits, SUPER_FLAGS_KNOWN, SuperFlag } from '../flags.js';
import { CHUNK_RECORD_SIZE } from '../chunk-record.js';
import { isPowerOfTwo, readU64 } from '../../util/cursor.js';
import { need, putBytes, putU16, putU32, putU64, putU8, putZeros } from './bytes.js';

/**
 * The two superblocks of a RAFS v6 bootstrap (rafs-format.md 3.2, 3.3).
 *
 * EROFS superblock, 128 bytes at absolute offset 1024:
 *
 * | off | type     | field            | RAFS value                                     |
 * |-----|----------|------------------|------------------------------------------------|
 * | 0   | u32      | magic            | 0xE0F5E1E2                                     |
 * | 4   | u32      | checksum         | 0 (must)                                       |
 * | 8   | u32      | feature_compat   | RAFS_V6 bit 0x4000_0000 (must)                 |
 * | 12  | u8       | blkszbits        | 12 (9 in tarfs mode)                           |
 * | 13  | u8       | extslots         | 0 (must)                                       |
 * | 14  | u16      | root_nid         | 128                                            |
 * | 16  | u64      | inos             | tree entries, must be != 0                     |
 * | 24  | u64      | build_time       | 0                                              |
 * | 32  | u32      | build_time_nsec  | 0                                              |
 * | 36  | u32      | blocks           | sum of blob uncompressed sizes / 4096          |
 * | 40  | u32      | meta_blkaddr     | block of the meta area                         |
 * | 44  | u32      | xattr_blkaddr    | block of shared xattrs (0 in RAFS images)      |
 * | 48  | 16 bytes | uuid             | zero                                           |
 * | 64  | 16 bytes | volume_name      | zero                                           |
 * | 80  | u32      | feature_incompat | 0x0C = CHUNKED_FILE | DEVICE_TABLE (must)      |
 * | 84  | u16      | u1               | 0 (must)                                       |
 * | 86  | u16      | extra_devices    | number of blobs                                |
 * | 88  | u16      | devt_slotoff     | 11 (device table at 1408, must)                |
 * | 90  | 38 bytes | reserved         | zero                                           |
 *
 * RAFS extended superblock, 256 bytes at absolute offset 1152:
 *
 * | off | type      | field                 |
 * |-----|-----------|-----------------------|
 * | 0   | u64       | flags (RafsSuperFlags)|
 * | 8   | u64       | blob_table_offset     |
 * | 16  | u32       | blob_table_size       |
 * | 20  | u32       | chunk_size            |
 * | 24  | u64       | chunk_table_offset    |
 * | 32  | u64       | chunk_table_size      |
 * | 40  | u64       | prefetch_table_offset |
 * | 48  | u32       | prefetch_table_size   |
 * | 52  | u32       | padding               |
 * | 56  | 200 bytes | reserved              |
 */

export const EROFS_MAGIC = 0xe0f5e1e2;
export const EROFS_SUPER_OFFSET = 1024;
export const EROFS_SUPER_SIZE = 128;
export const RAFS_EXT_SUPER_OFFSET = 1152;
export const RAFS_EXT_SUPER_SIZE = 256;

export const EROFS_FEATURE_COMPAT_RAFS_V6 = 0x4000_0000;
export const EROFS_FEATURE_INCOMPAT_CHUNKED_FILE = 0x4;
export const EROFS_FEATURE_INCOMPAT_DEVICE_TABLE = 0x8;
/** The exact feature_incompat value of every RAFS v6 image. */
export const RAFS_V6_FEATURE_INCOMPAT =
  EROFS_FEATURE_INCOMPAT_CHUNKED_FILE | EROFS_FEATURE_INCOMPAT_DEVICE_TABLE;

export const EROFS_BLKSZBITS = 12;
export const EROFS_BLOCK_SIZE = 1 << EROFS_BLKSZBITS;
/** Tarfs images use 512-byte EROFS blocks (rafs-format.md 3.20). */
export const TARFS_BLKSZBITS = 9;
/** File size, table offsets and the meta area are 4 KiB based whatever the EROFS block size. */
export const BOOTSTRAP_ALIGN = 4096;

/** Device slots are 128 bytes; slot 11 (offset 1408) is the first one. */
export const DEVICE_SLOT_SIZE = 128;
export const RAFS_DEVT_SLOTOFF = 11;
export const DEVICE_TABLE_OFFSET = RAFS_DEVT_SLOTOFF * DEVICE_SLOT_SIZE;
export const BLOB_ENTRY_SIZE = 256;

export interface ErofsSuperblock {
  readonly checksum: number;
  readonly featureCompat: number;
  readonly blkszbits: number;
  readonly extslots: number;
  readonly rootNid: number;
  readonly inos: number;
  readonly buildTime: number;
  readonly buildTimeNsec: number;
  readonly blocks: number;
  readonly metaBlkaddr: number;
  readonly xattrBlkaddr: number;
  /** 16 bytes. */
  readonly uuid: Buffer;
  /** 16 bytes. */
  readonly volumeName: Buffer;
  readonly featureIncompat: number;
  readonly u1: number;
  readonly extraDevices: number;
  readonly devtSlotoff: number;
}

export interface RafsExtSuperblock {
  /** RafsSuperFlags; the high 32 bits of the u64 are always unknown bits. */
  readonly flags: number;
  readonly blobTableOffset: number;
  readonly blobTableSize: number;
  readonly chunkSize: number;
  readonly chunkTableOffset: number;
  readonly chunkTableSize: number;
  readonly prefetchTableOffset: number;
  readonly prefetchTableSize: number;
}

/** Decode the EROFS superblock at `off` (1024 in a bootstrap); checks length and magic only. */
export function decodeErofsSuper(buf: Buffer, off = EROFS_SUPER_OFFSET): ErofsSuperblock {
  need(buf, off, EROFS_SUPER_SIZE, 'EROFS superblock');
  const magic = buf.readUInt32LE(off);
  if (magic !== EROFS_MAGIC) {
    throw new FormatError(
      `Bad EROFS magic 0x${magic.toString(16)}, expected 0x${EROFS_MAGIC.toString(16)}`,
      off,
    );
  }
  return {
    checksum: buf.readUInt32LE(off + 4),
    featureCompat: buf.readUInt32LE(off + 8),
    blkszbits: buf.readUInt8(off + 12),
    extslots: buf.readUInt8(off + 13),
    rootNid: buf.readUInt16LE(off + 14),
    inos: readU64(buf, off + 16, 'superblock inos'),
    buildTime: readU64(buf, off + 24, 'superblock build_time'),
    buildTimeNsec: buf.readUInt32LE(off + 32),
    blocks: buf.readUInt32LE(off + 36),
    metaBlkaddr: buf.readUInt32LE(off + 40),
    xattrBlkaddr: buf.readUInt32LE(off + 44),
    uuid: Buffer.from(buf.subarray(off + 48, off + 64)),
    volumeName: Buffer.from(buf.subarray(off + 64, off + 80)),
    featureIncompat: buf.readUInt32LE(off + 80),
    u1: buf.readUInt16LE(off + 84),
    extraDevices: buf.readUInt16LE(off + 86),
    devtSlotoff: buf.readUInt16LE(off + 88),
  };
}

export function encodeErofsSuper(sb: ErofsSuperblock, buf: Buffer, off = EROFS_SUPER_OFFSET): void {
  putU32(buf, off, EROFS_MAGIC, 'superblock magic');
  putU32(buf, off + 4, sb.checksum, 'superblock checksum');
  putU32(buf, off + 8, sb.featureCompat, 'superblock feature_compat');
  putU8(buf, off + 12, sb.blkszbits, 'superblock blkszbits');
  putU8(buf, off + 13, sb.extslots, 'superblock extslots');
  putU16(buf, off + 14, sb.rootNid, 'superblock root_nid');
  putU64(buf, off + 16, sb.inos, 'superblock inos');
  putU64(buf, off + 24, sb.buildTime, 'superblock build_time');
  putU32(buf, off + 32, sb.buildTimeNsec, 'superblock build_time_nsec');
  putU32(buf, off + 36, sb.blocks, 'superblock blocks');
  putU32(buf, off + 40, sb.metaBlkaddr, 'superblock meta_blkaddr');
  putU32(buf, off + 44, sb.xattrBlkaddr, 'superblock xattr_blkaddr');
  putBytes(buf, off + 48, sb.uuid, 16, 'superblock uuid');
  putBytes(buf, off + 64, sb.volumeName, 16, 'superblock volume_name');
  putU32(buf, off + 80, sb.featureIncompat, 'superblock feature_incompat');
  putU16(buf, off + 84, sb.u1, 'superblock u1');
  putU16(buf, off + 86, sb.extraDevices, 'superblock extra_devices');
  putU16(buf, off + 88, sb.devtSlotoff, 'superblock devt_slotoff');
  putZeros(buf, off + 90, 38, 'superblock reserved');
}

/** Decode the RAFS extended superblock at `off` (1152 in a bootstrap); checks length only. */
export function decodeRafsExtSuper(buf: Buffer, off = RAFS_EXT_SUPER_OFFSET): RafsExtSuperblock {
  need(buf, off, RAFS_EXT_SUPER_SIZE, 'RAFS extended superblock');
  return {
    flags: readU64(buf, off, 'ext superblock flags'),
    blobTableOffset: readU64(buf, off + 8, 'ext superblock blob_table_offset'),
    blobTableSize: buf.readUInt32LE(off + 16),
    chunkSize: buf.readUInt32LE(off + 20),
    chunkTableOffset: readU64(buf, off + 24, 'ext superblock chunk_table_offset'),
    chunkTableSize: readU64(buf, off + 32, 'ext superblock chunk_table_size'),
    prefetchTableOffset: readU64(buf, off + 40, 'ext superblock prefetch_table_offset'),
    prefetchTableSize: buf.readUInt32LE(off + 48),
  };
}

export function encodeRafsExtSuper(ext: RafsExtSuperblock, buf: Buffer, off = RAFS_EXT_SUPER_OFFSET): void {
  putU64(buf, off, ext.flags, 'ext superblock flags');
  putU64(buf, off + 8, ext.blobTableOffset, 'ext superblock blob_table_offset');
  putU32(buf, off + 16, ext.blobTableSize, 'ext superblock blob_table_size');
  putU32(buf, off + 20, ext.chunkSize, 'ext superblock chunk_size');
  putU64(buf, off + 24, ext.chunkTableOffset, 'ext superblock chunk_table_offset');
  putU64(buf, off + 32, ext.chunkTableSize, 'ext superblock chunk_table_size');
  putU64(buf, off + 40, ext.prefetchTableOffset, 'ext superblock prefetch_table_offset');
  putU32(buf, off + 48, ext.prefetchTableSize, 'ext superblock prefetch_table_size');
  putZeros(buf, off + 52, 204, 'ext superblock reserved');
}

/** What the superblock checks establish, for the rest of the reader. */
export interface SuperblockFacts {
  readonly blockSize: number;
  readonly blobCount: number;
  readonly compressor: Compressor;
  readonly digester: Digester;
  readonly tarfs: boolean;
  /** Absolute offset of nid 0. */
  readonly metaBase: number;
}

const COMPRESSION_BITS = [
  SuperFlag.COMPRESSION_NONE,
  SuperFlag.COMPRESSION_LZ4,
  SuperFlag.COMPRESSION_GZIP,
  SuperFlag.COMPRESSION_ZSTD,
];
const DIGEST_BITS = [SuperFlag.HASH_BLAKE3, SuperFlag.HASH_SHA256];

function bitCount(flags: number, bits: readonly number[]): number {
  return bits.filter((b) => (flags & b) !== 0).length;
}

interface Extent {
  readonly name: string;
  readonly off: number;
  readonly size: number;
}

/**
 * The reader checks of rafs-format.md 3.2, 3.3 and 3.16 over both superblocks, for a bootstrap of
 * `fileSize` bytes. Quotes the failing value; throws FormatError.
 */
export function checkSuperblocks(
  sb: ErofsSuperblock,
  ext: RafsExtSuperblock,
  fileSize: number,
): SuperblockFacts {
  const at = EROFS_SUPER_OFFSET;
  if (fileSize % BOOTSTRAP_ALIGN !== 0) {
    throw new FormatError(`Bootstrap size ${fileSize} is not a multiple of ${BOOTSTRAP_ALIGN}`);
  }
  if (sb.checksum !== 0)
    throw new FormatError(`Superblock checksum must be 0, got 0x${hex(sb.checksum)}`, at + 4);
  if ((sb.featureCompat & EROFS_FEATURE_COMPAT_RAFS_V6) === 0) {
    throw new FormatError(
      `Superblock feature_compat 0x${hex(sb.featureCompat)} lacks the RAFS v6 bit`,
      at + 8,
    );
  }
  const tarfs = (ext.flags & SuperFlag.TARFS_MODE) !== 0;
  if (sb.blkszbits !== EROFS_BLKSZBITS && !(tarfs && sb.blkszbits === TARFS_BLKSZBITS)) {
    throw new FormatError(
      `Superblock blkszbits ${sb.blkszbits} is not supported${tarfs ? ' in tarfs mode' : ''}`,
      at + 12,
    );
  }
  if (sb.extslots !== 0) throw new FormatError(`Superblock extslots must be 0, got ${sb.extslots}`, at + 13);
  if (sb.inos === 0) throw new FormatError('Superblock inos is 0', at + 16);
  if (sb.featureIncompat !== RAFS_V6_FEATURE_INCOMPAT) {
    throw new FormatError(
      `Superblock feature_incompat 0x${hex(sb.featureIncompat)} is not 0x${hex(RAFS_V6_FEATURE_INCOMPAT)}`,
      at + 80,
    );
  }
  if (sb.u1 !== 0) throw new FormatError(`Superblock u1 must be 0, got ${sb.u1}`, at + 84);
  if (sb.devtSlotoff !== RAFS_DEVT_SLOTOFF) {
    throw new FormatError(`Superblock devt_slotoff ${sb.devtSlotoff} is not ${RAFS_DEVT_SLOTOFF}`, at + 88);
  }

  const blockSize = 1 << sb.blkszbits;
  const metaBase = sb.metaBlkaddr * blockSize;
  if (metaBase >= fileSize) {
    throw new FormatError(
      `Superblock meta_blkaddr ${sb.metaBlkaddr} is beyond the bootstrap end ${fileSize}`,
      at + 40,
    );
  }
  if (metaBase % BOOTSTRAP_ALIGN !== 0) {
    throw new FormatError(`Superblock meta_blkaddr ${sb.metaBlkaddr} is not 4 KiB aligned`, at + 40);
  }
  if (metaBase + sb.rootNid * 32 + 32 > fileSize) {
    throw new FormatError(
      `Superblock root_nid ${sb.rootNid} is beyond the bootstrap end ${fileSize}`,
      at + 14,
    );
  }
  if (sb.xattrBlkaddr * blockSize >= fileSize) {
    throw new FormatError(
      `Superblock xattr_blkaddr ${sb.xattrBlkaddr} is beyond the bootstrap end ${fileSize}`,
      at + 44,
    );
  }

  const xat = RAFS_EXT_SUPER_OFFSET;
  // SUPER_FLAGS_KNOWN is a 32-bit mask; anything above bit 31 is unknown.
  if (ext.flags > 0xffff_ffff || (ext.flags & ~SUPER_FLAGS_KNOWN) !== 0) {
    throw new FormatError(`Ext superblock flags 0x${ext.flags.toString(16)} contain unknown bits`, xat);
  }
  if (bitCount(ext.flags, COMPRESSION_BITS) !== 1) {
    throw new FormatError(`Ext superblock flags 0x${hex(ext.flags)} must name exactly one compressor`, xat);
  }
  if (bitCount(ext.flags, DIGEST_BITS) !== 1) {
    throw new FormatError(`Ext superblock flags 0x${hex(ext.flags)} must name exactly one digester`, xat);
  }
  if (
    !isPowerOfTwo(ext.chunkSize) ||
    ext.chunkSize < Limits.MIN_CHUNK_SIZE ||
    ext.chunkSize > Limits.MAX_CHUNK_SIZE
  ) {
    throw new FormatError(
      `Ext superblock chunk_size 0x${hex(ext.chunkSize)} is not a power of two in 4 KiB..16 MiB`,
      xat + 20,
    );
  }

  if (ext.blobTableSize % BLOB_ENTRY_SIZE !== 0) {
    throw new FormatError(
      `Blob table size ${ext.blobTableSize} is not a multiple of ${BLOB_ENTRY_SIZE}`,
      xat + 16,
    );
  }
  const blobCount = ext.blobTableSize / BLOB_ENTRY_SIZE;
  if (blobCount > Limits.MAX_BLOBS) {
    throw new FormatError(`Blob table holds ${blobCount} blobs, more than ${Limits.MAX_BLOBS}`, xat + 16);
  }
  if (sb.extraDevices !== blobCount) {
    throw new FormatError(
      `Superblock extra_devices ${sb.extraDevices} does not match ${blobCount} blob table entries`,
      at + 86,
    );
  }
  const deviceTableEnd = DEVICE_TABLE_OFFSET + blobCount * DEVICE_SLOT_SIZE;
  if (deviceTableEnd > fileSize) {
    throw new FormatError(
      `Device table of ${blobCount} slots is beyond the bootstrap end ${fileSize}`,
      DEVICE_TABLE_OFFSET,
    );
  }
  if (ext.chunkTableSize % CHUNK_RECORD_SIZE !== 0) {
    throw new FormatError(
      `Chunk table size ${ext.chunkTableSize} is not a multiple of ${CHUNK_RECORD_SIZE}`,
      xat + 32,
    );
  }

  const tables: Extent[] = [];
  const table = (name: string, off: number, size: number, aligned: boolean, fieldAt: number): void => {
    if (size === 0) return;
    if (aligned && off % BOOTSTRAP_ALIGN !== 0) {
      throw new FormatError(`${name} offset ${off} is not 4 KiB aligned`, fieldAt);
    }
    if (off < deviceTableEnd || off + size > fileSize) {
      throw new FormatError(
        `${name} [${off}, +${size}) is outside [${deviceTableEnd}, ${fileSize})`,
        fieldAt,
      );
    }
    for (const t of tables) {
      if (off < t.off + t.size && t.off < off + size) {
        throw new FormatError(
          `${name} [${off}, +${size}) overlaps the ${t.name.toLowerCase()} [${t.off}, +${t.size})`,
          fieldAt,
        );
      }
    }
    tables.push({ name, off, size });
  };
  table('Blob table', ext.blobTableOffset, ext.blobTableSize, true, xat + 8);
  table('Chunk table', ext.chunkTableOffset, ext.chunkTableSize, true, xat + 24);
  // The prefetch table directly follows the blob table, so it is only 4-byte aligned.
  table('Prefetch table', ext.prefetchTableOffset, ext.prefetchTableSize, false, xat + 40);

  return {
    blockSize,
    blobCount,
    compressor: compressorOfFlags(ext.flags),
    digester: digesterOfFlags(ext.flags),
    tarfs,
    metaBase,
  };
}

function hex(v: number): string {
  return (v >>> 0).toString(16);
}
