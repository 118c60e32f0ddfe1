import { NydusError, FormatError } from '../errors/errors.js';
import { isDir, isReg } from '../format/flags.js';
import type { Bootstrap, ChunkInfo, DirEntry, InodeAttr } from '../format/model.js';
import { BlobDevice, NOTHING_TO_RELEASE, type PinnedChunks } from '../storage/blob-device.js';
import type { BlobReader, BlobSource } from '../storage/blob-source.js';
import type { ChunkCache } from '../storage/chunk-cache.js';
import { loadBlobChunks } from './blob-chunks.js';

export interface ReadOptions {
  /** Verify every chunk's digest (and CRC-32C when recorded) before using it. */
  verify?: boolean;
}

export interface RafsImageOptions {
  /**
   * Describes chunks the bootstrap's own tables lack; by default they come from the data blob's
   * blob meta (ci table) and chunk digest array.
   */
  resolver?: ChunkResolver;
  /** Chunk cache consulted before the backend; without one every read goes to the backend. */
  cache?: ChunkCache;
  /** Verify every chunk before it is used or cached (upstream `rafs.validate`), whatever a read asks. */
  validate?: boolean;
  /** Blobs come from a backend that is not local: see `BlobDeviceOptions.untrusted`. */
  untrusted?: boolean;
  /**
   * Bytes of recently used decompressed chunks kept in memory (least recently used out first),
   * so a file read in pieces smaller than a chunk decompresses each chunk once. Default 8 MiB;
   * 0 turns it off.
   */
  recentBytes?: number;
  /**
   * When a file read has to fetch its last chunk, the file's following chunks up to this many
   * bytes are fetched too, in the background, into the recent-chunk memory (upstream's read
   * amplification, `rafs.batch_size`). Default 1 MiB; 0 turns it off.
   */
  readAheadBytes?: number;
  /**
   * Also read ahead across files, in blob order, once reads walk a blob sequentially (a reader
   * going through a tree in the order it was built, like `tar` or a copy): each read that
   * continues where the last one of that blob ended grows the window (64 KiB, doubling, up to
   * `readAheadBytes`) of chunks fetched ahead of it; a read elsewhere resets it, so scattered
   * reads (a program starting) fetch nothing extra. For remote backends, where every request
   * costs a round trip.
   */
  blobReadAhead?: boolean;
  /**
   * Reuse chunk-sized buffers instead of allocating one per fetched chunk (a daemon streaming
   * big files). Reads then go through `readFileShared`, whose bytes stay valid until released;
   * `readFile` and `readChunk` return copies.
   */
  reuseBuffers?: boolean;
}

/**
 * Bytes of a read, as views of shared (maybe pooled) chunk buffers: valid until `release()`.
 * A read across chunks comes in several parts, to be used in order.
 */
export interface SharedBytes {
  readonly parts: readonly Buffer[];
  /** Bytes in all parts. */
  readonly length: number;
  /** Let the buffers be reused; call once, after the last use of the parts. */
  release(): void;
}

/** Bytes no one else shares. */
function owned(data: Buffer): SharedBytes {
  return { parts: [data], length: data.length, release: NOTHING_TO_RELEASE };
}

/** Default of how far a file read that missed fetches ahead (upstream `rafs.batch_size`, 1 MiB). */
const DEFAULT_READ_AHEAD = 1 << 20;

/** The first window of a blob-order read-ahead streak. */
const BLOB_WINDOW_START = 64 << 10;

/** A blob walked by reads: its chunks in blob order, where the last read ended, the window. */
interface BlobWalk {
  order: readonly ChunkInfo[] | undefined;
  end: number;
  window: number;
}

/** The chunks of blob `blobIndex` by compressed offset, each once. */
function blobOrder(all: readonly ChunkInfo[], blobIndex: number): ChunkInfo[] {
  const seen = new Set<number>();
  const out: ChunkInfo[] = [];
  for (const c of all) {
    if (c.blobIndex !== blobIndex || seen.has(c.index)) continue;
    seen.add(c.index);
    out.push(c);
  }
  return out.sort((a, b) => a.compressedOffset - b.compressedOffset);
}

