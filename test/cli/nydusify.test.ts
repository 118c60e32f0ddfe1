import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { curl } from '../helpers/api.js';
import { diffSnapshots, snapshot, type PathFacts } from '../helpers/fs-tree.js';
import { canFuse, cleanup, mounted, tmp, WAIT_MS } from '../helpers/nydusd.js';
import { expectedTree, makeBusyboxLayout, makeLayeredLayout, pushLayout } from '../helpers/oci-images.js';
import { needRegistry, startRegistry } from '../helpers/registry.js';
import { debianRootfs } from '../helpers/rootfs.js';
import { binPath, runBin } from '../helpers/run-bin.js';

/**
 * The registry path end to end with the real binaries: `nydusify convert` of a layered Debian
 * image (whiteouts, an opaque dir, type changes, hardlinks, xattrs, devices), `nydusify check`
 * against its source, `nydusify mount` compared with umoci's unpack of the source (the
 * reference) and a program run from the mount with chroot, fetching only part of the image.
 */

/**
 * Snapshot with xattrs in name order (file systems list them in their own order). Directory
 * mtimes are left out: an unpacker on a real file system changes a directory's mtime whenever a
 * later layer adds or removes an entry in it without listing the directory itself, so they tell
 * when the unpack ran, not what the image holds.
 */
function facts(root: string): Map<string, PathFacts> {
  const s = snapshot(root, { skipRoot: true });
  for (const f of s.values()) {
    f.xattrs = Object.fromEntries(Object.entries(f.xattrs).sort());
    if (f.type === 'dir') f.mtime = '';
  }
  return s;
}

async function waitMounted(mnt: string, child: ChildProcess, log: () => string): Promise<void> {
  const deadline = Date.now() + WAIT_MS * 4;
  while (!mounted(mnt)) {
    if (child.exitCode !== null) throw new Error(`nydusify mount exited ${child.exitCode}: ${log()}`);
    if (Date.now() > deadline) throw new Error(`nydusify mount did not mount: ${log()}`);
    await sleep(50);
  }
}

test('nydusify convert, check and mount of a layered Debian image: check passes, the mount equals umoci unpack of the source, a program runs from it with chroot, and only part of the image is fetched', async (t) => {
  if (!canFuse(t) || !needRegistry(t)) return;
  const rootfs = debianRootfs(t);
  if (rootfs === undefined) return;
  const { dir, mnt } = tmp();
  const reg = await startRegistry();
  let child: ChildProcess | undefined;
  try {
    const lay = await makeLayeredLayout(undefined, { rootfs });
    await pushLayout(lay.dir, lay.tag, reg.host, 'debian:layered');
    const src = `${reg.host}/debian:layered`;
    const dst = `${reg.host}/debian:layered-nydus`;

    const conv = await runBin(
      'nydusify',
      ['convert', '--source', src, '--target', dst, '--plain-http', '--work-dir', join(dir, 'conv')],
      { timeoutMs: 300_000 },
    );
    assert.equal(conv.code, 0, conv.stderr);
    assert.match(conv.stderr, /Success convert image/);

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
        join(dir, 'check'),
      ],
      { timeoutMs: 300_000 },
    );
    assert.equal(check.code, 0, check.stderr);
    assert.match(check.stderr, /Rule filesystem: passed/);
    for (const f of [
      'target/nydus_manifest.json',
      'target/nydus_config.json',
      'target/nydus_bootstrap/image/image.boot',
      'source/oci_manifest.json',
      'source/oci_config.json',
    ])
      assert.ok(existsSync(join(dir, 'check', f)), `check wrote ${f}`);

    // nydusify mount, compared with the reference unpacker.
    const work = join(dir, 'mount-work');
    let log = '';
    child = spawn(
      process.execPath,
      [
        binPath('nydusify'),
        'mount',
        '--target',
        dst,
        '--target-insecure',
        '--mount-path',
        mnt,
        '--work-dir',
        work,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (log += d));
    await waitMounted(mnt, child, () => log);

    // A program from the image, run from the mount.
    const out = execFileSync('chroot', [mnt, '/usr/bin/env', 'LANG=C', '/bin/ls', '/etc/apt'], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    assert.match(out, /sources\.list|apt\.conf\.d/);
    const sock = join(work, 'nydusd.sock');
    const manifest = JSON.parse(
      readFileSync(join(dir, 'check', 'target', 'nydus_manifest.json'), 'utf8'),
    ) as {
      layers: { size: number }[];
    };
    const imageBytes = manifest.layers.reduce((n, l) => n + l.size, 0);
    const be = (await curl(sock, 'GET', '/api/v1/metrics/backend')).json as { read_amount_total: number };
    assert.ok(
      be.read_amount_total > 0 && be.read_amount_total < imageBytes / 5,
      `running ls fetched ${be.read_amount_total} of ${imageBytes} bytes`,
    );

    const want = facts(await expectedTree(lay.dir, lay.tag));
    const have = facts(mnt);
    assert.deepEqual(diffSnapshots(want, have), []);

    child.kill('SIGTERM');
    const code = await new Promise<number | null>((res) => child!.on('exit', res));
    assert.equal(code, 0, log);
    assert.equal(mounted(mnt), false, 'the mount is gone after SIGTERM');
    child = undefined;
  } finally {
    if (child !== undefined) child.kill('SIGKILL');
    cleanup(undefined, mnt);
    await reg.stop();
  }
});

