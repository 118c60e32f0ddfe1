import { NydusError } from '../errors/errors.js';
import { CHUNK_RECORD_SIZE, encodeChunkRecord } from '../format/chunk-record.js';
import {
  BlobFeature,
  compressorFlag,
  digesterFlag,
  isDir,
  isReg,
  isSymlink,
  Limits,
  SuperFlag,
} from '../format/flags.js';
import type { BlobInfo, ChunkInfo } from '../format/model.js';
import { encodeBlobEntry } from '../format/v6/blob-table.js';
import { CHUNK_INDEX_SIZE, chunkFormat, encodeChunkIndex } from '../format/v6/chunk-index.js';
import { deviceSlotOffset, encodeDeviceSlot } from '../format/v6/device-table.js';
import { direntTypeOf, DOT, DOTDOT, dirDataSize, encodeDirData, type Dirent } from '../format/v6/dirent.js';
import { DataLayout, encodeInode, EXTENDED_INODE_SIZE, INODE_SLOT_SIZE } from '../format/v6/inode.js';
import { encodePrefetchTable } from '../format/v6/prefetch-table.js';
import {
  BLOB_ENTRY_SIZE,
  BOOTSTRAP_ALIGN,
  DEVICE_SLOT_SIZE,
  DEVICE_TABLE_OFFSET,
  EROFS_BLKSZBITS,
  EROFS_FEATURE_COMPAT_RAFS_V6,
  encodeErofsSuper,
  encodeRafsExtSuper,
  RAFS_DEVT_SLOTOFF,
  RAFS_V6_FEATURE_INCOMPAT,
} from '../format/v6/superblock.js';
import { encodeXattrIbody, xattrIbodySizeOf, xattrIcountOf } from '../format/v6/xattr.js';
import { align } from '../util/cursor.js';
import type { BootstrapSpec } from './bootstrap-spec.js';
import { findEntry, nlinkOf, type BuildEntry, type BuildInode } from './tree.js';

/**
 * The RAFS v6 bootstrap writer (rafs-format.md 3). A spec in, the bootstrap bytes out; the
 * layout is the one nydus-image produces (3.17), so a tree read back from an upstream bootstrap
 * is re-emitted byte for byte once the era knobs of 3.18 are set.
 *
 * Layout of the output (3.1), B blobs, K chunk records:
 *
 * | offset                              | content                                        |
 * |-------------------------------------|------------------------------------------------|
 * | 0                                   | zero                                           |
 * | 1024                                | EROFS superblock (128)                         |
 * | 1152                                | RAFS extended superblock (256)                 |
 * | 1408                                | device slots (B x 128)                         |
 * | align4k(1408 + 128 B)               | blob table (B x 256), then the prefetch table  |
 * | meta_addr (align4k, 0 when B = 0)   | meta area: 4 KiB unused, then inodes and data  |
 * | align4k(end of meta)                | chunk table (K x 80), zero padded to 4 KiB      |
 *
 * Two passes: the first walks the tree in builder-index order and places every inode (3.17),
 * which fixes all nids; the second encodes the bytes. Both use explicit stacks and queues, so
 * depth and width are bounded by memory only, and nothing is quadratic.
 */

/** Placement works in 4 KiB blocks whatever blkszbits says (non-tarfs images only). */
const BLOCK = 4096;
/** Inodes start on 32-byte slots; the free-space queues count slots. */
const SLOT = INODE_SLOT_SIZE;
const SLOTS_PER_BLOCK = BLOCK / SLOT;
/** The first 4 KiB of the meta area stay unused, so the root lands at nid 128. */
const META_RESERVED = BLOCK;
/** Current builders align device mapped_blkaddr to 512 KiB (3.4). */
export const DEFAULT_MAPPED_BLKADDR_ALIGN = 512 * 1024;
/** Blob index + 1 is an EROFS device id in one byte; the builder keeps it below 255 (1.6). */
const MAX_V6_BLOBS = Limits.MAX_BLOBS - 1;