/** Files whose chunk lists are remembered. */
const CHUNK_LISTS_KEPT = 256;

/**
 * Chunks overlapping [offset, end) of a list in file order: a binary search for the first one,
 * so a read of a huge file does not scan all its chunks.
 */
function chunksIn(chunks: readonly ChunkInfo[], offset: number, end: number): ChunkInfo[] {
  let lo = 0;
  let hi = chunks.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const c = chunks[mid]!;
    if (c.fileOffset + c.uncompressedSize <= offset) lo = mid + 1;
    else hi = mid;
  }
  const out: ChunkInfo[] = [];
  for (let i = lo; i < chunks.length && chunks[i]!.fileOffset < end; i++) {
    const c = chunks[i]!;
    if (c.fileOffset + c.uncompressedSize > offset) out.push(c);
  }
  return out;
}

/** Hooks a bootstrap may offer beyond `Bootstrap` (v6): raw chunk refs and plain inline data. */
interface V6Extras {
  chunkRefs(ino: number): { blobIndex: number; ciIndex: number; blkaddr: number }[];
  inlineData(ino: number): Buffer | undefined;
}

function hasV6Extras(b: Bootstrap): b is Bootstrap & V6Extras {
  return typeof (b as Partial<V6Extras>).chunkRefs === 'function';
}

/** Resolves chunks a bootstrap cannot describe by itself (v6 without a chunk table entry). */
export type ChunkResolver = (blobIndex: number, ciIndex: number) => Promise<ChunkInfo>;

export interface WalkEntry {
  /** Absolute path inside the image, raw bytes; "/" for the root. */
  path: Buffer;
  name: Buffer;
  ino: number;
  parent: number;
  attr: InodeAttr;
}

/**
 * An opened RAFS image: the filesystem view of a bootstrap (path lookup, walk, attributes, a
 * file's chunks) over a blob device that serves the chunks. File ranges are assembled from
 * chunks the device reads (single flight, merged reads, cache, verification: see
 * storage/blob-device.ts); the image decides which chunks a read needs and which ones to read
 * ahead.
 */
export class RafsImage {
  readonly bootstrap: Bootstrap;
  readonly cache: ChunkCache | undefined;
  /** Fetching and caching of the image's blob data. */
  readonly device: BlobDevice;
  readonly #resolver: ChunkResolver;
  readonly #blobChunks = new Map<number, Promise<ChunkInfo[]>>();
  readonly #readAhead: number;
  readonly #blobReadAhead: boolean;
  /** Per blob: its chunks in blob order (made at the first sequential streak) and the streak. */
  readonly #blobWalks = new Map<number, BlobWalk>();
  /** Chunk lists of recently read files, least recently used first. */
  readonly #chunkLists = new Map<number, ChunkInfo[]>();

  constructor(bootstrap: Bootstrap, source: BlobSource, opts: RafsImageOptions = {}) {
    this.bootstrap = bootstrap;
    this.cache = opts.cache;
    this.device = new BlobDevice(bootstrap, source, {
      chunkSize: bootstrap.superblock.chunkSize,
      cache: opts.cache,
      validate: opts.validate,
      untrusted: opts.untrusted,
      recentBytes: opts.recentBytes,
      reuseBuffers: opts.reuseBuffers,
    });
    // Read-ahead lands in the recent memory: without it there is nowhere to keep it.
    this.#readAhead =
      this.device.recentLimit === 0 ? 0 : Math.max(0, opts.readAheadBytes ?? DEFAULT_READ_AHEAD);
    this.#blobReadAhead = opts.blobReadAhead === true && this.#readAhead > 0;
    this.#resolver = opts.resolver ?? ((blobIndex, ciIndex) => this.#fromBlobMeta(blobIndex, ciIndex));
  }

  /** Reads issued to the backend so far (merged reads count once). */
  get backendReads(): number {
    return this.device.backendReads;
  }

  /** Bytes asked of the backend so far. */
  get backendBytes(): number {
    return this.device.backendBytes;
  }

