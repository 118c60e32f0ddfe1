import { isUtf8 } from 'node:buffer';
import {
  closeSync,
  constants as fsConstants,
  lstatSync,
  openSync,
  readdirSync,
  readlinkSync,
  realpathSync,
  type BigIntStats,
} from 'node:fs';
import { createRequire } from 'node:module';
import type * as napiXattrModule from '@napi-rs/xattr';
import { errorText, NydusError } from '../errors/errors.js';
import { isDir, isReg, isSymlink, S_IFBLK, S_IFCHR, S_IFMT, S_IFREG } from '../format/flags.js';
import type { XattrPair } from '../format/model.js';
import { readU64 } from '../util/cursor.js';
import type { FileStamp } from './chunk-worker.js';
import { compareNames, type BuildEntry, type BuildInode, type BuildTree } from './tree.js';
import { markerOfNode, xattrsWithoutOpaque, type WhiteoutSpec } from './whiteout.js';

/**
 * Directory source: an lstat walk of a local directory into a BuildTree.
 *
 * Names and paths are raw bytes end to end (Linux names need not be UTF-8): names come from
 * `readdir(..., { encoding: 'buffer' })` and child paths are Buffers, which Node's fs accepts.
 *
 * File data is not read here. A regular file's inode gets `sourcePath` (a string) when its path
 * is valid UTF-8; a path that is not cannot be a JavaScript string, so it is only available as
 * bytes through `sourcePathOf(inode)` (and the `onFile` callback). Chunkers should read through
 * `sourcePathOf`, which covers both.
 */

/** What the walk does with whiteout markers (whiteout.ts). */
export type WhiteoutHandling =
  /** A single (or first) layer: markers are dropped, the overlayfs opaque xattr stripped. */
  | 'drop'
  /** An upper layer for `applyLayer`: markers stay as ordinary entries. */
  | 'keep';

export interface DirSourceOptions {
  whiteoutSpec: WhiteoutSpec;
  /**
   * Called once per regular-file inode (hardlinks: at the first name in walk order), with its
   * path as bytes and what lstat saw, before the walk goes on. Files come in build-index order
   * (rafs-format.md 2.9): a directory's files, then its subdirectories, depth first.
   */
  onFile?: (inode: BuildInode, path: Buffer, stamp: FileStamp) => void | Promise<void>;
  /** Recorded in every inode's `layer`. */
  layer?: number;
  signal?: AbortSignal;
}

export interface ScanOptions extends DirSourceOptions {
  whiteouts: WhiteoutHandling;
}

/** Xattr namespaces a build keeps (rafs-format.md 7); everything else is dropped. */
export const KEPT_XATTR_PREFIXES: readonly Buffer[] = ['user.', 'security.', 'trusted.'].map((s) =>
  Buffer.from(s),
);
export const KEPT_XATTR_NAMES: readonly Buffer[] = [
  'system.posix_acl_access',
  'system.posix_acl_default',
].map((s) => Buffer.from(s));

export function isKeptXattr(name: Buffer): boolean {
  return (
    KEPT_XATTR_PREFIXES.some((p) => name.length > p.length && name.subarray(0, p.length).equals(p)) ||
    KEPT_XATTR_NAMES.some((n) => n.equals(name))
  );
}

/** Keep the allowed namespaces, sorted by name bytes (the order writers keep). */
export function filterXattrs(xattrs: readonly XattrPair[]): XattrPair[] {
  return xattrs.filter((x) => isKeptXattr(x.name)).sort((a, b) => compareNames(a.name, b.name));
}

/**
 * Linux dev_t from major/minor (glibc's makedev). The result can exceed 2^53 only for majors
 * above 2^21, which no Linux kernel hands out; those are refused rather than rounded.
 */
export function makedev(major: number, minor: number): number {
  const ma = BigInt(major);
  const mi = BigInt(minor);
  const dev = ((ma & 0xfffn) << 8n) | (mi & 0xffn) | ((mi & ~0xffn) << 12n) | ((ma & ~0xfffn) << 32n);
  if (dev > BigInt(Number.MAX_SAFE_INTEGER))
    throw new NydusError('ERR_UNSUPPORTED', `Device number ${major}:${minor} is too large`);
  return Number(dev);
}

