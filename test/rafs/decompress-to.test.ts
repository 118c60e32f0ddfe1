import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compress, decompressTo } from '../../src/codec/compress.js';
import { NydusError } from '../../src/errors/errors.js';
import { prng } from '../helpers/prng.js';

/**
 * decompressTo: big units decode on a worker thread through the system library, small ones
 * here; into a caller's buffer or a new one; malformed input is an ERR_DECOMPRESS error.
 */

function sample(n: number, seed: number): Buffer {
  const rnd = prng(seed);
  const b = Buffer.alloc(n);
  // Runs of repeated bytes: compressible, but not trivially.
  for (let i = 0; i < n;) {
    const v = Math.floor(rnd() * 256);
    const run = 1 + Math.floor(rnd() * 40);
    b.fill(v, i, Math.min(n, i + run));
    i += run;
  }
  return b;
}

for (const algo of ['zstd', 'lz4_block'] as const) {
  for (const size of [1000, 1 << 20]) {
    test(`${algo}: ${size} bytes decode into a given buffer and into a new one`, async () => {
      const data = sample(size, size);
      const packed = compress(algo, data);
      assert.ok(packed.length < data.length);
      const out = Buffer.alloc(size + 100, 0xee);
      const into = await decompressTo(algo, packed, size, out);
      assert.equal(into.buffer, out.buffer);
      assert.equal(into.byteOffset, out.byteOffset);
      assert.deepEqual(into, data);
      assert.equal(out[size], 0xee, 'nothing written past the unit');
      assert.deepEqual(await decompressTo(algo, packed, size), data);
      // A buffer too small is not written to: the result is a new buffer.
      const small = Buffer.alloc(10);
      const fresh = await decompressTo(algo, packed, size, small);
      assert.deepEqual(fresh, data);
    });
  }

  test(`${algo}: malformed or wrongly sized input is an ERR_DECOMPRESS error`, async () => {
    const data = sample(1 << 18, 9);
    const packed = compress(algo, data);
    const broken = Buffer.from(packed);
    broken.fill(0xff, 0, Math.min(64, broken.length));
    for (const [src, size] of [
      [broken, data.length],
      [packed, data.length - 1],
      [packed.subarray(0, packed.length >> 1), data.length],
    ] as const) {
      await assert.rejects(
        decompressTo(algo, src, size, Buffer.alloc(data.length)),
        (e: unknown) => e instanceof NydusError && e.code === 'ERR_DECOMPRESS',
      );
    }
  });
}

test('many concurrent worker decodes each get their own bytes', async () => {
  const units = Array.from({ length: 24 }, (_, i) => sample((1 << 19) + i * 1000, 100 + i));
  const packed = units.map((u) => compress('zstd', u));
  const outs = await Promise.all(
    packed.map((p, i) => decompressTo('zstd', p, units[i]!.length, Buffer.alloc(1 << 20))),
  );
  outs.forEach((o, i) => assert.deepEqual(o, units[i], `unit ${i}`));
});
