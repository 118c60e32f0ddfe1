import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { needContainerd, startContainerd, type Containerd } from '../helpers/containerd.js';
import { makeLayeredLayout, pushLayout } from '../helpers/oci-images.js';
import { needRegistry, startRegistry } from '../helpers/registry.js';
import { binPath } from '../helpers/run-bin.js';
import {
  convertToNydus,
  mountsUnder,
  nydusdPids,
  scrubSnapshotter,
  type SnapshotterProc,
  snapshotterRoot,
  startSnapshotter,
} from '../helpers/snapshotter.js';

/**
 * `[snapshot] enable_nydus_overlayfs = true`: containers get `fuse.nydus-overlayfs` mounts
 * carrying the image's details in `extraoption=` (what Kata reads); with runc, containerd's
 * shim runs mount.fuse, which runs our `nydus-overlayfs` from PATH, which drops the payload
 * and mounts the overlay.
 */
test('with enable_nydus_overlayfs the container mounts through nydus-overlayfs and runs', async (t) => {
  if (!needContainerd(t) || !needRegistry(t)) return;
  const reg = await startRegistry();
  const base = snapshotterRoot();
  const bin = mkdtempSync(join(tmpdir(), 'nydus-ovl-bin-'));
  const live: { ctd?: Containerd; sn?: SnapshotterProc } = {};
  t.after(async () => {
    await live.ctd?.stop();
    await live.sn?.stop().catch(() => undefined);
    await scrubSnapshotter(base);
    await reg.stop();
    rmSync(bin, { recursive: true, force: true });
  });
  const layered = await makeLayeredLayout();
  const src = await pushLayout(layered.dir, layered.tag, reg.host, 'layered:latest');
  const ref = `${reg.host}/layered:nydus`;
  await convertToNydus(src.ref, ref);
  // What `npm install -g .` puts on PATH.
  writeFileSync(
    join(bin, 'nydus-overlayfs'),
    `#!/bin/sh\nexec "${process.execPath}" "${binPath('nydus-overlayfs')}" "$@"\n`,
  );
  chmodSync(join(bin, 'nydus-overlayfs'), 0o755);
  const sn = (live.sn = await startSnapshotter({
    root: base,
    toml: 'version = 1\ncleanup_on_close = true\n[snapshot]\nenable_nydus_overlayfs = true\n',
  }));
  const ctd = (live.ctd = await startContainerd({
    snapshotterSock: sn.sock,
    env: { PATH: `${bin}:${process.env['PATH'] ?? ''}` },
  }));
  const pull = await ctd.ctr(['image', 'rpull', '--plain-http', '--snapshotter', 'nydus', ref], {
    remote: true,
    timeoutMs: 120_000,
  });
  assert.equal(pull.code, 0, pull.stderr);
  const prep = await ctd.ctr([
    'snapshots',
    '--snapshotter',
    'nydus',
    'prepare',
    '--mounts',
    'probe',
    await topChain(ctd, ref),
  ]);
  assert.equal(prep.code, 0, `${prep.stderr}\n${sn.output().slice(-3000)}`);
  const mounts = JSON.parse(prep.stdout) as Array<{ Type: string; Source: string; Options: string[] }>;
  assert.equal(mounts.length, 1);
  assert.equal(mounts[0]!.Type, 'fuse.nydus-overlayfs');
  assert.equal(mounts[0]!.Source, 'overlay');
  const extra = mounts[0]!.Options.find((o) => o.startsWith('extraoption='));
  assert.ok(extra !== undefined, 'the mount carries extraoption');
  const payload = JSON.parse(Buffer.from(extra.slice('extraoption='.length), 'base64').toString('utf8')) as {
    source: string;
    config: string;
    snapshotdir: string;
    fs_version: string;
  };
  assert.match(payload.source, /image\.boot$/);
  assert.equal(payload.fs_version, 'v6');
  assert.equal(
    (JSON.parse(payload.config) as { device: { backend: { config: { repo: string } } } }).device.backend
      .config.repo,
    'layered',
  );
  await ctd.ctr(['snapshots', '--snapshotter', 'nydus', 'rm', 'probe']);

  const run = await ctd.ctr(
    ['run', '--snapshotter', 'nydus', '--rm', ref, 'ovl-c1', '/bin/cat', '/data/keep.txt'],
    {
      timeoutMs: 60_000,
    },
  );
  assert.equal(run.code, 0, `${run.stderr}\n${sn.output().slice(-3000)}`);
  assert.equal(run.stdout, 'kept through every layer\n');

  // cleanup_on_close: a snapshotter that stops takes its daemons and mounts with it.
  assert.equal(nydusdPids(sn.root).length, 1);
  assert.equal(await sn.stop(), 0);
  assert.deepEqual(nydusdPids(sn.root), []);
  assert.deepEqual(mountsUnder(sn.root), []);
});

/** The chain id of an image's top layer (the parent of its containers' snapshots). */
async function topChain(
  ctd: { ctr: (a: string[]) => Promise<{ code: number; stdout: string }> },
  ref: string,
): Promise<string> {
  const r = await ctd.ctr(['snapshots', '--snapshotter', 'nydus', 'ls']);
  assert.equal(r.code, 0);
  // The committed snapshot no other snapshot names as its parent is the top of the image.
  const rows = r.stdout
    .split('\n')
    .slice(1)
    .map((l) => l.trim().split(/\s+/))
    .filter((c) => c.length >= 3 && c[c.length - 1] === 'Committed');
  const parents = new Set(rows.map((c) => c[1]));
  const top = rows.find((c) => !parents.has(c[0]));
  assert.ok(top !== undefined, `a top snapshot of ${ref}: ${r.stdout}`);
  return top[0]!;
}
