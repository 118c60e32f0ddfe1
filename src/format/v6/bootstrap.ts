import { FormatError, NydusError } from '../../errors/errors.js';
import { align } from '../../util/cursor.js';
import {
  CHUNK_RECORD_SIZE,
  ChunkRecordAt,
  checkChunkRecordAt,
  decodeChunkRecord,
  recordCompressedOffset,
  recordFileOffset,
  recordUncompressedOffset,
} from '../chunk-record.js';
import { isDir, isReg, isSymlink, Limits, S_IFBLK, S_IFCHR, S_IFMT, SuperFlag } from '../flags.js';
import type {
  BlobInfo,
  Bootstrap,
  ChunkInfo,
  DirEntry,
  InodeAttr,
  SuperblockInfo,
  XattrPair,
} from '../model.js';
import { blobInfoOf, checkBlobEntry, decodeBlobEntry, type BlobTableEntry } from './blob-table.js';
import { CHUNK_INDEX_SIZE, decodeChunkFormat, decodeChunkIndex, type ChunkRef } from './chunk-index.js';
import { checkDeviceSlot, decodeDeviceSlot, deviceSlotOffset, type DeviceSlot } from './device-table.js';
import { dirBlockCount, DirBlock, DOT, DOTDOT, modeOfDirentType } from './dirent.js';
import { DataLayout, decodeInode, INODE_SLOT_SIZE, inodeSize, type V6Inode } from './inode.js';
import { decodePrefetchTable } from './prefetch-table.js';
import {
  BLOB_ENTRY_SIZE,
  checkSuperblocks,
  decodeErofsSuper,
  EROFS_MAGIC,
  decodeRafsExtSuper,
  type ErofsSuperblock,
  type RafsExtSuperblock,
  type SuperblockFacts,
} from './superblock.js';
import { decodeXattrEntry, decodeXattrIbody, xattrIbodySize } from './xattr.js';

export { EROFS_MAGIC, EROFS_SUPER_OFFSET } from './superblock.js';

/** Directories whose block index stays cached; each costs 4 bytes per directory block. */
const MAX_CACHED_DIRS = 1024;
/** Chunk table keys: blob index * 2^24 + ci index (both bounded, so the key is exact). */
const CI_KEY_SPAN = 1 << 24;

/** Where the data of a FLAT_PLAIN / FLAT_INLINE inode lives. */
interface FlatData {
  readonly size: number;
  /** Absolute offset of data block 0 (`i_u * block size`). */
  readonly blocksOff: number;
  /** Blocks stored at `i_u`, `i_u + 1`, ... */
  readonly fullBlocks: number;
  /** Absolute offset of the inline tail (bytes after the last full block); -1 if none. */
  readonly tailOff: number;
  readonly tailSize: number;
}

/** A directory's block layout: cumulative entry counts and where "." and ".." are. */
interface DirIndex {
  readonly data: FlatData;
  /** cum[b] = entries before block b; cum[blocks] = all entries. */
  readonly cum: Uint32Array;
  /** Sorted positions (over all entries) of "." and "..", when present. */
  readonly dots: readonly number[];
}

/**
 * A RAFS v6 (EROFS-compatible) bootstrap held in memory (rafs-format.md 3). `parse` checks the
 * superblocks, the device table and the blob table; inodes, directories and the chunk table are
 * decoded on demand. Inode numbers are nids. Regular files normally use the chunk-based layout;
 * files with a FLAT_PLAIN / FLAT_INLINE layout (images from other EROFS tools) keep their bytes
 * in the bootstrap: `inlineData` returns them and `chunks` refuses such files unless empty.
 * The "." and ".." dirents are never reported: `lookup`, `readdir` and `childCount` skip them,
 * as a v5 bootstrap (which has none) would.
 */
export class RafsV6Bootstrap implements Bootstrap {
  readonly superblock: SuperblockInfo;
  readonly rootIno: number;
  /** The EROFS block size: 4096, or 512 in tarfs mode. */
  readonly blockSize: number;
  readonly erofsSuper: ErofsSuperblock;
  readonly extSuper: RafsExtSuperblock;
  readonly deviceSlots: readonly DeviceSlot[];
  readonly #buf: Buffer;
  readonly #facts: SuperblockFacts;
  readonly #entries: BlobTableEntry[];
  readonly #blobs: BlobInfo[];
  /**
   * Chunk table key (blob index, ci index) → record number. Records are decoded when asked for,
   * not kept: decoded, each costs ~250 bytes of heap for as long as the image is mounted (5 MiB
   * for 20k chunks), where this map costs a few dozen bytes per chunk.
   */
  #chunkMap: Map<number, number> | undefined;
  readonly #dirs = new Map<number, DirIndex>();