/** One inode of the output; hardlinked regular files share one. */
interface Slot {
  readonly inode: BuildInode;
  /** On-disk i_ino: builder index of the first entry naming the inode (root: the knob). */
  readonly ino: number;
  /** Offset from the start of the meta area; nid = pos / 32. */
  pos: number;
  /** Directories and symlinks: meta-relative offset of the first non-inline data block. */
  dataStart: number;
  layout: DataLayout;
  /** Directories and symlinks: bytes of data (dirent blocks, target). */
  dataSize: number;
  /** Directories: the parent's slot (the root's is itself). */
  parent: Slot | undefined;
  /** Directories: one slot per child entry, in entry order. */
  children: Slot[] | undefined;
  /** Regular files: how many entries name the inode (its nlink). */
  names: number;
  /** Regular files: the chunk records, checked once when laid out (set for every one). */
  chunks: readonly ChunkInfo[] | undefined;
}

/** A FIFO of block bases, popped from the front without shifting the array. */
class BlockQueue {
  #items: number[] = [];
  #head = 0;

  get empty(): boolean {
    return this.#head === this.#items.length;
  }

  push(base: number): void {
    this.#items.push(base);
  }

  shift(): number {
    const base = this.#items[this.#head++]!;
    if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    return base;
  }
}

/**
 * The meta-area allocator of rafs-format.md 3.17: a high-water mark plus 128 queues of blocks
 * whose free tail has exactly i slots (queue i), from which small inodes are placed first.
 */
class MetaSpace {
  offset = META_RESERVED;
  readonly #avail: BlockQueue[] = Array.from({ length: SLOTS_PER_BLOCK }, () => new BlockQueue());

  alignOffset(a: number): void {
    this.offset = align(this.offset, a);
  }

  /** Record the free tail of the block holding `o` (nothing when `o` is a block boundary). */
  appendAvail(o: number): void {
    const rem = o % BLOCK;
    if (rem === 0) return;
    this.#avail[Math.floor((BLOCK - rem) / SLOT)]!.push(o - rem);
  }

  /** A position with `size` free bytes inside an already started block, if any. */
  allocAvail(size: number): number | undefined {
    if (size >= BLOCK) return undefined;
    const lo = Math.ceil(size / SLOT);
    for (let i = lo; i < SLOTS_PER_BLOCK; i++) {
      const q = this.#avail[i]!;
      if (q.empty) continue;
      const o = q.shift() + BLOCK - SLOT * i;
      this.appendAvail(o + SLOT * lo);
      return o;
    }
    return undefined;
  }

  /** Append `size` bytes at the high-water mark. */
  append(size: number): number {
    const pos = this.offset;
    this.offset += size;
    return pos;
  }

  /**
   * Place a directory or symlink inode (`isz` = inode + xattrs) with `d` bytes of data: the data
   * tail goes inline after the inode when it fits in the inode's block, full blocks at
   * `dataStart`.
   */
  placeFlat(isz: number, d: number): { pos: number; dataStart: number; layout: DataLayout } {
    const tail = d % BLOCK;
    let pos: number;
    let layout: DataLayout;
    if (tail !== 0 && isz + tail <= BLOCK) {
      layout = DataLayout.FLAT_INLINE;
      const found = this.allocAvail(isz + tail);
      if (found !== undefined) {
        pos = found;
      } else {
        if (BLOCK - (this.offset % BLOCK) < isz + tail) {
          this.appendAvail(this.offset);
          this.alignOffset(BLOCK);
        }
        pos = this.append(isz + tail);
      }
      if (d !== tail) {
        this.appendAvail(this.offset);
        this.alignOffset(BLOCK);
      }
    } else {
      layout = DataLayout.FLAT_PLAIN;
      pos = this.allocAvail(isz) ?? this.append(isz);
      this.appendAvail(this.offset);
      this.alignOffset(BLOCK);
    }
    const dataStart = this.offset;
    this.offset += layout === DataLayout.FLAT_INLINE ? d - tail : d;
    if (layout === DataLayout.FLAT_PLAIN) this.alignOffset(BLOCK);
    this.alignOffset(SLOT);
    return { pos, dataStart, layout };
  }