  /** How the chunk buffer pool is doing (undefined without `reuseBuffers`). */
  get bufferPool(): { slotSize: number; created: number; reused: number; idle: number } | undefined {
    return this.device.bufferPool;
  }

  async #fromBlobMeta(blobIndex: number, ciIndex: number): Promise<ChunkInfo> {
    let table = this.#blobChunks.get(blobIndex);
    if (table === undefined) {
      const blob = this.bootstrap.blobs[blobIndex];
      if (blob === undefined)
        throw new FormatError(`Chunk refers to blob index ${blobIndex}, which does not exist`);
      table = this.blobReader(blobIndex).then((r) => loadBlobChunks(r, blob));
      table.catch(() => this.#blobChunks.delete(blobIndex));
      this.#blobChunks.set(blobIndex, table);
    }
    const c = (await table)[ciIndex];
    if (c === undefined)
      throw new FormatError(`Chunk ${ciIndex} is not in the blob meta of blob index ${blobIndex}`);
    return c;
  }

  /** The reader of blob `index`, opened once. */
  blobReader(index: number): Promise<BlobReader> {
    return this.device.blobReader(index);
  }

  /** Wait for chunks still being stored in the cache, then close the blob readers. */
  close(): Promise<void> {
    return this.device.close();
  }

  /** Resolve a path like "/a/b" (raw bytes or string) to its entry; undefined when absent. */
  lookupPath(path: string | Buffer): DirEntry | undefined {
    const p = typeof path === 'string' ? Buffer.from(path) : path;
    const b = this.bootstrap;
    let cur: DirEntry = { name: Buffer.from('/'), ino: b.rootIno, type: 0o040000 };
    for (const part of splitPath(p)) {
      if (!isDir(cur.type)) return undefined;
      const next = b.lookup(cur.ino, part);
      if (next === undefined) return undefined;
      cur = next;
    }
    return cur;
  }

  /**
   * Every entry in depth-first pre-order (a directory, then its children in byte order), each
   * hardlink occurrence included. Directories reached twice mean a cycle and are refused.
   */
  *walk(): Generator<WalkEntry> {
    const b = this.bootstrap;
    const root = b.getAttr(b.rootIno);
    if (!isDir(root.mode)) throw new FormatError(`Root inode ${b.rootIno} is not a directory`);
    const seenDirs = new Set<number>([b.rootIno]);
    yield { path: Buffer.from('/'), name: Buffer.from('/'), ino: b.rootIno, parent: b.rootIno, attr: root };
    type Frame = { ino: number; path: Buffer; pos: number; count: number; batch: DirEntry[]; bi: number };
    const frame = (ino: number, path: Buffer): Frame => ({
      ino,
      path,
      pos: 0,
      count: b.childCount(ino),
      batch: [],
      bi: 0,
    });
    const stack: Frame[] = [frame(b.rootIno, Buffer.alloc(0))];
    const BATCH = 256;
    while (stack.length > 0) {
      const top = stack[stack.length - 1]!;
      if (top.pos >= top.count) {
        stack.pop();
        continue;
      }
      if (top.bi >= top.batch.length) {
        top.batch = b.readdir(top.ino, top.pos, BATCH);
        top.bi = 0;
        if (top.batch.length === 0) {
          throw new FormatError(
            `Directory inode ${top.ino} lists ${top.count} children but returned none at ${top.pos}`,
          );
        }
      }
      const e = top.batch[top.bi++]!;
      top.pos++;
      const attr = b.getAttr(e.ino);
      const path = Buffer.concat([top.path, Buffer.from('/'), e.name]);
      yield { path, name: e.name, ino: e.ino, parent: top.ino, attr };
      if (isDir(attr.mode)) {
        if (seenDirs.has(e.ino))
          throw new FormatError(`Directory inode ${e.ino} is reachable twice (a cycle in the tree)`);
        seenDirs.add(e.ino);
        stack.push(frame(e.ino, path));
      }
    }
  }

