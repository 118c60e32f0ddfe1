import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import {
  BlobCache,
  createChunkCache,
  prefetchInodes,
  startPrefetch,
  type PrefetchOptions,
} from '../../src/cache/index.js';
import type { ChunkInfo } from '../../src/format/model.js';
import { RafsImage } from '../../src/rafs/image.js';
import {
  buildImage,
  CountingSource,
  memoryLogger,
  randomBytes,
  settle,
  type BuiltImage,
} from './cache-helpers.js';

/** Filesystem prefetch into the blob cache: what it fetches, merging, priority, bandwidth, cancel. */

const CHUNK = 0x10000;

function files(): Record<string, Buffer> {
  const out: Record<string, Buffer> = {};
  for (let i = 0; i < 4; i++) {
    out[`hot/h${i}`] = randomBytes(100_000 + i, 50 + i);
    out[`cold${i}`] = randomBytes(90_000 + i, 60 + i);
  }
  out['hot/deeper/x'] = randomBytes(3000, 70);
  return out;
}

interface Setup {
  img: BuiltImage;
  cache: BlobCache;
  src: CountingSource;
  image: RafsImage;
  close(): Promise<void>;
}

async function setup(o: { validate?: boolean; prefetch?: string[] } = {}): Promise<Setup> {
  const img = await buildImage(files(), { chunkSize: CHUNK, ...(o.prefetch && { prefetch: o.prefetch }) });
  const cache = createChunkCache({
    type: 'blobcache',
    workDir: join(img.dir, 'cache'),
    validate: o.validate === true,
  }) as BlobCache;
  const src = new CountingSource(img.blobDir);
  const image = new RafsImage(img.bootstrap, src, { cache, readAheadBytes: 0 });
  return {
    img,
    cache,
    src,
    image,
    close: async () => {
      await image.close();
      await cache.close();
      img.cleanup();
    },
  };
}

function opts(o: Partial<PrefetchOptions>): PrefetchOptions {
  return { inodes: [], prefetchAll: false, threads: 2, mergingSize: 1 << 20, bandwidthRate: 0, ...o };
}

/** Distinct chunks of the files under `prefix` (or all). */
async function chunksOf(image: RafsImage, paths: string[]): Promise<ChunkInfo[]> {
  const seen = new Map<string, ChunkInfo>();
  for (const p of paths) {
    for (const c of await image.chunks(image.lookupPath(p)!.ino)) seen.set(`${c.blobIndex}:${c.index}`, c);
  }
  return [...seen.values()];
}

async function cachedCount(image: RafsImage, chunks: ChunkInfo[]): Promise<number> {
  let n = 0;
  for (const c of chunks) if (await image.isChunkCached(c)) n++;
  return n;
}

const HOT = ['/hot/h0', '/hot/h1', '/hot/h2', '/hot/h3', '/hot/deeper/x'];
const COLD = ['/cold0', '/cold1', '/cold2', '/cold3'];

async function readPaths(s: Setup, paths: string[]): Promise<void> {
  for (const p of paths) {
    const got = await s.image.readFile(s.image.lookupPath(p)!.ino, 0, 1 << 20);
    assert.deepEqual(got, s.img.files.get(p), p);
  }
}

test('prefetch of a directory fills the cache with every file below it, merged; later reads need no backend', async () => {
  const s = await setup();
  try {
    const { logger } = memoryLogger();
    const hot = s.image.lookupPath('/hot')!.ino;
    const p = startPrefetch(s.image, opts({ inodes: [hot] }), logger);
    await p.done;
    const hotChunks = await chunksOf(s.image, HOT);
    assert.equal(await cachedCount(s.image, hotChunks), hotChunks.length);
    assert.equal(await cachedCount(s.image, await chunksOf(s.image, COLD)), 0);
    const st = s.cache.stats;
    assert.equal(st.prefetchUnmergedChunks, hotChunks.length);
    assert.equal(
      st.prefetchDataAmount,
      hotChunks.reduce((n, c) => n + c.compressedSize, 0),
    );
    assert.ok(
      st.prefetchRequestsCount >= 1 && st.prefetchRequestsCount < st.prefetchUnmergedChunks,
      JSON.stringify(st.prefetchRequestsCount),
    );
    assert.equal(s.src.reads, st.prefetchRequestsCount, 'one backend read per merged request');
    assert.ok(st.prefetchBeginTimeSecs > 0 && st.prefetchEndTimeSecs >= st.prefetchBeginTimeSecs);
    assert.ok(st.prefetchCumulativeTimeMillis >= 0);
    assert.equal(st.prefetchWorkers, 0);
    assert.equal(st.entriesCount, hotChunks.length);

    const before = s.src.reads;
    await readPaths(s, HOT);
    assert.equal(s.src.reads, before, 'hot files come from the cache');
    await readPaths(s, COLD);
    assert.ok(s.src.reads > before);
  } finally {
    await s.close();
  }
});

