import { FormatError } from '../../errors/errors.js';
import { Limits } from '../flags.js';
import type { XattrPair } from '../model.js';
import { align, readU64 } from '../../util/cursor.js';

/**
 * RAFS v5 xattr table, inside an inode record after the name and symlink target when the inode
 * has the XATTR flag (rafs-format.md 2.8).
 *
 * | off | type  | field                                                    |
 * |-----|-------|----------------------------------------------------------|
 * | 0   | u64   | payload_size (sum of the pair encodings, no padding)     |
 * | 8   | pairs | payload_size bytes of pairs, then zero padding to 8      |
 *
 * Pair: u32 pair_size (= len(name) + 1 + len(value)), name bytes, 0x00, value bytes. Pairs have
 * no alignment of their own. The record continues at `8 + align8(payload_size)`.
 *
 * Pair order is not deterministic in upstream images (a hash map); readers must not depend on it.
 */
export const V5_XATTR_HEADER_SIZE = 8;
const PAIR_SIZE_FIELD = 4;

/** Namespaces kept by the builder; names must start with one of these. */
export const XATTR_ALLOWED_PREFIXES: readonly Buffer[] = [
  'user.',
  'security.',
  'trusted.',
  'system.posix_acl_access',
  'system.posix_acl_default',
].map((p) => Buffer.from(p));

export interface V5XattrTable {
  readonly pairs: XattrPair[];
  /** payload_size as stored. */
  readonly payloadSize: number;
  /** Offset just past the table and its padding, where the record continues. */
  readonly end: number;
}

/** Check an xattr name and value against the namespace and size limits; `what` prefixes errors. */
export function checkXattrPair(name: Buffer, value: Buffer, what: string, offset?: number): void {
  if (name.length === 0 || name.length > Limits.MAX_XATTR_NAME) {
    throw new FormatError(
      `${what}: xattr name size ${name.length} is out of range 1..${Limits.MAX_XATTR_NAME}`,
      offset,
    );
  }
  if (!XATTR_ALLOWED_PREFIXES.some((p) => name.length >= p.length && name.subarray(0, p.length).equals(p))) {
    throw new FormatError(
      `${what}: xattr name ${JSON.stringify(name.toString('latin1'))} is not in an allowed namespace`,
      offset,
    );
  }
  if (value.length > Limits.MAX_XATTR_VALUE) {
    throw new FormatError(
      `${what}: xattr value of ${value.length} bytes exceeds ${Limits.MAX_XATTR_VALUE}`,
      offset,
    );
  }
}

/**
 * Where the table at `off` ends, reading only its header: bounds-checks payload_size against
 * `limit` (the end of the bootstrap) without decoding pairs.
 */
export function v5XattrTableEnd(buf: Buffer, off: number, limit = buf.length, what = 'Xattr table'): number {
  if (off + V5_XATTR_HEADER_SIZE > limit) throw new FormatError(`${what}: truncated xattr table header`, off);
  const payloadSize = readU64(buf, off, 'xattr payload_size');
  const end = off + V5_XATTR_HEADER_SIZE + align(payloadSize, 8);
  if (end > limit) {
    throw new FormatError(
      `${what}: xattr payload of ${payloadSize} bytes runs past the end of the bootstrap`,
      off,
    );
  }
  return end;
}

/**
 * Decode the xattr table at `off`. Pairs must exactly fill payload_size, each name must end in a
 * NUL inside its pair and pass `checkXattrPair`. Returned buffers are views of `buf`.
 */
export function decodeV5Xattrs(
  buf: Buffer,
  off: number,
  limit = buf.length,
  what = 'Xattr table',
): V5XattrTable {
  const end = v5XattrTableEnd(buf, off, limit, what);
  const payloadSize = readU64(buf, off, 'xattr payload_size');
  const payloadEnd = off + V5_XATTR_HEADER_SIZE + payloadSize;
  const pairs: XattrPair[] = [];
  let pos = off + V5_XATTR_HEADER_SIZE;
  // Every pair consumes at least 5 bytes, so this loop is bounded by payload_size.
  while (pos < payloadEnd) {
    if (pos + PAIR_SIZE_FIELD > payloadEnd) throw new FormatError(`${what}: truncated xattr pair size`, pos);
    const pairSize = buf.readUInt32LE(pos);
    const start = pos + PAIR_SIZE_FIELD;
    if (pairSize === 0 || start + pairSize > payloadEnd) {
      throw new FormatError(`${what}: xattr pair size ${pairSize} does not fit the payload`, pos);
    }
    const pair = buf.subarray(start, start + pairSize);
    const nul = pair.indexOf(0);
    if (nul < 0) throw new FormatError(`${what}: xattr name has no NUL terminator`, start);
    const name = pair.subarray(0, nul);
    const value = pair.subarray(nul + 1);
    checkXattrPair(name, value, what, start);
    pairs.push({ name, value });
    pos = start + pairSize;
  }
  return { pairs, payloadSize, end };
}

/** payload_size of these pairs (without the 8-byte header and the padding). */
export function v5XattrPayloadSize(pairs: readonly XattrPair[]): number {
  return pairs.reduce((n, p) => n + PAIR_SIZE_FIELD + p.name.length + 1 + p.value.length, 0);
}

/** Encoded size of the whole table: header, pairs and padding. */
export function v5XattrTableSize(pairs: readonly XattrPair[]): number {
  return V5_XATTR_HEADER_SIZE + align(v5XattrPayloadSize(pairs), 8);
}

/** Encode the table for these pairs in the given order (writers choose a stable order). */
export function encodeV5Xattrs(pairs: readonly XattrPair[]): Buffer {
  const buf = Buffer.alloc(v5XattrTableSize(pairs));
  buf.writeBigUInt64LE(BigInt(v5XattrPayloadSize(pairs)), 0);
  let pos = V5_XATTR_HEADER_SIZE;
  for (const p of pairs) {
    if (p.name.includes(0)) throw new FormatError('Xattr name must not contain a NUL byte');
    checkXattrPair(p.name, p.value, 'Xattr table');
    buf.writeUInt32LE(p.name.length + 1 + p.value.length, pos);
    pos += PAIR_SIZE_FIELD;
    pos += p.name.copy(buf, pos);
    pos += 1;
    pos += p.value.copy(buf, pos);
  }
  return buf;
}