  private constructor(
    buf: Buffer,
    sb: ErofsSuperblock,
    ext: RafsExtSuperblock,
    facts: SuperblockFacts,
    slots: DeviceSlot[],
    entries: BlobTableEntry[],
  ) {
    this.#buf = buf;
    this.erofsSuper = sb;
    this.extSuper = ext;
    this.#facts = facts;
    this.deviceSlots = slots;
    this.#entries = entries;
    this.#blobs = entries.map((e, i) => blobInfoOf(e, i, slots[i]!));
    this.blockSize = facts.blockSize;
    this.rootIno = sb.rootNid;
    this.superblock = {
      version: 6,
      flags: ext.flags,
      chunkSize: ext.chunkSize,
      compressor: facts.compressor,
      digester: facts.digester,
      explicitUidGid: (ext.flags & SuperFlag.EXPLICIT_UID_GID) !== 0,
      hasXattr: (ext.flags & SuperFlag.HAS_XATTR) !== 0,
      inodesCount: sb.inos,
      fields: {
        magic: EROFS_MAGIC,
        checksum: sb.checksum,
        feature_compat: sb.featureCompat,
        blkszbits: sb.blkszbits,
        extslots: sb.extslots,
        root_nid: sb.rootNid,
        inos: sb.inos,
        build_time: sb.buildTime,
        build_time_nsec: sb.buildTimeNsec,
        blocks: sb.blocks,
        meta_blkaddr: sb.metaBlkaddr,
        xattr_blkaddr: sb.xattrBlkaddr,
        feature_incompat: sb.featureIncompat,
        extra_devices: sb.extraDevices,
        devt_slotoff: sb.devtSlotoff,
        flags: ext.flags,
        blob_table_offset: ext.blobTableOffset,
        blob_table_size: ext.blobTableSize,
        chunk_size: ext.chunkSize,
        chunk_table_offset: ext.chunkTableOffset,
        chunk_table_size: ext.chunkTableSize,
        prefetch_table_offset: ext.prefetchTableOffset,
        prefetch_table_size: ext.prefetchTableSize,
      },
    };
  }

  /** Open a bootstrap: superblock, device table and blob table checks only. */
  static parse(buf: Buffer): RafsV6Bootstrap {
    const sb = decodeErofsSuper(buf);
    const ext = decodeRafsExtSuper(buf);
    const facts = checkSuperblocks(sb, ext, buf.length);
    const slots: DeviceSlot[] = [];
    const entries: BlobTableEntry[] = [];
    for (let i = 0; i < facts.blobCount; i++) {
      const slotOff = deviceSlotOffset(i);
      const slot = decodeDeviceSlot(buf, slotOff);
      checkDeviceSlot(slot, i, slotOff);
      slots.push(slot);
      const entryOff = ext.blobTableOffset + i * BLOB_ENTRY_SIZE;
      const entry = decodeBlobEntry(buf, entryOff);
      checkBlobEntry(entry, i, ext.chunkSize, entryOff);
      entries.push(entry);
    }
    return new RafsV6Bootstrap(buf, sb, ext, facts, slots, entries);
  }

  get blobs(): readonly BlobInfo[] {
    return this.#blobs;
  }

  /** The raw blob table entries (cipher key and IV included). */
  get blobEntries(): readonly BlobTableEntry[] {
    return this.#entries;
  }

