import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NydusError } from '../../src/errors/errors.js';
import { DirentType, Errno, FopenFlag, InitFlag, S_IFDIR, S_IFLNK, S_IFREG } from '../../src/fuse/abi.js';
import { negotiateInit, refusedInitFlags } from '../../src/fuse/init.js';
import { decodeRequest } from '../../src/fuse/messages.js';
import {
  attrReply,
  dataReply,
  decodeDirentsPlus,
  decodeReply,
  emptyReply,
  entryReply,
  errorReply,
  initReply,
  negativeEntryReply,
  openReply,
  packDirents,
  packDirentsPlus,
  replyHeader,
  statfsReply,
  xattrReply,
  type DirentPlus,
  type EntryOut,
  type FuseAttr,
} from '../../src/fuse/replies.js';

/**
 * Golden reply bytes, derived by hand from the struct layouts of fuse.h (offsets in the
 * comments; spaces separate fields). Every value is little-endian.
 */

function hex(s: string): string {
  return s.replace(/\s+/g, '');
}

const T = 1_700_000_000; // 0x6553f100

const FILE_ATTR: FuseAttr = {
  ino: 2n,
  size: 25,
  blocks: 1,
  atime: T,
  mtime: T,
  ctime: T,
  atimeNsec: 5,
  mtimeNsec: 5,
  ctimeNsec: 5,
  mode: S_IFREG | 0o644,
  nlink: 1,
  uid: 1000,
  gid: 100,
  rdev: 0,
  blksize: 4096,
  flags: 0,
};

// fuse_attr of FILE_ATTR, 88 bytes.
const FILE_ATTR_HEX = `
  0200000000000000 1900000000000000 0100000000000000
  00f1536500000000 00f1536500000000 00f1536500000000
  05000000 05000000 05000000
  a4810000 01000000 e8030000 64000000 00000000 00100000 00000000`;
//  0 ino            8 size           16 blocks
//  24 atime         32 mtime         40 ctime
//  48 atimensec 52 mtimensec 56 ctimensec
//  60 mode  64 nlink  68 uid  72 gid  76 rdev  80 blksize  84 flags

const FILE_ENTRY: EntryOut = {
  nodeid: 2n,
  generation: 0n,
  entryValid: 3600,
  entryValidNsec: 0,
  attrValid: 3600,
  attrValidNsec: 500_000_000,
  attr: FILE_ATTR,
};

// fuse_entry_out of FILE_ENTRY, 128 bytes.
const FILE_ENTRY_HEX = `
  0200000000000000 0000000000000000 100e000000000000 100e000000000000 00000000 0065cd1d
  ${FILE_ATTR_HEX}`;
//  0 nodeid  8 generation  16 entry_valid  24 attr_valid  32 entry_valid_nsec  36 attr_valid_nsec  40 attr

test('error reply: the bare header with error = -errno', () => {
  assert.equal(
    errorReply(0x1122_3344_5566_7788n, Errno.ENOENT).toString('hex'),
    hex('10000000 feffffff 8877665544332211'),
    //   len      error    unique
  );
  assert.equal(errorReply(1n, Errno.EROFS).toString('hex'), hex('10000000 e2ffffff 0100000000000000'));
});

test('empty success reply and the header of a zero-copy READ reply', () => {
  assert.equal(emptyReply(5n).toString('hex'), hex('10000000 00000000 0500000000000000'));
  // 16 + 25 data bytes the caller writes after it with writev.
  assert.equal(replyHeader(0x22n, 25).toString('hex'), hex('29000000 00000000 2200000000000000'));
  assert.equal(
    dataReply(0x16n, [Buffer.from('hel'), Buffer.from('lo')]).toString('hex'),
    hex('15000000 00000000 1600000000000000 68656c6c6f'),
  );
});

