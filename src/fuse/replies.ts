import { FormatError, NydusError } from '../errors/errors.js';
import { Cursor } from '../util/cursor.js';
import {
  Errno,
  FUSE_NAME_MAX,
  MAX_REPLY_ERRNO,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  S_IFSOCK,
  Size,
  direntAlign,
} from './abi.js';
import { invalidField } from './errors.js';
import { putI32, putId, putNsec, putTime, putU16, putU32, putU64 } from './wire.js';

/**
 * Replies the daemon writes to /dev/fuse: encoding for the daemon, decoding for tests and the
 * in-process harness. A reply is one write of fuse_out_header and its body:
 *
 * fuse_out_header, 16 bytes:
 *
 * | off | type | field  | notes                                                          |
 * |-----|------|--------|----------------------------------------------------------------|
 * | 0   | u32  | len    | header + body; the kernel fails a write whose size differs     |
 * | 4   | i32  | error  | 0 or -errno, above -1000; an error reply has no body at all    |
 * | 8   | u64  | unique | of the request answered                                        |
 *
 * Bodies are written at byte 16; their layouts (offsets from the start of the body) are next
 * to their writers below. Encoders check every value against its field and throw
 * ERR_INVALID_ARG (a caller bug), never a RangeError.
 */

export interface OutHeader {
  readonly len: number;
  /** 0 or a negative errno, as on the wire. */
  readonly error: number;
  readonly unique: bigint;
}

/**
 * fuse_attr, 88 bytes:
 *
 * | off | type | field     | notes                                           |
 * |-----|------|-----------|-------------------------------------------------|
 * | 0   | u64  | ino       | st_ino                                          |
 * | 8   | u64  | size      | at most 2^63 - 1 or the kernel answers EIO      |
 * | 16  | u64  | blocks    | 512-byte units                                  |
 * | 24  | u64  | atime     | seconds, read as time64_t (signed)              |
 * | 32  | u64  | mtime     |                                                 |
 * | 40  | u64  | ctime     |                                                 |
 * | 48  | u32  | atimensec |                                                 |
 * | 52  | u32  | mtimensec |                                                 |
 * | 56  | u32  | ctimensec |                                                 |
 * | 60  | u32  | mode      | full st_mode; its file type must be valid       |
 * | 64  | u32  | nlink     |                                                 |
 * | 68  | u32  | uid       |                                                 |
 * | 72  | u32  | gid       |                                                 |
 * | 76  | u32  | rdev      | new_encode_dev form (attr.ts fuseRdev)          |
 * | 80  | u32  | blksize   | st_blksize; 0 lets the kernel choose            |
 * | 84  | u32  | flags     | AttrFlag (7.32)                                 |
 */
export interface FuseAttr {
  readonly ino: bigint;
  readonly size: number;
  readonly blocks: number;
  readonly atime: number;
  readonly mtime: number;
  readonly ctime: number;
  readonly atimeNsec: number;
  readonly mtimeNsec: number;
  readonly ctimeNsec: number;
  readonly mode: number;
  readonly nlink: number;
  readonly uid: number;
  readonly gid: number;
  readonly rdev: number;
  readonly blksize: number;
  readonly flags: number;
}

/**
 * fuse_entry_out, 128 bytes: the reply to LOOKUP and the first part of each direntplus.
 *
 * | off | type      | field            | notes                                         |
 * |-----|-----------|------------------|-----------------------------------------------|
 * | 0   | u64       | nodeid           | 0: a negative entry, cached for entry_valid   |
 * | 8   | u64       | generation       | nodeid:generation unique for the fs lifetime  |
 * | 16  | u64       | entry_valid      | seconds the name may be cached                |
 * | 24  | u64       | attr_valid       | seconds the attributes may be cached          |
 * | 32  | u32       | entry_valid_nsec |                                               |
 * | 36  | u32       | attr_valid_nsec  |                                               |
 * | 40  | fuse_attr | attr             |                                               |
 *
 * Every entry with a nonzero nodeid (from LOOKUP or READDIRPLUS) adds one to the kernel's
 * lookup count of that node, which FORGET / BATCH_FORGET later give back.
 */
