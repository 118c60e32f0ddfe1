import assert from 'node:assert/strict';
import { test } from 'node:test';
import { NydusError } from '../../../src/errors/errors.js';
import { blobIdOfFile } from '../../../src/format/blob/blob-id.js';
import {
  bufferReadAt,
  extractInlineBootstrap,
  isLikelyInlineMetaBlob,
  readBlobMeta,
  readBlobTrailer,
  readTocEntry,
} from '../../../src/format/blob/blob-layout.js';
import {
  BLOB_META_MAGIC,
  decodeBlobMetaCacheFile,
  decodeBlobMetaHeader,
  decodeCiTable,
} from '../../../src/format/blob/blob-meta.js';
import { decodeTrailerHeader, encodeTrailerHeader } from '../../../src/format/blob/tar-header.js';
import { parseToc } from '../../../src/format/blob/toc.js';
import type { BlobInfo } from '../../../src/format/model.js';
import { FIXTURE, readUpstreamFixture } from '../../helpers/fixtures.js';

/**
 * Malformed input: every decoder and the blob layout readers must end in a NydusError or a
 * correct result on arbitrary bytes, quickly, never in a RangeError or a hang.
 */

/** xorshift32, so failures reproduce. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

function randomBytes(next: () => number, n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = next() & 0xff;
  return b;
}

const BLOB_INFO: BlobInfo = {
  index: 0,
  blobId: 'be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef',
  chunkSize: 0x100000,
  chunkCount: 2,
  compressor: 'zstd',
  digester: 'blake3',
  features: 0x7000_0021,
  compressedSize: 14554,
  uncompressedSize: 0x9000,
  readaheadOffset: 0,
  readaheadSize: 0,
  ciCompressor: 'none',
  ciOffset: 8314,
  ciCompressedSize: 32,
  ciUncompressedSize: 32,
  tocSize: 1024,
  tocDigest: Buffer.alloc(32),
  metaDigest: Buffer.alloc(32),
  metaSize: 0,
  cipher: 0,
  deviceBlocks: 9,
  mappedBlkaddr: 512,
};

async function clean(what: string, f: () => unknown): Promise<void> {
  try {
    await f();
  } catch (e) {
    if (!(e instanceof NydusError)) {
      assert.fail(
        `${what}: non-NydusError escaped: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`,
      );
    }
  }
}

/** Run every reader over `bytes`. */
async function probe(bytes: Buffer, label: string): Promise<void> {
  const readAt = bufferReadAt(bytes);
  await clean(`${label} trailer`, async () => {
    const t = await readBlobTrailer(readAt, bytes.length);
    for (const e of t?.toc?.entries ?? []) {
      if (e.name !== 'image.blob')
        await clean(`${label} toc entry`, () => readTocEntry(readAt, bytes.length, e));
    }
  });
  await clean(`${label} bootstrap`, () => extractInlineBootstrap(readAt, bytes.length));
  await clean(`${label} blob meta`, () => readBlobMeta(readAt, BLOB_INFO, bytes.length));
  await clean(`${label} blob id`, () => blobIdOfFile(bytes));
  await clean(`${label} header`, () => {
    const h = decodeBlobMetaHeader(bytes, 8346);
    return decodeCiTable(
      h,
      bytes.subarray(8314, 8314 + Math.min(h.ciUncompressedSize, 4096)),
      0,
      bytes.subarray(12954, 13018),
    );
  });
  await clean(`${label} cache file`, () => decodeBlobMetaCacheFile(bytes));
  await clean(`${label} toc`, () => parseToc(bytes.subarray(13530, 14042)));
  await clean(`${label} tar`, () => decodeTrailerHeader(bytes, Math.max(0, bytes.length - 512)));
  assert.equal(typeof isLikelyInlineMetaBlob(bytes), 'boolean');
}

