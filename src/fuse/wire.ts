import { writeU64 } from '../util/cursor.js';
import { invalidField } from './errors.js';

/**
 * Checked little-endian field writers for the encoders. Buffer's own writers throw a RangeError
 * on a bad value; these throw ERR_INVALID_ARG naming the field, so an encoder bug shows up as
 * what it is. Reading goes through util/cursor.ts.
 */

const U64_MAX = (1n << 64n) - 1n;

export function putU16(buf: Buffer, off: number, v: number, what: string): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw invalidField(what, v, 'a u16');
  buf.writeUInt16LE(v, off);
}

export function putU32(buf: Buffer, off: number, v: number, what: string): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xffff_ffff) throw invalidField(what, v, 'a u32');
  buf.writeUInt32LE(v, off);
}

export function putI32(buf: Buffer, off: number, v: number, what: string): void {
  if (!Number.isInteger(v) || v < -0x8000_0000 || v > 0x7fff_ffff) throw invalidField(what, v, 'an i32');
  buf.writeInt32LE(v, off);
}

/** A u64 quantity (offset, size, count, seconds): a non-negative safe integer. */
export function putU64(buf: Buffer, off: number, v: number, what: string): void {
  if (!Number.isSafeInteger(v) || v < 0) throw invalidField(what, v, 'a non-negative safe integer');
  writeU64(buf, off, v);
}

/** A u64 identity (unique, nodeid, fh, generation, ino, lock owner). */
export function putId(buf: Buffer, off: number, v: bigint, what: string): void {
  if (typeof v !== 'bigint' || v < 0n || v > U64_MAX) throw invalidField(what, v, 'a u64 bigint');
  buf.writeBigUInt64LE(v, off);
}

/**
 * A u64 time in seconds that the kernel reads as time64_t, so times before 1970 are negative
 * numbers stored in two's complement.
 */
export function putTime(buf: Buffer, off: number, v: number, what: string): void {
  // Every safe integer is an i64.
  if (!Number.isSafeInteger(v)) throw invalidField(what, v, 'a safe integer');
  // Two's complement in two halves: the high one signed, the low one what is left (0..2^32-1).
  const hi = Math.floor(v / 0x1_0000_0000);
  buf.writeUInt32LE(v - hi * 0x1_0000_0000, off);
  buf.writeInt32LE(hi, off + 4);
}

/** Nanoseconds of a timestamp or timeout: below one second. */
export function putNsec(buf: Buffer, off: number, v: number, what: string): void {
  if (!Number.isInteger(v) || v < 0 || v > 999_999_999) throw invalidField(what, v, 'in 0..999999999');
  buf.writeUInt32LE(v, off);
}
