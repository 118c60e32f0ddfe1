import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BlobWriter } from '../../src/builder/blob-writer.js';

async function writer(path: string): Promise<BlobWriter> {
  return BlobWriter.create({
    path,
    version: 6,
    compressor: 'zstd',
    digester: 'blake3',
    chunkSize: 1024 * 1024,
    alignedChunk: true,
    blobIndex: 0,
    blobToc: false,
    inlineMeta: false,
  });
}

const chunk = (
  stored: Buffer,
): { id: Buffer; stored: Buffer; compressed: boolean; uncompressedSize: number } => ({
  id: Buffer.alloc(32, stored[0]),
  stored,
  compressed: false,
  uncompressedSize: stored.length,
});

test('release: a buffer is handed back only once every chunk in it is in the file', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'nydus-bw-'));
  try {
    const w = await writer(join(dir, 'blob'));
    // Several buffers of 1.5 MiB, two chunks each: writes go to the thread pool every 4 MiB.
    const bufs = [1, 2, 3, 4, 5, 6].map((v) => Buffer.alloc(1536 * 1024, v));
    const want = Buffer.concat(bufs);
    const freed: number[] = [];
    for (const [i, b] of bufs.entries()) {
      w.addChunk(chunk(b.subarray(0, 768 * 1024)));
      w.addChunk(chunk(b.subarray(768 * 1024)));
      // A buffer handed back is filled again at once (as a worker would).
      w.release(b.buffer, () => {
        freed.push(i);
        b.fill(0xff);
      });
    }
    const never = Buffer.alloc(16);
    let neverFreed = false;
    w.release(never.buffer, () => (neverFreed = true));
    assert.equal(neverFreed, true, 'a buffer with nothing to write is free at once');
    assert.ok(freed.length < bufs.length, 'the last buffer waits for its write');
    const done = await w.finish();
    assert.deepEqual(
      [...freed].sort((a, b) => a - b),
      [0, 1, 2, 3, 4, 5],
    );
    assert.equal(new Set(freed).size, freed.length, 'each buffer is handed back once');
    // What is in the file is what was given, in order: the chunks were not reused too early.
    const data = readFileSync(join(dir, 'blob')).subarray(0, 6 * 1536 * 1024);
    assert.ok(data.equals(want));
    assert.ok(done.size > data.length);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
