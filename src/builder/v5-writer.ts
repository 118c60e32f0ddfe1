import { errorText, NydusError } from '../errors/errors.js';
import {
  BLOB_FEATURES_INCOMPAT_UNKNOWN,
  BlobFeature,
  compressorFlag,
  digesterFlag,
  InodeFlag,
  isDir,
  isReg,
  isSymlink,
  isValidFileType,
  Limits,
  SuperFlag,
} from '../format/flags.js';
import { encodeV5BlobTable, encodeV5ExtBlobTable } from '../format/v5/blob-table.js';
import { encodeV5InodeRecord, type V5InodeFixed } from '../format/v5/inode.js';
import { v5InodeDigest } from '../format/v5/inode-digest.js';
import {
  encodeV5Superblock,
  RAFS_V5_MAGIC,
  RAFS_V5_SUPERBLOCK_SIZE,
  RAFS_V5_VERSION,
} from '../format/v5/superblock.js';
import { checkXattrPair, v5XattrPayloadSize } from '../format/v5/xattr.js';
import { align, isPowerOfTwo } from '../util/cursor.js';
import type { BootstrapSpec } from './bootstrap-spec.js';
import { countOccurrences, nlinkOf, type BuildEntry, type BuildInode } from './tree.js';

/**
 * The RAFS v5 bootstrap writer (rafs-format.md 2). A spec in, the bootstrap bytes out. With
 * `recordOrder: 'index'` a tree read back from a v2.1/v2.2-era image is re-emitted byte for byte
 * except `inodes_count` (2.15); the default `'dfs'` order is the one current builders use.
 *
 * Layout of the output (2.1), N indexes, P prefetch entries, B blobs:
 *
 * | offset                      | content                                           |
 * |-----------------------------|---------------------------------------------------|
 * | 0                           | superblock (8192)                                 |
 * | 8192                        | inode table: N u32 (record offset / 8), pad to 8  |
 * | 8192 + align8(4N)           | prefetch table: P u32 inode numbers, pad to 8     |
 * | + align8(4P)                | blob table (padded to 8)                          |
 * | + blob_table_size           | extended blob table (B x 64)                      |
 * | + 64B                       | inode records, back to back, root first           |
 *
 * Index assignment (2.9): the root is index 1; a directory's children take consecutive indexes
 * in name order, then the directories among them are processed in the same order, depth first.
 * `child_index` is the first free index when a directory is processed, so an empty directory
 * points at the index the next processed directory's children start at (fixture: `bin` = 25).
 *
 * Hardlinks (2.10): every entry has its own index and full record. Regular files reached through
 * several entries share the first (lowest) index as `ino` and record the occurrence count as
 * nlink. Any other shared inode is written as independent inodes, one per entry.
 *
 * The HARDLINK inode flag: directory builds never set it (the repeatable fixtures' three
 * occurrences of ino 5 have flags 0), tar builders set it on hardlinked regular files (1.3).
 * It is off by default, which reproduces the fixtures; `V5WriteExtras.hardlinkFlag` turns it on.
 *
 * Everything walks with explicit stacks or in index order, never by recursion: trees thousands of
 * levels deep are fine, and the cost is linear in the number of entries.
 */

/** Writer knobs not (yet) in `V5WriterOptions`. */
export interface V5WriteExtras {
  /**
   * Set InodeFlag.HARDLINK on every occurrence of a regular file named by more than one entry,
   * as tar builders do. Default false, as directory builds (and the upstream fixtures) do.
   */
  readonly hardlinkFlag?: boolean;
}

const ROOT_INDEX = 1;
const ROOT_NAME = Buffer.from('/');
/** Every section and record of a v5 bootstrap starts on an 8-byte boundary. */
const SECTION_ALIGN = 8;
/** Inode table slots and prefetch entries are u32. */
const TABLE_SLOT_SIZE = 4;
/** Inode table slots hold offset / 8 and must stay below 2^29 (2.3). */
const MAX_SLOT_VALUE = 2 ** 29;
/** Directory pseudo size (2.13): each child costs its name plus this, rounded up to this unit. */
const DIR_ENTRY_OVERHEAD = 8;
const DIR_SIZE_UNIT = 4096;
/** `blocks` counts 512-byte units. */
const BLOCK_UNIT = 512;
const SLASH = 0x2f;
const DOT = 0x2e;
const U32_MAX = 0xffff_ffff;

