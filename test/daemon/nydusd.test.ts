import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FIXTURE, upstreamFixture } from '../helpers/fixtures.js';
import {
  canFuse,
  cleanup,
  md5sUnder,
  mountReadAheadKb,
  mounted,
  sh,
  startDaemon,
  stopDaemon,
  tmp,
  v1Config,
  WAIT_MS,
  type Daemon,
} from '../helpers/nydusd.js';
import { diffSnapshots, makeEveryEntryTree, snapshot, type PathFacts } from '../helpers/fs-tree.js';
import { runBin } from '../helpers/run-bin.js';
import { resultMd5s, resultTreeLines, treeJsonLines, type TreeNode } from '../helpers/tree-json.js';

/**
 * nydusd end to end: the real binary mounts images over FUSE and ordinary tools read them.
 * Every wait is bounded, and whatever happens the mount is removed and the daemon killed.
 */

test('nydusd serves the upstream v5 image: tree -J and md5 of every file equal the .result file; SIGTERM unmounts', async (t) => {
  if (!canFuse(t)) return;
  const boot = upstreamFixture(t, FIXTURE.v5Sha256);
  const blobs = upstreamFixture(t, FIXTURE.v5BlobDir);
  const resultPath = upstreamFixture(t, FIXTURE.v5Result);
  if (boot === undefined || blobs === undefined || resultPath === undefined) return;
  const result = readFileSync(resultPath, 'utf8');
  const { dir, mnt } = tmp();
  let d: Daemon | undefined;
  try {
    d = await startDaemon(mnt, [
      '--config',
      v1Config(dir, blobs),
      '--bootstrap',
      boot,
      '--log-level',
      'warn',
    ]);
    // Re-rendered in the .result's layout: tree versions differ in how they print empty
    // directories and links; the root is named by the path given, the .result's by "".
    const root = (JSON.parse(await sh('tree', ['-a', '-J', '-v', mnt])) as TreeNode[])[0]!;
    root.name = '';
    assert.deepEqual(treeJsonLines(root), resultTreeLines(result));
    const wantMd5 = resultMd5s(result).sort((a, b) => (a[0] + a[1] < b[0] + b[1] ? -1 : 1));
    assert.deepEqual(await md5sUnder(mnt), wantMd5);
    await stopDaemon(d);
  } finally {
    cleanup(d, mnt);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('nydusd serves the upstream v6 image: both files have the documented md5 sums', async (t) => {
  if (!canFuse(t)) return;
  const boot = upstreamFixture(t, FIXTURE.v6Boot);
  const blob = upstreamFixture(t, FIXTURE.v6Blob);
  if (boot === undefined || blob === undefined) return;
  const { dir, mnt } = tmp();
  let d: Daemon | undefined;
  try {
    d = await startDaemon(mnt, ['fuse', '-D', join(blob, '..'), '--bootstrap', boot, '--thread-num', '2']);
    assert.deepEqual(await md5sUnder(mnt), [
      ['4709cf8873e419ecedc7d43fdee4a75f', '/lib.rs'],
      ['5442bc7dc9dc5f985c7594e23866ae6f', '/sync_io.rs'],
    ]);
    await stopDaemon(d);
  } finally {
    cleanup(d, mnt);
    rmSync(dir, { recursive: true, force: true });
  }
});

function withoutXattrs(m: Map<string, PathFacts>): Map<string, PathFacts> {
  return new Map([...m].map(([k, v]) => [k, { ...v, xattrs: {} }]));
}

for (const [version, compressor, useConfig] of [
  ['6', 'zstd', true],
  ['6', 'lz4_block', false],
  ['6', 'none', true],
  ['5', 'zstd', false],
  ['5', 'lz4_block', true],
  ['5', 'none', false],
] as const) {
  test(`an image built by nydus-image create (v${version}, ${compressor}) mounts and equals its source`, async (t) => {
    if (!canFuse(t)) return;
    const { dir, mnt } = tmp();
    const src = join(dir, 'src');
    const blobDir = join(dir, 'blobs');
    mkdirSync(src);
    mkdirSync(blobDir);
    let d: Daemon | undefined;
    try {
      await makeEveryEntryTree(src, { bigDir: 300 });
      const boot = join(dir, 'boot');
      const c = await runBin(
        'nydus-image',
        ['create', '--fs-version', version, '--compressor', compressor, '-B', boot, '-D', blobDir, src],
        { timeoutMs: 120_000 },
      );
      assert.equal(c.code, 0, c.stderr);
      const args = useConfig
        ? ['--config', v1Config(dir, blobDir, { enable_xattr: true, digest_validate: true })]
        : ['-D', blobDir];
      d = await startDaemon(mnt, [...args, '--bootstrap', boot]);
      // A daemon started with a local image reads ahead a whole 1 MiB chunk.
      assert.equal(mountReadAheadKb(mnt), 1024);
      const want = snapshot(src, { skipRoot: true });
      const got = snapshot(mnt, { skipRoot: true });
      if (useConfig) assert.deepEqual(diffSnapshots(want, got), []);
      else assert.deepEqual(diffSnapshots(withoutXattrs(want), withoutXattrs(got)), []);
      await stopDaemon(d);
    } finally {
      cleanup(d, mnt);
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('nydusd refuses bad input quickly with one line and exit code 1', async () => {
  const { dir, mnt } = tmp();
  try {
    const cfg = v1Config(dir, dir);
    const cases: [string[], RegExp][] = [
      [
        ['--config', cfg, '--mountpoint', mnt, '--bootstrap', join(dir, 'nope')],
        /Bootstrap .*nope.* does not exist/,
      ],
      [
        ['--config', cfg, '--mountpoint', join(dir, 'nomnt'), '--bootstrap', cfg],
        /Mountpoint .*nomnt.* does not exist/,
      ],
      [['--config', join(dir, 'nocfg'), '--mountpoint', mnt, '--bootstrap', cfg], /Cannot read config/],
      [['-D', join(dir, 'noblobs'), '--mountpoint', mnt, '--bootstrap', cfg], /Blob directory .*noblobs/],
    ];
    for (const [args, re] of cases) {
      const r = await runBin('nydusd', args, { timeoutMs: WAIT_MS });
      assert.equal(r.code, 1, `${args.join(' ')}: ${r.stderr}`);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0]!, /^nydusd: error: /);
      assert.match(lines[0]!, re);
      assert.ok(r.ms < WAIT_MS, `took ${r.ms} ms`);
    }
    const s3 = join(dir, 's3.json');
    writeFileSync(s3, JSON.stringify({ version: 2, backend: { type: 's3', s3: { region: 'r' } } }));
    const r = await runBin('nydusd', ['--config', s3, '--mountpoint', mnt, '--bootstrap', s3]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^nydusd: error: Invalid config ".*s3.json": backend.s3: needs "bucket_name"\n$/);
  } finally {
    if (mounted(mnt)) spawnSync('umount', ['-l', mnt], { timeout: WAIT_MS });
    rmSync(dir, { recursive: true, force: true });
  }
});