  /** Place a regular file: inode, xattrs, 8-aligned chunk index array, as one piece. */
  placeFile(total: number): number {
    const pos = this.allocAvail(total) ?? this.append(total);
    this.alignOffset(SLOT);
    return pos;
  }

  /** Place a device, fifo or socket inode: always appended, never into a queued block. */
  placeSpecial(isz: number): number {
    const pos = this.append(isz);
    this.alignOffset(SLOT);
    return pos;
  }
}

/** Shared by every inode without xattrs (only ever read). */
const NO_BYTES = Buffer.alloc(0);

function invalid(message: string): NydusError {
  return new NydusError('ERR_INVALID_ARG', `Cannot write RAFS v6 bootstrap: ${message}`);
}

function show(name: Buffer): string {
  return JSON.stringify(name.toString());
}

/** Bytes after the inode core: the inline xattr ibody. */
function xattrSizeOf(inode: BuildInode): number {
  return xattrIbodySizeOf(inode.xattrs);
}

/**
 * Check a directory's entries (strictly byte-sorted, valid names, no "." or "..") and return
 * where "." and ".." go among them: the number of children sorting before each.
 */
function dotPositions(children: readonly BuildEntry[]): [number, number] {
  for (let i = 0; i < children.length; i++) {
    const name = children[i]!.name;
    if (name.length === 0 || name.length > Limits.MAX_NAME || name.includes(0) || name.includes(0x2f)) {
      throw invalid(
        `entry name ${show(name)} is empty, longer than ${Limits.MAX_NAME} bytes, or has "/" or NUL`,
      );
    }
    if (i > 0 && Buffer.compare(children[i - 1]!.name, name) >= 0) {
      throw invalid(`entries ${show(children[i - 1]!.name)} and ${show(name)} are not strictly byte-sorted`);
    }
  }
  const at = (name: Buffer): number => {
    const i = findEntry(children, name);
    if (i >= 0) throw invalid(`a directory has an entry named ${show(name)}`);
    return -i - 1;
  };
  return [at(DOT), at(DOTDOT)];
}

/** The children mapped by `map`, with "." and ".." merged in at their byte-sorted places. */
function withDots<T>(children: readonly BuildEntry[], map: (i: number) => T, dot: T, dotdot: T): T[] {
  const [a, b] = dotPositions(children);
  const out: T[] = [];
  for (let i = 0; i <= children.length; i++) {
    if (i === a) out.push(dot);
    if (i === b) out.push(dotdot);
    if (i < children.length) out.push(map(i));
  }
  return out;
}

/** Chunks of a regular file, checked against its size and the blob table. */
function fileChunks(inode: BuildInode, spec: BootstrapSpec): readonly ChunkInfo[] {
  const chunks = inode.chunks ?? [];
  const want = Math.ceil(inode.size / spec.chunkSize);
  if (chunks.length !== want) {
    const src = inode.sourcePath === undefined ? '' : ` (${inode.sourcePath} not chunked yet?)`;
    throw invalid(`a file of ${inode.size} bytes has ${chunks.length} chunks, expected ${want}${src}`);
  }
  for (const c of chunks) {
    if (c.blobIndex >= spec.blobs.length) {
      throw invalid(`a chunk names blob index ${c.blobIndex}, the blob table has ${spec.blobs.length}`);
    }
    if (c.uncompressedOffset % BLOCK !== 0) {
      throw invalid(`chunk uncompressed offset ${c.uncompressedOffset} is not 4 KiB aligned`);
    }
  }
  return chunks;
}

