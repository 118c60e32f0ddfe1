import { FormatError, NydusError } from '../errors/errors.js';
import { isDir, isReg, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFREG } from '../format/flags.js';
import { TarType } from '../tar/header.js';
import type { TarReadEntry, TarReader } from '../tar/reader.js';
import { filterXattrs, makedev } from './source-dir.js';
import { newDir, sortEntries, type BuildEntry, type BuildInode, type BuildTree } from './tree.js';
import { parseWhiteoutSpec, type WhiteoutSpec } from './whiteout.js';

/**
 * Tar source: a tar stream into a BuildTree, the way `tar -x` would lay it out.
 *
 * - Entries are taken in stream order; a later entry replaces an earlier one of the same path,
 *   except that a directory over a directory only updates the attributes (children stay).
 * - Paths: leading "/" and "./" are dropped, "//" and "." components collapse, ".." and NUL are
 *   refused (the entry would escape the root). Hardlink targets are normalized the same way and
 *   must name a regular file that an earlier entry created. Symlink targets are kept verbatim.
 * - Missing parents are synthesized (0755 directory, owner 0, mtime 0); the root is synthesized
 *   the same way unless a "./" (or "/", ".") directory entry sets it (rafs-format.md 2.13, 7).
 * - Whiteout markers are ordinary entries here (rafs-format.md 2.11): `applyLayer` interprets
 *   them, so `whiteoutSpec` only records the caller's intent and is validated.
 * - Regular-file data goes to `onFileData` while the stream is read; nothing buffers a whole
 *   file. An inode that a later entry replaces has already been handed over: its data is simply
 *   unreferenced by the tree.
 */
export interface TarSourceOptions {
  whiteoutSpec: WhiteoutSpec;
  /** Consume the data of one regular file (exactly `inode.size` bytes) before resolving. */
  onFileData: (inode: BuildInode, data: AsyncIterable<Buffer>) => Promise<void>;
  /**
   * When set, takes the place of `onFileData` for a file whose data the reader has buffered
   * already: `data` is all of it, a view of the input (copy what you keep) that stays unchanged
   * until the returned promise settles.
   */
  onFileBytes?: (inode: BuildInode, data: Buffer) => Promise<void> | undefined;
  /**
   * When set and the tar is a file (`TarReader.dataOffset`), takes the place of `onFileData`
   * for a file of which at least `FILE_AT_MIN` bytes are not read yet: its data is at `offset`
   * of the tar file, for the caller to read from there; the reader passes over it.
   */
  onFileAt?: (inode: BuildInode, offset: number) => Promise<void> | undefined;
  /**
   * When set and the reader reads straight from its input (`TarReader.direct`: a pipe), takes
   * the place of `onFileData` for a file whose data is not all buffered: `read` puts up to `n`
   * bytes of it into `buf` at `at` (0 once all `inode.size` bytes are read).
   */
  onFileInto?: (
    inode: BuildInode,
    read: (buf: Buffer, at: number, n: number) => Promise<number>,
  ) => Promise<void>;
  /** Recorded in every inode's `layer`. */
  layer?: number;
  signal?: AbortSignal;
}

export async function treeFromTar(reader: TarReader, opts: TarSourceOptions): Promise<BuildTree> {
  parseWhiteoutSpec(opts.whiteoutSpec);
  const b = new TarTreeBuilder(opts.layer);
  const into = opts.onFileInto !== undefined && reader.direct ? opts.onFileInto : undefined;
  const read = (buf: Buffer, at: number, n: number): Promise<number> => reader.dataInto(buf, at, n);
  for (let e = await reader.next(); e !== undefined; e = await reader.next()) {
    opts.signal?.throwIfAborted();
    const inode = b.add(e);
    if (inode === undefined || !isReg(inode.mode)) continue;
    const now = opts.onFileBytes === undefined ? undefined : reader.takeData();
    const at = now !== undefined || opts.onFileAt === undefined ? undefined : reader.dataOffset(FILE_AT_MIN);
    if (at !== undefined) {
      const wait = opts.onFileAt!(inode, at);
      if (wait !== undefined) await wait;
    } else if (now === undefined) {
      if (into === undefined) await opts.onFileData(inode, reader.data());
      else {
        await into(inode, read);
        if (reader.pending !== 0)
          throw new FormatError(`Tar entry data of ${inode.size} bytes was not all consumed`, reader.offset);
      }
    } else {
      const wait = opts.onFileBytes!(inode, now);
      if (wait !== undefined) await wait;
    }
  }
  return b.finish();
}