test('prefetchAll fetches every file (after the listed ones); mergingSize 0 issues one request per chunk', async () => {
  const s = await setup();
  try {
    const { logger } = memoryLogger();
    const p = startPrefetch(
      s.image,
      opts({ inodes: [s.image.lookupPath('/hot/h1')!.ino], prefetchAll: true, mergingSize: 0, threads: 3 }),
      logger,
    );
    await p.done;
    const all = await chunksOf(s.image, [...HOT, ...COLD]);
    assert.equal(await cachedCount(s.image, all), all.length);
    assert.equal(s.cache.stats.prefetchRequestsCount, all.length);
    assert.equal(s.cache.stats.prefetchUnmergedChunks, all.length);
    assert.equal(s.cache.stats.dataAllReady, true);
    const before = s.src.reads;
    await readPaths(s, [...HOT, ...COLD]);
    assert.equal(s.src.reads, before);
    // A second prefetch finds everything cached and issues nothing.
    await startPrefetch(s.image, opts({ prefetchAll: true }), logger).done;
    assert.equal(s.src.reads, before);
  } finally {
    await s.close();
  }
});

test('a bandwidth limit still lets prefetch complete', async () => {
  const s = await setup();
  try {
    const { logger } = memoryLogger();
    await startPrefetch(
      s.image,
      opts({ prefetchAll: true, bandwidthRate: 400_000, mergingSize: CHUNK }),
      logger,
    ).done;
    const all = await chunksOf(s.image, [...HOT, ...COLD]);
    assert.equal(await cachedCount(s.image, all), all.length);
  } finally {
    await s.close();
  }
});

test(
  'cancel() stops a slow (bandwidth-limited) prefetch; done resolves and the rest is not fetched',
  { timeout: 30_000 },
  async () => {
    const s = await setup();
    try {
      const { logger, lines } = memoryLogger();
      // 1 byte/s is raised to one chunk per second: the whole image would take many seconds.
      const p = startPrefetch(
        s.image,
        opts({ prefetchAll: true, bandwidthRate: 1, mergingSize: 0, threads: 1 }),
        logger,
      );
      while (s.cache.stats.entriesCount < 1) await settle(5);
      p.cancel();
      await p.done;
      const all = await chunksOf(s.image, [...HOT, ...COLD]);
      const cached = await cachedCount(s.image, all);
      assert.ok(cached >= 1 && cached < all.length, `${cached} of ${all.length} cached`);
      assert.equal(s.cache.stats.prefetchWorkers, 0);
      assert.ok(
        lines.some((l) => /Prefetch cancelled/.test(l)),
        lines.join('\n'),
      );
      // Reads still work after a cancel.
      await readPaths(s, COLD);
    } finally {
      await s.close();
    }
  },
);

