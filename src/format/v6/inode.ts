import { FormatError, NydusError } from '../../errors/errors.js';
import { readU64 } from '../../util/cursor.js';
import { isValidFileType } from '../flags.js';
import { need, putU16, putU32, putU64, putZeros } from './bytes.js';

/**
 * RAFS v6 inodes (rafs-format.md 3.8): EROFS compact (32 bytes) and extended (64 bytes) inodes,
 * at `meta_blkaddr * block_size + nid * 32`.
 *
 * `i_format` (u16): bit 0 = 0 compact / 1 extended; bits 1-3 = data layout: 0 FLAT_PLAIN,
 * 2 FLAT_INLINE, 4 CHUNK_BASED (1 and 3 are EROFS compression, unsupported); other bits unknown.
 *
 * Extended inode, 64 bytes:
 *
 * | off | type     | field          |
 * |-----|----------|----------------|
 * | 0   | u16      | i_format       |
 * | 2   | u16      | i_xattr_icount |
 * | 4   | u16      | i_mode         |
 * | 6   | u16      | reserved       |
 * | 8   | u64      | i_size         |
 * | 16  | u32      | i_u            |
 * | 20  | u32      | i_ino          |
 * | 24  | u32      | i_uid          |
 * | 28  | u32      | i_gid          |
 * | 32  | u64      | i_mtime        |
 * | 40  | u32      | i_mtime_nsec   |
 * | 44  | u32      | i_nlink        |
 * | 48  | 16 bytes | reserved       |
 *
 * Compact inode, 32 bytes (no mtime, no rdev: readers report 0):
 *
 * | off | type    | field          |
 * |-----|---------|----------------|
 * | 0   | u16     | i_format       |
 * | 2   | u16     | i_xattr_icount |
 * | 4   | u16     | i_mode         |
 * | 6   | u16     | i_nlink        |
 * | 8   | u32     | i_size         |
 * | 12  | u32     | reserved       |
 * | 16  | u32     | i_u            |
 * | 20  | u32     | i_ino          |
 * | 24  | u16     | i_uid          |
 * | 26  | u16     | i_gid          |
 * | 28  | 4 bytes | reserved       |
 *
 * `i_u`: directory/symlink/flat file: first data block; chunk-based file: chunk format word
 * (chunk-index.ts); char/block device, fifo, socket: rdev.
 */

/** A nid counts 32-byte slots from the start of the meta area. */
export const INODE_SLOT_SIZE = 32;
export const COMPACT_INODE_SIZE = 32;
export const EXTENDED_INODE_SIZE = 64;

const FORMAT_EXTENDED = 0x1;
const FORMAT_LAYOUT_SHIFT = 1;
const FORMAT_LAYOUT_MASK = 0x7;
const FORMAT_KNOWN = 0xf;

export const DataLayout = {
  FLAT_PLAIN: 0,
  FLAT_INLINE: 2,
  CHUNK_BASED: 4,
} as const;
export type DataLayout = (typeof DataLayout)[keyof typeof DataLayout];

export interface V6Inode {
  readonly extended: boolean;
  readonly layout: DataLayout;
  readonly xattrIcount: number;
  /** Full 16-bit st_mode. */
  readonly mode: number;
  readonly size: number;
  /** Raw i_u: data block address, chunk format word or rdev, by file type. */
  readonly iu: number;
  /** The on-disk i_ino (builder index; informational, readers use the nid). */
  readonly ino: number;
  readonly uid: number;
  readonly gid: number;
  /** 0 for compact inodes. */
  readonly mtime: number;
  readonly mtimeNsec: number;
  readonly nlink: number;
}

export function inodeSize(inode: Pick<V6Inode, 'extended'>): number {
  return inode.extended ? EXTENDED_INODE_SIZE : COMPACT_INODE_SIZE;
}

export function inodeFormat(inode: Pick<V6Inode, 'extended' | 'layout'>): number {
  return (inode.extended ? FORMAT_EXTENDED : 0) | (inode.layout << FORMAT_LAYOUT_SHIFT);
}