/**
 * chunkbits of a file (3.12): the filesystem chunk size, except for a file of several chunks
 * laid out contiguously in one blob, which the kernel may see as one chunk of the next power
 * of two of its size (page-cache sharing).
 */
function chunkBitsOf(size: number, chunks: readonly ChunkInfo[], chunkSize: number): number {
  const base = Math.log2(chunkSize);
  if (chunks.length <= 1) return base;
  for (let k = 1; k < chunks.length; k++) {
    const prev = chunks[k - 1]!;
    const c = chunks[k]!;
    if (c.blobIndex !== prev.blobIndex || c.uncompressedOffset !== prev.uncompressedOffset + chunkSize) {
      return base;
    }
  }
  let bits = 0;
  while (2 ** bits < size) bits++;
  return bits;
}

/**
 * The chunk table (3.13): one record per distinct (chunk id, blob index) (plus the ci index for
 * external blobs), sorted by id bytes then blob index. The record kept is the one of the last
 * occurrence in dump order. nydus-image calls that walk "BFS", but it visits a directory's
 * children and then descends into its child directories one by one: the index order of 2.9,
 * which `plan` follows. Every name of a hardlinked file is an occurrence.
 */
class ChunkRecords {
  readonly #external: boolean[];
  /**
   * Per blob index, the records by id (as a latin1 string: one code unit per byte, the cheapest
   * exact string of it), with `:ci index` after it for an external blob.
   */
  readonly #byBlob: Map<string, ChunkInfo>[] = [];

  constructor(blobs: readonly BlobInfo[]) {
    this.#external = blobs.map((b) => (b.features & BlobFeature.EXTERNAL) !== 0);
  }

  add(chunks: readonly ChunkInfo[]): void {
    for (const c of chunks) {
      const id = c.id.toString('latin1');
      // A later occurrence replaces the record (the Map keeps the first key position, which
      // does not matter: records are sorted, and no two compare equal).
      (this.#byBlob[c.blobIndex] ??= new Map()).set(
        this.#external[c.blobIndex] === true ? `${id}:${c.index}` : id,
        c,
      );
    }
  }

  records(): ChunkInfo[] {
    // flatMap passes over the indexes of blobs that have no record (holes of the array).
    return sortChunkRecords(
      this.#byBlob.flatMap((m) => [...m.values()]),
      this.#external,
    );
  }
}

/** Records `sortChunkRecords` orders by a numeric key: each needs 21 bits of it for its place. */
const KEYED_SORT_MAX = 1 << 21;

/**
 * Chunk records in table order: by id bytes, then blob index, then (external blobs) ci index.
 * No two records compare equal (one per id and blob, or per ci index of an external blob).
 *
 * Ids are digests, so their first four bytes nearly always tell two apart: the records are
 * sorted natively as numbers (those four bytes, big-endian, times 2^21, plus the record's
 * place), and only runs that share the four bytes are then sorted by the full comparison (a
 * comparison function per pair of ids was a tenth of the writer's time on 50,000 chunks).
 */
function sortChunkRecords(all: ChunkInfo[], external: readonly boolean[]): ChunkInfo[] {
  const compare = (x: ChunkInfo, y: ChunkInfo): number =>
    Buffer.compare(x.id, y.id) ||
    x.blobIndex - y.blobIndex ||
    (external[x.blobIndex] === true ? x.index - y.index : 0);
  const n = all.length;
  if (n > KEYED_SORT_MAX || all.some((c) => c.id.length < 4)) return all.sort(compare);
  const keys = new Float64Array(n);
  // Exact: below 2^32 * 2^21 = 2^53.
  for (let i = 0; i < n; i++) keys[i] = all[i]!.id.readUInt32BE(0) * KEYED_SORT_MAX + i;
  keys.sort();
  const out = new Array<ChunkInfo>(n);
  for (let i = 0; i < n; i++) out[i] = all[keys[i]! % KEYED_SORT_MAX]!;
  for (let start = 0; start < n;) {
    const prefix = Math.floor(keys[start]! / KEYED_SORT_MAX);
    let end = start + 1;
    while (end < n && Math.floor(keys[end]! / KEYED_SORT_MAX) === prefix) end++;
    if (end - start > 1) {
      const run = out.slice(start, end).sort(compare);
      for (let i = 0; i < run.length; i++) out[start + i] = run[i]!;
    }
    start = end;
  }
  return out;
}