const sourcePaths = new WeakMap<BuildInode, Buffer>();
const sourceStamps = new WeakMap<BuildInode, FileStamp>();

/** Where the data of a regular file from a directory source is read from. */
export function sourcePathOf(inode: BuildInode): string | Buffer | undefined {
  return inode.sourcePath ?? sourcePaths.get(inode);
}

/**
 * What the walk saw of a regular file from a directory source (size, mtime, ctime); kept only by
 * a walk without `onFile` (which hands it over instead).
 */
export function sourceStampOf(inode: BuildInode): FileStamp | undefined {
  return sourceStamps.get(inode);
}

/** A single-layer directory build: whiteout markers are dropped (rafs-format.md 2.11). */
export async function treeFromDirectory(root: string | Buffer, opts: DirSourceOptions): Promise<BuildTree> {
  return scanDirectory(root, { ...opts, whiteouts: 'drop' });
}

/**
 * Walk `root` into a tree. The root itself may be a symlink to a directory (it is followed);
 * nothing below it is. The root's mtime is forced to 0 (rafs-format.md 2.13). Regular files that
 * share (dev, ino) become one BuildInode; other types that share an inode stay separate
 * (rafs-format.md 2.10).
 */
export async function scanDirectory(root: string | Buffer, opts: ScanOptions): Promise<BuildTree> {
  // Resolved first, so that the root's own xattrs are the directory's, not a symlink's.
  // The walk uses the synchronous calls: one system call each, no thread-pool round trip and
  // no promise per entry (twice as fast as the promise API on a cold cache, and half the CPU).
  const given = typeof root === 'string' ? Buffer.from(root) : root;
  const rootPath = ioSync(given, () => realpathSync(given, { encoding: 'buffer' }));
  const st = ioSync(rootPath, () => lstatSync(rootPath, { bigint: true }));
  if (!isDir(Number(st.mode)))
    throw new NydusError('ERR_INVALID_ARG', `Source "${given.toString()}" is not a directory`);
  const rootC = Buffer.concat([rootPath, NUL]);
  const rootWhere: EntryPath = { path: rootPath, cpath: rootC, dirFd: undefined, cname: rootC };
  const rootInode = inodeOf(rootWhere, entryStatOf(st), opts);
  rootInode.mtime = 0;
  rootInode.mtimeNsec = 0;
  rootInode.children = [];
  const hardlinks = new Map<string, BuildInode>();
  const stack: Pending[] = [{ path: rootPath, inode: rootInode }];
  const at = nativeAt();
  while (stack.length > 0) {
    opts.signal?.throwIfAborted();
    const { path: dirPath, inode: dir } = stack.pop()!;
    // Listed here and now, not ahead on the thread pool: every request to the pool wakes one of
    // its threads, and with both cores busy the walk then often lost its core for a few
    // milliseconds (half of the walk's time on a warm rootfs build went to those calls). Cold,
    // listing ahead gained nothing measurable.
    const names = packNames(ioSync(dirPath, () => readdirSync(dirPath, { encoding: 'latin1' })));
    const prefix = dirPath[dirPath.length - 1] === 0x2f ? dirPath : Buffer.concat([dirPath, SLASH]);
    const entries: BuildEntry[] = [];
    const subdirs: Pending[] = [];
    // The entries are looked at relative to their directory (see nativeAt), through a
    // descriptor of it; without one (no koffi, or it cannot be opened), by their whole path.
    const dirFd = at === undefined || names.length === 0 ? undefined : openDirectory(dirPath);
    try {
      for (const name of names) {
        // The path with a NUL after it, for libc; its tail is the name with a NUL after it.
        const cpath = Buffer.allocUnsafe(prefix.length + name.length + 1);
        prefix.copy(cpath, 0);
        name.copy(cpath, prefix.length);
        cpath[cpath.length - 1] = 0;
        const path = cpath.subarray(0, cpath.length - 1);
        const where: EntryPath = { path, cpath, dirFd, cname: cpath.subarray(prefix.length) };
        const s = dirFd === undefined ? lstatPath(path) : at!.lstat(dirFd, where.cname, path);
        const mode = s.mode;
        if (opts.whiteouts === 'drop' && markerOfNode(name, mode, s.rdev, opts.whiteoutSpec) !== undefined)
          continue;
        const linkKey = s.linkId;
        const shared = linkKey === undefined ? undefined : hardlinks.get(linkKey);
        if (shared !== undefined) {
          entries.push({ name, inode: shared });
          continue;
        }
        const inode = inodeOf(where, s, opts);
        entries.push({ name, inode });
        if (linkKey !== undefined) hardlinks.set(linkKey, inode);
        if (isDir(mode)) {
          inode.children = [];
          subdirs.push({ path, inode });
        } else if (isReg(mode)) {
          if (isUtf8(path)) inode.sourcePath = path.toString();
          else sourcePaths.set(inode, path);
          const stamp: FileStamp = {
            size: inode.size,
            mtimeNs: nanoseconds(s.mtimeSec, s.mtimeNsec),
            ctimeNs: nanoseconds(s.ctimeSec, s.ctimeNsec),
          };
          if (opts.onFile !== undefined) {
            // Handed over: nothing keeps it (or the path) once the file is chunked.
            const r = opts.onFile(inode, path, stamp);
            if (r instanceof Promise) await r;
          } else sourceStamps.set(inode, stamp);
        }
      }
    } finally {
      if (dirFd !== undefined) closeSync(dirFd);
    }
    if (opts.whiteouts === 'drop') dir.xattrs = xattrsWithoutOpaque(dir, opts.whiteoutSpec);
    dir.children = entries;
    // Reverse so that directories are visited in name order (the stack pops the last first).
    for (let k = subdirs.length - 1; k >= 0; k--) stack.push(subdirs[k]!);
  }
  return { root: rootInode };
}

