// The source-image helpers (test/helpers/oci-images.ts): layouts made with umoci/GNU tar, pushed
// with skopeo to a real docker-registry on loopback, and the reference trees umoci unpacks.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  lstatSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { promisify } from 'node:util';
import { getAttributeSync } from '@napi-rs/xattr';
import { needRoot, IS_ROOT } from '../helpers/env.js';
import { diffSnapshots, snapshot, type PathFacts } from '../helpers/fs-tree.js';
import {
  BIG_FILE_SIZE,
  expectedTree,
  makeBusyboxLayout,
  makeLayeredLayout,
  MEDIA_LAYER_GZIP,
  MEDIA_LAYER_TAR,
  MEDIA_LAYER_ZSTD,
  MEDIA_OCI_CONFIG,
  MEDIA_OCI_INDEX,
  MEDIA_OCI_MANIFEST,
  pushLayout,
  pushMultiPlatform,
  readLayoutManifest,
  zstdAvailable,
} from '../helpers/oci-images.js';
import { haveRegistry, needRegistry, startRegistry, type TestRegistry } from '../helpers/registry.js';
import { debianRootfs } from '../helpers/rootfs.js';

const execFileP = promisify(execFile);

async function out(cmd: string, args: string[]): Promise<string> {
  return (await execFileP(cmd, args, { maxBuffer: 64 * 1024 * 1024 })).stdout;
}

/** `skopeo inspect --raw` of a registry image (plain HTTP, or HTTPS trusting certDir's ca.crt). */
async function inspectRaw(
  ref: string,
  auth: { certDir?: string; creds?: string } = {},
): Promise<{ mediaType?: string; [k: string]: unknown }> {
  const args = ['inspect', '--raw'];
  if (auth.certDir !== undefined) args.push('--cert-dir', auth.certDir);
  else args.push('--tls-verify=false');
  args.push(...(auth.creds !== undefined ? ['--creds', auth.creds] : ['--no-creds']), `docker://${ref}`);
  return JSON.parse(await out('skopeo', args)) as { mediaType?: string };
}

/** A snapshot with each path's xattrs in name order (listxattr order is not canonical). */
function canonicalSnapshot(root: string): Map<string, PathFacts> {
  const snap = snapshot(root);
  for (const facts of snap.values()) {
    facts.xattrs = Object.fromEntries(Object.entries(facts.xattrs).sort(([a], [b]) => (a < b ? -1 : 1)));
  }
  return snap;
}

/** Entry names of one layer blob (GNU tar reads gzip, zstd and plain tars). */
async function layerEntries(layout: string, digest: string, mediaType: string): Promise<string[]> {
  const blob = join(layout, 'blobs', 'sha256', digest.slice('sha256:'.length));
  const z = mediaType.endsWith('+zstd') ? ['--zstd'] : mediaType.endsWith('+gzip') ? ['-z'] : [];
  return (await out('tar', [...z, '-tf', blob])).split('\n').filter((l) => l !== '');
}

let registry: TestRegistry | undefined;
before(async () => {
  if (haveRegistry()) registry = await startRegistry();
});
after(async () => {
  await registry?.stop();
});

/** The plain-HTTP registry of this file (skips loudly, or fails under CI, without the package). */
function reg(t: TestContext): TestRegistry | undefined {
  if (!needRegistry(t)) return undefined;
  return registry;
}

