import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FormatError, NydusError } from '../../../src/errors/errors.js';
import {
  assertReadableChunk,
  BLOB_META_HEADER_SIZE,
  CiFlag,
  decodeBatchContext,
  decodeBlobMetaCacheFile,
  decodeBlobMetaHeader,
  decodeCiTable,
  decodeCiV1,
  decodeCiV2,
  decodeZranContext,
  encodeBatchContext,
  encodeBlobMetaCacheFile,
  encodeBlobMetaHeader,
  encodeCiEntries,
  encodeCiV1,
  encodeCiV2,
  encodeZranContext,
  MAX_CI_UNCOMPRESSED_SIZE,
  type BlobMetaHeader,
  type CiEntry,
  type ZranContext,
} from '../../../src/format/blob/blob-meta.js';
import { BlobFeature, ChunkFlag } from '../../../src/format/flags.js';
import { FIXTURE, readUpstreamFixture } from '../../helpers/fixtures.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

// The fixture's header (blobs/be7d77ee… at 8346), derived from rafs-format.md 4.2.1.
const FIXTURE_HEADER: BlobMetaHeader = {
  features: 0x7000_0021,
  ciCompressor: 'none',
  ciEntries: 2,
  ciOffset: 8314,
  ciCompressedSize: 32,
  ciUncompressedSize: 32,
  contextOffset: 0,
  contextSize: 0,
  contextCount: 0,
};
const FIXTURE_HEADER_HEX =
  '0bb10bb1 21000070 00000000 02000000 7a200000 00000000 20000000 00000000 20000000 00000000' +
  '00'.repeat(4096 - 40 - 4) +
  '0bb10bb1';

// ci v1 entries of the fixture: uncomp_info then comp_info (rafs-format.md 4.2.2).
// chunk 0: usize 16931 (-1 = 0x4222), uoff 0; csize 4828 (-1 = 0x12db), coff 0
// chunk 1: usize 13400 (-1 = 0x3457), uoff 0x5000; csize 2974 (-1 = 0xb9d), coff 0x12dc
const CI_V1_0 = hex('00000000 00202204  00000000 00b02d01');
const CI_V1_1 = hex('00500000 00704503  dc120000 00d0b900');
const chunk0: CiEntry = {
  compressedOffset: 0,
  compressedSize: 4828,
  uncompressedOffset: 0,
  uncompressedSize: 16931,
  flags: CiFlag.COMPRESSED,
  dataHigh: 0,
  dataLow: 0,
};
const chunk1: CiEntry = {
  compressedOffset: 4828,
  compressedSize: 2974,
  uncompressedOffset: 20480,
  uncompressedSize: 13400,
  flags: CiFlag.COMPRESSED,
  dataHigh: 0,
  dataLow: 0,
};

void test('golden: blob meta header encode/decode', () => {
  const bytes = hex(FIXTURE_HEADER_HEX);
  assert.equal(bytes.length, BLOB_META_HEADER_SIZE);
  assert.deepEqual(decodeBlobMetaHeader(bytes), FIXTURE_HEADER);
  assert.ok(encodeBlobMetaHeader(FIXTURE_HEADER).equals(bytes));
});

void test('golden: ci v1 entries encode/decode', () => {
  assert.deepEqual(decodeCiV1(CI_V1_0), chunk0);
  assert.deepEqual(decodeCiV1(CI_V1_1), chunk1);
  assert.equal(encodeCiV1(chunk0).toString('hex'), CI_V1_0.toString('hex'));
  assert.equal(encodeCiV1(chunk1).toString('hex'), CI_V1_1.toString('hex'));
  // A raw chunk: equal sizes, no flag.
  const raw: CiEntry = { ...chunk1, compressedSize: 13400, flags: 0 };
  assert.equal(encodeCiV1(raw).toString('hex'), '0050000000704503dc12000000704503');
  assert.deepEqual(decodeCiV1(encodeCiV1(raw)), raw);
});

