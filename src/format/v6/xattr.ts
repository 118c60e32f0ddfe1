import { FormatError, NydusError } from '../../errors/errors.js';
import { Limits } from '../flags.js';
import type { XattrPair } from '../model.js';
import { need, putBytes, putU16, putU32, putU8, putZeros } from './bytes.js';

/**
 * EROFS inline xattrs (rafs-format.md 3.9): directly after the inode comes the xattr ibody of
 * `12 + 4 * (i_xattr_icount - 1)` bytes (none when icount is 0):
 *
 * | off | type             | field                                  |
 * |-----|------------------|----------------------------------------|
 * | 0   | u32              | name_filter (reserved, 0)              |
 * | 4   | u8               | shared_count                           |
 * | 5   | 7 bytes          | reserved                               |
 * | 12  | u32 × shared     | shared xattr ids (RAFS writes none)    |
 * | ... | entries          | inline entries up to the ibody end     |
 *
 * Entry (inline, or shared at `xattr_blkaddr * block_size + 4 * id`), padded to 4 bytes:
 *
 * | off | type  | field                         |
 * |-----|-------|-------------------------------|
 * | 0   | u8    | name_len (suffix length)      |
 * | 1   | u8    | name_index (prefix, below)    |
 * | 2   | u16   | value_size                    |
 * | 4   | bytes | suffix, then value            |
 *
 * Prefixes: 1 `user.`, 2 `system.posix_acl_access` (whole name), 3 `system.posix_acl_default`
 * (whole name), 4 `trusted.`, 6 `security.`; 0 means no prefix (the suffix is the whole name).
 */

export const XATTR_IBODY_HEADER_SIZE = 12;
export const XATTR_ENTRY_HEADER_SIZE = 4;
const MAX_XATTR_VALUE_SIZE = 0xffff;

export const XattrIndex = {
  NONE: 0,
  USER: 1,
  POSIX_ACL_ACCESS: 2,
  POSIX_ACL_DEFAULT: 3,
  TRUSTED: 4,
  SECURITY: 6,
} as const;

/** Prefixes in matching order; the posix ACL names must match whole. */
const PREFIXES: readonly { index: number; prefix: Buffer; whole: boolean }[] = [
  { index: XattrIndex.USER, prefix: Buffer.from('user.'), whole: false },
  { index: XattrIndex.POSIX_ACL_ACCESS, prefix: Buffer.from('system.posix_acl_access'), whole: true },
  { index: XattrIndex.POSIX_ACL_DEFAULT, prefix: Buffer.from('system.posix_acl_default'), whole: true },
  { index: XattrIndex.TRUSTED, prefix: Buffer.from('trusted.'), whole: false },
  { index: XattrIndex.SECURITY, prefix: Buffer.from('security.'), whole: false },
];

const PREFIX_BY_INDEX = new Map<number, Buffer>(PREFIXES.map((p) => [p.index, p.prefix]));

/** Bytes of the xattr ibody for an i_xattr_icount (0 when there is none). */
export function xattrIbodySize(icount: number): number {
  return icount === 0 ? 0 : XATTR_IBODY_HEADER_SIZE + 4 * (icount - 1);
}

/** i_xattr_icount for an ibody of `size` bytes (0 for none). */
export function xattrIcountOf(size: number): number {
  if (size === 0) return 0;
  if (size < XATTR_IBODY_HEADER_SIZE || size % 4 !== 0) {
    throw new NydusError('ERR_INVALID_ARG', `Xattr ibody size ${size} is not 12 plus a multiple of 4`);
  }
  return (size - XATTR_IBODY_HEADER_SIZE) / 4 + 1;
}

/** Split a full xattr name into its prefix index and suffix. */
export function splitXattrName(name: Buffer): { index: number; suffix: Buffer } {
  for (const p of PREFIXES) {
    if (p.whole ? name.equals(p.prefix) : name.length > p.prefix.length && startsWith(name, p.prefix)) {
      return { index: p.index, suffix: name.subarray(p.prefix.length) };
    }
  }
  return { index: XattrIndex.NONE, suffix: name };
}

function startsWith(name: Buffer, prefix: Buffer): boolean {
  return name.length >= prefix.length && name.compare(prefix, 0, prefix.length, 0, prefix.length) === 0;
}

/** Size of one entry on disk, padding included. */
export function xattrEntrySize(pair: XattrPair): number {
  const { suffix } = splitXattrName(pair.name);
  return align4(XATTR_ENTRY_HEADER_SIZE + suffix.length + pair.value.length);
}

/** Size of the ibody holding `pairs` inline (0 for none). */
export function xattrIbodySizeOf(pairs: readonly XattrPair[]): number {
  if (pairs.length === 0) return 0;
  return pairs.reduce((n, p) => n + xattrEntrySize(p), XATTR_IBODY_HEADER_SIZE);
}

