import { createHash } from 'node:crypto';
import { deepEqual, equal, throws } from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decodeChunkRecord } from '../../../src/format/chunk-record.js';
import { InodeFlag, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFREG } from '../../../src/format/flags.js';
import type { ChunkInfo } from '../../../src/format/model.js';
import {
  decodeV5InodeFixed,
  decodeV5InodeRecord,
  encodeV5InodeFixed,
  encodeV5InodeRecord,
  V5_INODE_SIZE,
  type V5InodeFixed,
} from '../../../src/format/v5/inode.js';
import { v5InodeDigest } from '../../../src/format/v5/inode-digest.js';

const FIXED: V5InodeFixed = {
  digest: Buffer.alloc(32, 0xab),
  parent: 2,
  ino: 7,
  uid: 1000,
  gid: 100,
  projid: 0,
  mode: S_IFREG | 0o644,
  size: 0x1_0000_0001,
  blocks: 9,
  flags: InodeFlag.XATTR,
  nlink: 1,
  childIndex: 0,
  childCount: 2,
  nameSize: 5,
  symlinkSize: 0,
  rdev: 0xffff_ffff,
  mtimeNsec: 123456789,
  mtime: 1668232305,
};

// Derived by hand from the layout table of rafs-format.md 2.6.
const FIXED_HEX = [
  'ab'.repeat(32), // digest
  '0200000000000000', // parent
  '0700000000000000', // ino
  'e8030000', // uid 1000
  '64000000', // gid 100
  '00000000', // projid
  'a4810000', // mode 0o100644
  '0100000001000000', // size 2^32 + 1
  '0900000000000000', // blocks
  '0400000000000000', // flags XATTR
  '01000000', // nlink
  '00000000', // child_index
  '02000000', // child_count
  '0500', // name_size
  '0000', // symlink_size
  'ffffffff', // rdev
  '15cd5b07', // mtime_nsec 123456789
  '71346f6300000000', // mtime 1668232305
  '0000000000000000', // reserved
].join('');

function chunk(k: number, size: number): ChunkInfo {
  return {
    id: Buffer.alloc(32, k + 1),
    blobIndex: 0,
    flags: 0,
    compressedOffset: k * 4096,
    compressedSize: size,
    uncompressedOffset: k * 4096,
    uncompressedSize: size,
    fileOffset: k * 4096,
    index: k,
    crc32: 0,
  };
}

void describe('v5 inode fixed part (golden)', () => {
  void it('encodes every field at its offset', () => {
    equal(encodeV5InodeFixed(FIXED).toString('hex'), FIXED_HEX);
  });

  void it('decodes the golden bytes back', () => {
    deepEqual(decodeV5InodeFixed(Buffer.from(FIXED_HEX, 'hex'), 0), FIXED);
  });

  void it('encodes into a buffer at an offset, zeroing the reserved bytes', () => {
    const buf = Buffer.alloc(V5_INODE_SIZE + 16, 0xee);
    encodeV5InodeFixed(FIXED, buf, 8);
    equal(buf.subarray(8, 8 + V5_INODE_SIZE).toString('hex'), FIXED_HEX);
    equal(buf[7], 0xee);
    equal(buf[8 + V5_INODE_SIZE], 0xee);
  });

  void it('rejects a truncated fixed part and u64 fields beyond 2^53', () => {
    throws(() => decodeV5InodeFixed(Buffer.alloc(127), 0), /Truncated inode record/);
    const buf = Buffer.from(FIXED_HEX, 'hex');
    buf.writeBigUInt64LE(2n ** 63n, 64);
    throws(() => decodeV5InodeFixed(buf, 0), /inode size is too large/);
  });
});

