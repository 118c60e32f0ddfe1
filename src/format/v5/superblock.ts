import { FormatError } from '../../errors/errors.js';
import { Limits, SUPER_FLAGS_KNOWN } from '../flags.js';
import { isPowerOfTwo, readU64 } from '../../util/cursor.js';

/**
 * RAFS v5 superblock: 8192 bytes at offset 0 of the bootstrap (rafs-format.md 2.2).
 *
 * | off | type       | field                       |
 * |-----|------------|-----------------------------|
 * | 0   | u32        | magic (0x52414653, "SFAR")  |
 * | 4   | u32        | fs_version (0x500)          |
 * | 8   | u32        | sb_size (8192)              |
 * | 12  | u32        | block_size (= chunk size)   |
 * | 16  | u64        | flags (RafsSuperFlags)      |
 * | 24  | u64        | inodes_count                |
 * | 32  | u64        | inode_table_offset          |
 * | 40  | u64        | prefetch_table_offset       |
 * | 48  | u64        | blob_table_offset           |
 * | 56  | u32        | inode_table_entries         |
 * | 60  | u32        | prefetch_table_entries      |
 * | 64  | u32        | blob_table_size             |
 * | 68  | u32        | extended_blob_table_entries |
 * | 72  | u64        | extended_blob_table_offset  |
 * | 80  | 8112 bytes | reserved, zero              |
 *
 * The tables that follow (inode table of u32 slots, prefetch table of u32 inode numbers, blob
 * table, extended blob table of 64-byte entries) each start on an 8-byte boundary.
 */
export const RAFS_V5_MAGIC = 0x52414653;
export const RAFS_V5_VERSION = 0x500;
export const RAFS_V5_SUPERBLOCK_SIZE = 8192;
/** Size of one extended blob table entry (rafs-format.md 2.5). */
export const V5_EXT_BLOB_ENTRY_SIZE = 64;

export interface V5Superblock {
  readonly magic: number;
  readonly fsVersion: number;
  readonly sbSize: number;
  /** The chunk size. */
  readonly blockSize: number;
  /** RafsSuperFlags; only bits below 2^32 are defined, larger values are rejected on decode. */
  readonly flags: number;
  readonly inodesCount: number;
  readonly inodeTableOffset: number;
  readonly prefetchTableOffset: number;
  readonly blobTableOffset: number;
  /** N: number of u32 slots of the inode table (unpadded). */
  readonly inodeTableEntries: number;
  /** P: number of u32 entries of the prefetch table (unpadded). */
  readonly prefetchTableEntries: number;
  /** Byte size of the blob table including its padding. */
  readonly blobTableSize: number;
  /** B: 0 when the image has no extended blob table. */
  readonly extendedBlobTableEntries: number;
  readonly extendedBlobTableOffset: number;
}

/**
 * Decode the superblock fields. Checks, in this order: length, magic, version, sb_size, and that
 * the u64 fields are representable; the layout against a file is checked by
 * `checkV5SuperblockLayout`.
 */
export function decodeV5Superblock(buf: Buffer): V5Superblock {
  if (buf.length < RAFS_V5_SUPERBLOCK_SIZE) {
    throw new FormatError(
      `Truncated RAFS v5 superblock: ${buf.length} bytes, need ${RAFS_V5_SUPERBLOCK_SIZE}`,
      0,
    );
  }
  const magic = buf.readUInt32LE(0);
  if (magic !== RAFS_V5_MAGIC) {
    throw new FormatError(`Bad RAFS v5 magic 0x${hex(magic)}, expected 0x${hex(RAFS_V5_MAGIC)}`, 0);
  }
  const fsVersion = buf.readUInt32LE(4);
  if (fsVersion !== RAFS_V5_VERSION) {
    throw new FormatError(`Unsupported RAFS v5 fs_version 0x${hex(fsVersion)}, expected 0x500`, 4);
  }
  const sbSize = buf.readUInt32LE(8);
  if (sbSize !== RAFS_V5_SUPERBLOCK_SIZE) {
    throw new FormatError(`Bad RAFS v5 sb_size ${sbSize}, expected ${RAFS_V5_SUPERBLOCK_SIZE}`, 8);
  }
  const flags = buf.readBigUInt64LE(16);
  // The field is u64; every bit above the known 32-bit mask is unknown.
  if ((flags & ~BigInt(SUPER_FLAGS_KNOWN)) !== 0n) {
    throw new FormatError(`Superblock flags 0x${flags.toString(16)} have unknown bits`, 16);
  }
  return {
    magic,
    fsVersion,
    sbSize,
    blockSize: buf.readUInt32LE(12),
    flags: Number(flags),
    inodesCount: readU64(buf, 24, 'inodes_count'),
    inodeTableOffset: readU64(buf, 32, 'inode_table_offset'),
    prefetchTableOffset: readU64(buf, 40, 'prefetch_table_offset'),
    blobTableOffset: readU64(buf, 48, 'blob_table_offset'),
    inodeTableEntries: buf.readUInt32LE(56),
    prefetchTableEntries: buf.readUInt32LE(60),
    blobTableSize: buf.readUInt32LE(64),
    extendedBlobTableEntries: buf.readUInt32LE(68),
    extendedBlobTableOffset: readU64(buf, 72, 'extended_blob_table_offset'),
  };
}

