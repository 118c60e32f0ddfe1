import { createWriteStream } from 'node:fs';
import { copyFile, mkdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { INLINE_BLOB_ID_PLACEHOLDER } from '../builder/blob-writer.js';
import { mergeBootstraps } from '../builder/merge.js';
import type { Compressor } from '../codec/algorithms.js';
import { sha256Hex } from '../codec/digest.js';
import { errorText, NydusError } from '../errors/errors.js';
import { parseBootstrap } from '../format/bootstrap.js';
import type { Logger } from '../log/logger.js';
import {
  formatPlatform,
  hostPlatform,
  parseImageConfig,
  parseManifestOrIndex,
  platformMatches,
  type Descriptor,
  type ImageConfig,
  type ImageIndex,
  type ImageManifest,
  type Platform,
} from '../oci/manifest.js';
import { isManifestMediaType, layerCompression, OCI_MANIFEST } from '../oci/media-types.js';
import { formatReference, referenceTagOrDigest, type Reference } from '../oci/reference.js';
import {
  extractBootstrapFromLayer,
  findBootstrapLayer,
  isNydusManifest,
  makeBootstrapLayer,
  nydusBlobDescriptor,
  nydusBlobLayers,
} from './bootstrap-layer.js';
import { BuildCache, MAX_CACHE_RECORDS } from './cache.js';
import {
  jsonBlob,
  makeIndex,
  manifestEntry,
  mergedNydusEntry,
  nydusConfig,
  nydusManifest,
  targetManifestMediaType,
} from './image.js';
import { convertLayerTar, decompressLayer, readLayerBlob, type ConvertedLayer } from './layer.js';
import { openObjectStore, type ObjectStoreType } from './object-store.js';
import { blobStreamOf, Remotes, withRetry, type ImageRepo, type RemoteOptions } from './repo.js';
import type { ObjectStore } from '../storage/remote/s3.js';

export type ChunkDictSpec =
  { source: 'registry'; ref: string; remote?: RemoteOptions } | { source: 'local'; path: string };

/** Parse upstream's `--chunk-dict` expression: `bootstrap:registry:REF` or `bootstrap:local:PATH`. */
export function parseChunkDictArg(s: string): ChunkDictSpec {
  const parts = s.split(':');
  if (parts.length < 3)
    throw new NydusError(
      'ERR_INVALID_ARG',
      `Invalid --chunk-dict "${s}": expected bootstrap:registry:REF or bootstrap:local:PATH`,
    );
  if (parts[0] !== 'bootstrap')
    throw new NydusError('ERR_INVALID_ARG', `Invalid chunk dict format "${parts[0]}", should be [bootstrap]`);
  const rest = parts.slice(2).join(':');
  if (parts[1] === 'registry') return { source: 'registry', ref: rest };
  if (parts[1] === 'local') return { source: 'local', path: rest };
  throw new NydusError(
    'ERR_INVALID_ARG',
    `Invalid chunk dict source "${parts[1]}", should be [registry local]`,
  );
}

export interface ConvertEvents {
  /** A layer started converting (`total`: its compressed size). */
  layerStart?(id: string, label: string, total: number): void;
  /** Compressed bytes of the layer read so far. */
  layerProgress?(id: string, done: number): void;
  layerDone?(id: string): void;
}

export interface ConvertOptions {
  source: string;
  target: string;
  sourceRemote?: RemoteOptions;
  targetRemote?: RemoteOptions;
  /** Platforms to convert (default: the host's); ignored with `allPlatforms`. */
  platforms?: readonly Platform[];
  allPlatforms?: boolean;
  /** Push an OCI index holding the source manifests and the Nydus ones. */
  mergePlatform?: boolean;
  /** Docker media types to OCI ones. */
  oci?: boolean;
  /** `--with-referrer`: the Nydus manifest's `subject` is the source manifest. */
  withReferrer?: boolean;
  fsVersion: 5 | 6;
  compressor: Compressor;
  chunkSize: number;
  alignedChunk: boolean;
  /** Absolute paths to prefetch (upstream's default is ["/"]). */
  prefetchPatterns: readonly string[];
  /** Work directory (kept after the run): per-layer bootstraps, blobs, merged bootstrap. */
  workDir: string;
  chunkDict?: ChunkDictSpec;
  buildCache?: { ref: string; version?: string; maxRecords?: number; remote?: RemoteOptions };
  /**
   * Blobs go to this backend instead of the target registry (the manifest still goes there and
   * lists the bootstrap layer only, as upstream): a directory, or an object store (`config` is
   * the oss/s3 backend table, object key `object_prefix` + blob id).
   */
  backend?:
    | { type: 'localfs'; dir: string; forcePush?: boolean }
    | { type: ObjectStoreType; config: Record<string, unknown>; forcePush?: boolean };
  pushRetryCount?: number;
  pushRetryDelayMs?: number;
  /** Layers converted at once (default: the number of CPUs, at least 2). */
  concurrency?: number;
  /** Worker threads per layer build. */
  threads?: number;
  log: Logger;
  events?: ConvertEvents;
  /** Registry clients to use (tests share one); closed by the caller when given. */
  remotes?: Remotes;
}

export interface LayerOutcome {
  /** Source layer digest. */
  source: string;
  /** Nydus blob layer digest (= blob id). */
  digest: string;
  size: number;
  /** Taken from the build cache instead of converted. */
  cached: boolean;
  /** What the push did: the registry's answer, or 'backend' for `--backend-type`. */
  push: 'exists' | 'mounted' | 'uploaded' | 'backend' | 'skipped';
}

export interface ConvertedImage {
  platform: Platform;
  /** Source manifest digest. */
  source: string;
  /** Nydus manifest digest and media type. */
  digest: string;
  mediaType: string;
  manifest: ImageManifest;
  config: ImageConfig;
  /** The merged bootstrap in the work dir. */
  bootstrapPath: string;
  layers: LayerOutcome[];
  bootstrapLayer: Descriptor;
}

/** Conversion metrics in upstream's `--output-json` shape (durations in nanoseconds, as Go writes them). */
export interface ConvertMetric {
  SourceImageSize: number;
  TargetImageSize: number;
  SourcePullElapsed: number;
  ConversionElapsed: number;
  TargetPushElapsed: number;
}

export interface ConvertResult {
  source: string;
  target: string;
  /** What the target tag now names. */
  digest: string;
  mediaType: string;
  images: ConvertedImage[];
  metric: ConvertMetric;
  /** Build cache hits / layers. */
  cacheHits: number;
  workDir: string;
}

/** Directory name of an image reference in the work dir: `<host>/<repo>:<tag>` (or `@<digest>`). */
export function workDirOf(workDir: string, r: Reference): string {
  const leaf = r.tag !== undefined ? `${r.repository}:${r.tag}` : `${r.repository}@${r.digest ?? 'latest'}`;
  return join(workDir, r.host, leaf);
}

interface SelectedManifest {
  descriptor: Descriptor;
  manifest: ImageManifest;
  bytes: Buffer;
  mediaType: string;
  platform: Platform | undefined;
}

interface Resolved {
  top: { digest: string; mediaType: string; bytes: Buffer };
  index: ImageIndex | undefined;
  selected: SelectedManifest[];
}

function asError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e));
}

