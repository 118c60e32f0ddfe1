import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sha256 } from '../../../src/codec/digest.js';
import { FormatError, NydusError } from '../../../src/errors/errors.js';
import {
  decodeTocEntry,
  encodeToc,
  encodeTocEntry,
  findTocEntry,
  makeTocEntry,
  MAX_TOC_ENTRIES,
  parseToc,
  SectionName,
  TAR_SECTION_NAMES,
  TOC_ENTRY_SIZE,
  tocDigest,
  TocFlag,
  type TocEntry,
} from '../../../src/format/blob/toc.js';
import { FIXTURE, readUpstreamFixture } from '../../helpers/fixtures.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

const DIGESTS_SHA256 = '910f7305f347bacd48d1221e0fb91c6af903f34eddcfc124004f3c5ff7e8bfdd';

// rafs-format.md 4.5: flags u32, 4 reserved, 16-byte name, sha256, three u64, 48 reserved.
const BLOB_DIGEST_ENTRY = hex(`
  01000000 00000000
  626c6f62 2e646967 65737400 00000000
  ${DIGESTS_SHA256}
  9a320000 00000000
  40000000 00000000
  40000000 00000000
  ${'00'.repeat(48)}`);

const blobDigestEntry: TocEntry = {
  flags: TocFlag.COMPRESSION_NONE,
  compressor: 'none',
  name: 'blob.digest',
  digest: hex(DIGESTS_SHA256),
  compressedOffset: 12954,
  compressedSize: 64,
  uncompressedSize: 64,
};

void test('golden: ToC entry encode/decode', () => {
  assert.equal(BLOB_DIGEST_ENTRY.length, TOC_ENTRY_SIZE);
  assert.equal(encodeTocEntry(blobDigestEntry).toString('hex'), BLOB_DIGEST_ENTRY.toString('hex'));
  assert.deepEqual(decodeTocEntry(BLOB_DIGEST_ENTRY), blobDigestEntry);
});

void test('golden: 16-byte name without NUL, zstd and lz4 flags, high flag bits kept', () => {
  const e: TocEntry = {
    flags: 0x100 | TocFlag.COMPRESSION_ZSTD,
    compressor: 'zstd',
    name: 'blob.meta.header',
    digest: Buffer.alloc(32, 0xab),
    compressedOffset: 2 ** 40 + 3,
    compressedSize: 501,
    uncompressedSize: 20480,
  };
  const expected = hex(`
    02010000 00000000
    626c6f62 2e6d6574 612e6865 61646572
    ${'ab'.repeat(32)}
    03000000 00010000
    f5010000 00000000
    00500000 00000000
    ${'00'.repeat(48)}`);
  assert.equal(encodeTocEntry(e).toString('hex'), expected.toString('hex'));
  assert.deepEqual(decodeTocEntry(expected), e);
  const lz4 = { ...e, flags: TocFlag.COMPRESSION_LZ4_BLOCK, compressor: 'lz4_block' } as const;
  assert.deepEqual(decodeTocEntry(encodeTocEntry(lz4)), lz4);
});

void test('makeTocEntry hashes the uncompressed content', () => {
  const content = Buffer.from('bootstrap');
  const e = makeTocEntry(SectionName.IMAGE_BOOT, 'zstd', 100, content, 7);
  assert.deepEqual(e, {
    flags: TocFlag.COMPRESSION_ZSTD,
    compressor: 'zstd',
    name: 'image.boot',
    digest: sha256(content),
    compressedOffset: 100,
    compressedSize: 7,
    uncompressedSize: 9,
  });
  assert.throws(
    () => makeTocEntry('x', 'gzip', 0, content),
    (err: unknown) => err instanceof NydusError,
  );
});

