import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Opcode } from '../../src/fuse/abi.js';
import { FuseError } from '../../src/fuse/errors.js';
import { RafsFs } from '../../src/daemon/rafs-fs.js';
import { RafsImage } from '../../src/rafs/image.js';
import { LocalFsBlobSource } from '../../src/storage/localfs.js';
import { buildImage } from '../cache/cache-helpers.js';

/** RafsFs.warmUp runs the request path on the root and leaves the file system as it was. */

test('warmUp runs on images with files and with only a directory at the root, and lookups answer the same after it', async () => {
  for (const files of [
    { a: Buffer.from('alpha\n'), 'd/b': Buffer.from('beta\n') },
    { 'x/y/z': Buffer.from('zed') },
  ]) {
    const img = await buildImage(files);
    try {
      const image = new RafsImage(img.bootstrap, new LocalFsBlobSource({ dir: img.blobDir }));
      const fs = new RafsFs(image);
      const header = { unique: 7n, nodeid: 1n, uid: 0, gid: 0, pid: 0 };
      const lookup = (name: string) =>
        fs.lookup({ ...header, op: 'lookup', opcode: Opcode.LOOKUP, name: Buffer.from(name) });
      const before = Object.keys(files).includes('a') ? lookup('a') : undefined;
      fs.warmUp();
      fs.warmUp();
      if (before !== undefined) assert.deepEqual(lookup('a'), before);
      assert.throws(
        () => lookup('.nydus-warm-up'),
        (e: unknown) => e instanceof FuseError,
      );
      await image.close();
    } finally {
      img.cleanup();
    }
  }
});