const ns = (ms: number): number => Math.round(ms * 1e6);

function platformKey(p: Platform): string {
  return [p.os, p.architecture, p.variant].filter((x) => x !== undefined && x !== '').join('_');
}

async function notFound<T>(what: string, p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (e) {
    if (e instanceof NydusError && e.code === 'ERR_NOT_FOUND')
      throw new NydusError('ERR_NOT_FOUND', `${what} not found: ${e.message}`, { cause: e });
    throw e;
  }
}

/** Resolve an image reference to its manifests of the wanted platforms. */
export async function resolveImage(
  repo: ImageRepo,
  refText: string,
  tagOrDigest: string,
  want: { platforms: readonly Platform[]; all: boolean },
): Promise<Resolved> {
  const top = await notFound(`Image ${refText}`, repo.getManifest(tagOrDigest));
  const parsed = parseManifestOrIndex(top.bytes, top.mediaType);
  if (parsed.kind === 'manifest') {
    return {
      top,
      index: undefined,
      selected: [
        {
          descriptor: { mediaType: parsed.mediaType, digest: top.digest, size: top.bytes.length },
          manifest: parsed.manifest,
          bytes: top.bytes,
          mediaType: parsed.mediaType,
          platform: undefined,
        },
      ],
    };
  }
  const entries = parsed.index.manifests.filter(
    (d) =>
      isManifestMediaType(d.mediaType) &&
      d.platform?.os !== 'unknown' &&
      (want.all || want.platforms.some((p) => platformMatches(p, d.platform))),
  );
  if (entries.length === 0) {
    const have = parsed.index.manifests.map((d) => formatPlatform(d.platform)).join(', ');
    throw new NydusError(
      'ERR_NOT_FOUND',
      `Image ${refText} has no manifest for ${want.platforms.map((p) => formatPlatform(p)).join(', ')} (it has ${have || 'none'})`,
    );
  }
  // One manifest per wanted platform (the first match), or all with --all-platforms.
  const picked = want.all
    ? entries
    : want.platforms.flatMap((p) => {
        const d = entries.find((e) => platformMatches(p, e.platform));
        return d === undefined ? [] : [d];
      });
  const unique = [...new Map(picked.map((d) => [d.digest, d])).values()];
  const selected: SelectedManifest[] = [];
  for (const d of unique) {
    const m = await notFound(`Manifest ${d.digest} of ${refText}`, repo.getManifest(d.digest));
    const pm = parseManifestOrIndex(m.bytes, m.mediaType ?? d.mediaType);
    if (pm.kind !== 'manifest')
      throw new NydusError('ERR_UNSUPPORTED', `Image ${refText}: nested index ${d.digest} is not supported`);
    selected.push({
      descriptor: d,
      manifest: pm.manifest,
      bytes: m.bytes,
      mediaType: pm.mediaType,
      platform: d.platform,
    });
  }
  return { top, index: parsed.index, selected };
}

