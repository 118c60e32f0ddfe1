import { closeSync, openSync, writev, writevSync } from 'node:fs';
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
  #fd: number | undefined;
  readonly #hash = new BlobIdHasher();
  readonly #chunks: ChunkInfo[] = [];
  /** Bytes given to #write (the blob's size so far). */
  #pos = 0;
  /** Bytes handed to the file (written, or being written on the thread pool). */
  #flushed = 0;
  /** Written but not in the file yet, in order; adjacent views of one buffer are merged. */
  #pieces: Buffer[] = [];
  #piecesBytes = 0;
  #uncompressed = 0;
  /** Writes on the thread pool not done yet (see #flush). */
  readonly #writing = new Set<Promise<void>>();
  /** The first of their failures, thrown by the next write or by `finish`. */
  #writeError: Error | undefined;
  /** From `finish` on, every write is made here and now. */
  #syncWrites = false;
  /** Per buffer, its pieces not in the file yet (see `release`). */
  readonly #unwritten = new Map<ArrayBufferLike, number>();
  /** Buffers released while pieces of them were still to write: what to call once they are. */
  readonly #onWritten = new Map<ArrayBufferLike, () => void>();

  private constructor(o: BlobWriterOptions, fd: number) {
    this.#o = o;
    this.#fd = fd;
  }

  static create(o: BlobWriterOptions): Promise<BlobWriter> {
    // An executor that throws rejects the promise.
    return new Promise((resolve) => resolve(new BlobWriter(o, openSync(o.path, 'w'))));
  }

  get chunkCount(): number {
    return this.#chunks.length;
  }

  get path(): string {
    return this.#o.path;
  }

  /**
   * Append bytes (kept until the next flush: they must not change). Writes to the page cache
   * are cheap, so they are made synchronously, a few MiB at a time.
   */
  #write(data: Buffer, hashed = true): number {
    const at = this.#pos;
    if (hashed) this.#hash.update(data);
    this.#pos += data.length;
    const last = this.#pieces[this.#pieces.length - 1];
    if (
      last !== undefined &&
      last.buffer === data.buffer &&
      last.byteOffset + last.length === data.byteOffset
    )
      this.#pieces[this.#pieces.length - 1] = Buffer.from(
        last.buffer,
        last.byteOffset,
        last.length + data.length,
      );
    else {
      this.#pieces.push(data);
      this.#unwritten.set(data.buffer, (this.#unwritten.get(data.buffer) ?? 0) + 1);
    }
    this.#piecesBytes += data.length;
    if (this.#piecesBytes >= FLUSH_BYTES || this.#pieces.length >= FLUSH_PIECES) this.#flush();
    return at;
  }

  /**
   * Write the pending pieces at their place in the file. While chunks come in, the copy into
   * the page cache runs on the thread pool (a few MiB at a time, at most MAX_WRITING of them),
   * which keeps it off the thread that feeds the workers; the pieces stay referenced until then.
   */
  #flush(): void {
    if (this.#writeError !== undefined) throw this.#writeError;
    const pieces = this.#pieces;
    this.#pieces = [];
    this.#piecesBytes = 0;
    const at = this.#flushed;
    const len = pieces.reduce((n, p) => n + p.length, 0);
    this.#flushed += len;
    if (this.#syncWrites || this.#writing.size >= MAX_WRITING) {
      this.#writeAt(pieces, at);
      this.#written(pieces);
    } else {
      const done = new Promise<void>((resolve) => {
        writev(this.#fd!, pieces, at, (e, n) => {
          try {
            if (e !== null) throw e;
            if (n < len) this.#writeAt(pieces, at, n);
            this.#written(pieces);
          } catch (err) {
            this.#writeError ??= err instanceof Error ? err : new Error(String(err));
          }
          this.#writing.delete(done);
          resolve();
        });
      });
      this.#writing.add(done);
    }
  }

  /** `pieces` are in the file: call what waits for their buffers to have no piece left to write. */
  #written(pieces: readonly Buffer[]): void {
    for (const p of pieces) {
      const n = (this.#unwritten.get(p.buffer) ?? 1) - 1;
      if (n > 0) {
        this.#unwritten.set(p.buffer, n);
        continue;
      }
      this.#unwritten.delete(p.buffer);
      const free = this.#onWritten.get(p.buffer);
      if (free !== undefined) {
        this.#onWritten.delete(p.buffer);
        free();
      }
    }
  }

  /**
   * The caller is done with `buffer` (it gave chunks in it to `addChunk`): `free` is called once
   * every piece of it is in the file, at once when none is waiting. After a failed write it is
   * never called (the build fails; the buffer is left to the garbage collector).
   */
  release(buffer: ArrayBufferLike, free: () => void): void {
    if (this.#unwritten.has(buffer)) this.#onWritten.set(buffer, free);
    else free();
  }

  /** Wait for the writes on the thread pool; throws the first failure. */
  async #settle(): Promise<void> {
    while (this.#writing.size > 0) await Promise.all([...this.#writing]);
    if (this.#writeError !== undefined) throw this.#writeError;
  }

  /** Write `all` here and now at `at`, the first `done` bytes of them being there already. */
  #writeAt(all: Buffer[], at: number, done = 0): void {
    let pieces = all;
    let pos = at;
    let n = done;
    for (;;) {
      // Go on after what was written.
      pos += n;
      let i = 0;
      while (i < pieces.length && n >= pieces[i]!.length) n -= pieces[i++]!.length;
      pieces = pieces.slice(i);
      if (pieces.length === 0) return;
      if (n > 0) pieces[0] = pieces[0]!.subarray(n);
      n = writevSync(this.#fd!, pieces, pos);
    }
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

/** Written bytes are flushed to the file at this size, or this many pieces. */
const FLUSH_BYTES = 4 * 1024 * 1024;
const FLUSH_PIECES = 512;
/** Flushes on the thread pool at once; past that, a flush writes synchronously. */
const MAX_WRITING = 4;