/** One entry of the output; index i is `entries[i - 1]`. */
interface Entry {
  readonly name: Buffer;
  readonly inode: BuildInode;
  /** Inode number of the parent directory (= its index: directories are never shared); 0 for the root. */
  readonly parent: number;
  /** The first occurrence's index for a shared regular file, else the entry's own index. */
  readonly ino: number;
  /** Directories: index of the first child. */
  childIndex: number;
}

interface Plan {
  readonly entries: Entry[];
  /** Index of the first entry naming each inode. */
  readonly firstIndex: Map<BuildInode, number>;
}

function invalid(message: string, cause?: unknown): NydusError {
  return new NydusError(
    'ERR_INVALID_ARG',
    `Cannot write RAFS v5 bootstrap: ${message}`,
    cause === undefined ? undefined : { cause },
  );
}

function shown(name: Buffer): string {
  return JSON.stringify(name.toString('latin1'));
}

/** Path of an entry for messages, built by following parent links (parent ino = index). */
function pathOf(entries: readonly Entry[], index: number, child?: Buffer): string {
  const parts: string[] = child === undefined ? [] : [child.toString('latin1')];
  for (let e = entries[index - 1]; e !== undefined && e.parent !== 0; e = entries[e.parent - 1]) {
    parts.push(e.name.toString('latin1'));
  }
  return JSON.stringify(`/${parts.reverse().join('/')}`);
}

function checkName(name: Buffer, where: () => string): void {
  if (name.length === 0 || name.length > Limits.MAX_NAME) {
    throw invalid(`${where()}: entry name of ${name.length} bytes is out of range 1..${Limits.MAX_NAME}`);
  }
  if (name.includes(SLASH) || name.includes(0) || (name.length <= 2 && name.every((b) => b === DOT))) {
    throw invalid(`${where()}: entry name ${shown(name)} is not a valid file name`);
  }
}

function checkChildren(children: readonly BuildEntry[], where: () => string): void {
  for (let k = 0; k < children.length; k++) {
    const name = children[k]!.name;
    checkName(name, where);
    const order = k === 0 ? -1 : Buffer.compare(children[k - 1]!.name, name);
    if (order === 0) throw invalid(`${where()}: entry ${shown(name)} appears twice`);
    if (order > 0) {
      throw invalid(
        `${where()}: entries are not sorted by name bytes: ${shown(children[k - 1]!.name)} before ${shown(name)}`,
      );
    }
  }
}

/** Assign indexes (2.9) with an explicit stack of directories still to process. */
function assignIndexes(root: BuildInode): Plan {
  const entries: Entry[] = [];
  const firstIndex = new Map<BuildInode, number>();
  const add = (name: Buffer, inode: BuildInode, parent: number): number => {
    const index = entries.length + 1;
    const first = firstIndex.get(inode);
    if (first === undefined) {
      firstIndex.set(inode, index);
    } else if (isDir(inode.mode)) {
      throw invalid(
        `directory ${pathOf(entries, parent, name)} is the same inode as ${pathOf(entries, first)}, a directory can have one entry only`,
      );
    }
    const ino = first !== undefined && isReg(inode.mode) ? first : index;
    entries.push({ name, inode, parent, ino, childIndex: 0 });
    return index;
  };
  if (!isDir(root.mode)) throw invalid(`root mode 0o${root.mode.toString(8)} is not a directory`);
  add(ROOT_NAME, root, 0);
  const pending: number[] = [ROOT_INDEX];
  for (let d = pending.pop(); d !== undefined; d = pending.pop()) {
    const dir = entries[d - 1]!;
    const children = dir.inode.children ?? [];
    checkChildren(children, () => `directory ${pathOf(entries, d)}`);
    dir.childIndex = entries.length + 1;
    const subdirs: number[] = [];
    for (const c of children) {
      const index = add(c.name, c.inode, dir.ino);
      if (isDir(c.inode.mode)) subdirs.push(index);
    }
    for (let k = subdirs.length - 1; k >= 0; k--) pending.push(subdirs[k]!);
  }
  return { entries, firstIndex };
}