/** Bounded parallel map preserving order; the first failure aborts the rest (they still settle). */
async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (x: T, i: number) => Promise<R>,
): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  let failed: unknown;
  const worker = async (): Promise<void> => {
    while (failed === undefined && next < items.length) {
      const i = next++;
      try {
        out[i] = await fn(items[i]!, i);
      } catch (e) {
        failed ??= e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  if (failed !== undefined) throw asError(failed);
  return out;
}

function counter(id: string, ev: ConvertEvents | undefined): Transform {
  let n = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      n += chunk.length;
      ev?.layerProgress?.(id, n);
      cb(null, chunk);
    },
  });
}

/**
 * `nydusify convert`: convert an OCI/Docker image in a registry to a Nydus image and push it.
 *
 * Per platform: every source layer is streamed from the registry through decompression into
 * the builder (one inline-meta blob and bootstrap per layer, several layers at once); each blob
 * is pushed as soon as it exists; the per-layer bootstraps are merged (whiteouts applied, blob
 * ids = blob layer digests); then the bootstrap layer, the config and finally the manifest (and
 * index) are pushed, so a failure never leaves a manifest naming missing blobs.
 */
export async function convertImage(o: ConvertOptions): Promise<ConvertResult> {
  const log = o.log;
  const remotes = o.remotes ?? new Remotes(log);
  // An object-store backend is opened (its config checked) before anything is converted.
  const store =
    o.backend !== undefined && o.backend.type !== 'localfs'
      ? openObjectStore(o.backend.type, o.backend.config, log)
      : undefined;
  try {
    return await convertWith(o, remotes, store);
  } finally {
    await store?.close();
    if (o.remotes === undefined) await remotes.close();
  }
}