/** Encode one entry at `off`; returns the bytes written, padding included. */
export function encodeXattrEntry(pair: XattrPair, buf: Buffer, off: number): number {
  const { index, suffix } = splitXattrName(pair.name);
  if (suffix.length > Limits.MAX_XATTR_NAME || (index === XattrIndex.NONE && suffix.length === 0)) {
    throw new NydusError('ERR_INVALID_ARG', `Cannot encode xattr name of ${pair.name.length} bytes`);
  }
  if (pair.value.length > MAX_XATTR_VALUE_SIZE) {
    throw new NydusError('ERR_INVALID_ARG', `Cannot encode xattr value of ${pair.value.length} bytes`);
  }
  const size = align4(XATTR_ENTRY_HEADER_SIZE + suffix.length + pair.value.length);
  putU8(buf, off, suffix.length, 'xattr name_len');
  putU8(buf, off + 1, index, 'xattr name_index');
  putU16(buf, off + 2, pair.value.length, 'xattr value_size');
  putBytes(buf, off + 4, Buffer.concat([suffix, pair.value]), size - XATTR_ENTRY_HEADER_SIZE, 'xattr entry');
  return size;
}

/** The whole ibody (header and inline entries, no shared ids) for `pairs`, in their order. */
export function encodeXattrIbody(pairs: readonly XattrPair[]): Buffer {
  const out = Buffer.alloc(xattrIbodySizeOf(pairs));
  if (pairs.length === 0) return out;
  let off = encodeXattrIbodyHeader([], out, 0);
  for (const p of pairs) off += encodeXattrEntry(p, out, off);
  return out;
}

/** Decode the entry at `off`, which must end by `end`; returns it and the next entry's offset. */
export function decodeXattrEntry(buf: Buffer, off: number, end: number): { pair: XattrPair; next: number } {
  const limit = Math.min(end, buf.length);
  if (off < 0 || off + XATTR_ENTRY_HEADER_SIZE > limit) {
    throw new FormatError(`Truncated xattr entry: ${Math.max(0, limit - off)} bytes left`, off);
  }
  const nameLen = buf.readUInt8(off);
  const index = buf.readUInt8(off + 1);
  const valueSize = buf.readUInt16LE(off + 2);
  const prefix = index === XattrIndex.NONE ? Buffer.alloc(0) : PREFIX_BY_INDEX.get(index);
  if (prefix === undefined) throw new FormatError(`Unknown xattr name_index ${index}`, off + 1);
  if (index === XattrIndex.NONE && nameLen === 0) throw new FormatError('Empty xattr name', off);
  const bodyEnd = off + XATTR_ENTRY_HEADER_SIZE + nameLen + valueSize;
  if (bodyEnd > limit) {
    throw new FormatError(`Xattr entry of ${nameLen}+${valueSize} bytes runs past its area end ${end}`, off);
  }
  const suffix = buf.subarray(off + 4, off + 4 + nameLen);
  return {
    pair: {
      name: prefix.length === 0 ? Buffer.from(suffix) : Buffer.concat([prefix, suffix]),
      value: Buffer.from(buf.subarray(off + 4 + nameLen, bodyEnd)),
    },
    next: Math.min(align4(bodyEnd), end),
  };
}

export interface XattrIbody {
  readonly nameFilter: number;
  /** Ids of shared xattrs (entries at xattr_blkaddr * block_size + 4 * id). */
  readonly sharedIds: number[];
  readonly entries: XattrPair[];
}

/** Decode the ibody of `size` bytes at `off` (the inline entries fill it exactly). */
export function decodeXattrIbody(buf: Buffer, off: number, size: number): XattrIbody {
  need(buf, off, size, 'xattr ibody');
  if (size < XATTR_IBODY_HEADER_SIZE) throw new FormatError(`Xattr ibody of ${size} bytes is too short`, off);
  const nameFilter = buf.readUInt32LE(off);
  const sharedCount = buf.readUInt8(off + 4);
  const end = off + size;
  let pos = off + XATTR_IBODY_HEADER_SIZE;
  if (pos + 4 * sharedCount > end) {
    throw new FormatError(`Xattr ibody of ${size} bytes cannot hold ${sharedCount} shared ids`, off + 4);
  }
  const sharedIds: number[] = [];
  for (let i = 0; i < sharedCount; i++, pos += 4) sharedIds.push(buf.readUInt32LE(pos));
  const entries: XattrPair[] = [];
  while (pos < end) {
    const { pair, next } = decodeXattrEntry(buf, pos, end);
    entries.push(pair);
    pos = next;
  }
  return { nameFilter, sharedIds, entries };
}

/** Encode an ibody header (name filter 0) with shared ids at `off`; returns the bytes written. */
export function encodeXattrIbodyHeader(sharedIds: readonly number[], buf: Buffer, off: number): number {
  putU32(buf, off, 0, 'xattr name_filter');
  putU8(buf, off + 4, sharedIds.length, 'xattr shared_count');
  putZeros(buf, off + 5, 7, 'xattr ibody reserved');
  sharedIds.forEach((id, i) => putU32(buf, off + XATTR_IBODY_HEADER_SIZE + 4 * i, id, 'shared xattr id'));
  return XATTR_IBODY_HEADER_SIZE + 4 * sharedIds.length;
}

function align4(n: number): number {
  return (n + 3) & ~3;
}