/** A directory still to walk. */
interface Pending {
  path: Buffer;
  inode: BuildInode;
}

/**
 * A directory listing read as latin1 strings (one character per byte: exactly the name's bytes)
 * as Buffers sorted by bytes, all views of one allocation: a listing read as Buffers makes one
 * ArrayBuffer (and one malloc'ed store) per name, which the garbage collector then tracks for
 * the whole build. The code-unit order of latin1 strings is the byte order of the names.
 */
function packNames(listed: string[]): Buffer[] {
  listed.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  let total = 0;
  for (const n of listed) total += n.length;
  const all = Buffer.allocUnsafeSlow(total);
  const out: Buffer[] = new Array<Buffer>(listed.length);
  for (let i = 0, at = 0; i < listed.length; i++) {
    const n = listed[i]!;
    all.write(n, at, 'latin1');
    out[i] = all.subarray(at, at + n.length);
    at += n.length;
  }
  return out;
}

const SLASH = Buffer.from('/');

/**
 * What the walk keeps of an entry's lstat, as numbers: a BigIntStats per entry (a dozen BigInts)
 * cost the walk more than the system call.
 */
interface EntryStat {
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** Seconds (negative before 1970) and nanoseconds. */
  mtimeSec: number;
  mtimeNsec: number;
  ctimeSec: number;
  ctimeNsec: number;
  /** The dev_t of a device node; 0 for every other type. */
  rdev: number;
  /** A regular file with more than one link: its (device, inode number), as a string. */
  linkId: string | undefined;
}

/**
 * Where an entry is: its path (bare, and with a NUL after it for libc), and the descriptor of
 * its directory with its name there (undefined: look at it by path).
 */
interface EntryPath {
  path: Buffer;
  cpath: Buffer;
  dirFd: number | undefined;
  /** The name with a NUL after it (the tail of `cpath`), for calls relative to `dirFd`. */
  cname: Buffer;
}

