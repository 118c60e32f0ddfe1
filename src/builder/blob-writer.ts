import { closeSync, ftruncateSync, writeSync } from 'node:fs';
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
import { alignedBuffer, DIRECT_ALIGN, openForWrite } from '../util/direct-io.js';
import { pwriteFull } from '../util/file-io.js';
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
  /**
   * Write with O_DIRECT where the file system takes it (util/direct-io.ts): much less system
   * time, but the blob is not left in the page cache for a reader that comes right after.
   */
  directIo?: boolean;
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
  #fd: number | undefined;
  /** The file is open with O_DIRECT (util/direct-io.ts): whole aligned stages only, cut to size at the end. */
  readonly #direct: boolean;
  readonly #hash = new BlobIdHasher();
  readonly #chunks: ChunkInfo[] = [];
  /** Bytes given to #write (the blob's size so far). */
  #pos = 0;
  /** Bytes handed to the file (written, or being written on the thread pool). */
  #flushed = 0;
  /** Where #write copies bytes until STAGE_BYTES are there; then it goes to the file whole. */
  #stage: Buffer;
  #staged = 0;
  /** Stages back from their writes, for the next ones. */
  readonly #spare: Buffer[] = [];
  #uncompressed = 0;
  /** Writes on the thread pool not done yet (see #flush). */
  readonly #writing = new Set<Promise<void>>();
  /** The first of their failures, thrown by the next write or by `finish`. */
  #writeError: Error | undefined;
  /** From `finish` on, every write is made here and now. */
  #syncWrites = false;

  private constructor(o: BlobWriterOptions, fd: number, direct: boolean) {
    this.#o = o;
    this.#fd = fd;
    this.#direct = direct;
    this.#stage = this.#newStage();
  }

  static create(o: BlobWriterOptions): Promise<BlobWriter> {
    // An executor that throws rejects the promise.
    return new Promise((resolve) => {
      const { fd, direct } = openForWrite(o.path, o.directIo === true);
      resolve(new BlobWriter(o, fd, direct));
    });
  }

  get chunkCount(): number {
    return this.#chunks.length;
  }

  get path(): string {
    return this.#o.path;
  }

  /** Whether the blob is written with O_DIRECT. */
  get direct(): boolean {
    return this.#direct;
  }

  #newStage(): Buffer {
    return (this.#direct ? alignedBuffer(STAGE_BYTES) : undefined) ?? Buffer.allocUnsafeSlow(STAGE_BYTES);
  }

  /**
   * Append bytes. They are copied into the stage at once (the caller may reuse its buffer as
   * soon as this returns): a full stage goes to the file.
   */
  #write(data: Buffer, hashed = true): number {
    const at = this.#pos;
    if (hashed) this.#hash.update(data);
    this.#pos += data.length;
    for (let off = 0; off < data.length;) {
      const n = Math.min(STAGE_BYTES - this.#staged, data.length - off);
      data.copy(this.#stage, this.#staged, off, off + n);
      this.#staged += n;
      off += n;
      if (this.#staged === STAGE_BYTES) this.#flush();
    }
    return at;
  }

  /**
   * Write the stage at its place in the file. While chunks come in, the write runs on the
   * thread pool (at most MAX_WRITING at once, each with its own stage), which keeps it off the
   * thread that feeds the workers; past that, and from `finish` on, it is made here and now.
   * Only the last stage is partial: in direct mode it is written padded to a whole block (the
   * file is cut to size at the end).
   */
  #flush(): void {
    if (this.#writeError !== undefined) throw this.#writeError;
    const len = this.#staged;
    if (len === 0) return;
    const stage = this.#stage;
    const at = this.#flushed;
    this.#flushed += len;
    this.#staged = 0;
    const out = stage.subarray(0, this.#direct ? align(len, DIRECT_ALIGN) : len);
    if (this.#syncWrites || this.#writing.size >= MAX_WRITING) {
      writeAllSync(this.#fd!, out, at);
      return;
    }
    this.#stage = this.#spare.pop() ?? this.#newStage();
    const done = pwriteFull(this.#fd!, out, at)
      .catch((err: unknown) => {
        this.#writeError ??= err instanceof Error ? err : new Error(String(err));
      })
      .finally(() => {
        this.#spare.push(stage);
        this.#writing.delete(done);
      });
    this.#writing.add(done);
  }

  /** Wait for the writes on the thread pool; throws the first failure. */
  async #settle(): Promise<void> {
    while (this.#writing.size > 0) await Promise.all([...this.#writing]);
    if (this.#writeError !== undefined) throw this.#writeError;
  }

  /** Append one processed chunk; returns its record (fileOffset 0: the caller sets it). */
  addChunk(p: ProcessedChunk): ChunkInfo {
    const compressedOffset = this.#write(p.stored);
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

  #section(name: string, size: number): void {
    this.#write(encodeTrailerHeader(name, size));
  }

  /**
   * Write the blob's tail and close it. For inline-meta builds `makeBootstrap` gets the final
   * blob entry (with the placeholder id) and returns the bootstrap to embed.
   */
  async finish(makeBootstrap?: (blob: BlobInfo) => Buffer): Promise<FinishedBlob> {
    try {
      this.#syncWrites = true;
      const r = this.#finish(makeBootstrap);
      await this.#settle();
      // Direct writes padded the last block, and the probe may have written past a tiny blob.
      if (this.#direct) ftruncateSync(this.#fd!, this.#pos);
      return r;
    } finally {
      await this.#settle().catch(() => undefined);
      this.#close();
    }
  }

  #finish(makeBootstrap?: (blob: BlobInfo) => Buffer): FinishedBlob {
    const o = this.#o;
    const tar = o.blobToc || o.inlineMeta;
    const toc: TocEntry[] = [];
    const chunkBytes = this.#pos;
    const features = this.#features();
    if (tar) {
      this.#section(SectionName.IMAGE_BLOB, chunkBytes);
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
      const offset = this.#write(stored);
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
      this.#write(header);
      ci = { compressor: ciCompressor, offset, stored: stored.length, raw: raw.length };
      if (tar) {
        this.#section(SectionName.BLOB_META, stored.length + header.length);
        toc.push(makeTocEntry(SectionName.BLOB_META, ciCompressor, offset, raw, stored.length));
        toc.push(makeTocEntry(SectionName.BLOB_META_HEADER, 'none', offset + stored.length, header));
      }
      if (o.blobToc) {
        const digests = Buffer.concat(this.#chunks.map((c) => c.id));
        const at = this.#write(digests, false);
        this.#section(SectionName.BLOB_DIGEST, digests.length);
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
      const at = this.#write(stored);
      this.#section(SectionName.IMAGE_BOOT, stored.length);
      toc.push(makeTocEntry(SectionName.IMAGE_BOOT, how, at, bootstrap, stored.length));
    }
    let tocSize = 0;
    let tocDigest: Buffer = Buffer.alloc(32);
    if (o.blobToc) {
      const bytes = encodeToc(toc);
      this.#write(bytes);
      tocSize = bytes.length;
      tocDigest = sha256(bytes);
    }
    const id = this.#hash.blobId();
    const size = this.#pos;
    const final = o.inlineMeta ? blob(id, inlineStart, 0) : blob(id, size, tocSize, tocDigest);
    this.#flush();
    return bootstrap === undefined ? { blob: final, size } : { blob: final, bootstrap, size };
  }

  #close(): void {
    const fd = this.#fd;
    this.#fd = undefined;
    if (fd !== undefined) closeSync(fd);
  }

  /** Close without finishing (on failure); the caller removes the file. */
  async abort(): Promise<void> {
    // Not closed under a write still on the thread pool (its descriptor could be reused).
    await this.#settle().catch(() => undefined);
    try {
      this.#close();
    } catch {
      // nothing more to do: the file is removed
    }
  }
}

/** Bytes written to the file at once: a multiple of DIRECT_ALIGN. */
const STAGE_BYTES = 1024 * 1024;
/** Writes on the thread pool at once; past that, a flush writes synchronously. */
const MAX_WRITING = 4;

/** pwrite(2) all of `data` at `position`, here and now. */
function writeAllSync(fd: number, data: Buffer, position: number): void {
  for (let done = 0; done < data.length;) {
    const n = writeSync(fd, data, done, data.length - done, position + done);
    if (n === 0) throw new Error(`short write at ${position + done}`);
    done += n;
  }
}
