import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { compress, decompress, encoderInfo } from '../../../src/codec/compress.js';
import { digest } from '../../../src/codec/digest.js';
import { readBlobTrailerFromBuffer } from '../../../src/format/blob/blob-layout.js';
import { decodeBlobMetaHeader, decodeCiTable } from '../../../src/format/blob/blob-meta.js';
import { ChunkFlag } from '../../../src/format/flags.js';
import { FIXTURE, readUpstreamFixture } from '../../helpers/fixtures.js';

/**
 * Chunk data of the fixture blobs (rafs-format.md 4.1, 5, 10 item 4): zstd chunks of the v6
 * blob-toc blob, raw LZ4 blocks of the leftover lz4 blob.
 */

const md5 = (b: Buffer): string => createHash('md5').update(b).digest('hex');

void test('fixture: zstd chunks of blobs/be7d77ee… decode, match blob.digest and the file md5s', (t) => {
  const blob = readUpstreamFixture(t, FIXTURE.v6Blob);
  if (blob === undefined) return;
  const trailer = readBlobTrailerFromBuffer(blob);
  const meta = trailer?.sections.get('blob.meta');
  const digests = trailer?.sections.get('blob.digest');
  assert.ok(meta !== undefined && digests !== undefined);
  const header = decodeBlobMetaHeader(blob, meta.offset + meta.size - 4096, 0);
  assert.equal(header.ciOffset, meta.offset);
  const ids = blob.subarray(digests.offset, digests.offset + digests.size);
  const table = decodeCiTable(
    header,
    blob.subarray(header.ciOffset, header.ciOffset + header.ciUncompressedSize),
    0,
    ids,
  );
  assert.equal(table.chunks.length, 2);

  const expected = [
    // [compressed offset, compressed size, uncompressed offset, uncompressed size, md5 of the file]
    [0, 4828, 0, 16931, '4709cf8873e419ecedc7d43fdee4a75f'], // /lib.rs
    [4828, 2974, 20480, 13400, '5442bc7dc9dc5f985c7594e23866ae6f'], // /sync_io.rs
  ] as const;
  let chunkBytes = 0;
  table.chunks.forEach((c, i) => {
    const [coff, csize, uoff, usize, sum] = expected[i]!;
    assert.deepEqual(
      [c.compressedOffset, c.compressedSize, c.uncompressedOffset, c.uncompressedSize],
      [coff, csize, uoff, usize],
    );
    assert.equal(c.flags & ChunkFlag.COMPRESSED, ChunkFlag.COMPRESSED);
    const stored = blob.subarray(c.compressedOffset, c.compressedOffset + c.compressedSize);
    const data = decompress('zstd', stored, c.uncompressedSize);
    assert.equal(md5(data), sum);
    assert.ok(digest('blake3', data).equals(c.id), `chunk ${i} id = H(blake3) of its data`);
    // Our encoder emits the same frame shape: single segment, 2-byte content size, no checksum
    // (frame header descriptor 0x60), and round-trips.
    const again = compress('zstd', data);
    assert.equal(stored[4], 0x60);
    assert.equal(again[4], stored[4]);
    assert.ok(decompress('zstd', again, data.length).equals(data));
    chunkBytes += c.compressedSize;
  });
  assert.equal(chunkBytes, trailer?.sections.get('image.blob')?.size);
});

// The fixture's chunks are exactly what libzstd 1.5.4 (`zstd -3 --no-check`) produces; the codec
// calls the system libzstd (Debian libzstd1), as upstream links libzstd. (The libzstd 1.5.7
// bundled with zstd-napi would emit 4825 and 2976 bytes instead of 4828 and 2974.)
void test('fixture: compress("zstd") reproduces the zstd chunks of blobs/be7d77ee… byte for byte', (t) => {
  assert.match(
    encoderInfo().zstd,
    /^system libzstd/,
    'the system libzstd (Debian libzstd1) must be loadable',
  );
  const blob = readUpstreamFixture(t, FIXTURE.v6Blob);
  if (blob === undefined) return;
  for (const [off, size, usize] of [
    [0, 4828, 16931],
    [4828, 2974, 13400],
  ] as const) {
    const stored = blob.subarray(off, off + size);
    const data = decompress('zstd', stored, usize);
    assert.ok(compress('zstd', data).equals(stored), `chunk at ${off} recompresses to the same bytes`);
  }
});