function entryStatOf(s: BigIntStats): EntryStat {
  const mode = Number(s.mode);
  const type = mode & S_IFMT;
  const nsec = (ns: bigint): number => Number(((ns % 1_000_000_000n) + 1_000_000_000n) % 1_000_000_000n);
  const sec = (ns: bigint): number => Number((ns - BigInt(nsec(ns))) / 1_000_000_000n);
  return {
    mode,
    uid: Number(s.uid),
    gid: Number(s.gid),
    size: Number(s.size),
    mtimeSec: sec(s.mtimeNs),
    mtimeNsec: nsec(s.mtimeNs),
    ctimeSec: sec(s.ctimeNs),
    ctimeNsec: nsec(s.ctimeNs),
    // Number() of a non-zero dev_t is never 0, so the 0/0 test of whiteouts survives any rounding.
    rdev: type === S_IFCHR || type === S_IFBLK ? Number(s.rdev) : 0,
    linkId:
      type === S_IFREG && s.nlink > 1n
        ? linkIdOf(
            Number(((s.dev >> 8n) & 0xfffn) | ((s.dev >> 32n) & ~0xfffn)),
            Number((s.dev & 0xffn) | ((s.dev >> 12n) & ~0xffn)),
            Number(s.ino >> 32n),
            Number(s.ino & 0xffff_ffffn),
          )
        : undefined,
  };
}

/** The identity of a hard-linked file, the same from statx (major, minor) as from lstat (dev_t). */
function linkIdOf(devMajor: number, devMinor: number, inoHigh: number, inoLow: number): string {
  return `${devMajor}:${devMinor}:${inoHigh}:${inoLow}`;
}

function lstatPath(path: Buffer): EntryStat {
  return entryStatOf(ioSync(path, () => lstatSync(path, { bigint: true })));
}

/** The nanoseconds since 1970 of a time given as (seconds, nanoseconds). */
function nanoseconds(sec: number, nsec: number): bigint {
  return BigInt(sec) * 1_000_000_000n + BigInt(nsec);
}

/** A descriptor of a directory to look at its entries through, or undefined when it cannot be had. */
function openDirectory(path: Buffer): number | undefined {
  try {
    return openSync(path, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
  } catch {
    // The listing was read, so this is a race or a limit: the walk goes on by whole paths.
    return undefined;
  }
}

function inodeOf(where: EntryPath, s: EntryStat, opts: ScanOptions): BuildInode {
  const { path } = where;
  const mode = s.mode;
  // Times before 1970 are clamped to 0, like the tar source does.
  const before1970 = s.mtimeSec < 0;
  const type = mode & S_IFMT;
  const inode: BuildInode = {
    mode,
    uid: s.uid,
    gid: s.gid,
    mtime: before1970 ? 0 : s.mtimeSec,
    mtimeNsec: before1970 ? 0 : s.mtimeNsec,
    rdev: type === S_IFCHR || type === S_IFBLK ? devNumber(path, s.rdev) : 0,
    size: isReg(mode) ? s.size : 0,
    xattrs: readXattrs(where),
  };
  if (opts.layer !== undefined) inode.layer = opts.layer;
  if (isSymlink(mode)) {
    const target = ioSync(path, () => readlinkSync(path, { encoding: 'buffer' }));
    inode.target = target;
    inode.size = target.length;
  }
  return inode;
}

function devNumber(path: Buffer, rdev: number): number {
  if (!Number.isSafeInteger(rdev))
    throw new NydusError(
      'ERR_UNSUPPORTED',
      `Cannot read "${path.toString()}": device number ${rdev} is too large`,
    );
  return rdev;
}

function ioSync<T>(path: Buffer, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof NydusError) throw e;
    throw new NydusError('ERR_IO', `Cannot read "${path.toString()}": ${errorText(e)}`, { cause: e });
  }
}

/** The path as a string when its bytes are exactly valid UTF-8, else undefined. */
export function utf8Exact(path: Buffer): string | undefined {
  return isUtf8(path) ? path.toString('utf8') : undefined;
}