interface Plan {
  /** Every slot, in placement order. */
  readonly slots: Slot[];
  readonly root: Slot;
  /** Index count (s_inos). */
  readonly inos: number;
  /** High-water mark of the meta area (meta-relative). */
  readonly end: number;
  readonly slotOf: Map<BuildInode, Slot>;
  readonly hasXattr: boolean;
  readonly chunkTable: ChunkRecords;
}

/**
 * Walk the tree in index order (rafs-format.md 2.9: the children of a directory get consecutive
 * indexes, then its child directories are entered in name order, depth first) and place each
 * inode as 3.17 says. A directory is placed when the walk enters it.
 */
function plan(spec: BootstrapSpec): Plan {
  const root = spec.tree.root;
  if (!isDir(root.mode)) throw invalid(`the root has mode 0o${root.mode.toString(8)}, not a directory`);
  const space = new MetaSpace();
  const slots: Slot[] = [];
  const slotOf = new Map<BuildInode, Slot>();
  const chunkTable = new ChunkRecords(spec.blobs);
  let hasXattr = false;
  const newSlot = (inode: BuildInode, ino: number): Slot => {
    const slot: Slot = {
      inode,
      ino,
      pos: 0,
      dataStart: 0,
      layout: DataLayout.FLAT_PLAIN,
      dataSize: 0,
      parent: undefined,
      children: undefined,
      names: 1,
      chunks: undefined,
    };
    if (!slotOf.has(inode)) slotOf.set(inode, slot);
    if (inode.xattrs.length > 0) hasXattr = true;
    return slot;
  };
  const placeFlat = (slot: Slot, d: number): void => {
    const p = space.placeFlat(EXTENDED_INODE_SIZE + xattrSizeOf(slot.inode), d);
    slot.pos = p.pos;
    slot.dataStart = p.dataStart;
    slot.layout = p.layout;
    slot.dataSize = d;
    slots.push(slot);
  };

  const rootSlot = newSlot(root, spec.v6?.rootIno ?? 1);
  rootSlot.parent = rootSlot;
  let next = 2;
  const dirsSeen = new Set<BuildInode>([root]);
  const stack: Slot[] = [rootSlot];
  while (stack.length > 0) {
    const dir = stack.pop()!;
    const entries = dir.inode.children ?? [];
    const names = withDots(entries, (i) => entries[i]!.name, DOT, DOTDOT);
    placeFlat(dir, dirDataSize(names, BLOCK));
    const childDirs: Slot[] = [];
    dir.children = entries.map((e) => {
      const index = next++;
      const { inode } = e;
      if (isDir(inode.mode)) {
        if (dirsSeen.has(inode)) throw invalid(`directory ${show(e.name)} is reachable twice`);
        dirsSeen.add(inode);
        const slot = newSlot(inode, index);
        slot.parent = dir;
        childDirs.push(slot);
        return slot;
      }
      if (isReg(inode.mode)) {
        const first = slotOf.get(inode);
        if (first !== undefined) {
          // Its chunk records went into the table with its first name.
          first.names++;
          return first; // a hardlink: one inode for every name
        }
        const slot = newSlot(inode, index);
        const chunks = fileChunks(inode, spec);
        slot.chunks = chunks;
        chunkTable.add(chunks);
        slot.pos = space.placeFile(
          align(EXTENDED_INODE_SIZE + xattrSizeOf(inode), 8) + CHUNK_INDEX_SIZE * chunks.length,
        );
        slot.layout = DataLayout.CHUNK_BASED;
        slots.push(slot);
        return slot;
      }
      const slot = newSlot(inode, index);
      if (isSymlink(inode.mode)) {
        if (inode.target === undefined) throw invalid(`symlink ${show(e.name)} has no target`);
        if (inode.target.length > Limits.MAX_SYMLINK) {
          throw invalid(
            `symlink ${show(e.name)} has a target of ${inode.target.length} bytes, more than ${Limits.MAX_SYMLINK}`,
          );
        }
        placeFlat(slot, inode.target.length);
      } else {
        slot.pos = space.placeSpecial(EXTENDED_INODE_SIZE + xattrSizeOf(inode));
        slots.push(slot);
      }
      return slot;
    });
    for (let i = childDirs.length - 1; i >= 0; i--) stack.push(childDirs[i]!);
  }
  return { slots, root: rootSlot, inos: next - 1, end: space.offset, slotOf, hasXattr, chunkTable };
}