export interface EntryOut {
  readonly nodeid: bigint;
  readonly generation: bigint;
  readonly entryValid: number;
  readonly entryValidNsec: number;
  readonly attrValid: number;
  readonly attrValidNsec: number;
  readonly attr: FuseAttr;
}

/**
 * fuse_attr_out, 104 bytes: the reply to GETATTR.
 * | 0 | u64 | attr_valid | 8 | u32 | attr_valid_nsec | 12 | u32 | dummy | 16 | fuse_attr | attr |
 */
export interface AttrOut {
  readonly attrValid: number;
  readonly attrValidNsec: number;
  readonly attr: FuseAttr;
}

/**
 * fuse_open_out, 16 bytes: the reply to OPEN and OPENDIR.
 * | 0 | u64 | fh | 8 | u32 | open_flags (FopenFlag) | 12 | i32 | backing_id (7.40, was padding) |
 */
export interface OpenOut {
  readonly fh: bigint;
  readonly openFlags: number;
  /** Only with FOPEN_PASSTHROUGH; 0 otherwise. */
  readonly backingId: number;
}

/**
 * fuse_kstatfs (fuse_statfs_out), 80 bytes: the reply to STATFS.
 *
 * | off | type    | field   |
 * |-----|---------|---------|
 * | 0   | u64     | blocks  |
 * | 8   | u64     | bfree   |
 * | 16  | u64     | bavail  |
 * | 24  | u64     | files   |
 * | 32  | u64     | ffree   |
 * | 40  | u32     | bsize   |
 * | 44  | u32     | namelen |
 * | 48  | u32     | frsize  |
 * | 52  | u32     | padding |
 * | 56  | u32[6]  | spare   |
 */
export interface Kstatfs {
  readonly blocks: number;
  readonly bfree: number;
  readonly bavail: number;
  readonly files: number;
  readonly ffree: number;
  readonly bsize: number;
  readonly namelen: number;
  readonly frsize: number;
}

/**
 * fuse_init_out, 64 bytes: the reply to INIT (init.ts negotiateInit fills it).
 *
 * | off | type    | field                | notes                                        |
 * |-----|---------|----------------------|----------------------------------------------|
 * | 0   | u32     | major                |                                              |
 * | 4   | u32     | minor                |                                              |
 * | 8   | u32     | max_readahead        | bytes; the kernel keeps the smaller          |
 * | 12  | u32     | flags                | bits 0..31 of the granted InitFlag set       |
 * | 16  | u16     | max_background       | 0 keeps the kernel default (12)              |
 * | 18  | u16     | congestion_threshold | 0 keeps the kernel default                   |
 * | 20  | u32     | max_write            | the kernel uses at least 4096                |
 * | 24  | u32     | time_gran            | ns; 1..10^9 is applied                       |
 * | 28  | u16     | max_pages            | with MAX_PAGES (7.28); capped by the kernel  |
 * | 30  | u16     | map_alignment        | with MAP_ALIGNMENT (7.31, DAX)               |
 * | 32  | u32     | flags2               | bits 32..63, read only with INIT_EXT (7.36)  |
 * | 36  | u32     | max_stack_depth      | with PASSTHROUGH (7.40)                      |
 * | 40  | u16     | request_timeout      | seconds, with REQUEST_TIMEOUT (7.43)         |
 * | 42  | u16[11] | unused               |                                              |
 */
export interface InitOut {
  readonly major: number;
  readonly minor: number;
  readonly maxReadahead: number;
  /** The whole 64-bit set; bits 32..63 are written to flags2. */
  readonly flags: bigint;
  readonly maxBackground: number;
  readonly congestionThreshold: number;
  readonly maxWrite: number;
  readonly timeGran: number;
  readonly maxPages: number;
  readonly mapAlignment: number;
  readonly maxStackDepth: number;
  readonly requestTimeout: number;
}