// ---------------------------------------------------------------------------------------------
// Extended attributes.
//
// @napi-rs/xattr uses the l* calls (it never follows a symlink, which is what a walk needs), but
// it takes and returns strings: it cannot name a path, or return an xattr name, that is not
// UTF-8. For those (rare) cases we call libc's llistxattr/lgetxattr through koffi when it is
// installed; without it such paths fail loudly instead of losing their xattrs.

const ENODATA = 61;
const ENOTSUP = 95;

/**
 * The kept xattrs of an entry. libc's listxattrat (or llistxattr) and lgetxattr through koffi
 * answer in one call each with a reused buffer (no xattrs, the common case, is one system
 * call); without koffi, @napi-rs/xattr.
 */
function readXattrs(where: EntryPath): XattrPair[] {
  const { path } = where;
  const libc = libcXattr();
  if (libc !== undefined) return filterXattrs(libc.read(where));
  const asString = utf8Exact(path);
  const fromNapi = asString === undefined ? undefined : napiXattrs(path, asString);
  if (fromNapi === undefined)
    throw new NydusError(
      'ERR_UNSUPPORTED',
      `Cannot read the xattrs of "${path.toString()}": its path or an xattr name is not UTF-8 and koffi is not available`,
    );
  return fromNapi;
}

/**
 * @napi-rs/xattr, loaded at its first use: it is the fallback for a machine without koffi, so a
 * build that reads xattrs through libc never loads it (nor has Node scan its 23 KB CommonJS
 * entry for named exports at start-up).
 */
let napiXattrLoaded: typeof napiXattrModule | undefined;

/** Xattrs through @napi-rs/xattr, or undefined when a name did not survive the string round trip. */
function napiXattrs(path: Buffer, asString: string): XattrPair[] | undefined {
  napiXattrLoaded ??= createRequire(import.meta.url)('@napi-rs/xattr') as typeof napiXattrModule;
  const { getAttributeSync, listAttributesSync } = napiXattrLoaded;
  let names: string[];
  try {
    names = listAttributesSync(asString);
  } catch (e) {
    if (osErrno(e) === ENOTSUP) return [];
    throw new NydusError('ERR_IO', `Cannot read "${path.toString()}": ${errorText(e)}`, { cause: e });
  }
  const out: XattrPair[] = [];
  for (const n of names) {
    if (n.includes('\uFFFD')) return undefined;
    const name = Buffer.from(n);
    if (!isKeptXattr(name)) continue;
    // null: the attribute went away since the listing (the binding reports no errno here).
    const value = getAttributeSync(asString, n);
    if (value !== null) out.push({ name, value: Buffer.from(value) });
  }
  return out.sort((a, b) => compareNames(a.name, b.name));
}

function osErrno(e: unknown): number | undefined {
  const m = /\(os error (\d+)\)/.exec(errorText(e));
  return m === null ? undefined : Number(m[1]);
}

interface LibcXattr {
  /** The xattrs of the entry; listed through its directory's descriptor when it has one. */
  read(where: EntryPath): XattrPair[];
}

let libcLoaded: { value: LibcXattr | undefined } | undefined;

function libcXattr(): LibcXattr | undefined {
  libcLoaded ??= { value: loadLibcXattr() };
  return libcLoaded.value;
}

type NativeFn = (...args: unknown[]) => unknown;
interface Koffi {
  load(path: string): { func(decl: string): NativeFn };
  errno(): number;
}

/** Buffer for lists and values: most fit, so one call each answers. */
const XATTR_BUF = 64 * 1024;

