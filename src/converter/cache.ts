import { NydusError } from '../errors/errors.js';
import type { Logger } from '../log/logger.js';
import {
  parseManifestOrIndex,
  platformMatches,
  type Descriptor,
  type ImageIndex,
  type ImageManifest,
  type Platform,
} from '../oci/manifest.js';
import {
  ANNOTATION_NYDUS_BLOB,
  ANNOTATION_NYDUS_SOURCE_DIGEST,
  NYDUS_BLOB_LAYER,
  OCI_CONFIG,
  OCI_INDEX,
  OCI_MANIFEST,
} from '../oci/media-types.js';
import { jsonBlob } from './image.js';
import type { ImageRepo } from './repo.js';

/** Manifest annotation carrying the cache format version (`--build-cache-version`). */
export const ANNOTATION_NYDUS_CACHE_VERSION = 'containerd.io/snapshot/nydus-cache-version';
/** Upstream's limit of records in one cache manifest. */
export const MAX_CACHE_RECORDS = 200;

/** One cached conversion: a source layer and the Nydus blob layer made from it. */
export interface CacheRecord {
  source: string;
  /** The Nydus blob layer descriptor (annotations: nydus-blob, nydus-source-digest). */
  target: Descriptor;
}

/**
 * The build cache as acceleration-service (and so nydusify) keeps it in a registry: an OCI
 * index with one manifest per platform; each manifest's layers are Nydus blob layers annotated
 * with the source layer digest they were converted from, and the manifest carries the cache
 * version. Records are kept lowest layers first, at most `maxRecords` per platform.
 */
export class BuildCache {
  readonly #repo: ImageRepo;
  readonly #tag: string;
  readonly #version: string;
  readonly #max: number;
  readonly #log: Logger;
  /** Records read from the registry and added in this run, by source digest. */
  readonly #records = new Map<string, CacheRecord>();
  #index: ImageIndex | undefined;
  readonly #manifests = new Map<string, ImageManifest>();

  constructor(repo: ImageRepo, tag: string, o: { version: string; maxRecords: number; log: Logger }) {
    this.#repo = repo;
    this.#tag = tag;
    this.#version = o.version;
    this.#max = o.maxRecords;
    this.#log = o.log;
  }

  get size(): number {
    return this.#records.size;
  }

  /** Load the cache index and the manifests of the wanted platforms. A missing cache is empty. */
  async fetch(platforms: readonly Platform[] | 'all'): Promise<boolean> {
    let got;
    try {
      got = await this.#repo.getManifest(this.#tag);
    } catch (e) {
      if (e instanceof NydusError && e.code === 'ERR_NOT_FOUND') return false;
      throw e;
    }
    const parsed = parseManifestOrIndex(got.bytes, got.mediaType);
    if (parsed.kind !== 'index') {
      this.#log.warn(`Build cache ${this.#tag} is not an image index (${parsed.mediaType}), ignored`);
      return false;
    }
    this.#index = parsed.index;
    for (const d of parsed.index.manifests) {
      const p = d.platform;
      if (platforms !== 'all' && !platforms.some((w) => platformMatches(w, p))) continue;
      const m = await this.#repo.getManifest(d.digest);
      const pm = parseManifestOrIndex(m.bytes, m.mediaType);
      if (pm.kind !== 'manifest') continue;
      this.#manifests.set(d.digest, pm.manifest);
      const version = pm.manifest.annotations?.[ANNOTATION_NYDUS_CACHE_VERSION] ?? '';
      if (version !== this.#version) {
        this.#log.warn(
          `Ignoring build cache manifest ${d.digest}: version "${version}", expected "${this.#version}"`,
        );
        continue;
      }
      for (const l of pm.manifest.layers) {
        const src = l.annotations?.[ANNOTATION_NYDUS_SOURCE_DIGEST];
        if (src === undefined || !/^sha256:[0-9a-f]{64}$/.test(src)) continue;
        this.#records.set(src, { source: src, target: l });
      }
    }
    return true;
  }

  get(sourceDigest: string): CacheRecord | undefined {
    return this.#records.get(sourceDigest);
  }

  set(sourceDigest: string, digest: string, size: number): void {
    this.#records.set(sourceDigest, {
      source: sourceDigest,
      target: {
        mediaType: NYDUS_BLOB_LAYER,
        digest,
        size,
        annotations: { [ANNOTATION_NYDUS_BLOB]: 'true', [ANNOTATION_NYDUS_SOURCE_DIGEST]: sourceDigest },
      },
    });
  }

  /**
   * Push the updated cache: per converted platform, the records of its source layers appended
   * to that platform's cache manifest (existing first, up to the record limit), then the index.
   * The blob layers must already be in the cache repository.
   */
  async push(images: readonly { platform: Platform; sourceLayers: readonly string[] }[]): Promise<void> {
    const config = jsonBlob({}, OCI_CONFIG);
    await this.#repo.pushBlob(config.descriptor.digest, config.descriptor.size, config.bytes);
    const entries: Descriptor[] = [...(this.#index?.manifests ?? [])];
    for (const img of images) {
      const fresh = img.sourceLayers.flatMap((s) => {
        const r = this.#records.get(s);
        return r === undefined ? [] : [r.target];
      });
      const at = entries.findIndex((d) => platformMatches(img.platform, d.platform));
      const old = at >= 0 ? this.#manifests.get(entries[at]!.digest) : undefined;
      const layers: Descriptor[] = [...(old?.layers ?? [])];
      const have = new Set(layers.map((l) => l.digest));
      for (const l of fresh) {
        if (layers.length >= this.#max) break;
        if (!have.has(l.digest)) {
          layers.push(l);
          have.add(l.digest);
        }
      }
      const manifest: ImageManifest = {
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        config: old?.config ?? config.descriptor,
        layers: layers.slice(0, this.#max),
        annotations: { ...old?.annotations, [ANNOTATION_NYDUS_CACHE_VERSION]: this.#version },
      };
      const blob = jsonBlob(manifest, OCI_MANIFEST);
      await this.#repo.putManifest(blob.descriptor.digest, OCI_MANIFEST, blob.bytes);
      const entry: Descriptor = { ...blob.descriptor, platform: { ...img.platform } };
      if (at >= 0) entries[at] = entry;
      else entries.push(entry);
    }
    const index = jsonBlob({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: entries }, OCI_INDEX);
    await this.#repo.putManifest(this.#tag, OCI_INDEX, index.bytes);
  }
}