  /** Absolute offset of inode `nid`; ERR_NOT_FOUND when it cannot hold an inode. */
  inodeOffset(nid: number): number {
    const maxNid = Math.floor((this.#buf.length - this.#facts.metaBase - INODE_SLOT_SIZE) / INODE_SLOT_SIZE);
    if (!Number.isSafeInteger(nid) || nid < 0 || nid > maxNid) {
      throw new NydusError('ERR_NOT_FOUND', `Inode ${nid} does not exist: nids end at ${maxNid}`);
    }
    return this.#facts.metaBase + nid * INODE_SLOT_SIZE;
  }

  /** The decoded on-disk inode `nid`. */
  inode(nid: number): V6Inode {
    const off = this.inodeOffset(nid);
    try {
      return decodeInode(this.#buf, off);
    } catch (e) {
      rethrow(e, `Inode ${nid}`);
    }
  }

  getAttr(ino: number): InodeAttr {
    const inode = this.inode(ino);
    const type = inode.mode & S_IFMT;
    return {
      ino,
      mode: inode.mode,
      uid: inode.uid,
      gid: inode.gid,
      size: inode.size,
      blocks: Math.ceil(inode.size / 512),
      nlink: inode.nlink,
      rdev: inode.extended && (type === S_IFCHR || type === S_IFBLK) ? inode.iu : 0,
      mtime: inode.mtime,
      mtimeNsec: inode.mtimeNsec,
    };
  }

  lookup(dir: number, name: Buffer): DirEntry | undefined {
    const idx = this.#dirIndex(dir);
    if (name.length === 0 || name.length > Limits.MAX_NAME || name.equals(DOT) || name.equals(DOTDOT))
      return undefined;
    const hit = this.#find(idx, name);
    return hit === undefined ? undefined : this.#dirEntry(hit.block, hit.index);
  }

  childCount(dir: number): number {
    const idx = this.#dirIndex(dir);
    return idx.cum[idx.cum.length - 1]! - idx.dots.length;
  }

  readdir(dir: number, start = 0, limit = Number.MAX_SAFE_INTEGER): DirEntry[] {
    if (!Number.isSafeInteger(start) || start < 0 || !(limit >= 0)) {
      throw new NydusError(
        'ERR_INVALID_ARG',
        `Cannot read directory ${dir} from ${start} with limit ${limit}`,
      );
    }
    const idx = this.#dirIndex(dir);
    const blocks = idx.cum.length - 1;
    const total = idx.cum[blocks]! - idx.dots.length;
    const want = Math.min(total - start, Math.floor(limit));
    const out: DirEntry[] = [];
    if (want <= 0) return out;
    // Child position -> position over all entries, skipping "." and "..".
    let pos = start;
    for (const d of idx.dots) if (pos >= d) pos++;
    let b = this.#blockOf(idx, pos);
    let blk = this.#dirBlock(idx, b);
    while (out.length < want) {
      let i = pos - idx.cum[b]!;
      if (i >= blk.count) {
        b++;
        blk = this.#dirBlock(idx, b);
        i = 0;
      }
      if (!idx.dots.includes(pos)) out.push(this.#dirEntry(blk, i));
      pos++;
    }
    return out;
  }

  readlink(ino: number): Buffer {
    const inode = this.inode(ino);
    if (!isSymlink(inode.mode)) throw new NydusError('ERR_INODE_TYPE', `Inode ${ino} is not a symlink`);
    if (inode.size > Limits.MAX_SYMLINK) {
      throw new FormatError(
        `Inode ${ino}: symlink target of ${inode.size} bytes exceeds ${Limits.MAX_SYMLINK}`,
      );
    }
    return this.#flatBytes(this.#flatData(ino, inode));
  }

  xattrs(ino: number): XattrPair[] {
    const inode = this.inode(ino);
    const size = xattrIbodySize(inode.xattrIcount);
    if (size === 0) return [];
    const ibody = decodeXattrIbody(this.#buf, this.inodeOffset(ino) + inodeSize(inode), size);
    if (ibody.sharedIds.length === 0) return ibody.entries;
    const blkaddr = this.erofsSuper.xattrBlkaddr;
    if (blkaddr === 0) {
      throw new FormatError(
        `Inode ${ino} lists ${ibody.sharedIds.length} shared xattrs but xattr_blkaddr is 0`,
      );
    }
    const shared = ibody.sharedIds.map((id) => {
      const off = blkaddr * this.blockSize + 4 * id;
      return decodeXattrEntry(this.#buf, off, this.#buf.length).pair;
    });
    return [...ibody.entries, ...shared];
  }

  /** The raw chunk index entries of a regular file, in file order. */
  chunkRefs(ino: number): ChunkRef[] {
    const inode = this.inode(ino);
    if (!isReg(inode.mode)) throw new NydusError('ERR_INODE_TYPE', `Inode ${ino} is not a regular file`);
    if (inode.layout !== DataLayout.CHUNK_BASED) {
      if (inode.size === 0) return [];
      throw new NydusError(
        'ERR_UNSUPPORTED',
        `Inode ${ino} keeps its ${inode.size} bytes in the bootstrap (layout ${inode.layout}), not in chunks`,
      );
    }
    try {
      decodeChunkFormat(inode.iu, this.erofsSuper.blkszbits);
    } catch (e) {
      rethrow(e, `Inode ${ino}`);
    }
    const count = Math.ceil(inode.size / this.extSuper.chunkSize);
    const off = align(this.inodeOffset(ino) + inodeSize(inode) + xattrIbodySize(inode.xattrIcount), 8);
    if (off + count * CHUNK_INDEX_SIZE > this.#buf.length) {
      throw new FormatError(
        `Inode ${ino}: ${count} chunk index entries at ${off} run past the bootstrap end`,
        off,
      );
    }
    const refs: ChunkRef[] = [];
    for (let k = 0; k < count; k++) refs.push(decodeChunkIndex(this.#buf, off + k * CHUNK_INDEX_SIZE));
    return refs;
  }

  chunks(ino: number): ChunkInfo[] {
    const refs = this.chunkRefs(ino);
    if (refs.length > 0 && this.#facts.tarfs) {
      throw new NydusError(
        'ERR_UNSUPPORTED',
        `Inode ${ino}: tarfs chunks are not described by the chunk table`,
      );
    }
    const chunkSize = this.extSuper.chunkSize;
    return refs.map((ref, k) => {
      const rec = this.#chunkRecord(ref);
      if (rec === undefined) {
        throw new NydusError(
          'ERR_NOT_FOUND',
          `Chunk ${k} of inode ${ino} (blob index ${ref.blobIndex}, ci index ${ref.ciIndex}) is not in the chunk table`,
        );
      }
      this.#checkBlkaddr(ino, k, ref, rec.uncompressedOffset);
      return { ...rec, fileOffset: k * chunkSize };
    });
  }

  /** Data of a FLAT_PLAIN / FLAT_INLINE regular file; undefined for chunk-based files. */
  inlineData(ino: number): Buffer | undefined {
    const inode = this.inode(ino);
    if (!isReg(inode.mode)) throw new NydusError('ERR_INODE_TYPE', `Inode ${ino} is not a regular file`);
    if (inode.layout === DataLayout.CHUNK_BASED) return undefined;
    return this.#flatBytes(this.#flatData(ino, inode));
  }

  prefetchInos(): number[] {
    const { prefetchTableOffset, prefetchTableSize } = this.extSuper;
    if (prefetchTableSize === 0) return [];
    return decodePrefetchTable(this.#buf, prefetchTableOffset, prefetchTableSize);
  }

  allChunks(): ChunkInfo[] {
    return this.#chunkRecords();
  }

  setBlobId(index: number, blobId: string): void {
    const entry = this.#entries[index];
    const blob = this.#blobs[index];
    if (entry === undefined || blob === undefined) {
      throw new NydusError(
        'ERR_NOT_FOUND',
        `Blob index ${index} does not exist: the image has ${this.#blobs.length} blobs`,
      );
    }
    this.#entries[index] = { ...entry, blobId };
    this.#blobs[index] = { ...blob, blobId };
  }

  /**
   * Walk the whole tree from the root with an explicit stack. Every directory is visited once
   * (a second path to one is a cycle or a hard-linked directory, both rejected); other inodes
   * are checked once however many names they have.
   */
  validate(): void {
    this.#validateChunkTable();
    for (const nid of this.prefetchInos()) {
      try {
        this.inode(nid);
      } catch (e) {
        rethrow(e, `Prefetch table entry ${nid}`, nid, true);
      }
    }
    const root = this.rootIno;
    const parents = new Map<number, { parent: number; name: Buffer }>([
      [root, { parent: root, name: Buffer.alloc(0) }],
    ]);
    const pathOf = (nid: number): string => {
      const names: string[] = [];
      for (let n = nid; n !== root && names.length <= parents.size;) {
        const p = parents.get(n);
        if (p === undefined) break;
        names.push(p.name.toString());
        n = p.parent;
      }
      return '/' + names.reverse().join('/');
    };
    const checked = new Set<number>();
    const stack = [root];
    try {
      if (!isDir(this.inode(root).mode)) throw new FormatError(`Root inode ${root} is not a directory`);
    } catch (e) {
      rethrow(e, `Root inode ${root}`, root, true);
    }
    while (stack.length > 0) {
      const nid = stack.pop()!;
      const where = (): string => `Directory ${nid} (${pathOf(nid)})`;
      let children: { name: Buffer; nid: number; fileType: number }[];
      try {
        this.#validateInode(nid, this.inode(nid));
        children = this.#validateDirBlocks(nid, parents.get(nid)!.parent);
      } catch (e) {
        rethrow(e, where(), nid, true);
      }
      const subdirs: number[] = [];
      for (const c of children) {
        const childWhere = (): string =>
          `Inode ${c.nid} (${pathOf(nid).replace(/\/$/, '')}/${c.name.toString()})`;
        let inode: V6Inode;
        try {
          inode = this.inode(c.nid);
          const mode = modeOfDirentType(c.fileType);
          if (mode !== 0 && mode !== (inode.mode & S_IFMT)) {
            throw new FormatError(
              `dirent file_type ${c.fileType} does not match mode 0o${inode.mode.toString(8)} of the inode`,
            );
          }
        } catch (e) {
          rethrow(e, childWhere(), c.nid, true);
        }
        if (isDir(inode.mode)) {
          const seen = parents.get(c.nid);
          if (seen !== undefined) {
            throw new FormatError(
              `${childWhere()}: directory is reachable twice, also as ${pathOf(c.nid)} (a directory cycle or a hard-linked directory)`,
            );
          }
          parents.set(c.nid, { parent: nid, name: c.name });
          subdirs.push(c.nid);
        } else if (!checked.has(c.nid)) {
          checked.add(c.nid);
          try {
            this.#validateInode(c.nid, inode);
          } catch (e) {
            rethrow(e, childWhere(), c.nid, true);
          }
        }
      }
      // Reversed, so directories are entered in name order (depth first).
      for (let i = subdirs.length - 1; i >= 0; i--) stack.push(subdirs[i]!);
    }
  }

  /** Checks of one directory's blocks; returns its children ("." and ".." excluded). */
  #validateDirBlocks(nid: number, parent: number): { name: Buffer; nid: number; fileType: number }[] {
    const idx = this.#dirIndex(nid);
    const children: { name: Buffer; nid: number; fileType: number }[] = [];
    let prev: Buffer | undefined;
    let dot = false;
    let dotdot = false;
    for (let b = 0; b + 1 < idx.cum.length; b++) {
      const blk = this.#dirBlock(idx, b);
      for (let i = 0; i < blk.count; i++) {
        const name = blk.name(i);
        const child = blk.nid(i);
        const fileType = blk.fileType(i);
        if (prev !== undefined && Buffer.compare(prev, name) >= 0) {
          throw new FormatError(
            `name "${name.toString()}" is not sorted after "${prev.toString()}" (block ${b})`,
          );
        }
        prev = name;
        if (modeOfDirentType(fileType) === undefined) {
          throw new FormatError(`entry "${name.toString()}" has an unknown file_type ${fileType}`);
        }
        if (name.equals(DOT)) {
          if (child !== nid) throw new FormatError(`"." points to ${child}, not to the directory itself`);
          dot = true;
        } else if (name.equals(DOTDOT)) {
          if (child !== parent) throw new FormatError(`".." points to ${child}, not to the parent ${parent}`);
          dotdot = true;
        } else {
          if (name.includes(0x2f) || name.includes(0)) {
            throw new FormatError(`entry name "${name.toString()}" contains "/" or NUL`);
          }
          children.push({ name, nid: child, fileType });
        }
      }
    }
    if (!dot || !dotdot) throw new FormatError(`the "${dot ? '..' : '.'}" entry is missing`);
    return children;
  }

  /** Per-inode checks: xattrs, and the data of every kind of inode. */
  #validateInode(nid: number, inode: V6Inode): void {
    this.xattrs(nid);
    const type = inode.mode & S_IFMT;
    if (isDir(inode.mode)) return; // blocks are checked by the walk
    if (isSymlink(inode.mode)) {
      this.readlink(nid);
      return;
    }
    if (!isReg(inode.mode)) {
      if (inode.layout === DataLayout.CHUNK_BASED || inode.size !== 0) {
        throw new FormatError(`special file of type 0o${type.toString(8)} has size ${inode.size} or chunks`);
      }
      return;
    }
    if (inode.layout !== DataLayout.CHUNK_BASED) {
      this.inlineData(nid);
      return;
    }
    const refs = this.chunkRefs(nid);
    refs.forEach((ref, k) => {
      const blob = this.#blobs[ref.blobIndex];
      if (blob === undefined) {
        throw new FormatError(
          `chunk ${k} names device ${ref.blobIndex + 1}, the image has ${this.#blobs.length} blobs`,
        );
      }
      if (ref.ciIndex >= blob.chunkCount) {
        throw new FormatError(
          `chunk ${k} has ci index ${ref.ciIndex}, blob ${ref.blobIndex} has ${blob.chunkCount} chunks`,
        );
      }
      if (!this.#facts.tarfs && ref.blkaddr * this.blockSize >= blob.uncompressedSize) {
        throw new FormatError(
          `chunk ${k} has block address ${ref.blkaddr}, beyond blob ${ref.blobIndex} of ${blob.uncompressedSize} bytes`,
        );
      }
      if (this.#facts.tarfs) return;
      // Only the record's uncompressed_offset is compared: no whole record is decoded.
      const at = this.#chunkRecordAt(ref);
      if (at !== undefined) this.#checkBlkaddr(nid, k, ref, recordUncompressedOffset(this.#buf, at));
    });
  }

  /**
   * Check every record of the chunk table, reading its fields where they are (a decoded record
   * per entry would cost an object and a view of its id each; the checks are the same,
   * file_offset included, which must be a safe integer).
   */
  #validateChunkTable(): void {
    const chunkSize = this.extSuper.chunkSize;
    const { chunkTableOffset, chunkTableSize } = this.extSuper;
    const buf = this.#buf;
    for (let i = 0; i < chunkTableSize / CHUNK_RECORD_SIZE; i++) {
      const off = chunkTableOffset + i * CHUNK_RECORD_SIZE;
      const fail = (msg: string): never => {
        throw new FormatError(`Chunk table record ${i}: ${msg}`, off);
      };
      checkChunkRecordAt(buf, off);
      const blobIndex = buf.readUInt32LE(off + ChunkRecordAt.BLOB_INDEX);
      const compressedSize = buf.readUInt32LE(off + ChunkRecordAt.COMPRESSED_SIZE);
      const uncompressedSize = buf.readUInt32LE(off + ChunkRecordAt.UNCOMPRESSED_SIZE);
      const compressedOffset = recordCompressedOffset(buf, off);
      const uncompressedOffset = recordUncompressedOffset(buf, off);
      recordFileOffset(buf, off);
      const index = buf.readUInt32LE(off + ChunkRecordAt.INDEX);
      const blob = this.#blobs[blobIndex];
      if (blob === undefined) fail(`blob index ${blobIndex} is not below ${this.#blobs.length}`);
      else {
        if (index >= blob.chunkCount)
          fail(`chunk index ${index} is not below blob chunk_count ${blob.chunkCount}`);
        if (uncompressedSize > chunkSize)
          fail(`uncompressed size ${uncompressedSize} exceeds chunk size ${chunkSize}`);
        if (compressedOffset + compressedSize > blob.compressedSize) {
          fail(
            `compressed range [${compressedOffset}, +${compressedSize}) exceeds blob size ${blob.compressedSize}`,
          );
        }
        if (uncompressedOffset + uncompressedSize > blob.uncompressedSize) {
          fail(
            `uncompressed range [${uncompressedOffset}, +${uncompressedSize}) exceeds blob size ${blob.uncompressedSize}`,
          );
        }
      }
    }
  }

  #checkBlkaddr(ino: number, k: number, ref: ChunkRef, uncompressedOffset: number): void {
    if (uncompressedOffset !== ref.blkaddr * this.blockSize) {
      throw new FormatError(
        `Inode ${ino}: chunk ${k} has block address ${ref.blkaddr}, the chunk table says uncompressed_offset ${uncompressedOffset}`,
      );
    }
  }

  /** Every record of the chunk table, decoded now (not kept). */
  #chunkRecords(): ChunkInfo[] {
    const { chunkTableOffset, chunkTableSize } = this.extSuper;
    const records: ChunkInfo[] = [];
    for (let i = 0; i < chunkTableSize / CHUNK_RECORD_SIZE; i++) {
      records.push(decodeChunkRecord(this.#buf, chunkTableOffset + i * CHUNK_RECORD_SIZE));
    }
    return records;
  }

  /** Where in the bootstrap the chunk table's record for `ref` is (undefined: none). */
  #chunkRecordAt(ref: ChunkRef): number | undefined {
    const { chunkTableOffset, chunkTableSize } = this.extSuper;
    const buf = this.#buf;
    if (this.#chunkMap === undefined) {
      const map = new Map<number, number>();
      for (let i = 0; i < chunkTableSize / CHUNK_RECORD_SIZE; i++) {
        const off = chunkTableOffset + i * CHUNK_RECORD_SIZE;
        // Bounds-checked as a decoded record is (a truncated record throws the same error).
        checkChunkRecordAt(buf, off);
        const blobIndex = buf.readUInt32LE(off + ChunkRecordAt.BLOB_INDEX);
        const index = buf.readUInt32LE(off + ChunkRecordAt.INDEX);
        // Records no index entry can name (blob or ci index out of range) are left to validate().
        if (blobIndex >= this.#blobs.length || index >= CI_KEY_SPAN) continue;
        const key = blobIndex * CI_KEY_SPAN + index;
        if (!map.has(key)) map.set(key, i);
      }
      this.#chunkMap = map;
    }
    const i = this.#chunkMap.get(ref.blobIndex * CI_KEY_SPAN + ref.ciIndex);
    return i === undefined ? undefined : chunkTableOffset + i * CHUNK_RECORD_SIZE;
  }

  #chunkRecord(ref: ChunkRef): ChunkInfo | undefined {
    const at = this.#chunkRecordAt(ref);
    return at === undefined ? undefined : decodeChunkRecord(this.#buf, at);
  }

  /** Locate the data of a flat-layout inode, checking that it lies inside the bootstrap. */
  #flatData(nid: number, inode: V6Inode): FlatData {
    const bs = this.blockSize;
    const { size } = inode;
    if (inode.layout === DataLayout.CHUNK_BASED) {
      throw new FormatError(`Inode ${nid} of mode 0o${inode.mode.toString(8)} has a chunk-based layout`);
    }
    if (size > this.#buf.length) {
      throw new FormatError(`Inode ${nid} has ${size} bytes of data, more than the bootstrap holds`);
    }
    const inline = inode.layout === DataLayout.FLAT_INLINE;
    const fullBlocks = inline ? Math.floor(size / bs) : Math.ceil(size / bs);
    const tailSize = inline ? size % bs : 0;
    const blocksOff = inode.iu * bs;
    if (fullBlocks > 0 && blocksOff + fullBlocks * bs > this.#buf.length) {
      throw new FormatError(
        `Inode ${nid}: data blocks [${blocksOff}, +${fullBlocks * bs}) run past the bootstrap end`,
      );
    }
    let tailOff = -1;
    if (tailSize > 0) {
      tailOff = this.inodeOffset(nid) + inodeSize(inode) + xattrIbodySize(inode.xattrIcount);
      if (tailOff + tailSize > this.#buf.length) {
        throw new FormatError(
          `Inode ${nid}: inline data [${tailOff}, +${tailSize}) runs past the bootstrap end`,
        );
      }
    }
    return { size, blocksOff, fullBlocks, tailOff, tailSize };
  }

  #flatBytes(d: FlatData): Buffer {
    const blocks = this.#buf.subarray(
      d.blocksOff,
      d.blocksOff + Math.min(d.size, d.fullBlocks * this.blockSize),
    );
    if (d.tailSize === 0) return blocks;
    const tail = this.#buf.subarray(d.tailOff, d.tailOff + d.tailSize);
    return d.fullBlocks === 0 ? tail : Buffer.concat([blocks, tail]);
  }

  /** Block `b` of a flat-layout inode: its used bytes and their absolute offset. */
  #flatBlock(d: FlatData, b: number): { bytes: Buffer; base: number } {
    const bs = this.blockSize;
    if (b < d.fullBlocks) {
      const base = d.blocksOff + b * bs;
      return { bytes: this.#buf.subarray(base, base + Math.min(bs, d.size - b * bs)), base };
    }
    return { bytes: this.#buf.subarray(d.tailOff, d.tailOff + d.tailSize), base: d.tailOff };
  }

  #dirIndex(nid: number): DirIndex {
    const cached = this.#dirs.get(nid);
    if (cached !== undefined) return cached;
    const inode = this.inode(nid);
    if (!isDir(inode.mode)) throw new NydusError('ERR_INODE_TYPE', `Inode ${nid} is not a directory`);
    const data = this.#flatData(nid, inode);
    const blocks = blockCount(data);
    const cum = new Uint32Array(blocks + 1);
    for (let b = 0; b < blocks; b++) {
      const { bytes, base } = this.#flatBlock(data, b);
      cum[b + 1] = cum[b]! + dirBlockCount(bytes, base);
    }
    const partial: DirIndex = { data, cum, dots: [] };
    const dots: number[] = [];
    for (const name of [DOT, DOTDOT]) {
      const hit = this.#find(partial, name);
      if (hit !== undefined) dots.push(cum[hit.blockIndex]! + hit.index);
    }
    dots.sort((a, b) => a - b);
    const idx: DirIndex = { data, cum, dots };
    if (this.#dirs.size >= MAX_CACHED_DIRS) this.#dirs.delete(this.#dirs.keys().next().value!);
    this.#dirs.set(nid, idx);
    return idx;
  }

  #dirBlock(idx: DirIndex, b: number): DirBlock {
    const { bytes, base } = this.#flatBlock(idx.data, b);
    const blk = new DirBlock(bytes, base);
    return blk;
  }

  /** Block holding entry `pos` (over all entries): the last b with cum[b] <= pos. */
  #blockOf(idx: DirIndex, pos: number): number {
    let lo = 0;
    let hi = idx.cum.length - 2;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (idx.cum[mid]! <= pos) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  /** Binary search over blocks by their first and last names, then inside the block. */
  #find(idx: DirIndex, name: Buffer): { block: DirBlock; blockIndex: number; index: number } | undefined {
    let lo = 0;
    let hi = idx.cum.length - 2;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const blk = this.#dirBlock(idx, mid);
      if (Buffer.compare(name, blk.name(0)) < 0) {
        hi = mid - 1;
      } else if (Buffer.compare(name, blk.name(blk.count - 1)) > 0) {
        lo = mid + 1;
      } else {
        const i = blk.search(name);
        return i < 0 ? undefined : { block: blk, blockIndex: mid, index: i };
      }
    }
    return undefined;
  }

  #dirEntry(blk: DirBlock, i: number): DirEntry {
    const nid = blk.nid(i);
    const fileType = blk.fileType(i);
    let type = modeOfDirentType(fileType);
    if (type === undefined)
      throw new FormatError(`Dirent "${blk.name(i).toString()}" has unknown file_type ${fileType}`);
    if (type === 0) type = this.inode(nid).mode & S_IFMT;
    return { name: blk.name(i), ino: nid, type };
  }
}

/** Number of data blocks of a flat-layout inode. */
function blockCount(data: FlatData): number {
  return data.fullBlocks + (data.tailSize > 0 ? 1 : 0);
}

/**
 * Rethrow a NydusError with its message prefixed by where it happened, keeping its code (or, with
 * `asFormat`, as a FormatError unless the feature is merely unsupported: inside validate() a
 * dangling nid or a wrong inode type is a malformed image). A message that already starts with
 * "Inode <nid>" has that subject replaced instead of repeated.
 */
function rethrow(e: unknown, where: string, nid?: number, asFormat = false): never {
  if (!(e instanceof NydusError)) throw e;
  const subject = `Inode ${nid}`;
  const message =
    nid !== undefined && e.message.startsWith(`${subject}: `)
      ? `${where}: ${e.message.slice(subject.length + 2)}`
      : nid !== undefined && e.message.startsWith(`${subject} `)
        ? `${where} ${e.message.slice(subject.length + 1)}`
        : `${where}: ${e.message}`;
  throw e.code === 'ERR_FORMAT' || (asFormat && e.code !== 'ERR_UNSUPPORTED')
    ? new FormatError(message, undefined, { cause: e })
    : new NydusError(e.code, message, { cause: e });
}