function loadLibcXattr(): LibcXattr | undefined {
  let koffi: Koffi;
  let llistxattr: NativeFn;
  let lgetxattr: NativeFn;
  try {
    // Resolved at run time: koffi is optional for this module.
    koffi = createRequire(import.meta.url)('koffi') as Koffi;
    const libc = koffi.load('libc.so.6');
    // void*: koffi passes a buffer's own memory, with no copy in or out.
    llistxattr = libc.func('intptr_t llistxattr(const void *path, void *list, uintptr_t size)');
    lgetxattr = libc.func(
      'intptr_t lgetxattr(const void *path, const void *name, void *value, uintptr_t size)',
    );
  } catch {
    return undefined;
  }
  const listAt = nativeAt()?.listxattr;
  /** listxattrat answers (a kernel before 6.13, or a sandbox, refuses it: then by path, for good). */
  let atWorks = listAt !== undefined;
  const fail = (path: Buffer, what: string, errno: number): never => {
    throw new NydusError('ERR_IO', `Cannot read "${path.toString()}": ${what} failed with errno ${errno}`);
  };
  const shared = Buffer.alloc(XATTR_BUF);
  // One call into the shared buffer; when that is too small (ERANGE), size, then fill, retried
  // when the attributes grow in between.
  const call = (
    path: Buffer,
    what: string,
    fn: (buf: Buffer | null, size: number) => number,
  ): Buffer | undefined => {
    const first = fn(shared, shared.length);
    if (first >= 0) return shared.subarray(0, first);
    let errno = koffi.errno();
    if (errno === ENOTSUP || errno === ENODATA) return undefined;
    if (errno !== ERANGE) fail(path, what, errno);
    for (let attempt = 0; attempt < 8; attempt++) {
      const n = fn(null, 0);
      if (n < 0) {
        errno = koffi.errno();
        if (errno === ENOTSUP || errno === ENODATA) return undefined;
        fail(path, what, errno);
      }
      const buf = Buffer.alloc(n);
      const got = n === 0 ? 0 : fn(buf, n);
      if (got >= 0) return buf.subarray(0, got);
      errno = koffi.errno();
      if (errno === ENOTSUP || errno === ENODATA) return undefined;
      if (errno !== ERANGE) fail(path, what, errno);
    }
    return fail(path, what, ERANGE);
  };
  return {
    read(where: EntryPath): XattrPair[] {
      const { path, cpath, dirFd } = where;
      const out: XattrPair[] = [];
      let listed: Buffer | undefined;
      if (atWorks && dirFd !== undefined) {
        // Relative to the directory: the kernel resolves one name, not the whole path.
        const n = listAt!(dirFd, where.cname, shared, shared.length);
        if (n >= 0) listed = shared.subarray(0, n);
        else {
          const errno = koffi.errno();
          if (errno === ENOSYS || errno === EPERM) atWorks = false;
          // Anything else (ERANGE, ENOTSUP...) is answered by the path call below.
        }
      }
      listed ??= call(path, 'llistxattr', (b, n) => Number(llistxattr(cpath, b, n)));
      if (listed === undefined || listed.length === 0) return out;
      // Copied: the shared buffer is reused for the values.
      const list = Buffer.from(listed);
      for (let at = 0; at < list.length;) {
        let end = list.indexOf(0, at);
        if (end < 0) end = list.length;
        const name = list.subarray(at, end);
        const cname = list.subarray(at, Math.min(end + 1, list.length));
        at = end + 1;
        if (name.length === 0 || !isKeptXattr(name)) continue;
        const z = cname[cname.length - 1] === 0 ? cname : Buffer.concat([name, NUL]);
        const value = call(path, 'lgetxattr', (b, n) => Number(lgetxattr(cpath, z, b, n)));
        if (value !== undefined) out.push({ name: Buffer.from(name), value: Buffer.from(value) });
      }
      return out;
    },
  };
}

const ERANGE = 34;
const EPERM = 1;
const ENOSYS = 38;
const NUL = Buffer.from([0]);

// ---------------------------------------------------------------------------------------------
// Looking at entries relative to their directory.
//
// lstat(2) and llistxattr(2) of a whole path resolve every component of it again for every
// entry (6-7 µs each on a rootfs, most of it the path walk); statx(2) and listxattrat(2) on a
// descriptor of the directory resolve one name (2-3 µs), and statx fills a buffer the walk
// reads the fields it needs from, with no BigIntStats made.

