import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { gzipSync } from 'node:zlib';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, test } from 'node:test';
import { convertImage, type ConvertOptions } from '../../src/converter/convert.js';
import { extractBootstrapFromLayer, readBootstrapLayerFiles } from '../../src/converter/bootstrap-layer.js';
import { Remotes } from '../../src/converter/repo.js';
import { parseBootstrap } from '../../src/format/bootstrap.js';
import { createLogger } from '../../src/log/logger.js';
import { parsePlatform } from '../../src/oci/manifest.js';
import {
  ANNOTATION_NYDUS_BLOB,
  ANNOTATION_NYDUS_BOOTSTRAP,
  ANNOTATION_NYDUS_FS_VERSION,
  ANNOTATION_UNCOMPRESSED,
  DOCKER_LAYER_GZIP,
  DOCKER_MANIFEST,
  NYDUS_BLOB_LAYER,
  OCI_INDEX,
  OCI_LAYER_GZIP,
  OCI_MANIFEST,
} from '../../src/oci/media-types.js';
import { RegistryClient } from '../../src/registry/client.js';
import { extractTar, IS_ROOT } from '../helpers/env.js';
import { diffSnapshots, snapshot } from '../helpers/fs-tree.js';
import {
  makeBusybox,
  makeLayered,
  makeMulti,
  makeRaw,
  pushFixture,
  tarEntries,
  type Fixture,
} from './fixtures.js';
import { haveRegistry, needRegistry, startRegistry, type TestRegistry } from '../helpers/registry.js';
import { binPath } from '../helpers/run-bin.js';

const execFileP = promisify(execFile);

let reg: TestRegistry;
let work: string;
let remotes: Remotes;
let busybox: Fixture;
let layered: Fixture;
const log = createLogger(process.env['NYDUS_TEST_LOG'] === '1' ? 'debug' : 'warn');

before(async () => {
  if (!haveRegistry()) return;
  reg = await startRegistry();
  work = mkdtempSync(join(tmpdir(), 'nydus-convert-'));
  remotes = new Remotes(log);
  busybox = makeBusybox(work);
  layered = makeLayered(work);
  pushFixture(busybox, reg.host, 'library/busybox:latest');
  pushFixture(layered, reg.host, 'layered:v1');
});

after(async () => {
  await remotes?.close();
  await reg?.stop();
  if (work !== undefined) rmSync(work, { recursive: true, force: true });
});

function opts(source: string, target: string, extra: Partial<ConvertOptions> = {}): ConvertOptions {
  const remote = { plainHttp: true, registry: { retries: 1, env: { DOCKER_CONFIG: reg.dir } } };
  return {
    source: `${reg.host}/${source}`,
    target: `${reg.host}/${target}`,
    sourceRemote: remote,
    targetRemote: remote,
    fsVersion: 6,
    compressor: 'zstd',
    chunkSize: 0x100000,
    alignedChunk: false,
    prefetchPatterns: ['/'],
    workDir: join(work, 'wd'),
    pushRetryCount: 0,
    pushRetryDelayMs: 10,
    log,
    remotes,
    ...extra,
  };
}