async function convertWith(
  o: ConvertOptions,
  remotes: Remotes,
  store: ObjectStore | undefined,
): Promise<ConvertResult> {
  const log = o.log;
  const t0 = Date.now();
  const src = remotes.open(o.source, o.sourceRemote);
  const tgt = remotes.open(o.target, o.targetRemote);
  if (tgt.ref.digest !== undefined)
    throw new NydusError(
      'ERR_INVALID_ARG',
      `Target ${o.target} names a digest: a converted image needs a tag`,
    );
  const sourceText = formatReference(src.ref);
  const targetText = formatReference(tgt.ref);
  const targetTag = referenceTagOrDigest(tgt.ref);
  const retries = o.pushRetryCount ?? 3;
  const retryDelay = o.pushRetryDelayMs ?? 5000;
  const push = <T>(what: string, fn: () => Promise<T>): Promise<T> =>
    withRetry(what, fn, retries, retryDelay, log);
  const platforms = o.platforms !== undefined && o.platforms.length > 0 ? o.platforms : [hostPlatform()];
  const sameHost = src.ref.host === tgt.ref.host && !o.backend;

  // Build cache.
  let cache: BuildCache | undefined;
  let cacheRepo: (ImageRepo & { name: string }) | undefined;
  let cacheRef: Reference | undefined;
  if (o.buildCache !== undefined) {
    const c = remotes.open(o.buildCache.ref, o.buildCache.remote ?? o.targetRemote);
    if (c.ref.digest !== undefined)
      throw new NydusError('ERR_INVALID_ARG', `Build cache ${o.buildCache.ref} must be a tag`);
    cacheRepo = c.repo;
    cacheRef = c.ref;
    cache = new BuildCache(c.repo, referenceTagOrDigest(c.ref), {
      version: o.buildCache.version ?? 'v1',
      maxRecords: o.buildCache.maxRecords ?? MAX_CACHE_RECORDS,
      log,
    });
    log.info(`Pulling cache ${formatReference(c.ref)}`);
    try {
      if (await cache.fetch(o.allPlatforms === true ? 'all' : platforms))
        log.info(`Pulled cache ${formatReference(c.ref)} (${cache.size} records)`);
      else log.info(`Cache ${formatReference(c.ref)} not found`);
    } catch (e) {
      log.warn(`Cannot fetch build cache ${formatReference(c.ref)}: ${errorText(e)}`);
    }
  }

  // Source.
  log.info(
    `Pulling image ${sourceText}${o.allPlatforms === true ? ' with all platforms' : ` with platform ${platforms.map((p) => formatPlatform(p)).join(',')}`}`,
  );
  const resolved = await resolveImage(src.repo, sourceText, referenceTagOrDigest(src.ref), {
    platforms,
    all: o.allPlatforms === true,
  });
  const configs = await Promise.all(
    resolved.selected.map(async (s) => {
      if (isNydusManifest(s.manifest))
        throw new NydusError('ERR_INVALID_ARG', `Source image ${sourceText} is already a Nydus image`);
      const bytes = await notFound(`Config of ${sourceText}`, src.repo.fetchBlob(s.manifest.config.digest));
      return { bytes, config: parseImageConfig(bytes) };
    }),
  );
  const pullElapsed = Date.now() - t0;
  // Reach the target before converting anything: a wrong host or refused credentials fail now.
  await tgt.repo.headManifest(targetTag).catch((e: unknown) => {
    if (e instanceof NydusError && e.code === 'ERR_NOT_FOUND') return undefined;
    throw e;
  });

  // Work dir.
  const srcDir = workDirOf(o.workDir, src.ref);
  const tgtDir = workDirOf(o.workDir, tgt.ref);
  const blobDir = join(tgtDir, 'blobs');
  await mkdir(srcDir, { recursive: true });
  await mkdir(blobDir, { recursive: true });

  // Chunk dict.
  const dict =
    o.chunkDict === undefined ? undefined : await loadChunkDict(o.chunkDict, o, remotes, platforms[0]!);

  const concurrency = o.concurrency ?? Math.max(2, availableParallelism());
  const images: ConvertedImage[] = [];
  const manifestBytes: Buffer[] = [];
  let cacheHits = 0;
  let convertMs = 0;
  const tPushStart: number[] = [];
  for (let i = 0; i < resolved.selected.length; i++) {
    const sel = resolved.selected[i]!;
    const { config } = configs[i]!;
    const platform: Platform = sel.platform ?? {
      os: config.os ?? 'linux',
      architecture: config.architecture ?? hostPlatform().architecture,
      ...(config.variant !== undefined ? { variant: config.variant } : {}),
    };
    const tc = Date.now();
    const sourceLayers = sel.manifest.layers;
    for (const l of sourceLayers) {
      if (layerCompression(l.mediaType) === undefined)
        throw new NydusError(
          'ERR_UNSUPPORTED',
          `Source layer ${l.digest} has media type ${l.mediaType}, not an image layer`,
        );
    }
    const pushes: Promise<unknown>[] = [];
    const outcomes: LayerOutcome[] = [];
    let converted: ConvertedLayer[] = [];
    let failure: unknown;
    try {
      converted = await mapLimit(sourceLayers, concurrency, async (layer, li) => {
        const hex = layer.digest.slice(layer.digest.indexOf(':') + 1);
        let result: ConvertedLayer | undefined;
        let cached = false;
        const hit = cache?.get(layer.digest);
        if (hit !== undefined && cacheRepo !== undefined) {
          try {
            result = await fetchCachedLayer(cacheRepo, hit.target, blobDir, o.fsVersion);
            cached = true;
            cacheHits++;
            log.info(`Layer ${layer.digest} found in build cache: ${hit.target.digest}`);
          } catch (e) {
            log.warn(
              `Build cache entry for ${layer.digest} unusable (${errorText(e)}); converting the layer`,
            );
          }
        }
        if (result === undefined) {
          log.info(`Converting layer ${layer.digest}`);
          o.events?.layerStart?.(layer.digest, `layer ${hex.slice(0, 12)}`, layer.size);
          const blob = await notFound(
            `Layer ${layer.digest} of ${sourceText}`,
            src.repo.openBlob(layer.digest),
          );
          const counted = blob.pipe(counter(layer.digest, o.events));
          blob.on('error', (e: Error) => counted.destroy(e));
          const { stream } = await decompressLayer(counted, {
            mediaType: layer.mediaType,
            what: `Layer ${layer.digest}`,
            log,
          });
          try {
            result = await convertLayerTar(stream, blobDir, `Layer ${layer.digest}`, {
              fsVersion: o.fsVersion,
              compressor: o.compressor,
              chunkSize: o.chunkSize,
              alignedChunk: o.alignedChunk,
              prefetchPatterns: o.prefetchPatterns,
              ...(dict !== undefined ? { chunkDict: dict.path } : {}),
              ...(o.threads !== undefined ? { threads: o.threads } : {}),
              log,
            });
          } finally {
            blob.destroy();
            o.events?.layerDone?.(layer.digest);
          }
          log.debug(
            `Layer ${layer.digest} -> blob ${result.digest} (${result.size} bytes, ${result.stats.files} files, ${result.stats.chunks} chunks)`,
          );
        }
        await writeFile(join(srcDir, layer.digest), result.bootstrap);
        const r = result;
        const outcome: LayerOutcome = {
          source: layer.digest,
          digest: r.digest,
          size: r.size,
          cached,
          push: 'skipped',
        };
        outcomes[li] = outcome;
        log.info(`Pushing blob layer ${r.digest}`);
        const p = pushBlobLayer(
          o,
          store,
          tgt.repo,
          r,
          cached && cacheRef?.host === tgt.ref.host ? cacheRepo?.name : undefined,
          push,
        );
        const done = p.then((how) => {
          outcome.push = how;
        });
        // Settled below (allSettled); until then a quick failure must not count as unhandled.
        done.catch(() => undefined);
        pushes.push(done);
        return r;
      });
    } catch (e) {
      failure = e;
    }
    // Let every started push finish before reporting (no request is left running).
    const settled = await Promise.allSettled(pushes);
    if (failure !== undefined) throw asError(failure);
    for (const s of settled) if (s.status === 'rejected') throw asError(s.reason);

    // Merge the per-layer bootstraps; blob ids become the blob layer digests.
    // A layer whose blob stores no chunk (metadata only, or all deduplicated against the chunk
    // dict) has no blob of its own in its bootstrap: its last blob keeps its id.
    const layerBoots = converted.map((c) => parseBootstrap(c.bootstrap));
    const ownIds = layerBoots.map((b, i) => {
      const last = b.blobs[b.blobs.length - 1];
      return last !== undefined && last.blobId === INLINE_BLOB_ID_PLACEHOLDER
        ? converted[i]!.digest.slice(7)
        : undefined;
    });
    const merged = mergeBootstraps(layerBoots, {
      blobDigests: ownIds as string[],
      prefetchPatterns: o.prefetchPatterns,
      log,
    });
    const bootDir = resolved.selected.length > 1 ? join(tgtDir, platformKey(platform)) : tgtDir;
    await mkdir(bootDir, { recursive: true });
    const bootstrapPath = join(bootDir, 'bootstrap');
    await writeFile(`${bootstrapPath}.tmp`, merged);
    await rename(`${bootstrapPath}.tmp`, bootstrapPath);
    convertMs += Date.now() - tc;
    tPushStart.push(Date.now());

    // Blob layers: one per source layer, then chunk-dict blobs the merged bootstrap references.
    const layerDigests = converted.map((c) => c.digest);
    const mergedBlobIds = parseBootstrap(merged).blobs.map((b) => `sha256:${b.blobId}`);
    const blobLayers: Descriptor[] = converted.map((c) => nydusBlobDescriptor(c.digest, c.size, true));
    for (const id of mergedBlobIds) {
      if (layerDigests.includes(id)) continue;
      const size = dict?.blobs.get(id);
      if (size === undefined)
        throw new NydusError(
          'ERR_NOT_FOUND',
          `Merged bootstrap references blob ${id}, which no layer or chunk dict provides`,
        );
      await ensureDictBlob(o, dict!, tgt.repo, id, size, tgt.ref, push, log);
      blobLayers.push(nydusBlobDescriptor(id, size, true));
    }

    const manifestType = targetManifestMediaType(sel.mediaType, o.oci === true);
    const boot = makeBootstrapLayer(merged, {
      fsVersion: o.fsVersion,
      oci: manifestType === OCI_MANIFEST,
      blobMetas:
        o.fsVersion === 6
          ? converted.flatMap((c) =>
              c.blobMeta === undefined ? [] : [{ name: `${c.digest.slice(7)}.blob.meta`, data: c.blobMeta }],
            )
          : [],
    });
    log.info(`Pushing bootstrap layer ${boot.descriptor.digest}`);
    await push(`Push bootstrap layer ${boot.descriptor.digest}`, () =>
      tgt.repo.pushBlob(boot.descriptor.digest, boot.descriptor.size, boot.bytes),
    );
    const backendOnly = o.backend !== undefined;
    const layers = backendOnly ? [boot.descriptor] : [...blobLayers, boot.descriptor];
    const newConfig = nydusConfig(
      config,
      layers.map((l) => l.annotations?.['containerd.io/uncompressed'] ?? l.digest),
      backendOnly,
    );
    const configBlob = jsonBlob(newConfig, sel.manifest.config.mediaType);
    await push(`Push config ${configBlob.descriptor.digest}`, () =>
      tgt.repo.pushBlob(configBlob.descriptor.digest, configBlob.descriptor.size, configBlob.bytes),
    );
    const { manifest, mediaType } = nydusManifest({
      sourceMediaType: sel.mediaType,
      oci: o.oci === true,
      mergePlatform: o.mergePlatform === true,
      config: configBlob.descriptor,
      layers,
      sourceDigest: sel.descriptor.digest,
      sourceReference: sourceText,
      fsVersion: o.fsVersion,
      ...(sel.manifest.annotations !== undefined ? { sourceAnnotations: sel.manifest.annotations } : {}),
      ...(o.withReferrer === true
        ? { subject: { mediaType: sel.mediaType, digest: sel.descriptor.digest, size: sel.descriptor.size } }
        : {}),
    });
    const mBlob = jsonBlob(manifest, mediaType);
    images.push({
      platform,
      source: sel.descriptor.digest,
      digest: mBlob.descriptor.digest,
      mediaType,
      manifest,
      config: newConfig,
      bootstrapPath,
      layers: outcomes,
      bootstrapLayer: boot.descriptor,
    });
    manifestBytes.push(mBlob.bytes);
  }

  // Manifests, index, cache.
  const tPush = Date.now();
  let digest: string;
  let mediaType: string;
  // One manifest is pushed as such (upstream collapses a one-entry index); more need an index.
  const single = images.length === 1 && o.mergePlatform !== true;
  if (single) {
    const img = images[0]!;
    log.info('Pushing nydus manifest');
    const bytes = manifestBytes[0]!;
    digest = await push(`Push manifest ${targetText}`, () =>
      tgt.repo.putManifest(targetTag, img.mediaType, bytes),
    );
    mediaType = img.mediaType;
  } else {
    const entries: Descriptor[] = [];
    if (o.mergePlatform === true) {
      for (const sel of resolved.selected) {
        await copySourceManifest(src, tgt, sel, sameHost, push, log);
        entries.push(
          sel.platform === undefined ? { ...sel.descriptor } : { ...sel.descriptor, platform: sel.platform },
        );
      }
    }
    for (const [i, img] of images.entries()) {
      const bytes = manifestBytes[i]!;
      log.info(`Pushing nydus manifest for ${formatPlatform(img.platform)}`);
      await push(`Push manifest ${img.digest}`, () => tgt.repo.putManifest(img.digest, img.mediaType, bytes));
      const entry = manifestEntry(
        { bytes, descriptor: { mediaType: img.mediaType, digest: img.digest, size: bytes.length } },
        img.mediaType,
        img.platform,
      );
      entries.push(o.mergePlatform === true ? mergedNydusEntry(entry, img.platform) : entry);
    }
    const { index, mediaType: indexType } = makeIndex(
      entries,
      o.mergePlatform === true
        ? undefined
        : resolved.index === undefined
          ? undefined
          : { mediaType: resolved.index.mediaType, annotations: resolved.index.annotations },
      o.oci === true || o.mergePlatform === true,
    );
    const iBlob = jsonBlob(index, indexType);
    log.info('Pushing manifest index');
    digest = await push(`Push index ${targetText}`, () =>
      tgt.repo.putManifest(targetTag, indexType, iBlob.bytes),
    );
    mediaType = indexType;
  }

  if (cache !== undefined && cacheRepo !== undefined && cacheRef !== undefined) {
    log.info(`Pushing cache ${formatReference(cacheRef)}`);
    try {
      for (const img of images) {
        for (const l of img.layers) {
          if (cacheRepo !== tgt.repo && !o.backend) {
            await push(`Push blob ${l.digest} to cache`, () =>
              cacheRepo.pushBlob(l.digest, l.size, join(blobDir, l.digest.slice(7)), {
                ...(cacheRef.host === tgt.ref.host ? { mountFrom: tgt.ref.repository } : {}),
              }),
            );
          }
          cache.set(l.source, l.digest, l.size);
        }
      }
      await cache.push(
        images.map((img) => ({ platform: img.platform, sourceLayers: img.layers.map((l) => l.source) })),
      );
      log.info(`Pushed cache ${formatReference(cacheRef)}`);
    } catch (e) {
      log.warn(`Cannot push build cache ${formatReference(cacheRef)}: ${errorText(e)}`);
    }
  }

  const sizeOf = (m: ImageManifest): number => m.config.size + m.layers.reduce((a, l) => a + l.size, 0);
  const metric: ConvertMetric = {
    SourceImageSize: resolved.selected.reduce((a, s) => a + sizeOf(s.manifest), 0),
    TargetImageSize: images.reduce((a, img) => a + sizeOf(img.manifest), 0),
    SourcePullElapsed: ns(pullElapsed),
    ConversionElapsed: ns(convertMs),
    TargetPushElapsed: ns(Date.now() - (tPushStart[0] ?? tPush)),
  };
  log.info(`Success convert image ${sourceText} to ${targetText}`);
  return {
    source: sourceText,
    target: targetText,
    digest,
    mediaType,
    images,
    metric,
    cacheHits,
    workDir: o.workDir,
  };
}

