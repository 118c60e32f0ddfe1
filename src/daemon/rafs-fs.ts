import { FopenFlag, InitFlag, Errno, Opcode, S_IFBLK, S_IFCHR, S_IFMT, Size } from '../fuse/abi.js';
import { putNsec, putTime, putU32, putU64 } from '../fuse/wire.js';
import { ATTR_BLKSIZE, direntType, fuseRdev, toFuseAttr } from '../fuse/attr.js';
import { errnoOf, FuseError } from '../fuse/errors.js';
import type { InitOptions } from '../fuse/init.js';
import {
  decodeRequest,
  encodeRequest,
  type FuseRequest,
  type AccessRequest,
  type GetattrRequest,
  type GetxattrRequest,
  type ListxattrRequest,
  type LookupRequest,
  type OpenRequest,
  type ReaddirplusRequest,
  type ReaddirRequest,
  type ReadlinkRequest,
  type ReadRequest,
} from '../fuse/messages.js';
import {
  attrReply,
  checkMode,
  checkName,
  dataReply,
  direntPlusSize,
  entryReply,
  errorReply,
  packDirents,
  uncachedEntry,
  writeEntryOut,
  type AttrOut,
  type Dirent,
  type EntryOut,
  type FuseAttr,
  type Kstatfs,
  type OpenOut,
} from '../fuse/replies.js';
import type { FuseHandler, LentBytes } from '../fuse/session.js';
import { isDir, isReg, isSymlink } from '../format/flags.js';
import type { DirEntry, InodeAttr } from '../format/model.js';
import type { RafsImage } from '../rafs/image.js';

/**
 * The RAFS file system over FUSE: a read-only view of one `RafsImage`. Stateless apart from
 * a parent map for "..": node ids are derived from inode numbers (the root is FUSE node 1), so
 * a node id always names the same inode and so the same file type.
 */

export interface RafsFsOptions {
  /** Verify chunk digests on read (config `rafs.validate`). */
  readonly validate?: boolean;
  /** Serve GETXATTR/LISTXATTR (config `rafs.enable_xattr`); otherwise no xattr exists (ENODATA, an empty list). */
  readonly enableXattr?: boolean;
  /** Entry and attribute timeouts in seconds. Default: a day (the image never changes). */
  readonly timeoutSec?: number;
  /**
   * Added to every node id and reported inode number (the VFS puts each mounted instance in
   * its own range: slot << 56). The root is `nodeBase | 1`. Default 0: the root is node 1.
   */
  readonly nodeBase?: bigint;
}

/**
 * What a read-only RAFS mount asks of the kernel in INIT: async and big reads, readdirplus,
 * parallel lookups, symlink caching, no OPEN/RELEASE round trips, and with `noOpendir` none
 * for OPENDIR either (the listing is then cached by the kernel).
 */
export function rafsInit(noOpendir: boolean): InitOptions {
  return {
    want:
      InitFlag.ASYNC_READ |
      InitFlag.BIG_WRITES |
      InitFlag.DO_READDIRPLUS |
      InitFlag.PARALLEL_DIROPS |
      InitFlag.MAX_PAGES |
      InitFlag.CACHE_SYMLINKS |
      InitFlag.NO_OPEN_SUPPORT |
      (noOpendir ? InitFlag.NO_OPENDIR_SUPPORT : 0n) |
      InitFlag.INIT_EXT,
    maxPages: 256,
  };
}

/** Node ids and inode numbers of one instance stay below this (the VFS uses the top 8 bits). */
export const NODE_MASK = (1n << 56n) - 1n;

const DAY = 24 * 3600;
/** Node id for inode 0 when inode 0 is not the root (FUSE reserves node id 0). */
const ZERO_NODE = NODE_MASK;
const DOT = Buffer.from('.');
const DOTDOT = Buffer.from('..');
/** Readdir offsets: "." is entry 0, ".." entry 1, child k entry k + 2. */
const FIRST_CHILD = 2;

function enoent(what: string): FuseError {
  return new FuseError('ERR_NOT_FOUND', what, Errno.ENOENT);
}

const EMPTY_ATTR: FuseAttr = toFuseAttr({
  ino: 0,
  mode: 0,
  uid: 0,
  gid: 0,
  size: 0,
  blocks: 0,
  nlink: 0,
  rdev: 0,
  mtime: 0,
  mtimeNsec: 0,
});

