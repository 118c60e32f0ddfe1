import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileBlobReader } from '../../src/storage/localfs.js';

test('FileBlobReader.readNow reads what the page cache holds at once, into a given buffer; nothing outside the blob', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'nydus-localfs-'));
  try {
    const path = join(dir, 'blob');
    const data = Buffer.alloc(100_000);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
    // Just written: its pages are in the page cache.
    writeFileSync(path, data);
    const r = await FileBlobReader.open(path);
    const got = r.readNow(1000, 50_000);
    if (got !== undefined) assert.deepEqual(got, data.subarray(1000, 51_000));
    const into = Buffer.alloc(60_000);
    const landed = r.readNow(0, 4096, into);
    if (landed !== undefined) {
      assert.equal(landed.buffer, into.buffer);
      assert.deepEqual(landed, data.subarray(0, 4096));
    }
    assert.equal(r.readNow(99_000, 2000), undefined);
    assert.equal(r.readNow(-1, 10), undefined);
    assert.equal(r.readNow(10, 0), undefined);
    // read answers whatever readNow does not.
    assert.deepEqual(await r.read(1000, 50_000), data.subarray(1000, 51_000));
    await r.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
