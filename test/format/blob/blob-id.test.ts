import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sha256 } from '../../../src/codec/digest.js';
import { NydusError } from '../../../src/errors/errors.js';
import { BlobIdHasher, blobIdOfFile } from '../../../src/format/blob/blob-id.js';
import { readBlobTrailerFromBuffer } from '../../../src/format/blob/blob-layout.js';
import { FIXTURE, readUpstreamFixture } from '../../helpers/fixtures.js';

const V6_BLOB_ID = 'be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef';

void test('fixture: blob id of a blob-toc blob leaves out the chunk digest array', (t) => {
  const blob = readUpstreamFixture(t, FIXTURE.v6Blob);
  if (blob === undefined) return;
  assert.equal(blobIdOfFile(blob), V6_BLOB_ID);
  assert.ok(sha256(blob).toString('hex').startsWith('4b16fb83'));
  const sections = readBlobTrailerFromBuffer(blob)?.sections;
  assert.equal(blobIdOfFile(blob, sections), V6_BLOB_ID);
  assert.equal(blobIdOfFile(blob, new Map()), sha256(blob).toString('hex'));
  assert.throws(
    () => blobIdOfFile(blob, new Map([['blob.digest', { offset: 14550, size: 64 }]])),
    (e: unknown) => e instanceof NydusError && e.code === 'ERR_INVALID_ARG',
  );
});

void test('fixture: plain blobs are named by sha256(file)', (t) => {
  const raw = readUpstreamFixture(t, FIXTURE.v5Blob);
  const lz4 = readUpstreamFixture(t, FIXTURE.lz4Blob);
  if (raw === undefined || lz4 === undefined) return;
  assert.equal(blobIdOfFile(raw), FIXTURE.v5Blob.split('/').pop());
  assert.equal(blobIdOfFile(lz4), FIXTURE.lz4Blob.split('/').pop());
});

void test('hasher: the write path of the fixture, with intermediate states', (t) => {
  const blob = readUpstreamFixture(t, FIXTURE.v6Blob);
  if (blob === undefined) return;
  const h = new BlobIdHasher();
  h.update(blob.subarray(0, 7802)); // chunks
  h.update(blob.subarray(7802, 8314)); // image.blob header
  // The ToC's image.blob digest is the hash state at this point.
  assert.ok(h.peek().equals(blob.subarray(13530 + 24, 13530 + 56)));
  h.update(blob.subarray(8314, 12954)); // ci, ci header, blob.meta header
  // blob.digest body (12954..13018) is written but not hashed.
  h.update(blob.subarray(13018)); // blob.digest header, ToC
  assert.equal(h.bytesHashed, blob.length - 64);
  assert.equal(h.blobId(), V6_BLOB_ID);
  assert.throws(() => h.update(Buffer.alloc(1)), NydusError);
  assert.throws(() => h.peek(), NydusError);
  assert.throws(() => h.digest(), NydusError);
});

void test('hasher: empty input is sha256 of nothing', () => {
  assert.equal(
    new BlobIdHasher().blobId(),
    'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
  );
});
