import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { diffSnapshots, snapshot } from '../helpers/fs-tree.js';
import { debianRootfs } from '../helpers/rootfs.js';
import { runBin } from '../helpers/run-bin.js';

test(
  'a debootstrap rootfs builds (v6 zstd, v5 lz4_block) and unpacks to exactly itself',
  { timeout: 30 * 60 * 1000 },
  async (t) => {
    const rootfs = debianRootfs(t);
    if (rootfs === undefined) return;
    // /dev entries and proc mount points of a minbase rootfs are ordinary inodes; sockets there are none.
    const want = snapshot(rootfs, { skipRoot: true, skipSockets: true });
    assert.ok(want.size > 3000, `rootfs has ${want.size} paths`);
    const dir = mkdtempSync(join(tmpdir(), 'nydus-rootfs-'));
    try {
      for (const [v, c] of [
        ['6', 'zstd'],
        ['5', 'lz4_block'],
      ]) {
        const out = join(dir, `v${v}`);
        mkdirSync(out);
        const r = await runBin(
          'nydus-image',
          ['create', '--fs-version', v!, '--compressor', c!, '-B', join(out, 'boot'), '-D', out, rootfs],
          { timeoutMs: 600000 },
        );
        assert.equal(r.code, 0, r.stderr);
        const chk = await runBin('nydus-image', ['check', join(out, 'boot'), '-D', out], {
          timeoutMs: 600000,
        });
        assert.equal(chk.code, 0, chk.stderr);
        const tarFile = join(out, 'out.tar');
        const u = await runBin('nydus-image', ['unpack', join(out, 'boot'), '-D', out, '--output', tarFile], {
          timeoutMs: 600000,
        });
        assert.equal(u.code, 0, u.stderr);
        const root = join(out, 'root');
        mkdirSync(root);
        execFileSync('tar', [
          '--xattrs',
          '--xattrs-include=*',
          '--numeric-owner',
          '--same-owner',
          '-p',
          '-xf',
          tarFile,
          '-C',
          root,
        ]);
        assert.deepEqual(
          diffSnapshots(want, snapshot(root, { skipRoot: true, skipSockets: true })),
          [],
          `v${v} ${c}`,
        );
        rmSync(out, { recursive: true, force: true });
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
);