interface NativeAt {
  /** lstat of `cname` (a NUL-terminated name) in the directory `dirFd`; `path` names it in errors. */
  lstat(dirFd: number, cname: Buffer, path: Buffer): EntryStat;
  /** listxattrat(dirFd, cname, AT_SYMLINK_NOFOLLOW, list, size), when libc has syscall(2). */
  listxattr: ((dirFd: number, cname: Buffer, list: Buffer, size: number) => number) | undefined;
}

const AT_SYMLINK_NOFOLLOW = 0x100;
/** lstat does not trigger an automount of the entry either. */
const AT_NO_AUTOMOUNT = 0x800;
/** STATX_BASIC_STATS, and what a build needs of it: type, mode, nlink, uid, gid, mtime, ctime, ino, size. */
const STATX_BASIC_STATS = 0x7ff;
const STATX_NEEDED = 0x3df;
/** The listxattrat system call (Linux 6.13): 465 on x86-64 and arm64 alike (the unified numbers). */
const SYS_LISTXATTRAT = 465;

let atLoaded: { value: NativeAt | undefined } | undefined;

function nativeAt(): NativeAt | undefined {
  atLoaded ??= { value: loadNativeAt() };
  return atLoaded.value;
}

function i64At(b: Buffer, off: number): number {
  return b.readInt32LE(off + 4) * 0x1_0000_0000 + b.readUInt32LE(off);
}

function loadNativeAt(): NativeAt | undefined {
  if (process.platform !== 'linux') return undefined;
  let statx: NativeFn;
  let listxattr: NativeAt['listxattr'];
  try {
    const koffi = createRequire(import.meta.url)('koffi') as Koffi;
    const libc = koffi.load('libc.so.6');
    statx = libc.func('int statx(int dirfd, const void *path, int flags, unsigned int mask, void *buf)');
    try {
      // syscall(2) is variadic; its arguments here are all integers or pointers, which the
      // x86-64 and arm64 Linux calling conventions pass where a fixed signature puts them.
      const syscall = libc.func(
        'intptr_t syscall(intptr_t n, int dirfd, const void *path, unsigned int flags, void *list, uintptr_t size)',
      );
      listxattr = (dirFd, cname, list, size) =>
        Number(syscall(SYS_LISTXATTRAT, dirFd, cname, AT_SYMLINK_NOFOLLOW, list, size));
    } catch {
      listxattr = undefined;
    }
  } catch {
    return undefined;
  }
  // struct statx, filled by every call (the walk is one thread; the fields are read at once).
  const b = Buffer.alloc(256);
  return {
    lstat(dirFd, cname, path) {
      const r = statx(dirFd, cname, AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT, STATX_BASIC_STATS, b) as number;
      // A failure, or a file system that does not give every field: lstat by path says (or answers).
      if (r !== 0 || (b.readUInt32LE(0) & STATX_NEEDED) !== STATX_NEEDED) return lstatPath(path);
      const mode = b.readUInt16LE(28);
      const type = mode & S_IFMT;
      const nlink = b.readUInt32LE(16);
      return {
        mode,
        uid: b.readUInt32LE(20),
        gid: b.readUInt32LE(24),
        size: readU64(b, 40, 'stx_size'),
        mtimeSec: i64At(b, 112),
        mtimeNsec: b.readUInt32LE(120),
        ctimeSec: i64At(b, 96),
        ctimeNsec: b.readUInt32LE(104),
        rdev: type === S_IFCHR || type === S_IFBLK ? makedev(b.readUInt32LE(128), b.readUInt32LE(132)) : 0,
        // stx_dev_major, stx_dev_minor, stx_ino (high, low).
        linkId:
          type === S_IFREG && nlink > 1
            ? linkIdOf(b.readUInt32LE(136), b.readUInt32LE(140), b.readUInt32LE(36), b.readUInt32LE(32))
            : undefined,
      };
    },
    listxattr,
  };
}
