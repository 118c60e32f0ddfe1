import { FormatError } from '../../errors/errors.js';
import { CHUNK_RECORD_SIZE, encodeChunkRecord } from '../chunk-record.js';
import { InodeFlag, isReg } from '../flags.js';
import type { ChunkInfo, XattrPair } from '../model.js';
import { align, readU64 } from '../../util/cursor.js';
import { encodeV5Xattrs, v5XattrTableEnd } from './xattr.js';

/**
 * RAFS v5 inode record (rafs-format.md 2.6): a 128-byte fixed part, then the name, the symlink
 * target, the xattr table and the chunk records.
 *
 * | off | type     | field        | notes                                                 |
 * |-----|----------|--------------|-------------------------------------------------------|
 * | 0   | 32 bytes | digest       | inode digest (inode-digest.ts)                        |
 * | 32  | u64      | parent       | inode number of the parent directory; 0 for the root  |
 * | 40  | u64      | ino          | inode number; hardlink occurrences share the first's  |
 * | 48  | u32      | uid          |                                                       |
 * | 52  | u32      | gid          |                                                       |
 * | 56  | u32      | projid       |                                                       |
 * | 60  | u32      | mode         | full st_mode                                          |
 * | 64  | u64      | size         |                                                       |
 * | 72  | u64      | blocks       | 512-byte units                                        |
 * | 80  | u64      | flags        | InodeFlag                                             |
 * | 88  | u32      | nlink        |                                                       |
 * | 92  | u32      | child_index  | directories: index of the first child                 |
 * | 96  | u32      | child_count  | directories: children; regular files: chunk records   |
 * | 100 | u16      | name_size    |                                                       |
 * | 102 | u16      | symlink_size |                                                       |
 * | 104 | u32      | rdev         |                                                       |
 * | 108 | u32      | mtime_nsec   |                                                       |
 * | 112 | u64      | mtime        | seconds                                               |
 * | 120 | 8 bytes  | reserved     | zero                                                  |
 *
 * After the fixed part: name bytes padded to align8(name_size); when symlink_size > 0 the target
 * padded to align8(symlink_size); when flags has XATTR the xattr table (xattr.ts); for regular
 * files child_count chunk records of 80 bytes in file order.
 */
export const V5_INODE_SIZE = 128;
export const V5_INODE_DIGEST_SIZE = 32;

export interface V5InodeFixed {
  readonly digest: Buffer;
  readonly parent: number;
  readonly ino: number;
  readonly uid: number;
  readonly gid: number;
  readonly projid: number;
  readonly mode: number;
  readonly size: number;
  readonly blocks: number;
  readonly flags: number;
  readonly nlink: number;
  readonly childIndex: number;
  readonly childCount: number;
  readonly nameSize: number;
  readonly symlinkSize: number;
  readonly rdev: number;
  readonly mtimeNsec: number;
  readonly mtime: number;
}

/** Decode the fixed part at `off`; the digest is a view of `buf`. */
export function decodeV5InodeFixed(buf: Buffer, off: number): V5InodeFixed {
  if (off < 0 || off + V5_INODE_SIZE > buf.length) {
    throw new FormatError(`Truncated inode record: ${V5_INODE_SIZE} bytes needed`, off);
  }
  return {
    digest: buf.subarray(off, off + V5_INODE_DIGEST_SIZE),
    parent: readU64(buf, off + 32, 'inode parent'),
    ino: readU64(buf, off + 40, 'inode ino'),
    uid: buf.readUInt32LE(off + 48),
    gid: buf.readUInt32LE(off + 52),
    projid: buf.readUInt32LE(off + 56),
    mode: buf.readUInt32LE(off + 60),
    size: readU64(buf, off + 64, 'inode size'),
    blocks: readU64(buf, off + 72, 'inode blocks'),
    flags: readU64(buf, off + 80, 'inode flags'),
    nlink: buf.readUInt32LE(off + 88),
    childIndex: buf.readUInt32LE(off + 92),
    childCount: buf.readUInt32LE(off + 96),
    nameSize: buf.readUInt16LE(off + 100),
    symlinkSize: buf.readUInt16LE(off + 102),
    rdev: buf.readUInt32LE(off + 104),
    mtimeNsec: buf.readUInt32LE(off + 108),
    mtime: readU64(buf, off + 112, 'inode mtime'),
  };
}

/** Encode the fixed part into `buf` at `off` (a new 128-byte buffer by default); reserved is zero. */
export function encodeV5InodeFixed(inode: V5InodeFixed, buf = Buffer.alloc(V5_INODE_SIZE), off = 0): Buffer {
  if (inode.digest.length !== V5_INODE_DIGEST_SIZE) {
    throw new FormatError(`Inode digest must be ${V5_INODE_DIGEST_SIZE} bytes, got ${inode.digest.length}`);
  }
  inode.digest.copy(buf, off);
  buf.writeBigUInt64LE(BigInt(inode.parent), off + 32);
  buf.writeBigUInt64LE(BigInt(inode.ino), off + 40);
  buf.writeUInt32LE(inode.uid, off + 48);
  buf.writeUInt32LE(inode.gid, off + 52);
  buf.writeUInt32LE(inode.projid, off + 56);
  buf.writeUInt32LE(inode.mode, off + 60);
  buf.writeBigUInt64LE(BigInt(inode.size), off + 64);
  buf.writeBigUInt64LE(BigInt(inode.blocks), off + 72);
  buf.writeBigUInt64LE(BigInt(inode.flags), off + 80);
  buf.writeUInt32LE(inode.nlink, off + 88);
  buf.writeUInt32LE(inode.childIndex, off + 92);
  buf.writeUInt32LE(inode.childCount, off + 96);
  buf.writeUInt16LE(inode.nameSize, off + 100);
  buf.writeUInt16LE(inode.symlinkSize, off + 102);
  buf.writeUInt32LE(inode.rdev >>> 0, off + 104);
  buf.writeUInt32LE(inode.mtimeNsec, off + 108);
  buf.writeBigUInt64LE(BigInt(inode.mtime), off + 112);
  buf.fill(0, off + 120, off + V5_INODE_SIZE);
  return buf;
}