export class RafsFs implements FuseHandler {
  readonly image: RafsImage;
  readonly #validate: boolean;
  /** What every read asks of the image. */
  readonly #readOpts: { readonly verify: boolean };
  readonly #xattr: boolean;
  readonly #ttl: number;
  readonly #root: number;
  readonly #base: bigint;
  /** #base in two halves (the VFS slot << 24 is the high one). */
  readonly #baseHi: number;
  readonly #baseLo: number;
  #granted = 0n;
  /** Parent of each directory seen so far (for ".." in readdir). */
  readonly #parents = new Map<number, number>();

  constructor(image: RafsImage, opts: RafsFsOptions = {}) {
    this.image = image;
    this.#validate = opts.validate ?? false;
    this.#readOpts = { verify: this.#validate };
    this.#xattr = opts.enableXattr ?? false;
    this.#ttl = opts.timeoutSec ?? DAY;
    this.#root = image.bootstrap.rootIno;
    this.#base = opts.nodeBase ?? 0n;
    this.#baseHi = Number((this.#base >> 32n) & 0xffff_ffffn);
    this.#baseLo = Number(this.#base & 0xffff_ffffn);
    this.#parents.set(this.#root, this.#root);
  }

  /**
   * Run a few requests on the root through the request path (decoding, this file system, reply
   * encoding) without the kernel, answers dropped. JavaScript compiles a function at its first
   * call, so otherwise the first requests of a new mount pay for compiling that path: the first
   * lookups of a container starting from a lazily loaded image. Nothing is counted or kept.
   */
  warmUp(): void {
    const header = { unique: 0n, nodeid: this.#base | 1n, uid: 0, gid: 0, pid: 0 };
    const requests: FuseRequest[] = [
      { ...header, op: 'getattr', opcode: Opcode.GETATTR, getattrFlags: 0, fh: 0n },
      {
        ...header,
        op: 'readdirplus',
        opcode: Opcode.READDIRPLUS,
        fh: 0n,
        offset: 0,
        size: 4096,
        readFlags: 0,
        lockOwner: 0n,
        flags: 0,
      },
      { ...header, op: 'lookup', opcode: Opcode.LOOKUP, name: Buffer.from('.nydus-warm-up') },
    ];
    for (let round = 0; round < 3; round++) {
      for (const r of requests) {
        const req = decodeRequest(encodeRequest(r));
        try {
          if (req.op === 'getattr') attrReply(req.unique, this.getattr(req));
          else if (req.op === 'readdirplus') dataReply(req.unique, this.readdirplus(req));
          else if (req.op === 'lookup') entryReply(req.unique, this.lookup(req));
        } catch (e) {
          errorReply(req.unique, errnoOf(e));
        }
      }
    }
  }

  /** FUSE node id of inode `ino`: the root is 1 and inode 1 takes the root's number. */
  nodeOf(ino: number): bigint {
    if (ino === this.#root) return this.#base | 1n;
    const v = ino === 1 ? this.#root : ino;
    if (v === 0) return this.#base | ZERO_NODE;
    const n = BigInt(v);
    if (n >= ZERO_NODE) throw new FuseError('ERR_FORMAT', `Inode number ${v} is too large`, Errno.EIO);
    return this.#base | n;
  }

  /** Inode number of FUSE node `nodeid` (the inverse of nodeOf). */
  inoOf(nodeid: bigint): number {
    const inner = nodeid & NODE_MASK;
    if (inner === 1n) return this.#root;
    const v = inner === ZERO_NODE ? 0 : Number(inner);
    if (v === this.#root) return 1;
    return v;
  }

  #attr(ino: number): InodeAttr {
    try {
      return this.image.bootstrap.getAttr(ino);
    } catch (e) {
      throw new FuseError('ERR_NOT_FOUND', `No inode ${ino}`, Errno.ENOENT, { cause: e });
    }
  }

  #entry(ino: number, attr: InodeAttr = this.#attr(ino)): EntryOut {
    return {
      nodeid: this.nodeOf(ino),
      generation: 0n,
      entryValid: this.#ttl,
      entryValidNsec: 0,
      attrValid: this.#ttl,
      attrValidNsec: 0,
      attr: this.#fuseAttr(attr),
    };
  }

  #fuseAttr(attr: InodeAttr): FuseAttr {
    const a = toFuseAttr(attr);
    return this.#base === 0n ? a : { ...a, ino: this.#base | a.ino };
  }