  /** Chunks of a regular file in file order, resolved through the blob's ci table if needed. */
  async chunks(ino: number): Promise<ChunkInfo[]> {
    const b = this.bootstrap;
    try {
      return b.chunks(ino);
    } catch (e) {
      if (!(e instanceof NydusError && e.code === 'ERR_NOT_FOUND' && hasV6Extras(b))) throw e;
    }
    const resolver = this.#resolver;
    const chunkSize = b.superblock.chunkSize;
    const out: ChunkInfo[] = [];
    const refs = b.chunkRefs(ino);
    for (let k = 0; k < refs.length; k++) {
      const r = refs[k]!;
      const c = await resolver(r.blobIndex, r.ciIndex);
      if (c.uncompressedOffset !== r.blkaddr * 4096) {
        throw new FormatError(
          `Inode ${ino} chunk ${k}: block address ${r.blkaddr} disagrees with the blob's chunk info`,
        );
      }
      out.push({ ...c, fileOffset: k * chunkSize });
    }
    return out;
  }

  /** Bytes of one chunk, decompressed, verified when asked. */
  readChunk(c: ChunkInfo, opts: ReadOptions = {}): Promise<Buffer> {
    return this.device.readChunk(c, opts);
  }

  /** Whether chunk `c` is stored in the cache (false without a cache). */
  isChunkCached(c: ChunkInfo): Promise<boolean> {
    return this.device.isChunkCached(c);
  }

  /**
   * Fetch chunks of one blob into the cache at low priority (prefetch): see
   * `BlobDevice.prefetchChunks`.
   */
  prefetchChunks(chunks: readonly ChunkInfo[], signal?: AbortSignal): Promise<void> {
    return this.device.prefetchChunks(chunks, signal);
  }

  /**
   * Read `length` bytes at `offset` of regular file `ino` (fewer at the end of the file).
   * Holes not covered by any chunk read as zeros. The result may be a view of a chunk buffer
   * shared with other reads: callers must not modify it.
   */
  async readFile(ino: number, offset: number, length: number, opts: ReadOptions = {}): Promise<Buffer> {
    const r = await this.readFileShared(ino, offset, length, opts);
    // Pooled bytes are reused once released: the caller gets its own copy.
    const only = r.parts.length === 1 && r.release === NOTHING_TO_RELEASE ? r.parts[0] : undefined;
    const data = only ?? Buffer.concat(r.parts, r.length);
    r.release();
    return data;
  }

  /**
   * `readFile` without copies: views of the chunks' buffers (zeros for holes), valid and not to
   * be modified until `release()`. With `reuseBuffers` those buffers are reused after the
   * release, so the caller must be done with the bytes by then (a FUSE reply written).
   */
  async readFileShared(
    ino: number,
    offset: number,
    length: number,
    opts: ReadOptions = {},
  ): Promise<SharedBytes> {
    const end = this.#readEnd(ino, offset, length);
    if (typeof end !== 'number') return end;
    const chunks = await this.#fileChunks(ino);
    const wanted = chunksIn(chunks, offset, end);
    this.#maybeReadAhead(chunks, wanted);
    const held = await this.device.readChunks(wanted, opts);
    // The chunks whose end this read reached: a sequential reader is done with them.
    this.device.done(wanted.filter((c) => end >= c.fileOffset + c.uncompressedSize));
    return this.#assemble(wanted, offset, end, held);
  }