void test('golden: ci v1 extremes use every field bit', () => {
  const max: CiEntry = {
    compressedOffset: 2 ** 40 - 1,
    compressedSize: 2 ** 24,
    uncompressedOffset: 2 ** 44 - 4096,
    uncompressedSize: 2 ** 24 - 1,
    flags: CiFlag.COMPRESSED,
    dataHigh: 0,
    dataLow: 0,
  };
  // uncomp_info = 0xffffe << 44 | 0xfff_ffff_f000 | 0xf << 8 = 0xffffefff_ffffff00 (usize-1 = 0xfffffe)
  assert.equal(encodeCiV1(max).toString('hex'), '00ffffffffefffff' + 'ffffffffffffffff');
  assert.deepEqual(decodeCiV1(encodeCiV1(max)), max);
  // Reserved bits 0-7 are ignored.
  const withReserved = Buffer.from(CI_V1_0);
  withReserved[0] = 0xff;
  assert.deepEqual(decodeCiV1(withReserved), chunk0);
});

void test('golden: ci v2 entries encode/decode', () => {
  // uoff 0x5000 -> 5; usize-1 0x3457; flags COMPRESSED|HAS_CRC32; coff 0x12dc; csize 0xb9e; crc e3069283
  const crcEntry: CiEntry = {
    compressedOffset: 4828,
    compressedSize: 2974,
    uncompressedOffset: 20480,
    uncompressedSize: 13400,
    flags: CiFlag.COMPRESSED | CiFlag.HAS_CRC32,
    dataHigh: 0,
    dataLow: 0xe3069283,
  };
  const crcHex = '05000000 57340011  dc120000 009e0b00  839206e3 00000000';
  assert.equal(encodeCiV2(crcEntry).toString('hex'), hex(crcHex).toString('hex'));
  assert.deepEqual(decodeCiV2(hex(crcHex)), crcEntry);

  // zran chunk: context 2, offset 0x1234 in its output; 16 MiB uncompressed; compressed size 0xffffff
  const zran: CiEntry = {
    compressedOffset: 2 ** 40 - 1,
    compressedSize: 0xffffff,
    uncompressedOffset: 0x10_0000_0000,
    uncompressedSize: 0x100_0000,
    flags: CiFlag.COMPRESSED | CiFlag.ZRAN,
    dataHigh: 2,
    dataLow: 0x1234,
  };
  const zranHex = '00000001 ffffff03  ffffffff ffffffff  34120000 02000000';
  assert.equal(encodeCiV2(zran).toString('hex'), hex(zranHex).toString('hex'));
  assert.deepEqual(decodeCiV2(hex(zranHex)), zran);
});

void test('ci entries: decoders reject truncation and unknown flags; encoders reject what the format cannot hold', () => {
  assert.throws(() => decodeCiV1(CI_V1_0.subarray(1)), FormatError);
  assert.throws(() => decodeCiV2(Buffer.alloc(23)), FormatError);
  assert.throws(
    () => decodeCiV2(hex('00000000 00000020 00000000 00000000 00000000 00000000')),
    /unknown flags 0x20/,
  );
  assert.throws(
    () => decodeCiV2(hex('00000000 00000006 00000000 00000000 00000000 00000000')),
    /ZRAN and BATCH/,
  );
  const invalid = (f: () => unknown): void => {
    assert.throws(f, (e: unknown) => e instanceof NydusError && e.code === 'ERR_INVALID_ARG');
  };
  invalid(() => encodeCiV1({ ...chunk0, uncompressedOffset: 100 }));
  invalid(() => encodeCiV1({ ...chunk0, uncompressedSize: 0 }));
  invalid(() => encodeCiV1({ ...chunk0, compressedSize: 2 ** 24 + 1 }));
  invalid(() => encodeCiV1({ ...chunk0, compressedOffset: 2 ** 40 }));
  invalid(() => encodeCiV1({ ...chunk0, flags: 0 }));
  invalid(() => encodeCiV1({ ...chunk0, flags: CiFlag.BATCH }));
  invalid(() => encodeCiV2({ ...chunk0, compressedSize: 2 ** 24 }));
  invalid(() => encodeCiV2({ ...chunk0, flags: 0x20 }));
  invalid(() => encodeCiV2({ ...chunk0, dataLow: -1 }));
});

