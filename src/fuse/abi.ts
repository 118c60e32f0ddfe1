import { S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK } from '../util/mode.js';
/**
 * The FUSE kernel ABI as this layer speaks it: protocol version, opcodes, flag bits, struct
 * sizes and errno values. Facts come from the Linux UAPI header `include/uapi/linux/fuse.h`
 * (7.38 is installed here as /usr/include/linux/fuse.h; the fields and flags added up to 7.45,
 * which kernel 6.18 speaks, are marked with the version that added them). Everything is
 * little-endian on the machines we serve.
 *
 * Type conventions of the whole `fuse/` layer:
 * - u64 identities (request `unique`, `nodeid`, `fh`, `generation`, `ino`, `lock_owner`) are
 *   `bigint`: they are opaque, and some exceed 2^53 (a resent request has bit 63 of `unique`
 *   set; upstream nydusd puts a file system index in the top byte of inode numbers).
 * - u64 quantities (offsets, sizes, block counts, seconds, timeouts) are `number`; a decoder
 *   refuses values above 2^53 - 1 and an encoder refuses anything not a safe integer.
 * - The 64 INIT flag bits are one `bigint`; the wire splits them into `flags` and, from 7.36,
 *   `flags2` (bits 32..63, read only when FUSE_INIT_EXT is set).
 */

/** FUSE_KERNEL_VERSION: the only major version Linux has ever spoken. */
export const FUSE_KERNEL_VERSION = 7;

/**
 * The newest minor version whose structures this layer encodes (7.45: fuse_init_out with
 * max_stack_depth and request_timeout, fuse_open_out with backing_id). The session uses
 * min(kernel minor, this).
 */
export const FUSE_KERNEL_MINOR_VERSION = 45;

/**
 * The oldest kernel minor we serve. From 7.23 fuse_init_out is its full 64 bytes and every
 * reply body we send (entry_out, attr_out, kstatfs, ...) has its current size, so no
 * FUSE_COMPAT_* short forms are needed (Linux 3.15 and later).
 */
export const FUSE_MIN_KERNEL_MINOR_VERSION = 23;

/** FUSE_ROOT_ID: the nodeid of the root directory, implied by the mount. */
export const FUSE_ROOT_ID = 1n;

/** FUSE_MIN_READ_BUFFER: a read of /dev/fuse must offer at least this many bytes. */
export const FUSE_MIN_READ_BUFFER = 8192;

/**
 * The smallest read of /dev/fuse the kernel accepts once `max_write` is negotiated: room for
 * the header, fuse_write_in and max_write bytes of data (fs/fuse/dev.c fuse_dev_do_read fails
 * a smaller read with EINVAL). A request that does not fit the offered buffer fails with E2BIG.
 */
export function minReadBufferSize(maxWrite: number): number {
  return Math.max(FUSE_MIN_READ_BUFFER, Size.IN_HEADER + Size.WRITE_IN + maxWrite);
}

/**
 * FUSE_UNIQUE_RESEND (7.40): bit 63 of `unique` marks a request the kernel resent after a
 * FUSE_NOTIFY_RESEND (only with FUSE_HAS_RESEND negotiated).
 */
export const FUSE_UNIQUE_RESEND = 1n << 63n;

/**
 * An INTERRUPT request's own `unique` has this bit set (fs/fuse/fuse_i.h FUSE_INT_REQ_BIT;
 * ordinary requests count in steps of 2). A reply to it is optional: -ENOSYS stops further
 * interrupts, -EAGAIN asks for it again, and the reply must be the bare header.
 */
export const FUSE_INT_REQ_BIT = 1n;