/** Push one converted blob to the target registry, or write it to the blob backend. */
async function pushBlobLayer(
  o: ConvertOptions,
  store: ObjectStore | undefined,
  repo: ImageRepo,
  r: ConvertedLayer,
  mountFrom: string | undefined,
  push: <T>(what: string, fn: () => Promise<T>) => Promise<T>,
): Promise<LayerOutcome['push']> {
  if (store !== undefined) {
    const id = r.digest.slice(7);
    const force = o.backend?.forcePush === true;
    const have = force
      ? undefined
      : await push(`Check blob ${id} in ${store.protocol.where}`, () => store.size(id));
    if (have === r.size) {
      o.log.info(`Blob ${id} exists in ${store.protocol.where}, skipped`);
      return 'backend';
    }
    await push(`Push blob ${id} to ${store.protocol.where}`, () => store.upload(id, r.blobPath));
    o.log.info(`Pushed blob ${id} to ${store.protocol.where}`);
    return 'backend';
  }
  if (o.backend?.type === 'localfs') {
    await mkdir(o.backend.dir, { recursive: true });
    const dest = join(o.backend.dir, r.digest.slice(7));
    const have = await stat(dest).then(
      (s) => s.isFile(),
      () => false,
    );
    if (!have || o.backend.forcePush === true) {
      await copyFile(r.blobPath, `${dest}.tmp`);
      await rename(`${dest}.tmp`, dest);
    }
    return 'backend';
  }
  return push(`Push blob layer ${r.digest}`, () =>
    repo.pushBlob(r.digest, r.size, r.blobPath, mountFrom !== undefined ? { mountFrom } : {}),
  );
}