void test('context tables: golden zran and batch contexts', () => {
  const z: ZranContext = {
    inOffset: 0x1122,
    outOffset: 0x3344,
    dictOffset: 0x8000,
    inLen: 5,
    outLen: 6,
    dictSize: 0x8000,
    ctxByte: 0xab,
    ctxBits: 3,
  };
  const zHex = '22110000 00000000 44330000 00000000 00800000 00000000 05000000 06000000 00800000 ab030000';
  assert.equal(encodeZranContext(z).toString('hex'), hex(zHex).toString('hex'));
  assert.deepEqual(decodeZranContext(hex(zHex)), z);
  const b = { compressedSize: 100, uncompressedSize: 0x10000 };
  assert.equal(encodeBatchContext(b).toString('hex'), '6400000000000100' + '00'.repeat(32));
  assert.deepEqual(decodeBatchContext(encodeBatchContext(b)), b);
  assert.throws(() => decodeZranContext(Buffer.alloc(39)), FormatError);
  assert.throws(() => decodeBatchContext(Buffer.alloc(39)), FormatError);
});

void test('fixture: the ci table of blobs/be7d77ee…', (t) => {
  const blob = readUpstreamFixture(t, FIXTURE.v6Blob);
  if (blob === undefined) return;
  assert.ok(blob.subarray(8346, 8346 + 4096).equals(hex(FIXTURE_HEADER_HEX)), 'header bytes');
  const header = decodeBlobMetaHeader(blob, 8346);
  const digests = blob.subarray(12954, 12954 + 64);
  const table = decodeCiTable(header, blob.subarray(8314, 8346), 0, digests);
  assert.equal(table.version, 1);
  assert.deepEqual(table.entries, [chunk0, chunk1]);
  assert.deepEqual(
    table.chunks.map((c) => [
      c.index,
      c.blobIndex,
      c.flags,
      c.compressedOffset,
      c.compressedSize,
      c.uncompressedOffset,
      c.uncompressedSize,
      c.fileOffset,
      c.crc32,
    ]),
    [
      [0, 0, ChunkFlag.COMPRESSED, 0, 4828, 0, 16931, 0, 0],
      [1, 0, ChunkFlag.COMPRESSED, 4828, 2974, 20480, 13400, 0, 0],
    ],
  );
  assert.ok(table.chunks[0]!.id.equals(digests.subarray(0, 32)));
  assert.ok(table.chunks[1]!.id.equals(digests.subarray(32)));
  const noIds = decodeCiTable(header, blob.subarray(8314, 8346), 3);
  assert.ok(noIds.chunks.every((c) => c.id.equals(Buffer.alloc(32)) && c.blobIndex === 3));
  assert.deepEqual(encodeCiEntries(header.features, table.entries), blob.subarray(8314, 8346));
});

function v2Header(over: Partial<BlobMetaHeader>): BlobMetaHeader {
  return {
    features: BlobFeature.ALIGNED | BlobFeature.CHUNK_INFO_V2,
    ciCompressor: 'none',
    ciEntries: 0,
    ciOffset: 0,
    ciCompressedSize: 0,
    ciUncompressedSize: 0,
    contextOffset: 0,
    contextSize: 0,
    contextCount: 0,
    ...over,
  };
}

