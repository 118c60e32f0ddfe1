import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  formatReference,
  parseReference,
  referenceTagOrDigest,
  registryApiHost,
  type Reference,
} from '../../src/oci/reference.js';
import {
  hostPlatform,
  parseManifestOrIndex,
  parsePlatform,
  platformMatches,
  selectPlatform,
  type ImageIndex,
} from '../../src/oci/manifest.js';
import { OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST } from '../../src/oci/media-types.js';
import { isNydusError } from '../../src/errors/errors.js';

const D = `sha256:${'ab'.repeat(32)}`;

const GOOD: [string, Reference][] = [
  ['busybox', { host: 'docker.io', repository: 'library/busybox', tag: 'latest', digest: undefined }],
  ['busybox:1.36', { host: 'docker.io', repository: 'library/busybox', tag: '1.36', digest: undefined }],
  ['ns/name', { host: 'docker.io', repository: 'ns/name', tag: 'latest', digest: undefined }],
  [
    'docker.io/busybox',
    { host: 'docker.io', repository: 'library/busybox', tag: 'latest', digest: undefined },
  ],
  ['index.docker.io/x/y:t', { host: 'docker.io', repository: 'x/y', tag: 't', digest: undefined }],
  [
    '127.0.0.1:5000/ns/name:tag',
    { host: '127.0.0.1:5000', repository: 'ns/name', tag: 'tag', digest: undefined },
  ],
  ['localhost/x', { host: 'localhost', repository: 'x', tag: 'latest', digest: undefined }],
  ['localhost:5000/a/b/c', { host: 'localhost:5000', repository: 'a/b/c', tag: 'latest', digest: undefined }],
  [
    'reg.example/a_b/c-d.e__f',
    { host: 'reg.example', repository: 'a_b/c-d.e__f', tag: 'latest', digest: undefined },
  ],
  [`name@${D}`, { host: 'docker.io', repository: 'library/name', tag: undefined, digest: D }],
  [`h:1/n:t@${D}`, { host: 'h:1', repository: 'n', tag: 't', digest: D }],
  ['[::1]:5000/x:y', { host: '[::1]:5000', repository: 'x', tag: 'y', digest: undefined }],
];

test('references parse as users type them', () => {
  for (const [input, want] of GOOD) {
    assert.deepEqual(parseReference(input), want, input);
  }
});

test('formatReference and referenceTagOrDigest', () => {
  assert.equal(formatReference(parseReference('busybox')), 'docker.io/library/busybox:latest');
  assert.equal(formatReference(parseReference(`h:1/n@${D}`)), `h:1/n@${D}`);
  assert.equal(formatReference(parseReference(`h:1/n:t@${D}`)), `h:1/n:t@${D}`);
  assert.equal(referenceTagOrDigest(parseReference(`h:1/n:t@${D}`)), D);
  assert.equal(referenceTagOrDigest(parseReference('h:1/n:t')), 't');
  for (const [input] of GOOD) {
    const r = parseReference(input);
    assert.deepEqual(parseReference(formatReference(r)), r, `round trip ${input}`);
  }
  assert.equal(registryApiHost('docker.io'), 'registry-1.docker.io');
  assert.equal(registryApiHost('127.0.0.1:5000'), '127.0.0.1:5000');
});

test('bad references give clear errors', () => {
  const BAD: [string, RegExp][] = [
    ['', /empty/],
    ['Busybox', /lowercase/],
    ['a//b', /empty path component/],
    ['a/b:', /tag ""/],
    ['a:-x', /tag "-x"/],
    ['a@sha256:abc', /64 lowercase hex/],
    ['a@md5:' + 'a'.repeat(32), /unsupported digest algorithm "md5"/],
    ['https://h/x', /URL scheme/],
    ['h:99999/x', /not a valid registry host/],
    ['x/', /empty path component/],
    ['-a', /lowercase/],
  ];
  for (const [input, re] of BAD) {
    assert.throws(
      () => parseReference(input),
      (e: unknown) => isNydusError(e) && e.code === 'ERR_INVALID_ARG' && re.test(e.message),
      input,
    );
  }
});

