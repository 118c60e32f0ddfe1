import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { DecompressStream } from 'zstd-napi';
import { build, GUNZIP_CHUNK, type BuildResult } from '../builder/build.js';
import type { Compressor } from '../codec/algorithms.js';
import { errorText, FormatError, NydusError } from '../errors/errors.js';
import { extractInlineBootstrap, readBlobTrailer, readTocEntry } from '../format/blob/blob-layout.js';
import { findTocEntry, SectionName } from '../format/blob/toc.js';
import { parseBootstrap } from '../format/bootstrap.js';
import type { Logger } from '../log/logger.js';
import { layerCompression } from '../oci/media-types.js';
import { FileBlobReader } from '../storage/localfs.js';

/** How a source layer's tar is compressed. */
export type LayerCompression = 'gzip' | 'zstd' | 'none';

const GZIP_MAGIC = Buffer.from([0x1f, 0x8b]);
const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);

/** Compression by magic bytes (as containerd's DecompressStream decides): gzip, zstd, else a plain tar. */
export function detectCompression(head: Buffer): LayerCompression {
  if (head.length >= 2 && head.subarray(0, 2).equals(GZIP_MAGIC)) return 'gzip';
  if (head.length >= 4 && head.subarray(0, 4).equals(ZSTD_MAGIC)) return 'zstd';
  return 'none';
}

/**
 * A layer blob stream as a plain tar stream: the first bytes decide the decompressor (the media
 * type only produces a debug note when it disagrees). Errors of the source (a broken download,
 * a digest mismatch) and of the decompressor end the returned stream with that error.
 */
export async function decompressLayer(
  src: Readable,
  o: { mediaType?: string; what?: string; log?: Logger } = {},
): Promise<{ stream: Readable; compression: LayerCompression }> {
  const it = src[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const parts: Buffer[] = [];
  let have = 0;
  while (have < 4) {
    const r = await it.next();
    if (r.done === true) break;
    const b = Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value);
    parts.push(b);
    have += b.length;
  }
  const head = Buffer.concat(parts);
  const compression = detectCompression(head);
  const declared = o.mediaType === undefined ? undefined : layerCompression(o.mediaType);
  if (declared !== undefined && declared !== compression)
    o.log?.debug(
      `${o.what ?? 'Layer'} has media type ${o.mediaType} but its data is ${compression === 'none' ? 'uncompressed' : compression}`,
    );
  const body = Readable.from(
    (async function* () {
      if (head.length > 0) yield head;
      for (;;) {
        const r = await it.next();
        if (r.done === true) return;
        yield r.value;
      }
    })(),
    { objectMode: false },
  );
  if (compression === 'none') return { stream: body, compression };
  const dec: NodeJS.ReadWriteStream & Readable =
    compression === 'gzip' ? createGunzip({ chunkSize: GUNZIP_CHUNK }) : new DecompressStream();
  body.on('error', (e: Error) => dec.destroy(e));
  dec.on('error', () => body.destroy());
  body.pipe(dec);
  return { stream: dec, compression };
}

export interface LayerBuildOptions {
  fsVersion: 5 | 6;
  compressor: Compressor;
  chunkSize: number;
  /** `--fs-align-chunk` (v5; v6 always aligns). */
  alignedChunk: boolean;
  /** Prefetch patterns (upstream's default is "/"). */
  prefetchPatterns: readonly string[];
  /** A chunk-dict bootstrap file to deduplicate against. */
  chunkDict?: string;
  threads?: number;
  log: Logger;
  onProgress?: (bytes: number) => void;
}

export interface ConvertedLayer {
  /** "sha256:<hex>" of the blob file: the layer digest, and (hex) the blob id nydusd fetches. */
  digest: string;
  size: number;
  /** The blob file (`<blobDir>/<hex>`). */
  blobPath: string;
  /** The layer's own bootstrap (inline in the blob; its own blob id is a placeholder there). */
  bootstrap: Buffer;
  /** v6: the `<blob id>.blob.meta` cache file of this blob (ci ‖ padding ‖ header), for the bootstrap layer. */
  blobMeta: Buffer | undefined;
  stats: BuildResult['stats'];
}