function checkSpec(spec: BootstrapSpec): void {
  const { chunkSize, blobs } = spec;
  if (
    !Number.isInteger(chunkSize) ||
    chunkSize < Limits.MIN_CHUNK_SIZE ||
    chunkSize > Limits.MAX_CHUNK_SIZE ||
    (chunkSize & (chunkSize - 1)) !== 0
  ) {
    throw invalid(`chunk size ${chunkSize} is not a power of two in 4 KiB..16 MiB`);
  }
  if (blobs.length > MAX_V6_BLOBS) throw invalid(`${blobs.length} blobs, at most ${MAX_V6_BLOBS} fit`);
  blobs.forEach((b, i) => {
    if (b.index !== i) throw invalid(`blob table entry ${i} has index ${b.index}`);
    // Tarfs images place everything in 512-byte blocks (3.20); encrypted ones need the cipher
    // flag and the IV, which BlobInfo does not carry.
    if ((b.features & BlobFeature.TARFS) !== 0 || b.cipher !== 0) {
      throw new NydusError(
        'ERR_UNSUPPORTED',
        `Cannot write RAFS v6 bootstrap: blob ${i} is a ${b.cipher !== 0 ? 'encrypted' : 'tarfs'} blob`,
      );
    }
    if (b.uncompressedSize % BLOCK !== 0) {
      throw invalid(`blob ${i} uncompressed size ${b.uncompressedSize} is not 4 KiB aligned`);
    }
  });
  const mapped = spec.v6?.mappedBlkaddrAlign;
  if (mapped !== undefined && (!Number.isSafeInteger(mapped) || mapped < 0 || mapped % BLOCK !== 0)) {
    throw invalid(`mapped_blkaddr alignment ${mapped} is not a multiple of 4096`);
  }
}

/** The superblock flags (3.3). */
function superFlags(spec: BootstrapSpec, hasXattr: boolean): number {
  let flags = compressorFlag(spec.compressor) | digesterFlag(spec.digester);
  if (spec.explicitUidGid) flags |= SuperFlag.EXPLICIT_UID_GID;
  if (hasXattr) flags |= SuperFlag.HAS_XATTR;
  if (spec.blobs.every((b) => (b.features & BlobFeature.INLINED_CHUNK_DIGEST) !== 0)) {
    flags |= SuperFlag.INLINED_CHUNK_DIGEST;
  }
  if (spec.v6?.encryptionNoneFlag !== false) flags |= SuperFlag.ENCRYPTION_NONE;
  return flags >>> 0;
}