void test('fixture: the ToC of blobs/be7d77ee… and its digest', (t) => {
  const blob = readUpstreamFixture(t, FIXTURE.v6Blob);
  if (blob === undefined) return;
  const section = blob.subarray(13530);
  const entries = parseToc(section.subarray(0, 512), 13530);
  assert.deepEqual(
    entries.map((e) => [e.name, e.compressor, e.compressedOffset, e.compressedSize, e.uncompressedSize]),
    [
      // image.blob: offset is the end of the chunk data (the early-2023 bug of rafs-format.md 4.5)
      ['image.blob', 'none', 7802, 7802, 36864],
      ['blob.meta', 'none', 8314, 32, 32],
      ['blob.meta.header', 'none', 8346, 4096, 4096],
      ['blob.digest', 'none', 12954, 64, 64],
    ],
  );
  assert.deepEqual(findTocEntry(entries, 'blob.digest'), blobDigestEntry);
  assert.equal(findTocEntry(entries, 'image.boot'), undefined);
  // blob_toc_digest of the bootstrap's blob table.
  assert.equal(
    tocDigest(section).toString('hex'),
    'cfc89ed0739aef4eb1bf0904f0dfdb1c857134eca7319465baae95a99b84acde',
  );
  // Re-encoding gives the same bytes except the garbage upstream left in reserved bytes 124..127.
  const cleaned = Buffer.from(section);
  for (let i = 0; i < 4; i++) cleaned.fill(0, i * 128 + 124, i * 128 + 128);
  assert.ok(!cleaned.equals(section));
  assert.ok(encodeToc(entries).equals(cleaned));
});

void test('known names', () => {
  assert.deepEqual([...TAR_SECTION_NAMES].sort(), [
    'blob.digest',
    'blob.meta',
    'image.blob',
    'image.boot',
    'rafs.blob.toc',
  ]);
  assert.ok(!TAR_SECTION_NAMES.has(SectionName.BLOB_META_HEADER));
});

function rejectsFormat(f: () => unknown, pattern: RegExp): void {
  assert.throws(f, (e: unknown) => e instanceof FormatError && pattern.test(e.message));
}

void test('decode: rejects bad flags, names, truncation; parseToc bounds its input', () => {
  rejectsFormat(() => decodeTocEntry(BLOB_DIGEST_ENTRY.subarray(0, 127)), /Truncated/);
  rejectsFormat(() => decodeTocEntry(BLOB_DIGEST_ENTRY, 1), /Truncated/);
  for (const flags of [0, 3, 8, 0xf]) {
    const b = Buffer.from(BLOB_DIGEST_ENTRY);
    b.writeUInt32LE(flags, 0);
    rejectsFormat(() => decodeTocEntry(b), /compression flags/);
  }
  const noName = Buffer.from(BLOB_DIGEST_ENTRY);
  noName.fill(0, 8, 24);
  rejectsFormat(() => decodeTocEntry(noName), /name/);
  const badName = Buffer.from(BLOB_DIGEST_ENTRY);
  badName[9] = 0xff;
  rejectsFormat(() => decodeTocEntry(badName), /name/);
  const huge = Buffer.from(BLOB_DIGEST_ENTRY);
  huge.writeBigUInt64LE(2n ** 63n, 64);
  rejectsFormat(() => decodeTocEntry(huge), /too large/);

  rejectsFormat(() => parseToc(Buffer.alloc(0)), /positive multiple/);
  rejectsFormat(() => parseToc(Buffer.alloc(129)), /positive multiple/);
  rejectsFormat(
    () => parseToc(Buffer.concat([BLOB_DIGEST_ENTRY, BLOB_DIGEST_ENTRY])),
    /duplicate entry "blob.digest"/,
  );
  rejectsFormat(() => parseToc(Buffer.alloc((MAX_TOC_ENTRIES + 1) * 128)), /at most/);
});

void test('encode: rejects what the format cannot hold', () => {
  const bad: TocEntry[] = [
    { ...blobDigestEntry, name: 'a-name-longer-than-16' },
    { ...blobDigestEntry, name: '' },
    { ...blobDigestEntry, digest: Buffer.alloc(31) },
    { ...blobDigestEntry, compressedOffset: -1 },
    { ...blobDigestEntry, uncompressedSize: 2 ** 53 },
    { ...blobDigestEntry, flags: TocFlag.COMPRESSION_ZSTD },
  ];
  for (const e of bad) {
    assert.throws(
      () => encodeTocEntry(e),
      (err: unknown) => err instanceof NydusError && err.code === 'ERR_INVALID_ARG',
    );
  }
  assert.throws(
    () => encodeToc([]),
    (err: unknown) => err instanceof NydusError,
  );
});
