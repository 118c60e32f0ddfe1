import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statfsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BlobWriter } from '../../src/builder/blob-writer.js';

async function writer(path: string, directIo = false, version: 5 | 6 = 6): Promise<BlobWriter> {
  return BlobWriter.create({
    path,
    version,
    compressor: 'zstd',
    digester: 'blake3',
    chunkSize: 1024 * 1024,
    alignedChunk: true,
    blobIndex: 0,
    blobToc: false,
    inlineMeta: false,
    directIo,
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

/** File systems known to take O_DIRECT (statfs magic numbers): ext4, xfs, btrfs, tmpfs. */
const DIRECT_FS = new Set([0xef53, 0x58465342, 0x9123683e, 0x01021994]);

test('a buffer given to addChunk can be filled again at once: the file holds what was given', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'nydus-bw-'));
  try {
    const w = await writer(join(dir, 'blob'));
    // One buffer refilled for every chunk (as the workers' result buffers are), 1.5 MiB each:
    // the writer's 1 MiB stages fill and go to the thread pool meanwhile.
    const reused = Buffer.alloc(1536 * 1024);
    const want: Buffer[] = [];
    for (let i = 1; i <= 6; i++) {
      reused.fill(i);
      want.push(Buffer.from(reused));
      w.addChunk(chunk(reused));
    }
    const done = await w.finish();
    const data = readFileSync(join(dir, 'blob'));
    assert.equal(data.length, done.size);
    assert.ok(data.subarray(0, 6 * 1536 * 1024).equals(Buffer.concat(want)));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('direct I/O: the same blob, byte for byte, and cut to its size', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nydus-bw-'));
  try {
    const fsType = statfsSync(dir).type;
    // Sizes around the stage (1 MiB) and block (4 KiB) bounds, and a blob smaller than a block.
    for (const sizes of [[100], [4096, 1], [1024 * 1024 - 7, 9, 4095], [3 * 1024 * 1024 + 5, 700 * 1024]]) {
      const files: Buffer[] = [];
      for (const direct of [false, true]) {
        const path = join(dir, `blob-${String(direct)}`);
        const w = await writer(path, direct, 5);
        if (direct && process.platform === 'linux' && DIRECT_FS.has(fsType)) {
          assert.equal(w.direct, true, `O_DIRECT on a file system of type 0x${fsType.toString(16)}`);
        }
        if (!direct) assert.equal(w.direct, false);
        for (const [i, n] of sizes.entries()) w.addChunk(chunk(Buffer.alloc(n, i + 1)));
        const done = await w.finish();
        const bytes = readFileSync(path);
        assert.equal(bytes.length, done.size, `sizes ${sizes.join(',')}: file cut to the blob's size`);
        files.push(bytes);
      }
      assert.ok(files[0]!.equals(files[1]!), `sizes ${sizes.join(',')}: direct and buffered blobs differ`);
    }
    if (!DIRECT_FS.has(fsType))
      t.diagnostic(`${dir}: file system 0x${fsType.toString(16)}, direct mode not asserted`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
