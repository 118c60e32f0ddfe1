import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { compress } from 'zstd-napi';
import { parseGoDuration, targetFromSuffix } from '../../src/cli/nydusify/convert.js';
import { parseHumanSize } from '../../src/cli/nydusify/copy.js';
import {
  extractBootstrapFromLayer,
  fetchNydusBootstrap,
  makeBootstrapLayer,
  readBootstrapLayerFiles,
} from '../../src/converter/bootstrap-layer.js';
import { parseChunkDictArg } from '../../src/converter/convert.js';
import { decompressLayer, detectCompression } from '../../src/converter/layer.js';
import { localPathOf } from '../../src/converter/copy.js';
import { sha256Hex } from '../../src/codec/digest.js';

async function all(s: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of s) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

test('layer compression is detected by magic bytes and streamed out', async () => {
  const data = Buffer.alloc(300_000, 7);
  assert.equal(detectCompression(gzipSync(data)), 'gzip');
  assert.equal(detectCompression(compress(data)), 'zstd');
  assert.equal(detectCompression(data), 'none');
  for (const [bytes, kind] of [
    [gzipSync(data), 'gzip'],
    [compress(data), 'zstd'],
    [data, 'none'],
  ] as const) {
    const chunks = [bytes.subarray(0, 1), bytes.subarray(1, 3), bytes.subarray(3)];
    const r = await decompressLayer(Readable.from(chunks));
    assert.equal(r.compression, kind);
    assert.deepEqual(await all(r.stream), data);
  }
  const bad = Buffer.concat([gzipSync(data).subarray(0, 100), Buffer.alloc(50)]);
  const r = await decompressLayer(Readable.from([bad]));
  await assert.rejects(all(r.stream));
});

test('bootstrap layer: upstream tar entries, annotations, diff_id; read back', async () => {
  const boot = Buffer.alloc(5000, 1);
  const meta = Buffer.alloc(8192, 2);
  const l = makeBootstrapLayer(boot, {
    fsVersion: 6,
    oci: true,
    blobMetas: [{ name: `${'a'.repeat(64)}.blob.meta`, data: meta }],
  });
  assert.equal(l.descriptor.mediaType, 'application/vnd.oci.image.layer.v1.tar+gzip');
  assert.equal(l.descriptor.annotations?.['containerd.io/snapshot/nydus-bootstrap'], 'true');
  assert.equal(l.descriptor.annotations?.['containerd.io/snapshot/nydus-fs-version'], '6');
  assert.equal(l.descriptor.digest, `sha256:${sha256Hex(l.bytes)}`);
  const files = await readBootstrapLayerFiles(l.bytes);
  assert.deepEqual([...files.keys()], ['image/image.boot', `image/${'a'.repeat(64)}.blob.meta`]);
  assert.deepEqual(await extractBootstrapFromLayer(l.bytes), boot);
  const docker = makeBootstrapLayer(boot, { fsVersion: 5, oci: false });
  assert.equal(docker.descriptor.mediaType, 'application/vnd.docker.image.rootfs.diff.tar.gzip');
  const manifest = {
    schemaVersion: 2 as const,
    config: { mediaType: 'x', digest: `sha256:${'0'.repeat(64)}`, size: 1 },
    layers: [docker.descriptor],
  };
  assert.deepEqual(
    await fetchNydusBootstrap({ fetchBlob: () => Promise.resolve(docker.bytes) }, manifest),
    boot,
  );
  await assert.rejects(
    fetchNydusBootstrap({ fetchBlob: () => Promise.resolve(docker.bytes) }, { ...manifest, layers: [] }),
    /Not a Nydus image/,
  );
});

test('flag parsing: durations, sizes, chunk dict, target suffix, file://', () => {
  assert.equal(parseGoDuration('5s', 'x'), 5000);
  assert.equal(parseGoDuration('1m30s', 'x'), 90_000);
  assert.equal(parseGoDuration('250ms', 'x'), 250);
  assert.throws(() => parseGoDuration('5 seconds', 'x'));
  assert.equal(parseHumanSize('0MB', 'x'), 0);
  assert.equal(parseHumanSize('1MB', 'x'), 1_000_000);
  assert.equal(parseHumanSize('1MiB', 'x'), 1 << 20);
  assert.throws(() => parseHumanSize('lots', 'x'));
  assert.deepEqual(parseChunkDictArg('bootstrap:registry:localhost:5000/ns/app:dict'), {
    source: 'registry',
    ref: 'localhost:5000/ns/app:dict',
  });
  assert.deepEqual(parseChunkDictArg('bootstrap:local:/a/b.boot'), { source: 'local', path: '/a/b.boot' });
  assert.throws(() => parseChunkDictArg('blob:local:/x'), /format/);
  assert.equal(
    targetFromSuffix('localhost:5000/ubuntu:16.04', '-nydus'),
    'localhost:5000/ubuntu:16.04-nydus',
  );
  assert.equal(targetFromSuffix('busybox', '-nydus'), 'docker.io/library/busybox:latest-nydus');
  assert.throws(() => targetFromSuffix(`busybox@sha256:${'a'.repeat(64)}`, '-n'), /digest/);
  assert.equal(localPathOf('file://x.tar', '/w'), '/w/x.tar');
  assert.equal(localPathOf('file:///abs/x.tar'), '/abs/x.tar');
  assert.equal(localPathOf('host/repo:tag'), undefined);
});