async function skopeoRaw(ref: string): Promise<Record<string, unknown>> {
  const { stdout } = await execFileP('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${ref}`]);
  return JSON.parse(stdout) as Record<string, unknown>;
}

async function skopeoConfig(ref: string): Promise<{ rootfs: { diff_ids: string[] }; history?: unknown[] }> {
  const { stdout } = await execFileP('skopeo', [
    'inspect',
    '--config',
    '--raw',
    '--tls-verify=false',
    `docker://${ref}`,
  ]);
  return JSON.parse(stdout) as { rootfs: { diff_ids: string[] }; history?: unknown[] };
}

interface Layer {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

/** Check the manifest layout upstream tools expect; returns the layers. */
function checkNydusManifest(m: Record<string, unknown>, sourceLayers: number, mediaType: string): Layer[] {
  assert.equal(m['mediaType'], mediaType);
  const layers = m['layers'] as Layer[];
  assert.equal(layers.length, sourceLayers + 1);
  for (const l of layers.slice(0, -1)) {
    assert.equal(l.mediaType, NYDUS_BLOB_LAYER);
    assert.equal(l.annotations?.[ANNOTATION_NYDUS_BLOB], 'true');
    assert.equal(l.annotations?.[ANNOTATION_UNCOMPRESSED], undefined);
  }
  const boot = layers[layers.length - 1]!;
  assert.equal(boot.mediaType, mediaType === OCI_MANIFEST ? OCI_LAYER_GZIP : DOCKER_LAYER_GZIP);
  assert.equal(boot.annotations?.[ANNOTATION_NYDUS_BOOTSTRAP], 'true');
  assert.equal(boot.annotations?.[ANNOTATION_NYDUS_FS_VERSION], '6');
  return layers;
}

/**
 * Unpack the merged bootstrap with our nydus-image, reading blobs fetched from the registry,
 * and compare the tree with the source image applied by umoci.
 */
async function compareWithSource(ref: string, layout: Fixture, t: { skip(s: string): void }): Promise<void> {
  const repoName = ref.slice(reg.host.length + 1).split(':')[0]!;
  const repo = new RegistryClient(reg.host, { plainHttp: true, env: { DOCKER_CONFIG: reg.dir } }).repository(
    repoName,
  );
  const m = await skopeoRaw(ref);
  const layers = m['layers'] as Layer[];
  const dir = mkdtempSync(join(work, 'unpack-'));
  const blobDir = join(dir, 'blobs');
  await execFileP('mkdir', ['-p', blobDir]);
  for (const l of layers.slice(0, -1))
    writeFileSync(join(blobDir, l.digest.slice(7)), await repo.fetchBlob(l.digest));
  const boot = await extractBootstrapFromLayer(await repo.fetchBlob(layers[layers.length - 1]!.digest));
  writeFileSync(join(dir, 'bootstrap'), boot);
  // Every blob id in the bootstrap is a pushed layer digest.
  const ids = parseBootstrap(boot).blobs.map((b) => `sha256:${b.blobId}`);
  for (const id of ids)
    assert.ok(
      layers.some((l) => l.digest === id),
      `blob ${id} is a layer`,
    );
  await execFileP(process.execPath, [
    binPath('nydus-image'),
    'unpack',
    join(dir, 'bootstrap'),
    '--blob-dir',
    blobDir,
    '--output',
    join(dir, 'out.tar'),
  ]);
  if (!IS_ROOT) {
    t.skip('comparing owners needs root');
    return;
  }
  extractTar(join(dir, 'out.tar'), join(dir, 'root'));
  const want = snapshot(layout.tree, { skipRoot: true, mtimes: false });
  const got = snapshot(join(dir, 'root'), { skipRoot: true, mtimes: false });
  assert.deepEqual(diffSnapshots(want, got), []);
  await repo.fetchBlob(layers[0]!.digest);
}

test('convert busybox: upstream layout, work dir, tree equal to the source', async (t) => {
  if (!needRegistry(t)) return;
  const r = await convertImage(opts('library/busybox:latest', 'library/busybox:latest-nydus'));
  const ref = `${reg.host}/library/busybox:latest-nydus`;
  const m = await skopeoRaw(ref);
  const layers = checkNydusManifest(m, 1, OCI_MANIFEST);
  const cfg = await skopeoConfig(ref);
  assert.equal(cfg.rootfs.diff_ids.length, layers.length);
  assert.equal(cfg.rootfs.diff_ids[0], layers[0]!.digest);
  assert.deepEqual((cfg.history as unknown[])[(cfg.history as unknown[]).length - 1], {
    created_by: 'Nydus Converter',
    comment: 'Nydus Bootstrap Layer',
  });
  // Work dir as the tutorial shows it.
  const wd = join(work, 'wd');
  const srcLayers = readdirSync(join(wd, reg.host, 'library', 'busybox:latest'));
  assert.equal(srcLayers.length, 1);
  assert.match(srcLayers[0]!, /^sha256:[0-9a-f]{64}$/);
  const tdir = join(wd, reg.host, 'library', 'busybox:latest-nydus');
  assert.ok(existsSync(join(tdir, 'bootstrap')));
  assert.deepEqual(readdirSync(join(tdir, 'blobs')), [layers[0]!.digest.slice(7)]);
  assert.equal(r.images[0]!.bootstrapPath, join(tdir, 'bootstrap'));
  // The bootstrap layer tar: image/image.boot and the blob meta.
  const repo = new RegistryClient(reg.host, { plainHttp: true, env: { DOCKER_CONFIG: reg.dir } }).repository(
    'library/busybox',
  );
  const files = await readBootstrapLayerFiles(await repo.fetchBlob(layers[1]!.digest));
  assert.deepEqual(
    [...files.keys()].sort(),
    ['image/image.boot', `image/${layers[0]!.digest.slice(7)}.blob.meta`].sort(),
  );
  assert.deepEqual(files.get('image/image.boot'), readFileSync(join(tdir, 'bootstrap')));
  // skopeo can copy it (every digest valid).
  await execFileP('skopeo', [
    'copy',
    '--src-tls-verify=false',
    `docker://${ref}`,
    `oci:${join(work, 'copy-oci')}:x`,
  ]);
  await compareWithSource(ref, busybox, t);
});

test('convert the layered image (whiteouts, opaque dir, gzip/zstd/none layers)', async (t) => {
  if (!needRegistry(t)) return;
  const r = await convertImage(opts('layered:v1', 'layered:v1-nydus'));
  const ref = `${reg.host}/layered:v1-nydus`;
  const m = await skopeoRaw(ref);
  const n = r.images[0]!.layers.length;
  assert.equal(n, 3);
  checkNydusManifest(m, n, OCI_MANIFEST);
  assert.equal((await skopeoConfig(ref)).rootfs.diff_ids.length, n + 1);
  await compareWithSource(ref, layered, t);
});

test('Docker schema2 source keeps Docker media types; --oci makes OCI', async (t) => {
  if (!needRegistry(t)) return;
  pushFixture(busybox, reg.host, 'docker/busybox:v2s2', 'v2s2');
  await convertImage(opts('docker/busybox:v2s2', 'docker/busybox:nydus'));
  checkNydusManifest(await skopeoRaw(`${reg.host}/docker/busybox:nydus`), 1, DOCKER_MANIFEST);
  await convertImage(opts('docker/busybox:v2s2', 'docker/busybox:nydus-oci', { oci: true }));
  checkNydusManifest(await skopeoRaw(`${reg.host}/docker/busybox:nydus-oci`), 1, OCI_MANIFEST);
});

test('multi-platform index: one platform gives a manifest, --all-platforms an index', async (t) => {
  if (!needRegistry(t)) return;
  const multi = makeMulti(work);
  await execFileP('skopeo', [
    '--insecure-policy',
    'copy',
    '--all',
    '--dest-tls-verify=false',
    `oci:${multi.dir}:latest`,
    `docker://${reg.host}/multi:v1`,
  ]);
  await convertImage(opts('multi:v1', 'multi:one', { platforms: [parsePlatform('linux/arm64')] }));
  const one = await skopeoRaw(`${reg.host}/multi:one`);
  checkNydusManifest(one, 1, OCI_MANIFEST);
  const r = await convertImage(opts('multi:v1', 'multi:all', { allPlatforms: true }));
  assert.equal(r.images.length, 2);
  const idx = await skopeoRaw(`${reg.host}/multi:all`);
  assert.equal(idx['mediaType'], OCI_INDEX);
  const entries = idx['manifests'] as { platform: { architecture: string } }[];
  assert.deepEqual(entries.map((e) => e.platform.architecture).sort(), ['amd64', 'arm64']);
  const merged = await convertImage(
    opts('multi:v1', 'multi:merged', { mergePlatform: true, platforms: [parsePlatform('linux/amd64')] }),
  );
  assert.equal(merged.images.length, 1);
  const mi = await skopeoRaw(`${reg.host}/multi:merged`);
  const me = mi['manifests'] as { artifactType?: string; platform: { 'os.features'?: string[] } }[];
  assert.equal(me.length, 2);
  assert.equal(me[1]!.artifactType, 'application/vnd.nydus.image.manifest.v1+json');
  assert.deepEqual(me[1]!.platform['os.features'], ['nydus.remoteimage.v1']);
  await execFileP('skopeo', [
    'copy',
    '--all',
    '--src-tls-verify=false',
    `docker://${reg.host}/multi:merged`,
    `oci:${join(work, 'merged-oci')}:x`,
  ]);
});

test('build cache: a second convert reuses the converted blobs', async (t) => {
  if (!needRegistry(t)) return;
  const cache = { ref: `${reg.host}/layered:nydus-cache` };
  const first = await convertImage(opts('layered:v1', 'cached1:v1', { buildCache: cache }));
  assert.equal(first.cacheHits, 0);
  const second = await convertImage(opts('layered:v1', 'cached2:v1', { buildCache: cache }));
  assert.equal(second.cacheHits, second.images[0]!.layers.length);
  for (const l of second.images[0]!.layers) {
    assert.equal(l.cached, true);
    assert.notEqual(l.push, 'uploaded', `blob ${l.digest} was uploaded again`);
  }
  assert.deepEqual(
    second.images[0]!.layers.map((l) => l.digest),
    first.images[0]!.layers.map((l) => l.digest),
  );
  const a = await skopeoRaw(`${reg.host}/cached1:v1`);
  const b = await skopeoRaw(`${reg.host}/cached2:v1`);
  assert.deepEqual(a['layers'], b['layers']);
});

test('bad input: missing source, unreachable target', async (t) => {
  if (!needRegistry(t)) return;
  await assert.rejects(convertImage(opts('library/busybox:nope', 'x:y')), (e: Error) =>
    /not found/i.test(e.message),
  );
  await assert.rejects(
    convertImage({ ...opts('library/busybox:latest', 'x:y'), target: '127.0.0.1:1/x:y', pushRetryCount: 0 }),
    (e: Error) => e.message.length > 0,
  );
});

test('--chunk-dict bootstrap:registry: chunks already in the dict image are referenced, not stored', async (t) => {
  if (!needRegistry(t)) return;
  await convertImage(opts('layered:v1', 'dict:v1'));
  const r = await convertImage(
    opts('layered:v1', 'dedup:v1', {
      chunkDict: { source: 'registry', ref: `${reg.host}/dict:v1`, remote: { plainHttp: true } },
    }),
  );
  const m = await skopeoRaw(`${reg.host}/dedup:v1`);
  const layers = m['layers'] as Layer[];
  // Every source layer has its blob; the dict blobs the bootstrap references are appended.
  assert.ok(layers.length > r.images[0]!.layers.length + 1, `layers: ${layers.length}`);
  const dict = (await skopeoRaw(`${reg.host}/dict:v1`))['layers'] as Layer[];
  for (const l of layers.slice(r.images[0]!.layers.length, -1))
    assert.ok(
      dict.some((d) => d.digest === l.digest),
      `${l.digest} comes from the dict`,
    );
  const cfg = await skopeoConfig(`${reg.host}/dedup:v1`);
  assert.equal(cfg.rootfs.diff_ids.length, layers.length);
  await compareWithSource(`${reg.host}/dedup:v1`, layered, t);
});

test('a metadata-only layer converts; a corrupt layer fails cleanly without a manifest', async (t) => {
  if (!needRegistry(t)) return;
  const stage = join(work, 'meta-stage');
  mkdirSync(join(stage, 'd'), { recursive: true });
  symlinkSync('/etc/passwd', join(stage, 'd', 'ln'));
  const base = tarEntries(busybox.tree, ['./etc', './etc/passwd']);
  const meta = tarEntries(stage, ['./d', './d/ln']);
  const ok = makeRaw(work, 'metaonly', [
    { tar: base, data: gzipSync(base) },
    { tar: meta, data: meta },
  ]);
  pushFixture(ok, reg.host, 'metaonly:v1');
  const r = await convertImage(opts('metaonly:v1', 'metaonly:nydus'));
  assert.equal(r.images[0]!.layers.length, 2);
  const m = await skopeoRaw(`${reg.host}/metaonly:nydus`);
  checkNydusManifest(m, 2, OCI_MANIFEST);
  const boot = parseBootstrap(readFileSync(r.images[0]!.bootstrapPath));
  assert.equal(boot.blobs.length, 1, 'only the layer with data has a blob in the bootstrap');

  const corrupt = gzipSync(base).subarray(0, 60);
  const bad = makeRaw(work, 'corrupt', [{ tar: base, data: corrupt }]);
  pushFixture(bad, reg.host, 'corrupt:v1');
  await assert.rejects(convertImage(opts('corrupt:v1', 'corrupt:nydus')), (e: Error) => {
    assert.match(e.message, /Layer sha256:[0-9a-f]{64}/);
    return true;
  });
  await assert.rejects(skopeoRaw(`${reg.host}/corrupt:nydus`));
});