  /**
   * `readFileShared` answered at once, with no promise, when the device can serve the chunks
   * so (`BlobDevice.readChunkNow`: a local blob in the page cache, no cache storing data) and
   * the file's chunk list is known; undefined otherwise, and `readFileShared` serves the read.
   * Files of one chunk only (most files of a root file system): a longer file is read ahead in
   * the background, and serving its reads at once on this thread while that read-ahead runs
   * cost more than it saved (B3 on big-files: daemon 0.89 CPU s against 0.54, peak RSS 93
   * against 76 MiB; rootfs-large peak 106 against 97 MiB; rootfs CPU the same either way).
   * Errors are thrown as `readFileShared` rejects with them.
   */
  readFileSharedNow(
    ino: number,
    offset: number,
    length: number,
    opts: ReadOptions = {},
  ): SharedBytes | undefined {
    const end = this.#readEnd(ino, offset, length);
    if (typeof end !== 'number') return end;
    const chunks = this.#fileChunksNow(ino);
    if (chunks === undefined || chunks.length > 1) return undefined;
    const wanted = chunksIn(chunks, offset, end);
    const only = wanted[0];
    if (only === undefined) return undefined;
    // A read reaching the end of the chunk is the last a sequential reader makes of it.
    const held = this.device.readChunkNow(only, opts, end >= only.fileOffset + only.uncompressedSize);
    if (held === undefined) return undefined;
    // Nothing follows in the file to read ahead; in the blob there may be.
    if (this.#blobReadAhead) this.#blobOrderReadAhead(only, only);
    return this.#assemble(wanted, offset, end, held);
  }

  /**
   * Where a read of regular file `ino` ends (the file's size caps it), or the read's answer when
   * it needs no chunk: nothing (at or past the end), or the file's inline data.
   */
  #readEnd(ino: number, offset: number, length: number): number | SharedBytes {
    const attr = this.bootstrap.getAttr(ino);
    if (!isReg(attr.mode)) throw new NydusError('ERR_INODE_TYPE', `Inode ${ino} is not a regular file`);
    if (offset >= attr.size || length <= 0) return owned(Buffer.alloc(0));
    const end = Math.min(attr.size, offset + length);
    const b = this.bootstrap;
    if (hasV6Extras(b)) {
      const inline = b.inlineData(ino);
      if (inline !== undefined) return owned(Buffer.from(inline.subarray(offset, end)));
    }
    return end;
  }