/** enum fuse_opcode. */
export const Opcode = {
  LOOKUP: 1,
  /** No reply. */
  FORGET: 2,
  GETATTR: 3,
  SETATTR: 4,
  READLINK: 5,
  SYMLINK: 6,
  MKNOD: 8,
  MKDIR: 9,
  UNLINK: 10,
  RMDIR: 11,
  RENAME: 12,
  LINK: 13,
  OPEN: 14,
  READ: 15,
  WRITE: 16,
  STATFS: 17,
  RELEASE: 18,
  FSYNC: 20,
  SETXATTR: 21,
  GETXATTR: 22,
  LISTXATTR: 23,
  REMOVEXATTR: 24,
  FLUSH: 25,
  INIT: 26,
  OPENDIR: 27,
  READDIR: 28,
  RELEASEDIR: 29,
  FSYNCDIR: 30,
  GETLK: 31,
  SETLK: 32,
  SETLKW: 33,
  ACCESS: 34,
  CREATE: 35,
  /** Reply optional, see FUSE_INT_REQ_BIT. */
  INTERRUPT: 36,
  BMAP: 37,
  DESTROY: 38,
  IOCTL: 39,
  POLL: 40,
  NOTIFY_REPLY: 41,
  /** No reply. */
  BATCH_FORGET: 42,
  FALLOCATE: 43,
  READDIRPLUS: 44,
  RENAME2: 45,
  LSEEK: 46,
  COPY_FILE_RANGE: 47,
  SETUPMAPPING: 48,
  REMOVEMAPPING: 49,
  SYNCFS: 50,
  TMPFILE: 51,
  /** 7.39 */
  STATX: 52,
  /** 7.45 */
  COPY_FILE_RANGE_64: 53,
  CUSE_INIT: 4096,
} as const;

export type Opcode = (typeof Opcode)[keyof typeof Opcode];

const OPCODE_NAMES = new Map<number, string>(Object.entries(Opcode).map(([k, v]) => [v, k]));

/** `LOOKUP`, `READ`, ... or `OPCODE_<n>` for a number the ABI does not define. */
export function opcodeName(opcode: number): string {
  return OPCODE_NAMES.get(opcode) ?? `OPCODE_${opcode}`;
}

/** Whether the kernel waits for a reply to a request with this opcode. */
export function expectsReply(opcode: number): boolean {
  return opcode !== Opcode.FORGET && opcode !== Opcode.BATCH_FORGET && opcode !== Opcode.INTERRUPT;
}

/**
 * Opcodes that would change the file system. The kernel already refuses most of them on a
 * `ro` mount; whatever still arrives is answered EROFS.
 */
export const MODIFYING_OPCODES: ReadonlySet<number> = new Set([
  Opcode.SETATTR,
  Opcode.SYMLINK,
  Opcode.MKNOD,
  Opcode.MKDIR,
  Opcode.UNLINK,
  Opcode.RMDIR,
  Opcode.RENAME,
  Opcode.LINK,
  Opcode.WRITE,
  Opcode.SETXATTR,
  Opcode.REMOVEXATTR,
  Opcode.CREATE,
  Opcode.FALLOCATE,
  Opcode.RENAME2,
  Opcode.COPY_FILE_RANGE,
  Opcode.TMPFILE,
  Opcode.COPY_FILE_RANGE_64,
]);

/**
 * INIT request/reply flags (FUSE_* in fuse.h), as bit positions of the 64-bit set. Bits 32..63
 * travel in `flags2` (7.36+).
 */