/** Where the parts of one inode record are; every range has been checked to lie inside the file. */
export interface V5InodeRecord {
  /** Absolute offset of the fixed part. */
  readonly offset: number;
  readonly inode: V5InodeFixed;
  readonly name: Buffer;
  /** Target bytes when symlink_size > 0. */
  readonly symlink: Buffer | undefined;
  /** Offset of the xattr table when the inode has the XATTR flag. */
  readonly xattrOffset: number | undefined;
  /** Offset of the first chunk record (meaningful when `chunkCount` > 0). */
  readonly chunksOffset: number;
  /** child_count for regular files, 0 for everything else. */
  readonly chunkCount: number;
  /** Offset just past the record. */
  readonly end: number;
}

/**
 * Decode the fixed part at `off` and locate the variable parts, checking that each lies inside
 * `buf`. `what` names the record in error messages (e.g. "Inode 42").
 */
export function decodeV5InodeRecord(buf: Buffer, off: number, what = 'Inode record'): V5InodeRecord {
  if (off < 0 || off + V5_INODE_SIZE > buf.length) {
    throw new FormatError(
      `${what}: record at offset ${off} is outside the bootstrap of ${buf.length} bytes`,
      off,
    );
  }
  const inode = decodeV5InodeFixed(buf, off);
  const limit = buf.length;
  let pos = off + V5_INODE_SIZE;
  const nameEnd = pos + inode.nameSize;
  if (pos + align(inode.nameSize, 8) > limit) {
    throw new FormatError(`${what}: name of ${inode.nameSize} bytes runs past the end of the bootstrap`, pos);
  }
  const name = buf.subarray(pos, nameEnd);
  pos += align(inode.nameSize, 8);
  let symlink: Buffer | undefined;
  if (inode.symlinkSize > 0) {
    if (pos + align(inode.symlinkSize, 8) > limit) {
      throw new FormatError(
        `${what}: symlink target of ${inode.symlinkSize} bytes runs past the end of the bootstrap`,
        pos,
      );
    }
    symlink = buf.subarray(pos, pos + inode.symlinkSize);
    pos += align(inode.symlinkSize, 8);
  }
  let xattrOffset: number | undefined;
  if ((inode.flags & InodeFlag.XATTR) !== 0) {
    xattrOffset = pos;
    pos = v5XattrTableEnd(buf, pos, limit, what);
  }
  const chunkCount = isReg(inode.mode) ? inode.childCount : 0;
  const chunksOffset = pos;
  // Compare before multiplying out: child_count is an untrusted u32.
  if (chunkCount > (limit - pos) / CHUNK_RECORD_SIZE) {
    throw new FormatError(`${what}: ${chunkCount} chunk records run past the end of the bootstrap`, pos);
  }
  pos += chunkCount * CHUNK_RECORD_SIZE;
  return { offset: off, inode, name, symlink, xattrOffset, chunksOffset, chunkCount, end: pos };
}

/** The parts of a record to encode; sizes and flags in `inode` must agree with the parts. */
export interface V5InodeRecordParts {
  readonly inode: V5InodeFixed;
  readonly name: Buffer;
  readonly symlink?: Buffer;
  readonly xattrs?: readonly XattrPair[];
  readonly chunks?: readonly ChunkInfo[];
}

/** Encode a whole record: fixed part, padded name and target, xattr table, chunk records. */
export function encodeV5InodeRecord(parts: V5InodeRecordParts): Buffer {
  const { inode, name } = parts;
  const symlink = parts.symlink ?? Buffer.alloc(0);
  const chunks = parts.chunks ?? [];
  if (name.length !== inode.nameSize) {
    throw new FormatError(`Inode ${inode.ino}: name of ${name.length} bytes but name_size ${inode.nameSize}`);
  }
  if (symlink.length !== inode.symlinkSize) {
    throw new FormatError(
      `Inode ${inode.ino}: target of ${symlink.length} bytes but symlink_size ${inode.symlinkSize}`,
    );
  }
  const hasXattrFlag = (inode.flags & InodeFlag.XATTR) !== 0;
  if (hasXattrFlag !== (parts.xattrs !== undefined)) {
    throw new FormatError(`Inode ${inode.ino}: the XATTR flag and the presence of xattrs disagree`);
  }
  const expectedChunks = isReg(inode.mode) ? inode.childCount : 0;
  if (chunks.length !== expectedChunks) {
    throw new FormatError(`Inode ${inode.ino}: ${chunks.length} chunks given but ${expectedChunks} expected`);
  }
  const xattrTable = parts.xattrs === undefined ? Buffer.alloc(0) : encodeV5Xattrs(parts.xattrs);
  const size =
    V5_INODE_SIZE +
    align(name.length, 8) +
    align(symlink.length, 8) +
    xattrTable.length +
    chunks.length * CHUNK_RECORD_SIZE;
  const buf = Buffer.alloc(size);
  encodeV5InodeFixed(inode, buf, 0);
  let pos = V5_INODE_SIZE;
  name.copy(buf, pos);
  pos += align(name.length, 8);
  symlink.copy(buf, pos);
  pos += align(symlink.length, 8);
  pos += xattrTable.copy(buf, pos);
  for (const c of chunks) {
    encodeChunkRecord(c, buf, pos);
    pos += CHUNK_RECORD_SIZE;
  }
  return buf;
}
