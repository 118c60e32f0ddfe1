// Small source images for the converter tests, made with GNU tar, gzip and zstd into an OCI image
// layout; each comes with the directory holding the tree the image's layers produce when applied
// in order (made by applying the same changes to a copy), to compare converted images against.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
  linkSync,
  mkdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';

export interface Fixture {
  /** The OCI layout directory and tag. */
  dir: string;
  tag: string;
  /** The expected tree. */
  tree: string;
  layers: number;
}

const MEDIA = {
  gzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  zstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  none: 'application/vnd.oci.image.layer.v1.tar',
} as const;

function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

function sh(cmd: string, args: string[]): Buffer {
  return execFileSync(cmd, args, { maxBuffer: 1 << 28 });
}

function writeBlob(layout: string, data: Buffer): { digest: string; size: number } {
  const hex = sha(data);
  writeFileSync(join(layout, 'blobs', 'sha256', hex), data);
  return { digest: `sha256:${hex}`, size: data.length };
}

/** Tar a staging dir (entries as listed, owner 0) and return the tar bytes. */
function tarOf(dir: string, entries: string[]): Buffer {
  return sh('tar', [
    '--format=pax',
    '--numeric-owner',
    '--owner=0',
    '--group=0',
    '--mtime=@1700000000',
    '--no-recursion',
    '-C',
    dir,
    '-cf',
    '-',
    ...entries,
  ]);
}

function findIn(dir: string): string[] {
  return execFileSync('find', ['.'], { cwd: dir })
    .toString()
    .split('\n')
    .filter((x) => x !== '')
    .sort();
}

function writeLayout(
  layout: string,
  tag: string,
  layers: { tar: Buffer; compression: keyof typeof MEDIA; data?: Buffer }[],
  config: Record<string, unknown>,
): void {
  mkdirSync(join(layout, 'blobs', 'sha256'), { recursive: true });
  writeFileSync(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const descs = [];
  const diffIds = [];
  for (const l of layers) {
    diffIds.push(`sha256:${sha(l.tar)}`);
    const data =
      l.data !== undefined
        ? l.data
        : l.compression === 'gzip'
          ? execFileSync('gzip', ['-n', '-c'], { input: l.tar, maxBuffer: 1 << 28 })
          : l.compression === 'zstd'
            ? execFileSync('zstd', ['-q', '-c'], { input: l.tar, maxBuffer: 1 << 28 })
            : l.tar;
    descs.push({ mediaType: MEDIA[l.compression], ...writeBlob(layout, data) });
  }
  const cfg = writeBlob(
    layout,
    Buffer.from(
      JSON.stringify({
        architecture: 'amd64',
        os: 'linux',
        ...config,
        rootfs: { type: 'layers', diff_ids: diffIds },
        history: layers.map((_, i) => ({ created_by: `layer ${i}` })),
      }),
    ),
  );
  const manifest = writeBlob(
    layout,
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...cfg },
        layers: descs,
      }),
    ),
  );
  writeFileSync(
    join(layout, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          ...manifest,
          annotations: { 'org.opencontainers.image.ref.name': tag },
        },
      ],
    }),
  );
}

