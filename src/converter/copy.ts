import { mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { isAbsolute, join, resolve } from 'node:path';
import { sha256Hex } from '../codec/digest.js';
import { NydusError } from '../errors/errors.js';
import type { Logger } from '../log/logger.js';
import { formatPlatform, type Descriptor, type Platform } from '../oci/manifest.js';
import { ANNOTATION_REF_NAME } from '../oci/media-types.js';
import { formatReference, referenceTagOrDigest, type Reference } from '../oci/reference.js';
import { parseBootstrap } from '../format/bootstrap.js';
import { parseImageConfig, type ImageManifest } from '../oci/manifest.js';
import type { ObjectStore } from '../storage/remote/s3.js';
import { extractBootstrapFromLayer, findBootstrapLayer, nydusBlobDescriptor } from './bootstrap-layer.js';
import { resolveImage } from './convert.js';
import { objectStream, openObjectStore, type ObjectStoreType } from './object-store.js';
import { jsonBlob, makeIndex } from './image.js';
import {
  ANNOTATION_CONTAINERD_IMAGE_NAME,
  OciLayoutRepo,
  packLayoutArchive,
  unpackLayoutArchive,
} from './oci-layout.js';
import { blobStreamOf, Remotes, type ImageRepo, type RemoteOptions } from './repo.js';

export interface CopyOptions {
  /** An image reference, or `file://PATH` (an OCI image layout tar archive). */
  source: string;
  target: string;
  sourceRemote?: RemoteOptions;
  targetRemote?: RemoteOptions;
  platforms?: readonly Platform[];
  allPlatforms?: boolean;
  /** Upload chunk size in bytes (0: the whole blob in one request). */
  pushChunkSize?: number;
  /** Scratch space for archives (a temporary directory in it is removed at the end). */
  workDir: string;
  log: Logger;
  remotes?: Remotes;
  /**
   * `--source-backend-type oss|s3`: the source Nydus image keeps its blobs in this object store
   * (its manifest lists the bootstrap layer only); they are pushed into the target registry and
   * listed in the target manifest and config, as upstream's copier does.
   */
  sourceBackend?: { type: ObjectStoreType; config: Record<string, unknown> } | undefined;
}

export interface CopyResult {
  /** What the target now names (the manifest or index digest). */
  digest: string;
  mediaType: string;
  manifests: number;
  blobs: { uploaded: number; mounted: number; exists: number };
}

/** `file://PATH` (relative or absolute) or undefined for a registry reference. */
export function localPathOf(ref: string, cwd = process.cwd()): string | undefined {
  if (!ref.startsWith('file://')) return undefined;
  const p = ref.slice('file://'.length);
  if (p === '') throw new NydusError('ERR_INVALID_ARG', `"${ref}" names no file`);
  return isAbsolute(p) ? p : resolve(cwd, p);
}

interface Side {
  repo: ImageRepo;
  ref: Reference | undefined;
  text: string;
  /** Tag or digest to read or write. */
  name: string | undefined;
}

/**
 * `nydusify copy`: copy an image (OCI or Nydus; the platforms asked for, or all) between
 * registries, or from/to an OCI image layout archive (`file://`). Blobs the target has are
 * skipped; blobs on the same registry are mounted across repositories; manifests go last and
 * the index after them.
 */
export async function copyImage(o: CopyOptions): Promise<CopyResult> {
  const store =
    o.sourceBackend !== undefined
      ? openObjectStore(o.sourceBackend.type, o.sourceBackend.config, o.log)
      : undefined;
  const remotes = o.remotes ?? new Remotes(o.log);
  await mkdir(o.workDir, { recursive: true });
  const tmp = await mkdtemp(join(o.workDir, 'nydusify-'));
  try {
    return await copyWith(o, remotes, tmp, store);
  } finally {
    await rm(tmp, { recursive: true, force: true });
    await store?.close();
    if (o.remotes === undefined) await remotes.close();
  }
}

/**
 * A Nydus manifest whose blobs live in `store`: every blob of its bootstrap that is not a layer
 * yet is pushed from the store into `dst` and put in front of the layers (and its digest in
 * front of the config's diff_ids). Undefined when `sel` is not a Nydus manifest.
 */
async function withBlobsFromStore(
  store: ObjectStore,
  src: ImageRepo,
  dst: ImageRepo,
  sel: { manifest: ImageManifest; mediaType: string },
  counts: CopyResult['blobs'],
  log: Logger,
): Promise<{ manifest: ImageManifest; bytes: Buffer; digest: string } | undefined> {
  const bl = findBootstrapLayer(sel.manifest);
  if (bl === undefined) return undefined;
  const boot = parseBootstrap(await extractBootstrapFromLayer(await src.fetchBlob(bl.digest)));
  const have = new Set(sel.manifest.layers.map((l) => l.digest));
  const ids = [...new Set(boot.blobs.map((b) => b.blobId))].filter((id) => !have.has(`sha256:${id}`));
  const descs: Descriptor[] = [];
  for (const id of ids) {
    const size = await store.size(id);
    if (size === undefined)
      throw new NydusError('ERR_NOT_FOUND', `Blob ${id} of the bootstrap is not in ${store.protocol.where}`);
    const digest = `sha256:${id}`;
    log.info(`Pushing blob ${digest} (${size} bytes) from ${store.protocol.where}`);
    const how = await dst.pushBlob(digest, size, () => objectStream(store, id));
    counts[how]++;
    descs.push(nydusBlobDescriptor(digest, size));
  }
  const config = parseImageConfig(await src.fetchBlob(sel.manifest.config.digest));
  const diffIds = [...descs.map((d) => d.digest), ...(config.rootfs?.diff_ids ?? [])];
  const newConfig = { ...config, rootfs: { ...config.rootfs, type: 'layers', diff_ids: diffIds } };
  const cfg = jsonBlob(newConfig, sel.manifest.config.mediaType);
  const how = await dst.pushBlob(cfg.descriptor.digest, cfg.descriptor.size, cfg.bytes);
  counts[how]++;
  const manifest: ImageManifest = {
    ...sel.manifest,
    config: { ...sel.manifest.config, digest: cfg.descriptor.digest, size: cfg.descriptor.size },
    layers: [...descs, ...sel.manifest.layers],
  };
  const m = jsonBlob(manifest, sel.mediaType);
  return { manifest, bytes: m.bytes, digest: m.descriptor.digest };
}

async function copyWith(
  o: CopyOptions,
  remotes: Remotes,
  tmp: string,
  store: ObjectStore | undefined,
): Promise<CopyResult> {
  const log = o.log;
  const srcFile = localPathOf(o.source);
  const dstFile = localPathOf(o.target);
  let src: Side;
  if (srcFile !== undefined) {
    await stat(srcFile).catch(() => {
      throw new NydusError('ERR_NOT_FOUND', `Source archive "${srcFile}" does not exist`);
    });
    log.info(`Importing source image from ${srcFile}`);
    const dir = join(tmp, 'source');
    await unpackLayoutArchive(srcFile, dir);
    const layout = new OciLayoutRepo(dir, o.source);
    const entry = await layout.lookup(undefined);
    const name =
      entry.annotations?.[ANNOTATION_CONTAINERD_IMAGE_NAME] ?? entry.annotations?.[ANNOTATION_REF_NAME];
    src = { repo: layout, ref: undefined, text: name ?? o.source, name: entry.digest };
  } else {
    const s = remotes.open(o.source, o.sourceRemote);
    src = { repo: s.repo, ref: s.ref, text: formatReference(s.ref), name: referenceTagOrDigest(s.ref) };
    log.info(`Pulling source image ${src.text}`);
  }
  let dst: Side;
  let dstLayout: OciLayoutRepo | undefined;
  if (dstFile !== undefined) {
    dstLayout = await new OciLayoutRepo(join(tmp, 'target'), o.target).init();
    dst = { repo: dstLayout, ref: undefined, text: o.target, name: undefined };
  } else {
    const t = remotes.open(o.target, o.targetRemote);
    if (t.ref.digest !== undefined && t.ref.tag === undefined)
      throw new NydusError('ERR_INVALID_ARG', `Target ${o.target} names a digest: give a tag`);
    dst = { repo: t.repo, ref: t.ref, text: formatReference(t.ref), name: referenceTagOrDigest(t.ref) };
  }

  const platforms = o.platforms !== undefined && o.platforms.length > 0 ? o.platforms : [];
  const res = await resolveImage(src.repo, src.text, src.name!, {
    platforms,
    all: o.allPlatforms === true || platforms.length === 0,
  });
  const counts = { uploaded: 0, mounted: 0, exists: 0 };
  const sameHost =
    src.ref !== undefined && dst.ref !== undefined && src.ref.host === dst.ref.host
      ? src.ref.repository
      : undefined;
  const chunk = o.pushChunkSize !== undefined && o.pushChunkSize > 0 ? { chunkSize: o.pushChunkSize } : {};
  const copyBlob = async (d: Descriptor): Promise<void> => {
    const how = await dst.repo.pushBlob(d.digest, d.size, () => blobStreamOf(src.repo, d.digest), {
      ...(sameHost !== undefined ? { mountFrom: sameHost } : {}),
      ...chunk,
    });
    counts[how]++;
    log.debug(`Blob ${d.digest}: ${how}`);
  };
  const entries: Descriptor[] = [];
  // An index goes to the target when the source is one and more than one manifest is copied
  // (upstream); otherwise the tag names the one manifest.
  const useIndex = res.index !== undefined && res.selected.length > 1;
  let rewritten = false;
  for (const orig of res.selected) {
    let sel = orig;
    for (const d of [sel.manifest.config, ...sel.manifest.layers]) await copyBlob(d);
    if (store !== undefined) {
      const w = await withBlobsFromStore(store, src.repo, dst.repo, sel, counts, log);
      if (w === undefined) log.warn(`${src.text} (${formatPlatform(sel.platform)}) is not a Nydus image`);
      else {
        rewritten = true;
        sel = {
          ...sel,
          manifest: w.manifest,
          bytes: w.bytes,
          descriptor: { ...sel.descriptor, digest: w.digest, size: w.bytes.length },
        };
      }
    }
    const where = useIndex || dstLayout !== undefined ? sel.descriptor.digest : dst.name!;
    log.info(`Pushing target manifest ${sel.descriptor.digest} (${formatPlatform(sel.platform)})`);
    await dst.repo.putManifest(where, sel.mediaType, sel.bytes);
    const entry: Descriptor = { ...sel.descriptor, mediaType: sel.mediaType };
    if (sel.platform !== undefined) entry.platform = sel.platform;
    entries.push(entry);
  }
  let top: Descriptor;
  if (useIndex) {
    // The source index itself when every entry was copied (its digest kept), else a new one.
    const whole = entries.length === res.index!.manifests.length && !rewritten;
    const made = makeIndex(entries, res.index, false);
    const bytes = whole ? res.top.bytes : jsonBlob(made.index, made.mediaType).bytes;
    const mediaType = whole ? res.top.mediaType : made.mediaType;
    const own = `sha256:${sha256Hex(bytes)}`;
    log.info('Pushing target manifest index');
    const digest = await dst.repo.putManifest(dstLayout === undefined ? dst.name! : own, mediaType, bytes);
    top = { mediaType, digest, size: bytes.length };
  } else {
    top = entries[0]!;
  }
  if (dstLayout !== undefined) {
    const tag = src.ref?.tag ?? 'latest';
    await dstLayout.tag(
      tag,
      { mediaType: top.mediaType, digest: top.digest, size: top.size },
      {
        [ANNOTATION_CONTAINERD_IMAGE_NAME]: src.ref !== undefined ? formatReference(src.ref) : src.text,
      },
    );
    log.info(`Exporting image to ${dstFile!}`);
    await packLayoutArchive(dstLayout.dir, dstFile!);
  }
  log.info(`Copied image ${src.text} to ${dst.text}`);
  return { digest: top.digest, mediaType: top.mediaType, manifests: entries.length, blobs: counts };
}
