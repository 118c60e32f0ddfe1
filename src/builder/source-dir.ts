import { lstat, readdir, readlink, realpath } from 'node:fs/promises';
import type { BigIntStats } from 'node:fs';
import { createRequire } from 'node:module';
import { getAttributeSync, listAttributesSync } from '@napi-rs/xattr';
import { errorText, NydusError } from '../errors/errors.js';
import { isDir, isReg, isSymlink, S_IFBLK, S_IFCHR, S_IFMT } from '../format/flags.js';
import type { XattrPair } from '../format/model.js';
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
   * path as bytes, before the walk goes on.
   */
  onFile?: (inode: BuildInode, path: Buffer) => void | Promise<void>;
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

/** Where the data of a regular file from a directory source is read from. */
export function sourcePathOf(inode: BuildInode): string | Buffer | undefined {
  return inode.sourcePath ?? sourcePaths.get(inode);
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
  const given = typeof root === 'string' ? Buffer.from(root) : root;
  const rootPath = await io(given, () => realpath(given, { encoding: 'buffer' }));
  const st = await io(rootPath, () => lstat(rootPath, { bigint: true }));
  if (!isDir(Number(st.mode)))
    throw new NydusError('ERR_INVALID_ARG', `Source "${given.toString()}" is not a directory`);
  const rootInode = await inodeOf(rootPath, st, opts);
  rootInode.mtime = 0;
  rootInode.mtimeNsec = 0;
  rootInode.children = [];
  const hardlinks = new Map<string, BuildInode>();
  const stack: [Buffer, BuildInode][] = [[rootPath, rootInode]];
  while (stack.length > 0) {
    opts.signal?.throwIfAborted();
    const [dirPath, dir] = stack.pop()!;
    const names = await io(dirPath, () => readdir(dirPath, { encoding: 'buffer' }));
    names.sort(compareNames);
    const prefix = dirPath[dirPath.length - 1] === 0x2f ? dirPath : Buffer.concat([dirPath, SLASH]);
    const paths = names.map((n) => Buffer.concat([prefix, n]));
    const stats = await mapLimited(paths, STAT_CONCURRENCY, (p) => io(p, () => lstat(p, { bigint: true })));
    const entries: BuildEntry[] = [];
    const subdirs: [Buffer, BuildInode][] = [];
    for (let k = 0; k < names.length; k++) {
      const name = names[k]!;
      const path = paths[k]!;
      const s = stats[k]!;
      const mode = Number(s.mode);
      if (opts.whiteouts === 'drop' && isDroppedMarker(name, mode, s, opts.whiteoutSpec)) continue;
      const linkKey = isReg(mode) && s.nlink > 1n ? `${s.dev}:${s.ino}` : undefined;
      const shared = linkKey === undefined ? undefined : hardlinks.get(linkKey);
      if (shared !== undefined) {
        entries.push({ name, inode: shared });
        continue;
      }
      const inode = await inodeOf(path, s, opts);
      entries.push({ name, inode });
      if (linkKey !== undefined) hardlinks.set(linkKey, inode);
      if (isDir(mode)) {
        inode.children = [];
        subdirs.push([path, inode]);
      } else if (isReg(mode)) {
        const asString = utf8Exact(path);
        if (asString !== undefined) inode.sourcePath = asString;
        else sourcePaths.set(inode, path);
        if (opts.onFile !== undefined) await opts.onFile(inode, path);
      }
    }
    if (opts.whiteouts === 'drop') dir.xattrs = xattrsWithoutOpaque(dir, opts.whiteoutSpec);
    dir.children = entries;
    // Reverse so that directories are visited in name order (the stack pops the last first).
    for (let k = subdirs.length - 1; k >= 0; k--) stack.push(subdirs[k]!);
  }
  return { root: rootInode };
}

const SLASH = Buffer.from('/');
/** lstat calls in flight per directory. */
const STAT_CONCURRENCY = 32;

function isDroppedMarker(name: Buffer, mode: number, s: BigIntStats, spec: WhiteoutSpec): boolean {
  // Number() of a non-zero dev_t is never 0, so the 0/0 test survives any rounding.
  return markerOfNode(name, mode, Number(s.rdev), spec) !== undefined;
}

async function inodeOf(path: Buffer, s: BigIntStats, opts: ScanOptions): Promise<BuildInode> {
  const mode = Number(s.mode);
  const ns = s.mtimeNs;
  // Times before 1970 are clamped to 0, like the tar source does.
  const mtime = ns < 0n ? 0 : Number(ns / 1_000_000_000n);
  const mtimeNsec = ns < 0n ? 0 : Number(ns % 1_000_000_000n);
  const type = mode & S_IFMT;
  const inode: BuildInode = {
    mode,
    uid: Number(s.uid),
    gid: Number(s.gid),
    mtime,
    mtimeNsec,
    rdev: type === S_IFCHR || type === S_IFBLK ? devNumber(path, s.rdev) : 0,
    size: isReg(mode) ? Number(s.size) : 0,
    xattrs: await readXattrs(path),
  };
  if (opts.layer !== undefined) inode.layer = opts.layer;
  if (isSymlink(mode)) {
    const target = await io(path, () => readlink(path, { encoding: 'buffer' }));
    inode.target = target;
    inode.size = target.length;
  }
  return inode;
}