function writeBlobTables(spec: BootstrapSpec, buf: Buffer, blobTableOffset: number, fileSize: number): void {
  const alignment = spec.v6?.mappedBlkaddrAlign ?? DEFAULT_MAPPED_BLKADDR_ALIGN;
  // Blobs follow the bootstrap in one flat block address space (3.4).
  let pos = fileSize;
  spec.blobs.forEach((b, i) => {
    const blocks = b.uncompressedSize / BLOCK;
    let mapped = 0;
    if (alignment !== 0) {
      mapped = align(pos, alignment) / BLOCK;
      pos = (mapped + blocks) * BLOCK;
    }
    encodeDeviceSlot({ blobId: b.blobId, blocks, mappedBlkaddr: mapped }, buf, deviceSlotOffset(i));
    encodeBlobEntry(
      {
        blobId: b.blobId,
        blobIndex: i,
        chunkSize: b.chunkSize,
        chunkCount: b.chunkCount,
        compressor: b.compressor,
        digester: b.digester,
        features: b.features,
        compressedSize: b.compressedSize,
        uncompressedSize: b.uncompressedSize,
        tocSize: b.tocSize,
        ciCompressor: b.ciCompressor,
        ciOffset: b.ciOffset,
        ciCompressedSize: b.ciCompressedSize,
        ciUncompressedSize: b.ciUncompressedSize,
        tocDigest: b.tocDigest,
        metaDigest: b.metaDigest,
        metaSize: BigInt(b.metaSize),
        cipherIv: Buffer.alloc(8),
        cipher: b.cipher,
      },
      buf,
      blobTableOffset + i * BLOB_ENTRY_SIZE,
    );
  });
}

/** Encode one inode with its xattrs and its data (inline tail, data blocks, chunk indexes). */
function writeSlot(slot: Slot, spec: BootstrapSpec, buf: Buffer, metaAddr: number): void {
  const { inode } = slot;
  const at = metaAddr + slot.pos;
  const xattrs = inode.xattrs.length === 0 ? NO_BYTES : encodeXattrIbody(inode.xattrs);
  const afterXattrs = at + EXTENDED_INODE_SIZE + xattrs.length;
  let size: number;
  let iu: number;
  if (isDir(inode.mode) || isSymlink(inode.mode)) {
    let data: Buffer;
    if (isDir(inode.mode)) {
      const entries = inode.children ?? [];
      const kids = slot.children ?? [];
      const dirent = (name: Buffer, s: Slot): Dirent => ({
        name,
        nid: s.pos / SLOT,
        fileType: direntTypeOf(s.inode.mode),
      });
      data = encodeDirData(
        withDots(
          entries,
          (i) => dirent(entries[i]!.name, kids[i]!),
          dirent(DOT, slot),
          dirent(DOTDOT, slot.parent ?? slot),
        ),
        BLOCK,
      );
    } else {
      data = inode.target ?? NO_BYTES;
    }
    if (data.length !== slot.dataSize) {
      throw invalid(`data of inode ${slot.ino} changed size from ${slot.dataSize} to ${data.length}`);
    }
    size = data.length;
    // All-inline data has no block; the builder still records the block of its data cursor.
    iu = Math.floor((slot.dataStart + metaAddr) / BLOCK);
    const full = slot.layout === DataLayout.FLAT_INLINE ? size - (size % BLOCK) : size;
    data.copy(buf, metaAddr + slot.dataStart, 0, full);
    data.copy(buf, afterXattrs, full);
  } else if (isReg(inode.mode)) {
    const chunks = slot.chunks!;
    size = inode.size;
    iu = chunkFormat(chunkBitsOf(size, chunks, spec.chunkSize), EROFS_BLKSZBITS);
    const base = align(afterXattrs, 8);
    chunks.forEach((c, k) =>
      encodeChunkIndex(
        { blobIndex: c.blobIndex, ciIndex: c.index, blkaddr: c.uncompressedOffset / BLOCK },
        buf,
        base + k * CHUNK_INDEX_SIZE,
      ),
    );
  } else {
    size = 0;
    iu = inode.rdev;
  }
  encodeInode(
    {
      extended: true,
      layout: slot.layout,
      xattrIcount: xattrIcountOf(xattrs.length),
      mode: inode.mode,
      size,
      iu,
      ino: slot.ino,
      uid: spec.explicitUidGid ? inode.uid : 0,
      gid: spec.explicitUidGid ? inode.gid : 0,
      mtime: inode.mtime,
      mtimeNsec: inode.mtimeNsec,
      nlink: nlinkOf(inode, slot.names),
    },
    buf,
    at,
  );
  xattrs.copy(buf, at + EXTENDED_INODE_SIZE);
}

