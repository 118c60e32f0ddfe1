import { FormatError, NydusError } from '../../errors/errors.js';
import { CHUNK_RECORD_SIZE, decodeChunkRecord } from '../chunk-record.js';
import {
  ChunkFlag,
  compressorOfFlags,
  digesterOfFlags,
  InodeFlag,
  isDir,
  isReg,
  isSymlink,
  isValidFileType,
  Limits,
  S_IFMT,
  SuperFlag,
} from '../flags.js';
import type {
  BlobInfo,
  Bootstrap,
  ChunkInfo,
  DirEntry,
  InodeAttr,
  SuperblockInfo,
  XattrPair,
} from '../model.js';
import { decodeV5BlobTable, decodeV5ExtBlobTable, type V5ExtBlobEntry } from './blob-table.js';
import { decodeV5InodeRecord, type V5InodeRecord } from './inode.js';
import { v5InodeDigest } from './inode-digest.js';
import {
  checkV5SuperblockLayout,
  decodeV5Superblock,
  RAFS_V5_SUPERBLOCK_SIZE,
  v5SuperblockFields,
  type V5Superblock,
} from './superblock.js';
import { decodeV5Xattrs } from './xattr.js';

export { RAFS_V5_MAGIC } from './superblock.js';

/** Inode table slot values (record offset / 8) must point past the superblock. */
const MIN_SLOT_VALUE = RAFS_V5_SUPERBLOCK_SIZE / 8;
const ROOT_INDEX = 1;
/** Inode flags of rafs-format.md 1.3; any other bit is rejected. */
const INODE_FLAGS_KNOWN = InodeFlag.SYMLINK | InodeFlag.HARDLINK | InodeFlag.XATTR | InodeFlag.HAS_HOLE;
/** Chunk flags of rafs-format.md 1.4 that a v5 image may carry (no encryption or batches in v5). */
const V5_CHUNK_FLAGS = ChunkFlag.COMPRESSED | ChunkFlag.HOLECHUNK | ChunkFlag.HAS_CRC32;
const SLASH = 0x2f;

/**
 * A RAFS v5 bootstrap held in memory (rafs-format.md 2). `parse` checks the superblock and the
 * table layout and decodes the (small) blob tables; inode records are decoded on demand, each
 * one checked on its own (rafs-format.md 2.14) when it is loaded. `validate` walks the whole
 * tree and adds the checks that need more than one record: directory order, parent links,
 * reachability, hardlink consistency and the inode digests.
 *
 * Indexes vs inode numbers: the inode table is indexed by "index" (1 = root). Every tree entry,
 * every hardlink occurrence included, has its own index and record; all occurrences of a
 * hardlinked file carry the first occurrence's index as `ino`. So the inode number `ino` is the
 * record at index `ino`, and a record at index i with i_ino != i is a later hardlink occurrence.
 *
 * The buffer is kept, not copied; names, targets, digests and chunk ids returned are views of it.
 */
export class RafsV5Bootstrap implements Bootstrap {
  readonly superblock: SuperblockInfo;
  readonly rootIno = ROOT_INDEX;
  readonly #buf: Buffer;
  readonly #sb: V5Superblock;
  readonly #ext: readonly V5ExtBlobEntry[];
  #blobs: BlobInfo[];

  private constructor(buf: Buffer, sb: V5Superblock, blobs: BlobInfo[], ext: readonly V5ExtBlobEntry[]) {
    this.#buf = buf;
    this.#sb = sb;
    this.#blobs = blobs;
    this.#ext = ext;
    this.superblock = {
      version: 5,
      flags: sb.flags,
      chunkSize: sb.blockSize,
      compressor: compressorOfFlags(sb.flags),
      digester: digesterOfFlags(sb.flags),
      explicitUidGid: (sb.flags & SuperFlag.EXPLICIT_UID_GID) !== 0,
      hasXattr: (sb.flags & SuperFlag.HAS_XATTR) !== 0,
      inodesCount: sb.inodesCount,
      fields: v5SuperblockFields(sb),
    };
  }