/** One layer: /bin/busybox with applet symlinks, /etc/passwd, /tmp (1777). */
export function makeBusybox(root: string): Fixture {
  const tree = join(root, 'busybox-tree');
  rmSync(tree, { recursive: true, force: true });
  mkdirSync(join(tree, 'bin'), { recursive: true });
  copyFileSync('/bin/busybox', join(tree, 'bin', 'busybox'));
  chmodSync(join(tree, 'bin', 'busybox'), 0o755);
  for (const a of ['sh', 'ls', 'cat', 'echo']) symlinkSync('busybox', join(tree, 'bin', a));
  mkdirSync(join(tree, 'etc'));
  writeFileSync(join(tree, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  mkdirSync(join(tree, 'tmp'));
  chmodSync(join(tree, 'tmp'), 0o1777);
  const dir = join(root, 'busybox-layout');
  writeLayout(dir, 'latest', [{ tar: tarOf(tree, findIn(tree)), compression: 'gzip' }], {
    config: { Cmd: ['/bin/sh'] },
  });
  return { dir, tag: 'latest', tree, layers: 1 };
}

/**
 * Three layers (gzip, zstd, plain tar): a base tree with a 3 MiB file, a hardlink and a symlink;
 * then a layer removing a file and a directory (whiteouts), making a directory opaque and
 * changing a file; then one replacing a hardlinked file and adding files.
 */
export function makeLayered(root: string): Fixture {
  const tree = join(root, 'layered-tree');
  const l2 = join(root, 'layered-l2');
  const l3 = join(root, 'layered-l3');
  for (const d of [tree, l2, l3]) rmSync(d, { recursive: true, force: true });
  const put = (base: string, p: string, data: string | Buffer, mode = 0o644): void => {
    mkdirSync(join(base, p, '..'), { recursive: true });
    writeFileSync(join(base, p), data);
    chmodSync(join(base, p), mode);
  };
  // Layer 1.
  put(tree, 'usr/bin/tool', '#!/bin/sh\necho tool\n', 0o755);
  put(tree, 'usr/share/doc/a.txt', 'doc a\n');
  put(tree, 'etc/conf', 'v=1\n');
  let seed = 1;
  const big = Buffer.alloc(3 * 1024 * 1024 + 12345);
  for (let i = 0; i < big.length; i++) {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    big[i] = i % 4096 < 2048 ? seed & 0xff : 0x61;
  }
  put(tree, 'big', big);
  put(tree, 'data/x', 'x content\n');
  put(tree, 'data/y', 'y content\n', 0o600);
  linkSync(join(tree, 'data/x'), join(tree, 'hard'));
  symlinkSync('data/x', join(tree, 'link'));
  put(tree, 'opq/old1', 'old1\n');
  put(tree, 'opq/sub/old2', 'old2\n');
  put(tree, 'gone', 'bye\n');
  put(tree, 'gonedir/f', 'f\n');
  const tar1 = tarOf(tree, findIn(tree));
  // Layer 2: whiteouts, opaque dir, changed file.
  put(l2, 'etc/conf', 'v=2\n');
  put(l2, '.wh.gone', '');
  put(l2, '.wh.gonedir', '');
  put(l2, 'opq/.wh..wh..opq', '');
  put(l2, 'opq/new1', 'new1\n');
  put(l2, 'data/z', 'z\n');
  const tar2 = tarOf(
    l2,
    findIn(l2).filter((p) => p !== '.'),
  );
  rmSync(join(tree, 'gone'));
  rmSync(join(tree, 'gonedir'), { recursive: true });
  rmSync(join(tree, 'opq'), { recursive: true });
  for (const [p, d] of [
    ['etc/conf', 'v=2\n'],
    ['opq/new1', 'new1\n'],
    ['data/z', 'z\n'],
  ] as const)
    put(tree, p, d);
  // Layer 3: replace the hardlinked file, add a tool.
  put(l3, 'data/x', 'x changed\n', 0o640);
  put(l3, 'usr/bin/tool2', 'tool2\n', 0o755);
  const tar3 = tarOf(
    l3,
    findIn(l3).filter((p) => p !== '.'),
  );
  rmSync(join(tree, 'data/x'));
  put(tree, 'data/x', 'x changed\n', 0o640);
  put(tree, 'usr/bin/tool2', 'tool2\n', 0o755);
  const dir = join(root, 'layered-layout');
  writeLayout(
    dir,
    'latest',
    [
      { tar: tar1, compression: 'gzip' },
      { tar: tar2, compression: 'zstd' },
      { tar: tar3, compression: 'none' },
    ],
    { config: { Cmd: ['/usr/bin/tool'], Env: ['PATH=/usr/bin'] } },
  );
  return { dir, tag: 'latest', tree, layers: 3 };
}

/** Push a layout's tag to a registry with skopeo (format `v2s2` gives Docker schema2). */
export function pushFixture(f: Fixture, host: string, repoTag: string, format?: 'v2s2' | 'oci'): void {
  sh('skopeo', [
    '--insecure-policy',
    'copy',
    '--quiet',
    '--dest-tls-verify=false',
    ...(format !== undefined ? ['--format', format] : []),
    `oci:${f.dir}:${f.tag}`,
    `docker://${host}/${repoTag}`,
  ]);
}

/** An index of two one-layer images, linux/amd64 and linux/arm64 (each has /platform). */
export function makeMulti(root: string): { dir: string; tag: string } {
  const dir = join(root, 'multi-layout');
  const manifests = [];
  for (const arch of ['amd64', 'arm64']) {
    const sub = join(root, `multi-${arch}`);
    writeLayout(sub, 'latest', [{ tar: tarOfFile(root, arch), compression: 'gzip' }], { architecture: arch });
    mkdirSync(join(dir, 'blobs', 'sha256'), { recursive: true });
    sh('cp', ['-a', `${sub}/blobs/sha256/.`, join(dir, 'blobs', 'sha256')]);
    const idx = JSON.parse(readFileSync(join(sub, 'index.json'), 'utf8')) as {
      manifests: { digest: string; size: number }[];
    };
    const m = idx.manifests[0]!;
    manifests.push({
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      digest: m.digest,
      size: m.size,
      platform: { os: 'linux', architecture: arch },
    });
  }
  const index = Buffer.from(
    JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests }),
  );
  const d = writeBlob(dir, index);
  writeFileSync(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  writeFileSync(
    join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.index.v1+json',
          ...d,
          annotations: { 'org.opencontainers.image.ref.name': 'latest' },
        },
      ],
    }),
  );
  return { dir, tag: 'latest' };
}

function tarOfFile(root: string, arch: string): Buffer {
  const st = join(root, `multi-stage-${arch}`);
  rmSync(st, { recursive: true, force: true });
  mkdirSync(st, { recursive: true });
  writeFileSync(join(st, 'platform'), `linux/${arch}\n`);
  return tarOf(st, ['platform']);
}

/** A layout from raw layer blobs (`data` as stored; `tar` gives the diff_id). */
export function makeRaw(root: string, name: string, layers: { tar: Buffer; data: Buffer }[]): Fixture {
  const dir = join(root, `${name}-layout`);
  mkdirSync(join(dir, 'blobs', 'sha256'), { recursive: true });
  writeLayout(
    dir,
    'latest',
    layers.map((l) => ({ tar: l.tar, compression: 'none' as const, data: l.data })),
    {},
  );
  return { dir, tag: 'latest', tree: '', layers: layers.length };
}

/** A tar of the given staging dir entries. */
export function tarEntries(dir: string, entries: string[]): Buffer {
  return tarOf(dir, entries);
}
