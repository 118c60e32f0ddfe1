import type { Compressor, Digester } from '../codec/algorithms.js';
import type { BlobInfo } from '../format/model.js';
import type { BuildInode, BuildTree } from './tree.js';

/**
 * Everything a bootstrap writer (v5 or v6) needs. The writers are pure: a spec in, bytes out.
 * Chunk records in the tree already carry their final blob index, offsets and ids.
 */
export interface BootstrapSpec {
  tree: BuildTree;
  chunkSize: number;
  compressor: Compressor;
  digester: Digester;
  /** Record uid/gid (EXPLICIT_UID_GID); `--repeatable` turns it off and writes 0. */
  explicitUidGid: boolean;
  /** The blob table, in blob-index order. */
  blobs: readonly BlobInfo[];
  /** Inodes matched by the prefetch patterns, in pattern order (v5: written as inos, v6: nids). */
  prefetch: readonly BuildInode[];
  v5?: V5WriterOptions;
  v6?: V6WriterOptions;
}

export interface V5WriterOptions {
  /** Physical record order: 'dfs' pre-order (current builders, default) or 'index' (<= v2.2). */
  recordOrder?: 'dfs' | 'index';
}

/** Knobs for the era-specific bytes of rafs-format.md 3.18; defaults are the current builders'. */
export interface V6WriterOptions {
  /** On-disk i_ino of the root: 1 now, 0 in early-2023 images. */
  rootIno?: 0 | 1;
  /** Alignment of device mapped_blkaddr in bytes: 512 KiB now, 2 MiB (Feb-Mar 2023), 0 = write 0. */
  mappedBlkaddrAlign?: number;
  /** Set ENCRYPTION_NONE in the ext-superblock flags (current builders do). */
  encryptionNoneFlag?: boolean;
}
