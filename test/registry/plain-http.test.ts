import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, test } from 'node:test';
import { isNydusError } from '../../src/errors/errors.js';
import { RegistryClient, type Repository } from '../../src/registry/client.js';
import {
  DOCKER_CONFIG,
  DOCKER_LAYER_GZIP,
  DOCKER_MANIFEST,
  DOCKER_MANIFEST_LIST,
  OCI_CONFIG,
  OCI_INDEX,
  OCI_LAYER_GZIP,
  OCI_MANIFEST,
} from '../../src/oci/media-types.js';
import { parsePlatform, type Platform } from '../../src/oci/manifest.js';
import {
  haveRegistry,
  needRegistry,
  sha256Digest,
  startRegistry,
  type TestRegistry,
} from '../helpers/registry.js';

let reg: TestRegistry;
let client: RegistryClient;

before(async () => {
  if (!haveRegistry()) return;
  reg = await startRegistry();
  client = new RegistryClient(reg.host, { plainHttp: true, retries: 1, env: { DOCKER_CONFIG: reg.dir } });
});

after(async () => {
  await client?.close();
  await reg?.stop();
});

function code(c: string, re?: RegExp) {
  return (e: unknown) => isNydusError(e) && e.code === c && (re === undefined || re.test(e.message));
}

async function pushImage(
  repo: Repository,
  tag: string,
  platform: Platform,
  docker = false,
): Promise<{ digest: string; bytes: Buffer; layers: Buffer[] }> {
  const layers = [randomBytes(3000), randomBytes(100)];
  const config = Buffer.from(
    JSON.stringify({
      architecture: platform.architecture,
      os: platform.os,
      rootfs: { type: 'layers', diff_ids: layers.map(sha256Digest) },
    }),
  );
  for (const b of [config, ...layers]) await repo.pushBlob(sha256Digest(b), b.length, b);
  const manifest = {
    schemaVersion: 2,
    mediaType: docker ? DOCKER_MANIFEST : OCI_MANIFEST,
    config: {
      mediaType: docker ? DOCKER_CONFIG : OCI_CONFIG,
      digest: sha256Digest(config),
      size: config.length,
    },
    layers: layers.map((l) => ({
      mediaType: docker ? DOCKER_LAYER_GZIP : OCI_LAYER_GZIP,
      digest: sha256Digest(l),
      size: l.length,
    })),
  };
  const bytes = Buffer.from(JSON.stringify(manifest));
  const digest = await repo.putManifest(tag, docker ? DOCKER_MANIFEST : OCI_MANIFEST, bytes);
  return { digest, bytes, layers };
}

test('blobs: push from a buffer, a file, a stream and in chunks; skip when present', async (t) => {
  if (!needRegistry(t)) return;
  const repo = client.repository('test/blobs');
  const a = randomBytes(100_000);
  assert.equal(await repo.pushBlob(sha256Digest(a), a.length, a), 'uploaded');
  assert.equal(await repo.pushBlob(sha256Digest(a), a.length, a), 'exists');
  assert.equal(await repo.headBlob(sha256Digest(a)), a.length);

  const b = randomBytes(70_001);
  const file = join(reg.dir, 'blob-b');
  writeFileSync(file, b);
  assert.equal(await repo.pushBlob(sha256Digest(b), b.length, file, { chunkSize: 16_384 }), 'uploaded');
  assert.deepEqual(await repo.fetchBlob(sha256Digest(b)), b);

  const c = randomBytes(50_000);
  const stream = () => Readable.from([c.subarray(0, 7), c.subarray(7, 30_000), c.subarray(30_000)]);
  assert.equal(await repo.pushBlob(sha256Digest(c), c.length, stream, { chunkSize: 9999 }), 'uploaded');
  assert.deepEqual(await repo.fetchBlob(sha256Digest(c)), c);

  const empty = Buffer.alloc(0);
  assert.equal(await repo.pushBlob(sha256Digest(empty), 0, empty), 'uploaded');
  assert.equal(await repo.headBlob(sha256Digest(empty)), 0);

  // Data that does not match its digest is never committed.
  const d = randomBytes(1000);
  const other = sha256Digest(randomBytes(10));
  await assert.rejects(repo.pushBlob(other, d.length, d), code('ERR_DIGEST'));
  assert.equal(await repo.headBlob(other), undefined);
  await assert.rejects(
    repo.pushBlob(sha256Digest(d), 999, () => Readable.from([d])),
    code('ERR_INVALID_ARG'),
  );
  assert.equal(await repo.headBlob(sha256Digest(d)), undefined);
});