test('INIT reply negotiated with the INIT captured from kernel 6.18', () => {
  const init = decodeRequest(
    Buffer.from(
      hex(`68000000 1a000000 0200000000000000 0000000000000000 00000000 00000000 00000000 00000000
           07000000 2d000000 00000200 fbffff73 fd050000 ${'00'.repeat(44)}`),
      'hex',
    ),
  );
  assert.equal(init.op, 'init');
  if (init.op !== 'init') return;
  const want =
    InitFlag.ASYNC_READ |
    InitFlag.DO_READDIRPLUS |
    InitFlag.NO_OPEN_SUPPORT |
    InitFlag.PARALLEL_DIROPS |
    InitFlag.MAX_PAGES |
    InitFlag.CACHE_SYMLINKS |
    InitFlag.NO_OPENDIR_SUPPORT |
    InitFlag.NO_EXPORT_SUPPORT |
    InitFlag.OVER_IO_URING;
  const n = negotiateInit(init, { want, maxReadahead: 1 << 20, maxBackground: 64, congestionThreshold: 48 });
  assert.equal(n.kind, 'accept');
  if (n.kind !== 'accept') return;
  assert.equal(n.minor, 45);
  // The kernel does not offer io_uring here; a high bit was granted, so INIT_EXT joins.
  assert.deepEqual(refusedInitFlags(want, n.flags), ['OVER_IO_URING']);
  assert.equal(n.flags & InitFlag.INIT_EXT, InitFlag.INIT_EXT);
  assert.equal(
    initReply(init.unique, n.reply).toString('hex'),
    hex(`50000000 00000000 0200000000000000
         07000000 2d000000 00000200 0120c641 4000 3000 00001000 01000000 0001 0000 40000000 00000000 0000
         ${'00'.repeat(22)}`),
    // header: len 80, error 0, unique 2
    // 0 major 7, 4 minor 45, 8 max_readahead 128 KiB (the kernel's, smaller than asked),
    // 12 flags 0x41c62001 (ASYNC_READ, DO_READDIRPLUS, NO_OPEN_SUPPORT, PARALLEL_DIROPS,
    //    MAX_PAGES, CACHE_SYMLINKS, NO_OPENDIR_SUPPORT, INIT_EXT),
    // 16 max_background 64, 18 congestion_threshold 48, 20 max_write 1 MiB, 24 time_gran 1,
    // 28 max_pages 256, 30 map_alignment 0, 32 flags2 0x40 (NO_EXPORT_SUPPORT),
    // 36 max_stack_depth 0, 40 request_timeout 0, 42 unused[11]
  );
});

test('LOOKUP reply: fuse_entry_out', () => {
  assert.equal(
    entryReply(0x2en, FILE_ENTRY).toString('hex'),
    hex(`90000000 00000000 2e00000000000000 ${FILE_ENTRY_HEX}`),
  );
});

test('negative LOOKUP reply: nodeid 0 with an entry timeout, everything else zero', () => {
  assert.equal(
    negativeEntryReply(0x2en, 60).toString('hex'),
    hex(`90000000 00000000 2e00000000000000
         0000000000000000 0000000000000000 3c00000000000000 0000000000000000 00000000 00000000
         ${'00'.repeat(88)}`),
  );
});

test('GETATTR reply: fuse_attr_out, with a time before 1970', () => {
  const attr: FuseAttr = {
    ...FILE_ATTR,
    ino: 1n,
    size: 4096,
    blocks: 8,
    atime: -1,
    mtime: -1,
    ctime: -1,
    atimeNsec: 999_999_999,
    mtimeNsec: 999_999_999,
    ctimeNsec: 999_999_999,
    mode: S_IFDIR | 0o755,
    nlink: 2,
    uid: 0,
    gid: 0,
  };
  assert.equal(
    attrReply(3n, { attrValid: 1, attrValidNsec: 0, attr }).toString('hex'),
    hex(`78000000 00000000 0300000000000000
         0100000000000000 00000000 00000000
         0100000000000000 0010000000000000 0800000000000000
         ffffffffffffffff ffffffffffffffff ffffffffffffffff
         ffc99a3b ffc99a3b ffc99a3b
         ed410000 02000000 00000000 00000000 00000000 00100000 00000000`),
    // header: len 120; 0 attr_valid 1, 8 attr_valid_nsec, 12 dummy, 16 fuse_attr (times -1 s)
  );
});

test('OPEN reply: fuse_open_out with FOPEN_KEEP_CACHE | FOPEN_NOFLUSH', () => {
  assert.equal(
    openReply(0x20n, {
      fh: 0xfedc_ba98_7654_3210n,
      openFlags: FopenFlag.KEEP_CACHE | FopenFlag.NOFLUSH,
      backingId: 0,
    }).toString('hex'),
    hex('20000000 00000000 2000000000000000 1032547698badcfe 22000000 00000000'),
    //                                      0 fh             8 flags  12 backing_id
  );
});