void test('ci table v2: crc32, batch contexts', () => {
  const entries: CiEntry[] = [
    {
      compressedOffset: 0,
      compressedSize: 10,
      uncompressedOffset: 0,
      uncompressedSize: 100,
      flags: CiFlag.COMPRESSED | CiFlag.HAS_CRC32,
      dataHigh: 0,
      dataLow: 0xdeadbeef,
    },
    {
      compressedOffset: 10,
      compressedSize: 20,
      uncompressedOffset: 4096,
      uncompressedSize: 30,
      flags: CiFlag.BATCH | CiFlag.COMPRESSED,
      dataHigh: 0,
      dataLow: 0,
    },
    {
      compressedOffset: 10,
      compressedSize: 20,
      uncompressedOffset: 8192,
      uncompressedSize: 40,
      flags: CiFlag.BATCH | CiFlag.COMPRESSED,
      dataHigh: 0,
      dataLow: 30,
    },
  ];
  const ctx = encodeBatchContext({ compressedSize: 20, uncompressedSize: 70 });
  const ci = Buffer.concat([encodeCiEntries(BlobFeature.CHUNK_INFO_V2, entries), ctx]);
  const header = v2Header({
    features: BlobFeature.ALIGNED | BlobFeature.CHUNK_INFO_V2 | BlobFeature.BATCH,
    ciEntries: 3,
    ciCompressedSize: ci.length,
    ciUncompressedSize: ci.length,
    contextOffset: 72,
    contextSize: 40,
    contextCount: 1,
  });
  const table = decodeCiTable(decodeBlobMetaHeader(encodeBlobMetaHeader(header)), ci, 1);
  assert.equal(table.version, 2);
  assert.deepEqual(table.entries, entries);
  assert.deepEqual(table.batchContexts, [{ compressedSize: 20, uncompressedSize: 70 }]);
  assert.equal(table.chunks[0]!.crc32, 0xdeadbeef);
  assert.equal(table.chunks[0]!.flags, ChunkFlag.COMPRESSED | ChunkFlag.HAS_CRC32);
  assert.equal(table.chunks[2]!.flags, ChunkFlag.COMPRESSED | ChunkFlag.BATCH);
  assert.doesNotThrow(() => assertReadableChunk(table.entries[0]!, 0));
  assert.throws(
    () => assertReadableChunk(table.entries[1]!, 1),
    (e: unknown) => e instanceof NydusError && e.code === 'ERR_UNSUPPORTED',
  );

  // A member reaching past its batch.
  const bad = Buffer.from(ci);
  bad.writeUInt32LE(31, 2 * 24 + 16);
  assert.throws(() => decodeCiTable(header, bad, 1), /beyond the 70-byte batch/);
  // A batch index past the context table.
  bad.writeUInt32LE(0, 2 * 24 + 16);
  bad.writeUInt32LE(1, 2 * 24 + 20);
  assert.throws(() => decodeCiTable(header, bad, 1), /batch 1 of 1/);
  // A BATCH chunk on a blob without the feature.
  const noBatch = v2Header({ ciEntries: 3, ciCompressedSize: 72, ciUncompressedSize: 72 });
  assert.throws(() => decodeCiTable(noBatch, ci.subarray(0, 72), 1), /BATCH flag on a non-batch blob/);
});