describe('busybox layout', () => {
  test('one gzip layer with busybox and its applets, cmd /bin/sh', async (t) => {
    const bb = await makeBusyboxLayout();
    assert.ok(existsSync(join(bb.dir, 'oci-layout')));
    const { manifest, config } = await readLayoutManifest(bb.dir, bb.tag);
    assert.equal(manifest.layers.length, 1);
    assert.equal(manifest.layers[0]!.mediaType, MEDIA_LAYER_GZIP);
    assert.deepEqual(config.config?.Cmd, ['/bin/sh']);
    assert.equal(config.rootfs.diff_ids.length, 1);

    const root = await expectedTree(bb.dir, bb.tag);
    assert.ok(lstatSync(join(root, 'bin', 'busybox')).isFile());
    assert.equal(readlinkSync(join(root, 'bin', 'sh')), 'busybox');
    if (IS_ROOT) {
      const hi = await out('chroot', [root, '/bin/sh', '-c', 'echo hi from busybox']);
      assert.equal(hi, 'hi from busybox\n');
    } else {
      t.diagnostic('not root: chroot run skipped');
    }
  });

  test('pushed as OCI and as Docker schema2', async (t) => {
    const registry = reg(t);
    if (registry === undefined) return;
    const bb = await makeBusyboxLayout();
    const oci = await pushLayout(bb.dir, bb.tag, registry.host, 'oci-images/busybox:oci');
    // umoci's manifests leave out the optional mediaType field; skopeo pushes them as they are.
    const m = (await inspectRaw(oci.ref)) as { mediaType?: string; config: { mediaType: string } };
    assert.ok(m.mediaType === undefined || m.mediaType === MEDIA_OCI_MANIFEST, m.mediaType);
    assert.equal(m.config.mediaType, MEDIA_OCI_CONFIG);
    assert.equal(oci.digest, (await readLayoutManifest(bb.dir, bb.tag)).digest);
    assert.match(oci.digest, /^sha256:[0-9a-f]{64}$/);

    const v2 = await pushLayout(bb.dir, bb.tag, registry.host, 'oci-images/busybox:v2s2', { format: 'v2s2' });
    const d = (await inspectRaw(v2.ref)) as { mediaType?: string; layers?: { mediaType: string }[] };
    assert.equal(d.mediaType, 'application/vnd.docker.distribution.manifest.v2+json');
    assert.deepEqual(
      d.layers?.map((l) => l.mediaType),
      ['application/vnd.docker.image.rootfs.diff.tar.gzip'],
    );
  });
});

