import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FormatError, NydusError } from '../../src/errors/errors.js';
import { putU64 } from '../../src/format/v6/bytes.js';
import { Cursor, readU64 } from '../../src/util/cursor.js';

/** u64 fields as numbers: written and read in two 32-bit halves, checked against Node's BigInt codec. */

const EDGES = [0, 1, 0xffff_ffff, 0x1_0000_0000, 0x1_0000_0001, 0x12_3456_789a_bcde, Number.MAX_SAFE_INTEGER];

test('putU64 writes what writeBigUInt64LE writes, for numbers up to 2^53 - 1', () => {
  for (const v of EDGES) {
    const got = Buffer.alloc(12, 0xee);
    putU64(got, 2, v, 'field');
    const want = Buffer.alloc(12, 0xee);
    want.writeBigUInt64LE(BigInt(v), 2);
    assert.deepEqual(got, want, String(v));
  }
});

test('putU64 refuses a number that is not a safe integer in 0..2^53 - 1, and writes nothing', () => {
  for (const v of [-1, 0.5, 2 ** 53, Number.NaN, Number.POSITIVE_INFINITY]) {
    const buf = Buffer.alloc(8, 0xee);
    assert.throws(
      () => putU64(buf, 0, v, 'field'),
      (e: unknown) => e instanceof NydusError && /field/.test(e.message),
    );
    assert.deepEqual(buf, Buffer.alloc(8, 0xee));
  }
});

test('readU64 and Cursor.u64 read what writeBigUInt64LE wrote, and fail above 2^53 - 1', () => {
  for (const v of EDGES) {
    const buf = Buffer.alloc(11);
    buf.writeBigUInt64LE(BigInt(v), 3);
    assert.equal(readU64(buf, 3, 'field'), v);
    assert.equal(new Cursor(buf, 3).u64('field'), v);
  }
  for (const big of [2n ** 53n, 2n ** 53n + 1n, 2n ** 64n - 1n]) {
    const buf = Buffer.alloc(8);
    buf.writeBigUInt64LE(big);
    assert.throws(
      () => readU64(buf, 0, 'field', 100),
      (e: unknown) => e instanceof FormatError && /too large/.test(e.message),
    );
    assert.throws(() => new Cursor(buf).u64('field'), FormatError);
  }
  assert.throws(() => readU64(Buffer.alloc(7), 0, 'field'), /Truncated/);
});
