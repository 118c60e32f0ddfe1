import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FormatError, NydusError } from '../../../src/errors/errors.js';
import {
  decodeTrailerHeader,
  encodeTrailerHeader,
  TAR_SIZE_MAX,
  tryDecodeTrailerHeader,
} from '../../../src/format/blob/tar-header.js';
import { FIXTURE, readUpstreamFixture } from '../../helpers/fixtures.js';

/** A 512-byte block, zero except for the given hex runs at their offsets. */
function block(runs: readonly [number, string][]): Buffer {
  const b = Buffer.alloc(512);
  for (const [off, hex] of runs) Buffer.from(hex.replace(/\s+/g, ''), 'hex').copy(b, off);
  return b;
}

// Derived by hand from rafs-format.md 4.4: name, size 7782 = 0o17146, mtime zero, checksum over
// the header with the checksum field as spaces = 2978 = 0o5642, typeflag '0', GNU magic.
const IMAGE_BLOB_7782 = block([
  [0, '69 6d 61 67 65 2e 62 6c 6f 62'], // "image.blob"
  [124, '30 30 30 30 30 30 31 37 31 34 36 00'], // "00000017146\0"
  [136, '30 30 30 30 30 30 30 30 30 30 30 00'], // "00000000000\0"
  [148, '30 30 30 35 36 34 32 00'], // "0005642\0"
  [156, '30'], // '0'
  [257, '75 73 74 61 72 20 20 00'], // "ustar " " \0"
]);

void test('golden: trailer header for (image.blob, 7782)', () => {
  assert.equal(encodeTrailerHeader('image.blob', 7782).toString('hex'), IMAGE_BLOB_7782.toString('hex'));
  assert.deepEqual(decodeTrailerHeader(IMAGE_BLOB_7782), { name: 'image.blob', size: 7782 });
});

void test('golden: trailer header for (rafs.blob.toc, 512)', () => {
  // 512 = 0o1000; checksum: name 1261 + size 48*10+49 + mtime 528 + spaces 256 + 48 + magic 623 = 3245 = 0o6255
  const expected = block([
    [0, '72 61 66 73 2e 62 6c 6f 62 2e 74 6f 63'],
    [124, '30 30 30 30 30 30 30 31 30 30 30 00'],
    [136, '30 30 30 30 30 30 30 30 30 30 30 00'],
    [148, '30 30 30 36 32 35 35 00'],
    [156, '30'],
    [257, '75 73 74 61 72 20 20 00'],
  ]);
  assert.equal(encodeTrailerHeader('rafs.blob.toc', 512).toString('hex'), expected.toString('hex'));
});

void test('fixture: the four trailer headers of blobs/be7d77ee… are reproduced exactly', (t) => {
  const blob = readUpstreamFixture(t, FIXTURE.v6Blob);
  if (blob === undefined) return;
  for (const [name, size, at] of [
    ['image.blob', 7802, 7802],
    ['blob.meta', 4128, 12442],
    ['blob.digest', 64, 13018],
    ['rafs.blob.toc', 512, 14042],
  ] as const) {
    const got = blob.subarray(at, at + 512);
    assert.ok(encodeTrailerHeader(name, size).equals(got), `${name} header`);
    assert.deepEqual(decodeTrailerHeader(blob, at), { name, size });
  }
});

void test('encode: name of 100 bytes fills the field, limits are enforced', () => {
  const long = 'a'.repeat(100);
  assert.deepEqual(decodeTrailerHeader(encodeTrailerHeader(long, TAR_SIZE_MAX)), {
    name: long,
    size: TAR_SIZE_MAX,
  });
  for (const [name, size] of [
    ['', 1],
    ['a'.repeat(101), 1],
    ['with space', 1],
    ['x', -1],
    ['x', 1.5],
    ['x', TAR_SIZE_MAX + 1],
  ] as const) {
    assert.throws(
      () => encodeTrailerHeader(name, size),
      (e: unknown) => e instanceof NydusError && e.code === 'ERR_INVALID_ARG',
    );
  }
});

void test('decode: accepts space-terminated octal and the old NUL typeflag', () => {
  const b = Buffer.from(IMAGE_BLOB_7782);
  b.fill(0, 124, 136);
  b.write(' 17146 ', 124, 'latin1'); // leading space, trailing space, rest NUL
  b[135] = 0x20;
  b[156] = 0;
  // Fix the checksum for the edited block.
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (const x of b) sum += x;
  b.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  assert.deepEqual(decodeTrailerHeader(b), { name: 'image.blob', size: 7782 });
});

function rejects(b: Buffer, pattern: RegExp, off = 0): void {
  assert.throws(
    () => decodeTrailerHeader(b, off),
    (e: unknown) => e instanceof FormatError && pattern.test(e.message),
  );
  assert.equal(tryDecodeTrailerHeader(b, off), undefined);
}

/** Rewrite the checksum so that only the intended defect remains. */
function reseal(b: Buffer): Buffer {
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (const x of b) sum += x;
  b.write(`${sum.toString(8).padStart(7, '0')}\0`, 148, 'latin1');
  return b;
}

void test('decode: checks length, magic, checksum, typeflag, size, name', () => {
  rejects(IMAGE_BLOB_7782.subarray(0, 511), /Truncated/);
  rejects(IMAGE_BLOB_7782, /Truncated/, 1);
  rejects(IMAGE_BLOB_7782, /Truncated/, -1);
  rejects(Buffer.alloc(512), /magic/);

  const posix = Buffer.from(IMAGE_BLOB_7782);
  posix.write('ustar\x0000', 257, 'latin1');
  rejects(reseal(posix), /magic/);

  const badSum = Buffer.from(IMAGE_BLOB_7782);
  badSum[0] = 0x6a;
  rejects(badSum, /checksum 2978 does not match computed 2979/);

  const sumNotOctal = Buffer.from(IMAGE_BLOB_7782);
  sumNotOctal.write('00056x2', 148, 'latin1');
  rejects(sumNotOctal, /checksum field/);

  const dir = Buffer.from(IMAGE_BLOB_7782);
  dir[156] = 0x35;
  rejects(reseal(dir), /typeflag 0x35/);

  const sizeNotOctal = Buffer.from(IMAGE_BLOB_7782);
  sizeNotOctal.write('0000001714 8', 124, 'latin1');
  rejects(reseal(sizeNotOctal), /size field/);

  const sizeNoDigits = Buffer.from(IMAGE_BLOB_7782);
  sizeNoDigits.fill(0, 124, 136);
  rejects(reseal(sizeNoDigits), /size field/);

  const sizeTooWide = Buffer.from(IMAGE_BLOB_7782);
  sizeTooWide.write('000000171460', 124, 'latin1');
  rejects(reseal(sizeTooWide), /size field/);

  const noName = Buffer.from(IMAGE_BLOB_7782);
  noName.fill(0, 0, 100);
  rejects(reseal(noName), /name/);

  const ctrlName = Buffer.from(IMAGE_BLOB_7782);
  ctrlName[2] = 0x07;
  rejects(reseal(ctrlName), /name/);
});

void test('decode: error offsets are absolute', () => {
  const buf = Buffer.concat([Buffer.alloc(1000), Buffer.alloc(512)]);
  assert.throws(
    () => decodeTrailerHeader(buf, 1000, 5000),
    (e: unknown) => e instanceof FormatError && e.offset === 5000 + 1000 + 257,
  );
});
