import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createChunkCache } from '../../src/cache/index.js';
import type { BlobInfo } from '../../src/format/model.js';
import type { BlobReader, BlobSource } from '../../src/storage/blob-source.js';
import { RafsImage, type SharedBytes } from '../../src/rafs/image.js';
import { LocalFsBlobSource } from '../../src/storage/localfs.js';
import { buildImage, CountingSource, randomBytes } from '../cache/cache-helpers.js';
import { prng } from '../helpers/prng.js';

/**
 * Reads with `reuseBuffers` (the daemon's mode): chunk buffers come from a pool and go back to
 * it once no read holds them, so bytes lent by readFileShared must stay intact until released,
 * whatever other reads do meanwhile, and readFile must hand out copies.
 */

const CHUNK = 0x10000;

/** Text-like bytes: compressible, so chunks are zstd frames. */
function textBytes(n: number, seed: number): Buffer {
  const rnd = prng(seed);
  const words = ['alpha ', 'beta ', 'gamma ', 'delta\n', 'epsilon ', 'zeta '];
  const parts: string[] = [];
  let len = 0;
  while (len < n) {
    const w = words[Math.floor(rnd() * words.length)]!;
    parts.push(w);
    len += w.length;
  }
  return Buffer.from(parts.join('')).subarray(0, n);
}

function joined(r: SharedBytes): Buffer {
  return Buffer.concat(r.parts, r.length);
}

test('bytes lent by readFileShared stay intact until released while other reads recycle buffers', async () => {
  const text = textBytes(CHUNK * 24 + 777, 1);
  const rand = randomBytes(CHUNK * 24 + 333, 2);
  const img = await buildImage({ text, rand }, { chunkSize: CHUNK });
  try {
    const src = new CountingSource(img.blobDir);
    // Room for four chunks only, so the other reads evict what the held ones use.
    const image = new RafsImage(img.bootstrap, src, { reuseBuffers: true, recentBytes: 4 * CHUNK });
    const files = [
      { ino: image.lookupPath('/text')!.ino, data: text },
      { ino: image.lookupPath('/rand')!.ino, data: rand },
    ];
    const rnd = prng(3);
    const pick = (): { ino: number; data: Buffer; off: number; len: number } => {
      const f = files[Math.floor(rnd() * files.length)]!;
      const off = Math.floor(rnd() * f.data.length);
      // Inside one chunk, across two, or across several.
      const len = [4096, CHUNK, 3 * CHUNK + 17][Math.floor(rnd() * 3)]!;
      return { ...f, off, len };
    };
    const held = await Promise.all(
      Array.from({ length: 8 }, async () => {
        const p = pick();
        return { p, r: await image.readFileShared(p.ino, p.off, p.len) };
      }),
    );
    for (let i = 0; i < 200; i++) {
      const batch = Array.from({ length: 4 }, pick);
      const got = await Promise.all(batch.map((p) => image.readFileShared(p.ino, p.off, p.len)));
      got.forEach((r, k) => {
        const p = batch[k]!;
        assert.deepEqual(joined(r), p.data.subarray(p.off, p.off + p.len), `read ${p.off}+${p.len}`);
        r.release();
      });
    }
    for (const { p, r } of held) {
      assert.deepEqual(joined(r), p.data.subarray(p.off, p.off + p.len), `held read ${p.off}+${p.len}`);
      r.release();
      r.release(); // a second release changes nothing
    }
    const pool = image.bufferPool!;
    assert.equal(pool.slotSize, CHUNK);
    assert.ok(pool.reused > pool.created, `slots reused ${pool.reused} times, ${pool.created} created`);
    // Everything in use is in the recent memory or a held read: far fewer slots than reads.
    assert.ok(pool.created <= 64, `${pool.created} slots created`);
    await image.close();
  } finally {
    img.cleanup();
  }
});

test('readFile and readChunk return copies when buffers are reused', async () => {
  const text = textBytes(CHUNK * 8, 4);
  const img = await buildImage({ text }, { chunkSize: CHUNK });
  try {
    const image = new RafsImage(img.bootstrap, new LocalFsBlobSource({ dir: img.blobDir }), {
      reuseBuffers: true,
      recentBytes: CHUNK,
    });
    const ino = image.lookupPath('/text')!.ino;
    const first = await image.readFile(ino, 100, 1000);
    const chunks = await image.chunks(ino);
    const chunk0 = await image.readChunk(chunks[0]!);
    for (let off = 0; off < text.length; off += 4096) await image.readFile(ino, off, 4096);
    assert.deepEqual(first, text.subarray(100, 1100));
    assert.deepEqual(chunk0, text.subarray(0, CHUNK));
    // Scribbling on a copy does not reach later reads.
    first.fill(0);
    assert.deepEqual(await image.readFile(ino, 100, 1000), text.subarray(100, 1100));
    await image.close();
  } finally {
    img.cleanup();
  }
});