function checkUint(value: number, max: number, what: string, where: () => string): void {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw invalid(`${where()}: ${what} ${value} is not an integer in 0..${max}`);
  }
}

/** Everything about one inode the format cannot hold, checked once per inode. */
function checkInode(spec: BootstrapSpec, inode: BuildInode, where: () => string): void {
  checkUint(inode.mode, U32_MAX, 'mode', where);
  if (!isValidFileType(inode.mode))
    throw invalid(`${where()}: mode 0o${inode.mode.toString(8)} is not a file type`);
  checkUint(inode.uid, U32_MAX, 'uid', where);
  checkUint(inode.gid, U32_MAX, 'gid', where);
  checkUint(inode.mtime, Number.MAX_SAFE_INTEGER, 'mtime', where);
  checkUint(inode.mtimeNsec, U32_MAX, 'mtime_nsec', where);
  checkUint(inode.size, Number.MAX_SAFE_INTEGER, 'size', where);
  if (!Number.isInteger(inode.rdev)) throw invalid(`${where()}: rdev ${inode.rdev} is not an integer`);
  const seen = new Set<string>();
  for (const x of inode.xattrs) {
    try {
      checkXattrPair(x.name, x.value, where());
    } catch (e) {
      throw invalid(errorText(e), e);
    }
    if (x.name.includes(0)) throw invalid(`${where()}: xattr name ${shown(x.name)} contains a NUL byte`);
    const key = x.name.toString('latin1');
    if (seen.has(key)) throw invalid(`${where()}: xattr ${shown(x.name)} appears twice`);
    seen.add(key);
  }
  if (isSymlink(inode.mode)) {
    const n = inode.target?.length ?? 0;
    if (n === 0 || n > Limits.MAX_SYMLINK) {
      throw invalid(`${where()}: symlink target of ${n} bytes is out of range 1..${Limits.MAX_SYMLINK}`);
    }
  }
  if (isReg(inode.mode)) {
    const chunks = inode.chunks ?? [];
    const expected = Math.ceil(inode.size / spec.chunkSize);
    if (chunks.length !== expected) {
      throw invalid(
        `${where()}: ${chunks.length} chunk records for a ${inode.size}-byte file, ${expected} expected with chunk size ${spec.chunkSize}` +
          (inode.chunks === undefined && inode.sourcePath !== undefined ? ' (file not chunked yet)' : ''),
      );
    }
    chunks.forEach((c, k) => {
      if (c.blobIndex >= spec.blobs.length) {
        throw invalid(
          `${where()}: chunk ${k} refers to blob ${c.blobIndex}, but there are ${spec.blobs.length} blobs`,
        );
      }
    });
  }
}

function checkSpec(spec: BootstrapSpec): void {
  const cs = spec.chunkSize;
  if (!isPowerOfTwo(cs) || cs < Limits.MIN_CHUNK_SIZE || cs > Limits.MAX_CHUNK_SIZE) {
    throw invalid(`chunk size 0x${cs.toString(16)} is not a power of two in 0x1000..0x1000000`);
  }
  spec.blobs.forEach((b, i) => {
    if (
      (b.features & BLOB_FEATURES_INCOMPAT_UNKNOWN) !== 0 ||
      (b.features & BlobFeature.V5_NO_EXT_BLOB_TABLE) !== 0
    ) {
      throw invalid(`blob ${i} has features 0x${(b.features >>> 0).toString(16)} that cannot be stored`);
    }
  });
}

/** Directory pseudo size (2.13): names plus 8 bytes each, rounded up to 4096, at least 4096. */
function dirPseudoSize(children: readonly BuildEntry[]): number {
  const s = children.reduce((n, c) => n + c.name.length + DIR_ENTRY_OVERHEAD, 0);
  return s === 0 ? DIR_SIZE_UNIT : align(s, DIR_SIZE_UNIT);
}