test('blobs: cross-repository mount', async (t) => {
  if (!needRegistry(t)) return;
  const src = client.repository('test/mount-src');
  const dst = client.repository('test/mount-dst');
  const a = randomBytes(5000);
  await src.pushBlob(sha256Digest(a), a.length, a);
  assert.equal(await dst.headBlob(sha256Digest(a)), undefined);
  assert.equal(await dst.pushBlob(sha256Digest(a), a.length, a, { mountFrom: 'test/mount-src' }), 'mounted');
  assert.equal(await dst.headBlob(sha256Digest(a)), a.length);
  // A mount from a repository without the blob falls back to an upload.
  const b = randomBytes(5000);
  assert.equal(
    await dst.pushBlob(sha256Digest(b), b.length, b, { mountFrom: 'test/nothing-here' }),
    'uploaded',
  );
  assert.deepEqual(await dst.fetchBlob(sha256Digest(b)), b);
});

test('blobs: ranged reads, into a buffer, whole blobs as streams', async (t) => {
  if (!needRegistry(t)) return;
  const repo = client.repository('test/ranges');
  const data = randomBytes(300_000);
  const digest = sha256Digest(data);
  await repo.pushBlob(digest, data.length, data);
  const ranges: [number, number][] = [
    [0, 1],
    [0, data.length],
    [1, 4095],
    [123_456, 70_000],
    [data.length - 1, 1],
    [200_000, 100_000],
  ];
  const reads = await Promise.all(ranges.map(([o, l]) => repo.readBlobRange(digest, o, l)));
  ranges.forEach(([o, l], i) => assert.deepEqual(reads[i], data.subarray(o, o + l), `range ${o}+${l}`));
  const into = Buffer.alloc(10_000, 0xee);
  const got = await repo.readBlobRange(digest, 5000, 8000, { into });
  assert.equal(got.buffer, into.buffer);
  assert.deepEqual(into.subarray(0, 8000), data.subarray(5000, 13_000));
  assert.equal(into[8000], 0xee);
  assert.equal((await repo.readBlobRange(digest, 10, 0)).length, 0);
  await assert.rejects(repo.readBlobRange(digest, data.length, 10), code('ERR_REGISTRY', /beyond the end/));

  const parts: Buffer[] = [];
  for await (const c of await repo.openBlob(digest)) parts.push(c as Buffer);
  assert.deepEqual(Buffer.concat(parts), data);
  assert.deepEqual(await repo.fetchBlob(digest), data);
});

test('missing things give ERR_NOT_FOUND', async (t) => {
  if (!needRegistry(t)) return;
  const repo = client.repository('test/missing');
  const nope = sha256Digest(Buffer.from('nope'));
  assert.equal(await repo.headBlob(nope), undefined);
  assert.equal(await repo.headManifest('latest'), undefined);
  await assert.rejects(repo.fetchBlob(nope), code('ERR_NOT_FOUND', new RegExp(`${nope}.*404`)));
  await assert.rejects(repo.readBlobRange(nope, 0, 10), code('ERR_NOT_FOUND'));
  await assert.rejects(repo.openBlob(nope), code('ERR_NOT_FOUND'));
  await assert.rejects(
    repo.getManifest('latest'),
    code('ERR_NOT_FOUND', /"latest".*test\/missing.*MANIFEST_UNKNOWN|NAME_UNKNOWN/),
  );
  await assert.rejects(repo.getManifest(nope), code('ERR_NOT_FOUND'));
  await assert.rejects(repo.getManifest('bad tag'), code('ERR_INVALID_ARG'));
  await assert.rejects(repo.headBlob('sha256:xyz'), code('ERR_INVALID_ARG'));
});