/** A source whose reads fail inside one byte range of the blob. */
class FailingSource implements BlobSource {
  readonly #inner: BlobSource;
  readonly #bad: [number, number];
  constructor(blobDir: string, bad: [number, number]) {
    this.#inner = new LocalFsBlobSource({ dir: blobDir });
    this.#bad = bad;
  }
  async open(blob: BlobInfo): Promise<BlobReader> {
    const r = await this.#inner.open(blob);
    const [from, to] = this.#bad;
    return {
      size: r.size,
      read: async (offset, length, into) => {
        if (offset < to && offset + length > from) throw new Error('injected backend failure');
        return r.read(offset, length, into);
      },
      close: () => r.close(),
    };
  }
}

test('a read across chunks with one failing fails whole, and the chunks it held are reused afterwards', async () => {
  const rand = randomBytes(CHUNK * 6, 5);
  const img = await buildImage({ rand }, { chunkSize: CHUNK, compressor: 'none' });
  try {
    const probe = new RafsImage(img.bootstrap, new LocalFsBlobSource({ dir: img.blobDir }));
    const chunks = await probe.chunks(probe.lookupPath('/rand')!.ino);
    await probe.close();
    const bad = chunks[3]!;
    const image = new RafsImage(
      img.bootstrap,
      new FailingSource(img.blobDir, [bad.compressedOffset, bad.compressedOffset + bad.compressedSize]),
      { reuseBuffers: true, recentBytes: 2 * CHUNK, readAheadBytes: 0 },
    );
    const ino = image.lookupPath('/rand')!.ino;
    await assert.rejects(image.readFileShared(ino, 2 * CHUNK + 10, 2 * CHUNK), /injected backend failure/);
    // The chunks around the bad one still read right, many times over, from recycled slots.
    for (let round = 0; round < 20; round++) {
      for (const k of [0, 1, 2, 4, 5]) {
        const r = await image.readFileShared(ino, k * CHUNK, CHUNK);
        assert.deepEqual(joined(r), rand.subarray(k * CHUNK, (k + 1) * CHUNK), `chunk ${k}`);
        r.release();
      }
    }
    const pool = image.bufferPool!;
    assert.ok(pool.created <= 8, `${pool.created} slots created for 100 reads`);
    await image.close();
  } finally {
    img.cleanup();
  }
});

test('chunks read back from the blob cache land in pool slots and stay intact while lent', async () => {
  const text = textBytes(CHUNK * 12 + 99, 6);
  const img = await buildImage({ text }, { chunkSize: CHUNK });
  try {
    const workDir = join(img.dir, 'cache');
    mkdirSync(workDir);
    const cache = createChunkCache({ type: 'blobcache', workDir });
    const src = new CountingSource(img.blobDir);
    const image = new RafsImage(img.bootstrap, src, {
      cache,
      reuseBuffers: true,
      recentBytes: 2 * CHUNK,
      readAheadBytes: 0,
    });
    const ino = image.lookupPath('/text')!.ino;
    // First pass fills the cache from the backend.
    assert.deepEqual(await image.readFile(ino, 0, text.length), text);
    await image.close();
    const fromBackend = src.reads;
    const again = new RafsImage(img.bootstrap, src, {
      cache,
      reuseBuffers: true,
      recentBytes: 2 * CHUNK,
      readAheadBytes: 0,
    });
    const held = await again.readFileShared(ino, 5 * CHUNK + 7, CHUNK);
    for (let round = 0; round < 5; round++) {
      for (let k = 0; k < 12; k++) {
        const r = await again.readFileShared(ino, k * CHUNK, CHUNK);
        assert.deepEqual(joined(r), text.subarray(k * CHUNK, (k + 1) * CHUNK), `chunk ${k}`);
        r.release();
      }
    }
    assert.deepEqual(joined(held), text.subarray(5 * CHUNK + 7, 6 * CHUNK + 7));
    held.release();
    assert.equal(src.reads, fromBackend, 'the second image reads only the cache');
    const pool = again.bufferPool!;
    assert.ok(pool.reused > 20, `slots reused ${pool.reused} times`);
    assert.ok(pool.created <= 8, `${pool.created} slots created`);
    await again.close();
  } finally {
    img.cleanup();
  }
});