/**
 * Inode digests (6.2), one per inode. Children always have larger indexes than their directory,
 * so walking the indexes downwards sees every child before its parent.
 */
function inodeDigests(spec: BootstrapSpec, entries: readonly Entry[]): Map<BuildInode, Buffer> {
  const digests = new Map<BuildInode, Buffer>();
  for (let index = entries.length; index >= 1; index--) {
    const { inode } = entries[index - 1]!;
    if (digests.has(inode)) continue;
    let parts: Uint8Array[] = [];
    if (isDir(inode.mode)) {
      parts = (inode.children ?? []).map((c) => {
        const d = digests.get(c.inode);
        if (d === undefined) throw new Error(`Internal error: child of index ${index} has no digest yet`);
        return d;
      });
    } else if (isReg(inode.mode)) {
      parts = (inode.chunks ?? []).map((c) => c.id);
    } else if (isSymlink(inode.mode)) {
      parts = [inode.target!];
    }
    digests.set(inode, v5InodeDigest(spec.digester, inode.mode, parts));
  }
  return digests;
}

function encodeRecord(
  spec: BootstrapSpec,
  e: Entry,
  digest: Buffer,
  occurrences: number,
  hardlinkFlag: boolean,
): Buffer {
  const { inode } = e;
  const hasXattrs = inode.xattrs.length > 0;
  const dir = isDir(inode.mode);
  const reg = isReg(inode.mode);
  const target = isSymlink(inode.mode) ? inode.target! : undefined;
  const chunks = reg ? (inode.chunks ?? []) : [];
  let flags = 0;
  if (target !== undefined) flags |= InodeFlag.SYMLINK;
  if (hasXattrs) flags |= InodeFlag.XATTR;
  if (hardlinkFlag && reg && occurrences > 1) flags |= InodeFlag.HARDLINK;
  const size = dir ? dirPseudoSize(inode.children ?? []) : (target?.length ?? inode.size);
  const xattrBytes = hasXattrs ? align(v5XattrPayloadSize(inode.xattrs), SECTION_ALIGN) : 0;
  const fixed: V5InodeFixed = {
    digest,
    parent: e.parent,
    ino: e.ino,
    uid: spec.explicitUidGid ? inode.uid : 0,
    gid: spec.explicitUidGid ? inode.gid : 0,
    projid: 0,
    mode: inode.mode,
    size,
    blocks: Math.ceil((size + xattrBytes) / BLOCK_UNIT),
    flags,
    nlink: nlinkOf(inode, occurrences),
    childIndex: dir ? e.childIndex : 0,
    childCount: dir ? (inode.children ?? []).length : chunks.length,
    nameSize: e.name.length,
    symlinkSize: target?.length ?? 0,
    // st_rdev truncated to its low 32 bits (2.6).
    rdev: inode.rdev >>> 0,
    mtimeNsec: inode.mtimeNsec,
    mtime: inode.mtime,
  };
  return encodeV5InodeRecord({
    inode: fixed,
    name: e.name,
    ...(target === undefined ? {} : { symlink: target }),
    ...(hasXattrs ? { xattrs: inode.xattrs } : {}),
    ...(reg ? { chunks } : {}),
  });
}

/** Indexes in the physical record order: DFS pre-order (root, first child, its subtree, ...). */
function dfsOrder(entries: readonly Entry[]): number[] {
  const order: number[] = [];
  const stack: number[] = [ROOT_INDEX];
  for (let i = stack.pop(); i !== undefined; i = stack.pop()) {
    order.push(i);
    const e = entries[i - 1]!;
    if (!isDir(e.inode.mode)) continue;
    const n = (e.inode.children ?? []).length;
    for (let k = n - 1; k >= 0; k--) stack.push(e.childIndex + k);
  }
  return order;
}

