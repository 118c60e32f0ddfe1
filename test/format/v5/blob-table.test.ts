import { deepEqual, equal, throws } from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  decodeV5BlobTable,
  decodeV5ExtBlobTable,
  encodeV5BlobTable,
  encodeV5ExtBlobTable,
  v5BlobTableSize,
  type V5BlobEntry,
  type V5ExtBlobEntry,
} from '../../../src/format/v5/blob-table.js';

const ENTRIES: V5BlobEntry[] = [
  { readaheadOffset: 0, readaheadSize: 0x1000, blobId: 'abc' },
  { readaheadOffset: 1, readaheadSize: 2, blobId: 'de' },
];

// Derived from rafs-format.md 2.5: header, id, one NUL between entries, zero pad to 8.
const ENTRIES_HEX = [
  '00000000', // readahead_offset
  '00100000', // readahead_size 0x1000
  '616263', // "abc"
  '00', // separator
  '01000000',
  '02000000',
  '6465', // "de"
  '0000', // padding: 22 -> 24 bytes
].join('');

const EXT: V5ExtBlobEntry[] = [
  { chunkCount: 23, features: 0x4000_0000, uncompressedSize: 0x35_8a1e, compressedSize: 0x1_0000_0010 },
];

const EXT_HEX = [
  '17000000', // chunk_count 23
  '00000040', // features CAP_TAR_TOC
  '1e8a350000000000', // uncompressed_size
  '1000000001000000', // compressed_size
  '00'.repeat(40), // reserved
].join('');

void describe('v5 blob table (golden)', () => {
  void it('encodes entries with separators and padding', () => {
    equal(encodeV5BlobTable(ENTRIES).toString('hex'), ENTRIES_HEX);
    equal(v5BlobTableSize(ENTRIES), 24);
  });

  void it('decodes the golden bytes back', () => {
    deepEqual(decodeV5BlobTable(Buffer.from(ENTRIES_HEX, 'hex'), 0, 24), ENTRIES);
  });

  void it('decodes a table at an offset inside a larger buffer', () => {
    const buf = Buffer.concat([
      Buffer.alloc(16, 0xee),
      Buffer.from(ENTRIES_HEX, 'hex'),
      Buffer.alloc(8, 0xee),
    ]);
    deepEqual(decodeV5BlobTable(buf, 16, 24), ENTRIES);
  });

  void it('needs no padding for a 64-character id and reads an empty table as no blobs', () => {
    const one: V5BlobEntry[] = [{ readaheadOffset: 0, readaheadSize: 0, blobId: 'f'.repeat(64) }];
    const buf = encodeV5BlobTable(one);
    equal(buf.length, 72);
    deepEqual(decodeV5BlobTable(buf, 0, 72), one);
    deepEqual(decodeV5BlobTable(Buffer.alloc(0), 0, 0), []);
    equal(encodeV5BlobTable([]).length, 0);
  });

  void it('rejects an empty or non-UTF-8 id and a table outside the buffer', () => {
    throws(() => decodeV5BlobTable(Buffer.alloc(16), 0, 16), /entry 0: empty blob id/);
    const bad = Buffer.from('0000000000000000ff', 'hex');
    throws(() => decodeV5BlobTable(bad, 0, 9), /not valid UTF-8/);
    throws(() => decodeV5BlobTable(Buffer.alloc(8), 0, 16), /outside the bootstrap/);
    throws(
      () => encodeV5BlobTable([{ readaheadOffset: 0, readaheadSize: 0, blobId: 'a\0b' }]),
      /free of NUL/,
    );
  });
});

void describe('v5 extended blob table (golden)', () => {
  void it('encodes 64-byte entries', () => {
    equal(encodeV5ExtBlobTable(EXT).toString('hex'), EXT_HEX);
  });

  void it('decodes the golden bytes back', () => {
    deepEqual(decodeV5ExtBlobTable(Buffer.from(EXT_HEX, 'hex'), 0, 1), EXT);
  });

  void it('rejects unknown incompatible features and the in-memory-only bit', () => {
    for (const features of [0x1000, 0x8000_0000]) {
      const buf = encodeV5ExtBlobTable([{ ...EXT[0]!, features }]);
      throws(() => decodeV5ExtBlobTable(buf, 0, 1), /unsupported features/);
    }
  });

  void it('rejects a count the buffer cannot hold', () => {
    throws(() => decodeV5ExtBlobTable(Buffer.alloc(64), 0, 0xffff_ffff), /outside the bootstrap/);
  });
});