/** A cached blob: downloaded into the work dir (verified) and its bootstrap read from it. */
async function fetchCachedLayer(
  repo: ImageRepo,
  target: Descriptor,
  blobDir: string,
  fsVersion: 5 | 6,
): Promise<ConvertedLayer> {
  const hex = target.digest.slice(target.digest.indexOf(':') + 1);
  const dest = join(blobDir, hex);
  const have = await stat(dest).then(
    (s) => s.size,
    () => -1,
  );
  if (have !== target.size) {
    const tmp = `${dest}.${process.pid}.tmp`;
    try {
      await pipeline(await repo.openBlob(target.digest), createWriteStream(tmp));
      await rename(tmp, dest);
    } finally {
      await rm(tmp, { force: true });
    }
  }
  const { bootstrap, blobMeta } = await readLayerBlob(dest, fsVersion);
  return {
    digest: target.digest,
    size: target.size,
    blobPath: dest,
    bootstrap,
    blobMeta,
    stats: { files: 0, sourceBytes: 0, chunks: 0, dedupChunks: 0, dedupBytes: 0, storedBytes: 0 },
  };
}

interface LoadedDict {
  path: string;
  /** Blob digest -> size, for the manifest. */
  blobs: Map<string, number>;
  /** Where the dict's blobs live (registry dicts). */
  ref?: Reference;
  repo?: ImageRepo;
}

