import { deepEqual, equal, throws } from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FormatError } from '../../../src/errors/errors.js';
import {
  checkV5SuperblockLayout,
  decodeV5Superblock,
  encodeV5Superblock,
  RAFS_V5_MAGIC,
  RAFS_V5_SUPERBLOCK_SIZE,
  v5SuperblockFields,
  type V5Superblock,
} from '../../../src/format/v5/superblock.js';

// Every field a different value, so a swapped or misplaced field shows in the bytes.
const SB: V5Superblock = {
  magic: RAFS_V5_MAGIC,
  fsVersion: 0x500,
  sbSize: 8192,
  blockSize: 0x10000,
  flags: 0x35,
  inodesCount: 0x01_0203_0405,
  inodeTableOffset: 0x2000,
  prefetchTableOffset: 0x2010,
  blobTableOffset: 0x2018,
  inodeTableEntries: 3,
  prefetchTableEntries: 1,
  blobTableSize: 0x50,
  extendedBlobTableEntries: 1,
  extendedBlobTableOffset: 0x2068,
};

// The first 80 bytes, derived by hand from the layout table of rafs-format.md 2.2.
const SB_HEX = [
  '53464152', // magic "SFAR"
  '00050000', // fs_version 0x500
  '00200000', // sb_size 8192
  '00000100', // block_size 0x10000
  '3500000000000000', // flags
  '0504030201000000', // inodes_count
  '0020000000000000', // inode_table_offset
  '1020000000000000', // prefetch_table_offset
  '1820000000000000', // blob_table_offset
  '03000000', // inode_table_entries
  '01000000', // prefetch_table_entries
  '50000000', // blob_table_size
  '01000000', // extended_blob_table_entries
  '6820000000000000', // extended_blob_table_offset
].join('');

/** The golden values with a consistent inodes_count, for the layout checks. */
const LAYOUT: V5Superblock = { ...SB, inodesCount: 3 };

function fileOf(sb: V5Superblock, size: number): Buffer {
  const buf = Buffer.alloc(size);
  encodeV5Superblock(sb).copy(buf);
  return buf;
}

void describe('v5 superblock encode/decode (golden)', () => {
  void it('encodes the fields at their offsets and zeroes the reserved area', () => {
    const buf = encodeV5Superblock(SB);
    equal(buf.length, RAFS_V5_SUPERBLOCK_SIZE);
    equal(buf.subarray(0, 80).toString('hex'), SB_HEX);
    equal(
      buf.subarray(80).every((b) => b === 0),
      true,
    );
  });

  void it('decodes the golden bytes back to the same values', () => {
    const buf = Buffer.alloc(RAFS_V5_SUPERBLOCK_SIZE);
    Buffer.from(SB_HEX, 'hex').copy(buf);
    deepEqual(decodeV5Superblock(buf), SB);
  });

  void it('names the fields by their upstream labels', () => {
    deepEqual(Object.keys(v5SuperblockFields(SB)), [
      'magic',
      'fs_version',
      'sb_size',
      'block_size',
      'flags',
      'inodes_count',
      'inode_table_offset',
      'prefetch_table_offset',
      'blob_table_offset',
      'inode_table_entries',
      'prefetch_table_entries',
      'blob_table_size',
      'extended_blob_table_entries',
      'extended_blob_table_offset',
    ]);
  });
});

