import assert from 'node:assert/strict';
import test from 'node:test';
import { RafsImage } from '../../src/rafs/image.js';
import { buildImage, CountingSource, randomBytes } from '../cache/cache-helpers.js';

/** 40 files of 20 KB, each one chunk, laid in the blob in name order. */
function files(): Record<string, Buffer> {
  const out: Record<string, Buffer> = {};
  for (let i = 0; i < 40; i++) out[`f${String(i).padStart(2, '0')}`] = randomBytes(20_000, 100 + i);
  return out;
}

/** The files of the image in blob order, with their inode numbers. */
async function inBlobOrder(image: RafsImage, names: string[]): Promise<{ name: string; ino: number }[]> {
  const withOffsets = await Promise.all(
    names.map(async (name) => {
      const ino = image.lookupPath(`/${name}`)!.ino;
      const [c] = await image.chunks(ino);
      return { name, ino, at: c!.compressedOffset };
    }),
  );
  return withOffsets.sort((a, b) => a.at - b.at);
}

test('blobReadAhead: a reader walking the blob in order gets the next files fetched ahead, in few backend reads', async () => {
  const data = files();
  const img = await buildImage(data, { compressor: 'none' });
  try {
    const src = new CountingSource(img.blobDir);
    const image = new RafsImage(img.bootstrap, src, { blobReadAhead: true, readAheadBytes: 1 << 20 });
    const order = await inBlobOrder(image, Object.keys(data));
    for (const f of order) {
      assert.deepEqual(await image.readFile(f.ino, 0, 1 << 20), data[f.name], f.name);
      // Let the read-ahead that this read started land before the next read looks for it.
      await new Promise((r) => setImmediate(r));
    }
    const blobBytes = order.length * 20_000;
    assert.ok(src.reads < order.length / 3, `${src.reads} backend reads for ${order.length} files`);
    assert.ok(src.bytes <= blobBytes * 1.05, `${src.bytes} bytes fetched for ${blobBytes}`);
    await image.close();
  } finally {
    img.cleanup();
  }
});

test('blobReadAhead: scattered reads fetch nothing beyond what they read', async () => {
  const data = files();
  const img = await buildImage(data, { compressor: 'none' });
  try {
    const src = new CountingSource(img.blobDir);
    const image = new RafsImage(img.bootstrap, src, { blobReadAhead: true, readAheadBytes: 1 << 20 });
    const order = await inBlobOrder(image, Object.keys(data));
    // Every third file, backwards: never where the last read ended.
    const picked = order.filter((_, i) => i % 3 === 0).reverse();
    for (const f of picked) {
      assert.deepEqual(await image.readFile(f.ino, 0, 1 << 20), data[f.name], f.name);
      await new Promise((r) => setImmediate(r));
    }
    assert.equal(src.reads, picked.length);
    assert.equal(src.bytes, picked.length * 20_000);
    await image.close();
  } finally {
    img.cleanup();
  }
});

test('without blobReadAhead every file of a walk is its own backend read', async () => {
  const data = files();
  const img = await buildImage(data, { compressor: 'none' });
  try {
    const src = new CountingSource(img.blobDir);
    const image = new RafsImage(img.bootstrap, src, { readAheadBytes: 1 << 20 });
    const order = await inBlobOrder(image, Object.keys(data));
    for (const f of order) assert.deepEqual(await image.readFile(f.ino, 0, 1 << 20), data[f.name]);
    assert.equal(src.reads, order.length);
    await image.close();
  } finally {
    img.cleanup();
  }
});
