import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  appendFileSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { build, type BuildOptions } from '../../src/builder/build.js';
import { NydusError } from '../../src/errors/errors.js';
import { silentLogger } from '../../src/log/logger.js';

function setup(): { dir: string; src: string; out: string; opts: BuildOptions } {
  const dir = mkdtempSync(join(tmpdir(), 'nydus-change-'));
  const src = join(dir, 'src');
  const out = join(dir, 'out');
  mkdirSync(src);
  mkdirSync(out);
  // Larger than the in-flight window (16 chunks per worker), so chunks land while it is read.
  const big = Buffer.alloc(48 << 20);
  for (let i = 0; i < big.length; i += 4) big.writeUInt32LE((i * 2654435761) >>> 0, i);
  writeFileSync(join(src, 'a-big'), big);
  writeFileSync(join(src, 'b-small'), 'small');
  const opts: BuildOptions = {
    source: src,
    type: 'dir-rafs',
    fsVersion: 6,
    compressor: 'zstd',
    digester: 'blake3',
    chunkSize: 1 << 20,
    alignedChunk: false,
    bootstrap: join(out, 'boot'),
    blobDir: out,
    inlineMeta: false,
    blobToc: false,
    whiteoutSpec: 'oci',
    prefetchPatterns: [],
    repeatable: false,
    threads: 2,
    log: silentLogger,
  };
  return { dir, src, out, opts };
}

test('a file that grows while it is read fails the build and leaves no output', async () => {
  const { dir, src, out, opts } = setup();
  try {
    let done = false;
    await assert.rejects(
      build({
        ...opts,
        onProgress: () => {
          if (!done) appendFileSync(join(src, 'a-big'), 'more');
          done = true;
        },
      }),
      (e: unknown) => e instanceof NydusError && /a-big" changed during the build/.test(e.message),
    );
    assert.deepEqual(readdirSync(out), []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a file that vanishes during the build fails it and leaves no output', async () => {
  const { dir, src, out, opts } = setup();
  try {
    let done = false;
    await assert.rejects(
      build({
        ...opts,
        onProgress: () => {
          if (!done) unlinkSync(join(src, 'b-small'));
          done = true;
        },
      }),
      (e: unknown) => e instanceof NydusError && /Cannot read ".*b-small": ENOENT/.test(e.message),
    );
    assert.deepEqual(readdirSync(out), []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('identical chunks inside one build are stored once', async () => {
  const { dir, src, opts } = setup();
  try {
    writeFileSync(join(src, 'copy'), Buffer.alloc(3 << 20, 9));
    writeFileSync(join(src, 'copy2'), Buffer.alloc(3 << 20, 9));
    const r = await build(opts);
    // a-big: 48 distinct chunks; b-small: 1; copy and copy2: one 1 MiB chunk of 9s, used 6 times
    assert.equal(r.stats.chunks, 48 + 1 + 6);
    assert.equal(r.stats.dedupChunks, 5);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