function devNumber(path: Buffer, rdev: bigint): number {
  if (rdev > BigInt(Number.MAX_SAFE_INTEGER))
    throw new NydusError(
      'ERR_UNSUPPORTED',
      `Cannot read "${path.toString()}": device number ${rdev} is too large`,
    );
  return Number(rdev);
}

/** Run `fn` over `items` with at most `limit` calls in flight, results in input order. */
async function mapLimited<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<R>,
): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const k = next++;
      out[k] = await fn(items[k]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

async function io<T>(path: Buffer, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof NydusError) throw e;
    throw new NydusError('ERR_IO', `Cannot read "${path.toString()}": ${errorText(e)}`, { cause: e });
  }
}

/** The path as a string when its bytes are exactly valid UTF-8, else undefined. */
export function utf8Exact(path: Buffer): string | undefined {
  const s = path.toString('utf8');
  return Buffer.from(s).equals(path) ? s : undefined;
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

async function readXattrs(path: Buffer): Promise<XattrPair[]> {
  const asString = utf8Exact(path);
  if (asString !== undefined) {
    const fromNapi = napiXattrs(path, asString);
    if (fromNapi !== undefined) return fromNapi;
  }
  const libc = await libcXattr();
  if (libc === undefined)
    throw new NydusError(
      'ERR_UNSUPPORTED',
      `Cannot read the xattrs of "${path.toString()}": its path or an xattr name is not UTF-8 and koffi is not available`,
    );
  return filterXattrs(libc.read(path));
}

/** Xattrs through @napi-rs/xattr, or undefined when a name did not survive the string round trip. */
function napiXattrs(path: Buffer, asString: string): XattrPair[] | undefined {
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
  read(path: Buffer): XattrPair[];
}

let libcLoaded: Promise<LibcXattr | undefined> | undefined;

function libcXattr(): Promise<LibcXattr | undefined> {
  libcLoaded ??= loadLibcXattr();
  return libcLoaded;
}

type NativeFn = (...args: unknown[]) => unknown;
interface Koffi {
  load(path: string): { func(decl: string): NativeFn };
  errno(): number;
}

async function loadLibcXattr(): Promise<LibcXattr | undefined> {
  let koffi: Koffi;
  try {
    // Resolved at run time: koffi is optional for this module.
    const specifier = createRequire(import.meta.url).resolve('koffi');
    const mod = (await import(specifier)) as { default?: Koffi } & Koffi;
    koffi = mod.default ?? mod;
  } catch {
    return undefined;
  }
  let llistxattr: NativeFn;
  let lgetxattr: NativeFn;
  try {
    const libc = koffi.load('libc.so.6');
    llistxattr = libc.func('intptr_t llistxattr(const uint8_t *path, _Out_ uint8_t *list, uintptr_t size)');
    lgetxattr = libc.func(
      'intptr_t lgetxattr(const uint8_t *path, const uint8_t *name, _Out_ uint8_t *value, uintptr_t size)',
    );
  } catch {
    return undefined;
  }
  const fail = (path: Buffer, what: string, errno: number): never => {
    throw new NydusError('ERR_IO', `Cannot read "${path.toString()}": ${what} failed with errno ${errno}`);
  };
  // Size, then fill; retried when the attributes grow in between (ERANGE).
  const sized = (
    path: Buffer,
    what: string,
    call: (buf: Buffer | null, size: number) => number,
  ): Buffer | undefined => {
    for (let attempt = 0; attempt < 8; attempt++) {
      const n = call(null, 0);
      if (n < 0) {
        const errno = koffi.errno();
        if (errno === ENOTSUP || errno === ENODATA) return undefined;
        fail(path, what, errno);
      }
      const buf = Buffer.alloc(n);
      const got = n === 0 ? 0 : call(buf, n);
      if (got >= 0) return buf.subarray(0, got);
      const errno = koffi.errno();
      if (errno === ENOTSUP || errno === ENODATA) return undefined;
      if (errno !== ERANGE) fail(path, what, errno);
    }
    return fail(path, what, ERANGE);
  };
  return {
    read(path: Buffer): XattrPair[] {
      const cpath = Buffer.concat([path, NUL]);
      const list = sized(path, 'llistxattr', (b, n) => Number(llistxattr(cpath, b, n)));
      const out: XattrPair[] = [];
      if (list === undefined) return out;
      for (let at = 0; at < list.length;) {
        let end = list.indexOf(0, at);
        if (end < 0) end = list.length;
        const name = Buffer.from(list.subarray(at, end));
        at = end + 1;
        if (name.length === 0 || !isKeptXattr(name)) continue;
        const cname = Buffer.concat([name, NUL]);
        const value = sized(path, 'lgetxattr', (b, n) => Number(lgetxattr(cpath, cname, b, n)));
        if (value !== undefined) out.push({ name, value: Buffer.from(value) });
      }
      return out;
    },
  };
}

const ERANGE = 34;
const NUL = Buffer.from([0]);
