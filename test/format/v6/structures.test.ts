import { deepEqual, equal, throws } from 'node:assert/strict';
import { describe, it } from 'node:test';
import { NydusError } from '../../../src/errors/errors.js';
import { S_IFCHR, S_IFDIR, S_IFLNK, S_IFREG } from '../../../src/format/flags.js';
import {
  CI_ENTRY_V1_SIZE,
  checkBlobEntry,
  decodeBlobEntry,
  encodeBlobEntry,
  type BlobTableEntry,
} from '../../../src/format/v6/blob-table.js';
import {
  chunkFormat,
  decodeChunkFormat,
  decodeChunkIndex,
  encodeChunkIndex,
  type ChunkRef,
} from '../../../src/format/v6/chunk-index.js';
import { checkDeviceSlot, decodeDeviceSlot, encodeDeviceSlot } from '../../../src/format/v6/device-table.js';
import {
  decodeDirBlock,
  DirBlock,
  dirDataSize,
  direntTypeOf,
  DirentType,
  encodeDirData,
  modeOfDirentType,
  type Dirent,
} from '../../../src/format/v6/dirent.js';
import { DataLayout, decodeInode, encodeInode, type V6Inode } from '../../../src/format/v6/inode.js';
import { decodePrefetchTable, encodePrefetchTable } from '../../../src/format/v6/prefetch-table.js';
import {
  decodeErofsSuper,
  decodeRafsExtSuper,
  encodeErofsSuper,
  encodeRafsExtSuper,
  type ErofsSuperblock,
  type RafsExtSuperblock,
} from '../../../src/format/v6/superblock.js';
import {
  decodeXattrIbody,
  encodeXattrIbody,
  encodeXattrIbodyHeader,
  splitXattrName,
  xattrIbodySize,
  xattrIbodySizeOf,
  xattrIcountOf,
} from '../../../src/format/v6/xattr.js';

/** Hex with spaces and line breaks allowed. */
function hex(s: string): Buffer {
  return Buffer.from(s.replace(/\s+/g, ''), 'hex');
}

function code(c: string): (e: unknown) => boolean {
  return (e) => e instanceof NydusError && e.code === c;
}

function matches(re: RegExp): (e: unknown) => boolean {
  return (e) => e instanceof NydusError && re.test(e.message);
}

describe('v6 EROFS superblock (rafs-format.md 3.2)', () => {
  const SB: ErofsSuperblock = {
    checksum: 0,
    featureCompat: 0x4000_0000,
    blkszbits: 12,
    extslots: 0,
    rootNid: 128,
    inos: 3,
    buildTime: 0x0102_0304_0506,
    buildTimeNsec: 7,
    blocks: 9,
    metaBlkaddr: 2,
    xattrBlkaddr: 0,
    uuid: Buffer.alloc(16, 0x11),
    volumeName: Buffer.alloc(16, 0x22),
    featureIncompat: 0xc,
    u1: 0,
    extraDevices: 1,
    devtSlotoff: 11,
  };
  const SB_HEX = [
    'e2e1f5e0', // magic
    '00000000', // checksum
    '00000040', // feature_compat RAFS_V6
    '0c', // blkszbits
    '00', // extslots
    '8000', // root_nid 128
    '0300000000000000', // inos
    '0605040302010000', // build_time
    '07000000', // build_time_nsec
    '09000000', // blocks
    '02000000', // meta_blkaddr
    '00000000', // xattr_blkaddr
    '11'.repeat(16), // uuid
    '22'.repeat(16), // volume_name
    '0c000000', // feature_incompat CHUNKED_FILE | DEVICE_TABLE
    '0000', // u1
    '0100', // extra_devices
    '0b00', // devt_slotoff
    '00'.repeat(38), // reserved
  ].join('');

  it('encodes to the golden bytes at offset 1024 and decodes back', () => {
    const buf = Buffer.alloc(1152, 0xff);
    encodeErofsSuper(SB, buf);
    equal(buf.subarray(1024).toString('hex'), SB_HEX);
    deepEqual(buf.subarray(0, 1024), Buffer.alloc(1024, 0xff));
    deepEqual(decodeErofsSuper(buf), SB);
  });

  it('rejects a short buffer and a bad magic with FormatError', () => {
    throws(() => decodeErofsSuper(Buffer.alloc(1100)), matches(/Truncated EROFS superblock/));
    const buf = Buffer.alloc(1152);
    encodeErofsSuper(SB, buf);
    buf[1024] = 0;
    throws(() => decodeErofsSuper(buf), matches(/Bad EROFS magic 0xe0f5e100/));
  });

  it('refuses values that do not fit their field', () => {
    throws(() => encodeErofsSuper({ ...SB, rootNid: 0x10000 }, Buffer.alloc(1152)), code('ERR_INVALID_ARG'));
    throws(() => encodeErofsSuper(SB, Buffer.alloc(1100)), code('ERR_INVALID_ARG'));
  });
});

