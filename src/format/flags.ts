import { S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK } from '../util/mode.js';
import type { Compressor, Digester } from '../codec/algorithms.js';

/** RafsSuperFlags (rafs-format.md 1.1): v5 superblock and v6 ext-superblock `flags`. */
export const SuperFlag = {
  COMPRESSION_NONE: 0x1,
  COMPRESSION_LZ4: 0x2,
  HASH_BLAKE3: 0x4,
  HASH_SHA256: 0x8,
  EXPLICIT_UID_GID: 0x10,
  HAS_XATTR: 0x20,
  COMPRESSION_GZIP: 0x40,
  COMPRESSION_ZSTD: 0x80,
  INLINED_CHUNK_DIGEST: 0x100,
  TARFS_MODE: 0x200,
  ENCRYPTION_NONE: 0x0100_0000,
  ENCRYPTION_AES_128_XTS: 0x0200_0000,
} as const;

/** Every bit a reader accepts; the reserved-compat bits 0x0400_0000..0x8000_0000 included. */
export const SUPER_FLAGS_KNOWN = 0xff00_03ff;

const SUPER_FLAG_NAMES: readonly [number, string][] = Object.entries(SuperFlag).map(([k, v]) => [v, k]);

export function superFlagNames(flags: number): string[] {
  return SUPER_FLAG_NAMES.filter(([bit]) => (flags & bit) !== 0).map(([, name]) => name);
}

/** Compressor by the decoding priority of rafs-format.md 1.1 (no bit at all means lz4). */
export function compressorOfFlags(flags: number): Compressor {
  if (flags & SuperFlag.COMPRESSION_NONE) return 'none';
  if (flags & SuperFlag.COMPRESSION_LZ4) return 'lz4_block';
  if (flags & SuperFlag.COMPRESSION_GZIP) return 'gzip';
  if (flags & SuperFlag.COMPRESSION_ZSTD) return 'zstd';
  return 'lz4_block';
}

export function digesterOfFlags(flags: number): Digester {
  if (flags & SuperFlag.HASH_BLAKE3) return 'blake3';
  if (flags & SuperFlag.HASH_SHA256) return 'sha256';
  return 'blake3';
}

export function compressorFlag(c: Compressor): number {
  switch (c) {
    case 'none':
      return SuperFlag.COMPRESSION_NONE;
    case 'lz4_block':
      return SuperFlag.COMPRESSION_LZ4;
    case 'gzip':
      return SuperFlag.COMPRESSION_GZIP;
    case 'zstd':
      return SuperFlag.COMPRESSION_ZSTD;
  }
}

export function digesterFlag(d: Digester): number {
  return d === 'blake3' ? SuperFlag.HASH_BLAKE3 : SuperFlag.HASH_SHA256;
}

/** Chunk flags (rafs-format.md 1.4), u32 in the 80-byte chunk record. */
export const ChunkFlag = {
  COMPRESSED: 0x1,
  HOLECHUNK: 0x2,
  ENCRYPTED: 0x4,
  BATCH: 0x8,
  HAS_CRC32: 0x10,
} as const;

/** Blob features (rafs-format.md 1.5). */
export const BlobFeature = {
  ALIGNED: 0x1,
  INLINED_FS_META: 0x2,
  CHUNK_INFO_V2: 0x4,
  ZRAN: 0x8,
  SEPARATE: 0x10,
  INLINED_CHUNK_DIGEST: 0x20,
  TARFS: 0x40,
  BATCH: 0x80,
  ENCRYPTED: 0x100,
  IS_CHUNKDICT_GENERATED: 0x200,
  IS_SEPARATED_WITH_PREFETCH_FILES: 0x400,
  EXTERNAL: 0x800,
  HAS_TAR_HEADER: 0x1000_0000,
  HAS_TOC: 0x2000_0000,
  CAP_TAR_TOC: 0x4000_0000,
  V5_NO_EXT_BLOB_TABLE: 0x8000_0000,
} as const;

/** Unknown "incompatible" low bits that readers must reject. */
export const BLOB_FEATURES_INCOMPAT_UNKNOWN = 0x0000_f000;

const BLOB_FEATURE_NAMES: readonly [number, string][] = Object.entries(BlobFeature).map(([k, v]) => [v, k]);

export function blobFeatureNames(features: number): string[] {
  return BLOB_FEATURE_NAMES.filter(([bit]) => (features & bit) >>> 0 !== 0).map(([, name]) => name);
}

/** v5 inode flags (rafs-format.md 1.3). */
export const InodeFlag = {
  SYMLINK: 0x1,
  HARDLINK: 0x2,
  XATTR: 0x4,
  HAS_HOLE: 0x8,
} as const;

/** st_mode file-type bits (util/mode.ts). */
export { S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK };

export function isDir(mode: number): boolean {
  return (mode & S_IFMT) === S_IFDIR;
}
export function isReg(mode: number): boolean {
  return (mode & S_IFMT) === S_IFREG;
}
export function isSymlink(mode: number): boolean {
  return (mode & S_IFMT) === S_IFLNK;
}
export function isValidFileType(mode: number): boolean {
  switch (mode & S_IFMT) {
    case S_IFSOCK:
    case S_IFLNK:
    case S_IFREG:
    case S_IFBLK:
    case S_IFDIR:
    case S_IFCHR:
    case S_IFIFO:
      return true;
    default:
      return false;
  }
}

/** Sizes and limits every decoder bounds its input with. */
export const Limits = {
  MIN_CHUNK_SIZE: 0x1000,
  MAX_CHUNK_SIZE: 0x100_0000,
  MAX_CHUNKS_PER_BLOB: 1 << 24,
  MAX_BLOBS: 255,
  MAX_NAME: 255,
  MAX_XATTR_NAME: 255,
  MAX_XATTR_VALUE: 0x10000,
  MAX_SYMLINK: 4096,
} as const;
