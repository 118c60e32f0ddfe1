import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { createChunkCache } from '../../src/cache/index.js';
import { BackendMetrics, MeteredBlobSource } from '../../src/daemon/metrics.js';
import { NydusError } from '../../src/errors/errors.js';
import type { BlobInfo, ChunkInfo } from '../../src/format/model.js';
import { RafsImage } from '../../src/rafs/image.js';
import type { BlobReader, BlobSource } from '../../src/storage/blob-source.js';
import { LocalFsBlobSource } from '../../src/storage/localfs.js';
import { buildImage, randomBytes, type BuiltImage } from './cache-helpers.js';

/**
 * A blob device over a backend that is not local (`untrusted`): every chunk it sends is checked
 * against its recorded digest before use or caching, a wrong one is fetched once more, and a
 * chunk wrong twice fails its reads with ERR_DIGEST. Prefetch reads tell the backend so.
 */

type ReadOpts = Parameters<BlobReader['read']>[3];

/** A localfs source whose bytes at blob offset `flipAt` come back flipped for the next `flips` reads covering it. */
class FlippingSource implements BlobSource {
  flipAt = -1;
  flips = 0;
  reads = 0;
  /** Reads that covered `flipAt`. */
  covering = 0;
  /** The fourth argument of every read, in order. */
  readonly opts: (ReadOpts | undefined)[] = [];
  /** While set, every read fails (the backend is gone). */
  down = false;
  readonly #inner: BlobSource;

  constructor(blobDir: string) {
    this.#inner = new LocalFsBlobSource({ dir: blobDir });
  }

  async open(blob: BlobInfo): Promise<BlobReader> {
    const r = await this.#inner.open(blob);
    return {
      size: r.size,
      read: async (offset, length, into, opts): Promise<Buffer> => {
        this.reads++;
        this.opts.push(opts);
        if (this.down) throw new NydusError('ERR_NETWORK', 'backend is down');
        const got = await r.read(offset, length, into);
        if (this.flipAt >= offset && this.flipAt < offset + length) {
          this.covering++;
          if (this.flips > 0) {
            this.flips--;
            // A copy: the bytes of the file itself stay right.
            const bad = Buffer.from(got);
            bad[this.flipAt - offset] = bad[this.flipAt - offset]! ^ 0x20;
            return bad;
          }
        }
        return got;
      },
      close: () => r.close(),
    };
  }
}

const FILES = {
  victim: randomBytes(150_000, 41),
  bystander: randomBytes(90_000, 42),
  small: Buffer.from('small file\n'),
};

async function chunkOf(image: RafsImage, path: string, n = 0): Promise<ChunkInfo> {
  const cs = await image.chunks(image.lookupPath(path)!.ino);
  return cs[n]!;
}

function read(image: RafsImage, path: string): Promise<Buffer> {
  return image.readFile(image.lookupPath(path)!.ino, 0, 1 << 20);
}

for (const compressor of ['none', 'zstd'] as const) {
  test(`untrusted backend (${compressor}): a byte flipped once is caught, fetched again, and only right bytes are used and cached`, async () => {
    const img = await buildImage(FILES, { compressor });
    const work = join(img.dir, 'cache');
    try {
      const src = new FlippingSource(img.blobDir);
      const cache = createChunkCache({ type: 'blobcache', workDir: work });
      const image = new RafsImage(img.bootstrap, src, { cache, untrusted: true, readAheadBytes: 0 });
      assert.equal(image.device.untrusted, true);
      const victim = await chunkOf(image, '/victim', 1);
      src.flipAt = victim.compressedOffset + Math.floor(victim.compressedSize / 2);
      src.flips = 1;
      assert.deepEqual(await read(image, '/victim'), FILES.victim);
      assert.equal(src.covering, 2, 'the chunk was fetched twice');
      assert.equal(image.device.refetches, 1);
      assert.deepEqual(await read(image, '/bystander'), FILES.bystander);
      await image.close();
      await cache.close();

      // What was cached is right: read it all back with the backend gone.
      const cache2 = createChunkCache({ type: 'blobcache', workDir: work });
      const gone = new FlippingSource(img.blobDir);
      const image2 = new RafsImage(img.bootstrap, gone, {
        cache: cache2,
        untrusted: true,
        readAheadBytes: 0,
      });
      await image2.blobReader(0);
      gone.down = true;
      assert.deepEqual(await read(image2, '/victim'), FILES.victim);
      assert.deepEqual(await read(image2, '/bystander'), FILES.bystander);
      await image2.close();
      await cache2.close();
    } finally {
      img.cleanup();
    }
  });
}

