import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readFileSync, readSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { CHUNK_MAP_HEADER_SIZE, createChunkCache } from '../../src/cache/index.js';
import { NydusError } from '../../src/errors/errors.js';
import type { ChunkInfo } from '../../src/format/model.js';
import { RafsImage } from '../../src/rafs/image.js';
import { buildImage, CountingSource, memoryLogger, randomBytes, type BuiltImage } from './cache-helpers.js';

/** Digest validation with the blob cache: rafs.validate, cache.validate, corrupt blobs and cache files. */

function flipByte(path: string, at: number): void {
  const fd = openSync(path, 'r+');
  try {
    const one = Buffer.alloc(1);
    readSync(fd, one, 0, 1, at);
    one[0] = one[0]! ^ 0x40;
    writeSync(fd, one, 0, 1, at);
  } finally {
    closeSync(fd);
  }
}

function isReadyOnDisk(work: string, img: BuiltImage, index: number): boolean {
  const map = readFileSync(join(work, `${img.blob.blobId}.blob.data.chunk_map`));
  return (map[CHUNK_MAP_HEADER_SIZE + (index >> 3)]! & (0x80 >> (index & 7))) !== 0;
}

async function firstChunk(img: BuiltImage, path: string): Promise<ChunkInfo> {
  const probe = new RafsImage(img.bootstrap, new CountingSource(img.blobDir), { readAheadBytes: 0 });
  const [c] = await probe.chunks(probe.lookupPath(path)!.ino);
  await probe.close();
  return c!;
}

const shared = randomBytes(40_000, 30);
const FILES = {
  victim: shared,
  'victim-copy': shared,
  bystander: randomBytes(40_000, 31),
  small: Buffer.from('hello\n'),
};

for (const mode of ['rafs.validate', 'cache.validate'] as const) {
  test(`${mode}: a flipped byte in the blob fails only the reads of that chunk with ERR_DIGEST; nothing wrong is cached`, async () => {
    const img = await buildImage(FILES, { compressor: 'none' });
    const work = join(img.dir, 'cache');
    try {
      const victim = await firstChunk(img, '/victim');
      flipByte(img.blobPath, victim.compressedOffset + 1234);
      const cache = createChunkCache({
        type: 'blobcache',
        workDir: work,
        validate: mode === 'cache.validate',
      });
      const src = new CountingSource(img.blobDir);
      const image = new RafsImage(img.bootstrap, src, {
        cache,
        validate: mode === 'rafs.validate',
        readAheadBytes: 0,
      });
      for (const f of ['/victim', '/victim-copy']) {
        await assert.rejects(
          image.readFile(image.lookupPath(f)!.ino, 0, 100),
          (e: unknown) =>
            e instanceof NydusError &&
            e.code === 'ERR_DIGEST' &&
            e.message.includes(`Chunk ${victim.index} of blob ${img.blob.blobId}`) &&
            !e.message.includes('\n'),
          f,
        );
      }
      assert.deepEqual(await image.readFile(image.lookupPath('/bystander')!.ino, 0, 40_000), FILES.bystander);
      assert.deepEqual(await image.readFile(image.lookupPath('/small')!.ino, 0, 100), FILES.small);
      await image.close();
      await cache.close();
      assert.equal(isReadyOnDisk(work, img, victim.index), false, 'the bad chunk is not marked ready');

      // Once the blob is repaired, the chunk is fetched and cached normally.
      flipByte(img.blobPath, victim.compressedOffset + 1234);
      const cache2 = createChunkCache({
        type: 'blobcache',
        workDir: work,
        validate: mode === 'cache.validate',
      });
      const image2 = new RafsImage(img.bootstrap, new CountingSource(img.blobDir), {
        cache: cache2,
        validate: mode === 'rafs.validate',
      });
      assert.deepEqual(await image2.readFile(image2.lookupPath('/victim')!.ino, 0, 40_000), shared);
      await image2.close();
      await cache2.close();
      assert.equal(isReadyOnDisk(work, img, victim.index), true);
    } finally {
      img.cleanup();
    }
  });
}

