import { NydusError } from '../errors/errors.js';
import { S_IFBLK, S_IFCHR, S_IFMT } from './abi.js';
import type { FuseAttr } from './replies.js';

/**
 * From an inode's attributes to fuse_attr. The shape of AttrSource is what every RAFS inode
 * gives (format/model.ts InodeAttr), but this layer knows nothing about images.
 */

export interface AttrSource {
  readonly ino: number | bigint;
  /** Full st_mode. */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly size: number;
  /** 512-byte units. */
  readonly blocks: number;
  readonly nlink: number;
  /** st_rdev in the Linux user-space (glibc) encoding; read only for char and block devices. */
  readonly rdev: number | bigint;
  /** Seconds since the epoch; negative before 1970. */
  readonly mtime: number;
  readonly mtimeNsec: number;
}

/** st_blksize we report: the page size, so `cp` and friends read in page multiples. */
export const ATTR_BLKSIZE = 4096;

/**
 * fuse_attr of an inode: blksize 4096, atime = ctime = mtime (an image records only mtime),
 * rdev in the kernel's encoding for devices and 0 for everything else.
 */
export function toFuseAttr(src: AttrSource, flags = 0): FuseAttr {
  const type = src.mode & S_IFMT;
  return {
    ino: BigInt(src.ino),
    size: src.size,
    blocks: src.blocks,
    atime: src.mtime,
    mtime: src.mtime,
    ctime: src.mtime,
    atimeNsec: src.mtimeNsec,
    mtimeNsec: src.mtimeNsec,
    ctimeNsec: src.mtimeNsec,
    mode: src.mode,
    nlink: src.nlink,
    uid: src.uid,
    gid: src.gid,
    rdev: type === S_IFCHR || type === S_IFBLK ? fuseRdev(src.rdev) : 0,
    blksize: ATTR_BLKSIZE,
    flags,
  };
}

function devBig(dev: number | bigint): bigint {
  if (typeof dev === 'number' && !Number.isSafeInteger(dev))
    throw new NydusError('ERR_INVALID_ARG', `Device number ${dev} is not an integer`);
  const d = BigInt(dev);
  if (d < 0n || d >= 1n << 64n) throw new NydusError('ERR_INVALID_ARG', `Device number ${d} is not a u64`);
  return d;
}

/** Major number of a dev_t in the glibc encoding (sys/sysmacros.h gnu_dev_major). */
export function devMajor(dev: number | bigint): number {
  const d = devBig(dev);
  return Number(((d >> 32n) & 0xffff_f000n) | ((d >> 8n) & 0xfffn));
}

/** Minor number of a dev_t in the glibc encoding (gnu_dev_minor). */
export function devMinor(dev: number | bigint): number {
  const d = devBig(dev);
  return Number(((d >> 12n) & 0xffff_ff00n) | (d & 0xffn));
}

/** dev_t in the glibc encoding (gnu_dev_makedev), as a number (exact below 2^53). */
export function makeDev(major: number, minor: number): number {
  const ma = BigInt(major);
  const mi = BigInt(minor);
  return Number(
    ((ma & 0xfffn) << 8n) | ((ma & 0xffff_f000n) << 32n) | (mi & 0xffn) | ((mi & 0xffff_ff00n) << 12n),
  );
}

/**
 * fuse_attr.rdev as the kernel reads it: a u32 that it decodes with new_decode_dev
 * (major = bits 8..19, minor = bits 0..7 and 20..31), the kernel's new_encode_dev form. It
 * holds majors up to 4095 and minors up to 2^20 - 1 (the kernel's own limits); other device
 * numbers cannot be served and throw ERR_UNSUPPORTED.
 */
export function fuseRdev(dev: number | bigint): number {
  const major = devMajor(dev);
  const minor = devMinor(dev);
  if (major > 0xfff || minor > 0xf_ffff)
    throw new NydusError(
      'ERR_UNSUPPORTED',
      `Device ${major}:${minor} does not fit the kernel's 12:20-bit dev_t`,
    );
  return ((minor & 0xff) | (major << 8) | ((minor & ~0xff) << 12)) >>> 0;
}

/** The dirent type (DT_*) of a mode: its S_IFMT bits shifted down by 12. */
export function direntType(mode: number): number {
  return (mode & S_IFMT) >>> 12;
}
