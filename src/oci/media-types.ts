/**
 * Media types, annotations and other well-known strings of OCI images, Docker schema2 images
 * and Nydus images in a registry.
 */

// OCI image spec
export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
export const OCI_EMPTY = 'application/vnd.oci.empty.v1+json';
export const OCI_LAYER_TAR = 'application/vnd.oci.image.layer.v1.tar';
export const OCI_LAYER_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';
export const OCI_LAYER_ZSTD = 'application/vnd.oci.image.layer.v1.tar+zstd';
export const OCI_LAYER_NONDIST_TAR = 'application/vnd.oci.image.layer.nondistributable.v1.tar';
export const OCI_LAYER_NONDIST_GZIP = 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip';
export const OCI_LAYER_NONDIST_ZSTD = 'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd';

// Docker image manifest v2 schema 2
export const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
export const DOCKER_MANIFEST_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
export const DOCKER_CONFIG = 'application/vnd.docker.container.image.v1+json';
export const DOCKER_LAYER_GZIP = 'application/vnd.docker.image.rootfs.diff.tar.gzip';
export const DOCKER_LAYER_TAR = 'application/vnd.docker.image.rootfs.diff.tar';
export const DOCKER_LAYER_FOREIGN_GZIP = 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip';

/** What a manifest GET asks for (the order is the preference). */
export const MANIFEST_ACCEPT: readonly string[] = [
  OCI_INDEX,
  DOCKER_MANIFEST_LIST,
  OCI_MANIFEST,
  DOCKER_MANIFEST,
];

export const INDEX_MEDIA_TYPES: readonly string[] = [OCI_INDEX, DOCKER_MANIFEST_LIST];
export const IMAGE_MANIFEST_MEDIA_TYPES: readonly string[] = [OCI_MANIFEST, DOCKER_MANIFEST];

export function isIndexMediaType(t: string | undefined): boolean {
  return t !== undefined && INDEX_MEDIA_TYPES.includes(t);
}

export function isManifestMediaType(t: string | undefined): boolean {
  return t !== undefined && IMAGE_MANIFEST_MEDIA_TYPES.includes(t);
}

/** Layer compression by media type: 'gzip', 'zstd', 'none', or undefined when not a tar layer. */
export function layerCompression(t: string): 'gzip' | 'zstd' | 'none' | undefined {
  switch (t) {
    case OCI_LAYER_GZIP:
    case OCI_LAYER_NONDIST_GZIP:
    case DOCKER_LAYER_GZIP:
    case DOCKER_LAYER_FOREIGN_GZIP:
      return 'gzip';
    case OCI_LAYER_ZSTD:
    case OCI_LAYER_NONDIST_ZSTD:
      return 'zstd';
    case OCI_LAYER_TAR:
    case OCI_LAYER_NONDIST_TAR:
    case DOCKER_LAYER_TAR:
      return 'none';
    default:
      return undefined;
  }
}

// Nydus images
export const NYDUS_BLOB_LAYER = 'application/vnd.oci.image.layer.nydus.blob.v1';
export const NYDUS_CONFIG = 'application/vnd.nydus.image.config.v1+json';
export const NYDUS_ARTIFACT_TYPE = 'application/vnd.nydus.image.manifest.v1+json';
/** Platform `os.features` entry of a Nydus manifest in a merged (`--merge-platform`) index. */
export const NYDUS_OS_FEATURE = 'nydus.remoteimage.v1';

// Annotations
export const ANNOTATION_UNCOMPRESSED = 'containerd.io/uncompressed';
const SNAPSHOT = 'containerd.io/snapshot/';
export const ANNOTATION_NYDUS_BLOB = `${SNAPSHOT}nydus-blob`;
export const ANNOTATION_NYDUS_BOOTSTRAP = `${SNAPSHOT}nydus-bootstrap`;
export const ANNOTATION_NYDUS_FS_VERSION = `${SNAPSHOT}nydus-fs-version`;
export const ANNOTATION_NYDUS_REF = `${SNAPSHOT}nydus-ref`;
export const ANNOTATION_NYDUS_ENCRYPTED_BLOB = `${SNAPSHOT}nydus-encrypted-blob`;
export const ANNOTATION_NYDUS_CACHE = `${SNAPSHOT}nydus-cache`;
export const ANNOTATION_NYDUS_BLOB_DIGEST = `${SNAPSHOT}nydus-blob-digest`;
export const ANNOTATION_NYDUS_BLOB_SIZE = `${SNAPSHOT}nydus-blob-size`;
export const ANNOTATION_NYDUS_SOURCE_CHAINID = `${SNAPSHOT}nydus-source-chainid`;
export const ANNOTATION_NYDUS_REFERENCE_BLOB_IDS = `${SNAPSHOT}nydus-reference-blob-ids`;
export const ANNOTATION_NYDUS_SOURCE_DIGEST = `${SNAPSHOT}nydus-source-digest`;
export const ANNOTATION_NYDUS_TARGET_DIGEST = `${SNAPSHOT}nydus-target-digest`;
export const ANNOTATION_NYDUS_ARTIFACT_TYPE = `${SNAPSHOT}nydus-artifact-type`;
export const ANNOTATION_NYDUS_COMMIT_BLOBS = `${SNAPSHOT}nydus-commit-blobs`;
export const ANNOTATION_NYDUS_SEPARATED_BLOB_WITH_PREFETCH_FILES = `${SNAPSHOT}nydus-separated-blob-with-prefetch-files`;

// OCI standard annotations used around images
export const ANNOTATION_REF_NAME = 'org.opencontainers.image.ref.name';
export const ANNOTATION_CREATED = 'org.opencontainers.image.created';