async function sha256OfFile(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

/**
 * Convert one layer (a plain tar stream) into a Nydus data blob the way upstream's converter
 * runs `nydus-image create`: type tar-rafs, `--blob-inline-meta`, v6 `--features blob-toc`,
 * `--whiteout-spec none` (markers stay in the layer and are applied at merge), fs prefetch. The
 * tar is never unpacked to disk: entries flow into the chunk pipeline as they arrive. The blob
 * is named by its sha256 in `blobDir`.
 */
export async function convertLayerTar(
  tar: Readable,
  blobDir: string,
  what: string,
  o: LayerBuildOptions,
): Promise<ConvertedLayer> {
  await mkdir(blobDir, { recursive: true });
  const tmp = join(blobDir, `.layer-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2)}.tmp`);
  let result: BuildResult;
  try {
    result = await build({
      source: what,
      type: 'tar-rafs',
      input: tar,
      fsVersion: o.fsVersion,
      compressor: o.compressor,
      digester: 'blake3',
      chunkSize: o.chunkSize,
      alignedChunk: o.alignedChunk,
      blob: tmp,
      inlineMeta: true,
      blobToc: o.fsVersion === 6,
      ...(o.chunkDict !== undefined ? { chunkDict: o.chunkDict } : {}),
      whiteoutSpec: 'none',
      prefetchPatterns: o.prefetchPatterns,
      repeatable: false,
      alwaysWriteBlob: true,
      log: o.log,
      ...(o.threads !== undefined ? { threads: o.threads } : {}),
      ...(o.onProgress !== undefined ? { onProgress: o.onProgress } : {}),
    });
  } catch (e) {
    await rm(tmp, { force: true });
    tar.destroy();
    if (e instanceof NydusError) throw new NydusError(e.code, `${what}: ${e.message}`, { cause: e });
    throw new NydusError('ERR_IO', `${what}: ${errorText(e)}`, { cause: e });
  }
  if (result.newBlob === undefined) throw new NydusError('ERR_IO', `${what}: the builder wrote no blob`);
  try {
    const hex = await sha256OfFile(tmp);
    const blobPath = join(blobDir, hex);
    await rename(tmp, blobPath);
    const { bootstrap, blobMeta } = await readLayerBlob(blobPath, o.fsVersion);
    return {
      digest: `sha256:${hex}`,
      size: result.newBlob.size,
      blobPath,
      bootstrap,
      blobMeta,
      stats: result.stats,
    };
  } finally {
    await rm(tmp, { force: true });
  }
}

/**
 * The inline bootstrap of a Nydus layer blob file, and (v6) its blob meta in the
 * `<blob id>.blob.meta` cache-file form (uncompressed ci ‖ zero pad to 4 KiB ‖ 4096-byte header).
 */
export async function readLayerBlob(
  path: string,
  fsVersion: 5 | 6,
): Promise<{ bootstrap: Buffer; blobMeta: Buffer | undefined }> {
  const reader = await FileBlobReader.open(path);
  try {
    const readAt = (off: number, len: number): Promise<Buffer> => reader.read(off, len);
    const bootstrap = await extractInlineBootstrap(readAt, reader.size);
    if (bootstrap === undefined) throw new FormatError(`Nydus blob "${path}" has no inline bootstrap`);
    parseBootstrap(bootstrap);
    let blobMeta: Buffer | undefined;
    if (fsVersion === 6) {
      const trailer = await readBlobTrailer(readAt, reader.size);
      const toc = trailer?.toc?.entries ?? [];
      const ci = findTocEntry(toc, SectionName.BLOB_META);
      const header = findTocEntry(toc, SectionName.BLOB_META_HEADER);
      if (ci !== undefined && header !== undefined) {
        const ciData = await readTocEntry(readAt, reader.size, ci);
        const headerData = await readTocEntry(readAt, reader.size, header);
        const padded = Math.ceil(ciData.length / 4096) * 4096;
        blobMeta = Buffer.alloc(padded + headerData.length);
        ciData.copy(blobMeta, 0);
        headerData.copy(blobMeta, padded);
      }
    }
    return { bootstrap, blobMeta };
  } finally {
    await reader.close();
  }
}