/**
 * Write the RAFS v5 bootstrap of `spec`. Chunk records are copied as given (blob indexes into
 * `spec.blobs`); `spec.prefetch` inodes must be in the tree. Throws ERR_INVALID_ARG for a tree
 * or spec the format cannot hold (unsorted or invalid names, a directory reachable twice, chunk
 * counts that do not match file sizes, out-of-range fields, a file too large to address).
 */
export function writeV5Bootstrap(spec: BootstrapSpec, extras: V5WriteExtras = {}): Buffer {
  checkSpec(spec);
  const { entries, firstIndex } = assignIndexes(spec.tree.root);
  for (const [inode, index] of firstIndex) checkInode(spec, inode, () => `inode ${pathOf(entries, index)}`);
  const counts = countOccurrences(spec.tree);
  const digests = inodeDigests(spec, entries);
  const hardlinkFlag = extras.hardlinkFlag ?? false;

  const records = entries.map((e) =>
    encodeRecord(spec, e, digests.get(e.inode)!, counts.get(e.inode) ?? 1, hardlinkFlag),
  );
  const order =
    (spec.v5?.recordOrder ?? 'dfs') === 'index' ? entries.map((_, k) => k + 1) : dfsOrder(entries);

  const prefetch = spec.prefetch.map((inode) => {
    const index = firstIndex.get(inode);
    if (index === undefined) throw invalid('a prefetch inode is not in the tree');
    // The table holds inode numbers (2.4); the first entry naming an inode carries it.
    return entries[index - 1]!.ino;
  });
  const n = entries.length;
  const inodeTableOffset = RAFS_V5_SUPERBLOCK_SIZE;
  const inodeTable = Buffer.alloc(align(TABLE_SLOT_SIZE * n, SECTION_ALIGN));
  const prefetchTableOffset = inodeTableOffset + inodeTable.length;
  const prefetchTable = Buffer.alloc(align(TABLE_SLOT_SIZE * prefetch.length, SECTION_ALIGN));
  prefetch.forEach((ino, k) => prefetchTable.writeUInt32LE(ino, TABLE_SLOT_SIZE * k));
  const blobTableOffset = prefetchTableOffset + prefetchTable.length;
  const blobTable = encodeV5BlobTable(spec.blobs);
  const extBlobTableOffset = blobTableOffset + blobTable.length;
  const extBlobTable = encodeV5ExtBlobTable(spec.blobs);

  let pos = extBlobTableOffset + extBlobTable.length;
  const body: Buffer[] = [];
  for (const index of order) {
    const slot = pos / SECTION_ALIGN;
    if (slot >= MAX_SLOT_VALUE) {
      throw invalid(`the record of ${pathOf(entries, index)} would start at ${pos}, past the 4 GiB limit`);
    }
    inodeTable.writeUInt32LE(slot, TABLE_SLOT_SIZE * (index - 1));
    const rec = records[index - 1]!;
    body.push(rec);
    pos += rec.length;
  }

  let flags = compressorFlag(spec.compressor) | digesterFlag(spec.digester);
  if (spec.explicitUidGid) flags |= SuperFlag.EXPLICIT_UID_GID;
  if (entries.some((e) => e.inode.xattrs.length > 0)) flags |= SuperFlag.HAS_XATTR;
  const superblock = encodeV5Superblock({
    magic: RAFS_V5_MAGIC,
    fsVersion: RAFS_V5_VERSION,
    sbSize: RAFS_V5_SUPERBLOCK_SIZE,
    blockSize: spec.chunkSize,
    flags,
    // Current builder rule (2.15): every distinct inode number, hardlink groups counted once.
    inodesCount: entries.reduce((c, e, k) => (e.ino === k + 1 ? c + 1 : c), 0),
    inodeTableOffset,
    prefetchTableOffset,
    blobTableOffset,
    inodeTableEntries: n,
    prefetchTableEntries: prefetch.length,
    blobTableSize: blobTable.length,
    extendedBlobTableEntries: spec.blobs.length,
    extendedBlobTableOffset: extBlobTableOffset,
  });
  return Buffer.concat([superblock, inodeTable, prefetchTable, blobTable, extBlobTable, ...body], pos);
}