void test('fuzz: every truncation of the fixture blob, from either end', async (t) => {
  const blob = readUpstreamFixture(t, FIXTURE.v6Blob);
  if (blob === undefined) return;
  const start = Date.now();
  for (let n = 0; n <= blob.length; n++) {
    const prefix = blob.subarray(0, n);
    await clean(`prefix ${n}`, () => readBlobTrailer(bufferReadAt(prefix), n));
    const suffix = blob.subarray(blob.length - n);
    await clean(`suffix ${n}`, () => readBlobTrailer(bufferReadAt(suffix), n));
    await clean(`suffix ${n} bootstrap`, () => extractInlineBootstrap(bufferReadAt(suffix), n));
  }
  // The full set of readers on a sample of truncations.
  for (let n = 0; n <= blob.length; n += 97) await probe(blob.subarray(0, n), `prefix ${n}`);
  assert.ok(Date.now() - start < 15000, 'truncations run quickly');
});

void test('fuzz: 2000 seeded single-byte flips of the fixture blob', async (t) => {
  const blob = readUpstreamFixture(t, FIXTURE.v6Blob);
  if (blob === undefined) return;
  const next = rng(0x6e796475);
  const start = Date.now();
  for (let i = 0; i < 2000; i++) {
    const b = Buffer.from(blob);
    // Half the flips land in the metadata after the chunk data, where the parsers look.
    const at = i % 2 === 0 ? next() % b.length : 7802 + (next() % (b.length - 7802));
    const v = next() & 0xff;
    b[at] = v === b[at] ? v ^ 0x80 : v;
    await probe(b, `flip ${i} @${at}`);
  }
  assert.ok(Date.now() - start < 15000, 'flips run quickly');
});

void test('fuzz: zero-filled and random buffers', async () => {
  const next = rng(42);
  for (const n of [0, 1, 16, 511, 512, 513, 1024, 4095, 4096, 8192, 14554, 65536]) {
    await probe(Buffer.alloc(n), `zeros ${n}`);
    for (let k = 0; k < 5; k++) await probe(randomBytes(next, n), `random ${n}/${k}`);
  }
});

void test('fuzz: random blob meta headers and ci data', async () => {
  const next = rng(7);
  for (let i = 0; i < 500; i++) {
    const h = randomBytes(next, 4096);
    h.writeUInt32LE(BLOB_META_MAGIC, 0);
    h.writeUInt32LE(BLOB_META_MAGIC, 4092);
    // Keep some fields small so the deeper checks are reached.
    if (i % 2 === 0) {
      h.writeUInt32LE(next() & 0x0fff_00ff, 4);
      h.writeUInt32LE(next() % 4, 8);
      h.writeUInt32LE(next() % 64, 12);
      for (const off of [16, 24, 32, 40, 48]) h.writeBigUInt64LE(BigInt(next() % 2048), off);
      h.writeUInt32LE(next() % 8, 56);
    }
    await clean(`header ${i}`, () => {
      const header = decodeBlobMetaHeader(h);
      const ci = randomBytes(next, Math.min(header.ciUncompressedSize, 1 << 20));
      return decodeCiTable(header, ci, 0);
    });
  }
});

void test('fuzz: lying sizes end in a FormatError, without big allocations', async () => {
  // A trailer header claiming more bytes than precede it.
  const past = Buffer.concat([Buffer.alloc(1000), encodeTrailerHeader('rafs.blob.toc', 0o77777777777)]);
  await assert.rejects(
    readBlobTrailer(bufferReadAt(past), past.length),
    (e: unknown) => e instanceof NydusError,
  );
  // A blob table entry with an absurd ci size: refused before any read.
  let reads = 0;
  const counting = (): Promise<Buffer> => {
    reads++;
    return Promise.resolve(Buffer.alloc(0));
  };
  await assert.rejects(
    readBlobMeta(counting, { ...BLOB_INFO, ciCompressedSize: 2 ** 50, ciUncompressedSize: 2 ** 50 }),
    (e: unknown) => e instanceof NydusError && e.code === 'ERR_FORMAT',
  );
  assert.equal(reads, 0);
  // A ToC entry claiming a huge bootstrap: refused before reading or decompressing.
  await assert.rejects(
    readTocEntry(counting, 1 << 20, {
      flags: 2,
      compressor: 'zstd',
      name: 'image.boot',
      digest: Buffer.alloc(32),
      compressedOffset: 0,
      compressedSize: 100,
      uncompressedSize: 2 ** 40,
    }),
    (e: unknown) => e instanceof NydusError && e.code === 'ERR_FORMAT',
  );
  assert.equal(reads, 0);
});