/**
 * Least unread data of a file for `onFileAt`: smaller files are read with the archive (one
 * read of the tar serves many of them), larger ones are read by whoever takes them.
 */
export const FILE_AT_MIN = 64 * 1024;

/** Path components of a tar path, or a FormatError when it leaves the root. */
export function normalizeTarPath(raw: Buffer, what = 'entry'): Buffer[] {
  if (raw.includes(0)) throw new FormatError(`Tar ${what} "${printable(raw)}" contains a NUL byte`);
  const parts: Buffer[] = [];
  let start = 0;
  for (let i = 0; i <= raw.length; i++) {
    if (i < raw.length && raw[i] !== SLASH) continue;
    const c = raw.subarray(start, i);
    start = i + 1;
    if (c.length === 0 || (c.length === 1 && c[0] === DOT)) continue;
    if (c.length === 2 && c[0] === DOT && c[1] === DOT)
      throw new FormatError(`Tar ${what} "${printable(raw)}" has a ".." component and escapes the root`);
    parts.push(c);
  }
  return parts;
}

const SLASH = 0x2f;
/** OCI whiteout names start with this. */
const WHITEOUT_PREFIX = Buffer.from('.wh.');
const DOT = 0x2e;

function printable(p: Buffer): string {
  return p.toString('utf8').replace(/\0/g, '\\0');
}

const TYPE_BITS = new Map<number, number>([
  [TarType.FILE, S_IFREG],
  [TarType.DIR, S_IFDIR],
  [TarType.SYMLINK, S_IFLNK],
  [TarType.CHAR, S_IFCHR],
  [TarType.BLOCK, S_IFBLK],
  [TarType.FIFO, S_IFIFO],
]);

/** Builds the tree with a name index per directory; sorted child lists are made at the end. */
class TarTreeBuilder {
  readonly #root: BuildInode;
  readonly #layer: number | undefined;
  /** Children of every directory by name (latin1: one code unit per byte, so names stay distinct). */
  readonly #index = new Map<BuildInode, Map<string, BuildEntry>>();

  constructor(layer: number | undefined) {
    this.#layer = layer;
    this.#root = this.#dir({});
  }

  /** Apply one entry; returns the inode it created (undefined for a directory update). */
  add(e: TarReadEntry): BuildInode | undefined {
    const parts = normalizeTarPath(e.path);
    if (e.type === TarType.HARDLINK) return this.#hardlink(e, parts);
    const bits = TYPE_BITS.get(e.type);
    if (bits === undefined)
      throw new NydusError(
        'ERR_UNSUPPORTED',
        `Tar entry "${printable(e.path)}" has type "${String.fromCharCode(e.type)}", which is not supported`,
      );
    const attrs = {
      mode: bits | (e.mode & 0o7777),
      uid: e.uid,
      gid: e.gid,
      mtime: e.mtime,
      mtimeNsec: e.mtimeNsec,
      xattrs:
        e.xattrs.length === 0
          ? []
          : filterXattrs(e.xattrs.map((x) => ({ name: Buffer.from(x.name), value: Buffer.from(x.value) }))),
    };
    if (parts.length === 0) {
      if (bits !== S_IFDIR)
        throw new FormatError(
          `Tar entry "${printable(e.path)}" names the root but is not a directory`,
          e.offset,
        );
      Object.assign(this.#root, attrs);
      return undefined;
    }
    const name = parts[parts.length - 1]!;
    const whiteout = name.length > 4 && name.subarray(0, 4).equals(WHITEOUT_PREFIX);
    const parent = this.#parentOf(parts, e, whiteout);
    // A whiteout below a path this layer made a non-directory hides nothing more than that
    // replacement already does (tools such as umoci write both): it is dropped.
    if (parent === undefined) return undefined;
    const kids = this.#children(parent);
    const k = key(name);
    const existing = kids.get(k);
    if (bits === S_IFDIR && existing !== undefined && isDir(existing.inode.mode)) {
      Object.assign(existing.inode, attrs);
      return undefined;
    }
    let inode: BuildInode;
    if (bits === S_IFDIR) {
      inode = this.#dir(attrs);
    } else {
      inode = { ...attrs, rdev: 0, size: 0 };
      if (this.#layer !== undefined) inode.layer = this.#layer;
      if (bits === S_IFREG) inode.size = e.size;
      else if (bits === S_IFLNK) {
        if (e.linkname.length === 0)
          throw new FormatError(`Tar symlink "${printable(e.path)}" has an empty target`, e.offset);
        inode.target = Buffer.from(e.linkname);
        inode.size = inode.target.length;
      } else if (bits === S_IFCHR || bits === S_IFBLK) inode.rdev = makedev(e.devmajor, e.devminor);
    }
    if (existing !== undefined && isDir(existing.inode.mode)) this.#forget(existing.inode);
    kids.set(k, { name, inode });
    return inode;
  }

  #hardlink(e: TarReadEntry, parts: Buffer[]): BuildInode | undefined {
    const targetParts = normalizeTarPath(e.linkname, `hardlink target of "${printable(e.path)}"`);
    const target = this.#lookup(targetParts);
    if (target === undefined || !isReg(target.mode))
      throw new FormatError(
        `Tar hardlink "${printable(e.path)}" points to "${printable(e.linkname)}", which is not an earlier regular file`,
        e.offset,
      );
    if (parts.length === 0)
      throw new FormatError(`Tar hardlink "${printable(e.path)}" names the root`, e.offset);
    // Not lenient: it throws rather than answer undefined.
    const parent = this.#parentOf(parts, e)!;
    this.#put(parent, parts[parts.length - 1]!, target);
    // The data came with the target's entry; a hardlink carries none.
    return undefined;
  }

  #dir(attrs: Partial<BuildInode>): BuildInode {
    const d = newDir(attrs);
    if (this.#layer !== undefined) d.layer = this.#layer;
    this.#index.set(d, new Map());
    return d;
  }

  #children(dir: BuildInode): Map<string, BuildEntry> {
    return this.#index.get(dir)!;
  }

