import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { diffSnapshots, makeEveryEntryTree, snapshot } from '../helpers/fs-tree.js';
import { runBin } from '../helpers/run-bin.js';
import { loadBootstrapFile } from '../../src/rafs/open.js';
import { RafsImage } from '../../src/rafs/image.js';
import { LocalFsBlobSource } from '../../src/storage/localfs.js';
import type { BlobInfo } from '../../src/format/model.js';
import { extractTar, needRoot } from '../helpers/env.js';

/** Mount an EROFS image read-only through a loop device, snapshot it, unmount. */
export function erofsMountSnapshot(disk: string, mnt: string): ReturnType<typeof snapshot> {
  mkdirSync(mnt, { recursive: true });
  execFileSync('mount', ['-t', 'erofs', '-o', 'loop,ro', disk, mnt]);
  try {
    return snapshot(mnt, { skipRoot: true });
  } finally {
    execFileSync('umount', [mnt]);
  }
}

/**
 * fsck.erofs (erofs-utils 1.5 has no flat-device mode) with each blob's region of the image
 * given as its extra device; --extract checks every file decodes and writes the tree out.
 */
export function fsckExtractSnapshot(
  disk: string,
  blobs: readonly BlobInfo[],
  into: string,
): ReturnType<typeof snapshot> {
  const devices = blobs.map((b, i) => {
    const dev = `${disk}.dev${i}`;
    execFileSync('dd', [
      `if=${disk}`,
      `of=${dev}`,
      'bs=4096',
      `skip=${b.mappedBlkaddr}`,
      `count=${b.uncompressedSize / 4096}`,
      'status=none',
    ]);
    return `--device=${dev}`;
  });
  execFileSync('fsck.erofs', [...devices, `--extract=${into}`, disk], { stdio: ['ignore', 'pipe', 'pipe'] });
  return snapshot(into, { skipRoot: true, skipSockets: true });
}

let shared: { dir: string; src: string } | undefined;
async function sourceTree(): Promise<{ dir: string; src: string }> {
  if (shared === undefined) {
    const dir = mkdtempSync(join(tmpdir(), 'nydus-create-'));
    const src = join(dir, 'src');
    mkdirSync(src);
    await makeEveryEntryTree(src);
    shared = { dir, src };
  }
  return shared;
}

const COMBOS: [string, string, string][] = [];
for (const v of ['5', '6'])
  for (const c of ['none', 'lz4_block', 'zstd']) for (const d of ['blake3', 'sha256']) COMBOS.push([v, c, d]);

test('every-entry tree round-trips through create and unpack, for every fs-version, compressor and digester', async (t) => {
  if (!needRoot(t)) return;
  const { dir, src } = await sourceTree();
  const want = snapshot(src, { skipRoot: true, skipSockets: true });
  for (const [v, c, d] of COMBOS) {
    const out = join(dir, `out-${v}-${c}-${d}`);
    mkdirSync(out);
    const r = await runBin(
      'nydus-image',
      [
        'create',
        '--fs-version',
        v,
        '--compressor',
        c,
        '--digester',
        d,
        '-B',
        join(out, 'boot'),
        '-D',
        out,
        src,
      ],
      { timeoutMs: 120000 },
    );
    assert.equal(r.code, 0, `${v}/${c}/${d}: ${r.stderr}`);
    const chk = await runBin('nydus-image', ['check', join(out, 'boot'), '-D', out]);
    assert.equal(chk.code, 0, chk.stderr);
    assert.match(chk.stdout, /RAFS filesystem data is valid/);
    const tarFile = join(out, 'out.tar');
    const u = await runBin('nydus-image', ['unpack', join(out, 'boot'), '-D', out, '--output', tarFile], {
      timeoutMs: 120000,
    });
    assert.equal(u.code, 0, u.stderr);
    const root = join(out, 'root');
    extractTar(tarFile, root);
    assert.deepEqual(
      diffSnapshots(want, snapshot(root, { skipRoot: true, skipSockets: true })),
      [],
      `${v}/${c}/${d}`,
    );
    // the socket, which tar cannot carry, is in the image itself
    const { bootstrap } = await loadBootstrapFile(join(out, 'boot'));
    const img = new RafsImage(bootstrap, new LocalFsBlobSource({ dir: out }));
    const sock = img.lookupPath('/socket');
    assert.equal((sock?.type ?? 0) & 0o170000, 0o140000);
    await img.close();
    if (v === '6') {
      const fsck = execFileSync(
        'sh',
        ['-c', `fsck.erofs ${join(out, 'boot')} --device=/dev/null 2>&1 || true`],
        { encoding: 'utf8' },
      );
      assert.doesNotMatch(fsck, /corrupt|invalid|failed/i, fsck);
    }
    rmSync(out, { recursive: true, force: true });
  }
});

test('--repeatable builds give the same bytes every time; default builds record owners', async (t) => {
  if (!needRoot(t)) return;
  const { dir, src } = await sourceTree();
  const sums: string[] = [];
  for (let i = 0; i < 2; i++) {
    const out = join(dir, `rep-${i}`);
    mkdirSync(out);
    const r = await runBin('nydus-image', ['create', '--repeatable', '-D', out, src], { timeoutMs: 120000 });
    assert.equal(r.code, 0, r.stderr);
    sums.push(readdirSync(out).sort().join(','));
  }
  assert.equal(sums[0], sums[1], 'file names are digests: same names, same bytes');
  const { bootstrap } = await loadBootstrapFile(
    join(
      dir,
      'rep-0',
      readdirSync(join(dir, 'rep-0')).find(
        (n) => readFileSync(join(dir, 'rep-0', n)).readUInt32LE(1024) === 0xe0f5e1e2,
      )!,
    ),
  );
  assert.equal(bootstrap.superblock.explicitUidGid, false);
});