  /** Check the superblock and table layout, decode the blob tables; nothing else is read. */
  static parse(buf: Buffer): RafsV5Bootstrap {
    const sb = decodeV5Superblock(buf);
    checkV5SuperblockLayout(sb, buf.length);
    const entries = decodeV5BlobTable(buf, sb.blobTableOffset, sb.blobTableSize);
    const ext =
      sb.extendedBlobTableEntries === 0
        ? []
        : decodeV5ExtBlobTable(buf, sb.extendedBlobTableOffset, sb.extendedBlobTableEntries);
    if (ext.length > 0 && ext.length !== entries.length) {
      throw new FormatError(
        `Extended blob table has ${ext.length} entries but the blob table has ${entries.length} blobs`,
        sb.extendedBlobTableOffset,
      );
    }
    const compressor = compressorOfFlags(sb.flags);
    const digester = digesterOfFlags(sb.flags);
    const blobs = entries.map((e, index): BlobInfo => {
      const x = ext[index];
      return {
        index,
        blobId: e.blobId,
        chunkSize: sb.blockSize,
        chunkCount: x?.chunkCount ?? 0,
        compressor,
        digester,
        features: x?.features ?? 0,
        compressedSize: x?.compressedSize ?? 0,
        uncompressedSize: x?.uncompressedSize ?? 0,
        readaheadOffset: e.readaheadOffset,
        readaheadSize: e.readaheadSize,
        ciCompressor: 'none',
        ciOffset: 0,
        ciCompressedSize: 0,
        ciUncompressedSize: 0,
        tocSize: 0,
        tocDigest: Buffer.alloc(32),
        metaDigest: Buffer.alloc(32),
        metaSize: 0,
        cipher: 0,
        deviceBlocks: 0,
        mappedBlkaddr: 0,
      };
    });
    return new RafsV5Bootstrap(buf, sb, blobs, ext);
  }

  get blobs(): readonly BlobInfo[] {
    return this.#blobs;
  }

  /** The decoded superblock, for tools and writers that need every field. */
  get rawSuperblock(): V5Superblock {
    return this.#sb;
  }

  /** Number of inode table slots: indexes run 1..indexCount. */
  get indexCount(): number {
    return this.#sb.inodeTableEntries;
  }

  /** Offset of the record at `index` from the inode table (ERR_NOT_FOUND outside 1..N). */
  recordOffset(index: number): number {
    if (!Number.isInteger(index) || index < 1 || index > this.#sb.inodeTableEntries) {
      throw new NydusError(
        'ERR_NOT_FOUND',
        `Inode index ${index} is outside the inode table 1..${this.#sb.inodeTableEntries}`,
      );
    }
    const slotAt = this.#sb.inodeTableOffset + (index - 1) * 4;
    const slot = this.#buf.readUInt32LE(slotAt);
    if (slot <= MIN_SLOT_VALUE) {
      throw new FormatError(`Inode ${index}: inode table slot ${slot} points into the superblock`, slotAt);
    }
    return slot * 8;
  }

  /** The record at `index`, located and checked on its own (rafs-format.md 2.14). */
  record(index: number): V5InodeRecord {
    const what = `Inode ${index}`;
    const rec = decodeV5InodeRecord(this.#buf, this.recordOffset(index), what);
    this.#checkRecord(index, rec);
    return rec;
  }

  /**
   * Attributes as stored. uid/gid are 0 in images without EXPLICIT_UID_GID; substituting the
   * daemon's own ids then is the caller's business (SuperblockInfo.explicitUidGid).
   */
  getAttr(ino: number): InodeAttr {
    const i = this.#inode(ino).inode;
    return {
      ino: i.ino,
      mode: i.mode,
      uid: i.uid,
      gid: i.gid,
      size: i.size,
      blocks: i.blocks,
      nlink: i.nlink,
      rdev: i.rdev,
      mtime: i.mtime,
      mtimeNsec: i.mtimeNsec,
    };
  }

  lookup(dir: number, name: Buffer): DirEntry | undefined {
    const d = this.#dir(dir).inode;
    let lo = 0;
    let hi = d.childCount - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const child = this.record(d.childIndex + mid);
      const cmp = Buffer.compare(child.name, name);
      if (cmp === 0) return dirEntry(child);
      if (cmp < 0) lo = mid + 1;
      else hi = mid - 1;
    }
    return undefined;
  }

  childCount(dir: number): number {
    return this.#dir(dir).inode.childCount;
  }

  readdir(dir: number, start = 0, limit = Infinity): DirEntry[] {
    if (
      !Number.isInteger(start) ||
      start < 0 ||
      !(limit >= 0) ||
      (!Number.isInteger(limit) && limit !== Infinity)
    ) {
      throw new NydusError('ERR_INVALID_ARG', `Bad readdir range: start ${start}, limit ${limit}`);
    }
    const d = this.#dir(dir).inode;
    const end = Math.min(d.childCount, start + limit);
    const out: DirEntry[] = [];
    for (let k = start; k < end; k++) out.push(dirEntry(this.record(d.childIndex + k)));
    return out;
  }

