import { mkdir, rename, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { errorText, NydusError } from '../errors/errors.js';
import {
  formatPlatform,
  parseManifestOrIndex,
  platformMatches,
  type Descriptor,
  type ImageIndex,
  type ImageManifest,
  type Platform,
} from '../oci/manifest.js';
import { NYDUS_ARTIFACT_TYPE, NYDUS_OS_FEATURE } from '../oci/media-types.js';
import type { Repository } from '../registry/client.js';
import {
  BOOTSTRAP_FILE_IN_LAYER,
  MAX_BOOTSTRAP_LAYER_SIZE,
  readBootstrapLayerFiles,
} from './bootstrap-layer.js';

/** One platform's Nydus image manifest in a registry. */
export interface NydusManifest {
  manifest: ImageManifest;
  digest: string;
  mediaType: string;
  bytes: Buffer;
  /** The index it was picked from, when the reference named one. */
  index?: { index: ImageIndex; digest: string; mediaType: string; bytes: Buffer };
}

/** Whether an index entry is a Nydus manifest (merged-platform indexes hold both kinds). */
export function isNydusEntry(d: Descriptor): boolean {
  return (
    d.artifactType === NYDUS_ARTIFACT_TYPE || (d.platform?.['os.features'] ?? []).includes(NYDUS_OS_FEATURE)
  );
}

/**
 * The manifest of `tagOrDigest` for `platform`. In an index, an entry marked as Nydus wins over
 * a plain one of the same platform (a `--merge-platform` index lists both).
 */
export async function resolveNydusManifest(
  repo: Repository,
  tagOrDigest: string,
  platform: Platform,
): Promise<NydusManifest> {
  const got = await repo.getManifest(tagOrDigest);
  const parsed = parseManifestOrIndex(got.bytes, got.mediaType);
  if (parsed.kind === 'manifest')
    return { manifest: parsed.manifest, digest: got.digest, mediaType: parsed.mediaType, bytes: got.bytes };
  const entries = parsed.index.manifests.filter((d) => platformMatches(platform, d.platform));
  const pick = entries.find(isNydusEntry) ?? entries[0];
  if (pick === undefined) {
    const have = parsed.index.manifests.map((d) => formatPlatform(d.platform)).join(', ');
    throw new NydusError(
      'ERR_NOT_FOUND',
      `${repo.name}:${tagOrDigest} has no manifest for platform ${formatPlatform(platform)} (it has: ${have || 'none'})`,
    );
  }
  const m = await repo.getManifest(pick.digest);
  const inner = parseManifestOrIndex(m.bytes, m.mediaType);
  if (inner.kind !== 'manifest')
    throw new NydusError(
      'ERR_FORMAT',
      `${repo.name}@${pick.digest}: an index inside an index is not supported`,
    );
  return {
    manifest: inner.manifest,
    digest: m.digest,
    mediaType: inner.mediaType,
    bytes: m.bytes,
    index: { index: parsed.index, digest: got.digest, mediaType: parsed.mediaType, bytes: got.bytes },
  };
}

/**
 * Fetch the bootstrap layer (digest-verified by the client) and write its `image/image.boot`
 * to `dest`; with `unpackDir`, every file of the layer is written below it too (`nydusify
 * check` keeps them). A layer without the bootstrap fails.
 */
export async function pullBootstrap(
  repo: Repository,
  layer: Descriptor,
  dest: string,
  unpackDir?: string,
): Promise<void> {
  const where = `bootstrap layer ${repo.name}@${layer.digest}`;
  if (layer.size > MAX_BOOTSTRAP_LAYER_SIZE)
    throw new NydusError('ERR_FORMAT', `${where} is too large (${layer.size} bytes)`);
  let files: Map<string, Buffer>;
  try {
    files = await readBootstrapLayerFiles(await repo.fetchBlob(layer.digest));
  } catch (e) {
    throw new NydusError(
      e instanceof NydusError ? e.code : 'ERR_IO',
      `Cannot read ${where}: ${errorText(e)}`,
      {
        cause: e,
      },
    );
  }
  const boot = files.get(BOOTSTRAP_FILE_IN_LAYER);
  if (boot === undefined) throw new NydusError('ERR_FORMAT', `${where} holds no ${BOOTSTRAP_FILE_IN_LAYER}`);
  await mkdir(dirname(dest), { recursive: true });
  const tmp = `${dest}.${process.pid}.tmp`;
  await writeFile(tmp, boot);
  await rename(tmp, dest);
  if (unpackDir === undefined) return;
  for (const [name, data] of files) {
    if (name.split('/').some((p) => p === '..' || p === '')) continue;
    const out = join(unpackDir, name);
    await mkdir(dirname(out), { recursive: true });
    await writeFile(out, data);
  }
}
