import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readSync, writeSync } from 'node:fs';
import { createChunkCache } from '../../src/cache/index.js';
import { NydusError } from '../../src/errors/errors.js';
import { RafsImage } from '../../src/rafs/image.js';
import { buildImage, CountingSource, randomBytes } from './cache-helpers.js';

/**
 * Single-flight chunk fetching in RafsImage: concurrent readers of one chunk share one backend
 * read (and so one decompression) and get the same bytes or the same error.
 */

test('16 concurrent reads of one chunk make one backend read, and all get the right bytes', async () => {
  const data = randomBytes(200_000, 1);
  const img = await buildImage({ f: data });
  try {
    for (const cache of [undefined, createChunkCache({ type: 'dummycache' })]) {
      const src = new CountingSource(img.blobDir);
      src.delayMs = 20;
      // No recent-chunk memory: this test is about the backend.
      const image = new RafsImage(
        img.bootstrap,
        src,
        cache === undefined ? { recentBytes: 0 } : { cache, recentBytes: 0 },
      );
      const ino = image.lookupPath('/f')!.ino;
      const got = await Promise.all(Array.from({ length: 16 }, () => image.readFile(ino, 1000, 4096)));
      for (const g of got) assert.deepEqual(g, data.subarray(1000, 5096));
      assert.equal(src.reads, 1, `backend reads with ${cache?.type ?? 'no cache'}`);
      assert.equal(image.backendReads, 1);
      if (cache !== undefined) assert.equal(cache.backendReads, 1);
      // Once settled, the chunk is fetched again (nothing stores it).
      await image.readFile(ino, 0, 10);
      assert.equal(src.reads, 2);
      await image.close();
    }
  } finally {
    img.cleanup();
  }
});

test('overlapping concurrent reads of a multi-chunk file fetch every chunk once, merging contiguous chunks', async () => {
  const data = randomBytes(64 * 1024 * 6 + 123, 2);
  const img = await buildImage({ f: data }, { compressor: 'none' });
  try {
    const src = new CountingSource(img.blobDir);
    src.delayMs = 20;
    const image = new RafsImage(img.bootstrap, src, { recentBytes: 0, readAheadBytes: 0 });
    const ino = image.lookupPath('/f')!.ino;
    const chunks = await image.chunks(ino);
    assert.equal(chunks.length, 7);
    const ranges: [number, number][] = [];
    for (let i = 0; i < 16; i++) ranges.push([(i * 25_000) % data.length, 90_000]);
    const got = await Promise.all(ranges.map(([o, l]) => image.readFile(ino, o, l)));
    got.forEach((g, i) => {
      const [o, l] = ranges[i]!;
      assert.deepEqual(g, data.subarray(o, Math.min(data.length, o + l)), `range ${o}+${l}`);
    });
    const total = chunks.reduce((s, c) => s + c.compressedSize, 0);
    assert.equal(src.bytes, total, 'every chunk was fetched exactly once');
    assert.ok(src.reads <= chunks.length, `${src.reads} backend reads`);
    // A whole-file read of uncached chunks is one merged backend read.
    const before = src.reads;
    assert.deepEqual(await image.readFile(ino, 0, data.length), data);
    assert.equal(src.reads, before + 1);
    await image.close();
  } finally {
    img.cleanup();
  }
});

test('concurrent readers of a corrupt chunk all get the same ERR_DIGEST error from one backend read', async () => {
  const data = randomBytes(100_000, 3);
  const img = await buildImage({ f: data, g: randomBytes(5000, 4) }, { compressor: 'none' });
  try {
    const probe = new RafsImage(img.bootstrap, new CountingSource(img.blobDir), { readAheadBytes: 0 });
    const [c] = await probe.chunks(probe.lookupPath('/f')!.ino);
    const fd = openSync(img.blobPath, 'r+');
    const one = Buffer.alloc(1);
    readSync(fd, one, 0, 1, c!.compressedOffset + 10);
    one[0] = one[0]! ^ 1;
    writeSync(fd, one, 0, 1, c!.compressedOffset + 10);
    closeSync(fd);

    const src = new CountingSource(img.blobDir);
    src.delayMs = 20;
    const image = new RafsImage(img.bootstrap, src, { readAheadBytes: 0 });
    const ino = image.lookupPath('/f')!.ino;
    const results = await Promise.allSettled(
      Array.from({ length: 16 }, () => image.readFile(ino, 0, 100, { verify: true })),
    );
    assert.equal(src.reads, 1);
    const errors = results.map((r) => (r.status === 'rejected' ? (r.reason as unknown) : undefined));
    for (const e of errors) {
      assert.ok(e instanceof NydusError, String(e));
      assert.equal(e.code, 'ERR_DIGEST');
      assert.equal(e, errors[0], 'the very same error');
    }
    assert.match((errors[0] as Error).message, new RegExp(`Chunk ${c!.index} of blob ${img.blob.blobId}`));
    // The other file is fine.
    assert.equal((await image.readFile(image.lookupPath('/g')!.ino, 0, 5000, { verify: true })).length, 5000);
    await image.close();
    await probe.close();
  } finally {
    img.cleanup();
  }
});