  readlink(ino: number): Buffer {
    const rec = this.#inode(ino);
    if (!isSymlink(rec.inode.mode) || rec.symlink === undefined) {
      throw new NydusError('ERR_INODE_TYPE', `Inode ${ino} is not a symlink`);
    }
    return rec.symlink;
  }

  xattrs(ino: number): XattrPair[] {
    return this.#xattrsOf(ino, this.#inode(ino));
  }

  chunks(ino: number): ChunkInfo[] {
    return this.#chunksOf(ino, this.#inode(ino));
  }

  prefetchInos(): number[] {
    const out: number[] = [];
    for (let k = 0; k < this.#sb.prefetchTableEntries; k++) {
      const ino = this.#buf.readUInt32LE(this.#sb.prefetchTableOffset + k * 4);
      if (ino === 0) break;
      out.push(ino);
    }
    return out;
  }

  /**
   * Chunk records of every regular-file record in index order (hardlink occurrences have their
   * own records, so their chunks appear once per occurrence). Inode table slots that point at a
   * record already walked are skipped: upstream images never share a record between indexes,
   * and a crafted table doing so would otherwise cost time quadratic in the file size.
   */
  allChunks(): ChunkInfo[] {
    const out: ChunkInfo[] = [];
    const seen = new Set<number>();
    for (let index = 1; index <= this.#sb.inodeTableEntries; index++) {
      const offset = this.recordOffset(index);
      if (seen.has(offset)) continue;
      seen.add(offset);
      const rec = this.record(index);
      for (const c of this.#chunksOf(index, rec)) out.push(c);
    }
    return out;
  }

  setBlobId(index: number, blobId: string): void {
    const old = this.#blobs[index];
    if (!Number.isInteger(index) || old === undefined) {
      throw new NydusError(
        'ERR_NOT_FOUND',
        `Blob index ${index} is outside the blob table of ${this.#blobs.length} blobs`,
      );
    }
    if (blobId.length === 0 || blobId.includes('\0')) {
      throw new NydusError('ERR_INVALID_ARG', 'A blob id must be non-empty and free of NUL characters');
    }
    this.#blobs = this.#blobs.map((b, i) => (i === index ? { ...b, blobId } : b));
  }

  /**
   * Walk the tree from the root with an explicit stack. Each index is entered once (a second
   * arrival is an error), and indexes strictly grow from a directory to its children, so the
   * walk is linear in the size of the bootstrap and cannot loop.
   */
  validate(): void {
    const visited = new Uint8Array(this.#sb.inodeTableEntries + 1);
    const stack: [number, V5InodeRecord][] = [[ROOT_INDEX, this.record(ROOT_INDEX)]];
    visited[ROOT_INDEX] = 1;
    for (let top = stack.pop(); top !== undefined; top = stack.pop()) {
      const [index, rec] = top;
      this.#validateRecord(index, rec, visited, stack);
    }
  }

  #validateRecord(
    index: number,
    rec: V5InodeRecord,
    visited: Uint8Array,
    stack: [number, V5InodeRecord][],
  ): void {
    const i = rec.inode;
    const fail = (msg: string): never => {
      throw new FormatError(`Inode ${index}: ${msg}`, rec.offset);
    };
    let parts: Buffer[] = [];
    if (isDir(i.mode)) {
      let prev: Buffer | undefined;
      for (let k = 0; k < i.childCount; k++) {
        const ci = i.childIndex + k;
        const child = this.record(ci);
        const shown = JSON.stringify(child.name.toString('latin1'));
        if (visited[ci] === 1) fail(`child ${ci} ${shown} is also listed by another directory`);
        visited[ci] = 1;
        if (child.inode.parent !== i.ino) {
          fail(`child ${ci} ${shown} names parent ${child.inode.parent} instead of ${i.ino}`);
        }
        checkEntryName(child.name, () => fail(`child ${ci} has an invalid name ${shown}`));
        if (prev !== undefined && Buffer.compare(prev, child.name) >= 0) {
          fail(
            `child names are not strictly ascending: ${JSON.stringify(prev.toString('latin1'))} before ${shown}`,
          );
        }
        prev = child.name;
        parts.push(child.inode.digest);
        stack.push([ci, child]);
      }
    } else if (isReg(i.mode)) {
      parts = this.#chunksOf(index, rec).map((c) => c.id);
      if (i.ino !== index) {
        // A later occurrence of a hardlinked file: the same inode as the first occurrence.
        const first = this.record(i.ino).inode;
        if (first.ino !== i.ino || !isReg(first.mode)) {
          fail(`hardlink of inode ${i.ino}, but the record at index ${i.ino} is not that regular file`);
        }
        if (
          !first.digest.equals(i.digest) ||
          first.size !== i.size ||
          first.nlink !== i.nlink ||
          i.nlink < 2
        ) {
          fail(`hardlink of inode ${i.ino} differs from it in digest, size or nlink`);
        }
      }
    } else if (rec.symlink !== undefined) {
      parts = [rec.symlink];
    }
    this.#xattrsOf(index, rec);
    const want = v5InodeDigest(this.superblock.digester, i.mode, parts);
    if (!want.equals(i.digest)) {
      fail(`digest ${i.digest.toString('hex')} does not match the computed ${want.toString('hex')}`);
    }
  }

  /** The record of inode number `ino`: the record at index `ino`, which must carry that ino. */
  #inode(ino: number): V5InodeRecord {
    const rec = this.record(ino);
    if (rec.inode.ino !== ino) {
      throw new NydusError(
        'ERR_NOT_FOUND',
        `Inode ${ino} not found: index ${ino} is a hardlink of inode ${rec.inode.ino}`,
      );
    }
    return rec;
  }