void test('ci table v2: zran contexts and dictionaries', () => {
  const entries: CiEntry[] = [
    {
      compressedOffset: 0,
      compressedSize: 500,
      uncompressedOffset: 0,
      uncompressedSize: 1000,
      flags: CiFlag.COMPRESSED | CiFlag.ZRAN,
      dataHigh: 0,
      dataLow: 0,
    },
    {
      compressedOffset: 400,
      compressedSize: 700,
      uncompressedOffset: 4096,
      uncompressedSize: 2000,
      flags: CiFlag.COMPRESSED | CiFlag.ZRAN,
      dataHigh: 1,
      dataLow: 100,
    },
  ];
  const contexts: ZranContext[] = [
    {
      inOffset: 0,
      outOffset: 0,
      dictOffset: 0,
      inLen: 500,
      outLen: 1000,
      dictSize: 0,
      ctxByte: 0,
      ctxBits: 0,
    },
    {
      inOffset: 400,
      outOffset: 900,
      dictOffset: 0,
      inLen: 700,
      outLen: 2100,
      dictSize: 900,
      ctxByte: 0x5a,
      ctxBits: 3,
    },
  ];
  const dict = Buffer.alloc(900, 7);
  const ci = Buffer.concat([
    encodeCiEntries(BlobFeature.CHUNK_INFO_V2, entries),
    ...contexts.map(encodeZranContext),
    dict,
  ]);
  const features =
    BlobFeature.ALIGNED |
    BlobFeature.CHUNK_INFO_V2 |
    BlobFeature.ZRAN |
    BlobFeature.SEPARATE |
    BlobFeature.INLINED_FS_META;
  const header = v2Header({
    features,
    ciEntries: 2,
    ciCompressedSize: ci.length,
    ciUncompressedSize: ci.length,
    contextOffset: 48,
    contextSize: 80 + 900,
    contextCount: 2,
  });
  const table = decodeCiTable(header, ci, 0);
  assert.deepEqual(table.zranContexts, contexts);
  assert.ok(table.zranDicts.equals(dict));
  assert.deepEqual(table.entries, entries);
  assert.equal(table.chunks[1]!.flags, ChunkFlag.COMPRESSED);
  assert.throws(() => assertReadableChunk(table.entries[0]!, 0), /zran chunk/);

  const badCtx = Buffer.from(ci);
  badCtx.writeUInt32LE(2, 24 + 20);
  assert.throws(() => decodeCiTable(header, badCtx, 0), /zran context 2 of 2/);
  const badDict = Buffer.from(ci);
  badDict.writeUInt32LE(901, 48 + 40 + 32);
  assert.throws(
    () => decodeCiTable(header, badDict, 0),
    /dictionary \[0, \+901\) outside the 900-byte dictionary area/,
  );
});

void test('header: rejects bad magic, features, compressor, counts and sizes', () => {
  const good = encodeBlobMetaHeader(FIXTURE_HEADER);
  const mutate = (f: (b: Buffer) => void): Buffer => {
    const b = Buffer.from(good);
    f(b);
    return b;
  };
  const cases: [Buffer, RegExp][] = [
    [good.subarray(0, 4095), /Truncated/],
    [mutate((b) => b.writeUInt32LE(0, 0)), /magic/],
    [mutate((b) => b.writeUInt32LE(0, 4092)), /magic/],
    [mutate((b) => b.writeUInt32LE(0x1000, 4)), /unsupported features/],
    [mutate((b) => b.writeUInt32LE(0x8000_0000, 4)), /unsupported features/],
    [mutate((b) => b.writeUInt32LE(4, 8)), /ci compressor 4/],
    [mutate((b) => b.writeUInt32LE(2 ** 24 + 1, 12)), /ci entries/],
    // An absurd ci size.
    [mutate((b) => b.writeBigUInt64LE(2n ** 40n, 32)), /ci_uncompressed_size 1099511627776 exceeds/],
    [mutate((b) => b.writeBigUInt64LE(2n ** 63n, 32)), /too large/],
    [mutate((b) => b.writeBigUInt64LE(33n, 24)), /exceeds ci_uncompressed_size/],
    [mutate((b) => b.writeBigUInt64LE(16n, 24)), /uncompressed ci but sizes differ/],
    [mutate((b) => (b.writeBigUInt64LE(48n, 24), b.writeBigUInt64LE(48n, 32))), /need exactly 32 bytes/],
    [mutate((b) => b.writeUInt32LE(3, 12)), /3 ci entries need 48 bytes/],
    [mutate((b) => b.writeUInt32LE(0x7000_0029, 4)), /need CHUNK_INFO_V2/],
    [mutate((b) => b.writeUInt32LE(1, 56)), /context table without ZRAN or BATCH/],
  ];
  for (const [bytes, pattern] of cases) {
    assert.throws(
      () => decodeBlobMetaHeader(bytes),
      (e: unknown) => e instanceof FormatError && pattern.test(e.message),
      pattern.source,
    );
  }
  // The encoder refuses the same inconsistencies.
  assert.throws(
    () => encodeBlobMetaHeader({ ...FIXTURE_HEADER, ciUncompressedSize: MAX_CI_UNCOMPRESSED_SIZE + 1 }),
    (e: unknown) => e instanceof NydusError && e.code === 'ERR_INVALID_ARG',
  );
  const zran = v2Header({
    features: BlobFeature.CHUNK_INFO_V2 | BlobFeature.ZRAN,
    ciEntries: 1,
    ciCompressedSize: 64,
    ciUncompressedSize: 64,
  });
  assert.throws(
    () => encodeBlobMetaHeader({ ...zran, contextOffset: 24, contextSize: 40, contextCount: 2 }),
    /do not fit/,
  );
  assert.throws(
    () => encodeBlobMetaHeader({ ...zran, contextOffset: 8, contextSize: 40, contextCount: 1 }),
    /outside ci data/,
  );
  assert.doesNotThrow(() =>
    encodeBlobMetaHeader({ ...zran, contextOffset: 24, contextSize: 40, contextCount: 1 }),
  );
});