/**
 * Write the RAFS v6 bootstrap of `spec`. Chunk records must carry their final blob indexes,
 * ci indexes and 4 KiB aligned uncompressed offsets; `spec.prefetch` inodes must be in the tree.
 * Throws ERR_INVALID_ARG for a tree or spec the format cannot hold, ERR_UNSUPPORTED for tarfs
 * and encrypted blobs.
 */
export function writeV6Bootstrap(spec: BootstrapSpec): Buffer {
  checkSpec(spec);
  const p = plan(spec);
  const blobCount = spec.blobs.length;
  const prefetchNids = spec.prefetch.map((inode) => {
    const slot = p.slotOf.get(inode);
    if (slot === undefined) throw invalid('a prefetch inode is not in the tree');
    return slot.pos / SLOT;
  });
  const prefetch = blobCount > 0 && prefetchNids.length > 0 ? encodePrefetchTable(prefetchNids) : undefined;

  const blobTableOffset = align(DEVICE_TABLE_OFFSET + DEVICE_SLOT_SIZE * blobCount, BOOTSTRAP_ALIGN);
  const blobTableSize = BLOB_ENTRY_SIZE * blobCount;
  const prefetchOffset = prefetch === undefined ? 0 : blobTableOffset + blobTableSize;
  const prefetchSize = prefetch?.length ?? 0;
  const metaAddr =
    blobCount === 0 ? 0 : align(blobTableOffset + blobTableSize + prefetchSize, BOOTSTRAP_ALIGN);
  const records = p.chunkTable.records();
  const chunkTableOffset = align(metaAddr + p.end, BOOTSTRAP_ALIGN);
  const chunkTableSize = CHUNK_RECORD_SIZE * records.length;
  const fileSize = align(chunkTableOffset + chunkTableSize, BOOTSTRAP_ALIGN);

  const buf = Buffer.alloc(fileSize);
  encodeErofsSuper(
    {
      checksum: 0,
      featureCompat: EROFS_FEATURE_COMPAT_RAFS_V6,
      blkszbits: EROFS_BLKSZBITS,
      extslots: 0,
      rootNid: p.root.pos / SLOT,
      inos: p.inos,
      buildTime: 0,
      buildTimeNsec: 0,
      blocks: spec.blobs.reduce((n, b) => n + b.uncompressedSize / BLOCK, 0),
      metaBlkaddr: metaAddr / BLOCK,
      xattrBlkaddr: 0,
      uuid: Buffer.alloc(16),
      volumeName: Buffer.alloc(16),
      featureIncompat: RAFS_V6_FEATURE_INCOMPAT,
      u1: 0,
      extraDevices: blobCount,
      devtSlotoff: RAFS_DEVT_SLOTOFF,
    },
    buf,
  );
  encodeRafsExtSuper(
    {
      flags: superFlags(spec, p.hasXattr),
      blobTableOffset,
      blobTableSize,
      chunkSize: spec.chunkSize,
      chunkTableOffset,
      chunkTableSize,
      prefetchTableOffset: prefetchOffset,
      prefetchTableSize: prefetchSize,
    },
    buf,
  );
  writeBlobTables(spec, buf, blobTableOffset, fileSize);
  prefetch?.copy(buf, prefetchOffset);

  for (const slot of p.slots) writeSlot(slot, spec, buf, metaAddr);
  records.forEach((r, i) => encodeChunkRecord(r, buf, chunkTableOffset + i * CHUNK_RECORD_SIZE));
  return buf;
}