/** Decode the inode at `off`; checks length, i_format and the file type of i_mode. */
export function decodeInode(buf: Buffer, off: number): V6Inode {
  need(buf, off, 2, 'inode');
  const format = buf.readUInt16LE(off);
  if ((format & ~FORMAT_KNOWN) !== 0) {
    throw new FormatError(`Cannot decode inode: i_format 0x${format.toString(16)} has unknown bits`, off);
  }
  const layout = (format >> FORMAT_LAYOUT_SHIFT) & FORMAT_LAYOUT_MASK;
  if (layout === 1 || layout === 3) {
    throw new NydusError(
      'ERR_UNSUPPORTED',
      `Cannot decode inode at offset ${off}: compressed data layout ${layout}`,
    );
  }
  if (
    layout !== DataLayout.FLAT_PLAIN &&
    layout !== DataLayout.FLAT_INLINE &&
    layout !== DataLayout.CHUNK_BASED
  ) {
    throw new FormatError(`Cannot decode inode: unknown data layout ${layout}`, off);
  }
  const extended = (format & FORMAT_EXTENDED) !== 0;
  need(
    buf,
    off,
    extended ? EXTENDED_INODE_SIZE : COMPACT_INODE_SIZE,
    extended ? 'extended inode' : 'compact inode',
  );
  const mode = buf.readUInt16LE(off + 4);
  if (!isValidFileType(mode)) {
    throw new FormatError(`Cannot decode inode: mode 0o${mode.toString(8)} is not a file type`, off + 4);
  }
  // One object literal per inode, no spread: this runs for every entry a directory walk lists.
  const xattrIcount = buf.readUInt16LE(off + 2);
  const iu = buf.readUInt32LE(off + 16);
  if (extended) {
    return {
      extended,
      layout,
      xattrIcount,
      mode,
      iu,
      size: readU64(buf, off + 8, 'inode i_size'),
      ino: buf.readUInt32LE(off + 20),
      uid: buf.readUInt32LE(off + 24),
      gid: buf.readUInt32LE(off + 28),
      mtime: readU64(buf, off + 32, 'inode i_mtime'),
      mtimeNsec: buf.readUInt32LE(off + 40),
      nlink: buf.readUInt32LE(off + 44),
    };
  }
  return {
    extended,
    layout,
    xattrIcount,
    mode,
    iu,
    size: buf.readUInt32LE(off + 8),
    ino: buf.readUInt32LE(off + 20),
    uid: buf.readUInt16LE(off + 24),
    gid: buf.readUInt16LE(off + 26),
    mtime: 0,
    mtimeNsec: 0,
    nlink: buf.readUInt16LE(off + 6),
  };
}

/** Encode `inode` at `off`; returns the bytes written (32 or 64). */
export function encodeInode(inode: V6Inode, buf: Buffer, off: number): number {
  putU16(buf, off, inodeFormat(inode), 'inode i_format');
  putU16(buf, off + 2, inode.xattrIcount, 'inode i_xattr_icount');
  putU16(buf, off + 4, inode.mode, 'inode i_mode');
  if (inode.extended) {
    putU16(buf, off + 6, 0, 'inode reserved');
    putU64(buf, off + 8, inode.size, 'inode i_size');
    putU32(buf, off + 16, inode.iu, 'inode i_u');
    putU32(buf, off + 20, inode.ino, 'inode i_ino');
    putU32(buf, off + 24, inode.uid, 'inode i_uid');
    putU32(buf, off + 28, inode.gid, 'inode i_gid');
    putU64(buf, off + 32, inode.mtime, 'inode i_mtime');
    putU32(buf, off + 40, inode.mtimeNsec, 'inode i_mtime_nsec');
    putU32(buf, off + 44, inode.nlink, 'inode i_nlink');
    putZeros(buf, off + 48, 16, 'inode reserved');
    return EXTENDED_INODE_SIZE;
  }
  if (inode.mtime !== 0 || inode.mtimeNsec !== 0) {
    throw new NydusError('ERR_INVALID_ARG', 'Cannot encode a compact inode with an mtime');
  }
  putU16(buf, off + 6, inode.nlink, 'compact inode i_nlink');
  putU32(buf, off + 8, inode.size, 'compact inode i_size');
  putU32(buf, off + 12, 0, 'inode reserved');
  putU32(buf, off + 16, inode.iu, 'inode i_u');
  putU32(buf, off + 20, inode.ino, 'inode i_ino');
  putU16(buf, off + 24, inode.uid, 'compact inode i_uid');
  putU16(buf, off + 26, inode.gid, 'compact inode i_gid');
  putZeros(buf, off + 28, 4, 'inode reserved');
  return COMPACT_INODE_SIZE;
}
