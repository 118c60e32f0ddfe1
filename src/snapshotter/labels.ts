import {
  ANNOTATION_NYDUS_BLOB,
  ANNOTATION_NYDUS_BOOTSTRAP,
  ANNOTATION_NYDUS_REF,
} from '../oci/media-types.js';

/**
 * The snapshot labels the Nydus snapshotter reads (upstream-surface §7.5). containerd passes a
 * layer's annotations with the `containerd.io/snapshot/` prefix as labels of its Prepare, and
 * the CRI plugin and `ctr-remote` add the image reference.
 */

/** Set on a Prepare that unpacks an image layer: the chain id it will be committed as. */
export const LABEL_TARGET_REF = 'containerd.io/snapshot.ref';
export const LABEL_CRI_IMAGE_REF = 'containerd.io/snapshot/cri.image-ref';
export const LABEL_CRI_LAYER_DIGEST = 'containerd.io/snapshot/cri.layer-digest';
export const LABEL_CRI_MANIFEST_DIGEST = 'containerd.io/snapshot/cri.manifest-digest';
/** What `ctr-remote image rpull` sets (stargz-snapshotter's handler): the image reference. */
export const LABEL_STARGZ_REFERENCE = 'containerd.io/snapshot/remote/stargz.reference';
export const LABEL_NYDUS_DATA = ANNOTATION_NYDUS_BLOB;
export const LABEL_NYDUS_META = ANNOTATION_NYDUS_BOOTSTRAP;
export const LABEL_NYDUS_REF = ANNOTATION_NYDUS_REF;
export const LABEL_PULL_USERNAME = 'containerd.io/snapshot/pullusername';
export const LABEL_PULL_SECRET = 'containerd.io/snapshot/pullsecret';
export const LABEL_OVERLAY_VOLATILE = 'containerd.io/snapshot/overlay.volatile';
/** Written by us on a Nydus meta layer once its image reference is known. */
export const LABEL_NYDUS_IMAGE_REF = 'containerd.io/snapshot/nydus-image-ref';

type Labels = Record<string, string>;

/** A Nydus data (blob) layer: committed at once, never downloaded by containerd. */
export function isNydusDataLayer(labels: Labels): boolean {
  return LABEL_NYDUS_DATA in labels;
}

/** The Nydus meta (bootstrap) layer: containerd unpacks it; containers mount RAFS above it. */
export function isNydusMetaLayer(labels: Labels): boolean {
  return LABEL_NYDUS_META in labels;
}

/** The image reference a layer belongs to, from whichever client labelled it. */
export function imageRefOf(labels: Labels): string | undefined {
  for (const k of [LABEL_NYDUS_IMAGE_REF, LABEL_CRI_IMAGE_REF, LABEL_STARGZ_REFERENCE]) {
    const v = labels[k];
    if (v !== undefined && v !== '') return v;
  }
  return undefined;
}