void describe('v5 inode record', () => {
  void it('lays out name, xattrs and chunks and decodes them back', () => {
    const xattrs = [{ name: Buffer.from('user.k'), value: Buffer.from('v') }];
    const chunks = [chunk(0, 4096), chunk(1, 1)];
    const inode = { ...FIXED, size: 4097 };
    const buf = encodeV5InodeRecord({ inode, name: Buffer.from('hello'), xattrs, chunks });
    // 128 + name 8 + xattr (8 + align8(4 + 6 + 1 + 1 = 12) = 16) + 2 * 80
    equal(buf.length, 128 + 8 + 24 + 160);
    equal(buf.subarray(128, 136).toString('hex'), '68656c6c6f000000');
    const rec = decodeV5InodeRecord(buf, 0);
    deepEqual(rec.inode, inode);
    equal(rec.name.toString(), 'hello');
    equal(rec.symlink, undefined);
    equal(rec.xattrOffset, 136);
    equal(rec.chunksOffset, 160);
    equal(rec.chunkCount, 2);
    equal(rec.end, buf.length);
    deepEqual(decodeChunkRecord(buf, rec.chunksOffset + 80), chunks[1]);
  });

  void it('lays out a symlink target after the name', () => {
    const inode = {
      ...FIXED,
      mode: S_IFLNK | 0o777,
      flags: InodeFlag.SYMLINK,
      size: 9,
      childCount: 0,
      nameSize: 4,
      symlinkSize: 9,
    };
    const buf = encodeV5InodeRecord({ inode, name: Buffer.from('link'), symlink: Buffer.from('../target') });
    equal(buf.length, 128 + 8 + 16);
    equal(buf.subarray(136).toString('hex'), '2e2e2f746172676574' + '00'.repeat(7));
    const rec = decodeV5InodeRecord(buf, 0);
    equal(rec.symlink?.toString(), '../target');
    equal(rec.chunkCount, 0);
  });

  void it('ignores child_count of directories when locating the record end', () => {
    const inode = { ...FIXED, mode: S_IFDIR | 0o755, flags: 0, childIndex: 3, childCount: 1000 };
    const buf = encodeV5InodeRecord({ inode, name: Buffer.from('dir01') });
    equal(decodeV5InodeRecord(buf, 0).end, 136);
  });

  void it('refuses parts that disagree with the fixed fields', () => {
    throws(() => encodeV5InodeRecord({ inode: FIXED, name: Buffer.from('abc') }), /name_size 5/);
    throws(() => encodeV5InodeRecord({ inode: FIXED, name: Buffer.from('hello') }), /XATTR flag/);
    throws(() => encodeV5InodeRecord({ inode: FIXED, name: Buffer.from('hello'), xattrs: [] }), /2 expected/);
  });

  void it('checks every part against the end of the buffer', () => {
    const inode = { ...FIXED, size: 4097 };
    const buf = encodeV5InodeRecord({
      inode,
      name: Buffer.from('hello'),
      xattrs: [],
      chunks: [chunk(0, 4096), chunk(1, 1)],
    });
    for (let len = 0; len < buf.length; len++) {
      throws(
        () => decodeV5InodeRecord(buf.subarray(0, len), 0, 'Inode 7'),
        /^FormatError: (Inode 7|Truncated)/,
      );
    }
    const huge = Buffer.from(buf);
    huge.writeUInt32LE(0xffff_ffff, 96);
    throws(
      () => decodeV5InodeRecord(huge, 0, 'Inode 7'),
      /Inode 7: 4294967295 chunk records run past the end/,
    );
  });
});

void describe('v5 inode digest (rafs-format.md 6.2)', () => {
  const sha = (...parts: Buffer[]): Buffer => {
    const h = createHash('sha256');
    for (const p of parts) h.update(p);
    return h.digest();
  };

  void it('hashes chunk ids, targets and child digests; H("") for everything else', () => {
    const ids = [Buffer.alloc(32, 1), Buffer.alloc(32, 2)];
    deepEqual(v5InodeDigest('sha256', S_IFREG | 0o644, ids), sha(...ids));
    deepEqual(v5InodeDigest('sha256', S_IFDIR | 0o755, ids), sha(...ids));
    deepEqual(v5InodeDigest('sha256', S_IFLNK | 0o777, [Buffer.from('/')]), sha(Buffer.from('/')));
    deepEqual(v5InodeDigest('sha256', S_IFCHR, ids), sha());
    deepEqual(v5InodeDigest('sha256', S_IFIFO, []), sha());
  });

  void it('uses the known empty-input digests', () => {
    equal(
      v5InodeDigest('sha256', S_IFREG, []).toString('hex'),
      'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
    );
    equal(
      v5InodeDigest('blake3', S_IFDIR, []).toString('hex'),
      'af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262',
    );
  });
});