async function loadChunkDict(
  spec: ChunkDictSpec,
  o: ConvertOptions,
  remotes: Remotes,
  platform: Platform,
): Promise<LoadedDict> {
  const dir = join(o.workDir, 'chunk-dict');
  await mkdir(dir, { recursive: true });
  if (spec.source === 'local') {
    const boot = await notFound(`Chunk dict ${spec.path}`, readLayerOrBootstrap(spec.path));
    const path = join(dir, `local-${sha256Hex(boot)}.boot`);
    await writeFile(path, boot);
    const blobs = new Map<string, number>();
    for (const b of parseBootstrap(boot).blobs) blobs.set(`sha256:${b.blobId}`, b.compressedSize);
    return { path, blobs };
  }
  const d = remotes.open(spec.ref, spec.remote ?? o.sourceRemote);
  const res = await resolveImage(d.repo, formatReference(d.ref), referenceTagOrDigest(d.ref), {
    platforms: [platform],
    all: false,
  });
  const m = res.selected[0]!.manifest;
  const bl = findBootstrapLayer(m);
  if (bl === undefined)
    throw new NydusError('ERR_INVALID_ARG', `Chunk dict image ${spec.ref} is not a Nydus image`);
  const boot = await extractBootstrapFromLayer(await d.repo.fetchBlob(bl.digest));
  const path = join(dir, `${bl.digest.slice(7)}.boot`);
  await writeFile(path, boot);
  const blobs = new Map<string, number>();
  for (const l of nydusBlobLayers(m)) blobs.set(l.digest, l.size);
  return { path, blobs, ref: d.ref, repo: d.repo };
}