export const InitFlag = {
  ASYNC_READ: 1n << 0n,
  POSIX_LOCKS: 1n << 1n,
  FILE_OPS: 1n << 2n,
  ATOMIC_O_TRUNC: 1n << 3n,
  /** The file system answers LOOKUP of "." and "..". */
  EXPORT_SUPPORT: 1n << 4n,
  BIG_WRITES: 1n << 5n,
  DONT_MASK: 1n << 6n,
  SPLICE_WRITE: 1n << 7n,
  SPLICE_MOVE: 1n << 8n,
  SPLICE_READ: 1n << 9n,
  FLOCK_LOCKS: 1n << 10n,
  HAS_IOCTL_DIR: 1n << 11n,
  AUTO_INVAL_DATA: 1n << 12n,
  /** Send READDIRPLUS (READDIR + LOOKUP in one) instead of READDIR. */
  DO_READDIRPLUS: 1n << 13n,
  /** Adaptive: READDIRPLUS only for the first batch or when an entry's attributes were used. */
  READDIRPLUS_AUTO: 1n << 14n,
  ASYNC_DIO: 1n << 15n,
  WRITEBACK_CACHE: 1n << 16n,
  /** Kernel side: an ENOSYS answer to OPEN makes every later open zero-message. */
  NO_OPEN_SUPPORT: 1n << 17n,
  PARALLEL_DIROPS: 1n << 18n,
  HANDLE_KILLPRIV: 1n << 19n,
  POSIX_ACL: 1n << 20n,
  ABORT_ERROR: 1n << 21n,
  /** init_out.max_pages is valid (7.28). */
  MAX_PAGES: 1n << 22n,
  /** Cache READLINK replies in the page cache (7.28). */
  CACHE_SYMLINKS: 1n << 23n,
  /** Kernel side: an ENOSYS answer to OPENDIR makes every later opendir zero-message (7.29). */
  NO_OPENDIR_SUPPORT: 1n << 24n,
  EXPLICIT_INVAL_DATA: 1n << 25n,
  MAP_ALIGNMENT: 1n << 26n,
  SUBMOUNTS: 1n << 27n,
  HANDLE_KILLPRIV_V2: 1n << 28n,
  SETXATTR_EXT: 1n << 29n,
  /** fuse_init_in/out carry flags2 (7.36). A reply must set it for its flags2 to be read. */
  INIT_EXT: 1n << 30n,
  INIT_RESERVED: 1n << 31n,
  SECURITY_CTX: 1n << 32n,
  HAS_INODE_DAX: 1n << 33n,
  CREATE_SUPP_GROUP: 1n << 34n,
  HAS_EXPIRE_ONLY: 1n << 35n,
  /** 7.39 */
  DIRECT_IO_ALLOW_MMAP: 1n << 36n,
  /** 7.40 */
  PASSTHROUGH: 1n << 37n,
  /** 7.40 */
  NO_EXPORT_SUPPORT: 1n << 38n,
  /** 7.40 */
  HAS_RESEND: 1n << 39n,
  /** 7.41 */
  ALLOW_IDMAP: 1n << 40n,
  /** 7.42 */
  OVER_IO_URING: 1n << 41n,
  /** 7.43: init_out.request_timeout is valid. */
  REQUEST_TIMEOUT: 1n << 42n,
} as const;

const INIT_FLAG_NAMES: readonly [bigint, string][] = Object.entries(InitFlag).map(([k, v]) => [v, k]);

/** Names of the set bits, `BIT_<n>` for bits fuse.h does not name. */
export function initFlagNames(flags: bigint): string[] {
  const out: string[] = [];
  for (let bit = 0n; bit < 64n; bit++) {
    const v = 1n << bit;
    if ((flags & v) === 0n) continue;
    out.push(INIT_FLAG_NAMES.find(([f]) => f === v)?.[1] ?? `BIT_${bit}`);
  }
  return out;
}

/** fuse_open_out.open_flags (FOPEN_* in fuse.h). */
export const FopenFlag = {
  DIRECT_IO: 1 << 0,
  /** Keep the page cache of the file across opens (the image never changes). */
  KEEP_CACHE: 1 << 1,
  NONSEEKABLE: 1 << 2,
  /** Let the kernel cache READDIR results of this directory (7.28). */
  CACHE_DIR: 1 << 3,
  STREAM: 1 << 4,
  /** Send no FLUSH on close (7.35). */
  NOFLUSH: 1 << 5,
  PARALLEL_DIRECT_WRITES: 1 << 6,
  /** 7.40 */
  PASSTHROUGH: 1 << 7,
} as const;