/**
 * fuse_dirent, 24 bytes + name, padded with zeros to a multiple of 8 (FUSE_DIRENT_SIZE):
 *
 * | off | type | field   | notes                                                        |
 * |-----|------|---------|--------------------------------------------------------------|
 * | 0   | u64  | ino     | d_ino                                                        |
 * | 8   | u64  | off     | cookie of the NEXT entry: the kernel resumes from it         |
 * | 16  | u32  | namelen | 1..1024, else the kernel fails the READDIR with EIO          |
 * | 20  | u32  | type    | DirentType (mode >> 12)                                      |
 * | 24  | u8[] | name    | no '/' (else EIO), no NUL                                    |
 *
 * fuse_direntplus is fuse_entry_out (128 bytes) followed by fuse_dirent, padded likewise
 * (FUSE_DIRENTPLUS_SIZE). An entry_out with nodeid 0 carries no attributes and takes no
 * lookup count (the usual answer for "." and "..").
 */
export interface Dirent {
  readonly ino: bigint;
  readonly off: number;
  readonly type: number;
  readonly name: Buffer;
}

export interface DirentPlus {
  readonly entry: EntryOut;
  readonly dirent: Dirent;
}

export interface PackedDirents {
  /** The reply body: `count` records, at most the `size` asked for. */
  readonly buf: Buffer;
  /** How many entries were packed; the entry after them did not fit. */
  readonly count: number;
}

// ---------------------------------------------------------------------------------------------
// Encoding

function checkErrno(errno: number): void {
  if (!Number.isInteger(errno) || errno < 1 || errno > MAX_REPLY_ERRNO)
    throw invalidField('reply errno', errno, `in 1..${MAX_REPLY_ERRNO}`);
}

export function writeOutHeader(buf: Buffer, off: number, h: OutHeader): void {
  putU32(buf, off, h.len, 'reply len');
  if (!Number.isInteger(h.error) || h.error > 0 || h.error < -MAX_REPLY_ERRNO)
    throw invalidField('reply error', h.error, `0 or a negative errno above -${MAX_REPLY_ERRNO + 1}`);
  buf.writeInt32LE(h.error, off + 4);
  putId(buf, off + 8, h.unique, 'reply unique');
}

/**
 * The 16-byte header of a successful reply whose body of `bodyLength` bytes the caller writes
 * after it in the same writev (a READ reply straight from a cache buffer, without a copy).
 */
export function replyHeader(unique: bigint, bodyLength: number): Buffer {
  const b = Buffer.allocUnsafe(Size.OUT_HEADER);
  putU32(b, 0, Size.OUT_HEADER + bodyLength, 'reply len');
  b.writeInt32LE(0, 4);
  putId(b, 8, unique, 'reply unique');
  return b;
}

/** An error reply: the header alone, error = -errno. */
export function errorReply(unique: bigint, errno: number): Buffer {
  checkErrno(errno);
  const b = Buffer.alloc(Size.OUT_HEADER);
  writeOutHeader(b, 0, { len: Size.OUT_HEADER, error: -errno, unique });
  return b;
}

/** Success with no body: FLUSH, RELEASE, RELEASEDIR, ACCESS, DESTROY. */
export function emptyReply(unique: bigint): Buffer {
  return replyHeader(unique, 0);
}

/**
 * Success with raw bytes: READ data (shorter than asked means end of file), READLINK target
 * (no NUL), GETXATTR value, LISTXATTR names (each NUL-terminated), packed dirents. A list of
 * buffers is joined; for zero-copy use replyHeader and writev instead.
 */
export function dataReply(unique: bigint, data: Buffer | readonly Buffer[]): Buffer {
  const parts = Buffer.isBuffer(data) ? [data] : data;
  let n = 0;
  for (const p of parts) n += p.length;
  const b = Buffer.alloc(Size.OUT_HEADER + n);
  writeOutHeader(b, 0, { len: b.length, error: 0, unique });
  let at = Size.OUT_HEADER;
  for (const p of parts) at += p.copy(b, at);
  return b;
}

