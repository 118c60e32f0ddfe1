import { test } from 'node:test';
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { NydusError } from '../../src/errors/errors.js';
import {
  DirentType,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFREG,
  S_IFSOCK,
} from '../../src/fuse/abi.js';
import { devMajor, devMinor, direntType, fuseRdev, makeDev, toFuseAttr } from '../../src/fuse/attr.js';

test('toFuseAttr: blksize 4096, atime = ctime = mtime, ino as bigint', () => {
  assert.deepEqual(
    toFuseAttr({
      ino: 42,
      mode: S_IFREG | 0o640,
      uid: 1000,
      gid: 100,
      size: 12345,
      blocks: 32,
      nlink: 2,
      rdev: 0,
      mtime: 1_600_000_000,
      mtimeNsec: 123,
    }),
    {
      ino: 42n,
      size: 12345,
      blocks: 32,
      atime: 1_600_000_000,
      mtime: 1_600_000_000,
      ctime: 1_600_000_000,
      atimeNsec: 123,
      mtimeNsec: 123,
      ctimeNsec: 123,
      mode: S_IFREG | 0o640,
      nlink: 2,
      uid: 1000,
      gid: 100,
      rdev: 0,
      blksize: 4096,
      flags: 0,
    },
  );
});

test('toFuseAttr: rdev is converted for devices only; bigint inode numbers pass through', () => {
  const base = { uid: 0, gid: 0, size: 0, blocks: 0, nlink: 1, mtime: 0, mtimeNsec: 0 };
  assert.equal(toFuseAttr({ ...base, ino: 5, mode: S_IFCHR | 0o666, rdev: makeDev(1, 3) }).rdev, 0x103);
  assert.equal(toFuseAttr({ ...base, ino: 5, mode: S_IFBLK | 0o660, rdev: makeDev(8, 17) }).rdev, 0x811);
  // A stale rdev on a regular file is not a device number.
  assert.equal(toFuseAttr({ ...base, ino: 5, mode: S_IFREG | 0o644, rdev: 2 ** 52 }).rdev, 0);
  assert.equal(toFuseAttr({ ...base, ino: 1n << 60n, mode: S_IFDIR, rdev: 0 }).ino, 1n << 60n);
});

test('fuseRdev is the kernel new_encode_dev of glibc dev_t major:minor', () => {
  // new_encode_dev: (minor & 0xff) | (major << 8) | ((minor & ~0xff) << 12)
  assert.equal(fuseRdev(makeDev(259, 0x12345)), 0x45 | (259 << 8) | (0x12300 << 12));
  assert.equal(fuseRdev(makeDev(0xfff, 0xfffff)), 0xffff_ffff);
  assert.equal(fuseRdev(0n), 0);
  for (const [major, minor] of [
    [4096, 0],
    [0, 1 << 20],
  ] as const) {
    assert.throws(
      () => fuseRdev(makeDev(major, minor)),
      (e: unknown) => e instanceof NydusError && e.code === 'ERR_UNSUPPORTED' && /12:20-bit/.test(e.message),
    );
  }
  assert.throws(
    () => fuseRdev(-1),
    (e: unknown) => e instanceof NydusError && e.code === 'ERR_INVALID_ARG',
  );
  assert.throws(
    () => fuseRdev(1.5),
    (e: unknown) => e instanceof NydusError && e.code === 'ERR_INVALID_ARG',
  );
});

test('glibc dev_t helpers agree with the devices of this machine', () => {
  // /dev/null is 1:3 and /dev/zero 1:5 on every Linux system.
  const nul = statSync('/dev/null', { bigint: true }).rdev;
  assert.equal(devMajor(nul), 1);
  assert.equal(devMinor(nul), 3);
  assert.equal(fuseRdev(nul), 0x103);
  assert.equal(fuseRdev(statSync('/dev/zero').rdev), 0x105);
  assert.equal(makeDev(devMajor(nul), devMinor(nul)), Number(nul));
  // Majors and minors past 12/20 bits use the high words of the glibc encoding.
  const big = makeDev(0x12345, 0x6789a);
  assert.equal(devMajor(big), 0x12345);
  assert.equal(devMinor(big), 0x6789a);
});

test('direntType is the S_IFMT bits shifted down by 12', () => {
  assert.deepEqual(
    [S_IFIFO, S_IFCHR, S_IFDIR, S_IFBLK, S_IFREG, S_IFLNK, S_IFSOCK, 0].map((t) => direntType(t | 0o7777)),
    [
      DirentType.FIFO,
      DirentType.CHR,
      DirentType.DIR,
      DirentType.BLK,
      DirentType.REG,
      DirentType.LNK,
      DirentType.SOCK,
      DirentType.UNKNOWN,
    ],
  );
});
