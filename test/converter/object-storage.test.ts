import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { ossSchema, s3Schema } from '../../src/daemon/config/schema.js';
import { NYDUS_BLOB_LAYER } from '../../src/oci/media-types.js';
import { ossObjectStore } from '../../src/storage/remote/oss.js';
import { s3ObjectStore, type ObjectStore } from '../../src/storage/remote/s3.js';
import { canFuse, cleanup, md5sUnder, mounted, WAIT_MS } from '../helpers/nydusd.js';
import { haveRegistry, needRegistry, startRegistry, type TestRegistry } from '../helpers/registry.js';
import { binPath, runBin } from '../helpers/run-bin.js';
import { ossTable, s3Table, startS3, type TestS3 } from '../helpers/s3.js';
import { makeLayered, pushFixture } from './fixtures.js';

/**
 * nydusify with blobs in an object store, end to end with docker-registry and s3rver (behind the
 * verifying front): `convert --backend-type s3|oss` puts the data blobs into the bucket and an
 * image listing only the bootstrap layer into the registry; `check` (with the filesystem rule
 * against the source) and `mount` read the blobs from the bucket through nydusd; `copy
 * --source-backend-type` brings the blobs into a registry, after which the image needs no bucket.
 */

const execFileP = promisify(execFile);

let reg: TestRegistry;
let s3: TestS3;
let work: string;

before(async () => {
  if (!haveRegistry()) return;
  reg = await startRegistry();
  process.env['DOCKER_CONFIG'] = reg.dir;
  s3 = await startS3();
  work = mkdtempSync(join(tmpdir(), 'nydusify-objstore-'));
  pushFixture(makeLayered(work), reg.host, 'layered:v1');
});

after(async () => {
  await reg?.stop();
  await s3?.stop();
  if (work !== undefined) rmSync(work, { recursive: true, force: true });
});

interface RawManifest {
  mediaType: string;
  config: { digest: string };
  layers: { mediaType: string; digest: string; size: number; annotations?: Record<string, string> }[];
}