function fixedReply(unique: bigint, size: number, write: (b: Buffer, off: number) => void): Buffer {
  const b = okReply(unique, size);
  write(b, Size.OUT_HEADER);
  return b;
}

/**
 * A zeroed reply buffer with the header of a success carrying `size` body bytes. Small replies
 * are slices of Node's shared pool (allocUnsafe), which costs no allocation of its own.
 */
function okReply(unique: bigint, size: number): Buffer {
  const b = Buffer.allocUnsafe(Size.OUT_HEADER + size).fill(0);
  b.writeUInt32LE(b.length, 0);
  putId(b, 8, unique, 'reply unique');
  return b;
}

const FILE_TYPES: ReadonlySet<number> = new Set([
  S_IFSOCK,
  S_IFLNK,
  S_IFREG,
  S_IFBLK,
  S_IFDIR,
  S_IFCHR,
  S_IFIFO,
]);

/**
 * The kernel fails a LOOKUP or GETATTR with EIO when the attr's mode has no valid file type
 * (fs/fuse fuse_invalid_attr), and marks the inode bad when GETATTR reports another type.
 */
export function checkMode(mode: number, what: string): void {
  if (!FILE_TYPES.has(mode & S_IFMT))
    throw invalidField(what, `0o${mode.toString(8)}`, 'a mode with a file type');
}

export function writeAttr(buf: Buffer, off: number, a: FuseAttr): void {
  putId(buf, off, a.ino, 'attr ino');
  putU64(buf, off + 8, a.size, 'attr size');
  putU64(buf, off + 16, a.blocks, 'attr blocks');
  putTime(buf, off + 24, a.atime, 'attr atime');
  putTime(buf, off + 32, a.mtime, 'attr mtime');
  putTime(buf, off + 40, a.ctime, 'attr ctime');
  putNsec(buf, off + 48, a.atimeNsec, 'attr atimensec');
  putNsec(buf, off + 52, a.mtimeNsec, 'attr mtimensec');
  putNsec(buf, off + 56, a.ctimeNsec, 'attr ctimensec');
  putU32(buf, off + 60, a.mode, 'attr mode');
  putU32(buf, off + 64, a.nlink, 'attr nlink');
  putU32(buf, off + 68, a.uid, 'attr uid');
  putU32(buf, off + 72, a.gid, 'attr gid');
  putU32(buf, off + 76, a.rdev, 'attr rdev');
  putU32(buf, off + 80, a.blksize, 'attr blksize');
  putU32(buf, off + 84, a.flags, 'attr flags');
}

export function writeEntryOut(buf: Buffer, off: number, e: EntryOut): void {
  if (e.nodeid !== 0n) checkMode(e.attr.mode, 'entry attr mode');
  putId(buf, off, e.nodeid, 'entry nodeid');
  putId(buf, off + 8, e.generation, 'entry generation');
  putU64(buf, off + 16, e.entryValid, 'entry_valid');
  putU64(buf, off + 24, e.attrValid, 'attr_valid');
  putNsec(buf, off + 32, e.entryValidNsec, 'entry_valid_nsec');
  putNsec(buf, off + 36, e.attrValidNsec, 'attr_valid_nsec');
  writeAttr(buf, off + 40, e.attr);
}

export function writeAttrOut(buf: Buffer, off: number, a: AttrOut): void {
  checkMode(a.attr.mode, 'attr mode');
  putU64(buf, off, a.attrValid, 'attr_valid');
  putNsec(buf, off + 8, a.attrValidNsec, 'attr_valid_nsec');
  writeAttr(buf, off + 16, a.attr);
}

export function writeOpenOut(buf: Buffer, off: number, o: OpenOut): void {
  putId(buf, off, o.fh, 'fh');
  putU32(buf, off + 8, o.openFlags, 'open_flags');
  putI32(buf, off + 12, o.backingId, 'backing_id');
}