test('a reader asking verify joins an unverified fetch and still checks the bytes', async () => {
  const data = randomBytes(30_000, 5);
  const img = await buildImage({ f: data }, { compressor: 'none' });
  try {
    const probe = new RafsImage(img.bootstrap, new CountingSource(img.blobDir), { readAheadBytes: 0 });
    const [c] = await probe.chunks(probe.lookupPath('/f')!.ino);
    await probe.close();
    const fd = openSync(img.blobPath, 'r+');
    writeSync(fd, Buffer.from([0xff, 0x00, 0xff]), 0, 3, c!.compressedOffset + 100);
    closeSync(fd);
    const src = new CountingSource(img.blobDir);
    src.delayMs = 20;
    const image = new RafsImage(img.bootstrap, src, { readAheadBytes: 0 });
    const ino = image.lookupPath('/f')!.ino;
    const [plain, checked] = await Promise.allSettled([
      image.readFile(ino, 0, 10),
      image.readFile(ino, 0, 10, { verify: true }),
    ]);
    assert.equal(src.reads, 1);
    assert.equal(plain.status, 'fulfilled');
    assert.equal(checked.status, 'rejected');
    assert.ok(checked.status === 'rejected' && checked.reason instanceof NydusError);
    assert.equal(checked.reason.code, 'ERR_DIGEST');
    await image.close();
  } finally {
    img.cleanup();
  }
});

test('recently used chunks stay in memory: a chunk read in 16 pieces is fetched once, and the memory is bounded', async () => {
  const data = randomBytes(64 * 1024 * 6 + 123, 5);
  const img = await buildImage({ f: data }, { compressor: 'none' });
  try {
    const src = new CountingSource(img.blobDir);
    // Room for two 64 KiB chunks.
    const image = new RafsImage(img.bootstrap, src, { recentBytes: 2 * 64 * 1024, readAheadBytes: 0 });
    const ino = image.lookupPath('/f')!.ino;
    for (let off = 0; off < 64 * 1024; off += 4096) {
      assert.deepEqual(await image.readFile(ino, off, 4096), data.subarray(off, off + 4096));
    }
    assert.equal(src.reads, 1, 'one backend read for 16 pieces of one chunk');
    // Chunks 1, 2 and 3 push chunk 0 out; reading it again goes to the backend.
    await image.readFile(ino, 64 * 1024, 3 * 64 * 1024);
    const before = src.reads;
    assert.deepEqual(await image.readFile(ino, 0, 100), data.subarray(0, 100));
    assert.equal(src.reads, before + 1, 'the least recently used chunk was evicted');
    await image.close();
  } finally {
    img.cleanup();
  }
});

test('a read fetches the next chunks of its file in the background (read-ahead), so a sequential reader finds them in memory', async () => {
  const data = randomBytes(64 * 1024 * 6 + 123, 6);
  const img = await buildImage({ f: data, g: randomBytes(1000, 7) }, { compressor: 'none' });
  try {
    const src = new CountingSource(img.blobDir);
    const image = new RafsImage(img.bootstrap, src, { readAheadBytes: 2 * 64 * 1024 });
    const ino = image.lookupPath('/f')!.ino;
    // Chunk 0 is read; chunks 1 and 2 follow in the background.
    assert.deepEqual(await image.readFile(ino, 0, 100), data.subarray(0, 100));
    // Wait (bounded) for the background fetch.
    for (let i = 0; i < 200 && src.bytes < 3 * 64 * 1024; i++) await new Promise((r) => setTimeout(r, 10));
    const afterFirst = src.bytes;
    assert.equal(afterFirst, 3 * 64 * 1024, 'chunk 0 plus two chunks of read-ahead');
    const reads = src.reads;
    // Both read-ahead chunks are served from memory.
    assert.deepEqual(
      await image.readFile(ino, 64 * 1024, 2 * 64 * 1024),
      data.subarray(64 * 1024, 3 * 64 * 1024),
    );
    await image.close();
    assert.ok(src.bytes - afterFirst <= 2 * 64 * 1024, 'no chunk fetched twice');
    assert.ok(src.reads <= reads + 1, 'at most one more (read-ahead) backend read');
    // The read-ahead stops at the file's end: nothing of g is fetched.
    const fChunks = await image.chunks(ino);
    assert.equal(fChunks.length, 7);
  } finally {
    img.cleanup();
  }
});
