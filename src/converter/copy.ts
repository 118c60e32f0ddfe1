import { mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { isAbsolute, join, resolve } from 'node:path';
import { sha256Hex } from '../codec/digest.js';
import { NydusError } from '../errors/errors.js';
import type { Logger } from '../log/logger.js';
import { formatPlatform, type Descriptor, type Platform } from '../oci/manifest.js';
import { ANNOTATION_REF_NAME } from '../oci/media-types.js';
import { formatReference, referenceTagOrDigest, type Reference } from '../oci/reference.js';
import { resolveImage } from './convert.js';
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
  const remotes = o.remotes ?? new Remotes(o.log);
  await mkdir(o.workDir, { recursive: true });
  const tmp = await mkdtemp(join(o.workDir, 'nydusify-'));
  try {
    return await copyWith(o, remotes, tmp);
  } finally {
    await rm(tmp, { recursive: true, force: true });
    if (o.remotes === undefined) await remotes.close();
  }
}

async function copyWith(o: CopyOptions, remotes: Remotes, tmp: string): Promise<CopyResult> {
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
  for (const sel of res.selected) {
    for (const d of [sel.manifest.config, ...sel.manifest.layers]) await copyBlob(d);
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
    const whole = entries.length === res.index!.manifests.length;
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