export function writeKstatfs(buf: Buffer, off: number, s: Kstatfs): void {
  putU64(buf, off, s.blocks, 'statfs blocks');
  putU64(buf, off + 8, s.bfree, 'statfs bfree');
  putU64(buf, off + 16, s.bavail, 'statfs bavail');
  putU64(buf, off + 24, s.files, 'statfs files');
  putU64(buf, off + 32, s.ffree, 'statfs ffree');
  putU32(buf, off + 40, s.bsize, 'statfs bsize');
  putU32(buf, off + 44, s.namelen, 'statfs namelen');
  putU32(buf, off + 48, s.frsize, 'statfs frsize');
}

export function writeInitOut(buf: Buffer, off: number, o: InitOut): void {
  if (typeof o.flags !== 'bigint' || o.flags < 0n || o.flags >= 1n << 64n)
    throw invalidField('init flags', o.flags, 'a u64 bigint');
  putU32(buf, off, o.major, 'major');
  putU32(buf, off + 4, o.minor, 'minor');
  putU32(buf, off + 8, o.maxReadahead, 'max_readahead');
  buf.writeUInt32LE(Number(o.flags & 0xffff_ffffn), off + 12);
  putU16(buf, off + 16, o.maxBackground, 'max_background');
  putU16(buf, off + 18, o.congestionThreshold, 'congestion_threshold');
  putU32(buf, off + 20, o.maxWrite, 'max_write');
  putU32(buf, off + 24, o.timeGran, 'time_gran');
  putU16(buf, off + 28, o.maxPages, 'max_pages');
  putU16(buf, off + 30, o.mapAlignment, 'map_alignment');
  buf.writeUInt32LE(Number(o.flags >> 32n), off + 32);
  putU32(buf, off + 36, o.maxStackDepth, 'max_stack_depth');
  putU16(buf, off + 40, o.requestTimeout, 'request_timeout');
}

export function initReply(unique: bigint, o: InitOut): Buffer {
  const b = okReply(unique, Size.INIT_OUT);
  writeInitOut(b, Size.OUT_HEADER, o);
  return b;
}

/**
 * An entry the kernel makes no dentry for and caches nothing of (node id 0, timeouts 0): it
 * looks the name up itself each time (READDIRPLUS entries of "." and "..", pseudo directories).
 */
export function uncachedEntry(attr: FuseAttr): EntryOut {
  return {
    nodeid: 0n,
    generation: 0n,
    entryValid: 0,
    entryValidNsec: 0,
    attrValid: 0,
    attrValidNsec: 0,
    attr,
  };
}

/** The reply to LOOKUP. */
export function entryReply(unique: bigint, e: EntryOut): Buffer {
  const b = okReply(unique, Size.ENTRY_OUT);
  writeEntryOut(b, Size.OUT_HEADER, e);
  return b;
}

/**
 * A LOOKUP answer that the name does not exist, which the kernel caches for the timeout
 * (an ENOENT error reply is not cached): nodeid 0 ("Zero nodeid is same as -ENOENT, but with
 * valid timeout", fs/fuse/dir.c fuse_lookup_name).
 */
export function negativeEntryReply(unique: bigint, entryValid: number, entryValidNsec = 0): Buffer {
  return entryReply(unique, {
    nodeid: 0n,
    generation: 0n,
    entryValid,
    entryValidNsec,
    attrValid: 0,
    attrValidNsec: 0,
    attr: ZERO_ATTR,
  });
}

const ZERO_ATTR: FuseAttr = {
  ino: 0n,
  size: 0,
  blocks: 0,
  atime: 0,
  mtime: 0,
  ctime: 0,
  atimeNsec: 0,
  mtimeNsec: 0,
  ctimeNsec: 0,
  mode: 0,
  nlink: 0,
  uid: 0,
  gid: 0,
  rdev: 0,
  blksize: 0,
  flags: 0,
};

/** The reply to GETATTR. */
export function attrReply(unique: bigint, a: AttrOut): Buffer {
  const b = okReply(unique, Size.ATTR_OUT);
  writeAttrOut(b, Size.OUT_HEADER, a);
  return b;
}