test('without any validation a flipped byte goes unnoticed (and is cached), as upstream', async () => {
  const img = await buildImage(FILES, { compressor: 'none' });
  const work = join(img.dir, 'cache');
  try {
    const victim = await firstChunk(img, '/victim');
    flipByte(img.blobPath, victim.compressedOffset + 10);
    const cache = createChunkCache({ type: 'blobcache', workDir: work });
    const image = new RafsImage(img.bootstrap, new CountingSource(img.blobDir), { cache, readAheadBytes: 0 });
    const got = await image.readFile(image.lookupPath('/victim')!.ino, 0, 40_000);
    assert.notDeepEqual(got, shared);
    await image.close();
    await cache.close();
    assert.equal(isReadyOnDisk(work, img, victim.index), true);
  } finally {
    img.cleanup();
  }
});

test('cache.validate: a corrupt chunk in the cache file is reported, refetched from the backend and stored again', async () => {
  const img = await buildImage(FILES, { compressor: 'zstd' });
  const work = join(img.dir, 'cache');
  try {
    // Fill the cache.
    const cache1 = createChunkCache({ type: 'blobcache', workDir: work });
    const image1 = new RafsImage(img.bootstrap, new CountingSource(img.blobDir), {
      cache: cache1,
      readAheadBytes: 0,
    });
    for (const f of Object.keys(FILES)) await image1.readFile(image1.lookupPath(`/${f}`)!.ino, 0, 1 << 20);
    await image1.close();
    await cache1.close();
    const victim = await firstChunk(img, '/bystander');
    flipByte(join(work, `${img.blob.blobId}.blob.data`), victim.uncompressedOffset + 77);

    const { logger, lines } = memoryLogger();
    const cache2 = createChunkCache({ type: 'blobcache', workDir: work, validate: true, logger });
    const src2 = new CountingSource(img.blobDir);
    const image2 = new RafsImage(img.bootstrap, src2, { cache: cache2, readAheadBytes: 0 });
    assert.deepEqual(await image2.readFile(image2.lookupPath('/bystander')!.ino, 0, 40_000), FILES.bystander);
    assert.deepEqual(await image2.readFile(image2.lookupPath('/victim')!.ino, 0, 40_000), shared);
    assert.equal(src2.reads, 1, 'only the corrupt chunk came from the backend');
    assert.equal(src2.bytes, victim.compressedSize);
    assert.equal(cache2.corruptChunks, 1);
    assert.ok(
      lines.some(
        (l) => l.startsWith('WARN ') && l.includes(`Chunk ${victim.index} of blob ${img.blob.blobId}`),
      ),
      lines.join('\n'),
    );
    await image2.close();
    await cache2.close();

    // The refetched copy is good: a third instance needs no backend at all.
    const cache3 = createChunkCache({ type: 'blobcache', workDir: work, validate: true });
    const src3 = new CountingSource(img.blobDir);
    const image3 = new RafsImage(img.bootstrap, src3, { cache: cache3, readAheadBytes: 0 });
    assert.deepEqual(await image3.readFile(image3.lookupPath('/bystander')!.ino, 0, 40_000), FILES.bystander);
    assert.equal(src3.reads, 0);
    assert.equal(cache3.corruptChunks, 0);
    await image3.close();
    await cache3.close();
  } finally {
    img.cleanup();
  }
});

test('rafs.validate also checks chunks served by the cache (upstream: either flag turns validation on)', async () => {
  const img = await buildImage({ f: randomBytes(20_000, 33) }, { compressor: 'none' });
  const work = join(img.dir, 'cache');
  try {
    const cache1 = createChunkCache({ type: 'blobcache', workDir: work });
    const image1 = new RafsImage(img.bootstrap, new CountingSource(img.blobDir), {
      cache: cache1,
      readAheadBytes: 0,
    });
    await image1.readFile(image1.lookupPath('/f')!.ino, 0, 20_000);
    await image1.close();
    await cache1.close();
    const c = await firstChunk(img, '/f');
    flipByte(join(work, `${img.blob.blobId}.blob.data`), c.uncompressedOffset + 5);
    const cache2 = createChunkCache({ type: 'blobcache', workDir: work });
    const src = new CountingSource(img.blobDir);
    const image2 = new RafsImage(img.bootstrap, src, { cache: cache2, validate: true, readAheadBytes: 0 });
    assert.equal(
      (await image2.readFile(image2.lookupPath('/f')!.ino, 0, 20_000)).equals(
        readFileSync(join(img.dir, 'src', 'f')),
      ),
      true,
    );
    assert.equal(src.reads, 1);
    await image2.close();
    await cache2.close();
  } finally {
    img.cleanup();
  }
});
