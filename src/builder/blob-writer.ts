import { open, type FileHandle } from 'node:fs/promises';
import type { Compressor, Digester } from '../codec/algorithms.js';
import { compress } from '../codec/compress.js';
import { sha256 } from '../codec/digest.js';
import { BlobIdHasher } from '../format/blob/blob-id.js';
import { CiFlag, encodeBlobMetaHeader, encodeCiEntries, type CiEntry } from '../format/blob/blob-meta.js';
import { encodeTrailerHeader } from '../format/blob/tar-header.js';
import { encodeToc, makeTocEntry, SectionName, type TocEntry } from '../format/blob/toc.js';
import { BlobFeature, ChunkFlag } from '../format/flags.js';
import type { BlobInfo, ChunkInfo } from '../format/model.js';
import { align } from '../util/cursor.js';
import type { ProcessedChunk } from './chunk-pool.js';

export interface BlobWriterOptions {
  /** File to write (a temporary name; the caller renames it once it knows the blob id). */
  path: string;
  version: 5 | 6;
  compressor: Compressor;
  digester: Digester;
  chunkSize: number;
  /** 4 KiB-aligned uncompressed offsets: always for v6, `--aligned-chunk` for v5. */
  alignedChunk: boolean;
  /** Index this blob gets in the bootstrap's blob table. */
  blobIndex: number;
  /** `--features blob-toc` (v6): chunk digest array and ToC at the end. */
  blobToc: boolean;
  /** `--blob-inline-meta`: the bootstrap is appended to the blob. */
  inlineMeta: boolean;
}

/** Placeholder id current builders put into inline bootstraps (rafs-format.md 4.7). */
export const INLINE_BLOB_ID_PLACEHOLDER = 'x'.repeat(64);

export interface FinishedBlob {
  blob: BlobInfo;
  /** The bootstrap embedded in the blob (inline-meta builds). */
  bootstrap?: Buffer;
  size: number;
}

/**
 * Writes one data blob sequentially: chunk data as it comes, then on `finish` the blob meta
 * (v6), tar trailer headers, chunk digests, inline bootstrap and ToC as the options ask
 * (rafs-format.md 4.3). The blob id is the sha256 of everything written except the chunk
 * digest array (4.7).
 */
export class BlobWriter {
  readonly #o: BlobWriterOptions;
  readonly #fh: FileHandle;
  readonly #hash = new BlobIdHasher();
  readonly #chunks: ChunkInfo[] = [];
  #pos = 0;
  #uncompressed = 0;

  private constructor(o: BlobWriterOptions, fh: FileHandle) {
    this.#o = o;
    this.#fh = fh;
  }

  static async create(o: BlobWriterOptions): Promise<BlobWriter> {
    return new BlobWriter(o, await open(o.path, 'w'));
  }

  get chunkCount(): number {
    return this.#chunks.length;
  }

  get path(): string {
    return this.#o.path;
  }

