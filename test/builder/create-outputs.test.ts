import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadBootstrapFile } from '../../src/rafs/open.js';
import { BlobFeature } from '../../src/format/flags.js';
import { diffSnapshots, snapshot } from '../helpers/fs-tree.js';
import { runBin } from '../helpers/run-bin.js';

function source(dir: string): string {
  const src = join(dir, 'src');
  mkdirSync(join(src, 'etc'), { recursive: true });
  mkdirSync(join(src, 'usr', 'bin'), { recursive: true });
  writeFileSync(join(src, 'etc', 'conf'), 'conf\n'.repeat(1000));
  writeFileSync(join(src, 'usr', 'bin', 'tool'), Buffer.alloc(2_500_000, 7));
  writeFileSync(join(src, 'usr', 'bin', 'other'), 'other');
  return src;
}

function unpackAndCompare(boot: string, args: string[], src: string, dir: string, tag: string): void {
  const tarFile = join(dir, `${tag}.tar`);
  execFileSync(
    process.execPath,
    [join('dist', 'src', 'cli', 'nydus-image.js'), 'unpack', boot, ...args, '--output', tarFile],
    { stdio: 'pipe' },
  );
  const root = join(dir, `${tag}-root`);
  mkdirSync(root);
  execFileSync('tar', ['-xf', tarFile, '-C', root]);
  assert.deepEqual(
    diffSnapshots(
      snapshot(src, { skipRoot: true, mtimes: false }),
      snapshot(root, { skipRoot: true, mtimes: false }),
    ),
    [],
    tag,
  );
}

test('--blob-inline-meta: the blob alone is the image (with and without blob-toc)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'nydus-out-'));
  try {
    const src = source(dir);
    for (const features of [[], ['--features', 'blob-toc']]) {
      const out = join(dir, `inline${features.length}`);
      mkdirSync(out);
      const json = join(out, 'out.json');
      const r = await runBin('nydus-image', [
        'create',
        '--blob-inline-meta',
        ...features,
        '-D',
        out,
        '-J',
        json,
        src,
      ]);
      assert.equal(r.code, 0, r.stderr);
      const files = readdirSync(out).filter((n) => n !== 'out.json');
      assert.equal(files.length, 1, `only the blob is written: ${files.join(', ')}`);
      const blob = join(out, files[0]!);
      const res = JSON.parse(readFileSync(json, 'utf8')) as {
        blobs: string[];
        bootstrap: string;
        fs_version: string;
        compressor: string;
      };
      assert.deepEqual(res.blobs, [files[0]]);
      assert.deepEqual([res.bootstrap, res.fs_version, res.compressor], ['', '6', 'zstd']);
      // wherever a bootstrap is accepted, the blob is too, with its real id substituted
      const { bootstrap, inlineBlob } = await loadBootstrapFile(blob);
      assert.equal(inlineBlob?.blobId, files[0]);
      assert.equal(bootstrap.blobs[0]!.blobId, files[0]);
      assert.ok(bootstrap.blobs[0]!.features & BlobFeature.INLINED_FS_META);
      const chk = await runBin('nydus-image', ['check', blob]);
      assert.equal(chk.code, 0, chk.stderr);
      assert.match(chk.stdout, /data is valid/);
      unpackAndCompare(blob, [], src, out, 'u');
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--prefetch-policy fs writes the matched inodes (patterns on stdin), v5 and v6', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'nydus-out-'));
  try {
    const src = source(dir);
    for (const v of ['5', '6']) {
      const boot = join(dir, `p${v}.boot`);
      const r = await runBin(
        'nydus-image',
        ['create', '--fs-version', v, '--prefetch-policy', 'fs', '-B', boot, '-D', dir, src],
        {
          input: '/usr/bin\nrelative/path\n/usr/bin/tool\n/etc/conf\n/missing\n',
        },
      );
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /not an absolute path/);
      const p = await runBin('nydus-image', ['inspect', boot, '-R', 'prefetch']);
      const table = JSON.parse(p.stdout) as { inode: number; path: string[] }[];
      // /usr/bin/tool is covered by /usr/bin and dropped; /missing matches nothing
      assert.deepEqual(
        table.map((e) => e.path),
        [['/usr/bin'], ['/etc/conf']],
        `v${v}`,
      );
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('v5 with --aligned-chunk and a small chunk size round-trips', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'nydus-out-'));
  try {
    const src = source(dir);
    const r = await runBin('nydus-image', [
      'create',
      '--fs-version',
      '5',
      '--aligned-chunk',
      '--chunk-size',
      '0x1000',
      '--compressor',
      'lz4_block',
      '-B',
      join(dir, 'b'),
      '-b',
      join(dir, 'blob'),
      src,
    ]);
    assert.equal(r.code, 0, r.stderr);
    const chk = await runBin('nydus-image', ['check', join(dir, 'b'), '-D', dir]);
    // the blob is named "blob" here, not by id: check finds it through unpack -b instead
    assert.equal(chk.code, 1);
    unpackAndCompare(join(dir, 'b'), ['-b', join(dir, 'blob')], src, dir, 'v5');
    const { bootstrap } = await loadBootstrapFile(join(dir, 'b'));
    assert.ok(bootstrap.allChunks().every((c) => c.uncompressedOffset % 4096 === 0));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
