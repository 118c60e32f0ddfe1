import { Readable } from 'node:stream';
import { gunzipSync, gzipSync } from 'node:zlib';
import { sha256Hex } from '../codec/digest.js';
import { FormatError, NydusError } from '../errors/errors.js';
import type { Descriptor, ImageManifest } from '../oci/manifest.js';
import {
  ANNOTATION_NYDUS_BLOB,
  ANNOTATION_NYDUS_BOOTSTRAP,
  ANNOTATION_NYDUS_FS_VERSION,
  ANNOTATION_UNCOMPRESSED,
  DOCKER_LAYER_GZIP,
  NYDUS_BLOB_LAYER,
  OCI_LAYER_GZIP,
} from '../oci/media-types.js';
import { BLOCK, encodeHeader, TarType } from '../tar/header.js';
import { relativeEntryName, TarReader } from '../tar/reader.js';

/** Where the bootstrap sits inside the bootstrap layer's tar. */
export const BOOTSTRAP_FILE_IN_LAYER = 'image/image.boot';
/** Largest bootstrap layer (compressed or not) this module reads into memory. */
export const MAX_BOOTSTRAP_LAYER_SIZE = 1 << 30;

export interface BootstrapLayer {
  /** The gzip'd tar, as pushed. */
  bytes: Buffer;
  /** The layer descriptor (annotations as upstream: bootstrap, fs version). */
  descriptor: Descriptor;
  /** "sha256:..." of the uncompressed tar: the layer's diff_id. */
  diffId: string;
}

function header(name: string, type: number, mode: number, size: number): Buffer {
  return encodeHeader({
    name: Buffer.from(name),
    mode,
    uid: 0,
    gid: 0,
    size,
    mtime: 0,
    type,
    linkname: Buffer.alloc(0),
    uname: Buffer.alloc(0),
    gname: Buffer.alloc(0),
    devmajor: 0,
    devminor: 0,
  }).block;
}

/**
 * The bootstrap layer's tar as upstream's converter packs it: a directory `image` (0755), then
 * `image/image.boot` (0444) and any extra files under `image/` (0444; v6 images carry one
 * `<blob id>.blob.meta` per data layer), owner 0, mtime 0, ended by two zero blocks.
 */
export function packBootstrapTar(
  bootstrap: Buffer,
  extra: readonly { name: string; data: Buffer }[] = [],
): Buffer {
  const parts: Buffer[] = [header('image', TarType.DIR, 0o755, 0)];
  for (const f of [{ name: 'image.boot', data: bootstrap }, ...extra]) {
    if (f.name.includes('/') || f.name === '' || Buffer.byteLength(`image/${f.name}`) > 100)
      throw new NydusError('ERR_INVALID_ARG', `Invalid bootstrap layer entry name "${f.name}"`);
    parts.push(header(`image/${f.name}`, TarType.FILE, 0o444, f.data.length), f.data);
    const pad = f.data.length % BLOCK;
    if (pad !== 0) parts.push(Buffer.alloc(BLOCK - pad));
  }
  parts.push(Buffer.alloc(BLOCK * 2));
  return Buffer.concat(parts);
}

/**
 * The bootstrap layer of a Nydus image: gzip'd tar, media type Docker gzip for Docker manifests
 * and OCI gzip for OCI ones, annotations `nydus-bootstrap: "true"`, `nydus-fs-version` and (while
 * converting: upstream removes it from the final manifest) `containerd.io/uncompressed`.
 */
export function makeBootstrapLayer(
  bootstrap: Buffer,
  o: { fsVersion: 5 | 6; oci: boolean; blobMetas?: readonly { name: string; data: Buffer }[] },
): BootstrapLayer {
  const tar = packBootstrapTar(bootstrap, o.blobMetas ?? []);
  const bytes = gzipSync(tar);
  const diffId = `sha256:${sha256Hex(tar)}`;
  return {
    bytes,
    diffId,
    descriptor: {
      mediaType: o.oci ? OCI_LAYER_GZIP : DOCKER_LAYER_GZIP,
      digest: `sha256:${sha256Hex(bytes)}`,
      size: bytes.length,
      annotations: {
        [ANNOTATION_UNCOMPRESSED]: diffId,
        [ANNOTATION_NYDUS_FS_VERSION]: String(o.fsVersion),
        [ANNOTATION_NYDUS_BOOTSTRAP]: 'true',
      },
    },
  };
}