async function readLayerOrBootstrap(path: string): Promise<Buffer> {
  const { readFile } = await import('node:fs/promises');
  try {
    return await readFile(path);
  } catch (e) {
    throw new NydusError('ERR_NOT_FOUND', `Cannot read "${path}": ${errorText(e)}`, { cause: e });
  }
}

/** Make a chunk-dict blob available in the target repository (mount on the same host, else copy). */
async function ensureDictBlob(
  o: ConvertOptions,
  dict: LoadedDict,
  repo: ImageRepo,
  digest: string,
  size: number,
  target: Reference,
  push: <T>(what: string, fn: () => Promise<T>) => Promise<T>,
  log: Logger,
): Promise<void> {
  if (o.backend !== undefined) return;
  if ((await repo.headBlob(digest)) !== undefined) return;
  if (dict.repo === undefined || dict.ref === undefined)
    throw new NydusError(
      'ERR_NOT_FOUND',
      `Chunk dict blob ${digest} is not in ${formatReference(target)}; push it there first`,
    );
  log.info(`Pushing chunk dict blob ${digest}`);
  const from = dict.repo;
  await push(`Push chunk dict blob ${digest}`, () =>
    dict.ref!.host === target.host
      ? repo.pushBlob(digest, size, () => blobStreamOf(from, digest), { mountFrom: dict.ref!.repository })
      : repo.pushBlob(digest, size, () => blobStreamOf(from, digest)),
  );
}

/** Copy a source manifest with its config and layers into the target repository. */
async function copySourceManifest(
  src: { ref: Reference; repo: ImageRepo },
  tgt: { ref: Reference; repo: ImageRepo },
  sel: SelectedManifest,
  sameHost: boolean,
  push: <T>(what: string, fn: () => Promise<T>) => Promise<T>,
  log: Logger,
): Promise<void> {
  if (src.ref.host === tgt.ref.host && src.ref.repository === tgt.ref.repository) return;
  for (const d of [sel.manifest.config, ...sel.manifest.layers]) {
    log.debug(`Copying ${d.digest} to ${formatReference(tgt.ref)}`);
    await push(`Copy blob ${d.digest}`, () =>
      tgt.repo.pushBlob(
        d.digest,
        d.size,
        () => blobStreamOf(src.repo, d.digest),
        sameHost ? { mountFrom: src.ref.repository } : {},
      ),
    );
  }
  await push(`Copy manifest ${sel.descriptor.digest}`, () =>
    tgt.repo.putManifest(sel.descriptor.digest, sel.mediaType, sel.bytes),
  );
}