test('untrusted backend: a chunk wrong twice fails only its reads with ERR_DIGEST, is not cached, and reads right once the backend is', async () => {
  const img = await buildImage(FILES, { compressor: 'zstd' });
  const work = join(img.dir, 'cache');
  try {
    const src = new FlippingSource(img.blobDir);
    const cache = createChunkCache({ type: 'blobcache', workDir: work });
    const image = new RafsImage(img.bootstrap, src, { cache, untrusted: true, readAheadBytes: 0 });
    const victim = await chunkOf(image, '/victim');
    src.flipAt = victim.compressedOffset + 3;
    src.flips = 1_000;
    await assert.rejects(
      read(image, '/victim'),
      (e: unknown) =>
        e instanceof NydusError &&
        e.code === 'ERR_DIGEST' &&
        e.message.startsWith(
          `Chunk ${victim.index} of blob ${img.blob.blobId} came from the backend wrong twice`,
        ) &&
        !e.message.includes('\n'),
    );
    assert.equal(src.covering, 2, 'one more fetch, not more');
    assert.deepEqual(await read(image, '/bystander'), FILES.bystander);
    assert.deepEqual(await read(image, '/small'), FILES.small);
    // Not cached, not kept in memory: the next read goes to the backend again and fails again.
    await assert.rejects(read(image, '/victim'), (e: unknown) => (e as NydusError).code === 'ERR_DIGEST');
    assert.equal(src.covering, 4);
    assert.equal(await image.device.isChunkCached(victim), false);
    // The backend heals.
    src.flips = 0;
    assert.deepEqual(await read(image, '/victim'), FILES.victim);
    await image.close();
    await cache.close();
    // ... and the right bytes were cached then.
    const cache2 = createChunkCache({ type: 'blobcache', workDir: work });
    const gone = new FlippingSource(img.blobDir);
    const image2 = new RafsImage(img.bootstrap, gone, { cache: cache2, untrusted: true, readAheadBytes: 0 });
    await image2.blobReader(0);
    gone.down = true;
    assert.equal(await image2.device.isChunkCached(victim), true);
    assert.deepEqual(await read(image2, '/victim'), FILES.victim);
    await image2.close();
    await cache2.close();
  } finally {
    img.cleanup();
  }
});

test('untrusted backend without a cache: no wrong byte reaches a reader, concurrent readers share the one refetch', async () => {
  const img = await buildImage(FILES, { compressor: 'none' });
  try {
    const src = new FlippingSource(img.blobDir);
    const image = new RafsImage(img.bootstrap, src, { untrusted: true, readAheadBytes: 0 });
    const victim = await chunkOf(image, '/victim', 2);
    src.flipAt = victim.compressedOffset;
    src.flips = 1;
    const got = await Promise.all(Array.from({ length: 8 }, () => read(image, '/victim')));
    for (const g of got) assert.deepEqual(g, FILES.victim);
    assert.equal(image.device.refetches, 1);
    await image.close();
  } finally {
    img.cleanup();
  }
});

test('a trusted (local) device does not fetch a chunk twice: the check is the read’s, as before', async () => {
  const img = await buildImage(FILES, { compressor: 'none' });
  try {
    const src = new FlippingSource(img.blobDir);
    const image = new RafsImage(img.bootstrap, src, { readAheadBytes: 0 });
    assert.equal(image.device.untrusted, false);
    const victim = await chunkOf(image, '/victim');
    src.flipAt = victim.compressedOffset + 9;
    src.flips = 1;
    // With rafs.validate the read fails at once (no second fetch from a local backend).
    await assert.rejects(
      image.readFile(image.lookupPath('/victim')!.ino, 0, 100, { verify: true }),
      (e: unknown) => (e as NydusError).code === 'ERR_DIGEST',
    );
    assert.equal(src.covering, 1);
    assert.equal(image.device.refetches, 0);
    await image.close();
  } finally {
    img.cleanup();
  }
});

async function prefetchOpts(img: BuiltImage): Promise<{ demand: ReadOpts[]; prefetch: ReadOpts[] }> {
  const src = new FlippingSource(img.blobDir);
  const cache = createChunkCache({ type: 'blobcache', workDir: join(img.dir, 'cache-opts') });
  const image = new RafsImage(img.bootstrap, src, { cache, untrusted: true, readAheadBytes: 0 });
  await image.blobReader(0);
  const before = src.opts.length;
  await read(image, '/small');
  const demand = src.opts.slice(before);
  const mark = src.opts.length;
  await image.device.prefetchChunks(await image.chunks(image.lookupPath('/victim')!.ino));
  const prefetch = src.opts.slice(mark);
  await image.close();
  await cache.close();
  return { demand, prefetch };
}

test('prefetch reads pass { prefetch: true } to the backend; on-demand reads pass nothing; the daemon metering forwards it', async () => {
  const img = await buildImage(FILES, { compressor: 'zstd' });
  try {
    const { demand, prefetch } = await prefetchOpts(img);
    assert.ok(demand.length >= 1 && demand.every((o) => o === undefined), JSON.stringify(demand));
    assert.ok(prefetch.length >= 1, 'prefetch went to the backend');
    for (const o of prefetch) assert.deepEqual(o, { prefetch: true });

    // The daemon wraps the backend in a metered source: it must hand the options on.
    const inner = new FlippingSource(img.blobDir);
    const metered = new MeteredBlobSource(inner, new BackendMetrics('registry'));
    const r = await metered.open(img.blob);
    await r.read(0, 10, undefined, { prefetch: true });
    assert.deepEqual(inner.opts.at(-1), { prefetch: true });
    await r.close();
  } finally {
    img.cleanup();
  }
});

test('untrusted backend: a backend read that fails is not fetched again by the device (retries are the backend’s)', async () => {
  const img = await buildImage(FILES, { compressor: 'zstd' });
  try {
    const src = new FlippingSource(img.blobDir);
    const image = new RafsImage(img.bootstrap, src, { untrusted: true, readAheadBytes: 0 });
    await image.blobReader(0);
    src.down = true;
    const before = src.reads;
    await assert.rejects(read(image, '/small'), (e: unknown) => (e as NydusError).code === 'ERR_NETWORK');
    assert.equal(src.reads - before, 1);
    assert.equal(image.device.refetches, 0);
    await image.close();
  } finally {
    img.cleanup();
  }
});