  #put(parent: BuildInode, name: Buffer, inode: BuildInode): void {
    const kids = this.#children(parent);
    const old = kids.get(key(name));
    if (old !== undefined && isDir(old.inode.mode)) this.#forget(old.inode);
    kids.set(key(name), { name, inode });
  }

  /** Drop the name indexes of a replaced directory subtree. */
  #forget(dir: BuildInode): void {
    const stack = [dir];
    while (stack.length > 0) {
      const d = stack.pop()!;
      const kids = this.#index.get(d);
      if (kids === undefined) continue;
      this.#index.delete(d);
      for (const c of kids.values()) if (isDir(c.inode.mode)) stack.push(c.inode);
    }
  }

  /**
   * The directory that holds `parts`, synthesizing missing ones. A path through a non-directory
   * is an error, or undefined when `lenient`.
   */
  #parentOf(parts: Buffer[], e: TarReadEntry, lenient = false): BuildInode | undefined {
    let dir = this.#root;
    for (let i = 0; i < parts.length - 1; i++) {
      const kids = this.#children(dir);
      const c = kids.get(key(parts[i]!));
      if (c === undefined) {
        const d = this.#dir({});
        kids.set(key(parts[i]!), { name: parts[i]!, inode: d });
        dir = d;
      } else if (isDir(c.inode.mode)) {
        dir = c.inode;
      } else {
        if (lenient) return undefined;
        throw new FormatError(
          `Tar entry "${printable(e.path)}" needs "${printable(joinParts(parts.slice(0, i + 1)))}" to be a directory, but an earlier entry made it something else`,
          e.offset,
        );
      }
    }
    return dir;
  }

  #lookup(parts: Buffer[]): BuildInode | undefined {
    let node = this.#root;
    for (const p of parts) {
      if (!isDir(node.mode)) return undefined;
      const c = this.#children(node).get(key(p));
      if (c === undefined) return undefined;
      node = c.inode;
    }
    return node;
  }

  finish(): BuildTree {
    for (const [dir, kids] of this.#index) dir.children = sortEntries([...kids.values()]);
    this.#index.clear();
    return { root: this.#root };
  }
}

function joinParts(parts: readonly Buffer[]): Buffer {
  return Buffer.concat(parts.flatMap((p, i) => (i === 0 ? [p] : [Buffer.from('/'), p])));
}

function key(name: Buffer): string {
  return name.toString('latin1');
}