  async #write(data: Buffer, hashed = true): Promise<number> {
    const at = this.#pos;
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.#fh.write(data, done, data.length - done, at + done);
      done += bytesWritten;
    }
    if (hashed) this.#hash.update(data);
    this.#pos += data.length;
    return at;
  }

  /** Append one processed chunk; returns its record (fileOffset 0: the caller sets it). */
  async addChunk(p: ProcessedChunk): Promise<ChunkInfo> {
    const compressedOffset = await this.#write(p.stored);
    const info: ChunkInfo = {
      id: p.id,
      blobIndex: this.#o.blobIndex,
      flags: p.compressed ? ChunkFlag.COMPRESSED : 0,
      compressedOffset,
      compressedSize: p.stored.length,
      uncompressedOffset: this.#uncompressed,
      uncompressedSize: p.uncompressedSize,
      fileOffset: 0,
      index: this.#chunks.length,
      crc32: 0,
    };
    this.#uncompressed += this.#o.alignedChunk ? align(p.uncompressedSize, 4096) : p.uncompressedSize;
    this.#chunks.push(info);
    return info;
  }

  #features(): number {
    const o = this.#o;
    let f = BlobFeature.CAP_TAR_TOC;
    if (o.version === 6) f |= BlobFeature.ALIGNED;
    if (o.blobToc || o.inlineMeta) f |= BlobFeature.HAS_TAR_HEADER;
    if (o.blobToc) f |= BlobFeature.HAS_TOC | BlobFeature.INLINED_CHUNK_DIGEST;
    if (o.inlineMeta) f |= BlobFeature.INLINED_FS_META;
    return f >>> 0;
  }

  async #section(name: string, size: number): Promise<void> {
    await this.#write(encodeTrailerHeader(name, size));
  }

  /**
   * Write the blob's tail and close it. For inline-meta builds `makeBootstrap` gets the final
   * blob entry (with the placeholder id) and returns the bootstrap to embed.
   */
  async finish(makeBootstrap?: (blob: BlobInfo) => Buffer): Promise<FinishedBlob> {
    const o = this.#o;
    const tar = o.blobToc || o.inlineMeta;
    const toc: TocEntry[] = [];
    const chunkBytes = this.#pos;
    const features = this.#features();
    try {
      if (tar) {
        await this.#section(SectionName.IMAGE_BLOB, chunkBytes);
        toc.push({
          ...makeTocEntry(SectionName.IMAGE_BLOB, 'none', 0, Buffer.alloc(0), chunkBytes),
          digest: this.#hash.peek(),
          uncompressedSize: this.#uncompressed,
        });
      }
      let ci = { compressor: 'none' as Compressor, offset: 0, stored: 0, raw: 0 };
      if (o.version === 6) {
        const entries: CiEntry[] = this.#chunks.map((c) => ({
          compressedOffset: c.compressedOffset,
          compressedSize: c.compressedSize,
          uncompressedOffset: c.uncompressedOffset,
          uncompressedSize: c.uncompressedSize,
          flags: c.flags & ChunkFlag.COMPRESSED ? CiFlag.COMPRESSED : 0,
          dataHigh: 0,
          dataLow: 0,
        }));
        const raw = encodeCiEntries(features, entries);
        const packed = o.compressor === 'none' || raw.length === 0 ? raw : compress(o.compressor, raw);
        const ciCompressor: Compressor = packed.length < raw.length ? o.compressor : 'none';
        const stored = ciCompressor === 'none' ? raw : packed;
        const offset = await this.#write(stored);
        const header = encodeBlobMetaHeader({
          features,
          ciCompressor,
          ciEntries: entries.length,
          ciOffset: offset,
          ciCompressedSize: stored.length,
          ciUncompressedSize: raw.length,
          contextOffset: 0,
          contextSize: 0,
          contextCount: 0,
        });
        await this.#write(header);
        ci = { compressor: ciCompressor, offset, stored: stored.length, raw: raw.length };
        if (tar) {
          await this.#section(SectionName.BLOB_META, stored.length + header.length);
          toc.push(makeTocEntry(SectionName.BLOB_META, ciCompressor, offset, raw, stored.length));
          toc.push(makeTocEntry(SectionName.BLOB_META_HEADER, 'none', offset + stored.length, header));
        }
        if (o.blobToc) {
          const digests = Buffer.concat(this.#chunks.map((c) => c.id));
          const at = await this.#write(digests, false);
          await this.#section(SectionName.BLOB_DIGEST, digests.length);
          toc.push(makeTocEntry(SectionName.BLOB_DIGEST, 'none', at, digests));
        }
      }
      const blob = (
        blobId: string,
        compressedSize: number,
        tocSize = 0,
        tocDigest: Buffer = Buffer.alloc(32),
      ): BlobInfo => ({
        index: o.blobIndex,
        blobId,
        chunkSize: o.chunkSize,
        chunkCount: this.#chunks.length,
        compressor: o.compressor,
        digester: o.digester,
        features,
        compressedSize,
        uncompressedSize: this.#uncompressed,
        readaheadOffset: 0,
        readaheadSize: 0,
        ciCompressor: ci.compressor,
        ciOffset: ci.offset,
        ciCompressedSize: ci.stored,
        ciUncompressedSize: ci.raw,
        tocSize,
        tocDigest,
        metaDigest: Buffer.alloc(32),
        metaSize: 0,
        cipher: 0,
        deviceBlocks: this.#uncompressed / 4096,
        mappedBlkaddr: 0,
      });
      let bootstrap: Buffer | undefined;
      let inlineStart = 0;
      if (o.inlineMeta && makeBootstrap !== undefined) {
        inlineStart = this.#pos;
        bootstrap = makeBootstrap(blob(INLINE_BLOB_ID_PLACEHOLDER, inlineStart));
        let stored = bootstrap;
        let how: Compressor = 'none';
        if (o.blobToc) {
          const z = compress('zstd', bootstrap);
          if (z.length < bootstrap.length) {
            stored = z;
            how = 'zstd';
          }
        }
        const at = await this.#write(stored);
        await this.#section(SectionName.IMAGE_BOOT, stored.length);
        toc.push(makeTocEntry(SectionName.IMAGE_BOOT, how, at, bootstrap, stored.length));
      }
      let tocSize = 0;
      let tocDigest: Buffer = Buffer.alloc(32);
      if (o.blobToc) {
        const bytes = encodeToc(toc);
        await this.#write(bytes);
        tocSize = bytes.length;
        tocDigest = sha256(bytes);
      }
      const id = this.#hash.blobId();
      const size = this.#pos;
      const final = o.inlineMeta ? blob(id, inlineStart, 0) : blob(id, size, tocSize, tocDigest);
      return bootstrap === undefined ? { blob: final, size } : { blob: final, bootstrap, size };
    } finally {
      await this.#fh.close();
    }
  }

  /** Close without finishing (on failure); the caller removes the file. */
  async abort(): Promise<void> {
    await this.#fh.close().catch(() => undefined);
  }
}
