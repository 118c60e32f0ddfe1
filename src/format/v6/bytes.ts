import { FormatError, NydusError } from '../../errors/errors.js';
import { writeU64 } from '../../util/cursor.js';

/**
 * Small helpers shared by the v6 encoders and decoders. Encoders take values from the builder; a
 * value that does not fit its field is the caller's error (ERR_INVALID_ARG), never a silent wrap or
 * a RangeError from Buffer. Decoders check that a whole structure lies inside the buffer before
 * reading any field of it.
 */

/** Throw unless `[off, off + size)` lies inside `buf` (the length check every decoder starts with). */
export function need(buf: Buffer, off: number, size: number, what: string): void {
  if (!Number.isSafeInteger(off) || off < 0 || size < 0 || off + size > buf.length) {
    throw new FormatError(
      `Truncated ${what}: needs ${size} bytes, ${Math.max(0, buf.length - off)} left`,
      off,
    );
  }
}

function room(buf: Buffer, off: number, size: number, what: string): void {
  if (!Number.isSafeInteger(off) || off < 0 || off + size > buf.length) {
    throw new NydusError(
      'ERR_INVALID_ARG',
      `Cannot encode ${what}: no room for ${size} bytes at offset ${off}`,
    );
  }
}

function uint(v: number, max: number, what: string): number {
  if (!Number.isSafeInteger(v) || v < 0 || v > max) {
    throw new NydusError('ERR_INVALID_ARG', `Cannot encode ${what}: ${v} is not an integer in 0..${max}`);
  }
  return v;
}

export function putU8(buf: Buffer, off: number, v: number, what: string): void {
  room(buf, off, 1, what);
  buf.writeUInt8(uint(v, 0xff, what), off);
}

export function putU16(buf: Buffer, off: number, v: number, what: string): void {
  room(buf, off, 2, what);
  buf.writeUInt16LE(uint(v, 0xffff, what), off);
}

export function putU32(buf: Buffer, off: number, v: number, what: string): void {
  room(buf, off, 4, what);
  buf.writeUInt32LE(uint(v, 0xffff_ffff, what), off);
}

export function putU64(buf: Buffer, off: number, v: number | bigint, what: string): void {
  room(buf, off, 8, what);
  if (typeof v === 'bigint') {
    if (v < 0n || v > 0xffff_ffff_ffff_ffffn) {
      throw new NydusError('ERR_INVALID_ARG', `Cannot encode ${what}: ${v} does not fit in a u64`);
    }
    buf.writeBigUInt64LE(v, off);
  } else {
    // No BigInt made: encoders write one or more per inode and dirent.
    writeU64(buf, off, uint(v, Number.MAX_SAFE_INTEGER, what));
  }
}

/** Copy `src` into a field of `size` bytes, zero-filling the rest. */
export function putBytes(buf: Buffer, off: number, src: Uint8Array, size: number, what: string): void {
  room(buf, off, size, what);
  if (src.length > size) {
    throw new NydusError(
      'ERR_INVALID_ARG',
      `Cannot encode ${what}: ${src.length} bytes do not fit in ${size}`,
    );
  }
  buf.set(src, off);
  buf.fill(0, off + src.length, off + size);
}

/** A reserved field of `size` zero bytes (no source buffer: encoders write one or more per inode). */
export function putZeros(buf: Buffer, off: number, size: number, what: string): void {
  room(buf, off, size, what);
  buf.fill(0, off, off + size);
}

/** A NUL-padded string field (bytes as latin1, so any decoded field re-encodes to itself). */
export function putString(buf: Buffer, off: number, s: string, size: number, what: string): void {
  putBytes(buf, off, Buffer.from(s, 'latin1'), size, what);
}

/** Decode a NUL-padded string field as latin1 (one char per byte, round-trips through putString). */
export function fieldString(buf: Buffer, off: number, size: number): string {
  const field = buf.subarray(off, off + size);
  const z = field.indexOf(0);
  return (z < 0 ? field : field.subarray(0, z)).toString('latin1');
}
