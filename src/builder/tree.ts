import { FormatError } from '../errors/errors.js';
import { isDir, isReg, isSymlink, S_IFDIR } from '../format/flags.js';
import type { Bootstrap, ChunkInfo, XattrPair } from '../format/model.js';

/**
 * The tree a build works on, independent of where it came from (directory, tar, a parent
 * bootstrap) and of the format it is written in (v5, v6).
 *
 * An inode is shared by every directory entry that names it: regular-file hardlinks are one
 * `BuildInode` reached through several `BuildEntry`s. v5 writes one record per entry (all with
 * the first occurrence's ino), v6 one inode that every dirent points at.
 */
export interface BuildInode {
  /** Full st_mode. */
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  mtimeNsec: number;
  /** st_rdev (Linux encoding) for char/block devices, else 0. */
  rdev: number;
  /** Regular files: data size; symlinks: target length; others: 0 (writers derive dir sizes). */
  size: number;
  /** Extended attributes, sorted by name bytes (writers keep this order). */
  xattrs: XattrPair[];
  /** Symlink target. */
  target?: Buffer;
  /** Directory entries, sorted by raw name bytes, "." and ".." excluded. */
  children?: BuildEntry[];
  /** Regular files: chunk records in file order (chunk k covers [k*chunkSize, ...)). */
  chunks?: ChunkInfo[];
  /**
   * Data of a regular file not chunked yet: read from this path at build time. Undefined once
   * chunked, or for files whose chunks come from a tar stream or a parent bootstrap.
   */
  sourcePath?: string;
  /** Which layer this inode comes from (0 = bottom); only informational for merges. */
  layer?: number;
}

export interface BuildEntry {
  name: Buffer;
  inode: BuildInode;
}

export interface BuildTree {
  root: BuildInode;
}

export function newDir(attrs: Partial<BuildInode> = {}): BuildInode {
  return {
    mode: S_IFDIR | 0o755,
    uid: 0,
    gid: 0,
    mtime: 0,
    mtimeNsec: 0,
    rdev: 0,
    size: 0,
    xattrs: [],
    children: [],
    ...attrs,
  };
}

export function compareNames(a: Buffer, b: Buffer): number {
  return Buffer.compare(a, b);
}

/** Sort a directory's entries by raw name bytes, refusing duplicate names. */
export function sortEntries(entries: BuildEntry[]): BuildEntry[] {
  entries.sort((x, y) => compareNames(x.name, y.name));
  for (let i = 1; i < entries.length; i++) {
    if (entries[i - 1]!.name.equals(entries[i]!.name)) {
      throw new FormatError(`Duplicate directory entry "${entries[i]!.name.toString()}"`);
    }
  }
  return entries;
}

/** Index of `name` in a sorted entry list, or -(insertion point) - 1. */
export function findEntry(entries: readonly BuildEntry[], name: Buffer): number {
  let lo = 0;
  let hi = entries.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const c = compareNames(entries[mid]!.name, name);
    if (c === 0) return mid;
    if (c < 0) lo = mid + 1;
    else hi = mid - 1;
  }
  return -lo - 1;
}

/** Number of links of an inode as the formats record it. */
export function nlinkOf(inode: BuildInode, occurrences: number): number {
  if (isDir(inode.mode)) return 2 + (inode.children ?? []).filter((e) => isDir(e.inode.mode)).length;
  if (isReg(inode.mode)) return Math.max(1, occurrences);
  return 1;
}

/** Count how many entries name each inode (for hardlink nlink). */
export function countOccurrences(tree: BuildTree): Map<BuildInode, number> {
  const counts = new Map<BuildInode, number>();
  const stack: BuildInode[] = [tree.root];
  while (stack.length > 0) {
    const d = stack.pop()!;
    for (const e of d.children ?? []) {
      counts.set(e.inode, (counts.get(e.inode) ?? 0) + 1);
      if (isDir(e.inode.mode)) stack.push(e.inode);
    }
  }
  return counts;
}

/**
 * Rebuild the tree of a bootstrap (for layering on a parent, merging, or re-emitting). Chunk
 * records keep their blob indexes into `bootstrap.blobs`. Regular files with nlink > 1 that
 * share an inode number become one shared BuildInode.
 */
export function treeFromBootstrap(b: Bootstrap, layer = 0): BuildTree {
  const byIno = new Map<number, BuildInode>();
  const load = (ino: number): BuildInode => {
    const a = b.getAttr(ino);
    const inode: BuildInode = {
      mode: a.mode,
      uid: a.uid,
      gid: a.gid,
      mtime: a.mtime,
      mtimeNsec: a.mtimeNsec,
      rdev: a.rdev,
      size: isDir(a.mode) ? 0 : a.size,
      xattrs: b.xattrs(ino).sort((x, y) => compareNames(x.name, y.name)),
      layer,
    };
    if (isSymlink(a.mode)) inode.target = b.readlink(ino);
    if (isReg(a.mode)) inode.chunks = b.chunks(ino);
    return inode;
  };
  const root = load(b.rootIno);
  if (!isDir(root.mode)) throw new FormatError(`Root inode ${b.rootIno} is not a directory`);
  root.children = [];
  const seenDirs = new Set<number>([b.rootIno]);
  const stack: [number, BuildInode][] = [[b.rootIno, root]];
  while (stack.length > 0) {
    const [ino, dir] = stack.pop()!;
    const n = b.childCount(ino);
    const entries: BuildEntry[] = [];
    for (let pos = 0; pos < n;) {
      const batch = b.readdir(ino, pos, 1024);
      if (batch.length === 0)
        throw new FormatError(`Directory inode ${ino} returned no entries at ${pos} of ${n}`);
      pos += batch.length;
      for (const e of batch) {
        let child = byIno.get(e.ino);
        if (child === undefined) {
          child = load(e.ino);
          if (isReg(child.mode) && b.getAttr(e.ino).nlink > 1) byIno.set(e.ino, child);
          if (isDir(child.mode)) {
            if (seenDirs.has(e.ino)) throw new FormatError(`Directory inode ${e.ino} is reachable twice`);
            seenDirs.add(e.ino);
            child.children = [];
            stack.push([e.ino, child]);
          }
        }
        entries.push({ name: Buffer.from(e.name), inode: child });
      }
    }
    dir.children = entries;
  }
  return { root };
}