/** fuse_attr.flags. */
export const AttrFlag = {
  SUBMOUNT: 1 << 0,
  DAX: 1 << 1,
} as const;

/** fuse_getattr_in.getattr_flags: `fh` is valid. */
export const GETATTR_FH = 1 << 0;

/** fuse_release_in.release_flags. */
export const ReleaseFlag = {
  FLUSH: 1 << 0,
  FLOCK_UNLOCK: 1 << 1,
} as const;

/** fuse_read_in.read_flags: `lock_owner` is valid. */
export const READ_LOCKOWNER = 1 << 1;

/** fuse_open_in.open_flags: kill suid and sgid if executable (7.33). */
export const OPEN_KILL_SUIDGID = 1 << 0;

/**
 * Struct sizes in bytes. Layouts (offset: type field) are in the comments of messages.ts and
 * replies.ts where each struct is read or written.
 */
export const Size = {
  IN_HEADER: 40,
  OUT_HEADER: 16,
  INIT_IN: 64,
  INIT_OUT: 64,
  ATTR: 88,
  ENTRY_OUT: 128,
  ATTR_OUT: 104,
  OPEN_IN: 8,
  OPEN_OUT: 16,
  GETATTR_IN: 16,
  FORGET_IN: 8,
  BATCH_FORGET_IN: 8,
  FORGET_ONE: 16,
  READ_IN: 40,
  WRITE_IN: 40,
  RELEASE_IN: 24,
  FLUSH_IN: 24,
  GETXATTR_IN: 8,
  GETXATTR_OUT: 8,
  ACCESS_IN: 8,
  INTERRUPT_IN: 8,
  KSTATFS: 80,
  /** FUSE_NAME_OFFSET: the fixed part of fuse_dirent, before the name. */
  DIRENT: 24,
  /** FUSE_NAME_OFFSET_DIRENTPLUS: entry_out + the fixed part of fuse_dirent. */
  DIRENTPLUS: 152,
} as const;

/**
 * Longest name the kernel accepts in a dirent (fs/fuse/fuse_i.h FUSE_NAME_MAX; a longer one or
 * one holding '/' makes the kernel fail the whole READDIR with EIO).
 */
export const FUSE_NAME_MAX = 1024;

/** FUSE_REC_ALIGN / FUSE_DIRENT_ALIGN: dirent records are padded to 8 bytes. */
export function direntAlign(n: number): number {
  return (n + 7) & ~7;
}

/** Linux errno values (asm-generic/errno-base.h, errno.h) the daemon answers with. */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EINTR: 4,
  EIO: 5,
  E2BIG: 7,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  EXDEV: 18,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  EFBIG: 27,
  ENOSPC: 28,
  ESPIPE: 29,
  EROFS: 30,
  EMLINK: 31,
  ERANGE: 34,
  ENAMETOOLONG: 36,
  ENOSYS: 38,
  ENOTEMPTY: 39,
  ELOOP: 40,
  ENODATA: 61,
  EPROTO: 71,
  EOVERFLOW: 75,
  /** Also EOPNOTSUPP on Linux. */
  ENOTSUP: 95,
  ECONNABORTED: 103,
  ETIMEDOUT: 110,
  ESTALE: 116,
} as const;

/**
 * The kernel refuses a reply whose error is 0 < -error or -error >= 1000 (fs/fuse/dev.c
 * fuse_dev_do_write: `oh.error <= -1000 || oh.error > 0` is EINVAL).
 */
export const MAX_REPLY_ERRNO = 999;

/** Directory entry types (DT_* of dirent.h): the S_IFMT bits of the mode shifted down by 12. */
export const DirentType = {
  UNKNOWN: 0,
  FIFO: 1,
  CHR: 2,
  DIR: 4,
  BLK: 6,
  REG: 8,
  LNK: 10,
  SOCK: 12,
} as const;

/** st_mode file-type bits (util/mode.ts). */
export { S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK };
