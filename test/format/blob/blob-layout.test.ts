import assert from 'node:assert/strict';
import { test } from 'node:test';
import { compress } from '../../../src/codec/compress.js';
import { digest, sha256 } from '../../../src/codec/digest.js';
import { FormatError, NydusError } from '../../../src/errors/errors.js';
import { BlobIdHasher, blobIdOfFile } from '../../../src/format/blob/blob-id.js';
import {
  bufferReadAt,
  extractInlineBootstrap,
  isLikelyInlineMetaBlob,
  readBlobMeta,
  readBlobTrailer,
  readBlobTrailerFromBuffer,
  readTocEntry,
  type ReadAt,
} from '../../../src/format/blob/blob-layout.js';
import {
  CiFlag,
  encodeBlobMetaHeader,
  encodeCiEntries,
  type CiEntry,
} from '../../../src/format/blob/blob-meta.js';
import { encodeTrailerHeader } from '../../../src/format/blob/tar-header.js';
import { encodeToc, makeTocEntry, SectionName, type TocEntry } from '../../../src/format/blob/toc.js';
import { BlobFeature, ChunkFlag } from '../../../src/format/flags.js';
import type { BlobInfo } from '../../../src/format/model.js';
import { FIXTURE, readUpstreamFixture } from '../../helpers/fixtures.js';

const V6_BLOB_ID = 'be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef';

/** The blob table entry of rafs-v6-2.2.boot for the fixture blob (rafs-format.md 3.5). */
const FIXTURE_BLOB_INFO: BlobInfo = {
  index: 0,
  blobId: V6_BLOB_ID,
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
  tocDigest: Buffer.from('cfc89ed0739aef4eb1bf0904f0dfdb1c857134eca7319465baae95a99b84acde', 'hex'),
  metaDigest: Buffer.alloc(32),
  metaSize: 0,
  cipher: 0,
  deviceBlocks: 9,
  mappedBlkaddr: 512,
};

void test('fixture: trailer walk of blobs/be7d77ee…', async (t) => {
  const blob = readUpstreamFixture(t, FIXTURE.v6Blob);
  if (blob === undefined) return;
  assert.equal(blob.length, 14554);
  const trailer = await readBlobTrailer(bufferReadAt(blob), blob.length);
  assert.ok(trailer !== undefined);
  assert.deepEqual(
    trailer.list.map((s) => [s.name, s.offset, s.size, s.headerOffset]),
    [
      ['image.blob', 0, 7802, 7802],
      ['blob.meta', 8314, 4128, 12442],
      ['blob.digest', 12954, 64, 13018],
      ['rafs.blob.toc', 13530, 512, 14042],
    ],
  );
  assert.equal(trailer.sections.get('blob.meta')?.offset, 8314);
  const toc = trailer.toc;
  assert.ok(toc !== undefined);
  assert.equal(toc.offset, 13530);
  assert.equal(toc.size, FIXTURE_BLOB_INFO.tocSize);
  assert.equal(toc.entries.length, 4);
  assert.ok(toc.digest.equals(FIXTURE_BLOB_INFO.tocDigest));
  assert.ok(toc.digest.equals(sha256(blob.subarray(13530))), 'ToC digest = sha256(entries ‖ header)');

  // Every entry's sha256 matches its content. image.blob: the chunk data plus its tar header
  // (its recorded offset is the end of the chunk data, so it is not read through the ToC).
  for (const e of toc.entries) {
    if (e.name === SectionName.IMAGE_BLOB) {
      assert.ok(e.digest.equals(sha256(blob.subarray(0, 7802 + 512))));
      continue;
    }
    const content = await readTocEntry(bufferReadAt(blob), blob.length, e);
    assert.ok(
      content.equals(blob.subarray(e.compressedOffset, e.compressedOffset + e.compressedSize)),
      e.name,
    );
  }
  // The same walk over the buffer directly.
  assert.deepEqual(readBlobTrailerFromBuffer(blob), trailer);
  assert.equal(await extractInlineBootstrap(bufferReadAt(blob), blob.length), undefined);
  assert.ok(isLikelyInlineMetaBlob(blob.subarray(blob.length - 512)));
  assert.ok(isLikelyInlineMetaBlob(blob));
  assert.ok(!isLikelyInlineMetaBlob(blob.subarray(0, 8000)));
});

void test('fixture: readBlobMeta of blobs/be7d77ee…', async (t) => {
  const blob = readUpstreamFixture(t, FIXTURE.v6Blob);
  if (blob === undefined) return;
  const reads: [number, number][] = [];
  const readAt: ReadAt = (off, len) => {
    reads.push([off, len]);
    return Promise.resolve(blob.subarray(off, off + len));
  };
  const table = await readBlobMeta(readAt, FIXTURE_BLOB_INFO, blob.length);
  assert.deepEqual(reads, [[8314, 32 + 4096]]);
  assert.equal(table.header.ciEntries, 2);
  assert.deepEqual(
    table.chunks.map((c) => [
      c.compressedOffset,
      c.compressedSize,
      c.uncompressedOffset,
      c.uncompressedSize,
      c.flags,
    ]),
    [
      [0, 4828, 0, 16931, ChunkFlag.COMPRESSED],
      [4828, 2974, 20480, 13400, ChunkFlag.COMPRESSED],
    ],
  );
  await assert.doesNotReject(readBlobMeta(bufferReadAt(blob), FIXTURE_BLOB_INFO));

  const rejects = async (info: Partial<BlobInfo>, pattern: RegExp, code = 'ERR_FORMAT'): Promise<void> => {
    await assert.rejects(
      readBlobMeta(bufferReadAt(blob), { ...FIXTURE_BLOB_INFO, ...info }, blob.length),
      (e: unknown) => e instanceof NydusError && e.code === code && pattern.test(e.message),
      pattern.source,
    );
  };
  await rejects({ chunkCount: 3 }, /ci_entries 2 disagrees with blob table 3/);
  await rejects({ ciOffset: 8313 }, /magic/);
  await rejects({ ciCompressor: 'zstd' }, /ci_compressor/);
  await rejects({ ciUncompressedSize: 48 }, /ci_uncompressed_size/);
  await rejects({ features: 0x7000_0025 }, /features/);
  await rejects({ ciCompressedSize: 2 ** 40 }, /at most/);
  await rejects({ ciOffset: 14000 }, /lies past the blob/);
  await rejects({ features: 0x7000_0121 }, /encrypted/, 'ERR_UNSUPPORTED');
  await rejects({ ciOffset: 0, ciCompressedSize: 0, ciUncompressedSize: 0 }, /no blob meta/, 'ERR_NOT_FOUND');
});

// ---------------------------------------------------------------------------------------------
// Blobs built from our own encoders (rafs-format.md 4.3)

interface Built {
  blob: Buffer;
  blobId: string;
  bootstrap: Buffer;
  ciOffset: number;
  ci: Buffer;
}

/** A v6 blob: chunks ‖ image.blob ‖ ci ‖ ci header ‖ blob.meta [‖ digests ‖ blob.digest] [‖ bootstrap ‖ image.boot] [‖ ToC]. */
function buildBlob(opts: { toc: boolean; bootstrap?: Buffer }): Built {
  const data = [Buffer.from('hello nydus '.repeat(2000)), sha256(Buffer.from('x')).subarray(0, 20)];
  const stored = data.map((d) => {
    const c = compress('zstd', d);
    return c.length < d.length ? c : d;
  });
  const entries: CiEntry[] = [];
  let coff = 0;
  let uoff = 0;
  stored.forEach((s, i) => {
    const size = data[i]!.length;
    entries.push({
      compressedOffset: coff,
      compressedSize: s.length,
      uncompressedOffset: uoff,
      uncompressedSize: size,
      flags: s.length !== size ? CiFlag.COMPRESSED : 0,
      dataHigh: 0,
      dataLow: 0,
    });
    coff += s.length;
    uoff += Math.ceil(size / 4096) * 4096;
  });
  assert.equal(entries[1]!.flags, 0, 'the second chunk is stored raw');

  const parts: Buffer[] = [];
  const hasher = new BlobIdHasher();
  let pos = 0;
  const write = (b: Buffer, hashed = true): number => {
    const at = pos;
    parts.push(b);
    if (hashed) hasher.update(b);
    pos += b.length;
    return at;
  };
  const tocEntries: TocEntry[] = [];
  const features =
    BlobFeature.ALIGNED |
    BlobFeature.CAP_TAR_TOC |
    BlobFeature.HAS_TAR_HEADER |
    (opts.toc ? BlobFeature.HAS_TOC | BlobFeature.INLINED_CHUNK_DIGEST : 0) |
    (opts.bootstrap !== undefined ? BlobFeature.INLINED_FS_META : 0);

  const chunks = Buffer.concat(stored);
  write(chunks);
  write(encodeTrailerHeader(SectionName.IMAGE_BLOB, chunks.length));
  tocEntries.push({
    ...makeTocEntry(SectionName.IMAGE_BLOB, 'none', 0, chunks),
    digest: hasher.peek(),
    uncompressedSize: uoff,
  });
  const ci = encodeCiEntries(features, entries);
  const ciOffset = write(ci);
  const header = encodeBlobMetaHeader({
    features,
    ciCompressor: 'none',
    ciEntries: entries.length,
    ciOffset,
    ciCompressedSize: ci.length,
    ciUncompressedSize: ci.length,
    contextOffset: 0,
    contextSize: 0,
    contextCount: 0,
  });
  const headerOffset = write(header);
  write(encodeTrailerHeader(SectionName.BLOB_META, ci.length + header.length));
  tocEntries.push(makeTocEntry(SectionName.BLOB_META, 'none', ciOffset, ci));
  tocEntries.push(makeTocEntry(SectionName.BLOB_META_HEADER, 'none', headerOffset, header));
  if (opts.toc) {
    const digests = Buffer.concat(data.map((d) => digest('blake3', d)));
    const at = write(digests, false);
    write(encodeTrailerHeader(SectionName.BLOB_DIGEST, digests.length));
    tocEntries.push(makeTocEntry(SectionName.BLOB_DIGEST, 'none', at, digests));
  }
  const bootstrap = opts.bootstrap ?? Buffer.alloc(0);
  if (opts.bootstrap !== undefined) {
    const z = compress('zstd', bootstrap);
    const useZstd = opts.toc && z.length < bootstrap.length;
    const at = write(useZstd ? z : bootstrap);
    write(encodeTrailerHeader(SectionName.IMAGE_BOOT, useZstd ? z.length : bootstrap.length));
    tocEntries.push(
      makeTocEntry(
        SectionName.IMAGE_BOOT,
        useZstd ? 'zstd' : 'none',
        at,
        bootstrap,
        useZstd ? z.length : bootstrap.length,
      ),
    );
  }
  if (opts.toc) write(encodeToc(tocEntries));
  return { blob: Buffer.concat(parts), blobId: hasher.blobId(), bootstrap, ciOffset, ci };
}

function syntheticBootstrap(): Buffer {
  const b = Buffer.alloc(20480);
  for (let i = 0; i < b.length; i++) b[i] = (i * 7) % 13 === 0 ? i & 0xff : 0;
  return b;
}

void test('inline-meta blob with ToC: zstd bootstrap extracted and verified', async () => {
  const bootstrap = syntheticBootstrap();
  const { blob, blobId } = buildBlob({ toc: true, bootstrap });
  const readAt = bufferReadAt(blob);
  const trailer = await readBlobTrailer(readAt, blob.length);
  assert.deepEqual(
    trailer?.list.map((s) => s.name),
    ['image.blob', 'blob.meta', 'blob.digest', 'image.boot', 'rafs.blob.toc'],
  );
  const boot = trailer?.sections.get('image.boot');
  assert.ok(boot !== undefined && boot.size < bootstrap.length, 'stored compressed');
  assert.equal(trailer?.toc?.entries.find((e) => e.name === 'image.boot')?.compressor, 'zstd');
  const got = await extractInlineBootstrap(readAt, blob.length);
  assert.ok(got?.equals(bootstrap));
  assert.equal(blobIdOfFile(blob), blobId, 'blob id = hash of the write path (digest array excluded)');
  assert.ok(isLikelyInlineMetaBlob(blob.subarray(-512)));

  // A bootstrap that does not match the ToC digest.
  const tampered = Buffer.from(blob);
  const entryAt = trailer.toc.offset + 4 * 128;
  assert.equal(tampered.toString('latin1', entryAt + 8, entryAt + 18), 'image.boot');
  tampered.writeUInt8(tampered.readUInt8(entryAt + 30) ^ 0xff, entryAt + 30);
  await assert.rejects(
    extractInlineBootstrap(bufferReadAt(tampered), tampered.length),
    (e: unknown) => e instanceof NydusError && e.code === 'ERR_DIGEST',
  );
  // Corrupt compressed bytes.
  const corrupt = Buffer.from(blob);
  corrupt.fill(0xee, boot.offset + 8, boot.offset + 40);
  await assert.rejects(
    extractInlineBootstrap(bufferReadAt(corrupt), corrupt.length),
    (e: unknown) => e instanceof NydusError,
  );
});

void test('inline-meta blob without ToC: raw bootstrap', async () => {
  const bootstrap = syntheticBootstrap();
  const { blob, blobId } = buildBlob({ toc: false, bootstrap });
  const trailer = await readBlobTrailer(bufferReadAt(blob), blob.length);
  assert.deepEqual(
    trailer?.list.map((s) => s.name),
    ['image.blob', 'blob.meta', 'image.boot'],
  );
  assert.equal(trailer?.toc, undefined);
  assert.equal(trailer?.sections.get('image.boot')?.size, bootstrap.length);
  const got = await extractInlineBootstrap(bufferReadAt(blob), blob.length);
  assert.ok(got?.equals(bootstrap));
  assert.equal(blobIdOfFile(blob), blobId);
  assert.equal(blobId, sha256(blob).toString('hex'));
});

void test('blob-toc blob without bootstrap: no bootstrap, blob meta readable', async () => {
  const { blob, ciOffset, ci } = buildBlob({ toc: true });
  assert.equal(await extractInlineBootstrap(bufferReadAt(blob), blob.length), undefined);
  const info: BlobInfo = {
    ...FIXTURE_BLOB_INFO,
    ciOffset,
    ciCompressedSize: ci.length,
    ciUncompressedSize: ci.length,
    features: 0x7000_0021,
  };
  const table = await readBlobMeta(bufferReadAt(blob), info, blob.length);
  assert.deepEqual(
    table.chunks.map((c) => c.flags),
    [ChunkFlag.COMPRESSED, 0],
  );
});

void test('plain blobs have no trailer', async () => {
  const { blob } = buildBlob({ toc: false });
  // A v6 plain blob: chunks ‖ ci ‖ ci header (strip the tar headers).
  const trailer = readBlobTrailerFromBuffer(blob);
  assert.ok(trailer !== undefined);
  const plain = Buffer.concat([
    blob.subarray(0, trailer.list[0]!.size),
    blob.subarray(trailer.sections.get('blob.meta')!.offset, trailer.sections.get('blob.meta')!.headerOffset),
  ]);
  assert.equal(await readBlobTrailer(bufferReadAt(plain), plain.length), undefined);
  assert.equal(await extractInlineBootstrap(bufferReadAt(plain), plain.length), undefined);
  assert.ok(!isLikelyInlineMetaBlob(plain));
  for (const size of [0, 1, 511]) {
    assert.equal(await readBlobTrailer(bufferReadAt(Buffer.alloc(size)), size), undefined);
  }
  // A well-formed tar header with a name no blob uses is not a trailer.
  const tarLike = Buffer.concat([Buffer.alloc(10), encodeTrailerHeader('README.md', 10)]);
  assert.equal(await readBlobTrailer(bufferReadAt(tarLike), tarLike.length), undefined);
  assert.ok(!isLikelyInlineMetaBlob(tarLike));
});

void test('trailer walk: structural errors', async () => {
  const walk = (b: Buffer): Promise<unknown> => readBlobTrailer(bufferReadAt(b), b.length);
  const isFormat = (pattern: RegExp) => (e: unknown) => e instanceof FormatError && pattern.test(e.message);
  // A header claiming more bytes than precede it.
  const past = Buffer.concat([Buffer.alloc(100), encodeTrailerHeader('image.boot', 101)]);
  await assert.rejects(walk(past), isFormat(/claims 101 bytes, only 100 precede/));
  // Too few bytes left for the next header.
  const short = Buffer.concat([Buffer.alloc(100), encodeTrailerHeader('image.boot', 50)]);
  await assert.rejects(
    walk(short),
    isFormat(/50 bytes before section "image.boot" cannot hold a tar header/),
  );
  // The next header is garbage.
  const garbage = Buffer.concat([Buffer.alloc(600), encodeTrailerHeader('image.boot', 50)]);
  await assert.rejects(walk(garbage), isFormat(/magic/));
  // Duplicates.
  const dup = Buffer.concat([encodeTrailerHeader('blob.meta', 0), encodeTrailerHeader('blob.meta', 0)]);
  await assert.rejects(walk(dup), isFormat(/duplicate section "blob.meta"/));
  // Sections with unknown names are walked over, up to the limit.
  const many = Buffer.concat([
    ...Array.from({ length: 15 }, (_, i) => encodeTrailerHeader(`s${i}`, 0)),
    encodeTrailerHeader('image.boot', 0),
  ]);
  assert.equal(readBlobTrailerFromBuffer(many)?.list.length, 16);
  const tooMany = Buffer.concat([encodeTrailerHeader('s-extra', 0), many]);
  await assert.rejects(walk(tooMany), isFormat(/more than 16 sections/));
  // A ToC that is not last.
  const tocFirst = Buffer.concat([
    encodeToc([makeTocEntry('image.boot', 'none', 0, Buffer.alloc(0))]),
    encodeTrailerHeader('image.boot', 0),
  ]);
  await assert.rejects(walk(tocFirst), isFormat(/ToC is not the last section/));
  // A ToC entry that disagrees with its section.
  const boot = Buffer.from('boot');
  const bad = Buffer.concat([
    boot,
    encodeTrailerHeader('image.boot', 4),
    encodeToc([makeTocEntry('image.boot', 'none', 600, boot, 4)]),
  ]);
  await assert.rejects(
    walk(bad),
    isFormat(/entry "image.boot" \[600, \+4\) does not end before the ToC at 516/),
  );
  const bad2 = Buffer.concat([
    boot,
    encodeTrailerHeader('image.boot', 4),
    encodeToc([makeTocEntry('image.boot', 'none', 1, boot, 3)]),
  ]);
  await assert.rejects(walk(bad2), isFormat(/disagrees with section \[0, \+4\)/));
  // A ToC without the image.boot entry of an image.boot section.
  const missing = Buffer.concat([
    boot,
    encodeTrailerHeader('image.boot', 4),
    encodeToc([makeTocEntry('other', 'none', 0, boot)]),
  ]);
  await assert.rejects(
    extractInlineBootstrap(bufferReadAt(missing), missing.length),
    isFormat(/no "image.boot" entry/),
  );
  const good = Buffer.concat([
    boot,
    encodeTrailerHeader('image.boot', 4),
    encodeToc([makeTocEntry('image.boot', 'none', 0, boot)]),
  ]);
  assert.ok((await extractInlineBootstrap(bufferReadAt(good), good.length))?.equals(boot));
});

void test('readAt failures surface as NydusError', async () => {
  const { blob } = buildBlob({ toc: true });
  const failing: ReadAt = () => Promise.reject(new Error('disk on fire'));
  await assert.rejects(
    readBlobTrailer(failing, blob.length),
    (e: unknown) => e instanceof NydusError && e.code === 'ERR_IO' && /disk on fire/.test(e.message),
  );
  const short: ReadAt = (off, len) => Promise.resolve(blob.subarray(off, off + len - 1));
  await assert.rejects(
    readBlobTrailer(short, blob.length),
    (e: unknown) => e instanceof NydusError && e.code === 'ERR_IO',
  );
  await assert.rejects(
    readBlobTrailer(bufferReadAt(blob), -1),
    (e: unknown) => e instanceof NydusError && e.code === 'ERR_INVALID_ARG',
  );
  // A size larger than the data: reads past the end come back short.
  await assert.rejects(
    readBlobTrailer(bufferReadAt(blob), blob.length + 1),
    (e: unknown) => e instanceof NydusError,
  );
});