void describe('v5 superblock checks', () => {
  void it('checks length, magic, version and sb_size in that order', () => {
    throws(() => decodeV5Superblock(Buffer.alloc(100)), /Truncated RAFS v5 superblock: 100 bytes/);
    throws(() => decodeV5Superblock(encodeV5Superblock({ ...SB, magic: 1 })), /Bad RAFS v5 magic 0x1/);
    throws(() => decodeV5Superblock(encodeV5Superblock({ ...SB, fsVersion: 0x400 })), /fs_version 0x400/);
    throws(() => decodeV5Superblock(encodeV5Superblock({ ...SB, sbSize: 4096 })), /sb_size 4096/);
  });

  void it('rejects unknown flag bits, including bits above 32', () => {
    throws(
      () => decodeV5Superblock(encodeV5Superblock({ ...SB, flags: 0x400 })),
      /flags 0x400 have unknown bits/,
    );
    const buf = encodeV5Superblock(SB);
    buf.writeUInt32LE(1, 20);
    throws(() => decodeV5Superblock(buf), FormatError);
  });

  void it('rejects u64 fields beyond 2^53', () => {
    const buf = encodeV5Superblock(SB);
    buf.writeBigUInt64LE(2n ** 60n, 32);
    throws(() => decodeV5Superblock(buf), /inode_table_offset is too large/);
  });

  void it('accepts the golden layout in a file that holds its tables', () => {
    checkV5SuperblockLayout(LAYOUT, 0x2100);
  });

  void it('rejects bad file sizes', () => {
    throws(() => checkV5SuperblockLayout(LAYOUT, 8192), /bootstrap size 8192/);
    throws(() => checkV5SuperblockLayout(LAYOUT, 0x2104), /multiple of 8/);
  });

  void it('rejects chunk sizes that are not a power of two in 4 KiB..16 MiB', () => {
    for (const blockSize of [0, 0x800, 0x3000, 0x200_0000]) {
      throws(() => checkV5SuperblockLayout({ ...LAYOUT, blockSize }, 0x2100), /Bad chunk size/);
    }
    checkV5SuperblockLayout({ ...LAYOUT, blockSize: 0x1000 }, 0x2100);
    checkV5SuperblockLayout({ ...LAYOUT, blockSize: 0x100_0000 }, 0x2100);
  });

  void it('rejects absurd counts without allocating', () => {
    throws(
      () => checkV5SuperblockLayout({ ...LAYOUT, inodeTableEntries: 0xffff_ffff }, 0x2100),
      /inode table .* is not inside/,
    );
    throws(
      () => checkV5SuperblockLayout({ ...LAYOUT, prefetchTableEntries: 0xffff_ffff }, 0x2100),
      /prefetch table/,
    );
    throws(
      () => checkV5SuperblockLayout({ ...LAYOUT, extendedBlobTableEntries: 0xffff_ffff }, 0x2100),
      /extended blob table/,
    );
    throws(() => checkV5SuperblockLayout({ ...LAYOUT, blobTableSize: 0xffff_ffff }, 0x2100), /blob table/);
    throws(
      () => checkV5SuperblockLayout({ ...LAYOUT, inodeTableEntries: 0 }, 0x2100),
      /Inode table is empty/,
    );
  });

  void it('requires inodes_count <= inode_table_entries', () => {
    throws(
      () => checkV5SuperblockLayout({ ...LAYOUT, inodesCount: 4 }, 0x2100),
      /inodes_count 4 is larger than inode_table_entries 3/,
    );
  });

  void it('rejects tables inside the superblock, past the end, or overlapping', () => {
    throws(
      () => checkV5SuperblockLayout({ ...LAYOUT, inodeTableOffset: 0x1ff8 }, 0x2100),
      /inode table \[8184/,
    );
    throws(
      () => checkV5SuperblockLayout({ ...LAYOUT, extendedBlobTableOffset: 0x20c8 }, 0x2100),
      /not inside/,
    );
    throws(
      () => checkV5SuperblockLayout({ ...LAYOUT, blobTableOffset: 0x2008 }, 0x2100),
      /inode table \[8192, 8204\) overlaps the blob table/,
    );
  });

  void it('exempts empty tables from placement', () => {
    // An empty prefetch table shares its offset with the blob table; no extended table at 0.
    checkV5SuperblockLayout(
      {
        ...LAYOUT,
        prefetchTableEntries: 0,
        prefetchTableOffset: 0x2018,
        extendedBlobTableEntries: 0,
        extendedBlobTableOffset: 0,
      },
      0x2100,
    );
  });

  void it('round-trips through a file buffer', () => {
    const buf = fileOf(SB, 0x2100);
    deepEqual(decodeV5Superblock(buf), SB);
  });
});
