// The module, not the global `performance`: Node.js builds the global on first use, which made
// the first FUSE request of a fresh daemon take ~5 ms longer (loading its internal modules).
import { performance } from 'node:perf_hooks';
import { Errno, InitFlag } from '../fuse/abi.js';
import { direntType } from '../fuse/attr.js';
import { FuseError } from '../fuse/errors.js';
import type { InitOptions } from '../fuse/init.js';
import type {
  AccessRequest,
  GetattrRequest,
  GetxattrRequest,
  ListxattrRequest,
  LookupRequest,
  OpenRequest,
  OpendirRequest,
  ReaddirplusRequest,
  ReaddirRequest,
  ReadlinkRequest,
  ReadRequest,
  ReleaseRequest,
  StatfsRequest,
} from '../fuse/messages.js';
import {
  packDirents,
  packDirentsPlus,
  uncachedEntry,
  type AttrOut,
  type DirentPlus,
  type EntryOut,
  type FuseAttr,
  type Kstatfs,
  type OpenOut,
} from '../fuse/replies.js';
import type { FuseHandler, LentBytes } from '../fuse/session.js';
import { NydusError } from '../errors/errors.js';
import type { Fop, FsMetrics } from './metrics.js';
import { rafsInit, type RafsFs } from './rafs-fs.js';

/**
 * The daemon's FUSE file system: a pseudo tree of directories with RAFS instances mounted on
 * it (upstream's pseudo mounts: `POST /api/v1/mount?mountpoint=/a/b`). Node ids carry the
 * instance in their top 8 bits (slot << 56; the pseudo tree is slot 0), so each request goes
 * straight to its instance. An instance mounted at "/" takes the whole tree (the usual
 * `nydusd --bootstrap` case) and keeps plain node ids, root 1.
 *
 * Pseudo entries, and the roots of instances looked up through them, are never cached by the
 * kernel (timeouts 0): after an umount or remount the next path walk sees the change. Inside an
 * instance the RAFS timeouts apply.
 */

export interface VfsInstance {
  readonly fs: RafsFs;
  readonly metrics: FsMetrics;
  /** Called with errors of reads that were not plain "not found/invalid" answers (events). */
  readonly onReadError?: (e: unknown) => void;
}

interface PseudoNode {
  readonly node: bigint;
  readonly name: string;
  readonly parent: PseudoNode | undefined;
  readonly children: Map<string, PseudoNode>;
  /** The instance mounted here, if any (its root replaces this directory). */
  mount: { slot: number; inst: VfsInstance } | undefined;
}

const MAX_SLOT = 255;
const PSEUDO_TIME = Math.floor(Date.now() / 1000);

function pseudoAttr(node: bigint): FuseAttr {
  return {
    ino: node,
    size: 4096,
    blocks: 8,
    atime: PSEUDO_TIME,
    mtime: PSEUDO_TIME,
    ctime: PSEUDO_TIME,
    atimeNsec: 0,
    mtimeNsec: 0,
    ctimeNsec: 0,
    mode: 0o040755,
    nlink: 2,
    uid: 0,
    gid: 0,
    rdev: 0,
    blksize: 4096,
    flags: 0,
  };
}

function stale(what: string): FuseError {
  return new FuseError('ERR_NOT_FOUND', what, Errno.ESTALE);
}

/** Components of an absolute pseudo path ("/" gives none); ".", ".." and empty parts refused. */
export function pseudoPath(path: string): string[] {
  if (!path.startsWith('/'))
    throw new FuseError('ERR_INVALID_ARG', `Mountpoint "${path}" is not absolute`, Errno.EINVAL);
  const parts = path.split('/').filter((p) => p.length > 0);
  for (const p of parts) {
    if (p === '.' || p === '..' || p.includes('\0'))
      throw new FuseError('ERR_INVALID_ARG', `Mountpoint "${path}" must not contain "${p}"`, Errno.EINVAL);
  }
  return parts;
}

/** Node ids of the instance in `slot` start here (slot << 56); slot 0 is the instance at "/". */
export function slotBase(slot: number): bigint {
  return BigInt(slot) << 56n;
}

/**
 * The VFS as a successor daemon needs it to keep valid every node id the kernel holds (failover,
 * hot upgrade): the pseudo directories with their node ids, the slot of each mount, and where
 * node id and slot allocation stand. Node ids are decimal strings (the state travels as JSON).
 */