test('STATFS reply: fuse_kstatfs', () => {
  assert.equal(
    statfsReply(0x34n, {
      blocks: 1000,
      bfree: 0,
      bavail: 0,
      files: 20,
      ffree: 0,
      bsize: 4096,
      namelen: 255,
      frsize: 4096,
    }).toString('hex'),
    hex(`60000000 00000000 3400000000000000
         e803000000000000 0000000000000000 0000000000000000 1400000000000000 0000000000000000
         00100000 ff000000 00100000 00000000 ${'00'.repeat(24)}`),
    // 0 blocks 8 bfree 16 bavail 24 files 32 ffree 40 bsize 44 namelen 48 frsize 52 padding 56 spare
  );
});

test('GETXATTR replies: size-only, ERANGE, data', () => {
  const v = Buffer.from('value');
  assert.equal(
    xattrReply(9n, 0, v).toString('hex'),
    hex('18000000 00000000 0900000000000000 05000000 00000000'),
  );
  assert.equal(xattrReply(9n, 4, v).toString('hex'), hex('10000000 deffffff 0900000000000000'));
  assert.equal(xattrReply(9n, 5, v).toString('hex'), hex('15000000 00000000 0900000000000000 76616c7565'));
});

test('READDIR packing: fuse_dirent records padded to 8 bytes', () => {
  const entries = [
    { ino: 2n, off: 1, type: DirentType.REG, name: Buffer.from('a') },
    { ino: 3n, off: 2, type: DirentType.DIR, name: Buffer.from('hello.txt') },
  ];
  const p = packDirents(entries, 4096);
  assert.equal(p.count, 2);
  assert.equal(
    p.buf.toString('hex'),
    hex(`0200000000000000 0100000000000000 01000000 08000000 61 00000000000000
         0300000000000000 0200000000000000 09000000 04000000 68656c6c6f2e747874 00000000000000`),
    //   0 ino            8 off            16 namelen 20 type 24 name, zero padding to 8
  );
  // 32 + 40 bytes: a size of 71 holds only the first.
  assert.equal(packDirents(entries, 71).count, 1);
  assert.equal(packDirents(entries, 72).count, 2);
  assert.equal(packDirents(entries, 31).buf.length, 0);
});

function plus(nodeid: bigint, name: string, mode: number, off: number): DirentPlus {
  return {
    entry: { ...FILE_ENTRY, nodeid, attr: { ...FILE_ATTR, ino: nodeid, mode } },
    dirent: { ino: nodeid, off, type: mode >> 12, name: Buffer.from(name) },
  };
}

test('READDIRPLUS packing: three entries, and truncation when the third does not fit', () => {
  const entries = [
    plus(2n, 'a', S_IFREG | 0o644, 1),
    plus(3n, 'hello.txt', S_IFLNK | 0o777, 2),
    plus(4n, 'sub', S_IFDIR | 0o755, 3),
  ];
  // FUSE_DIRENTPLUS_SIZE: align8(152 + namelen) = 160, 168, 160.
  const all = packDirentsPlus(entries, 4096);
  assert.equal(all.count, 3);
  assert.equal(all.buf.length, 488);
  assert.equal(
    all.buf.subarray(0, 160).toString('hex'),
    hex(`${FILE_ENTRY_HEX}
         0200000000000000 0100000000000000 01000000 08000000 61 00000000000000`),
    //   128 dirent.ino   136 off          144 namelen 148 type 152 name, padding
  );
  // Records start at 0, 160 and 328; check the fields of the other two at literal offsets.
  const b = all.buf;
  assert.equal(b.readBigUInt64LE(160), 3n); // entry_out.nodeid
  assert.equal(b.readUInt32LE(160 + 40 + 60), S_IFLNK | 0o777); // attr.mode
  assert.equal(b.readBigUInt64LE(160 + 128), 3n); // dirent.ino
  assert.equal(b.readBigUInt64LE(160 + 136), 2n); // dirent.off
  assert.equal(b.readUInt32LE(160 + 144), 9); // namelen
  assert.equal(b.readUInt32LE(160 + 148), DirentType.LNK); // type
  assert.equal(b.subarray(160 + 152, 160 + 161).toString(), 'hello.txt');
  assert.equal(b.subarray(160 + 161, 328).toString('hex'), '00'.repeat(7));
  assert.equal(b.readBigUInt64LE(328), 4n);
  assert.equal(b.readUInt32LE(328 + 148), DirentType.DIR);
  assert.equal(b.subarray(328 + 152, 488).toString('hex'), '737562' + '00'.repeat(5));

  const cut = packDirentsPlus(entries, 487);
  assert.equal(cut.count, 2);
  assert.deepEqual(cut.buf, all.buf.subarray(0, 328));
  assert.equal(packDirentsPlus(entries, 159).count, 0);
  // A generator: the packer stops pulling at the first entry that does not fit.
  let pulled = 0;
  function* gen(): Generator<DirentPlus> {
    for (const e of entries) {
      pulled++;
      yield e;
    }
  }
  assert.equal(packDirentsPlus(gen(), 328).count, 2);
  assert.equal(pulled, 3);
  assert.deepEqual(
    decodeDirentsPlus(cut.buf).map((d) => d.dirent.name.toString()),
    ['a', 'hello.txt'],
  );
});