/** The reply to OPEN and OPENDIR. */
export function openReply(unique: bigint, o: OpenOut): Buffer {
  const b = okReply(unique, Size.OPEN_OUT);
  writeOpenOut(b, Size.OUT_HEADER, o);
  return b;
}

/** The reply to STATFS. */
export function statfsReply(unique: bigint, s: Kstatfs): Buffer {
  const b = okReply(unique, Size.KSTATFS);
  writeKstatfs(b, Size.OUT_HEADER, s);
  return b;
}

/**
 * fuse_getxattr_out, 8 bytes: | 0 | u32 | size | 4 | u32 | padding |. The reply to a GETXATTR or
 * LISTXATTR that asked with size 0.
 */
export function xattrSizeReply(unique: bigint, size: number): Buffer {
  return fixedReply(unique, Size.GETXATTR_OUT, (b, off) => putU32(b, off, size, 'xattr size'));
}

/**
 * The whole GETXATTR / LISTXATTR answer for a value (or NUL-separated name list) that exists:
 * its length when asked with size 0, ERANGE when it is longer than `size`, else the bytes.
 */
export function xattrReply(unique: bigint, size: number, value: Buffer): Buffer {
  if (size === 0) return xattrSizeReply(unique, value.length);
  if (value.length > size) return errorReply(unique, Errno.ERANGE);
  return dataReply(unique, value);
}

/** FUSE_DIRENT_SIZE of an entry with a name of `nameLength` bytes. */
export function direntSize(nameLength: number): number {
  return direntAlign(Size.DIRENT + nameLength);
}

/** FUSE_DIRENTPLUS_SIZE of an entry with a name of `nameLength` bytes. */
export function direntPlusSize(nameLength: number): number {
  return direntAlign(Size.DIRENTPLUS + nameLength);
}

export function checkName(name: Buffer): void {
  if (name.length < 1 || name.length > FUSE_NAME_MAX)
    throw invalidField('dirent name length', name.length, `in 1..${FUSE_NAME_MAX}`);
  if (name.includes(0x2f) || name.includes(0))
    throw new NydusError(
      'ERR_INVALID_ARG',
      `Cannot encode dirent name "${name.toString()}": it holds '/' or NUL`,
    );
}

function writeDirent(buf: Buffer, off: number, d: Dirent): void {
  checkName(d.name);
  putId(buf, off, d.ino, 'dirent ino');
  putU64(buf, off + 8, d.off, 'dirent off');
  putU32(buf, off + 16, d.name.length, 'dirent namelen');
  putU32(buf, off + 20, d.type, 'dirent type');
  d.name.copy(buf, off + Size.DIRENT);
}

function checkSize(size: number): void {
  if (!Number.isInteger(size) || size < 0 || size > 0xffff_ffff)
    throw invalidField('readdir size', size, 'a u32');
}

/**
 * Pack READDIR entries into a body of at most `size` bytes (the request's size), stopping at the
 * first entry that does not fit. An empty body tells the kernel the directory has ended, so a
 * caller with entries left must never send one with count 0 (any single entry fits the page the
 * kernel asks with). With an iterator, the entry after `count` may have been taken from it.
 */
export function packDirents(entries: Iterable<Dirent>, size: number): PackedDirents {
  checkSize(size);
  const fit: Dirent[] = [];
  let total = 0;
  for (const d of entries) {
    const n = direntSize(d.name.length);
    if (total + n > size) break;
    fit.push(d);
    total += n;
  }
  const buf = Buffer.alloc(total);
  let at = 0;
  for (const d of fit) {
    writeDirent(buf, at, d);
    at += direntSize(d.name.length);
  }
  return { buf, count: fit.length };
}

/** Pack READDIRPLUS entries (entry_out + dirent each) like packDirents. */
export function packDirentsPlus(entries: Iterable<DirentPlus>, size: number): PackedDirents {
  checkSize(size);
  const fit: DirentPlus[] = [];
  let total = 0;
  for (const d of entries) {
    const n = direntPlusSize(d.dirent.name.length);
    if (total + n > size) break;
    fit.push(d);
    total += n;
  }
  const buf = Buffer.alloc(total);
  let at = 0;
  for (const d of fit) {
    writeEntryOut(buf, at, d.entry);
    writeDirent(buf, at + Size.ENTRY_OUT, d.dirent);
    at += direntPlusSize(d.dirent.name.length);
  }
  return { buf, count: fit.length };
}