export interface VfsState {
  readonly pseudo: boolean;
  readonly nextNode: string;
  readonly lastSlot: number;
  /** Pseudo directories but the root, parents before children. */
  readonly dirs: readonly { readonly node: string; readonly path: string }[];
  /** Mounted instances and their slots (0 for the instance at "/"). */
  readonly mounts: readonly { readonly path: string; readonly slot: number }[];
}

function badState(why: string): NydusError {
  return new NydusError('ERR_FORMAT', `Invalid VFS state: ${why}`);
}

export class Vfs implements FuseHandler {
  readonly #root: PseudoNode = {
    node: 1n,
    name: '',
    parent: undefined,
    children: new Map(),
    mount: undefined,
  };
  readonly #nodes = new Map<bigint, PseudoNode>([[1n, this.#root]]);
  readonly #slots: (VfsInstance | undefined)[] = [];
  #nextNode = 2n;
  #lastSlot = 0;
  /** The instance mounted at "/", which then serves every node. */
  #rootInst: VfsInstance | undefined;
  #granted = 0n;
  readonly #pseudo: boolean;

  /**
   * `pseudo`: the tree will hold pseudo mounts, so directory handles are real (the kernel
   * then never caches a pseudo directory's listing); otherwise opendir costs no message.
   */
  constructor(opts: { pseudo: boolean }) {
    this.#pseudo = opts.pseudo;
  }

  /** The node base the next mount will get (call `mount` right after, with its instance). */
  nextBase(path: string): bigint {
    if (pseudoPath(path).length === 0) return 0n;
    return BigInt(this.#freeSlot()) << 56n;
  }

  #freeSlot(): number {
    for (let k = 1; k <= MAX_SLOT; k++) {
      // Rotate through the slots so a slot freed by an umount is not reused at once.
      const s = ((this.#lastSlot + k - 1) % MAX_SLOT) + 1;
      if (this.#slots[s] === undefined) return s;
    }
    throw new FuseError('ERR_INVALID_ARG', `All ${MAX_SLOT} mount slots are in use`, Errno.EBUSY);
  }

  /** Why `path` cannot take a mount now, or undefined. */
  checkMountable(path: string): string | undefined {
    const parts = pseudoPath(path);
    if (parts.length === 0) {
      if (this.#rootInst !== undefined) return `"/" is already mounted`;
      if (this.#root.children.size > 0) return `"/" cannot be mounted while other mounts exist`;
      return undefined;
    }
    if (this.#rootInst !== undefined)
      return `an image is mounted at "/", so nothing can be mounted at "${path}"`;
    let n = this.#root;
    for (const p of parts) {
      if (n.mount !== undefined) return `"${path}" is inside the image mounted at "/${this.#pathOf(n)}"`;
      const c = n.children.get(p);
      if (c === undefined) return undefined;
      n = c;
    }
    if (n.mount !== undefined) return `"${path}" is already mounted`;
    if (n.children.size > 0) return `"${path}" has mounts below it`;
    return undefined;
  }

  #pathOf(n: PseudoNode): string {
    const parts: string[] = [];
    for (let c: PseudoNode | undefined = n; c !== undefined && c.parent !== undefined; c = c.parent)
      parts.unshift(c.name);
    return parts.join('/');
  }

  /** Mount `inst` (made with `nextBase(path)`) at `path`. */
  mount(path: string, inst: VfsInstance): void {
    const why = this.checkMountable(path);
    if (why !== undefined) throw new FuseError('ERR_INVALID_ARG', `Cannot mount: ${why}`, Errno.EBUSY);
    if (this.#granted !== 0n) inst.fs.initialized(this.#granted);
    const parts = pseudoPath(path);
    if (parts.length === 0) {
      this.#rootInst = inst;
      return;
    }
    const slot = this.#freeSlot();
    let n = this.#root;
    for (const p of parts) {
      let c = n.children.get(p);
      if (c === undefined) {
        c = { node: this.#nextNode++, name: p, parent: n, children: new Map(), mount: undefined };
        n.children.set(p, c);
        this.#nodes.set(c.node, c);
      }
      n = c;
    }
    n.mount = { slot, inst };
    this.#slots[slot] = inst;
    this.#lastSlot = slot;
  }

  /** Replace the instance at `path` by `inst` (made with `nextBase(path)` before the old one left). */
  replace(path: string, inst: VfsInstance): VfsInstance {
    const old = this.umount(path);
    this.mount(path, inst);
    return old;
  }

  /** Take the instance at `path` off the tree and return it. */
  umount(path: string): VfsInstance {
    const parts = pseudoPath(path);
    if (parts.length === 0) {
      const inst = this.#rootInst;
      if (inst === undefined) throw new FuseError('ERR_NOT_FOUND', `Nothing is mounted at "/"`, Errno.ENOENT);
      this.#rootInst = undefined;
      return inst;
    }
    let n: PseudoNode | undefined = this.#root;
    for (const p of parts) n = n?.children.get(p);
    if (n?.mount === undefined)
      throw new FuseError('ERR_NOT_FOUND', `Nothing is mounted at "${path}"`, Errno.ENOENT);
    const { slot, inst } = n.mount;
    n.mount = undefined;
    this.#slots[slot] = undefined;
    // Drop pseudo directories left empty.
    while (n !== undefined && n.parent !== undefined && n.mount === undefined && n.children.size === 0) {
      n.parent.children.delete(n.name);
      this.#nodes.delete(n.node);
      n = n.parent;
    }
    return inst;
  }

  /** What `Vfs.restore` needs to rebuild this tree with the same node ids and slots. */
  state(): VfsState {
    const dirs: { node: string; path: string }[] = [];
    const mounts: { path: string; slot: number }[] = [];
    if (this.#rootInst !== undefined) mounts.push({ path: '/', slot: 0 });
    const walk = (n: PseudoNode): void => {
      for (const c of n.children.values()) {
        const path = `/${this.#pathOf(c)}`;
        dirs.push({ node: c.node.toString(), path });
        if (c.mount !== undefined) mounts.push({ path, slot: c.mount.slot });
        walk(c);
      }
    };
    walk(this.#root);
    return {
      pseudo: this.#pseudo,
      nextNode: this.#nextNode.toString(),
      lastSlot: this.#lastSlot,
      dirs,
      mounts,
    };
  }

  /**
   * A VFS rebuilt from `state` with `instances` (by mount path, each made with the `slotBase`
   * of its slot) in their slots. The INIT flags are not part of it: call `initialized` after.
   */
  static restore(state: VfsState, instances: ReadonlyMap<string, VfsInstance>): Vfs {
    const v = new Vfs({ pseudo: state.pseudo });
    const id = (s: string, what: string): bigint => {
      if (!/^\d{1,20}$/.test(s)) throw badState(`${what} "${s}" is not a number`);
      return BigInt(s);
    };
    v.#nextNode = id(state.nextNode, 'next node id');
    if (v.#nextNode < 2n || v.#nextNode >= slotBase(1))
      throw badState(`next node id ${v.#nextNode} is out of range`);
    if (!Number.isInteger(state.lastSlot) || state.lastSlot < 0 || state.lastSlot > MAX_SLOT)
      throw badState(`last slot ${state.lastSlot} is out of range`);
    v.#lastSlot = state.lastSlot;
    const byPath = new Map<string, PseudoNode>([['/', v.#root]]);
    for (const d of state.dirs) {
      const node = id(d.node, 'node id');
      if (node < 2n || node >= v.#nextNode || v.#nodes.has(node))
        throw badState(`node id ${node} of "${d.path}" is out of range or used twice`);
      const parts = pseudoPath(d.path);
      const name = parts[parts.length - 1];
      const parent = byPath.get(`/${parts.slice(0, -1).join('/')}`);
      if (name === undefined || parent === undefined || byPath.has(d.path))
        throw badState(`"${d.path}" comes before its parent or twice`);
      const n: PseudoNode = { node, name, parent, children: new Map(), mount: undefined };
      parent.children.set(name, n);
      v.#nodes.set(node, n);
      byPath.set(d.path, n);
    }
    const seen = new Set<string>();
    for (const m of state.mounts) {
      const inst = instances.get(m.path);
      if (inst === undefined) throw badState(`no instance for the mount at "${m.path}"`);
      seen.add(m.path);
      if (m.path === '/') {
        if (m.slot !== 0 || state.mounts.length !== 1)
          throw badState('an instance at "/" must be alone, in slot 0');
        v.#rootInst = inst;
        continue;
      }
      const n = byPath.get(m.path);
      if (n === undefined) throw badState(`the mount at "${m.path}" has no pseudo directory`);
      if (!Number.isInteger(m.slot) || m.slot < 1 || m.slot > MAX_SLOT || v.#slots[m.slot] !== undefined)
        throw badState(`slot ${m.slot} of "${m.path}" is out of range or used twice`);
      n.mount = { slot: m.slot, inst };
      v.#slots[m.slot] = inst;
    }
    for (const p of instances.keys())
      if (!seen.has(p)) throw badState(`the instance for "${p}" has no mount`);
    return v;
  }

  /** The instance serving `nodeid`, or the pseudo node. */
  #route(nodeid: bigint): { inst: VfsInstance } | { pseudo: PseudoNode } {
    if (this.#rootInst !== undefined) return { inst: this.#rootInst };
    const slot = Number(nodeid >> 56n);
    if (slot === 0) {
      const p = this.#nodes.get(nodeid);
      if (p === undefined) throw stale(`No pseudo node ${nodeid}`);
      return { pseudo: p };
    }
    const inst = this.#slots[slot];
    if (inst === undefined) throw stale(`Node ${nodeid} belongs to an image that is no longer mounted`);
    return { inst };
  }

  /** Run `fn` (synchronous) on the instance, counting it in the instance's metrics. */
  #timed<T>(inst: VfsInstance, op: Fop, nodeid: bigint, fn: (fs: RafsFs) => T): T {
    const t0 = performance.now();
    let v: T;
    try {
      v = fn(inst.fs);
    } catch (e) {
      inst.metrics.record(op, inst.fs.inoOf(nodeid), false, (performance.now() - t0) * 1000);
      throw e;
    }
    inst.metrics.record(op, inst.fs.inoOf(nodeid), true, (performance.now() - t0) * 1000);
    return v;
  }

  /** The entry of a pseudo child: its own directory, or the root of the image mounted there. */
  #pseudoEntry(n: PseudoNode): EntryOut {
    let nodeid = n.node;
    let attr = pseudoAttr(n.node);
    if (n.mount !== undefined) {
      const fs = n.mount.inst.fs;
      nodeid = fs.nodeOf(fs.image.bootstrap.rootIno);
      attr = fs.getattr({ nodeid } as GetattrRequest).attr;
    }
    return { nodeid, generation: 0n, entryValid: 0, entryValidNsec: 0, attrValid: 0, attrValidNsec: 0, attr };
  }

  init(): InitOptions {
    return rafsInit(!this.#pseudo);
  }

  initialized(flags: bigint): void {
    this.#granted = flags;
    if (this.#rootInst !== undefined) this.#rootInst.fs.initialized(flags);
    for (const inst of this.#slots) inst?.fs.initialized(flags);
  }

  lookup(req: LookupRequest): EntryOut {
    const r = this.#route(req.nodeid);
    if ('inst' in r) return this.#timed(r.inst, 'lookup', req.nodeid, (fs) => fs.lookup(req));
    const c = r.pseudo.children.get(req.name.toString());
    if (c === undefined || !req.name.equals(Buffer.from(c.name)))
      throw new FuseError('ERR_NOT_FOUND', `No "${req.name.toString()}" in the pseudo tree`, Errno.ENOENT);
    return this.#pseudoEntry(c);
  }

  getattr(req: GetattrRequest): AttrOut {
    const r = this.#route(req.nodeid);
    if ('inst' in r) return this.#timed(r.inst, 'getattr', req.nodeid, (fs) => fs.getattr(req));
    return { attrValid: 0, attrValidNsec: 0, attr: pseudoAttr(r.pseudo.node) };
  }

  readlink(req: ReadlinkRequest): Buffer {
    const r = this.#route(req.nodeid);
    if ('inst' in r) return this.#timed(r.inst, 'readlink', req.nodeid, (fs) => fs.readlink(req));
    throw new FuseError('ERR_INODE_TYPE', 'Not a symlink', Errno.EINVAL);
  }

  open(req: OpenRequest): OpenOut {
    const r = this.#route(req.nodeid);
    if ((this.#granted & InitFlag.NO_OPEN_SUPPORT) !== 0n)
      throw new FuseError('ERR_UNSUPPORTED', 'open needs no handle', Errno.ENOSYS);
    if ('inst' in r) return this.#timed(r.inst, 'open', req.nodeid, (fs) => fs.open(req));
    throw new FuseError('ERR_INODE_TYPE', 'Is a directory', Errno.EISDIR);
  }

  opendir(req: OpendirRequest): OpenOut {
    const r = this.#route(req.nodeid);
    if ('inst' in r) return this.#timed(r.inst, 'opendir', req.nodeid, (fs) => fs.opendir());
    if ((this.#granted & InitFlag.NO_OPENDIR_SUPPORT) !== 0n)
      throw new FuseError('ERR_UNSUPPORTED', 'opendir needs no handle', Errno.ENOSYS);
    // No CACHE_DIR: the listing changes with every mount and umount.
    return { fh: 0n, openFlags: 0, backingId: 0 };
  }

  /** The bytes, at once when the instance answers at once, else a promise of them. */
  read(req: ReadRequest): Buffer | LentBytes | Promise<Buffer | LentBytes> {
    const r = this.#route(req.nodeid);
    if (!('inst' in r)) throw new FuseError('ERR_INODE_TYPE', 'Is a directory', Errno.EISDIR);
    const inst = r.inst;
    const t0 = performance.now();
    let v: LentBytes | Promise<LentBytes>;
    try {
      v = inst.fs.read(req);
    } catch (e) {
      throw this.#readFailed(inst, req, t0, e);
    }
    if (!(v instanceof Promise)) return this.#readDone(inst, req, t0, v);
    return v.then(
      (got) => this.#readDone(inst, req, t0, got),
      (e: unknown) => {
        throw this.#readFailed(inst, req, t0, e);
      },
    );
  }

  #readDone(inst: VfsInstance, req: ReadRequest, t0: number, v: LentBytes): LentBytes {
    inst.metrics.record('read', inst.fs.inoOf(req.nodeid), true, (performance.now() - t0) * 1000, v.length);
    return v;
  }

  /** The error a failed read answers with, once counted. */
  #readFailed(inst: VfsInstance, req: ReadRequest, t0: number, e: unknown): FuseError {
    inst.metrics.record('read', inst.fs.inoOf(req.nodeid), false, (performance.now() - t0) * 1000);
    if (e instanceof FuseError) return e;
    // A backend or digest failure: EIO for this read only, recorded as an event.
    inst.onReadError?.(e);
    return new FuseError('ERR_IO', e instanceof Error ? e.message : String(e), Errno.EIO, { cause: e });
  }

  #pseudoChildren(p: PseudoNode): { name: Buffer; node: bigint }[] {
    return [
      { name: Buffer.from('.'), node: p.node },
      { name: Buffer.from('..'), node: p.parent?.node ?? p.node },
      ...[...p.children.values()].map((c) => ({ name: Buffer.from(c.name), node: c.node })),
    ];
  }

  readdir(req: ReaddirRequest): Buffer {
    const r = this.#route(req.nodeid);
    if ('inst' in r) return this.#timed(r.inst, 'readdir', req.nodeid, (fs) => fs.readdir(req));
    const list = this.#pseudoChildren(r.pseudo)
      .map((c, i) => ({ ino: c.node, off: i + 1, type: direntType(0o040000), name: c.name }))
      .slice(Math.max(0, req.offset));
    return packDirents(list, req.size).buf;
  }

  readdirplus(req: ReaddirplusRequest): Buffer {
    const r = this.#route(req.nodeid);
    if ('inst' in r) return this.#timed(r.inst, 'readdirplus', req.nodeid, (fs) => fs.readdirplus(req));
    // Node id 0: the kernel makes no dentry and looks each name up itself.
    const list: DirentPlus[] = this.#pseudoChildren(r.pseudo)
      .map((c, i) => ({
        entry: uncachedEntry(pseudoAttr(c.node)),
        dirent: { ino: c.node, off: i + 1, type: direntType(0o040000), name: c.name },
      }))
      .slice(Math.max(0, req.offset));
    return packDirentsPlus(list, req.size).buf;
  }

  statfs(req: StatfsRequest): Kstatfs {
    const r = this.#route(req.nodeid);
    if ('inst' in r) return this.#timed(r.inst, 'statfs', req.nodeid, (fs) => fs.statfs());
    return { blocks: 0, bfree: 0, bavail: 0, files: 0, ffree: 0, bsize: 4096, namelen: 255, frsize: 4096 };
  }

  getxattr(req: GetxattrRequest): Buffer {
    const r = this.#route(req.nodeid);
    if ('inst' in r) return this.#timed(r.inst, 'getxattr', req.nodeid, (fs) => fs.getxattr(req));
    throw new FuseError('ERR_NOT_FOUND', 'No such xattr', Errno.ENODATA);
  }

  listxattr(req: ListxattrRequest): Buffer {
    const r = this.#route(req.nodeid);
    if ('inst' in r) return this.#timed(r.inst, 'listxattr', req.nodeid, (fs) => fs.listxattr(req));
    return Buffer.alloc(0);
  }

  access(req: AccessRequest): void {
    const r = this.#route(req.nodeid);
    if ('inst' in r) return this.#timed(r.inst, 'access', req.nodeid, (fs) => fs.access(req));
    if ((req.mask & 2) !== 0) throw new FuseError('ERR_UNSUPPORTED', 'Read-only file system', Errno.EROFS);
  }

  release(req: ReleaseRequest): void {
    const r = this.#route(req.nodeid);
    if ('inst' in r) this.#timed(r.inst, 'release', req.nodeid, (fs) => fs.release());
  }

  releasedir(): void {}

  destroy(): void {}
}