  /** The inode number reported for `ino` (st_ino, d_ino). */
  #reportedIno(ino: number): bigint {
    return this.#base | BigInt(ino);
  }

  init(): InitOptions {
    return rafsInit(true);
  }

  initialized(flags: bigint): void {
    this.#granted = flags;
  }

  /** Zero-message opendir where the kernel offers it (an ENOSYS answer turns OPENDIR off). */
  opendir(): OpenOut {
    if ((this.#granted & InitFlag.NO_OPENDIR_SUPPORT) !== 0n)
      throw new FuseError('ERR_UNSUPPORTED', 'opendir needs no handle', Errno.ENOSYS);
    return { fh: 0n, openFlags: FopenFlag.KEEP_CACHE | FopenFlag.CACHE_DIR, backingId: 0 };
  }

  lookup(req: LookupRequest): EntryOut {
    const dir = this.inoOf(req.nodeid);
    const attr = this.#attr(dir);
    if (!isDir(attr.mode)) throw new FuseError('ERR_INODE_TYPE', 'Not a directory', Errno.ENOTDIR);
    const e = this.image.bootstrap.lookup(dir, req.name);
    if (e === undefined) throw enoent(`No "${req.name.toString()}" in inode ${dir}`);
    const child = this.#attr(e.ino);
    if (isDir(child.mode)) this.#parents.set(e.ino, dir);
    return this.#entry(e.ino, child);
  }

  getattr(req: GetattrRequest): AttrOut {
    return {
      attrValid: this.#ttl,
      attrValidNsec: 0,
      attr: this.#fuseAttr(this.#attr(this.inoOf(req.nodeid))),
    };
  }

  readlink(req: ReadlinkRequest): Buffer {
    const ino = this.inoOf(req.nodeid);
    if (!isSymlink(this.#attr(ino).mode))
      throw new FuseError('ERR_INODE_TYPE', 'Not a symlink', Errno.EINVAL);
    return this.image.bootstrap.readlink(ino);
  }

  /**
   * Zero-message open where the kernel offers it: the first ENOSYS turns OPEN and RELEASE off
   * (the kernel then opens with KEEP_CACHE by itself), saving two round trips per file.
   */
  open(req: OpenRequest): OpenOut {
    const attr = this.#attr(this.inoOf(req.nodeid));
    if (isDir(attr.mode)) throw new FuseError('ERR_INODE_TYPE', 'Is a directory', Errno.EISDIR);
    if ((this.#granted & InitFlag.NO_OPEN_SUPPORT) !== 0n)
      throw new FuseError('ERR_UNSUPPORTED', 'open needs no handle', Errno.ENOSYS);
    return { fh: 0n, openFlags: FopenFlag.KEEP_CACHE, backingId: 0 };
  }

  /**
   * The bytes, at once when the image can serve them without waiting (a local blob in the page
   * cache: no promise, no thread hop), else a promise of them.
   */
  read(req: ReadRequest): LentBytes | Promise<LentBytes> {
    const ino = this.inoOf(req.nodeid);
    if (!isReg(this.#attr(ino).mode))
      throw new FuseError('ERR_INODE_TYPE', 'Not a regular file', Errno.EINVAL);
    const opts = this.#readOpts;
    return (
      this.image.readFileSharedNow(ino, req.offset, req.size, opts) ??
      this.image.readFileShared(ino, req.offset, req.size, opts)
    );
  }

  #dirEntries(
    req: ReaddirRequest | ReaddirplusRequest,
    perEntry: number,
  ): {
    dir: number;
    dots: { name: Buffer; ino: number; off: number }[];
    children: { name: Buffer; ino: number; type: number; off: number }[];
  } {
    const dir = this.inoOf(req.nodeid);
    const attr = this.#attr(dir);
    if (!isDir(attr.mode)) throw new FuseError('ERR_INODE_TYPE', 'Not a directory', Errno.ENOTDIR);
    const dots: { name: Buffer; ino: number; off: number }[] = [];
    if (req.offset <= 0) dots.push({ name: Buffer.from('.'), ino: dir, off: 1 });
    if (req.offset <= 1) dots.push({ name: Buffer.from('..'), ino: this.#parents.get(dir) ?? dir, off: 2 });
    const start = Math.max(0, req.offset - FIRST_CHILD);
    const limit = Math.max(1, Math.ceil(req.size / perEntry));
    const children = this.image.bootstrap
      .readdir(dir, start, limit)
      .map((e, i) => ({ name: e.name, ino: e.ino, type: e.type, off: start + i + FIRST_CHILD + 1 }));
    for (const c of children) if (isDir(c.type)) this.#parents.set(c.ino, dir);
    return { dir, dots, children };
  }

  readdir(req: ReaddirRequest): Buffer {
    const { dots, children } = this.#dirEntries(req, 32);
    const list: Dirent[] = [
      ...dots.map((d) => ({
        ino: this.#reportedIno(d.ino),
        off: d.off,
        type: direntType(0o040000),
        name: d.name,
      })),
      ...children.map((c) => ({
        ino: this.#reportedIno(c.ino),
        off: c.off,
        type: direntType(c.type),
        name: c.name,
      })),
    ];
    return packDirents(list, req.size).buf;
  }

  /**
   * READDIRPLUS, packed straight into the reply body: each child's fuse_entry_out and dirent
   * are written from its inode attributes, with no EntryOut, FuseAttr or DirentPlus objects on
   * the way (the request a directory walk makes most). Attributes are read lazily: packing
   * stops at the first entry that does not fit.
   */
  readdirplus(req: ReaddirplusRequest): Buffer {
    const dir = this.inoOf(req.nodeid);
    if (!isDir(this.#attr(dir).mode)) throw new FuseError('ERR_INODE_TYPE', 'Not a directory', Errno.ENOTDIR);
    const size = req.size;
    const dots: { name: Buffer; ino: number; off: number }[] = [];
    if (req.offset <= 0) dots.push({ name: DOT, ino: dir, off: 1 });
    if (req.offset <= 1) dots.push({ name: DOTDOT, ino: this.#parents.get(dir) ?? dir, off: 2 });
    let total = 0;
    let ndots = 0;
    for (const d of dots) {
      const n = direntPlusSize(d.name.length);
      if (total + n > size) break;
      total += n;
      ndots++;
    }
    const start = Math.max(0, req.offset - FIRST_CHILD);
    const children: DirEntry[] = [];
    const attrs: InodeAttr[] = [];
    if (ndots === dots.length) {
      const list = this.image.bootstrap.readdir(dir, start, Math.max(1, Math.ceil(size / 160)));
      for (const c of list) {
        const n = direntPlusSize(c.name.length);
        if (total + n > size) break;
        const attr = this.#attr(c.ino);
        if (isDir(attr.mode)) this.#parents.set(c.ino, dir);
        children.push(c);
        attrs.push(attr);
        total += n;
      }
    }
    const buf = Buffer.alloc(total);
    let at = 0;
    for (let i = 0; i < ndots; i++) {
      const d = dots[i]!;
      writeEntryOut(buf, at, uncachedEntry({ ...EMPTY_ATTR, ino: this.#reportedIno(d.ino), mode: 0o040000 }));
      this.#putDirent(buf, at + Size.ENTRY_OUT, d.ino, d.off, 0o040000, d.name);
      at += direntPlusSize(d.name.length);
    }
    for (let i = 0; i < children.length; i++) {
      const c = children[i]!;
      const attr = attrs[i]!;
      this.#putEntry(buf, at, c.ino, attr);
      this.#putDirent(buf, at + Size.ENTRY_OUT, attr.ino, start + i + FIRST_CHILD + 1, attr.mode, c.name);
      at += direntPlusSize(c.name.length);
    }
    return buf;
  }

  /** The u64 `#base | inner` at `off` (`inner` a safe integer), as #reportedIno makes it. */
  #putBased(buf: Buffer, off: number, inner: number): void {
    const hi = Math.floor(inner / 0x1_0000_0000);
    buf.writeUInt32LE(((inner - hi * 0x1_0000_0000) | this.#baseLo) >>> 0, off);
    buf.writeUInt32LE((this.#baseHi | hi) >>> 0, off + 4);
  }

  /** fuse_entry_out of inode `ino` at `off` (what #entry and entryReply write, without objects). */
  #putEntry(buf: Buffer, off: number, ino: number, attr: InodeAttr): void {
    // The node id, as nodeOf gives it.
    if (ino === this.#root) this.#putBased(buf, off, 1);
    else {
      const v = ino === 1 ? this.#root : ino;
      // A safe integer is always below ZERO_NODE (2^56 - 1), which nodeOf refuses.
      if (v === 0) {
        buf.writeUInt32LE(0xffff_ffff, off);
        buf.writeUInt32LE((this.#baseHi | 0xff_ffff) >>> 0, off + 4);
      } else this.#putBased(buf, off, v);
    }
    // generation 0; the timeouts, their nanoseconds 0.
    putU64(buf, off + 16, this.#ttl, 'entry_valid');
    putU64(buf, off + 24, this.#ttl, 'attr_valid');
    // fuse_attr, as toFuseAttr makes it.
    const a = off + 40;
    checkMode(attr.mode, 'entry attr mode');
    this.#putBased(buf, a, attr.ino);
    putU64(buf, a + 8, attr.size, 'attr size');
    putU64(buf, a + 16, attr.blocks, 'attr blocks');
    putTime(buf, a + 24, attr.mtime, 'attr atime');
    putTime(buf, a + 32, attr.mtime, 'attr mtime');
    putTime(buf, a + 40, attr.mtime, 'attr ctime');
    putNsec(buf, a + 48, attr.mtimeNsec, 'attr atimensec');
    putNsec(buf, a + 52, attr.mtimeNsec, 'attr mtimensec');
    putNsec(buf, a + 56, attr.mtimeNsec, 'attr ctimensec');
    putU32(buf, a + 60, attr.mode, 'attr mode');
    putU32(buf, a + 64, attr.nlink, 'attr nlink');
    putU32(buf, a + 68, attr.uid, 'attr uid');
    putU32(buf, a + 72, attr.gid, 'attr gid');
    const type = attr.mode & S_IFMT;
    if (type === S_IFCHR || type === S_IFBLK) putU32(buf, a + 76, fuseRdev(attr.rdev), 'attr rdev');
    buf.writeUInt32LE(ATTR_BLKSIZE, a + 80);
  }

  /** fuse_dirent at `off`: the reported inode number of `ino`, `next`, the type of `mode`. */
  #putDirent(buf: Buffer, off: number, ino: number, next: number, mode: number, name: Buffer): void {
    checkName(name);
    this.#putBased(buf, off, ino);
    putU64(buf, off + 8, next, 'dirent off');
    buf.writeUInt32LE(name.length, off + 16);
    buf.writeUInt32LE(direntType(mode), off + 20);
    name.copy(buf, off + Size.DIRENT);
  }

  statfs(): Kstatfs {
    const sb = this.image.bootstrap.superblock;
    return {
      blocks: 0,
      bfree: 0,
      bavail: 0,
      files: sb.inodesCount,
      ffree: 0,
      bsize: 4096,
      namelen: 255,
      frsize: 4096,
    };
  }

  getxattr(req: GetxattrRequest): Buffer {
    if (!this.#xattr) throw new FuseError('ERR_NOT_FOUND', 'xattrs are disabled', Errno.ENODATA);
    const x = this.image.bootstrap.xattrs(this.inoOf(req.nodeid)).find((p) => p.name.equals(req.name));
    if (x === undefined) throw new FuseError('ERR_NOT_FOUND', 'No such xattr', Errno.ENODATA);
    return x.value;
  }

  listxattr(req: ListxattrRequest): Buffer {
    if (!this.#xattr) return Buffer.alloc(0);
    const xs = this.image.bootstrap.xattrs(this.inoOf(req.nodeid));
    return Buffer.concat(xs.flatMap((p) => [p.name, Buffer.from([0])]));
  }

  access(req: AccessRequest): void {
    // default_permissions makes the kernel check modes itself; only existence and W_OK remain.
    this.#attr(this.inoOf(req.nodeid));
    if ((req.mask & 2) !== 0) throw new FuseError('ERR_UNSUPPORTED', 'Read-only file system', Errno.EROFS);
  }

  release(): void {}

  releasedir(): void {}

  destroy(): void {}
}