async function raw(ref: string): Promise<RawManifest> {
  const { stdout } = await execFileP('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${ref}`]);
  return JSON.parse(stdout) as RawManifest;
}

function tableOf(type: 's3' | 'oss', over: Record<string, unknown> = {}): Record<string, unknown> {
  return type === 's3' ? s3Table(s3, over) : ossTable(s3, over);
}

function storeOf(type: 's3' | 'oss'): ObjectStore {
  return type === 's3'
    ? s3ObjectStore(s3Schema.parse(tableOf(type)))
    : ossObjectStore(ossSchema.parse(tableOf(type)));
}

async function waitMounted(mnt: string, child: ChildProcess, log: () => string): Promise<void> {
  const deadline = Date.now() + WAIT_MS * 4;
  while (!mounted(mnt)) {
    if (child.exitCode !== null) throw new Error(`nydusify mount exited ${child.exitCode}: ${log()}`);
    if (Date.now() > deadline) throw new Error(`nydusify mount did not mount: ${log()}`);
    await sleep(50);
  }
}

/** `nydusify mount` of `target` (extra flags for the backend), every file's md5, then SIGINT. */
async function mountSums(target: string, extra: string[], name: string): Promise<[string, string][]> {
  const mnt = join(work, `${name}-mnt`);
  const wd = join(work, `${name}-mwork`);
  mkdirSync(mnt, { recursive: true });
  let log = '';
  const child = spawn(
    process.execPath,
    [
      binPath('nydusify'),
      'mount',
      '--target',
      target,
      '--target-insecure',
      '--mount-path',
      mnt,
      '--work-dir',
      wd,
      ...extra,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (log += d));
  try {
    await waitMounted(mnt, child, () => log);
    const sums = await md5sUnder(mnt);
    child.kill('SIGINT');
    const code = await Promise.race([
      new Promise<number | null>((res) => child.on('exit', res)),
      sleep(WAIT_MS).then(() => 'hung' as const),
    ]);
    assert.equal(code, 0, log);
    assert.equal(mounted(mnt), false, 'the mount is gone after SIGINT');
    return sums;
  } finally {
    cleanup(undefined, mnt);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
}

for (const type of ['s3', 'oss'] as const) {
  test(`nydusify convert --backend-type ${type}: blobs to the bucket, bootstrap-only manifest; check and mount read from the bucket; copy --source-backend-type brings the blobs into a registry`, async (t) => {
    if (!needRegistry(t)) return;
    const src = `${reg.host}/layered:v1`;
    const dst = `${reg.host}/layered:v1-${type}`;
    const wd = join(work, `conv-${type}`);
    const table = tableOf(type);
    // s3: the JSON on the command line; oss: a config file (with the scheme in the endpoint, as the
    // OSS SDK takes it).
    const cfgFile = join(work, `${type}.json`);
    writeFileSync(
      cfgFile,
      JSON.stringify({ ...table, scheme: undefined, endpoint: `http://${String(table['endpoint'])}` }),
    );
    const backendFlags =
      type === 's3'
        ? ['--backend-type', 's3', '--backend-config', JSON.stringify(table)]
        : ['--backend-type', 'oss', '--backend-config-file', cfgFile];
    const putsBefore = s3.requests.filter((r) => r.method === 'PUT').length;
    const conv = await runBin(
      'nydusify',
      ['convert', '--source', src, '--target', dst, '--plain-http', '--work-dir', wd, ...backendFlags],
      { timeoutMs: 120_000 },
    );
    assert.equal(conv.code, 0, conv.stderr);
    assert.match(conv.stderr, new RegExp(`Pushed blob [0-9a-f]{64} to ${type} bucket`));

    // The manifest lists the bootstrap layer only; the blobs are objects prefix+id of the bucket.
    const m = await raw(dst);
    assert.equal(m.layers.length, 1, JSON.stringify(m.layers));
    assert.equal(m.layers[0]!.annotations?.['containerd.io/snapshot/nydus-bootstrap'], 'true');
    const blobDir = join(wd, reg.host, `layered:v1-${type}`, 'blobs');
    const blobs = readdirSync(blobDir).filter((f) => /^[0-9a-f]{64}$/.test(f));
    assert.ok(blobs.length >= 2, `converted blobs: ${blobs.join(' ')}`);
    const store = storeOf(type);
    try {
      for (const id of blobs) assert.equal(await store.size(id), statSync(join(blobDir, id)).size, id);
    } finally {
      await store.close();
    }
    const puts = s3.requests.filter((r) => r.method === 'PUT').slice(putsBefore);
    assert.equal(puts.length, blobs.length);
    assert.ok(
      puts.every((r) => r.auth === type && r.status === 200),
      JSON.stringify(puts),
    );

    // Again: the blobs exist, nothing is uploaded (unless --backend-force-push).
    const again = await runBin(
      'nydusify',
      ['convert', '--source', src, '--target', dst, '--plain-http', '--work-dir', wd, ...backendFlags],
      { timeoutMs: 120_000 },
    );
    assert.equal(again.code, 0, again.stderr);
    assert.equal(s3.requests.filter((r) => r.method === 'PUT').length, putsBefore + blobs.length);
    assert.match(again.stderr, /exists in .* bucket .*, skipped/);

    // Copy into another repository, the blobs coming from the bucket.
    const copied = `${reg.host}/layered:v1-${type}-copied`;
    const cp = await runBin(
      'nydusify',
      [
        'copy',
        '--source',
        dst,
        '--target',
        copied,
        '--plain-http',
        '--work-dir',
        join(work, `copy-${type}`),
        '--source-backend-type',
        type,
        '--source-backend-config',
        JSON.stringify(table),
      ],
      { timeoutMs: 120_000 },
    );
    assert.equal(cp.code, 0, cp.stderr);
    const cm = await raw(copied);
    assert.equal(cm.layers.length, blobs.length + 1);
    assert.deepEqual(
      cm.layers
        .slice(0, -1)
        .map((l) => l.digest.slice(7))
        .sort(),
      [...blobs].sort(),
    );
    assert.ok(cm.layers.slice(0, -1).every((l) => l.mediaType === NYDUS_BLOB_LAYER));
    assert.equal(cm.layers.at(-1)!.digest, m.layers[0]!.digest);

    if (!canFuse(t)) return;
    // check: every rule, the filesystem one with nydusd reading the bucket.
    const check = await runBin(
      'nydusify',
      [
        'check',
        '--source',
        src,
        '--target',
        dst,
        '--source-insecure',
        '--target-insecure',
        '--work-dir',
        join(work, `check-${type}`),
        '--target-backend-type',
        type,
        '--target-backend-config',
        JSON.stringify(table),
      ],
      { timeoutMs: 180_000 },
    );
    assert.equal(check.code, 0, check.stderr);
    assert.match(check.stderr, /Rule bootstrap: passed/);
    assert.match(check.stderr, /Rule filesystem: passed/);
    // A wrong secret: nydusd's reads are refused, the filesystem rule cannot pass.
    const bad = await runBin(
      'nydusify',
      [
        'check',
        '--source',
        src,
        '--target',
        dst,
        '--source-insecure',
        '--target-insecure',
        '--work-dir',
        join(work, `check-bad-${type}`),
        '--target-backend-type',
        type,
        '--target-backend-config',
        JSON.stringify(tableOf(type, { access_key_secret: 'wrong' })),
      ],
      { timeoutMs: 180_000 },
    );
    assert.notEqual(bad.code, 0, bad.stderr);

    // The copied image checks with its own registry alone.
    const check2 = await runBin(
      'nydusify',
      [
        'check',
        '--source',
        src,
        '--target',
        copied,
        '--source-insecure',
        '--target-insecure',
        '--work-dir',
        join(work, `check2-${type}`),
      ],
      { timeoutMs: 180_000 },
    );
    assert.equal(check2.code, 0, check2.stderr);
    assert.match(check2.stderr, /Rule filesystem: passed/);

    // mount from the bucket equals mount of the copied image (from the registry).
    const fromBucket = await mountSums(
      dst,
      ['--backend-type', type, '--backend-config-file', type === 'oss' ? cfgFile : writeCfg(type, table)],
      `${type}-bucket`,
    );
    const fromRegistry = await mountSums(copied, [], `${type}-registry`);
    assert.ok(fromBucket.length > 3);
    assert.deepEqual(fromBucket, fromRegistry);
  });
}

function writeCfg(type: string, table: Record<string, unknown>): string {
  const p = join(work, `${type}-mount.json`);
  writeFileSync(p, JSON.stringify(table));
  return p;
}

test('nydusify convert --backend-type: config errors are clear and come before any work', async (t) => {
  if (!needRegistry(t)) return;
  const base = [
    'convert',
    '--source',
    `${reg.host}/layered:v1`,
    '--target',
    `${reg.host}/x:y`,
    '--plain-http',
  ];
  let r = await runBin('nydusify', [
    ...base,
    '--backend-type',
    's3',
    '--backend-config',
    '{"bucket_name":"b"}',
  ]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /missing 'bucket_name' or 'region'/);
  r = await runBin('nydusify', [...base, '--backend-type', 'oss', '--backend-config', '{"bucket_name":"b"}']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /missing 'endpoint' or 'bucket_name'/);
  r = await runBin('nydusify', [...base, '--backend-type', 'oss']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /backend configuration is empty/);
  r = await runBin('nydusify', [...base, '--backend-type', 'gcs', '--backend-config', '{}']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /should be one of \[oss s3 localfs\]/);
  // A wrong secret fails the push with an auth error naming the keys.
  r = await runBin(
    'nydusify',
    [
      ...base,
      '--work-dir',
      join(work, 'bad-secret'),
      '--backend-type',
      's3',
      '--backend-config',
      JSON.stringify(s3Table(s3, { access_key_secret: 'wrong', object_prefix: 'bad/' })),
    ],
    { timeoutMs: 120_000 },
  );
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /HTTP 403.*access_key_id and access_key_secret/);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
});