  #dir(ino: number): V5InodeRecord {
    const rec = this.#inode(ino);
    if (!isDir(rec.inode.mode)) throw new NydusError('ERR_INODE_TYPE', `Inode ${ino} is not a directory`);
    return rec;
  }

  #xattrsOf(index: number, rec: V5InodeRecord): XattrPair[] {
    if (rec.xattrOffset === undefined) return [];
    return decodeV5Xattrs(this.#buf, rec.xattrOffset, this.#buf.length, `Inode ${index}`).pairs;
  }

  /** Decode and check the chunk records of a regular file, in file order. */
  #chunksOf(index: number, rec: V5InodeRecord): ChunkInfo[] {
    const i = rec.inode;
    const chunkSize = this.#sb.blockSize;
    const hasHole = (i.flags & InodeFlag.HAS_HOLE) !== 0;
    const out: ChunkInfo[] = [];
    for (let k = 0; k < rec.chunkCount; k++) {
      const at = rec.chunksOffset + k * CHUNK_RECORD_SIZE;
      const c = decodeChunkRecord(this.#buf, at);
      const fail = (msg: string): never => {
        throw new FormatError(`Inode ${index}: chunk ${k}: ${msg}`, at);
      };
      const blob = this.#blobs[c.blobIndex];
      if (blob === undefined) fail(`blob_index ${c.blobIndex} is out of range (${this.#blobs.length} blobs)`);
      if ((c.flags & ~V5_CHUNK_FLAGS) !== 0) {
        fail(`flags 0x${c.flags.toString(16)} are not valid in a RAFS v5 chunk`);
      }
      if ((c.flags & ChunkFlag.COMPRESSED) !== 0 && this.superblock.compressor === 'none') {
        fail('chunk is marked compressed but the image compressor is none');
      }
      if (hasHole) {
        if (c.fileOffset % chunkSize !== 0 || c.fileOffset >= i.size) {
          fail(`file_offset ${c.fileOffset} is not a chunk boundary inside the file of ${i.size} bytes`);
        }
      } else if (c.fileOffset !== k * chunkSize) {
        fail(`file_offset ${c.fileOffset} is not ${k * chunkSize}`);
      }
      const expected = Math.min(chunkSize, i.size - c.fileOffset);
      if (c.uncompressedSize !== expected) fail(`uncompressed_size ${c.uncompressedSize} is not ${expected}`);
      if ((c.flags & ChunkFlag.COMPRESSED) === 0 && c.compressedSize !== c.uncompressedSize) {
        fail(
          `uncompressed chunk has compressed_size ${c.compressedSize} and uncompressed_size ${c.uncompressedSize}`,
        );
      }
      if (c.compressedSize === 0) fail('compressed_size is 0');
      const x = this.#ext[c.blobIndex];
      if (x !== undefined) {
        if (c.index >= x.chunkCount) {
          fail(`chunk index ${c.index} is not below the blob's chunk_count ${x.chunkCount}`);
        }
        if (c.compressedOffset + c.compressedSize > x.compressedSize) {
          fail(
            `compressed range ends at ${c.compressedOffset + c.compressedSize}, past the blob's ${x.compressedSize}`,
          );
        }
        if (c.uncompressedOffset + c.uncompressedSize > x.uncompressedSize) {
          fail(
            `uncompressed range ends at ${c.uncompressedOffset + c.uncompressedSize}, past the blob's ${x.uncompressedSize}`,
          );
        }
      }
      out.push(c);
    }
    if (hasHole) {
      out.sort((a, b) => a.fileOffset - b.fileOffset);
      for (let k = 1; k < out.length; k++) {
        if (out[k]!.fileOffset === out[k - 1]!.fileOffset) {
          throw new FormatError(
            `Inode ${index}: two chunks at file_offset ${out[k]!.fileOffset}`,
            rec.chunksOffset,
          );
        }
      }
    }
    return out;
  }

  /** The checks of rafs-format.md 2.14 that need only this record and the superblock. */
  #checkRecord(index: number, rec: V5InodeRecord): void {
    const i = rec.inode;
    const n = this.#sb.inodeTableEntries;
    const fail = (msg: string): never => {
      throw new FormatError(`Inode ${index}: ${msg}`, rec.offset);
    };
    if (i.ino === 0) fail('ino is 0');
    if (i.ino > n) fail(`ino ${i.ino} is outside the inode table 1..${n}`);
    if (!isValidFileType(i.mode)) fail(`mode 0o${i.mode.toString(8)} is not a file type`);
    // Compared whole: flags is a u64 and JS bitwise operators only see its low 32 bits.
    if ((i.flags & INODE_FLAGS_KNOWN) !== i.flags) fail(`flags 0x${i.flags.toString(16)} have unknown bits`);
    if (i.nlink === 0) fail('nlink is 0');
    if (i.nameSize === 0 || i.nameSize > Limits.MAX_NAME) {
      fail(`name_size ${i.nameSize} is out of range 1..${Limits.MAX_NAME}`);
    }
    const regular = isReg(i.mode);
    if (i.ino !== index) {
      if (!regular) fail(`ino ${i.ino} differs from its index, which only hardlinked regular files may do`);
      if (i.ino > index) fail(`hardlink ino ${i.ino} is not an earlier index`);
    }
    const hardlink = regular && (i.ino !== index || i.nlink > 1 || (i.flags & InodeFlag.HARDLINK) !== 0);
    if (index === ROOT_INDEX) {
      if (!isDir(i.mode)) fail(`root mode 0o${i.mode.toString(8)} is not a directory`);
      if (i.parent !== 0) fail(`root has parent ${i.parent}, expected 0`);
    } else {
      if (i.parent === 0) fail('parent is 0 for a non-root inode');
      if (!hardlink && i.parent >= i.ino) fail(`parent ${i.parent} is not smaller than ino ${i.ino}`);
      if (i.parent > n) fail(`parent ${i.parent} is outside the inode table 1..${n}`);
    }
    if (isSymlink(i.mode)) {
      if (i.symlinkSize === 0 || i.symlinkSize > Limits.MAX_SYMLINK) {
        fail(`symlink_size ${i.symlinkSize} is out of range 1..${Limits.MAX_SYMLINK}`);
      }
      if (i.size !== i.symlinkSize) {
        fail(`size ${i.size} of a symlink differs from its symlink_size ${i.symlinkSize}`);
      }
    } else if (i.symlinkSize !== 0) {
      fail(`symlink_size ${i.symlinkSize} on an inode that is not a symlink`);
    }
    if (isDir(i.mode) && i.childCount > 0) {
      const last = i.childIndex + i.childCount - 1;
      if (i.childIndex <= index && index <= last) {
        fail(`directory lists itself as a child (children are indexes ${i.childIndex}..${last})`);
      }
      if (i.childIndex <= index) {
        fail(
          `child_index ${i.childIndex} is not greater than its index ${index}, so it would list an ancestor or an earlier entry`,
        );
      }
      if (last > n) fail(`children ${i.childIndex}..${last} run past the inode table 1..${n}`);
    }
    if (regular) {
      const expected = Math.ceil(i.size / this.#sb.blockSize);
      const hasHole = (i.flags & InodeFlag.HAS_HOLE) !== 0;
      if (hasHole ? i.childCount > expected : i.childCount !== expected) {
        fail(
          `child_count ${i.childCount} does not fit ${expected} chunks of a ${i.size}-byte file with chunk size ${this.#sb.blockSize}`,
        );
      }
    }
  }
}

function dirEntry(rec: V5InodeRecord): DirEntry {
  return { name: rec.name, ino: rec.inode.ino, type: rec.inode.mode & S_IFMT };
}

/** A directory entry name: not "." or "..", no "/" and no NUL (name_size is checked per record). */
function checkEntryName(name: Buffer, fail: () => never): void {
  if (name.includes(SLASH) || name.includes(0)) fail();
  if (name.length <= 2 && name.every((b) => b === 0x2e)) fail();
}