  /** The bytes [offset, end) of a file from its chunks `wanted`, held: views, zeros for holes. */
  #assemble(wanted: readonly ChunkInfo[], offset: number, end: number, held: PinnedChunks): SharedBytes {
    const parts: Buffer[] = [];
    let pos = offset;
    held.chunks.forEach((got, k) => {
      const c = wanted[k]!;
      const from = Math.max(pos, c.fileOffset);
      const to = Math.min(end, c.fileOffset + got.data.length);
      if (to <= from) return;
      if (from > pos) parts.push(Buffer.alloc(from - pos));
      parts.push(got.data.subarray(from - c.fileOffset, to - c.fileOffset));
      pos = to;
    });
    if (end > pos) parts.push(Buffer.alloc(end - pos));
    return { parts, length: end - offset, release: held.release };
  }

  /**
   * Read ahead: the chunks that follow a read's last chunk in the file (same blob, up to the
   * read-ahead size, stopping at one the device already holds in memory or in flight) are
   * fetched without waiting, so a sequential reader finds them ready. Failures are left for the
   * reads that need the chunks.
   */
  #maybeReadAhead(chunks: readonly ChunkInfo[], wanted: readonly ChunkInfo[]): void {
    const last = wanted[wanted.length - 1];
    if (this.#readAhead === 0 || last === undefined) return;
    const device = this.device;
    const ahead: ChunkInfo[] = [];
    let bytes = 0;
    // Chunk k usually starts at k x chunk size; search only when it does not.
    const guess = Math.floor(last.fileOffset / this.bootstrap.superblock.chunkSize);
    const at = chunks[guess] === last ? guess : chunks.indexOf(last);
    for (let i = at + 1; i < chunks.length && bytes < this.#readAhead; i++) {
      const c = chunks[i]!;
      if (c.blobIndex !== last.blobIndex) break;
      if (device.isHeld(c)) break;
      ahead.push(c);
      bytes += c.uncompressedSize;
    }
    device.readAhead(ahead);
    if (this.#blobReadAhead) this.#blobOrderReadAhead(wanted[0]!, last);
  }

  /**
   * Read ahead in blob order (`blobReadAhead`): when this read starts where the previous read of
   * the blob ended (or within one window after it), the chunks that follow the read's last chunk
   * in the blob, up to the window, are fetched unless held already; the window doubles with each
   * such read. Any other read resets the streak.
   */
  #blobOrderReadAhead(first: ChunkInfo, last: ChunkInfo): void {
    let walk = this.#blobWalks.get(last.blobIndex);
    if (walk === undefined) {
      walk = { order: undefined, end: -1, window: 0 };
      this.#blobWalks.set(last.blobIndex, walk);
    }
    const start = first.compressedOffset;
    const end = last.compressedOffset + last.compressedSize;
    const slack = Math.max(walk.window, BLOB_WINDOW_START);
    const sequential = walk.end >= 0 && start >= walk.end - slack && start <= walk.end + slack;
    if (!sequential) {
      walk.end = Math.max(end, 0);
      walk.window = 0;
      return;
    }
    if (end <= walk.end) return; // a re-read of what the streak covered
    walk.end = end;
    walk.window = Math.min(this.#readAhead, walk.window === 0 ? BLOB_WINDOW_START : walk.window * 2);
    walk.order ??= blobOrder(this.bootstrap.allChunks(), last.blobIndex);
    const order = walk.order;
    // The first chunk at or after the read's end.
    let lo = 0;
    let hi = order.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (order[mid]!.compressedOffset < end) lo = mid + 1;
      else hi = mid;
    }
    const ahead: ChunkInfo[] = [];
    const limit = end + walk.window;
    for (let i = lo; i < order.length && order[i]!.compressedOffset < limit; i++) {
      const c = order[i]!;
      if (this.device.isHeld(c)) {
        // Fetch what is contiguous together; held chunks split the runs.
        this.device.readAhead(ahead.splice(0));
        continue;
      }
      ahead.push(c);
    }
    this.device.readAhead(ahead);
  }

  /** `chunks(ino)`, remembered for the most recently read files. */
  async #fileChunks(ino: number): Promise<ChunkInfo[]> {
    return this.#fileChunksNow(ino) ?? this.#keepChunks(ino, await this.chunks(ino));
  }

  /**
   * `#fileChunks` when it needs no promise: remembered, or in the bootstrap's own tables;
   * undefined when the chunks must be resolved through the blob's ci table.
   */
  #fileChunksNow(ino: number): ChunkInfo[] | undefined {
    const known = this.#chunkLists.get(ino);
    if (known !== undefined) {
      this.#chunkLists.delete(ino);
      this.#chunkLists.set(ino, known);
      return known;
    }
    let list: ChunkInfo[];
    try {
      list = this.bootstrap.chunks(ino);
    } catch (e) {
      if (e instanceof NydusError && e.code === 'ERR_NOT_FOUND' && hasV6Extras(this.bootstrap))
        return undefined;
      throw e;
    }
    return this.#keepChunks(ino, list);
  }

  #keepChunks(ino: number, chunks: ChunkInfo[]): ChunkInfo[] {
    let list = chunks;
    // chunksIn needs file order; an image that lists chunks otherwise still reads right.
    if (list.some((c, i) => i > 0 && c.fileOffset < list[i - 1]!.fileOffset))
      list = [...list].sort((a, b) => a.fileOffset - b.fileOffset);
    this.#chunkLists.set(ino, list);
    if (this.#chunkLists.size > CHUNK_LISTS_KEPT)
      this.#chunkLists.delete(this.#chunkLists.keys().next().value!);
    return list;
  }

  /** The whole content of a regular file as a stream of chunk-sized buffers. */
  async *fileData(ino: number, opts: ReadOptions = {}): AsyncGenerator<Buffer> {
    const size = this.bootstrap.getAttr(ino).size;
    const step = Math.max(this.bootstrap.superblock.chunkSize, 1 << 20);
    for (let off = 0; off < size; off += step) yield await this.readFile(ino, off, step, opts);
  }
}

/** Components of an absolute or relative path, "." and empty parts dropped; ".." refused. */
export function splitPath(p: Buffer): Buffer[] {
  const parts: Buffer[] = [];
  let start = 0;
  for (let i = 0; i <= p.length; i++) {
    if (i === p.length || p[i] === 0x2f) {
      if (i > start) {
        const part = p.subarray(start, i);
        if (part.length === 2 && part[0] === 0x2e && part[1] === 0x2e) {
          throw new NydusError('ERR_INVALID_ARG', `Path "${p.toString()}" must not contain ".."`);
        }
        if (!(part.length === 1 && part[0] === 0x2e)) parts.push(part);
      }
      start = i + 1;
    }
  }
  return parts;
}
