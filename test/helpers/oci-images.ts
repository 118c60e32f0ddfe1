// Source OCI images for the registry tests, made with real tools: umoci builds the layers (it
// computes whiteouts from the differences between two states of a bundle), GNU tar writes the one
// layer umoci cannot express (an opaque directory), gzip/zstd recompress layers, skopeo pushes to
// a registry and umoci unpacks the reference tree the converter's results are compared with.
//
// Everything lives in temp dirs under os.tmpdir() made by this process (removed when it exits);
// layouts made without an explicit directory are made once per process and shared.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, mkdtempSync, rmSync } from 'node:fs';
import {
  chmod,
  chown,
  copyFile,
  lstat,
  mkdir,
  open,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  symlink,
  link,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { removeAttributeSync, setAttributeSync } from '@napi-rs/xattr';
import { Agent, request } from 'undici';
import { IS_ROOT } from './env.js';
import { prng } from './prng.js';

const execFileP = promisify(execFile);

export const MEDIA_OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const MEDIA_OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const MEDIA_OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
export const MEDIA_LAYER_TAR = 'application/vnd.oci.image.layer.v1.tar';
export const MEDIA_LAYER_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';
export const MEDIA_LAYER_ZSTD = 'application/vnd.oci.image.layer.v1.tar+zstd';

/** How the layers of a layout are compressed; `mixed` cycles gzip, zstd, none over the layers. */
export type LayerCompression = 'gzip' | 'zstd' | 'none' | 'mixed';

const LAYER_MEDIA: Record<'gzip' | 'zstd' | 'none', string> = {
  gzip: MEDIA_LAYER_GZIP,
  zstd: MEDIA_LAYER_ZSTD,
  none: MEDIA_LAYER_TAR,
};

/** An OCI image layout on disk and the tag of one image in it. */
export interface OciLayout {
  dir: string;
  tag: string;
  /** skopeo's name for it: `oci:DIR:TAG`. */
  ref: string;
}

export interface LayoutDescriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: { architecture: string; os: string; variant?: string };
}

export interface LayoutManifest {
  schemaVersion: 2;
  mediaType?: string;
  config: LayoutDescriptor;
  layers: LayoutDescriptor[];
  annotations?: Record<string, string>;
}

export interface LayoutConfig {
  architecture?: string;
  os?: string;
  config?: { Cmd?: string[]; Entrypoint?: string[]; Env?: string[] };
  rootfs: { type: 'layers'; diff_ids: string[] };
  history?: unknown[];
}

// ---------------------------------------------------------------------------------------------
// Small process and file utilities