/**
 * Length of the raw LZ4 block starting at `src[start]` that decodes to `outSize` bytes: walks
 * the sequences (token, literal length, literals, offset, match length) until the output size
 * is reached. The last sequence has literals only.
 */
function lz4BlockLength(src: Buffer, start: number, outSize: number): number {
  let p = start;
  let out = 0;
  const byte = (): number => {
    const b = src[p++];
    if (b === undefined) throw new Error(`LZ4 block runs past the end at ${p}`);
    return b;
  };
  for (;;) {
    const token = byte();
    let literals = token >>> 4;
    if (literals === 15) {
      let b: number;
      do {
        b = byte();
        literals += b;
      } while (b === 255);
    }
    p += literals;
    out += literals;
    if (out >= outSize) {
      assert.equal(out, outSize, 'LZ4 block ends exactly at the chunk size');
      return p - start;
    }
    p += 2; // match offset
    let match = token & 15;
    if (match === 15) {
      let b: number;
      do {
        b = byte();
        match += b;
      } while (b === 255);
    }
    out += match + 4;
  }
}

void test('fixture: lz4 blob decodes chunk by chunk to the uncompressed blob', (t) => {
  const lz4 = readUpstreamFixture(t, FIXTURE.lz4Blob);
  const raw = readUpstreamFixture(t, FIXTURE.v5Blob);
  if (lz4 === undefined || raw === undefined) return;
  // Uncompressed sizes of the 23 chunks of 7334a259… in uncompressed-offset order (rafs-format.md 10.4).
  const sizes = [
    944, 1497, 203, 90, 3, 1174, 1048576, 367104, 307, 127, 340, 243, 441, 1048576, 7, 1016839, 2055, 1024,
    4096, 5000, 1024, 4096, 5000,
  ];
  assert.equal(
    sizes.reduce((a, b) => a + b, 0),
    raw.length,
  );
  let pos = 0;
  let uoff = 0;
  let rawChunks = 0;
  for (const size of sizes) {
    const want = raw.subarray(uoff, uoff + size);
    if (lz4.subarray(pos, pos + size).equals(want)) {
      rawChunks++;
      pos += size;
    } else {
      const len = lz4BlockLength(lz4, pos, size);
      assert.ok(len < size, 'a stored LZ4 block is smaller than its input');
      const got = decompress('lz4_block', lz4.subarray(pos, pos + len), size);
      assert.ok(got.equals(want), `chunk at uncompressed offset ${uoff}`);
      pos += len;
    }
    uoff += size;
  }
  assert.equal(pos, 994935);
  assert.equal(pos, lz4.length);
  assert.equal(rawChunks, 4);
});

// Upstream lz4 chunks are liblz4 LZ4_compress_default output (rafs-format.md 5); the codec calls
// the system liblz4 (lz4-napi's encoder would make different, valid blocks: 1001801 bytes).
void test('fixture: compress("lz4_block") reproduces the lz4 blob byte for byte', (t) => {
  assert.match(encoderInfo().lz4, /^system liblz4/, 'the system liblz4 (Debian liblz4-1) must be loadable');
  const lz4 = readUpstreamFixture(t, FIXTURE.lz4Blob);
  const raw = readUpstreamFixture(t, FIXTURE.v5Blob);
  if (lz4 === undefined || raw === undefined) return;
  const sizes = [
    944, 1497, 203, 90, 3, 1174, 1048576, 367104, 307, 127, 340, 243, 441, 1048576, 7, 1016839, 2055, 1024,
    4096, 5000, 1024, 4096, 5000,
  ];
  let uoff = 0;
  const parts: Buffer[] = [];
  for (const size of sizes) {
    const data = raw.subarray(uoff, uoff + size);
    const c = compress('lz4_block', data);
    parts.push(c.length < data.length ? c : data);
    uoff += size;
  }
  assert.ok(Buffer.concat(parts).equals(lz4));
});