test('manifests: put and get by tag and digest, OCI and Docker schema2', async (t) => {
  if (!needRegistry(t)) return;
  const repo = client.repository('test/manifests');
  const oci = await pushImage(repo, 'oci', parsePlatform('linux/amd64'));
  const byTag = await repo.getManifest('oci');
  assert.equal(byTag.digest, oci.digest);
  assert.equal(byTag.mediaType, OCI_MANIFEST);
  assert.deepEqual(byTag.bytes, oci.bytes);
  const byDigest = await repo.getManifest(oci.digest);
  assert.deepEqual(byDigest.bytes, oci.bytes);
  assert.deepEqual(await repo.headManifest('oci'), {
    digest: oci.digest,
    mediaType: OCI_MANIFEST,
    size: oci.bytes.length,
  });

  const docker = await pushImage(repo, 'docker', parsePlatform('linux/amd64'), true);
  const d = await repo.getManifest('docker');
  assert.equal(d.mediaType, DOCKER_MANIFEST);
  assert.equal(d.digest, docker.digest);
  const resolved = await repo.resolveImage('docker', parsePlatform('linux/s390x'));
  assert.equal(resolved.digest, docker.digest, 'a single manifest is returned whatever the platform');
  assert.equal(resolved.manifest.layers.length, 2);
  assert.equal(resolved.index, undefined);

  // Put by digest; a digest that does not match the bytes is refused before sending.
  assert.equal(await repo.putManifest(oci.digest, OCI_MANIFEST, oci.bytes), oci.digest);
  await assert.rejects(repo.putManifest(docker.digest, OCI_MANIFEST, oci.bytes), code('ERR_DIGEST'));
  // A manifest naming a blob the registry lacks is refused by it.
  const bad = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: OCI_CONFIG, digest: sha256Digest(Buffer.from('x')), size: 1 },
      layers: [],
    }),
  );
  await assert.rejects(
    repo.putManifest('bad', OCI_MANIFEST, bad),
    (e: unknown) => isNydusError(e) && /MANIFEST_BLOB_UNKNOWN|BLOB_UNKNOWN/.test(e.message),
  );
});

for (const docker of [false, true]) {
  test(`index with two platforms (${docker ? 'Docker manifest list' : 'OCI index'}): resolveImage picks each`, async (t) => {
    if (!needRegistry(t)) return;
    const repo = client.repository(docker ? 'test/list' : 'test/index');
    const amd = await pushImage(repo, 'amd64', parsePlatform('linux/amd64'), docker);
    const arm = await pushImage(repo, 'arm64', parsePlatform('linux/arm64/v8'), docker);
    const mediaType = docker ? DOCKER_MANIFEST_LIST : OCI_INDEX;
    const index = {
      schemaVersion: 2,
      mediaType,
      manifests: [
        {
          mediaType: docker ? DOCKER_MANIFEST : OCI_MANIFEST,
          digest: amd.digest,
          size: amd.bytes.length,
          platform: { os: 'linux', architecture: 'amd64' },
        },
        {
          mediaType: docker ? DOCKER_MANIFEST : OCI_MANIFEST,
          digest: arm.digest,
          size: arm.bytes.length,
          platform: { os: 'linux', architecture: 'arm64', variant: 'v8' },
        },
      ],
    };
    const indexBytes = Buffer.from(JSON.stringify(index));
    const indexDigest = await repo.putManifest('multi', mediaType, indexBytes);
    const got = await repo.getManifest('multi');
    assert.equal(got.mediaType, mediaType);
    assert.equal(got.digest, indexDigest);

    const a = await repo.resolveImage('multi', parsePlatform('linux/amd64'));
    assert.equal(a.digest, amd.digest);
    assert.equal(a.index?.digest, indexDigest);
    assert.equal(a.index?.mediaType, mediaType);
    assert.equal(a.mediaType, docker ? DOCKER_MANIFEST : OCI_MANIFEST);
    const b = await repo.resolveImage(indexDigest, parsePlatform('linux/arm64'));
    assert.equal(b.digest, arm.digest);
    assert.deepEqual(b.bytes, arm.bytes);
    const host = await repo.resolveImage('multi');
    assert.ok(host.digest === amd.digest || host.digest === arm.digest);
    await assert.rejects(
      repo.resolveImage('multi', parsePlatform('linux/ppc64le')),
      code('ERR_NOT_FOUND', /linux\/ppc64le.*linux\/amd64, linux\/arm64\/v8/),
    );
  });
}

test('insecure HTTPS against a plain-HTTP registry falls back to HTTP; without insecure it fails', async (t) => {
  if (!needRegistry(t)) return;
  const env = { DOCKER_CONFIG: reg.dir };
  const strict = new RegistryClient(reg.host, { retries: 0, env });
  try {
    await assert.rejects(
      strict.repository('test/tls').headBlob(sha256Digest(Buffer.from('x'))),
      code('ERR_NETWORK'),
    );
  } finally {
    await strict.close();
  }
  const loose = new RegistryClient(reg.host, { insecure: true, retries: 0, env });
  try {
    const repo = loose.repository('test/fallback');
    const a = randomBytes(1000);
    assert.equal(await repo.pushBlob(sha256Digest(a), a.length, a), 'uploaded');
    assert.equal(loose.scheme, 'http');
    assert.deepEqual(await repo.fetchBlob(sha256Digest(a)), a);
  } finally {
    await loose.close();
  }
});
