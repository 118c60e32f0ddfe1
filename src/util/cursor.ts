import { FormatError } from '../errors/errors.js';

/**
 * A bounds-checked little-endian reader over a byte range. Every decoder reads through one, so
 * a truncated or lying input ends in a FormatError naming the absolute offset, never in a
 * RangeError from Buffer.
 */
export class Cursor {
  readonly buf: Buffer;
  /** Absolute offset of `buf[0]` in the source, for error messages. */
  readonly base: number;
  #pos: number;

  constructor(buf: Buffer, pos = 0, base = 0) {
    this.buf = buf;
    this.base = base;
    this.#pos = pos;
  }

  get pos(): number {
    return this.#pos;
  }

  get remaining(): number {
    return this.buf.length - this.#pos;
  }

  seek(pos: number): this {
    if (pos < 0 || pos > this.buf.length)
      throw new FormatError(`Cannot seek to ${pos}: out of range`, this.base + pos);
    this.#pos = pos;
    return this;
  }

  skip(n: number): this {
    return this.seek(this.#pos + n);
  }

  #need(n: number, what: string): number {
    const at = this.#pos;
    if (n < 0 || at + n > this.buf.length) {
      throw new FormatError(
        `Truncated data: ${what} needs ${n} bytes, ${this.buf.length - at} left`,
        this.base + at,
      );
    }
    this.#pos = at + n;
    return at;
  }

  u8(what = 'u8'): number {
    return this.buf.readUInt8(this.#need(1, what));
  }

  u16(what = 'u16'): number {
    return this.buf.readUInt16LE(this.#need(2, what));
  }

  u32(what = 'u32'): number {
    return this.buf.readUInt32LE(this.#need(4, what));
  }

  /** A u64 that must fit in a safe JS number (all sizes and offsets in real images do). */
  u64(what = 'u64'): number {
    const at = this.#need(8, what);
    return safeU64(this.buf, at, what, this.base + at);
  }

  big64(what = 'u64'): bigint {
    return this.buf.readBigUInt64LE(this.#need(8, what));
  }

  bytes(n: number, what = 'bytes'): Buffer {
    const at = this.#need(n, what);
    return this.buf.subarray(at, at + n);
  }
}

/** Convert a u64 field to a number, failing on values above 2^53. */
export function toSafe(v: bigint, what: string, offset?: number): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER))
    throw new FormatError(`Value of ${what} is too large: ${v}`, offset);
  return Number(v);
}

/** Read a u64 at `off` of `buf` as a safe number (bounds-checked). */
export function readU64(buf: Buffer, off: number, what: string, base = 0): number {
  if (off < 0 || off + 8 > buf.length) throw new FormatError(`Truncated data: ${what}`, base + off);
  return safeU64(buf, off, what, base + off);
}

/** The largest high word of a u64 that is still a safe number: 2^53 - 1 = 0x1fffff * 2^32 + 0xffffffff. */
const MAX_SAFE_HIGH = 0x1f_ffff;

/**
 * The u64 at `off` (inside `buf`) as a number, failing like `toSafe` above 2^53 - 1: read as two
 * 32-bit halves, with no BigInt made (metadata decoding reads one or more per inode and chunk).
 */
function safeU64(buf: Buffer, off: number, what: string, offset: number): number {
  const high = buf.readUInt32LE(off + 4);
  if (high > MAX_SAFE_HIGH) return toSafe(buf.readBigUInt64LE(off), what, offset);
  return high * 0x1_0000_0000 + buf.readUInt32LE(off);
}

/**
 * Write `v`, a non-negative safe integer the caller has checked, as the little-endian u64 at
 * `off`: two 32-bit halves, with no BigInt made (the twin of `readU64` for the encoders).
 */
export function writeU64(buf: Buffer, off: number, v: number): void {
  const high = Math.floor(v / 0x1_0000_0000);
  buf.writeUInt32LE(v - high * 0x1_0000_0000, off);
  buf.writeUInt32LE(high, off + 4);
}

export function align(x: number, a: number): number {
  return Math.ceil(x / a) * a;
}

export function isPowerOfTwo(n: number): boolean {
  return n > 0 && Number.isInteger(n) && (n & (n - 1)) === 0 && n <= 0x80000000;
}

/** Bytes up to the first NUL (or all of them). */
export function cString(buf: Buffer): Buffer {
  const z = buf.indexOf(0);
  return z < 0 ? buf : buf.subarray(0, z);
}