describe('layered layout', () => {
  test('four layers with whiteouts and an opaque dir', async (t) => {
    if (!needRoot(t, 'the layered image (owners, device nodes)')) return;
    const img = await makeLayeredLayout();
    const { manifest, config } = await readLayoutManifest(img.dir, img.tag);
    assert.equal(manifest.layers.length, 4);
    assert.equal(config.rootfs.diff_ids.length, 4);
    assert.ok(manifest.layers.every((l) => l.mediaType === MEDIA_LAYER_GZIP));
    const entries = await Promise.all(
      manifest.layers.map((l) => layerEntries(img.dir, l.digest, l.mediaType)),
    );
    assert.ok(entries[1]!.includes('data/.wh.delete-me.txt'), entries[1]!.join(' '));
    assert.ok(entries[1]!.includes('data/.wh.delete-dir'));
    assert.ok(entries[1]!.includes('links/.wh.hard-b'));
    assert.ok(entries[2]!.includes('opaque/.wh..wh..opq'), entries[2]!.join(' '));
    assert.ok(entries[3]!.includes('data/resurrect.txt'));
  });

  test('the expected tree applies the layers', async (t) => {
    if (!needRoot(t, 'the layered image (owners, device nodes)')) return;
    const img = await makeLayeredLayout();
    const r = await expectedTree(img.dir, img.tag);
    const p = (...parts: string[]): string => join(r, ...parts);
    for (const gone of ['data/delete-me.txt', 'data/delete-dir', 'links/hard-b', 'opaque/old-1.txt']) {
      assert.ok(!existsSync(p(gone)), `${gone} must be gone`);
    }
    assert.deepEqual(readdirSync(p('opaque')).sort(), ['new-in-layer-3.txt', 'new-in-layer-4.txt', 'sub']);
    assert.deepEqual(readdirSync(p('opaque', 'sub')), ['new-2.txt']);
    assert.equal(
      readFileSync(p('data', 'replace-me.txt'), 'utf8'),
      'version 2, replaced in layer 2 (longer than before)\n',
    );
    assert.equal(lstatSync(p('data', 'replace-me.txt')).mode & 0o7777, 0o600);
    assert.equal(readFileSync(p('data', 'resurrect.txt'), 'utf8'), 'back in layer 4 with new content\n');
    assert.equal(lstatSync(p('data', 'empty')).size, 0);
    const big = lstatSync(p('data', 'big.bin'));
    assert.equal(big.size, BIG_FILE_SIZE);
    assert.equal(big.nlink, 2);
    assert.equal(lstatSync(p('data', 'big-hardlink.bin')).ino, big.ino);
    assert.equal(readFileSync(p('data', 'big.bin'))[1024 * 1024], 0x5a);
    assert.equal(lstatSync(p('links', 'hard-a')).nlink, 1);
    assert.equal(readlinkSync(p('links', 'absolute')), '/data/keep.txt');
    assert.equal(readlinkSync(p('links', 'dangling')), '/does/not/exist');
    assert.equal(lstatSync(p('meta', 'suid')).mode & 0o7777, 0o4755);
    assert.equal(lstatSync(p('meta', 'sticky')).mode & 0o7777, 0o1777);
    const owned = lstatSync(p('meta', 'owned'));
    assert.deepEqual([owned.uid, owned.gid, owned.mode & 0o777], [2000, 2001, 0o640]);
    const od = lstatSync(p('meta', 'owned-dir'));
    assert.deepEqual([od.uid, od.gid], [1001, 1002]);
    assert.ok(lstatSync(p('meta', 'null')).isCharacterDevice());
    assert.ok(lstatSync(p('meta', 'fifo')).isFIFO());
    assert.equal(getAttributeSync(p('meta', 'xattr-file'), 'user.foo')?.toString(), 'changed in layer 2');
    assert.deepEqual(
      [...(getAttributeSync(p('meta', 'xattr-file'), 'user.binary') ?? [])],
      [0, 1, 2, 0xff, 0xfe],
    );
    assert.equal(getAttributeSync(p('meta', 'xattr-file'), 'user.empty'), null);
    assert.equal(getAttributeSync(p('meta', 'owned-dir'), 'user.dir')?.toString(), 'on a directory');
    assert.ok(lstatSync(p('types', 'file-to-dir')).isDirectory());
    assert.ok(lstatSync(p('types', 'dir-to-file')).isFile());
    assert.ok(lstatSync(p('types', 'link-to-file')).isFile());
    assert.deepEqual(readdirSync(p('emptydir')), []);
    assert.deepEqual(readdirSync(p('emptydir-layer-4')), []);
    assert.equal(lstatSync(p('links', 'hard-to-lower')).ino, lstatSync(p('data', 'keep.txt')).ino);
    assert.equal(await out('chroot', [r, '/bin/cat', '/data/keep.txt']), 'kept through every layer\n');
  });

  test('zstd, uncompressed and mixed variants hold the same tars', async (t) => {
    if (!needRoot(t, 'the layered image (owners, device nodes)')) return;
    const gz = await makeLayeredLayout();
    const want = canonicalSnapshot(await expectedTree(gz.dir, gz.tag));
    const variants: ['zstd' | 'none' | 'mixed', string[]][] = [
      ['none', [MEDIA_LAYER_TAR, MEDIA_LAYER_TAR, MEDIA_LAYER_TAR, MEDIA_LAYER_TAR]],
      ['zstd', [MEDIA_LAYER_ZSTD, MEDIA_LAYER_ZSTD, MEDIA_LAYER_ZSTD, MEDIA_LAYER_ZSTD]],
      ['mixed', [MEDIA_LAYER_GZIP, MEDIA_LAYER_ZSTD, MEDIA_LAYER_TAR, MEDIA_LAYER_GZIP]],
    ];
    const zstd = await zstdAvailable();
    for (const [compression, media] of variants) {
      if (compression !== 'none' && !zstd) {
        t.diagnostic(`zstd CLI missing: ${compression} variant not checked`);
        continue;
      }
      const img = await makeLayeredLayout(undefined, { compression });
      const { manifest, config } = await readLayoutManifest(img.dir, img.tag);
      assert.deepEqual(
        manifest.layers.map((l) => l.mediaType),
        media,
        compression,
      );
      assert.deepEqual(
        config.rootfs.diff_ids,
        (await readLayoutManifest(gz.dir, gz.tag)).config.rootfs.diff_ids,
      );
      const got = canonicalSnapshot(await expectedTree(img.dir, img.tag));
      assert.deepEqual(diffSnapshots(want, got), [], compression);
    }
  });

  test('pushed: the registry holds the layers with their media types', async (t) => {
    if (!needRoot(t, 'the layered image (owners, device nodes)')) return;
    const registry = reg(t);
    if (registry === undefined) return;
    const gz = await makeLayeredLayout();
    const pushed = await pushLayout(gz.dir, gz.tag, registry.host, 'oci-images/layered:gzip');
    const m = (await inspectRaw(pushed.ref)) as { layers: { mediaType: string; digest: string }[] };
    const local = (await readLayoutManifest(gz.dir, gz.tag)).manifest;
    assert.deepEqual(
      m.layers.map((l) => l.digest),
      local.layers.map((l) => l.digest),
    );
    assert.equal(pushed.digest, (await readLayoutManifest(gz.dir, gz.tag)).digest);

    const v2 = await pushLayout(gz.dir, gz.tag, registry.host, 'oci-images/layered:v2s2', { format: 'v2s2' });
    const d = (await inspectRaw(v2.ref)) as { mediaType: string; layers: { mediaType: string }[] };
    assert.equal(d.mediaType, 'application/vnd.docker.distribution.manifest.v2+json');
    assert.equal(d.layers.length, 4);

    if (await zstdAvailable()) {
      const mixed = await makeLayeredLayout(undefined, { compression: 'mixed' });
      const mp = await pushLayout(mixed.dir, mixed.tag, registry.host, 'oci-images/layered:mixed');
      const mm = (await inspectRaw(mp.ref)) as { layers: { mediaType: string }[] };
      assert.deepEqual(
        mm.layers.map((l) => l.mediaType),
        [MEDIA_LAYER_GZIP, MEDIA_LAYER_ZSTD, MEDIA_LAYER_TAR, MEDIA_LAYER_GZIP],
      );
    }
  });

  test('on a debootstrap rootfs split into layers', async (t) => {
    if (!needRoot(t, 'the layered image (owners, device nodes)')) return;
    const rootfs = debianRootfs(t);
    if (rootfs === undefined) return;
    const img = await makeLayeredLayout(undefined, { rootfs });
    const { manifest } = await readLayoutManifest(img.dir, img.tag);
    assert.equal(manifest.layers.length, 6);
    const r = await expectedTree(img.dir, img.tag);
    assert.ok(lstatSync(join(r, 'usr', 'bin', 'bash')).isFile());
    assert.equal(readlinkSync(join(r, 'bin')), 'usr/bin');
    assert.ok(!existsSync(join(r, 'usr', 'share', 'doc')));
    assert.deepEqual(readdirSync(join(r, 'usr', 'share', 'common-licenses')), ['new-in-layer-3.txt']);
    assert.equal(
      await out('chroot', [r, '/bin/sh', '-c', 'cat /data/keep.txt']),
      'kept through every layer\n',
    );
  });
});