test('nydusify check reports each difference and exits 1 when the Nydus image is not the source; mount and check give one-line errors for a missing image', async (t) => {
  if (!canFuse(t) || !needRegistry(t)) return;
  const { dir, mnt } = tmp();
  const reg = await startRegistry();
  try {
    const bb = await makeBusyboxLayout();
    await pushLayout(bb.dir, bb.tag, reg.host, 'busybox:oci');
    const lay = await makeLayeredLayout();
    await pushLayout(lay.dir, lay.tag, reg.host, 'small:oci');
    const conv = await runBin('nydusify', [
      'convert',
      '--source',
      `${reg.host}/small:oci`,
      '--target',
      `${reg.host}/small:nydus`,
      '--plain-http',
      '--work-dir',
      join(dir, 'conv'),
    ]);
    assert.equal(conv.code, 0, conv.stderr);

    // The converted small image checked against busybox: the filesystem rule fails.
    const bad = await runBin('nydusify', [
      'check',
      '--source',
      `${reg.host}/busybox:oci`,
      '--target',
      `${reg.host}/small:nydus`,
      '--source-insecure',
      '--target-insecure',
      '--work-dir',
      join(dir, 'check'),
    ]);
    assert.equal(bad.code, 1, bad.stderr);
    assert.match(bad.stderr, /\[filesystem\] \/etc\/group: missing in the Nydus image/);
    assert.match(bad.stderr, /\[filesystem\] \/data\/big\.bin: not in the source image/);
    assert.match(bad.stderr, /nydusify: error: check failed: \d+ problem/);
    assert.equal(mounted(join(dir, 'check', 'target', 'mnt')), false, 'check unmounted its mount');

    // An OCI image is not a Nydus image; a missing tag is a clear error.
    const notNydus = await runBin('nydusify', [
      'check',
      '--target',
      `${reg.host}/busybox:oci`,
      '--target-insecure',
      '--work-dir',
      join(dir, 'check2'),
    ]);
    assert.equal(notNydus.code, 1);
    assert.match(
      notNydus.stderr,
      /\[manifest\] the last layer of the Nydus manifest is not a bootstrap layer/,
    );
    mkdirSync(join(dir, 'm'));
    const missing = await runBin('nydusify', [
      'mount',
      '--target',
      `${reg.host}/small:nope`,
      '--target-insecure',
      '--mount-path',
      mnt,
      '--work-dir',
      join(dir, 'm'),
    ]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^nydusify: error: .*nope/m);
    assert.doesNotMatch(missing.stderr, /\n\s+at /, 'no stack trace');
    assert.equal(mounted(mnt), false);
  } finally {
    cleanup(undefined, mnt);
    await reg.stop();
  }
});
