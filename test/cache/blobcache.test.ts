import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  BlobCache,
  CHUNK_MAP_HEADER_SIZE,
  CHUNK_MAP_MAGIC,
  CHUNK_MAP_MAGIC2,
  createChunkCache,
} from '../../src/cache/index.js';
import { NydusError } from '../../src/errors/errors.js';
import { RafsImage } from '../../src/rafs/image.js';
import { loadBootstrapFile } from '../../src/rafs/open.js';
import { FIXTURE, upstreamFixture } from '../helpers/fixtures.js';
import { resultMd5s } from '../helpers/tree-json.js';
import { buildImage, CountingSource, md5, memoryLogger, randomBytes, readAllFiles } from './cache-helpers.js';

/** The blobcache: cache files, their layout, persistence across processes (instances), errors. */

function bitsSet(map: Buffer, count: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < count; i++)
    if ((map[CHUNK_MAP_HEADER_SIZE + (i >> 3)]! & (0x80 >> (i & 7))) !== 0) out.push(i);
  return out;
}

const FILES = {
  a: randomBytes(300_000, 10),
  'dir/b': randomBytes(70_000, 11),
  'dir/c': Buffer.from('small file\n'),
  'dir/sub/d': randomBytes(64 * 1024 * 3, 12),
};

for (const fsVersion of [5, 6] as const) {
  test(`v${fsVersion}: the blob cache persists; a new cache instance on the same work_dir serves every file with zero backend reads`, async () => {
    const img = await buildImage(FILES, { fsVersion });
    const work = join(img.dir, 'cache', 'nested');
    try {
      const cache1 = createChunkCache({ type: 'blobcache', workDir: work });
      assert.ok(cache1 instanceof BlobCache);
      assert.ok(existsSync(work), 'work_dir is created');
      const src1 = new CountingSource(img.blobDir);
      const image1 = new RafsImage(img.bootstrap, src1, { cache: cache1, readAheadBytes: 0 });
      const first = await readAllFiles(image1);
      for (const [p, want] of img.files) assert.deepEqual(first.get(p), want, p);
      assert.ok(src1.reads > 0);
      assert.equal(cache1.backendReads, src1.reads);
      assert.equal(cache1.backendBytes, src1.bytes);
      await image1.close();
      await cache1.close();

      const dataPath = join(work, `${img.blob.blobId}.blob.data`);
      const mapPath = `${dataPath}.chunk_map`;
      assert.deepEqual(readdirSync(work).sort(), [
        `${img.blob.blobId}.blob.data`,
        `${img.blob.blobId}.blob.data.chunk_map`,
      ]);
      assert.equal(statSync(dataPath).size, img.blob.uncompressedSize);
      const map = readFileSync(mapPath);
      assert.equal(map.length, CHUNK_MAP_HEADER_SIZE + Math.ceil(img.blob.chunkCount / 8));
      assert.equal(map.readUInt32LE(0), CHUNK_MAP_MAGIC);
      assert.equal(map.readUInt32LE(4), 1);
      assert.equal(map.readUInt32LE(8), CHUNK_MAP_MAGIC2);
      assert.equal(bitsSet(map, img.blob.chunkCount).length, img.blob.chunkCount);

      const cache2 = createChunkCache({ type: 'blobcache', workDir: work });
      const src2 = new CountingSource(img.blobDir);
      const image2 = new RafsImage(img.bootstrap, src2, { cache: cache2, readAheadBytes: 0 });
      const second = await readAllFiles(image2);
      for (const [p, want] of img.files) assert.deepEqual(second.get(p), want, p);
      assert.equal(src2.reads, 0, 'no backend read on the second pass');
      assert.equal(cache2.backendReads, 0);
      const s = cache2.stats;
      assert.equal(s.storePath, work);
      assert.deepEqual([...s.underlyingFiles], [dataPath]);
      assert.equal(s.entriesCount, img.blob.chunkCount);
      assert.equal(s.dataAllReady, true);
      assert.ok(
        s.total > 0 && s.wholeHits === s.total,
        JSON.stringify(s, (_k, v: unknown) => (v instanceof Set ? [...v] : v)),
      );
      await image2.close();
      await cache2.close();
    } finally {
      img.cleanup();
    }
  });
}