describe('multi-platform index', () => {
  test('linux/amd64 and linux/arm64 under one tag', async (t) => {
    const registry = reg(t);
    if (registry === undefined) return;
    const pushed = await pushMultiPlatform(registry.host, 'oci-images/multi:latest');
    const idx = (await inspectRaw(pushed.ref)) as {
      mediaType: string;
      manifests: { digest: string; platform: { os: string; architecture: string } }[];
    };
    assert.equal(idx.mediaType, MEDIA_OCI_INDEX);
    assert.deepEqual(
      idx.manifests.map((m) => `${m.platform.os}/${m.platform.architecture}`),
      ['linux/amd64', 'linux/arm64'],
    );
    assert.deepEqual(
      idx.manifests.map((m) => m.digest),
      pushed.manifests.map((m) => m.digest),
    );
    const arm = (await inspectRaw(
      `${pushed.ref.replace(/:latest$/, '')}@${pushed.manifests[1]!.digest}`,
    )) as {
      layers: unknown[];
    };
    assert.equal(arm.layers.length, 1);
  });
});

describe('push options', () => {
  test('HTTPS with a CA file and Basic auth, through skopeo and byte for byte', async (t) => {
    if (!needRegistry(t) || !needRoot(t, 'the layered image (owners, device nodes)')) return;
    const secure = await startRegistry({ tls: true, htpasswd: { user: 'alice', pass: 's3cret' } });
    try {
      const certDir = mkdtempSync(join(tmpdir(), 'nydus-oci-images-certs-'));
      t.after(() => rmSync(certDir, { recursive: true, force: true }));
      copyFileSync(secure.caFile!, join(certDir, 'ca.crt'));
      const opts = { tlsVerify: true, caFile: secure.caFile!, creds: 'alice:s3cret' };
      const bb = await makeBusyboxLayout();
      const p1 = await pushLayout(bb.dir, bb.tag, secure.host, 'secure/busybox:1', opts);
      const m1 = (await inspectRaw(p1.ref, { certDir, creds: opts.creds })) as { layers: unknown[] };
      assert.equal(m1.layers.length, 1);
      await assert.rejects(
        pushLayout(bb.dir, bb.tag, secure.host, 'secure/busybox:2', { ...opts, creds: 'alice:wrong' }),
      );

      // Uncompressed layers go byte for byte (skopeo would compress them).
      const plain = await makeLayeredLayout(undefined, { compression: 'none' });
      const p2 = await pushLayout(plain.dir, plain.tag, secure.host, 'secure/layered:none', opts);
      assert.equal(p2.digest, (await readLayoutManifest(plain.dir, plain.tag)).digest);
      const m2 = (await inspectRaw(p2.ref, { certDir, creds: opts.creds })) as {
        layers: { mediaType: string }[];
      };
      assert.ok(m2.layers.every((l) => l.mediaType === MEDIA_LAYER_TAR));
      await assert.rejects(
        pushLayout(plain.dir, plain.tag, secure.host, 'secure/layered:x', { ...opts, creds: 'alice:wrong' }),
        /HTTP 401/,
      );
    } finally {
      await secure.stop();
    }
  });
});