/** Encode a superblock into a new 8192-byte buffer; the reserved area is zero. */
export function encodeV5Superblock(sb: V5Superblock): Buffer {
  const buf = Buffer.alloc(RAFS_V5_SUPERBLOCK_SIZE);
  buf.writeUInt32LE(sb.magic, 0);
  buf.writeUInt32LE(sb.fsVersion, 4);
  buf.writeUInt32LE(sb.sbSize, 8);
  buf.writeUInt32LE(sb.blockSize, 12);
  buf.writeBigUInt64LE(BigInt(sb.flags), 16);
  buf.writeBigUInt64LE(BigInt(sb.inodesCount), 24);
  buf.writeBigUInt64LE(BigInt(sb.inodeTableOffset), 32);
  buf.writeBigUInt64LE(BigInt(sb.prefetchTableOffset), 40);
  buf.writeBigUInt64LE(BigInt(sb.blobTableOffset), 48);
  buf.writeUInt32LE(sb.inodeTableEntries, 56);
  buf.writeUInt32LE(sb.prefetchTableEntries, 60);
  buf.writeUInt32LE(sb.blobTableSize, 64);
  buf.writeUInt32LE(sb.extendedBlobTableEntries, 68);
  buf.writeBigUInt64LE(BigInt(sb.extendedBlobTableOffset), 72);
  return buf;
}

/** The superblock fields by their upstream labels (SuperblockInfo.fields). */
export function v5SuperblockFields(sb: V5Superblock): Record<string, number> {
  return {
    magic: sb.magic,
    fs_version: sb.fsVersion,
    sb_size: sb.sbSize,
    block_size: sb.blockSize,
    flags: sb.flags,
    inodes_count: sb.inodesCount,
    inode_table_offset: sb.inodeTableOffset,
    prefetch_table_offset: sb.prefetchTableOffset,
    blob_table_offset: sb.blobTableOffset,
    inode_table_entries: sb.inodeTableEntries,
    prefetch_table_entries: sb.prefetchTableEntries,
    blob_table_size: sb.blobTableSize,
    extended_blob_table_entries: sb.extendedBlobTableEntries,
    extended_blob_table_offset: sb.extendedBlobTableOffset,
  };
}

interface TableRange {
  readonly name: string;
  readonly offset: number;
  readonly size: number;
}

/**
 * The reader checks of rafs-format.md 2.2 that relate the superblock to a file of `fileSize`
 * bytes: size, chunk size, table placement (inside [8192, end) and disjoint) and counts.
 * Empty tables are not placed anywhere (an empty prefetch table shares its offset with the blob
 * table; an absent extended blob table has offset 0), so they are exempt.
 */
export function checkV5SuperblockLayout(sb: V5Superblock, fileSize: number): void {
  if (fileSize <= RAFS_V5_SUPERBLOCK_SIZE || fileSize % 8 !== 0) {
    throw new FormatError(
      `Bad RAFS v5 bootstrap size ${fileSize}: must be larger than ${RAFS_V5_SUPERBLOCK_SIZE} and a multiple of 8`,
    );
  }
  if (
    !isPowerOfTwo(sb.blockSize) ||
    sb.blockSize < Limits.MIN_CHUNK_SIZE ||
    sb.blockSize > Limits.MAX_CHUNK_SIZE
  ) {
    throw new FormatError(
      `Bad chunk size 0x${hex(sb.blockSize)}: must be a power of two in 0x1000..0x1000000`,
      12,
    );
  }
  if (sb.inodeTableEntries === 0) throw new FormatError('Inode table is empty: no root inode', 56);
  if (sb.inodesCount > sb.inodeTableEntries) {
    throw new FormatError(
      `inodes_count ${sb.inodesCount} is larger than inode_table_entries ${sb.inodeTableEntries}`,
      24,
    );
  }
  const tables: TableRange[] = [
    { name: 'inode table', offset: sb.inodeTableOffset, size: sb.inodeTableEntries * 4 },
    { name: 'prefetch table', offset: sb.prefetchTableOffset, size: sb.prefetchTableEntries * 4 },
    { name: 'blob table', offset: sb.blobTableOffset, size: sb.blobTableSize },
    {
      name: 'extended blob table',
      offset: sb.extendedBlobTableOffset,
      size: sb.extendedBlobTableEntries * V5_EXT_BLOB_ENTRY_SIZE,
    },
  ];
  const placed = tables.filter((t) => t.size > 0);
  for (const t of placed) {
    if (t.offset < RAFS_V5_SUPERBLOCK_SIZE || t.offset + t.size > fileSize) {
      throw new FormatError(
        `The ${t.name} [${t.offset}, ${t.offset + t.size}) is not inside [${RAFS_V5_SUPERBLOCK_SIZE}, ${fileSize})`,
      );
    }
  }
  for (let i = 0; i < placed.length; i++) {
    for (let j = i + 1; j < placed.length; j++) {
      const a = placed[i]!;
      const b = placed[j]!;
      if (a.offset < b.offset + b.size && b.offset < a.offset + a.size) {
        throw new FormatError(
          `The ${a.name} [${a.offset}, ${a.offset + a.size}) overlaps the ${b.name} [${b.offset}, ${b.offset + b.size})`,
        );
      }
    }
  }
}

function hex(n: number): string {
  return n.toString(16);
}
