import type { Compressor, Digester } from '../codec/algorithms.js';

/**
 * The version-independent view of a RAFS bootstrap that every consumer (CLI, builder, daemon)
 * works against. `RafsV5Bootstrap` and `RafsV6Bootstrap` implement `Bootstrap` over the raw bytes
 * of a bootstrap held in memory; nothing is decoded until asked for, so opening a bootstrap
 * costs a superblock parse and a few table checks, whatever its size.
 *
 * Inode numbers: `ino` is the runtime inode number upstream nydusd reports. v5: the record's
 * `i_ino` (root 1; hardlink occurrences share the first occurrence's ino). v6: the nid (root 128
 * normally; hardlinks share one inode and so one nid).
 */

export interface SuperblockInfo {
  readonly version: 5 | 6;
  /** RafsSuperFlags (flags.ts SuperFlag). */
  readonly flags: number;
  readonly chunkSize: number;
  readonly compressor: Compressor;
  readonly digester: Digester;
  readonly explicitUidGid: boolean;
  readonly hasXattr: boolean;
  /** v5: `inodes_count`; v6: `inos`. */
  readonly inodesCount: number;
  /** Raw superblock fields by their upstream labels, for `inspect stats` and tests. */
  readonly fields: Readonly<Record<string, number | string>>;
}

export interface BlobInfo {
  /** Position in the blob table; chunk records refer to blobs by it. */
  readonly index: number;
  /** Blob id as recorded in the bootstrap (for inline-meta blobs possibly a placeholder). */
  readonly blobId: string;
  readonly chunkSize: number;
  readonly chunkCount: number;
  readonly compressor: Compressor;
  readonly digester: Digester;
  /** Blob features (flags.ts BlobFeature). */
  readonly features: number;
  readonly compressedSize: number;
  readonly uncompressedSize: number;
  /** v5 blob table readahead region; 0 for v6. */
  readonly readaheadOffset: number;
  readonly readaheadSize: number;
  /** v6 blob-meta (ci) location in the data blob; all 0 for v5. */
  readonly ciCompressor: Compressor;
  readonly ciOffset: number;
  readonly ciCompressedSize: number;
  readonly ciUncompressedSize: number;
  /** v6 ToC; size 0 and an all-zero digest when unknown. */
  readonly tocSize: number;
  readonly tocDigest: Buffer;
  readonly metaDigest: Buffer;
  readonly metaSize: number;
  readonly cipher: number;
  /** v6 device slot: blocks and mapped_blkaddr; 0 for v5. */
  readonly deviceBlocks: number;
  readonly mappedBlkaddr: number;
}

/** One 80-byte chunk record, or the same facts from a blob's ci table (rafs-format.md 2.7). */
export interface ChunkInfo {
  /** H(uncompressed data), 32 bytes. */
  readonly id: Buffer;
  readonly blobIndex: number;
  /** ChunkFlag bits. */
  readonly flags: number;
  readonly compressedOffset: number;
  readonly compressedSize: number;
  readonly uncompressedOffset: number;
  readonly uncompressedSize: number;
  readonly fileOffset: number;
  /** Chunk index within its blob (the ci index). */
  readonly index: number;
  readonly crc32: number;
}

export interface InodeAttr {
  readonly ino: number;
  /** Full st_mode (type and permission bits). */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly size: number;
  /** 512-byte units as stored (v5) or derived from the size (v6). */
  readonly blocks: number;
  readonly nlink: number;
  readonly rdev: number;
  readonly mtime: number;
  readonly mtimeNsec: number;
}

export interface DirEntry {
  readonly name: Buffer;
  readonly ino: number;
  /** The S_IFMT bits of the child's mode. */
  readonly type: number;
}

export interface XattrPair {
  /** Full name including its namespace prefix (`user.`, `security.`, ...). */
  readonly name: Buffer;
  readonly value: Buffer;
}

export interface Bootstrap {
  readonly superblock: SuperblockInfo;
  readonly blobs: readonly BlobInfo[];
  readonly rootIno: number;
  /** Attributes of an inode; throws ERR_NOT_FOUND / ERR_FORMAT for a bad ino. */
  getAttr(ino: number): InodeAttr;
  /** The child named `name` of directory `dir`, by binary search on raw bytes. */
  lookup(dir: number, name: Buffer): DirEntry | undefined;
  /** Number of children of a directory, "." and ".." excluded. */
  childCount(dir: number): number;
  /**
   * Children of a directory in on-disk (byte-sorted) order, "." and ".." excluded, starting at
   * child position `start`, at most `limit` of them.
   */
  readdir(dir: number, start?: number, limit?: number): DirEntry[];
  /** Target of a symlink. */
  readlink(ino: number): Buffer;
  /** Extended attributes of an inode (empty when it has none). */
  xattrs(ino: number): XattrPair[];
  /** Chunks of a regular file in file order; chunk k covers [k*chunkSize, ...). */
  chunks(ino: number): ChunkInfo[];
  /** Inode numbers of the prefetch table (v5: i_ino; v6: nids), in table order. */
  prefetchInos(): number[];
  /**
   * Every chunk record the bootstrap holds (v5: walked from the inodes; v6: the chunk table),
   * for `check`, `inspect chunk` and `stat`.
   */
  allChunks(): ChunkInfo[];
  /**
   * Validate every structure reachable from the root: inode records, names, directory order,
   * chunk records, symlinks, xattrs, and (v5) inode digests. Throws on the first problem.
   */
  validate(): void;
  /** Replace a blob's recorded id (inline-meta blobs carry a placeholder). */
  setBlobId(index: number, blobId: string): void;
}
