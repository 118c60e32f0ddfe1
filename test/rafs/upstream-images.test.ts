import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { isDir, isReg, isSymlink } from '../../src/format/flags.js';
import { RafsImage } from '../../src/rafs/image.js';
import { loadBootstrapFile } from '../../src/rafs/open.js';
import { LocalFsBlobSource } from '../../src/storage/localfs.js';
import { FIXTURE, upstreamFixture } from '../helpers/fixtures.js';
import { resultMd5s, resultTreeLines, treeJsonLines, type TreeNode } from '../helpers/tree-json.js';

/** Build the tree -J structure of an image by walking it through the Bootstrap API. */
function treeOf(img: RafsImage): TreeNode {
  const b = img.bootstrap;
  const node = (ino: number, name: string): TreeNode => {
    const a = b.getAttr(ino);
    if (isDir(a.mode)) {
      const contents = b.readdir(ino).map((e) => node(e.ino, e.name.toString()));
      return { type: 'directory', name, contents };
    }
    if (isSymlink(a.mode)) return { type: 'link', name, target: b.readlink(ino).toString() };
    return { type: 'file', name };
  };
  return node(b.rootIno, '');
}

async function md5sOf(img: RafsImage): Promise<[string, string][]> {
  const out: [string, string][] = [];
  for (const e of img.walk()) {
    if (!isReg(e.attr.mode)) continue;
    const h = createHash('md5');
    for await (const part of img.fileData(e.ino, { verify: true })) h.update(part);
    out.push([h.digest('hex'), e.path.toString()]);
  }
  return out.sort((x, y) => (x[0] + x[1] < y[0] + y[1] ? -1 : 1));
}

for (const [label, rel] of [
  ['sha256 / none', FIXTURE.v5Sha256],
  ['blake3 / "lz4_block"', FIXTURE.v5Blake3],
] as const) {
  test(`upstream v5 image (${label}): tree and md5 of every file equal the .result file`, async (t) => {
    const boot = upstreamFixture(t, rel);
    const blobs = upstreamFixture(t, FIXTURE.v5BlobDir);
    const resultPath = upstreamFixture(t, `${rel}.result`);
    if (boot === undefined || blobs === undefined || resultPath === undefined) return;
    const result = readFileSync(resultPath, 'utf8');
    const { bootstrap } = await loadBootstrapFile(boot);
    bootstrap.validate();
    const img = new RafsImage(bootstrap, new LocalFsBlobSource({ dir: blobs }));
    try {
      assert.deepEqual(treeJsonLines(treeOf(img)), resultTreeLines(result));
      const want = resultMd5s(result);
      assert.equal(want.length, 23);
      assert.deepEqual(await md5sOf(img), want);
      // random-access reads agree with whole-file reads
      const e = img.lookupPath(
        '/normal-file-test/busybox/1f777dbdd68d1c4d554bc0d20e027bfef9ed2dfe2d8d5f029e958552a0e12475/layer.tar',
      );
      assert.ok(e !== undefined);
      const whole = await img.readFile(e.ino, 0, 1 << 30);
      for (const [off, len] of [
        [0, 1],
        [1048575, 2],
        [1048576 - 4096, 8192],
        [whole.length - 10, 100],
        [whole.length, 10],
      ] as const) {
        assert.deepEqual(await img.readFile(e.ino, off, len), whole.subarray(off, off + len));
      }
    } finally {
      await img.close();
    }
  });
}

test('upstream v6 image: both files have the documented md5 sums', async (t) => {
  const boot = upstreamFixture(t, FIXTURE.v6Boot);
  const blob = upstreamFixture(t, FIXTURE.v6Blob);
  if (boot === undefined || blob === undefined) return;
  const { bootstrap } = await loadBootstrapFile(boot);
  bootstrap.validate();
  const img = new RafsImage(bootstrap, new LocalFsBlobSource({ dir: dirname(blob) }));
  try {
    assert.deepEqual(await md5sOf(img), [
      ['4709cf8873e419ecedc7d43fdee4a75f', '/lib.rs'],
      ['5442bc7dc9dc5f985c7594e23866ae6f', '/sync_io.rs'],
    ]);
    assert.equal(img.lookupPath('/nope'), undefined);
    assert.equal(img.lookupPath('/lib.rs/x'), undefined);
  } finally {
    await img.close();
  }
});

test('a missing blob is a clear ERR_NOT_FOUND, not a crash', async (t) => {
  const boot = upstreamFixture(t, FIXTURE.v6Boot);
  if (boot === undefined) return;
  const { bootstrap } = await loadBootstrapFile(boot);
  const img = new RafsImage(bootstrap, new LocalFsBlobSource({ dir: '/nonexistent-dir' }));
  const e = img.lookupPath('/lib.rs');
  assert.ok(e !== undefined);
  await assert.rejects(img.readFile(e.ino, 0, 10), {
    code: 'ERR_NOT_FOUND',
    message: /Blob be7d77ee.* not found in "\/nonexistent-dir"/,
  });
});