test('the chunk map has one bit per chunk index, most significant bit first, set only for the chunks read', async () => {
  const data = randomBytes(64 * 1024 * 12, 20);
  const img = await buildImage({ f: data }, { compressor: 'none' });
  const work = join(img.dir, 'cache');
  try {
    const cache = createChunkCache({ type: 'blobcache', workDir: work });
    const image = new RafsImage(img.bootstrap, new CountingSource(img.blobDir), { cache, readAheadBytes: 0 });
    const ino = image.lookupPath('/f')!.ino;
    const chunks = await image.chunks(ino);
    // chunks 1, 9 and 10 of the file
    await image.readFile(ino, 64 * 1024 + 5, 10);
    await image.readFile(ino, 64 * 1024 * 9 + 5, 64 * 1024);
    await image.close();
    await cache.close();
    const map = readFileSync(join(work, `${img.blob.blobId}.blob.data.chunk_map`));
    assert.deepEqual(
      bitsSet(map, img.blob.chunkCount),
      [chunks[1]!.index, chunks[9]!.index, chunks[10]!.index].sort((x, y) => x - y),
    );
    assert.equal(map.readUInt32LE(12), 0, 'not all ready');
    // The data sits at each chunk's uncompressed offset.
    const cached = readFileSync(join(work, `${img.blob.blobId}.blob.data`));
    const c9 = chunks[9]!;
    assert.deepEqual(
      cached.subarray(c9.uncompressedOffset, c9.uncompressedOffset + c9.uncompressedSize),
      data.subarray(9 * 64 * 1024, 10 * 64 * 1024),
    );
  } finally {
    img.cleanup();
  }
});

test('a cache directory laid out as upstream writes it (hand-made map and data file) is served without backend reads', async () => {
  const data = randomBytes(64 * 1024 * 4, 21);
  const img = await buildImage({ f: data }, { compressor: 'lz4_block' });
  const work = join(img.dir, 'cache');
  mkdirSync(work);
  try {
    const probe = new RafsImage(img.bootstrap, new CountingSource(img.blobDir), { readAheadBytes: 0 });
    const chunks = await probe.chunks(probe.lookupPath('/f')!.ino);
    await probe.close();
    const n = img.blob.chunkCount;
    const map = Buffer.alloc(4096 + Math.ceil(n / 8));
    map.writeUInt32LE(0x424d4150, 0);
    map.writeUInt32LE(1, 4);
    map.writeUInt32LE(0x434d4150, 8);
    const file = Buffer.alloc(img.blob.uncompressedSize);
    for (const k of [0, 2]) {
      const c = chunks[k]!;
      map[4096 + (c.index >> 3)]! |= 0x80 >> (c.index & 7);
      data.copy(file, c.uncompressedOffset, k * 65536, (k + 1) * 65536);
    }
    writeFileSync(join(work, `${img.blob.blobId}.blob.data`), file);
    writeFileSync(join(work, `${img.blob.blobId}.blob.data.chunk_map`), map);

    const cache = createChunkCache({ type: 'blobcache', workDir: work, validate: true });
    const src = new CountingSource(img.blobDir);
    const image = new RafsImage(img.bootstrap, src, { cache, readAheadBytes: 0 });
    const ino = image.lookupPath('/f')!.ino;
    assert.deepEqual(await image.readFile(ino, 0, 65536), data.subarray(0, 65536));
    assert.deepEqual(
      await image.readFile(ino, 2 * 65536 + 7, 1000),
      data.subarray(2 * 65536 + 7, 2 * 65536 + 1007),
    );
    assert.equal(src.reads, 0);
    assert.equal(cache.stats.entriesCount, 2);
    assert.deepEqual(await image.readFile(ino, 0, data.length), data);
    assert.equal(src.reads, 2, 'chunks 1 and 3, not contiguous, two reads');
    // close() waits for the fetched chunks to be stored.
    await image.close();
    assert.equal(cache.stats.entriesCount, 4);
    assert.equal(cache.stats.dataAllReady, true);
    await cache.close();
    // All chunks ready now: the header says so, as upstream records it.
    assert.equal(
      readFileSync(join(work, `${img.blob.blobId}.blob.data.chunk_map`)).readUInt32LE(12),
      0x4d4d4150,
    );
  } finally {
    img.cleanup();
  }
});