describe('v6 RAFS extended superblock (rafs-format.md 3.3)', () => {
  const EXT: RafsExtSuperblock = {
    flags: 0x0100_0194,
    blobTableOffset: 0x1000,
    blobTableSize: 0x100,
    chunkSize: 0x10_0000,
    chunkTableOffset: 0x4000,
    chunkTableSize: 0xa0,
    prefetchTableOffset: 0x1100,
    prefetchTableSize: 8,
  };
  const EXT_HEX = [
    '9401000100000000', // flags
    '0010000000000000', // blob_table_offset
    '00010000', // blob_table_size
    '00001000', // chunk_size 1 MiB
    '0040000000000000', // chunk_table_offset
    'a000000000000000', // chunk_table_size
    '0011000000000000', // prefetch_table_offset
    '08000000', // prefetch_table_size
    '00000000', // padding
    '00'.repeat(200), // reserved
  ].join('');

  it('encodes to the golden bytes at offset 1152 and decodes back', () => {
    const buf = Buffer.alloc(1408, 0xff);
    encodeRafsExtSuper(EXT, buf);
    equal(buf.subarray(1152).toString('hex'), EXT_HEX);
    deepEqual(decodeRafsExtSuper(buf), EXT);
  });

  it('rejects a truncated ext superblock', () => {
    throws(() => decodeRafsExtSuper(Buffer.alloc(1300)), matches(/Truncated RAFS extended superblock/));
  });
});

describe('v6 device slot (rafs-format.md 3.4)', () => {
  const id = 'be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef';
  const HEX = Buffer.from(id).toString('hex') + '09000000' + '00020000' + '00'.repeat(56);

  it('encodes and decodes the golden bytes', () => {
    const buf = Buffer.alloc(128, 0xff);
    encodeDeviceSlot({ blobId: id, blocks: 9, mappedBlkaddr: 512 }, buf, 0);
    equal(buf.toString('hex'), HEX);
    deepEqual(decodeDeviceSlot(buf, 0), { blobId: id, blocks: 9, mappedBlkaddr: 512 });
  });

  it('requires a 64-char blob id and non-zero blocks', () => {
    throws(
      () => checkDeviceSlot({ blobId: 'abc', blocks: 1, mappedBlkaddr: 0 }, 0, 1408),
      matches(/has 3 chars/),
    );
    throws(
      () => checkDeviceSlot({ blobId: id, blocks: 0, mappedBlkaddr: 0 }, 2, 1664),
      matches(/slot 2: blocks is 0/),
    );
  });
});