function invalid(f: () => unknown, re: RegExp): void {
  assert.throws(
    f,
    (e: unknown) => e instanceof NydusError && e.code === 'ERR_INVALID_ARG' && re.test(e.message),
  );
}

test('encoders refuse values their fields cannot hold, naming the field', () => {
  invalid(() => errorReply(1n, 0), /reply errno: 0 is not in 1\.\.999/);
  invalid(() => errorReply(1n, 1000), /reply errno: 1000/);
  invalid(() => errorReply(-1n, 2), /reply unique: -1 is not a u64 bigint/);
  invalid(() => entryReply(1n, { ...FILE_ENTRY, attrValidNsec: 1_000_000_000 }), /attr_valid_nsec/);
  invalid(() => entryReply(1n, { ...FILE_ENTRY, attr: { ...FILE_ATTR, size: -1 } }), /attr size: -1/);
  invalid(() => entryReply(1n, { ...FILE_ENTRY, attr: { ...FILE_ATTR, size: 2 ** 60 } }), /attr size/);
  invalid(
    () => entryReply(1n, { ...FILE_ENTRY, attr: { ...FILE_ATTR, uid: 2 ** 32 } }),
    /attr uid: 4294967296 is not a u32/,
  );
  invalid(
    () => entryReply(1n, { ...FILE_ENTRY, attr: { ...FILE_ATTR, mode: 0o644 } }),
    /entry attr mode: 0o644 is not a mode with a file type/,
  );
  invalid(
    () => attrReply(1n, { attrValid: 1, attrValidNsec: 0, attr: { ...FILE_ATTR, mode: 0o170644 } }),
    /attr mode/,
  );
  invalid(
    () => entryReply(1n, { ...FILE_ENTRY, attr: { ...FILE_ATTR, mtime: 0.5 } }),
    /attr mtime: 0\.5 is not a safe integer/,
  );
  invalid(() => openReply(1n, { fh: 1n, openFlags: 0, backingId: 2 ** 31 }), /backing_id/);
  invalid(() => packDirents([{ ino: 1n, off: 1, type: 8, name: Buffer.from('a/b') }], 4096), /holds '\/'/);
  invalid(() => packDirents([{ ino: 1n, off: 1, type: 8, name: Buffer.alloc(0) }], 4096), /name length: 0/);
  invalid(
    () => packDirents([{ ino: 1n, off: 1, type: 8, name: Buffer.alloc(1025, 0x61) }], 8192),
    /name length: 1025/,
  );
  invalid(() => packDirents([], -1), /readdir size/);
});

test('decodeReply applies the kernel checks on len and error', () => {
  assert.deepEqual(decodeReply(errorReply(7n, Errno.EIO)), {
    header: { len: 16, error: -5, unique: 7n },
    body: Buffer.alloc(0),
  });
  const bad = Buffer.concat([errorReply(7n, Errno.EIO), Buffer.alloc(8)]);
  assert.throws(() => decodeReply(bad), /length 16 does not match its 24 bytes/);
  bad.writeUInt32LE(24, 0);
  assert.throws(() => decodeReply(bad), /error reply carries 8 body bytes/);
  const pos = emptyReply(1n);
  pos.writeInt32LE(1, 4);
  assert.throws(() => decodeReply(pos), /error 1 is not 0 or a negative errno/);
});