void test('ci table: data length and digest array must match the header', () => {
  assert.throws(() => decodeCiTable(FIXTURE_HEADER, Buffer.alloc(31), 0), /31 bytes, header says 32/);
  assert.throws(
    () => decodeCiTable(FIXTURE_HEADER, Buffer.alloc(32), 0, Buffer.alloc(63)),
    /63 bytes for 2 chunks/,
  );
});

void test('.blob.meta cache file: ci, zero padding to 4 KiB, header', () => {
  const ci = Buffer.concat([CI_V1_0, CI_V1_1]);
  const file = encodeBlobMetaCacheFile(FIXTURE_HEADER, ci);
  assert.equal(file.length, 4096 + 4096);
  assert.ok(file.subarray(0, 32).equals(ci));
  assert.ok(file.subarray(32, 4096).equals(Buffer.alloc(4064)));
  assert.ok(file.subarray(4096).equals(hex(FIXTURE_HEADER_HEX)));
  const back = decodeBlobMetaCacheFile(file);
  assert.deepEqual(back.header, FIXTURE_HEADER);
  assert.ok(back.ci.equals(ci));
  assert.deepEqual(decodeCiTable(back.header, back.ci, 0).entries, [chunk0, chunk1]);

  // The zran fixture's shape: 660112 bytes of ci data -> 663552 + 4096 = 667648 bytes.
  const big = v2Header({
    features: 0xf,
    ciEntries: 163,
    ciCompressedSize: 660112,
    ciUncompressedSize: 660112,
    contextOffset: 163 * 24,
    contextSize: 660112 - 163 * 24,
    contextCount: 21,
  });
  assert.equal(encodeBlobMetaCacheFile(big, Buffer.alloc(660112)).length, 667648);

  assert.throws(() => decodeBlobMetaCacheFile(file.subarray(0, 8191)), /not a positive multiple of 4096/);
  assert.throws(
    () => decodeBlobMetaCacheFile(Buffer.concat([Buffer.alloc(4096), file])),
    /do not pad to 8192/,
  );
  assert.throws(() => decodeBlobMetaCacheFile(Buffer.alloc(0)), FormatError);
  assert.throws(
    () => encodeBlobMetaCacheFile(FIXTURE_HEADER, ci.subarray(1)),
    (e: unknown) => e instanceof NydusError && e.code === 'ERR_INVALID_ARG',
  );
});
