import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NydusError } from '../../src/errors/errors.js';
import { parseBootstrap } from '../../src/format/bootstrap.js';
import { isReg } from '../../src/format/flags.js';
import { RafsImage } from '../../src/rafs/image.js';
import { FIXTURE, readUpstreamFixture } from '../helpers/fixtures.js';
import { MemoryBlobSource } from '../helpers/memory-blobs.js';
import { prng } from '../helpers/prng.js';

/**
 * Everything a user command does with an image: parse, validate, walk, read every file
 * (verified). It must succeed or throw a NydusError; anything else is a bug.
 */
async function exercise(boot: Buffer, blobs: MemoryBlobSource): Promise<string> {
  try {
    const b = parseBootstrap(boot);
    b.validate();
    const img = new RafsImage(b, blobs);
    for (const e of img.walk()) {
      b.xattrs(e.ino);
      if (isReg(e.attr.mode)) await img.readFile(e.ino, 0, Math.min(e.attr.size, 8 << 20), { verify: true });
    }
    return 'ok';
  } catch (e) {
    if (e instanceof NydusError) return e.code;
    throw e;
  }
}

const CASES = [
  {
    name: 'v5',
    boot: FIXTURE.v5Sha256,
    blob: FIXTURE.v5Blob,
    id: '7334a2594e133cf8ae364189c2276b090fc490c627bcc3fb1077f0419a538e00',
  },
  {
    name: 'v6',
    boot: FIXTURE.v6Boot,
    blob: FIXTURE.v6Blob,
    id: 'be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef',
  },
] as const;

for (const c of CASES) {
  test(`${c.name}: every truncation of the bootstrap fails cleanly`, async (t) => {
    const boot = readUpstreamFixture(t, c.boot);
    const blob = readUpstreamFixture(t, c.blob);
    if (boot === undefined || blob === undefined) return;
    const src = new MemoryBlobSource([[c.id, blob]]);
    assert.equal(await exercise(boot, src), 'ok');
    for (let len = 0; len < boot.length; len += c.name === 'v5' ? 1 : 7) {
      const r = await exercise(boot.subarray(0, len), src);
      assert.notEqual(r, 'ok', `truncated to ${len} bytes must not pass`);
    }
  });

  test(`${c.name}: random byte flips in the bootstrap never crash or hang`, async (t) => {
    const boot = readUpstreamFixture(t, c.boot);
    const blob = readUpstreamFixture(t, c.blob);
    if (boot === undefined || blob === undefined) return;
    const src = new MemoryBlobSource([[c.id, blob]]);
    const rnd = prng(c.name === 'v5' ? 5 : 6);
    const outcomes = new Map<string, number>();
    for (let i = 0; i < 1500; i++) {
      const bad = Buffer.from(boot);
      const flips = 1 + Math.floor(rnd() * 4);
      for (let f = 0; f < flips; f++) bad[Math.floor(rnd() * bad.length)] = Math.floor(rnd() * 256);
      const r = await exercise(bad, src);
      outcomes.set(r, (outcomes.get(r) ?? 0) + 1);
    }
    assert.ok((outcomes.get('ERR_FORMAT') ?? 0) > 0, JSON.stringify([...outcomes]));
  });

  test(`${c.name}: a corrupted blob gives digest or decompression errors, never wrong bytes`, async (t) => {
    const boot = readUpstreamFixture(t, c.boot);
    const blob = readUpstreamFixture(t, c.blob);
    if (boot === undefined || blob === undefined) return;
    const rnd = prng(42);
    for (let i = 0; i < 200; i++) {
      const bad = Buffer.from(blob);
      const at = Math.floor(rnd() * Math.min(bad.length, 8000));
      bad[at] = bad[at]! ^ (1 + Math.floor(rnd() * 255));
      const r = await exercise(boot, new MemoryBlobSource([[c.id, bad]]));
      assert.ok(['ok', 'ERR_DIGEST', 'ERR_DECOMPRESS', 'ERR_FORMAT'].includes(r), r);
    }
    // a blob cut short: chunks point past its end
    const r = await exercise(boot, new MemoryBlobSource([[c.id, blob.subarray(0, 100)]]));
    assert.equal(r, 'ERR_FORMAT');
  });
}

test('zero-filled and random files are refused', async () => {
  const src = new MemoryBlobSource([]);
  const rnd = prng(7);
  for (const size of [0, 1, 512, 1024, 1028, 4096, 8192, 8200, 20480, 65536]) {
    assert.equal(await exercise(Buffer.alloc(size), src), 'ERR_FORMAT');
    const r = Buffer.alloc(size);
    for (let i = 0; i < size; i++) r[i] = Math.floor(rnd() * 256);
    assert.equal(await exercise(r, src), 'ERR_FORMAT');
  }
});