test('prefetch waits while an on-demand read is waiting for the backend', { timeout: 30_000 }, async () => {
  const s = await setup();
  try {
    const [cold] = await chunksOf(s.image, ['/cold0']);
    let release: () => void = () => undefined;
    s.src.hold = new Promise<void>((res) => (release = res));
    s.src.holdIf = (offset) => offset === cold!.compressedOffset;
    const demand = s.image.readFile(s.image.lookupPath('/cold0')!.ino, 0, 10);
    await settle(10);
    assert.equal(s.src.reads, 1);
    const { logger } = memoryLogger();
    const p = startPrefetch(s.image, opts({ inodes: [s.image.lookupPath('/hot')!.ino] }), logger);
    await settle(150);
    assert.equal(s.src.reads, 1, 'no prefetch read while the on-demand read waits');
    release();
    assert.deepEqual(await demand, s.img.files.get('/cold0')!.subarray(0, 10));
    await p.done;
    assert.ok(s.src.reads > 1);
    const hotChunks = await chunksOf(s.image, HOT);
    assert.equal(await cachedCount(s.image, hotChunks), hotChunks.length);
  } finally {
    s.src.hold = undefined;
    await s.close();
  }
});

test(
  'an on-demand read of a chunk a waiting prefetch has claimed is not held back by the gate',
  { timeout: 30_000 },
  async () => {
    const s = await setup();
    try {
      const [cold] = await chunksOf(s.image, ['/cold0']);
      let release: () => void = () => undefined;
      s.src.hold = new Promise<void>((res) => (release = res));
      s.src.holdIf = (offset) => offset === cold!.compressedOffset;
      const blocked = s.image.readFile(s.image.lookupPath('/cold0')!.ino, 0, 10);
      await settle(10);
      const { logger } = memoryLogger();
      const p = startPrefetch(s.image, opts({ inodes: [s.image.lookupPath('/hot')!.ino] }), logger);
      await settle(150);
      // The prefetch run sits at the gate holding its chunks; this read joins it and lets it go.
      const got = await s.image.readFile(s.image.lookupPath('/hot/h2')!.ino, 0, 100_002);
      assert.deepEqual(got, s.img.files.get('/hot/h2'));
      release();
      await blocked;
      await p.done;
    } finally {
      s.src.hold = undefined;
      await s.close();
    }
  },
);

test('prefetch errors are logged, not fatal: a corrupt chunk is skipped with validate, the rest is cached', async () => {
  const s = await setup({ validate: true });
  try {
    const [bad] = await chunksOf(s.image, ['/hot/h1']);
    const fd = openSync(s.img.blobPath, 'r+');
    const one = Buffer.alloc(1);
    readSync(fd, one, 0, 1, bad!.compressedOffset + 3);
    one[0] = one[0]! ^ 0xff;
    writeSync(fd, one, 0, 1, bad!.compressedOffset + 3);
    closeSync(fd);
    const { logger, lines } = memoryLogger();
    await startPrefetch(s.image, opts({ inodes: [s.image.lookupPath('/hot')!.ino], mergingSize: 0 }), logger)
      .done;
    assert.ok(
      lines.some((l) => l.startsWith('WARN Prefetch of') && /ERR_DIGEST|digest/.test(l)),
      lines.join('\n'),
    );
    assert.equal(await s.image.isChunkCached(bad!), false);
    const good = (await chunksOf(s.image, HOT)).filter((c) => c.index !== bad!.index);
    assert.equal(await cachedCount(s.image, good), good.length);
  } finally {
    await s.close();
  }
});

test('prefetchInodes: a file list overrides the bootstrap prefetch table; missing paths are skipped with a warning', async () => {
  const s = await setup({ prefetch: ['/hot'] });
  try {
    const { logger, lines } = memoryLogger();
    const table = s.image.bootstrap.prefetchInos();
    assert.deepEqual(table, [s.image.lookupPath('/hot')!.ino]);
    assert.deepEqual(prefetchInodes(s.image, undefined, logger), table);
    assert.deepEqual(prefetchInodes(s.image, ['', '  '], logger), table);
    assert.deepEqual(prefetchInodes(s.image, ['/cold1', '/does-not-exist', '/hot/h0'], logger), [
      s.image.lookupPath('/cold1')!.ino,
      s.image.lookupPath('/hot/h0')!.ino,
    ]);
    assert.ok(
      lines.some((l) => l.startsWith('WARN') && l.includes('/does-not-exist')),
      lines.join('\n'),
    );
  } finally {
    await s.close();
  }
});