// ---------------------------------------------------------------------------------------------
// Decoding, as the kernel reads replies (tests and the in-process harness).

export interface DecodedReply {
  readonly header: OutHeader;
  /** Everything after the header; empty for an error reply. */
  readonly body: Buffer;
}

/** Split a reply into header and body, with the kernel's checks on len and error. */
export function decodeReply(buf: Buffer): DecodedReply {
  if (buf.length < Size.OUT_HEADER)
    throw new FormatError(
      `Truncated FUSE reply: ${buf.length} bytes, the header needs ${Size.OUT_HEADER}`,
      0,
    );
  const header: OutHeader = {
    len: buf.readUInt32LE(0),
    error: buf.readInt32LE(4),
    unique: buf.readBigUInt64LE(8),
  };
  if (header.len !== buf.length)
    throw new FormatError(`FUSE reply length ${header.len} does not match its ${buf.length} bytes`, 0);
  if (header.error > 0 || header.error <= -(MAX_REPLY_ERRNO + 1))
    throw new FormatError(`FUSE reply error ${header.error} is not 0 or a negative errno`, 4);
  if (header.error !== 0 && buf.length !== Size.OUT_HEADER)
    throw new FormatError(`FUSE error reply carries ${buf.length - Size.OUT_HEADER} body bytes`, 16);
  return { header, body: buf.subarray(Size.OUT_HEADER) };
}

function exact(body: Buffer, size: number, what: string): Cursor {
  if (body.length !== size)
    throw new FormatError(`A ${what} is ${size} bytes, not ${body.length}`, Size.OUT_HEADER);
  return new Cursor(body, 0, Size.OUT_HEADER);
}

/** Times as the kernel reads them: u64 on the wire, time64_t in the inode. */
function time(c: Cursor, what: string): number {
  const at = c.base + c.pos;
  const v = c.bytes(8, what).readBigInt64LE(0);
  if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER))
    throw new FormatError(`Value of ${what} is out of range: ${v}`, at);
  return Number(v);
}

function readAttr(c: Cursor): FuseAttr {
  return {
    ino: c.big64('ino'),
    size: c.u64('size'),
    blocks: c.u64('blocks'),
    atime: time(c, 'atime'),
    mtime: time(c, 'mtime'),
    ctime: time(c, 'ctime'),
    atimeNsec: c.u32('atimensec'),
    mtimeNsec: c.u32('mtimensec'),
    ctimeNsec: c.u32('ctimensec'),
    mode: c.u32('mode'),
    nlink: c.u32('nlink'),
    uid: c.u32('uid'),
    gid: c.u32('gid'),
    rdev: c.u32('rdev'),
    blksize: c.u32('blksize'),
    flags: c.u32('flags'),
  };
}

function readEntryOut(c: Cursor): EntryOut {
  const nodeid = c.big64('nodeid');
  const generation = c.big64('generation');
  const entryValid = c.u64('entry_valid');
  const attrValid = c.u64('attr_valid');
  const entryValidNsec = c.u32('entry_valid_nsec');
  const attrValidNsec = c.u32('attr_valid_nsec');
  return { nodeid, generation, entryValid, entryValidNsec, attrValid, attrValidNsec, attr: readAttr(c) };
}

export function decodeAttr(body: Buffer): FuseAttr {
  return readAttr(exact(body, Size.ATTR, 'fuse_attr'));
}

export function decodeEntryOut(body: Buffer): EntryOut {
  return readEntryOut(exact(body, Size.ENTRY_OUT, 'fuse_entry_out'));
}

export function decodeAttrOut(body: Buffer): AttrOut {
  const c = exact(body, Size.ATTR_OUT, 'fuse_attr_out');
  const attrValid = c.u64('attr_valid');
  const attrValidNsec = c.u32('attr_valid_nsec');
  c.bytes(4, 'dummy');
  return { attrValid, attrValidNsec, attr: readAttr(c) };
}

