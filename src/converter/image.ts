import { sha256Hex } from '../codec/digest.js';
import type { Descriptor, ImageConfig, ImageIndex, ImageManifest, Platform } from '../oci/manifest.js';
import {
  ANNOTATION_NYDUS_FS_VERSION,
  ANNOTATION_NYDUS_SOURCE_DIGEST,
  ANNOTATION_UNCOMPRESSED,
  DOCKER_CONFIG,
  DOCKER_LAYER_GZIP,
  DOCKER_LAYER_TAR,
  DOCKER_MANIFEST,
  DOCKER_MANIFEST_LIST,
  NYDUS_ARTIFACT_TYPE,
  NYDUS_CONFIG,
  NYDUS_OS_FEATURE,
  OCI_CONFIG,
  OCI_INDEX,
  OCI_LAYER_GZIP,
  OCI_LAYER_TAR,
  OCI_MANIFEST,
} from '../oci/media-types.js';

/** Manifest annotation: the reference the Nydus image was converted from (acceleration-service). */
export const ANNOTATION_NYDUS_SOURCE_REFERENCE = 'containerd.io/snapshot/nydus-source-reference';

/** The history entry upstream appends for the bootstrap layer. */
export const BOOTSTRAP_HISTORY = { created_by: 'Nydus Converter', comment: 'Nydus Bootstrap Layer' } as const;

export interface JsonBlob {
  bytes: Buffer;
  descriptor: Descriptor;
}

/** A JSON document as a blob (compact, as Go's json.Marshal writes it) and its descriptor. */
export function jsonBlob(value: unknown, mediaType: string): JsonBlob {
  const bytes = Buffer.from(JSON.stringify(value));
  return { bytes, descriptor: { mediaType, digest: `sha256:${sha256Hex(bytes)}`, size: bytes.length } };
}

/**
 * The Nydus image config: the source config unchanged but for `rootfs.diff_ids` (one per
 * manifest layer) and the bootstrap history entry appended. With a blob backend (blobs not in
 * the manifest) the diff_ids and history are the bootstrap layer's alone, as upstream does.
 */
export function nydusConfig(
  source: ImageConfig,
  diffIds: readonly string[],
  backendOnly: boolean,
): ImageConfig {
  const history = Array.isArray(source.history) ? source.history : [];
  return {
    ...source,
    rootfs: { ...source.rootfs, type: 'layers', diff_ids: [...diffIds] },
    history: backendOnly ? [{ ...BOOTSTRAP_HISTORY }] : [...history, { ...BOOTSTRAP_HISTORY }],
  };
}

/** Drop `containerd.io/uncompressed` from a layer descriptor (upstream removes it from the final manifest). */
export function withoutUncompressed(d: Descriptor): Descriptor {
  if (d.annotations?.[ANNOTATION_UNCOMPRESSED] === undefined) return d;
  const rest = Object.fromEntries(
    Object.entries(d.annotations).filter(([k]) => k !== ANNOTATION_UNCOMPRESSED),
  );
  return { ...d, annotations: rest };
}

export interface NydusManifestInput {
  /** Media type of the source manifest. */
  sourceMediaType: string;
  /** `--oci`: Docker media types become OCI ones. */
  oci: boolean;
  /** `--merge-platform`: the config gets the Nydus config media type so plain runtimes skip it. */
  mergePlatform: boolean;
  config: Descriptor;
  layers: readonly Descriptor[];
  sourceDigest: string;
  sourceReference: string;
  fsVersion: 5 | 6;
  /** Annotations of the source manifest (kept). */
  sourceAnnotations?: Record<string, string>;
  /** `--with-referrer`: the source manifest (platform removed, as upstream does). */
  subject?: Descriptor;
}

/** The manifest media type of the converted image: the source's, or OCI with `--oci`. */
export function targetManifestMediaType(sourceMediaType: string, oci: boolean): string {
  return oci || sourceMediaType === OCI_MANIFEST ? OCI_MANIFEST : DOCKER_MANIFEST;
}

/** Docker layer/config media types to OCI ones (what containerd's docker2oci conversion maps). */
export function dockerToOci(mediaType: string): string {
  switch (mediaType) {
    case DOCKER_MANIFEST:
      return OCI_MANIFEST;
    case DOCKER_MANIFEST_LIST:
      return OCI_INDEX;
    case DOCKER_CONFIG:
      return OCI_CONFIG;
    case DOCKER_LAYER_GZIP:
      return OCI_LAYER_GZIP;
    case DOCKER_LAYER_TAR:
      return OCI_LAYER_TAR;
    default:
      return mediaType;
  }
}

/**
 * The Nydus manifest: data blob layers then the bootstrap layer, with the nydus annotations
 * acceleration-service appends (source digest and reference, fs version).
 */
export function nydusManifest(i: NydusManifestInput): { manifest: ImageManifest; mediaType: string } {
  const mediaType = targetManifestMediaType(i.sourceMediaType, i.oci);
  let configType = mediaType === OCI_MANIFEST ? dockerToOci(i.config.mediaType) : i.config.mediaType;
  if (i.mergePlatform) configType = NYDUS_CONFIG;
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType,
    config: { ...i.config, mediaType: configType },
    layers: i.layers.map(withoutUncompressed),
    annotations: {
      ...i.sourceAnnotations,
      [ANNOTATION_NYDUS_SOURCE_DIGEST]: i.sourceDigest,
      [ANNOTATION_NYDUS_SOURCE_REFERENCE]: i.sourceReference,
      [ANNOTATION_NYDUS_FS_VERSION]: String(i.fsVersion),
    },
  };
  if (i.subject !== undefined) manifest.subject = i.subject;
  return { manifest, mediaType };
}

/** Descriptor of a manifest in an index, with its platform. */
export function manifestEntry(m: JsonBlob, mediaType: string, platform: Platform | undefined): Descriptor {
  return platform === undefined
    ? { ...m.descriptor, mediaType }
    : { ...m.descriptor, mediaType, platform: { ...platform } };
}

/**
 * A `--merge-platform` index entry for a Nydus manifest: artifactType as current upstream marks
 * it, plus the `nydus.remoteimage.v1` os.feature older readers look for.
 */
export function mergedNydusEntry(d: Descriptor, platform: Platform | undefined): Descriptor {
  const p: Platform = platform === undefined ? { os: 'linux', architecture: 'amd64' } : { ...platform };
  const features = new Set(p['os.features'] ?? []);
  features.add(NYDUS_OS_FEATURE);
  return { ...d, platform: { ...p, 'os.features': [...features] }, artifactType: NYDUS_ARTIFACT_TYPE };
}

/** An index over the given manifests (source index kept as the template: its media type and annotations). */
export function makeIndex(
  manifests: readonly Descriptor[],
  template: { mediaType?: string | undefined; annotations?: Record<string, string> | undefined } | undefined,
  oci: boolean,
): { index: ImageIndex; mediaType: string } {
  const allOci = manifests.every((m) => m.mediaType === OCI_MANIFEST);
  let mediaType = template?.mediaType ?? OCI_INDEX;
  if (oci || (mediaType === DOCKER_MANIFEST_LIST && !manifests.every((m) => m.mediaType === DOCKER_MANIFEST)))
    mediaType = OCI_INDEX;
  if (allOci) mediaType = OCI_INDEX;
  const index: ImageIndex = { schemaVersion: 2, mediaType, manifests: [...manifests] };
  if (template?.annotations !== undefined) index.annotations = { ...template.annotations };
  return { index, mediaType };
}