/** A Nydus data blob layer descriptor (`containerd.io/uncompressed` only while converting). */
export function nydusBlobDescriptor(digest: string, size: number, withUncompressed = false): Descriptor {
  return {
    mediaType: NYDUS_BLOB_LAYER,
    digest,
    size,
    annotations: {
      ...(withUncompressed ? { [ANNOTATION_UNCOMPRESSED]: digest } : {}),
      [ANNOTATION_NYDUS_BLOB]: 'true',
    },
  };
}

/** The bootstrap layer of a manifest: its last layer when that carries the bootstrap annotation. */
export function findBootstrapLayer(manifest: ImageManifest): Descriptor | undefined {
  const last = manifest.layers[manifest.layers.length - 1];
  return last?.annotations?.[ANNOTATION_NYDUS_BOOTSTRAP] === 'true' ? last : undefined;
}

/** Is this a Nydus image manifest (upstream's rule: the last layer is a bootstrap layer)? */
export function isNydusManifest(manifest: ImageManifest): boolean {
  return findBootstrapLayer(manifest) !== undefined;
}

/** The data blob layers of a Nydus manifest (media type and annotation as upstream checks them). */
export function nydusBlobLayers(manifest: ImageManifest): Descriptor[] {
  return manifest.layers.filter(
    (l) => l.mediaType === NYDUS_BLOB_LAYER || l.annotations?.[ANNOTATION_NYDUS_BLOB] === 'true',
  );
}

/**
 * The files of a bootstrap layer (gzip'd or plain tar) by path, `image/image.boot` included.
 * Paths are normalized (no leading "./" or "/").
 */
export async function readBootstrapLayerFiles(layer: Buffer): Promise<Map<string, Buffer>> {
  let tar = layer;
  if (layer.length >= 2 && layer[0] === 0x1f && layer[1] === 0x8b) {
    try {
      tar = gunzipSync(layer, { maxOutputLength: MAX_BOOTSTRAP_LAYER_SIZE });
    } catch (e) {
      throw new FormatError(`Bootstrap layer is not valid gzip: ${(e as Error).message}`, undefined, {
        cause: e,
      });
    }
  }
  const reader = new TarReader(Readable.from([tar]));
  const files = new Map<string, Buffer>();
  for (let e = await reader.next(); e !== undefined; e = await reader.next()) {
    const name = relativeEntryName(e.path);
    if (e.type !== TarType.FILE && e.type !== TarType.OLD_FILE) continue;
    const parts: Buffer[] = [];
    for await (const c of reader.data()) parts.push(c);
    files.set(name, Buffer.concat(parts));
  }
  return files;
}

/**
 * The RAFS bootstrap inside a bootstrap layer: `image/image.boot` (the snapshotter also accepts
 * `image.boot` at the top). ERR_FORMAT when the layer has neither.
 */
export async function extractBootstrapFromLayer(layer: Buffer): Promise<Buffer> {
  const files = await readBootstrapLayerFiles(layer);
  const boot = files.get(BOOTSTRAP_FILE_IN_LAYER) ?? files.get('image.boot');
  if (boot === undefined) throw new FormatError(`Bootstrap layer has no ${BOOTSTRAP_FILE_IN_LAYER}`);
  return boot;
}

/**
 * The bootstrap of a Nydus image in a registry: fetch its bootstrap layer (digest-verified) and
 * take `image/image.boot` out of it. ERR_INVALID_ARG when the manifest is not a Nydus image.
 */
export async function fetchNydusBootstrap(
  repo: { fetchBlob(digest: string): Promise<Buffer> },
  manifest: ImageManifest,
): Promise<Buffer> {
  const layer = findBootstrapLayer(manifest);
  if (layer === undefined)
    throw new NydusError('ERR_INVALID_ARG', 'Not a Nydus image: its last layer is not a bootstrap layer');
  if (layer.size > MAX_BOOTSTRAP_LAYER_SIZE)
    throw new FormatError(`Bootstrap layer ${layer.digest} is too large (${layer.size} bytes)`);
  return extractBootstrapFromLayer(await repo.fetchBlob(layer.digest));
}