export function decodeOpenOut(body: Buffer): OpenOut {
  const c = exact(body, Size.OPEN_OUT, 'fuse_open_out');
  const fh = c.big64('fh');
  const openFlags = c.u32('open_flags');
  return { fh, openFlags, backingId: c.bytes(4).readInt32LE(0) };
}

export function decodeKstatfs(body: Buffer): Kstatfs {
  const c = exact(body, Size.KSTATFS, 'fuse_kstatfs');
  return {
    blocks: c.u64('blocks'),
    bfree: c.u64('bfree'),
    bavail: c.u64('bavail'),
    files: c.u64('files'),
    ffree: c.u64('ffree'),
    bsize: c.u32('bsize'),
    namelen: c.u32('namelen'),
    frsize: c.u32('frsize'),
  };
}

export function decodeXattrSize(body: Buffer): number {
  return exact(body, Size.GETXATTR_OUT, 'fuse_getxattr_out').u32('size');
}

export function decodeInitOut(body: Buffer): InitOut {
  const c = exact(body, Size.INIT_OUT, 'fuse_init_out');
  const major = c.u32('major');
  const minor = c.u32('minor');
  const maxReadahead = c.u32('max_readahead');
  const lo = c.u32('flags');
  const maxBackground = c.u16('max_background');
  const congestionThreshold = c.u16('congestion_threshold');
  const maxWrite = c.u32('max_write');
  const timeGran = c.u32('time_gran');
  const maxPages = c.u16('max_pages');
  const mapAlignment = c.u16('map_alignment');
  const hi = c.u32('flags2');
  const maxStackDepth = c.u32('max_stack_depth');
  const requestTimeout = c.u16('request_timeout');
  return {
    major,
    minor,
    maxReadahead,
    flags: BigInt(lo) | (BigInt(hi) << 32n),
    maxBackground,
    congestionThreshold,
    maxWrite,
    timeGran,
    maxPages,
    mapAlignment,
    maxStackDepth,
    requestTimeout,
  };
}

function readDirent(c: Cursor): Dirent {
  const start = c.base + c.pos;
  const ino = c.big64('dirent ino');
  const off = c.u64('dirent off');
  const namelen = c.u32('dirent namelen');
  const type = c.u32('dirent type');
  if (namelen < 1 || namelen > FUSE_NAME_MAX)
    throw new FormatError(`Dirent name length ${namelen} is not in 1..${FUSE_NAME_MAX}`, start + 16);
  const name = Buffer.from(c.bytes(namelen, 'dirent name'));
  if (name.includes(0x2f)) throw new FormatError(`Dirent name "${name.toString()}" holds '/'`, start + 24);
  return { ino, off, type, name };
}

/**
 * Skip the padding to the next 8-byte boundary. The kernel drops a last record whose padding is
 * cut off (fs/fuse/readdir.c: `if (reclen > nbytes) break;`), so here that is an error.
 */
function pad(c: Cursor, recordStart: number): void {
  c.bytes(direntAlign(c.pos - recordStart) + recordStart - c.pos, 'dirent padding');
}

/** Unpack a READDIR body. */
export function decodeDirents(body: Buffer): Dirent[] {
  const c = new Cursor(body, 0, Size.OUT_HEADER);
  const out: Dirent[] = [];
  while (c.remaining > 0) {
    const start = c.pos;
    out.push(readDirent(c));
    pad(c, start);
  }
  return out;
}

/** Unpack a READDIRPLUS body. */
export function decodeDirentsPlus(body: Buffer): DirentPlus[] {
  const c = new Cursor(body, 0, Size.OUT_HEADER);
  const out: DirentPlus[] = [];
  while (c.remaining > 0) {
    const start = c.pos;
    const entry = readEntryOut(c);
    out.push({ entry, dirent: readDirent(c) });
    pad(c, start);
  }
  return out;
}