describe('v6 blob table entry (rafs-format.md 3.5)', () => {
  const E: BlobTableEntry = {
    blobId: 'be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef',
    blobIndex: 0,
    chunkSize: 0x10_0000,
    chunkCount: 2,
    compressor: 'zstd',
    digester: 'blake3',
    features: 0x7000_0021,
    compressedSize: 14554,
    uncompressedSize: 0x9000,
    tocSize: 0x400,
    ciCompressor: 'none',
    ciOffset: 8314,
    ciCompressedSize: 32,
    ciUncompressedSize: 32,
    tocDigest: Buffer.alloc(32, 0xaa),
    metaDigest: Buffer.alloc(32, 0xbb),
    metaSize: 0x1234n,
    cipherIv: Buffer.alloc(8, 0xcc),
    cipher: 0,
  };
  const HEX = [
    Buffer.from(E.blobId).toString('hex'),
    '00000000', // blob_index
    '00001000', // chunk_size
    '02000000', // chunk_count
    '03000000', // compression_algo zstd
    '00000000', // digest_algo blake3
    '21000070', // features
    'da38000000000000', // compressed_size 14554
    '0090000000000000', // uncompressed_size
    '00040000', // blob_toc_size
    '00000000', // ci_compressor none
    '7a20000000000000', // ci_offset 8314
    '2000000000000000', // ci_compressed_size
    '2000000000000000', // ci_uncompressed_size
    'aa'.repeat(32), // blob_toc_digest
    'bb'.repeat(32), // blob_meta_digest
    '3412000000000000', // blob_meta_size
    'cc'.repeat(8), // cipher_iv
    '00000000', // cipher_algo
    '00'.repeat(36), // reserved
  ].join('');

  it('encodes and decodes the golden bytes', () => {
    const buf = Buffer.alloc(256, 0xff);
    encodeBlobEntry(E, buf, 0);
    equal(buf.toString('hex'), HEX);
    deepEqual(decodeBlobEntry(buf, 0), E);
  });

  it('rejects unknown algorithm enums while decoding', () => {
    const buf = hex(HEX);
    buf.writeUInt32LE(4, 76);
    throws(() => decodeBlobEntry(buf, 0), matches(/Unknown blob compression_algo 4 \(at offset 76\)/));
    buf.writeUInt32LE(3, 76);
    buf.writeUInt32LE(2, 80);
    throws(() => decodeBlobEntry(buf, 0), matches(/Unknown blob digest_algo 2/));
  });

  it('accepts the entry and rejects each broken reader rule', () => {
    checkBlobEntry(E, 0, 0x10_0000, 4096);
    const bad: [Partial<BlobTableEntry>, RegExp][] = [
      [{ blobIndex: 1 }, /entry 0: blob_index 1 does not match its position/],
      [{ chunkSize: 0x1000 }, /chunk_size 0x1000 differs from the filesystem's 0x100000/],
      [{ chunkCount: (1 << 24) + 1 }, /chunk_count 16777217 exceeds 2\^24/],
      [{ features: 0x7000_1021 }, /unknown incompatible bits/],
      [{ features: 0xf000_0021 }, /in-memory-only bit/],
      [{ features: 0x7000_0020 }, /lack ALIGNED/],
      [{ cipher: 4 }, /unknown cipher_algo 4/],
      [{ ciCompressedSize: 33 }, /ci_compressed_size 33 exceeds ci_uncompressed_size 32/],
      [{ ciUncompressedSize: 48, ciCompressedSize: 48 }, /ci_uncompressed_size 48 is not 16 \* 2 chunks/],
      [{ features: 0x7000_0025 }, /ci_uncompressed_size 32 is not 24 \* 2 chunks/],
      [{ features: 0x7000_00a1 }, /need CHUNK_INFO_V2/],
      [{ features: 0x7000_00a5 }, /less than 24 \* 2 chunks/],
    ];
    for (const [patch, re] of bad) {
      throws(() => checkBlobEntry({ ...E, ...patch }, 0, 0x10_0000, 4096), matches(re), re.source);
    }
    checkBlobEntry(
      { ...E, features: 0x7000_00a5, ciUncompressedSize: 80, ciCompressedSize: 80 },
      0,
      0x10_0000,
      0,
    );
    // tarfs blobs need neither ALIGNED nor blob meta
    checkBlobEntry(
      { ...E, features: 0x4000_0040, ciUncompressedSize: 0, ciCompressedSize: 0 },
      0,
      0x10_0000,
      0,
    );
    equal(CI_ENTRY_V1_SIZE, 16);
  });
});

describe('v6 inodes (rafs-format.md 3.8)', () => {
  const EXTENDED: V6Inode = {
    extended: true,
    layout: DataLayout.CHUNK_BASED,
    xattrIcount: 0,
    mode: S_IFREG | 0o644,
    size: 16931,
    iu: 0x28,
    ino: 2,
    uid: 1000,
    gid: 100,
    mtime: 0x63f2_3c61,
    mtimeNsec: 0x2578_9c56,
    nlink: 1,
  };
  const EXTENDED_HEX = [
    '0900', // i_format: extended | CHUNK_BASED << 1
    '0000', // i_xattr_icount
    'a481', // i_mode 0o100644
    '0000', // reserved
    '2342000000000000', // i_size 16931
    '28000000', // i_u: INDEXES | (20 - 12)
    '02000000', // i_ino
    'e8030000', // i_uid
    '64000000', // i_gid
    '613cf26300000000', // i_mtime
    '569c7825', // i_mtime_nsec
    '01000000', // i_nlink
    '00'.repeat(16), // reserved
  ].join('');

  const COMPACT: V6Inode = {
    extended: false,
    layout: DataLayout.FLAT_INLINE,
    xattrIcount: 2,
    mode: S_IFDIR | 0o755,
    size: 67,
    iu: 3,
    ino: 1,
    uid: 5,
    gid: 6,
    mtime: 0,
    mtimeNsec: 0,
    nlink: 2,
  };
  const COMPACT_HEX = [
    '0400', // i_format: compact | FLAT_INLINE << 1
    '0200', // i_xattr_icount
    'ed41', // i_mode 0o40755
    '0200', // i_nlink
    '43000000', // i_size
    '00000000', // reserved
    '03000000', // i_u
    '01000000', // i_ino
    '0500', // i_uid
    '0600', // i_gid
    '00000000', // reserved
  ].join('');

  it('encodes and decodes an extended inode', () => {
    const buf = Buffer.alloc(64, 0xff);
    equal(encodeInode(EXTENDED, buf, 0), 64);
    equal(buf.toString('hex'), EXTENDED_HEX);
    deepEqual(decodeInode(buf, 0), EXTENDED);
  });

  it('encodes and decodes a compact inode (no mtime)', () => {
    const buf = Buffer.alloc(40, 0xff);
    equal(encodeInode(COMPACT, buf, 8), 32);
    equal(buf.subarray(8).toString('hex'), COMPACT_HEX);
    deepEqual(decodeInode(buf, 8), COMPACT);
    throws(() => encodeInode({ ...COMPACT, mtime: 1 }, buf, 0), code('ERR_INVALID_ARG'));
    throws(() => encodeInode({ ...COMPACT, uid: 0x10000 }, buf, 0), code('ERR_INVALID_ARG'));
  });

  it('rejects unknown i_format bits, compressed and unknown layouts, and bad modes', () => {
    const buf = hex(EXTENDED_HEX);
    buf.writeUInt16LE(0x19, 0);
    throws(() => decodeInode(buf, 0), matches(/i_format 0x19 has unknown bits/));
    buf.writeUInt16LE(0x03, 0);
    throws(() => decodeInode(buf, 0), code('ERR_UNSUPPORTED'));
    buf.writeUInt16LE(0x07, 0);
    throws(() => decodeInode(buf, 0), code('ERR_UNSUPPORTED'));
    buf.writeUInt16LE(0x0b, 0);
    throws(() => decodeInode(buf, 0), matches(/unknown data layout 5/));
    buf.writeUInt16LE(0x09, 0);
    buf.writeUInt16LE(0o170644, 4);
    throws(() => decodeInode(buf, 0), matches(/mode 0o170644 is not a file type/));
    throws(() => decodeInode(hex(EXTENDED_HEX).subarray(0, 40), 0), matches(/Truncated extended inode/));
    throws(() => decodeInode(buf, -1), matches(/Truncated inode/));
  });
});

describe('v6 xattrs (rafs-format.md 3.9)', () => {
  const PAIRS = [
    { name: Buffer.from('user.foo'), value: Buffer.from('bar') },
    { name: Buffer.from('security.selinux'), value: Buffer.from('x') },
    { name: Buffer.from('system.posix_acl_access'), value: hex('02000000') },
    { name: Buffer.from('trusted.t'), value: Buffer.alloc(0) },
    { name: Buffer.from('other.name'), value: Buffer.from('v') },
  ];
  const HEX = [
    '000000000000000000000000', // ibody header: name filter, shared_count 0, reserved
    '03010300',
    '666f6f',
    '626172',
    '0000', // user. "foo" = "bar", padded to 12
    '07060100',
    '73656c696e7578',
    '78', // security. "selinux" = "x"
    '00020400',
    '02000000', // system.posix_acl_access (whole name)
    '01040000',
    '74',
    '000000', // trusted. "t" = ""
    '0a000100',
    '6f746865722e6e616d65',
    '76',
    '00', // no prefix: "other.name" = "v"
  ].join('');

  it('encodes the ibody golden bytes and decodes them back', () => {
    const body = encodeXattrIbody(PAIRS);
    equal(body.toString('hex'), HEX);
    equal(xattrIbodySizeOf(PAIRS), 68);
    equal(xattrIcountOf(68), 15);
    equal(xattrIbodySize(15), 68);
    equal(xattrIbodySize(0), 0);
    deepEqual(decodeXattrIbody(body, 0, 68), { nameFilter: 0, sharedIds: [], entries: PAIRS });
    equal(encodeXattrIbody([]).length, 0);
  });

  it('splits names by the prefix table in order', () => {
    deepEqual(splitXattrName(Buffer.from('system.posix_acl_default')), { index: 3, suffix: Buffer.alloc(0) });
    deepEqual(splitXattrName(Buffer.from('system.posix_acl_accessx')), {
      index: 0,
      suffix: Buffer.from('system.posix_acl_accessx'),
    });
    deepEqual(splitXattrName(Buffer.from('user.')), { index: 0, suffix: Buffer.from('user.') });
  });

  it('decodes shared xattr ids after the header', () => {
    const buf = Buffer.alloc(24);
    equal(encodeXattrIbodyHeader([5, 7], buf, 0), 20);
    equal(buf.subarray(0, 20).toString('hex'), '00000000' + '02' + '00'.repeat(7) + '05000000' + '07000000');
    deepEqual(decodeXattrIbody(buf.subarray(0, 20), 0, 20), {
      nameFilter: 0,
      sharedIds: [5, 7],
      entries: [],
    });
    throws(() => decodeXattrIbody(buf.subarray(0, 16), 0, 16), matches(/cannot hold 2 shared ids/));
  });

  it('rejects unknown prefixes and entries running past the ibody', () => {
    const body = encodeXattrIbody(PAIRS.slice(0, 1));
    body[13] = 5;
    throws(() => decodeXattrIbody(body, 0, body.length), matches(/Unknown xattr name_index 5/));
    body[13] = 1;
    body.writeUInt16LE(9, 14);
    throws(() => decodeXattrIbody(body, 0, body.length), matches(/runs past its area end/));
    throws(() => decodeXattrIbody(body, 0, body.length + 4), matches(/Truncated xattr ibody/));
  });
});

describe('v6 directory blocks (rafs-format.md 3.10)', () => {
  const ROOT: Dirent[] = [
    { name: Buffer.from('.'), nid: 128, fileType: DirentType.DIR },
    { name: Buffer.from('..'), nid: 128, fileType: DirentType.DIR },
    { name: Buffer.from('lib.rs'), nid: 133, fileType: DirentType.REG },
    { name: Buffer.from('sync_io.rs'), nid: 136, fileType: DirentType.REG },
  ];
  const ROOT_HEX = [
    '8000000000000000',
    '3000',
    '02',
    '00', // "." -> 128, nameoff 48
    '8000000000000000',
    '3100',
    '02',
    '00', // ".." -> 128, nameoff 49
    '8500000000000000',
    '3300',
    '01',
    '00', // "lib.rs" -> 133, nameoff 51
    '8800000000000000',
    '3900',
    '01',
    '00', // "sync_io.rs" -> 136, nameoff 57
    Buffer.from('...lib.rssync_io.rs').toString('hex'),
  ].join('');

  it('packs one block into i_size bytes and decodes it back', () => {
    const data = encodeDirData(ROOT);
    equal(data.toString('hex'), ROOT_HEX);
    equal(dirDataSize(ROOT.map((e) => e.name)), 67);
    deepEqual(decodeDirBlock(data), ROOT);
  });

  it('closes a block when the next entry would not fit', () => {
    // 64-byte blocks: ".", "..", "a", "bb" cost 13+14+13+14 = 54; "ccc" (15) starts block 2.
    const entries: Dirent[] = [
      { name: Buffer.from('.'), nid: 1, fileType: DirentType.DIR },
      { name: Buffer.from('..'), nid: 9, fileType: DirentType.DIR },
      { name: Buffer.from('a'), nid: 2, fileType: DirentType.REG },
      { name: Buffer.from('bb'), nid: 3, fileType: DirentType.LNK },
      { name: Buffer.from('ccc'), nid: 0x1_0000_0004, fileType: DirentType.CHR },
    ];
    const data = encodeDirData(entries, 64);
    equal(
      data.toString('hex'),
      [
        '0100000000000000',
        '3000',
        '02',
        '00',
        '0900000000000000',
        '3100',
        '02',
        '00',
        '0200000000000000',
        '3300',
        '01',
        '00',
        '0300000000000000',
        '3400',
        '07',
        '00',
        Buffer.from('...abb').toString('hex'),
        '00'.repeat(10), // block 0 padding to 64
        '0400000001000000',
        '0c00',
        '03',
        '00',
        Buffer.from('ccc').toString('hex'),
      ].join(''),
    );
    equal(
      dirDataSize(
        entries.map((e) => e.name),
        64,
      ),
      79,
    );
    deepEqual(decodeDirBlock(data.subarray(0, 64)), entries.slice(0, 4));
    deepEqual(decodeDirBlock(data.subarray(64)), entries.slice(4));
  });

  it('ends the last name at the first NUL', () => {
    const data = Buffer.concat([encodeDirData(ROOT), Buffer.alloc(5)]);
    deepEqual(decodeDirBlock(data), ROOT);
  });

  it('searches a block by raw bytes', () => {
    const blk = new DirBlock(encodeDirData(ROOT));
    equal(blk.count, 4);
    equal(blk.search(Buffer.from('lib.rs')), 2);
    equal(blk.search(Buffer.from('..')), 1);
    equal(blk.search(Buffer.from('-')), -1);
    equal(blk.search(Buffer.from('m')), -4);
    equal(blk.search(Buffer.from('zz')), -5);
  });

  it('rejects malformed blocks', () => {
    const data = encodeDirData(ROOT);
    throws(() => decodeDirBlock(data.subarray(0, 8)), matches(/holds no dirent/));
    const bad = Buffer.from(data);
    bad.writeUInt16LE(50, 8);
    throws(() => decodeDirBlock(bad), matches(/first nameoff 50 is not a dirent boundary/));
    bad.writeUInt16LE(48, 8);
    bad.writeUInt16LE(48, 20);
    throws(() => decodeDirBlock(bad), matches(/name 0 of 4 spans \[48, 48\)/));
    throws(
      () => decodeDirBlock(data.subarray(0, 57)),
      matches(/name 3 of 4 spans \[57, 57\), not 1..255 bytes in \[48, 57\)/),
    );
    const nul = Buffer.from(data);
    nul[57] = 0;
    throws(() => decodeDirBlock(nul), matches(/name 3 of 4 spans \[57, 57\)/));
  });

  it('refuses unsorted or invalid names when encoding', () => {
    throws(() => encodeDirData([ROOT[2]!, ROOT[0]!]), code('ERR_INVALID_ARG'));
    throws(() => encodeDirData([ROOT[0]!, ROOT[0]!]), code('ERR_INVALID_ARG'));
    throws(
      () => encodeDirData([{ name: Buffer.alloc(256, 0x61), nid: 1, fileType: 1 }]),
      code('ERR_INVALID_ARG'),
    );
    throws(() => encodeDirData([{ name: Buffer.from('a\0'), nid: 1, fileType: 1 }]), code('ERR_INVALID_ARG'));
  });

  it('maps file types to mode bits', () => {
    equal(modeOfDirentType(DirentType.DIR), S_IFDIR);
    equal(modeOfDirentType(DirentType.LNK), S_IFLNK);
    equal(modeOfDirentType(0), 0);
    equal(modeOfDirentType(8), undefined);
    equal(direntTypeOf(S_IFCHR | 0o600), DirentType.CHR);
    equal(direntTypeOf(S_IFREG), DirentType.REG);
  });
});

describe('v6 chunk index entries (rafs-format.md 3.12)', () => {
  const CASES: [ChunkRef, string][] = [
    [{ blobIndex: 0, ciIndex: 1, blkaddr: 5 }, '0100' + '0100' + '05000000'],
    [{ blobIndex: 2, ciIndex: 0x12_3456, blkaddr: 0xdead_beef }, '5634' + '0312' + 'efbeadde'],
    [{ blobIndex: 254, ciIndex: 0xff_ffff, blkaddr: 0 }, 'ffff' + 'ffff' + '00000000'],
  ];

  it('encodes and decodes the golden bytes', () => {
    for (const [ref, h] of CASES) {
      const buf = Buffer.alloc(8);
      encodeChunkIndex(ref, buf, 0);
      equal(buf.toString('hex'), h);
      deepEqual(decodeChunkIndex(buf, 0), ref);
    }
  });

  it('rejects device id 0 and unencodable references', () => {
    throws(() => decodeChunkIndex(hex('0100 0001 05000000'), 0), matches(/device id 0/));
    throws(() => decodeChunkIndex(hex('0100 0001'), 0), matches(/Truncated chunk index entry/));
    throws(
      () => encodeChunkIndex({ blobIndex: 255, ciIndex: 0, blkaddr: 0 }, Buffer.alloc(8), 0),
      code('ERR_INVALID_ARG'),
    );
    throws(
      () => encodeChunkIndex({ blobIndex: 0, ciIndex: 1 << 24, blkaddr: 0 }, Buffer.alloc(8), 0),
      code('ERR_INVALID_ARG'),
    );
  });

  it('encodes and checks the chunk format word', () => {
    equal(chunkFormat(20), 0x28);
    equal(chunkFormat(22), 0x2a);
    equal(decodeChunkFormat(0x28), 20);
    equal(decodeChunkFormat(0x2a), 22);
    throws(() => decodeChunkFormat(0x08), code('ERR_UNSUPPORTED'));
    throws(() => decodeChunkFormat(0x68), matches(/unknown bits/));
    throws(() => chunkFormat(11), code('ERR_INVALID_ARG'));
  });
});

describe('v6 prefetch table (rafs-format.md 3.6)', () => {
  it('encodes nids as u32 and stops decoding at 0', () => {
    const buf = encodePrefetchTable([128, 133, 0, 136]);
    equal(buf.toString('hex'), '80000000' + '85000000' + '00000000' + '88000000');
    deepEqual(decodePrefetchTable(buf, 0, 16), [128, 133]);
    deepEqual(decodePrefetchTable(buf, 0, 7), [128]);
    throws(() => decodePrefetchTable(buf, 8, 16), matches(/Truncated prefetch table/));
  });
});
