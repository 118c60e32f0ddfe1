import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { diffSnapshots, snapshot } from '../helpers/fs-tree.js';
import { canFuse, cleanup, startDaemon, stopDaemon, WAIT_MS, type Daemon } from '../helpers/nydusd.js';
import { debianRootfs } from '../helpers/rootfs.js';
import { runBin } from '../helpers/run-bin.js';

const execFileP = promisify(execFile);

/**
 * A debootstrap rootfs served by nydusd: every path equals the source (xattrs included), and
 * programs run from the mount (exec and mmap of shared libraries through FUSE).
 */
for (const [version, compressor] of [
  ['6', 'zstd'],
  ['5', 'lz4_block'],
] as const) {
  test(`a debootstrap rootfs image (v${version}, ${compressor}) mounted by nydusd equals the rootfs; chroot runs apt-get from it`, async (t) => {
    if (!canFuse(t)) return;
    const rootfs = debianRootfs(t);
    if (rootfs === undefined) return;
    const dir = mkdtempSync(join(tmpdir(), 'nydusd-rootfs-'));
    const mnt = join(dir, 'mnt');
    const blobs = join(dir, 'blobs');
    mkdirSync(mnt);
    mkdirSync(blobs);
    let d: Daemon | undefined;
    try {
      const boot = join(dir, 'boot');
      const c = await runBin(
        'nydus-image',
        [
          'create',
          '--log-level',
          'warn',
          '--fs-version',
          version,
          '--compressor',
          compressor,
          '-B',
          boot,
          '-D',
          blobs,
          rootfs,
        ],
        { timeoutMs: 300_000 },
      );
      assert.equal(c.code, 0, c.stderr);
      const cfg = join(dir, 'cfg.json');
      writeFileSync(
        cfg,
        JSON.stringify({
          device: {
            backend: { type: 'localfs', config: { dir: blobs } },
            cache: { type: 'blobcache', config: { work_dir: join(dir, 'cache') } },
          },
          mode: 'direct',
          enable_xattr: true,
        }),
      );
      d = await startDaemon(mnt, ['--config', cfg, '--bootstrap', boot]);
      const want = snapshot(rootfs, { skipRoot: true, skipSockets: true });
      const got = snapshot(mnt, { skipRoot: true, skipSockets: true });
      assert.deepEqual(diffSnapshots(want, got), []);
      const r = await execFileP('chroot', [mnt, '/bin/sh', '-c', 'ls / && apt-get --version'], {
        timeout: WAIT_MS * 4,
        env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C' },
      });
      assert.match(r.stdout, /\busr\b/);
      assert.match(r.stdout, /^apt \d+\.\d+/m);
      await stopDaemon(d);
      d = undefined;
    } finally {
      cleanup(d, mnt);
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
