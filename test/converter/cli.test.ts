import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { NYDUS_BLOB_LAYER } from '../../src/oci/media-types.js';
import { haveRegistry, needRegistry, startRegistry, type TestRegistry } from '../helpers/registry.js';
import { runBin } from '../helpers/run-bin.js';
import { makeBusybox, makeLayered, makeMulti, pushFixture } from './fixtures.js';

const execFileP = promisify(execFile);

let reg: TestRegistry;
let work: string;

before(async () => {
  if (!haveRegistry()) return;
  reg = await startRegistry();
  process.env['DOCKER_CONFIG'] = reg.dir;
  work = mkdtempSync(join(tmpdir(), 'nydusify-cli-'));
  pushFixture(makeBusybox(work), reg.host, 'busybox:latest');
  pushFixture(makeLayered(work), reg.host, 'layered:v1');
  const multi = makeMulti(work);
  await execFileP('skopeo', [
    '--insecure-policy',
    'copy',
    '--all',
    '--dest-tls-verify=false',
    `oci:${multi.dir}:latest`,
    `docker://${reg.host}/multi:v1`,
  ]);
});

after(async () => {
  await reg?.stop();
  if (work !== undefined) rmSync(work, { recursive: true, force: true });
});

async function raw(
  ref: string,
): Promise<{ mediaType: string; layers?: { mediaType: string; digest: string }[]; manifests?: unknown[] }> {
  const { stdout } = await execFileP('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${ref}`]);
  return JSON.parse(stdout) as { mediaType: string; layers?: { mediaType: string; digest: string }[] };
}

test('convert as the tutorial runs it: insecure target, work dir, log lines, output json', async (t) => {
  if (!needRegistry(t)) return;
  const wd = join(work, 'tmp');
  const out = join(work, 'metric.json');
  const r = await runBin(
    'nydusify',
    [
      'convert',
      '--nydus-image',
      '/nonexistent/nydus-image',
      '--source',
      `${reg.host}/layered:v1`,
      '--target',
      `${reg.host}/layered:v1-nydus`,
      '--source-insecure',
      '--target-insecure',
      '--work-dir',
      wd,
      '--output-json',
      out,
    ],
    { timeoutMs: 60_000 },
  );
  assert.equal(r.code, 0, r.stderr);
  for (const line of [
    `Pulling image ${reg.host}/layered:v1 with platform linux/`,
    'Converting layer sha256:',
    'Pushing blob layer sha256:',
    'Pushing bootstrap layer sha256:',
    'Pushing nydus manifest',
    `Success convert image ${reg.host}/layered:v1 to ${reg.host}/layered:v1-nydus`,
  ])
    assert.ok(r.stderr.includes(line), `log has "${line}":\n${r.stderr}`);
  const m = await raw(`${reg.host}/layered:v1-nydus`);
  assert.equal(m.layers!.length, 4);
  const tdir = join(wd, reg.host, 'layered:v1-nydus');
  assert.ok(existsSync(join(tdir, 'bootstrap')));
  assert.deepEqual(
    readdirSync(join(tdir, 'blobs')).sort(),
    m
      .layers!.slice(0, -1)
      .map((l) => l.digest.slice(7))
      .sort(),
  );
  assert.equal(readdirSync(join(wd, reg.host, 'layered:v1')).length, 3);
  const metric = JSON.parse(readFileSync(out, 'utf8')) as Record<string, number>;
  assert.deepEqual(Object.keys(metric).sort(), [
    'ConversionElapsed',
    'SourceImageSize',
    'SourcePullElapsed',
    'TargetImageSize',
    'TargetPushElapsed',
  ]);
  assert.ok(metric['SourceImageSize']! > 0 && metric['TargetImageSize']! > 0);
});

test('convert --target-suffix, --build-cache-tag, --backend-type localfs', async (t) => {
  if (!needRegistry(t)) return;
  const wd = join(work, 'tmp2');
  const base = ['convert', '--source', `${reg.host}/busybox:latest`, '--plain-http', '--work-dir', wd];
  let r = await runBin('nydusify', [...base, '--target-suffix', '-nydus', '--build-cache-tag', 'cache'], {
    timeoutMs: 60_000,
  });
  assert.equal(r.code, 0, r.stderr);
  assert.equal((await raw(`${reg.host}/busybox:latest-nydus`)).layers![0]!.mediaType, NYDUS_BLOB_LAYER);
  assert.equal((await raw(`${reg.host}/busybox:cache`)).mediaType, 'application/vnd.oci.image.index.v1+json');
  r = await runBin(
    'nydusify',
    [...base, '--target', `${reg.host}/busybox:again`, '--build-cache-tag', 'cache'],
    {
      timeoutMs: 60_000,
    },
  );
  assert.equal(r.code, 0, r.stderr);
  assert.ok(!r.stderr.includes('Converting layer'), r.stderr);
  assert.ok(r.stderr.includes('found in build cache'), r.stderr);
  const dir = join(work, 'localfs');
  r = await runBin(
    'nydusify',
    [
      ...base,
      '--target',
      `${reg.host}/busybox:localfs`,
      '--backend-type',
      'localfs',
      '--backend-config',
      JSON.stringify({ dir }),
    ],
    { timeoutMs: 60_000 },
  );
  assert.equal(r.code, 0, r.stderr);
  const m = await raw(`${reg.host}/busybox:localfs`);
  assert.equal(m.layers!.length, 1);
  assert.equal(readdirSync(dir).length, 1);
});

test('usage errors exit 2; missing image and bad registry exit 1 with one line', async (t) => {
  if (!needRegistry(t)) return;
  let r = await runBin('nydusify', ['convert', '--source', `${reg.host}/busybox:latest`, '--bogus']);
  assert.equal(r.code, 2, r.stderr);
  r = await runBin('nydusify', ['convert', '--target', 'x']);
  assert.equal(r.code, 2, r.stderr);
  r = await runBin('nydusify', [
    'convert',
    '--source',
    `${reg.host}/busybox@sha256:${'a'.repeat(64)}`,
    '--target-suffix',
    '-nydus',
  ]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /digest/);
  r = await runBin('nydusify', [
    'convert',
    '--source',
    `${reg.host}/busybox:missing`,
    '--target',
    `${reg.host}/x:y`,
    '--plain-http',
    '--work-dir',
    join(work, 'tmp3'),
  ]);
  assert.equal(r.code, 1);
  const errLines = r.stderr.split('\n').filter((l) => l.startsWith('nydusify: error:'));
  assert.equal(errLines.length, 1, r.stderr);
  assert.match(errLines[0]!, /not found/i);
  r = await runBin(
    'nydusify',
    [
      'convert',
      '--source',
      `${reg.host}/busybox:latest`,
      '--target',
      '127.0.0.1:1/x:y',
      '--plain-http',
      '--push-retry-count',
      '0',
      '--work-dir',
      join(work, 'tmp3'),
    ],
    { timeoutMs: 60_000 },
  );
  assert.equal(r.code, 1);
  assert.match(r.stderr, /nydusify: error: .*127\.0\.0\.1:1/);
  // Nothing claims to be complete: no manifest under the target tag of the refused push.
  const check = await execFileP('skopeo', [
    'inspect',
    '--raw',
    '--tls-verify=false',
    `docker://${reg.host}/x:y`,
  ]).catch((e: Error) => e);
  assert.ok(check instanceof Error);
});

test('copy: registry -> file:// archive -> registry, and a multi-platform index', async (t) => {
  if (!needRegistry(t)) return;
  const before = await raw(`${reg.host}/layered:v1`);
  const archive = join(work, 'layered.tar');
  let r = await runBin('nydusify', [
    'copy',
    '--source',
    `${reg.host}/layered:v1`,
    '--target',
    `file://${archive}`,
    '--plain-http',
    '--work-dir',
    join(work, 'ctmp'),
  ]);
  assert.equal(r.code, 0, r.stderr);
  const { stdout } = await execFileP('tar', ['-tf', archive]);
  assert.ok(
    stdout.includes('index.json') && stdout.includes('oci-layout') && stdout.includes('blobs/sha256/'),
  );
  r = await runBin('nydusify', [
    'copy',
    '--source',
    `file://${archive}`,
    '--target',
    `${reg.host}/restored:v1`,
    '--plain-http',
    '--push-chunk-size',
    '1MB',
    '--work-dir',
    join(work, 'ctmp'),
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(await raw(`${reg.host}/restored:v1`), before);
  // A Nydus image, across repositories of one registry (blobs mounted).
  r = await runBin(
    'nydusify',
    [
      'convert',
      '--source',
      `${reg.host}/busybox:latest`,
      '--target',
      `${reg.host}/bbn:v1`,
      '--plain-http',
      '--work-dir',
      join(work, 'ctmp'),
    ],
    { timeoutMs: 60_000 },
  );
  assert.equal(r.code, 0, r.stderr);
  r = await runBin('nydusify', [
    'copy',
    '--source',
    `${reg.host}/bbn:v1`,
    '--target',
    `${reg.host}/bbn-copy:v1`,
    '--plain-http',
    '--work-dir',
    join(work, 'ctmp'),
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(await raw(`${reg.host}/bbn-copy:v1`), await raw(`${reg.host}/bbn:v1`));
  r = await runBin('nydusify', [
    'copy',
    '--all-platforms',
    '--source',
    `${reg.host}/multi:v1`,
    '--target',
    `${reg.host}/multi-copy:v1`,
    '--plain-http',
    '--work-dir',
    join(work, 'ctmp'),
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(await raw(`${reg.host}/multi-copy:v1`), await raw(`${reg.host}/multi:v1`));
  await execFileP('skopeo', [
    'copy',
    '--all',
    '--src-tls-verify=false',
    `docker://${reg.host}/multi-copy:v1`,
    `oci:${join(work, 'mc-oci')}:x`,
  ]);
});
