import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { createChunkCache, DummyCache, startPrefetch } from '../../src/cache/index.js';
import { RafsImage } from '../../src/rafs/image.js';
import { buildImage, CountingSource, memoryLogger, randomBytes, readAllFiles } from './cache-helpers.js';

/** dummycache: nothing stored, every read goes to the backend, prefetch has nothing to do. */

test('dummycache reads every file correctly, stores nothing and reads the backend each time', async () => {
  const img = await buildImage({ a: randomBytes(150_000, 40), b: Buffer.from('bee\n') });
  try {
    const cache = createChunkCache({ type: 'dummycache', validate: true });
    assert.ok(cache instanceof DummyCache);
    assert.equal(cache.storesData, false);
    const src = new CountingSource(img.blobDir);
    const image = new RafsImage(img.bootstrap, src, { cache, recentBytes: 0, readAheadBytes: 0 });
    for (let pass = 0; pass < 2; pass++) {
      const got = await readAllFiles(image);
      for (const [p, want] of img.files) assert.deepEqual(got.get(p), want, p);
    }
    const perPass = src.reads / 2;
    assert.ok(perPass >= 1 && Number.isInteger(perPass), `${src.reads} reads`);
    assert.equal(cache.backendReads, src.reads);
    assert.equal(cache.backendBytes, src.bytes);
    assert.equal(cache.stats.total > 0, true);
    assert.equal(cache.stats.wholeHits + cache.stats.partialHits, 0);
    assert.equal(cache.stats.entriesCount, 0);
    assert.equal(cache.stats.underlyingFiles.size, 0);
    assert.deepEqual(readdirSync(img.dir).sort(), ['blobs', 'image.boot', 'src']);

    const { logger, lines } = memoryLogger();
    const before = src.reads;
    const p = startPrefetch(
      image,
      {
        inodes: [image.bootstrap.rootIno],
        prefetchAll: true,
        threads: 4,
        mergingSize: 1 << 20,
        bandwidthRate: 0,
      },
      logger,
    );
    await p.done;
    assert.equal(src.reads, before, 'prefetch reads nothing');
    assert.ok(
      lines.some((l) => /Prefetch skipped/.test(l)),
      lines.join('\n'),
    );
    await image.close();
    await cache.close();
  } finally {
    img.cleanup();
  }
});

test('the cache counts the reads asked for, not the background read-ahead', async () => {
  const data = randomBytes(0x10000 * 8, 41);
  const img = await buildImage({ f: data });
  try {
    const cache = createChunkCache({ type: 'dummycache' });
    const image = new RafsImage(img.bootstrap, new CountingSource(img.blobDir), {
      cache,
      readAheadBytes: 4 * 0x10000,
    });
    const ino = image.lookupPath('/f')!.ino;
    // Four reads of one chunk each; each may start fetching the next chunks in the background.
    for (let k = 0; k < 4; k++) {
      assert.deepEqual(
        await image.readFile(ino, k * 0x10000, 100),
        data.subarray(k * 0x10000, k * 0x10000 + 100),
      );
    }
    await image.close();
    assert.equal(cache.stats.total, 4);
  } finally {
    img.cleanup();
  }
});
