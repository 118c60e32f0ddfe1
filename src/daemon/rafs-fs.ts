import { FopenFlag, InitFlag, Errno, Opcode } from '../fuse/abi.js';
import { direntType, toFuseAttr } from '../fuse/attr.js';
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
  dataReply,
  entryReply,
  errorReply,
  packDirents,
  packDirentsPlus,
  type AttrOut,
  type Dirent,
  type DirentPlus,
  type EntryOut,
  type FuseAttr,
  type Kstatfs,
  type OpenOut,
} from '../fuse/replies.js';
import type { FuseHandler, LentBytes } from '../fuse/session.js';
import { isDir, isReg, isSymlink } from '../format/flags.js';
import type { InodeAttr } from '../format/model.js';
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
  readonly #xattr: boolean;
  readonly #ttl: number;
  readonly #root: number;
  readonly #base: bigint;
  #granted = 0n;
  /** Parent of each directory seen so far (for ".." in readdir). */
  readonly #parents = new Map<number, number>();

  constructor(image: RafsImage, opts: RafsFsOptions = {}) {
    this.image = image;
    this.#validate = opts.validate ?? false;
    this.#xattr = opts.enableXattr ?? false;
    this.#ttl = opts.timeoutSec ?? DAY;
    this.#root = image.bootstrap.rootIno;
    this.#base = opts.nodeBase ?? 0n;
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

  async read(req: ReadRequest): Promise<LentBytes> {
    const ino = this.inoOf(req.nodeid);
    if (!isReg(this.#attr(ino).mode))
      throw new FuseError('ERR_INODE_TYPE', 'Not a regular file', Errno.EINVAL);
    return this.image.readFileShared(ino, req.offset, req.size, { verify: this.#validate });
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

  readdirplus(req: ReaddirplusRequest): Buffer {
    const { dots, children } = this.#dirEntries(req, 160);
    const dotEntry = (ino: number): EntryOut => ({
      nodeid: 0n,
      generation: 0n,
      entryValid: 0,
      entryValidNsec: 0,
      attrValid: 0,
      attrValidNsec: 0,
      attr: { ...EMPTY_ATTR, ino: this.#reportedIno(ino), mode: 0o040000 },
    });
    const list: DirentPlus[] = [
      ...dots.map((d) => ({
        entry: dotEntry(d.ino),
        dirent: { ino: this.#reportedIno(d.ino), off: d.off, type: direntType(0o040000), name: d.name },
      })),
    ];
    // Attributes are read lazily: packing stops at the first entry that does not fit.
    const attrOf = (ino: number): InodeAttr => this.#attr(ino);
    const entryOf = (ino: number, attr: InodeAttr): EntryOut => this.#entry(ino, attr);
    const reported = (ino: number): bigint => this.#reportedIno(ino);
    function* all(): Generator<DirentPlus> {
      yield* list;
      for (const c of children) {
        const attr = attrOf(c.ino);
        yield {
          entry: entryOf(c.ino, attr),
          dirent: { ino: reported(attr.ino), off: c.off, type: direntType(attr.mode), name: c.name },
        };
      }
    }
    return packDirentsPlus(all(), req.size).buf;
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