test('a chunk map of the wrong size is started afresh with a warning; the cache keeps working', async () => {
  const img = await buildImage({ f: randomBytes(100_000, 22) });
  const work = join(img.dir, 'cache');
  mkdirSync(work);
  try {
    writeFileSync(join(work, `${img.blob.blobId}.blob.data.chunk_map`), Buffer.alloc(100, 0xff));
    const { logger, lines } = memoryLogger();
    const cache = createChunkCache({ type: 'blobcache', workDir: work, logger });
    const src = new CountingSource(img.blobDir);
    const image = new RafsImage(img.bootstrap, src, { cache, readAheadBytes: 0 });
    const got = await readAllFiles(image);
    assert.deepEqual(got.get('/f'), img.files.get('/f'));
    assert.ok(src.reads > 0, 'nothing was taken as ready');
    assert.ok(
      lines.some((l) => /^WARN .*chunk map .* is invalid \(it has 100 bytes/.test(l)),
      lines.join('\n'),
    );
    await image.close();
    await cache.close();
  } finally {
    img.cleanup();
  }
});

test('cache file problems are one-line NydusErrors naming the path', async () => {
  const img = await buildImage({ f: randomBytes(10_000, 23) });
  try {
    const notDir = join(img.dir, 'plain-file');
    writeFileSync(notDir, 'x');
    assert.throws(
      () => createChunkCache({ type: 'blobcache', workDir: notDir }),
      (e: unknown) =>
        e instanceof NydusError &&
        e.code === 'ERR_IO' &&
        e.message.includes(notDir) &&
        !e.message.includes('\n'),
    );
    assert.throws(
      () => createChunkCache({ type: 'blobcache', workDir: join(notDir, 'below') }),
      (e: unknown) =>
        e instanceof NydusError && e.code === 'ERR_IO' && /Cannot create blob cache work_dir/.test(e.message),
    );
    // The data file's name taken by a directory.
    const work = join(img.dir, 'cache');
    const dataPath = join(work, `${img.blob.blobId}.blob.data`);
    mkdirSync(dataPath, { recursive: true });
    const cache = createChunkCache({ type: 'blobcache', workDir: work });
    const image = new RafsImage(img.bootstrap, new CountingSource(img.blobDir), { cache, readAheadBytes: 0 });
    await assert.rejects(
      image.readFile(image.lookupPath('/f')!.ino, 0, 10),
      (e: unknown) =>
        e instanceof NydusError &&
        e.code === 'ERR_IO' &&
        e.message.startsWith(`Cannot open blob cache file "${dataPath}"`) &&
        !e.message.includes('\n'),
    );
    // Once the obstacle is gone the next read opens the cache.
    rmSync(dataPath, { recursive: true });
    assert.equal((await image.readFile(image.lookupPath('/f')!.ino, 0, 10)).length, 10);
    await image.close();
    await cache.close();
  } finally {
    img.cleanup();
  }
});

test('upstream fixtures through the blob cache: v5 md5s match the .result file, v6 the documented sums; a second instance reads nothing from the backend', async (t) => {
  const v5boot = upstreamFixture(t, FIXTURE.v5Sha256);
  const v5blobs = upstreamFixture(t, FIXTURE.v5BlobDir);
  const v5result = upstreamFixture(t, FIXTURE.v5Result);
  const v6boot = upstreamFixture(t, FIXTURE.v6Boot);
  const v6blobs = upstreamFixture(t, FIXTURE.v6BlobDir);
  if ([v5boot, v5blobs, v5result, v6boot, v6blobs].includes(undefined)) return;
  const cases: [string, string, [string, string][]][] = [
    [v5boot!, v5blobs!, resultMd5s(readFileSync(v5result!, 'utf8'))],
    [
      v6boot!,
      v6blobs!,
      [
        ['4709cf8873e419ecedc7d43fdee4a75f', '/lib.rs'],
        ['5442bc7dc9dc5f985c7594e23866ae6f', '/sync_io.rs'],
      ],
    ],
  ];
  const dir = mkdtempSync(join(tmpdir(), 'nydus-cache-fixture-'));
  try {
    for (const [boot, blobs, want] of cases) {
      const { bootstrap } = await loadBootstrapFile(boot);
      for (const pass of [1, 2]) {
        const cache = createChunkCache({ type: 'blobcache', workDir: dir, validate: true });
        const src = new CountingSource(blobs);
        const image = new RafsImage(bootstrap, src, { cache, validate: true, readAheadBytes: 0 });
        const files = await readAllFiles(image);
        const sums = [...files].map(([p, b]): [string, string] => [md5(b), p]);
        const sort = (l: [string, string][]): [string, string][] =>
          [...l].sort((x, y) => (x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0));
        assert.deepEqual(sort(sums), sort(want), `${boot} pass ${pass}`);
        if (pass === 1) assert.ok(src.reads > 0);
        else assert.equal(src.reads, 0, `${boot}: backend reads on the second pass`);
        await image.close();
        await cache.close();
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