/** Run a tool; on failure the error names the command and carries its stderr. */
async function tool(cmd: string, args: readonly string[]): Promise<string> {
  try {
    const { stdout } = await execFileP(cmd, args, { maxBuffer: 64 * 1024 * 1024, encoding: 'utf8' });
    return stdout;
  } catch (e) {
    const err = e as Error & { stderr?: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${err.stderr?.trim() || err.message}`);
  }
}

/** True when a command is on PATH. */
async function have(cmd: string): Promise<boolean> {
  try {
    await execFileP('sh', ['-c', `command -v ${cmd}`]);
    return true;
  } catch {
    return false;
  }
}

let zstdPresent: Promise<boolean> | undefined;
/** Whether the `zstd` CLI is installed (the zstd and mixed variants need it). */
export function zstdAvailable(): Promise<boolean> {
  zstdPresent ??= have('zstd');
  return zstdPresent;
}

let tempRoot: string | undefined;
/** A new directory inside this process's temp root (removed when the process exits). */
export function processTempDir(name: string): string {
  if (tempRoot === undefined) {
    const root = mkdtempSync(join(tmpdir(), 'nydus-oci-images-'));
    tempRoot = root;
    process.once('exit', () => rmSync(root, { recursive: true, force: true }));
  }
  return mkdtempSync(join(tempRoot, `${name}-`));
}

/** umoci as root keeps owners; as another user it needs --rootless (no chown, no devices). */
const ROOTLESS: readonly string[] = IS_ROOT ? [] : ['--rootless'];

function imageArg(layout: string, tag: string): string {
  return `${layout}:${tag}`;
}

async function sha256File(path: string): Promise<{ digest: string; size: number }> {
  const h = createHash('sha256');
  let size = 0;
  for await (const chunk of createReadStream(path) as AsyncIterable<Buffer>) {
    h.update(chunk);
    size += chunk.length;
  }
  return { digest: `sha256:${h.digest('hex')}`, size };
}

function blobPath(layout: string, digest: string): string {
  const [alg, hex] = digest.split(':');
  if (alg === undefined || hex === undefined) throw new Error(`bad digest ${digest}`);
  return join(layout, 'blobs', alg, hex);
}

async function writeBlob(layout: string, data: Buffer): Promise<{ digest: string; size: number }> {
  const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
  const p = blobPath(layout, digest);
  await mkdir(dirname(p), { recursive: true });
  await writeFile(p, data);
  return { digest, size: data.length };
}

/** Move a finished file into the layout's blob store under its digest. */
async function adoptBlob(layout: string, file: string): Promise<{ digest: string; size: number }> {
  const d = await sha256File(file);
  const p = blobPath(layout, d.digest);
  await mkdir(dirname(p), { recursive: true });
  await rename(file, p);
  return d;
}

async function writeJsonBlob(layout: string, value: unknown): Promise<{ digest: string; size: number }> {
  return writeBlob(layout, Buffer.from(JSON.stringify(value)));
}

interface LayoutIndex {
  schemaVersion: 2;
  mediaType?: string;
  manifests: LayoutDescriptor[];
}

async function readIndex(layout: string): Promise<LayoutIndex> {
  return JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')) as LayoutIndex;
}

function refName(d: LayoutDescriptor): string | undefined {
  return d.annotations?.['org.opencontainers.image.ref.name'];
}

/** Point `tag` in index.json at a descriptor (replacing what the tag named before). */
async function setTag(layout: string, tag: string, desc: LayoutDescriptor): Promise<void> {
  let index: LayoutIndex = { schemaVersion: 2, manifests: [] };
  if (existsSync(join(layout, 'index.json'))) index = await readIndex(layout);
  index.manifests = index.manifests.filter((d) => refName(d) !== tag);
  index.manifests.push({
    ...desc,
    annotations: { ...desc.annotations, 'org.opencontainers.image.ref.name': tag },
  });
  await writeFile(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await writeFile(join(layout, 'index.json'), JSON.stringify(index));
}

/** The manifest (and its config) that `tag` names in a layout. */
export async function readLayoutManifest(
  layoutDir: string,
  tag: string,
): Promise<{ digest: string; manifest: LayoutManifest; config: LayoutConfig }> {
  const index = await readIndex(layoutDir);
  const desc = index.manifests.find((d) => refName(d) === tag);
  if (desc === undefined) throw new Error(`${layoutDir} has no image tagged ${tag}`);
  if (desc.mediaType !== MEDIA_OCI_MANIFEST) throw new Error(`${layoutDir}:${tag} is ${desc.mediaType}`);
  const manifest = JSON.parse(await readFile(blobPath(layoutDir, desc.digest), 'utf8')) as LayoutManifest;
  const config = JSON.parse(
    await readFile(blobPath(layoutDir, manifest.config.digest), 'utf8'),
  ) as LayoutConfig;
  return { digest: desc.digest, manifest, config };
}

// ---------------------------------------------------------------------------------------------
// Recompression of a layout's layers (umoci writes gzip only)

function compressionOf(mediaType: string): 'gzip' | 'zstd' | 'none' {
  if (mediaType.endsWith('+gzip') || mediaType.endsWith('.tar.gzip')) return 'gzip';
  if (mediaType.endsWith('+zstd') || mediaType.endsWith('.tar.zstd')) return 'zstd';
  return 'none';
}

const DECOMPRESS: Record<'gzip' | 'zstd' | 'none', string> = {
  gzip: 'gzip -dc "$1"',
  zstd: 'zstd -q -dc "$1"',
  none: 'cat "$1"',
};
const COMPRESS: Record<'gzip' | 'zstd' | 'none', string> = {
  gzip: 'gzip -n -6 -c',
  zstd: 'zstd -q -3 -c',
  none: 'cat',
};

/**
 * Rewrite the layers of `tag` with another compression (diff_ids stay, since the tars do not
 * change), write the new manifest and point the tag at it.
 */
async function recompressLayout(layout: string, tag: string, compression: LayerCompression): Promise<void> {
  const { manifest } = await readLayoutManifest(layout, tag);
  const work = processTempDir('recompress');
  const layers: LayoutDescriptor[] = [];
  for (const [i, layer] of manifest.layers.entries()) {
    const want = compression === 'mixed' ? (['gzip', 'zstd', 'none'] as const)[i % 3]! : compression;
    const have = compressionOf(layer.mediaType);
    if (have === want) {
      layers.push(layer);
      continue;
    }
    const out = join(work, `layer-${i}`);
    await tool('bash', [
      '-c',
      `set -o pipefail; ${DECOMPRESS[have]} | ${COMPRESS[want]} > "$2"`,
      'bash',
      blobPath(layout, layer.digest),
      out,
    ]);
    const d = await adoptBlob(layout, out);
    layers.push({ mediaType: LAYER_MEDIA[want], digest: d.digest, size: d.size });
  }
  const m = await writeJsonBlob(layout, { ...manifest, layers });
  await setTag(layout, tag, { mediaType: MEDIA_OCI_MANIFEST, ...m });
  await rm(work, { recursive: true, force: true });
}

// ---------------------------------------------------------------------------------------------
// busybox

const BUSYBOX = '/bin/busybox';
const APPLETS = [
  'sh',
  'ls',
  'cat',
  'echo',
  'true',
  'false',
  'test',
  'mkdir',
  'rm',
  'cp',
  'mv',
  'ln',
  'head',
  'tail',
  'wc',
  'find',
  'stat',
  'id',
  'uname',
  'sleep',
  'env',
  'grep',
  'sed',
  'md5sum',
  'sha256sum',
  'readlink',
  'getfattr',
];

async function addBusybox(rootfs: string): Promise<void> {
  await mkdir(join(rootfs, 'bin'), { recursive: true });
  await copyFile(BUSYBOX, join(rootfs, 'bin', 'busybox'));
  await chmod(join(rootfs, 'bin', 'busybox'), 0o755);
  for (const a of APPLETS) await symlink('busybox', join(rootfs, 'bin', a));
}

async function newImage(layout: string, tag: string): Promise<void> {
  if (!existsSync(join(layout, 'index.json'))) {
    await mkdir(dirname(layout), { recursive: true });
    await tool('umoci', ['init', '--layout', layout]);
  }
  await tool('umoci', ['new', '--image', imageArg(layout, tag)]);
}

async function unpackBundle(layout: string, tag: string, bundle: string): Promise<string> {
  await rm(bundle, { recursive: true, force: true });
  await tool('umoci', ['unpack', ...ROOTLESS, '--image', imageArg(layout, tag), bundle]);
  return join(bundle, 'rootfs');
}

async function repack(layout: string, tag: string, bundle: string, comment: string): Promise<void> {
  await tool('umoci', [
    'repack',
    ...ROOTLESS,
    '--refresh-bundle',
    '--history.created_by',
    comment,
    '--image',
    imageArg(layout, tag),
    bundle,
  ]);
}

async function finishImage(layout: string, tag: string): Promise<void> {
  await tool('umoci', ['config', '--image', imageArg(layout, tag), '--config.cmd', '/bin/sh']);
  await tool('umoci', ['gc', '--layout', layout]);
}

function layoutDir(dir: string | undefined, name: string): string {
  return dir === undefined ? join(processTempDir(name), 'layout') : resolve(dir);
}

const cache = new Map<string, Promise<unknown>>();
function cached<T>(key: string, make: () => Promise<T>): Promise<T> {
  let p = cache.get(key) as Promise<T> | undefined;
  if (p === undefined) {
    p = make();
    cache.set(key, p);
    // A failed build is not cached: the next caller tries again.
    p.catch(() => cache.delete(key));
  }
  return p;
}

/**
 * An OCI image layout holding one image of one layer: /bin/busybox (busybox-static) with
 * symlinks for its common applets (sh, ls, cat, echo, ...), /etc/passwd, /tmp; config cmd
 * /bin/sh. Tag `latest`. Without `dir` the layout is made once per process.
 */
export function makeBusyboxLayout(dir?: string): Promise<OciLayout> {
  const make = async (): Promise<OciLayout> => {
    const layout = layoutDir(dir, 'busybox');
    const tag = 'latest';
    await newImage(layout, tag);
    const work = processTempDir('busybox-bundle');
    const rootfs = await unpackBundle(layout, tag, join(work, 'bundle'));
    await addBusybox(rootfs);
    await mkdir(join(rootfs, 'etc'));
    await writeFile(join(rootfs, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
    await writeFile(join(rootfs, 'etc', 'group'), 'root:x:0:\n');
    await mkdir(join(rootfs, 'tmp'));
    await chmod(join(rootfs, 'tmp'), 0o1777);
    await repack(layout, tag, join(work, 'bundle'), 'busybox-static');
    await finishImage(layout, tag);
    await rm(work, { recursive: true, force: true });
    return { dir: layout, tag, ref: `oci:${layout}:${tag}` };
  };
  return dir === undefined ? cached('busybox', make) : make();
}

// ---------------------------------------------------------------------------------------------
// The layered image

export interface LayeredOptions {
  /**
   * A rootfs (e.g. `debianRootfs(t)`) split into the first two layers: usr/, then everything
   * else; the small tree's layers go on top, with changes to the rootfs in them too.
   */
  rootfs?: string;
  /** Layer compression (default gzip). zstd and mixed need the zstd CLI: see zstdAvailable(). */
  compression?: LayerCompression;
  /** Tag of the image in the layout (default `latest`). */
  tag?: string;
}

export interface LayeredLayout extends OciLayout {
  compression: LayerCompression;
  /** One line per layer, what it holds, in order. */
  layerNotes: string[];
}

/** Size of data/big.bin: crosses several 1 MiB chunk boundaries and ends mid-chunk. */
export const BIG_FILE_SIZE = 3 * 1024 * 1024 + 12_345;

function bigContent(seed: number): Buffer {
  const rnd = prng(seed);
  const buf = Buffer.alloc(BIG_FILE_SIZE);
  const block = 64 * 1024;
  for (let off = 0; off < buf.length; off += block) {
    const end = Math.min(buf.length, off + block);
    if ((off / block) % 2 === 0) {
      for (let i = off; i < end; i++) buf[i] = Math.floor(rnd() * 256);
    } else {
      buf.write(
        `compressible block at ${off} `.repeat(Math.ceil((end - off) / 24)),
        off,
        end - off,
        'latin1',
      );
    }
  }
  return buf;
}

function setX(path: string, name: string, value: string | Buffer): void {
  setAttributeSync(path, name, value);
}

/** Layer: the base of the small tree (see makeLayeredLayout for the list). */
async function writeBaseTree(r: string, withBusybox: boolean): Promise<void> {
  if (withBusybox) {
    await addBusybox(r);
    await mkdir(join(r, 'etc'), { recursive: true });
    await writeFile(join(r, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  }
  const p = (...parts: string[]): string => join(r, ...parts);
  await mkdir(p('data', 'delete-dir', 'sub'), { recursive: true });
  await writeFile(p('data', 'big.bin'), bigContent(9));
  await link(p('data', 'big.bin'), p('data', 'big-hardlink.bin'));
  await writeFile(p('data', 'keep.txt'), 'kept through every layer\n');
  await writeFile(p('data', 'replace-me.txt'), 'version 1\n');
  await writeFile(p('data', 'delete-me.txt'), 'deleted in layer 2\n');
  await writeFile(p('data', 'resurrect.txt'), 'deleted in layer 2, back in layer 4\n');
  await writeFile(p('data', 'delete-dir', 'a.txt'), 'a\n');
  await writeFile(p('data', 'delete-dir', 'sub', 'b.txt'), 'b\n');
  await writeFile(p('data', 'empty'), '');
  await utimes(p('data', 'keep.txt'), 1_000_000_000, 1_000_000_000);

  await mkdir(p('links'));
  await symlink('/data/keep.txt', p('links', 'absolute'));
  await symlink('../data/keep.txt', p('links', 'relative'));
  await symlink('../data', p('links', 'to-dir'));
  await symlink('/does/not/exist', p('links', 'dangling'));
  await writeFile(p('links', 'hard-a'), 'hardlinked pair\n');
  await link(p('links', 'hard-a'), p('links', 'hard-b'));

  await mkdir(p('meta', 'owned-dir'), { recursive: true });
  await writeFile(p('meta', 'suid'), '#!/bin/sh\necho setuid\n');
  await chmod(p('meta', 'suid'), 0o4755);
  await writeFile(p('meta', 'sgid'), 'setgid\n');
  await chmod(p('meta', 'sgid'), 0o2711);
  await mkdir(p('meta', 'sticky'));
  await chmod(p('meta', 'sticky'), 0o1777);
  await writeFile(p('meta', 'owned'), 'owned by 1000:1000, mode 0640\n');
  await chmod(p('meta', 'owned'), 0o640);
  await writeFile(p('meta', 'owned-dir', 'inner'), 'owned by 1001:1002\n');
  await writeFile(p('meta', 'xattr-file'), 'has user xattrs\n');
  setX(p('meta', 'xattr-file'), 'user.foo', 'bar');
  setX(p('meta', 'xattr-file'), 'user.empty', '');
  setX(p('meta', 'xattr-file'), 'user.binary', Buffer.from([0, 1, 2, 0xff, 0xfe]));
  setX(p('meta', 'owned-dir'), 'user.dir', 'on a directory');
  if (IS_ROOT) {
    await chown(p('meta', 'owned'), 1000, 1000);
    await chown(p('meta', 'owned-dir'), 1001, 1002);
    await chown(p('meta', 'owned-dir', 'inner'), 1001, 1002);
    await chmod(p('meta', 'owned-dir'), 0o750);
    await tool('mknod', [p('meta', 'null'), 'c', '1', '3']);
    await tool('mkfifo', [p('meta', 'fifo')]);
  }

  await mkdir(p('opaque', 'sub'), { recursive: true });
  await writeFile(p('opaque', 'old-1.txt'), 'hidden by the opaque dir of layer 3\n');
  await writeFile(p('opaque', 'sub', 'old-2.txt'), 'hidden too\n');

  await mkdir(p('types', 'dir-to-file', 'child'), { recursive: true });
  await writeFile(p('types', 'dir-to-file', 'child', 'f'), 'gone when the dir becomes a file\n');
  await writeFile(p('types', 'file-to-dir'), 'a file in layer 1\n');
  await symlink('../data/keep.txt', p('types', 'link-to-file'));

  await mkdir(p('emptydir'));
}

/** Layer: whiteouts (file, dir), a replaced file, type changes, xattr change, hardlink broken. */
async function changeTreeLayer2(r: string, onRootfs: boolean): Promise<void> {
  const p = (...parts: string[]): string => join(r, ...parts);
  await rm(p('data', 'delete-me.txt'));
  await rm(p('data', 'delete-dir'), { recursive: true });
  await rm(p('data', 'resurrect.txt'));
  await writeFile(p('data', 'replace-me.txt'), 'version 2, replaced in layer 2 (longer than before)\n');
  await chmod(p('data', 'replace-me.txt'), 0o600);
  await writeFile(p('data', 'new-in-layer-2.txt'), 'new\n');
  await rm(p('types', 'file-to-dir'));
  await mkdir(p('types', 'file-to-dir'));
  await writeFile(p('types', 'file-to-dir', 'child'), 'was a file in layer 1\n');
  await rm(p('types', 'dir-to-file'), { recursive: true });
  await writeFile(p('types', 'dir-to-file'), 'was a directory in layer 1\n');
  await rm(p('types', 'link-to-file'));
  await writeFile(p('types', 'link-to-file'), 'was a symlink in layer 1\n');
  setX(p('meta', 'xattr-file'), 'user.foo', 'changed in layer 2');
  removeAttributeSync(p('meta', 'xattr-file'), 'user.empty');
  await rm(p('links', 'hard-b'));
  if (onRootfs) {
    for (const gone of ['usr/share/doc', 'usr/share/man', 'etc/motd']) {
      await rm(join(r, gone), { recursive: true, force: true });
    }
    if (existsSync(p('etc', 'debian_version'))) await writeFile(p('etc', 'debian_version'), 'replaced\n');
  }
}

/** Copy a directory's owner, mode and times onto another (for parents in a hand-made layer). */
async function copyDirMeta(from: string, to: string): Promise<void> {
  const st = await lstat(from);
  await chmod(to, st.mode & 0o7777);
  if (IS_ROOT) await chown(to, st.uid, st.gid);
  await utimes(to, st.atime, st.mtime);
}

/**
 * Layer: opaque directories, written by hand with GNU tar (umoci's diffs never produce one)
 * and appended with `umoci raw add-layer`. The `.wh..wh..opq` marker sorts first in its dir.
 */
async function addOpaqueLayer(
  layout: string,
  tag: string,
  bundleRootfs: string,
  onRootfs: boolean,
): Promise<void> {
  const work = processTempDir('opaque-layer');
  const staging = join(work, 'tree');
  const dirs = ['opaque'];
  if (onRootfs && existsSync(join(bundleRootfs, 'usr', 'share', 'common-licenses'))) {
    dirs.push('usr/share/common-licenses');
  }
  for (const d of dirs) {
    await mkdir(join(staging, d), { recursive: true });
    await writeFile(join(staging, d, '.wh..wh..opq'), '');
    await writeFile(join(staging, d, 'new-in-layer-3.txt'), `only entry of ${d} from layer 3 on\n`);
  }
  await mkdir(join(staging, 'opaque', 'sub'));
  await writeFile(join(staging, 'opaque', 'sub', 'new-2.txt'), 'a new sub/ after the opaque marker\n');
  // Parent directories carry the metadata they have below, so only the opaque dirs change.
  for (const d of dirs) {
    const parts = d.split('/');
    for (let i = 1; i <= parts.length; i++) {
      const rel = parts.slice(0, i).join('/');
      await copyDirMeta(join(bundleRootfs, rel), join(staging, rel));
    }
  }
  const tarFile = join(work, 'layer.tar');
  const tops = [...new Set(dirs.map((d) => d.split('/')[0]!))].sort();
  await tool('tar', [
    '--format=pax',
    '--sort=name',
    '--numeric-owner',
    '--xattrs',
    '--xattrs-include=user.*',
    '-C',
    staging,
    '-cf',
    tarFile,
    ...tops,
  ]);
  await tool('umoci', [
    'raw',
    'add-layer',
    '--history.created_by',
    'layer 3: opaque directories (hand-written tar)',
    '--image',
    imageArg(layout, tag),
    tarFile,
  ]);
  await rm(work, { recursive: true, force: true });
}

/** Layer: a file back after its whiteout, owner change, a big file changed mid-file, more. */
async function changeTreeLayer4(r: string): Promise<void> {
  const p = (...parts: string[]): string => join(r, ...parts);
  await writeFile(p('data', 'resurrect.txt'), 'back in layer 4 with new content\n');
  if (IS_ROOT) await chown(p('meta', 'owned'), 2000, 2001);
  // Change 8 KiB across the first 1 MiB boundary: the whole file (and its hardlink) is in this layer.
  const fh = await open(p('data', 'big.bin'), 'r+');
  try {
    await fh.write(Buffer.alloc(8192, 0x5a), 0, 8192, 1024 * 1024 - 4096);
  } finally {
    await fh.close();
  }
  await link(p('data', 'keep.txt'), p('links', 'hard-to-lower'));
  await mkdir(p('emptydir-layer-4'));
  await writeFile(p('opaque', 'new-in-layer-4.txt'), 'added above the opaque layer\n');
}

/**
 * A multi-layer image (tag `latest` unless `opts.tag`) in an OCI layout, built with umoci
 * (whiteouts from bundle diffs) plus one hand-written tar for the opaque directories:
 *
 * - [rootfs only] usr/ of the rootfs; then everything else of the rootfs.
 * - layer 1: /bin/busybox + applets (without a rootfs); data/big.bin (BIG_FILE_SIZE bytes) and its
 *   hardlink data/big-hardlink.bin; data/{keep,replace-me,delete-me,resurrect}.txt, data/empty
 *   (0 bytes), data/delete-dir/{a.txt,sub/b.txt}; links/{absolute,relative,to-dir,dangling}
 *   symlinks, links/hard-a + hard-b (hardlinks); meta/suid (4755), meta/sgid (2711),
 *   meta/sticky/ (1777), meta/owned (1000:1000 0640), meta/owned-dir/ (1001:1002 0750, user.dir
 *   xattr) with inner, meta/xattr-file (user.foo, user.empty = "", user.binary), meta/null (char
 *   1,3) and meta/fifo; opaque/{old-1.txt,sub/old-2.txt}; types/{dir-to-file/,file-to-dir,
 *   link-to-file}; emptydir/.
 * - layer 2: whiteouts of data/delete-me.txt, data/resurrect.txt and the dir data/delete-dir;
 *   data/replace-me.txt replaced (mode 0600); types/* change type; meta/xattr-file's xattrs
 *   change (user.empty removed); links/hard-b whited out (hard-a is left with nlink 1); with a
 *   rootfs: usr/share/doc, usr/share/man, etc/motd whited out, etc/debian_version replaced.
 * - layer 3 (hand tar): opaque/.wh..wh..opq with opaque/new-in-layer-3.txt and
 *   opaque/sub/new-2.txt; with a rootfs also usr/share/common-licenses/ made opaque.
 * - layer 4: data/resurrect.txt back, meta/owned now 2000:2001, data/big.bin changed across the
 *   1 MiB boundary (with its hardlink), links/hard-to-lower a new hardlink to the lower
 *   data/keep.txt, emptydir-layer-4/, opaque/new-in-layer-4.txt.
 *
 * Config cmd /bin/sh. Without `dir` the layout is made once per process per option set, and the
 * zstd/none/mixed variants are recompressed copies of the gzip one (the same tars: same diff_ids,
 * same expected tree). umoci's manifests have no `mediaType` field (it is optional in OCI).
 * Needs root (owners, device nodes); zstd and mixed need the zstd CLI.
 */
export function makeLayeredLayout(dir?: string, opts: LayeredOptions = {}): Promise<LayeredLayout> {
  const compression = opts.compression ?? 'gzip';
  const tag = opts.tag ?? 'latest';
  if (dir === undefined && compression !== 'gzip') {
    // Variants of the shared gzip build: the same tars (same diff_ids, same expected tree).
    return cached(`layered:${compression}:${tag}:${opts.rootfs ?? ''}`, async () => {
      if (!(await zstdAvailable()) && compression !== 'none') {
        throw new Error('the zstd CLI is not installed (apt-get install zstd)');
      }
      const base = await makeLayeredLayout(undefined, { ...opts, compression: 'gzip' });
      const layout = join(processTempDir(`layered-${compression}`), 'layout');
      await tool('cp', ['-a', base.dir, layout]);
      await recompressLayout(layout, tag, compression);
      await tool('umoci', ['gc', '--layout', layout]);
      return { ...base, dir: layout, ref: `oci:${layout}:${tag}`, compression };
    });
  }
  const make = async (): Promise<LayeredLayout> => {
    if (!IS_ROOT) throw new Error('makeLayeredLayout needs root (owners, device nodes)');
    if ((compression === 'zstd' || compression === 'mixed') && !(await zstdAvailable())) {
      throw new Error('the zstd CLI is not installed (apt-get install zstd)');
    }
    const layout = layoutDir(dir, 'layered');
    const notes: string[] = [];
    await newImage(layout, tag);
    const work = processTempDir('layered-bundle');
    const bundle = join(work, 'bundle');
    let r = await unpackBundle(layout, tag, bundle);
    if (opts.rootfs !== undefined) {
      const src = resolve(opts.rootfs);
      await tool('cp', ['-a', join(src, 'usr'), r]);
      await repack(layout, tag, bundle, 'rootfs usr/');
      notes.push(`rootfs usr/ of ${src}`);
      const rest = (await readdir(src)).filter((n) => n !== 'usr');
      if (rest.length > 0) await tool('cp', ['-a', ...rest.map((n) => join(src, n)), r]);
      await copyDirMeta(src, r);
      await repack(layout, tag, bundle, 'rootfs without usr/');
      notes.push('rootfs: everything but usr/');
    }
    await writeBaseTree(r, opts.rootfs === undefined);
    await repack(layout, tag, bundle, 'layer 1: base tree');
    notes.push(
      'base tree: big file + hardlink, symlinks, hardlinks, suid/sgid/sticky, owners, xattrs, devices',
    );
    await changeTreeLayer2(r, opts.rootfs !== undefined);
    await repack(layout, tag, bundle, 'layer 2: whiteouts, replaced files, type changes');
    notes.push('whiteouts of files and a dir, replaced file, type changes, xattr change, hardlink broken');
    await addOpaqueLayer(layout, tag, r, opts.rootfs !== undefined);
    notes.push('opaque directories (hand-written tar, .wh..wh..opq)');
    r = await unpackBundle(layout, tag, bundle);
    await changeTreeLayer4(r);
    await repack(layout, tag, bundle, 'layer 4: resurrected file, chown, big file changed');
    notes.push('file back after its whiteout, chown, big file changed mid-file, hardlink to a lower file');
    await finishImage(layout, tag);
    await rm(work, { recursive: true, force: true });
    if (compression !== 'gzip') {
      await recompressLayout(layout, tag, compression);
      await tool('umoci', ['gc', '--layout', layout]);
    }
    return { dir: layout, tag, ref: `oci:${layout}:${tag}`, compression, layerNotes: notes };
  };
  if (dir !== undefined) return make();
  return cached(`layered:${compression}:${tag}:${opts.rootfs ?? ''}`, make);
}

// ---------------------------------------------------------------------------------------------
// Multi-platform index

/** The platforms of pushMultiPlatform's index, in its order. */
export const MULTI_PLATFORMS = [
  { os: 'linux', architecture: 'amd64' },
  { os: 'linux', architecture: 'arm64' },
] as const;

/**
 * An OCI layout whose tag names an image index of two single-layer images, linux/amd64 and
 * linux/arm64; each layer holds /platform with "linux/ARCH\n". Made once per process without `dir`.
 */
export function makeMultiPlatformLayout(dir?: string): Promise<OciLayout> {
  const make = async (): Promise<OciLayout> => {
    const layout = layoutDir(dir, 'multi');
    const tag = 'latest';
    const work = processTempDir('multi-work');
    const manifests: LayoutDescriptor[] = [];
    for (const platform of MULTI_PLATFORMS) {
      const staging = join(work, platform.architecture);
      await mkdir(staging, { recursive: true });
      await writeFile(join(staging, 'platform'), `${platform.os}/${platform.architecture}\n`);
      const tarFile = join(work, `${platform.architecture}.tar`);
      await tool('tar', [
        '--format=pax',
        '--sort=name',
        '--numeric-owner',
        '--owner=0',
        '--group=0',
        '--mtime=@1700000000',
        '-C',
        staging,
        '-cf',
        tarFile,
        'platform',
      ]);
      const diffId = (await sha256File(tarFile)).digest;
      await tool('sh', ['-c', 'gzip -n -c "$1" > "$1.gz"', 'sh', tarFile]);
      const layer = await adoptBlob(layout, `${tarFile}.gz`);
      const config = await writeJsonBlob(layout, {
        architecture: platform.architecture,
        os: platform.os,
        config: { Cmd: ['/bin/sh'] },
        rootfs: { type: 'layers', diff_ids: [diffId] },
        history: [{ created_by: `platform file for ${platform.architecture}` }],
      });
      const manifest = await writeJsonBlob(layout, {
        schemaVersion: 2,
        mediaType: MEDIA_OCI_MANIFEST,
        config: { mediaType: MEDIA_OCI_CONFIG, ...config },
        layers: [{ mediaType: MEDIA_LAYER_GZIP, ...layer }],
      });
      manifests.push({ mediaType: MEDIA_OCI_MANIFEST, ...manifest, platform: { ...platform } });
    }
    const index = await writeJsonBlob(layout, { schemaVersion: 2, mediaType: MEDIA_OCI_INDEX, manifests });
    await setTag(layout, tag, { mediaType: MEDIA_OCI_INDEX, ...index });
    await rm(work, { recursive: true, force: true });
    return { dir: layout, tag, ref: `oci:${layout}:${tag}` };
  };
  return dir === undefined ? cached('multi', make) : make();
}

// ---------------------------------------------------------------------------------------------
// Pushing with skopeo

export interface PushOptions {
  /** Manifest format in the registry: `oci` (the layout's own) or `v2s2` (Docker schema2). */
  format?: 'oci' | 'v2s2';
  /** Require HTTPS with verified certificates (default false: plain HTTP or unverified TLS). */
  tlsVerify?: boolean;
  /** `user:password` for the registry. */
  creds?: string;
  /** A CA certificate (PEM) to trust for the registry (with tlsVerify). */
  caFile?: string;
  /**
   * Push blobs and manifest byte for byte over HTTP (anonymous or Basic auth) instead of with
   * skopeo, which compresses uncompressed layers on the way to a registry. Default: true when
   * the image has an uncompressed layer and no `format` is asked for.
   */
  exact?: boolean;
}

export interface PushedImage {
  /** `HOST/REPO:TAG` as pushed. */
  ref: string;
  /** Digest of the manifest (or index) the registry holds for it. */
  digest: string;
}

async function skopeoCopy(src: string, dest: string, all: boolean, opts: PushOptions): Promise<string> {
  const work = processTempDir('skopeo');
  const args = ['--insecure-policy', 'copy', '--quiet', `--dest-tls-verify=${opts.tlsVerify === true}`];
  if (all) args.push('--all');
  if (opts.format !== undefined) args.push('--format', opts.format);
  if (opts.creds !== undefined) args.push('--dest-creds', opts.creds);
  else args.push('--dest-no-creds');
  if (opts.caFile !== undefined) {
    const certDir = join(work, 'certs');
    await mkdir(certDir);
    await copyFile(opts.caFile, join(certDir, 'ca.crt'));
    args.push('--dest-cert-dir', certDir);
  }
  const digestFile = join(work, 'digest');
  args.push('--digestfile', digestFile, src, dest);
  await tool('skopeo', args);
  const digest = (await readFile(digestFile, 'utf8')).trim();
  await rm(work, { recursive: true, force: true });
  return digest;
}

/**
 * Push `layoutDir:tag` to `registryHost/repoAndTag` with `skopeo copy` (format v2s2 gives a
 * Docker schema2 image). Returns the pushed reference and the manifest digest.
 */
export async function pushLayout(
  layoutDir: string,
  tag: string,
  registryHost: string,
  repoAndTag: string,
  opts: PushOptions = {},
): Promise<PushedImage> {
  const ref = `${registryHost}/${repoAndTag}`;
  let exact = opts.exact;
  if (exact === undefined) {
    const { manifest } = await readLayoutManifest(layoutDir, tag);
    exact = opts.format === undefined && manifest.layers.some((l) => compressionOf(l.mediaType) === 'none');
  }
  if (exact) return pushExact(layoutDir, tag, registryHost, repoAndTag, opts);
  const digest = await skopeoCopy(`oci:${layoutDir}:${tag}`, `docker://${ref}`, false, opts);
  return { ref, digest };
}

/** The distribution API by hand (plain HTTP or HTTPS; anonymous or Basic): blobs, then the manifest. */
async function pushExact(
  layoutDir: string,
  tag: string,
  registryHost: string,
  repoAndTag: string,
  opts: PushOptions,
): Promise<PushedImage> {
  const at = repoAndTag.lastIndexOf(':');
  if (at <= repoAndTag.lastIndexOf('/')) throw new Error(`${repoAndTag}: REPO:TAG expected`);
  const repo = repoAndTag.slice(0, at);
  const target = repoAndTag.slice(at + 1);
  const verify = opts.tlsVerify === true || opts.caFile !== undefined;
  const agent = new Agent({
    connect: {
      rejectUnauthorized: verify,
      ...(opts.caFile !== undefined ? { ca: await readFile(opts.caFile) } : {}),
    },
  });
  const headers: Record<string, string> = {};
  if (opts.creds !== undefined)
    headers['authorization'] = `Basic ${Buffer.from(opts.creds).toString('base64')}`;
  try {
    // HTTPS first; without verification a registry that only speaks HTTP is reached over HTTP.
    let base = `https://${registryHost}`;
    try {
      const r = await request(`${base}/v2/`, { dispatcher: agent, headers });
      await r.body.dump();
    } catch (e) {
      if (verify) throw e;
      base = `http://${registryHost}`;
    }
    const call = async (
      method: 'GET' | 'HEAD' | 'POST' | 'PUT',
      url: string,
      extra: { body?: Buffer | NodeJS.ReadableStream; headers?: Record<string, string> } = {},
    ): Promise<{ status: number; headers: Record<string, string | string[] | undefined> }> => {
      const r = await request(new URL(url, base), {
        method,
        dispatcher: agent,
        headers: { ...headers, ...extra.headers },
        ...(extra.body !== undefined ? { body: extra.body as Buffer } : {}),
      });
      const text = await r.body.text();
      if (r.statusCode >= 400) throw new Error(`${method} ${url}: HTTP ${r.statusCode} ${text}`);
      return { status: r.statusCode, headers: r.headers };
    };
    const pushBlob = async (d: LayoutDescriptor): Promise<void> => {
      const head = await request(new URL(`/v2/${repo}/blobs/${d.digest}`, base), {
        method: 'HEAD',
        dispatcher: agent,
        headers,
      });
      await head.body.dump();
      if (head.statusCode === 200) return;
      const started = await call('POST', `/v2/${repo}/blobs/uploads/`);
      const location = started.headers['location'];
      if (typeof location !== 'string') throw new Error(`upload to ${repo}: no Location`);
      const url = new URL(location, base);
      url.searchParams.set('digest', d.digest);
      await call('PUT', url.toString(), {
        body: createReadStream(blobPath(layoutDir, d.digest)),
        headers: { 'content-type': 'application/octet-stream', 'content-length': String(d.size) },
      });
    };
    const index = await readIndex(layoutDir);
    const desc = index.manifests.find((d) => refName(d) === tag);
    if (desc === undefined) throw new Error(`${layoutDir} has no image tagged ${tag}`);
    const bytes = await readFile(blobPath(layoutDir, desc.digest));
    const manifest = JSON.parse(bytes.toString('utf8')) as LayoutManifest;
    for (const d of [manifest.config, ...manifest.layers]) await pushBlob(d);
    await call('PUT', `/v2/${repo}/manifests/${target}`, {
      body: bytes,
      headers: { 'content-type': manifest.mediaType ?? desc.mediaType },
    });
    return { ref: `${registryHost}/${repoAndTag}`, digest: desc.digest };
  } finally {
    await agent.close();
  }
}

/**
 * Push a two-platform index (linux/amd64 and linux/arm64, see makeMultiPlatformLayout) with
 * `skopeo copy --all`, so the registry holds an index (a Docker manifest list with v2s2).
 */
export async function pushMultiPlatform(
  registryHost: string,
  repoAndTag: string,
  opts: PushOptions = {},
): Promise<
  PushedImage & { manifests: { platform: { os: string; architecture: string }; digest: string }[] }
> {
  const layout = await makeMultiPlatformLayout();
  const ref = `${registryHost}/${repoAndTag}`;
  const digest = await skopeoCopy(layout.ref, `docker://${ref}`, true, opts);
  const index = await readIndex(layout.dir);
  const top = index.manifests.find((d) => refName(d) === layout.tag)!;
  const inner = JSON.parse(await readFile(blobPath(layout.dir, top.digest), 'utf8')) as LayoutIndex;
  return {
    ref,
    digest,
    manifests: inner.manifests.map((d) => ({
      platform: { os: d.platform!.os, architecture: d.platform!.architecture },
      digest: d.digest,
    })),
  };
}

// ---------------------------------------------------------------------------------------------
// The reference tree

/**
 * The result of applying the image's layers in order, unpacked by `umoci raw unpack` (a real tool
 * applying whiteouts and opaque dirs); returns the rootfs path. Layers umoci cannot read (zstd)
 * are first recompressed to gzip in a private copy of the layout. Cached per process.
 */
export async function expectedTree(layoutDir: string, tag: string): Promise<string> {
  const { digest, manifest } = await readLayoutManifest(layoutDir, tag);
  return cached(`expected:${digest}`, async () => {
    const work = processTempDir('expected');
    let layout = resolve(layoutDir);
    if (manifest.layers.some((l) => compressionOf(l.mediaType) === 'zstd')) {
      const copy = join(work, 'layout');
      await tool('cp', ['-a', layout, copy]);
      await recompressLayout(copy, tag, 'gzip');
      layout = copy;
    }
    const rootfs = join(work, 'rootfs');
    await tool('umoci', ['raw', 'unpack', ...ROOTLESS, '--image', imageArg(layout, tag), rootfs]);
    if (layout !== resolve(layoutDir)) await rm(layout, { recursive: true, force: true });
    await stat(rootfs);
    return rootfs;
  });
}