test('platforms: parse, host default, matching and selection', () => {
  assert.deepEqual(parsePlatform('linux/amd64'), { os: 'linux', architecture: 'amd64' });
  assert.deepEqual(parsePlatform('linux/arm64/v8'), { os: 'linux', architecture: 'arm64', variant: 'v8' });
  assert.throws(() => parsePlatform('linux'), /os\/arch/);
  assert.equal(hostPlatform().os, 'linux');
  assert.ok(
    ['amd64', 'arm64', 'arm', '386', 'ppc64le', 's390x', 'riscv64'].includes(hostPlatform().architecture),
  );
  assert.ok(
    platformMatches(parsePlatform('linux/arm64'), { os: 'linux', architecture: 'arm64', variant: 'v8' }),
  );
  assert.ok(platformMatches(parsePlatform('linux/arm64/v8'), { os: 'linux', architecture: 'arm64' }));
  assert.ok(
    !platformMatches(parsePlatform('linux/arm/v7'), { os: 'linux', architecture: 'arm', variant: 'v6' }),
  );
  assert.ok(!platformMatches(parsePlatform('linux/amd64'), { os: 'windows', architecture: 'amd64' }));
  const desc = (arch: string, variant?: string) => ({
    mediaType: OCI_MANIFEST,
    digest: `sha256:${arch
      .padEnd(64, '0')
      .slice(0, 64)
      .replace(/[^0-9a-f]/g, '0')}`,
    size: 1,
    platform:
      variant === undefined
        ? { os: 'linux', architecture: arch }
        : { os: 'linux', architecture: arch, variant },
  });
  const index: ImageIndex = {
    schemaVersion: 2,
    manifests: [desc('amd64'), desc('arm', 'v6'), desc('arm', 'v7'), desc('arm64', 'v8')],
  };
  assert.equal(selectPlatform(index, parsePlatform('linux/arm/v7')).platform?.variant, 'v7');
  assert.equal(selectPlatform(index, parsePlatform('linux/arm64')).platform?.architecture, 'arm64');
  // A merged-platform index: an OCI and a marked manifest for one platform; `prefer` picks the marked one.
  const marked = { ...desc('amd64'), digest: `sha256:${'b'.repeat(64)}`, artifactType: 'marked' };
  const merged: ImageIndex = { schemaVersion: 2, manifests: [desc('amd64'), marked] };
  const isMarked = (d: { artifactType?: string }): boolean => d.artifactType === 'marked';
  assert.equal(selectPlatform(merged, parsePlatform('linux/amd64')).digest, desc('amd64').digest);
  assert.equal(selectPlatform(merged, parsePlatform('linux/amd64'), 'index', isMarked).digest, marked.digest);
  assert.equal(
    selectPlatform(index, parsePlatform('linux/amd64'), 'index', isMarked).digest,
    desc('amd64').digest,
  );
  assert.throws(
    () => selectPlatform(index, parsePlatform('linux/s390x')),
    (e: unknown) =>
      isNydusError(e) &&
      e.code === 'ERR_NOT_FOUND' &&
      /linux\/amd64, linux\/arm\/v6, linux\/arm\/v7, linux\/arm64\/v8/.test(e.message),
  );
});

test('manifest parsing validates shape and media type', () => {
  const cfg = { mediaType: 'application/vnd.oci.image.config.v1+json', digest: D, size: 2 };
  const m = Buffer.from(
    JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: cfg, layers: [] }),
  );
  assert.equal(parseManifestOrIndex(m, undefined).kind, 'manifest');
  assert.equal(parseManifestOrIndex(m, OCI_MANIFEST).mediaType, OCI_MANIFEST);
  assert.throws(() => parseManifestOrIndex(m, DOCKER_MANIFEST), /declares media type/);
  const i = Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [] }));
  assert.equal(parseManifestOrIndex(i, undefined).kind, 'index');
  assert.equal(parseManifestOrIndex(i, OCI_INDEX).mediaType, OCI_INDEX);
  assert.throws(() => parseManifestOrIndex(Buffer.from('{'), undefined), /not valid JSON/);
  assert.throws(() => parseManifestOrIndex(Buffer.from('{"schemaVersion":1}'), undefined), /schemaVersion/);
  const bad = Buffer.from(JSON.stringify({ schemaVersion: 2, config: { ...cfg, digest: 'x' }, layers: [] }));
  assert.throws(() => parseManifestOrIndex(bad, OCI_MANIFEST), /config has an invalid digest/);
});
