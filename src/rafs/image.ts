import { NydusError, FormatError } from '../errors/errors.js';
import { decompressTo } from '../codec/compress.js';
import { crc32cOf, digest } from '../codec/digest.js';
import { ChunkFlag, isDir, isReg, Limits } from '../format/flags.js';
import type { BlobInfo, Bootstrap, ChunkInfo, DirEntry, InodeAttr } from '../format/model.js';
import type { BlobReader, BlobSource } from './blob-source.js';
import { loadBlobChunks } from './blob-chunks.js';
import { BufferPool } from './buffer-pool.js';

export interface ReadOptions {
  /** Verify every chunk's digest (and CRC-32C when recorded) before using it. */
  verify?: boolean;
}

/**
 * The stored decompressed chunks of one blob, as a chunk cache keeps them (src/cache). Chunks
 * are addressed by their index in the blob.
 */
export interface CachedBlob {
  /** Whether chunk `index` is stored and marked ready. */
  isReady(index: number): boolean;
  /** Whether `c` can be stored at all (inside the blob's chunk count and data size). */
  canStore(c: ChunkInfo): boolean;
  /**
   * The stored bytes of a ready chunk; undefined when they cannot be read back. With `into` (at
   * least the chunk's size) the bytes land at its start and the result is that prefix.
   */
  read(c: ChunkInfo, into?: Buffer): Promise<Buffer | undefined>;
  /** Store the bytes of `c`, then mark it ready. Never rejects: a failure is logged, the chunk stays not ready. */
  write(c: ChunkInfo, data: Buffer): Promise<void>;
  /** Forget a stored chunk found to be wrong; `why` goes to the log. Never rejects. */
  invalidate(c: ChunkInfo, why: string): Promise<void>;
}

/**
 * Where decompressed chunks are kept between reads (upstream's blob cache manager). A RafsImage
 * asks it before going to the backend and hands it every chunk it fetches.
 */
export interface ChunkCache {
  /** Verify chunks read back from the cache and chunks fetched to be cached (upstream `cache.validate`). */
  readonly validate: boolean;
  /** Whether anything is stored at all (false for dummycache, where prefetch is pointless). */
  readonly storesData: boolean;
  /**
   * The storage of a blob, opened once per blob id; undefined when the blob is not cached.
   * Rejects with a NydusError when its cache files cannot be opened.
   */
  openBlob(blob: BlobInfo): Promise<CachedBlob | undefined>;
  /** An on-demand read request of `chunks` chunks, `hits` of which came from the cache. */
  noteRequest(chunks: number, hits: number): void;
  /** One read of `bytes` issued to the backend. */
  noteBackendRead(bytes: number): void;
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

const NOTHING_TO_RELEASE = (): void => undefined;

/** Bytes no one else shares. */
function owned(data: Buffer): SharedBytes {
  return { parts: [data], length: data.length, release: NOTHING_TO_RELEASE };
}

const DEFAULT_RECENT_BYTES = 8 << 20;
/** Key of a chunk in the in-flight and recent maps. */
function chunkKey(c: ChunkInfo): string {
  return `${c.blobIndex}:${c.index}:${c.compressedOffset}`;
}

/** Default of how far a file read that missed fetches ahead (upstream `rafs.batch_size`, 1 MiB). */
const DEFAULT_READ_AHEAD = 1 << 20;

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

/** Largest stored size accepted for one chunk: compressed data can exceed raw size slightly. */
const MAX_STORED_CHUNK = Limits.MAX_CHUNK_SIZE + (Limits.MAX_CHUNK_SIZE >> 4) + 1024;
/** Upper bound on one merged backend read of an on-demand request. */
const MAX_MERGED_READ = 4 * 1024 * 1024;

/** Digest checking of a read: none, only chunks with a recorded digest, or every chunk. */
type Check = 0 | 1 | 2;

/**
 * A chunk's bytes and whether they were checked against its digest. When the bytes live in a
 * pool slot, the slot goes back to the pool once no reader or cache write holds them (`pins`)
 * and the recent-chunk memory has let them go (`kept`).
 */
interface Fetched {
  data: Buffer;
  verified: boolean;
  slot: Buffer | undefined;
  pins: number;
  kept: boolean;
}

function fetched(data: Buffer, verified: boolean, slot?: Buffer): Fetched {
  return { data, verified, slot, pins: 0, kept: false };
}

/** Whether a reader put `data` at the start of `slot` (it may answer with a buffer of its own). */
function landedIn(data: Buffer | undefined, slot: Buffer): boolean {
  return data !== undefined && data.buffer === slot.buffer && data.byteOffset === slot.byteOffset;
}

/** Priority of the fetches of one run; prefetch runs are low until an on-demand read joins them. */
interface Priority {
  low: boolean;
  /** Wakes the run from the low-priority gate (set while it waits there). */
  wake: (() => void) | undefined;
}

/** One chunk being fetched: every reader that needs it awaits the same promise. */
interface Flight {
  readonly promise: Promise<Fetched>;
  readonly resolve: (f: Fetched) => void;
  readonly reject: (e: unknown) => void;
  settled: boolean;
  readonly prio: Priority;
  /** Readers waiting for it: each gets a pin on the bytes when it settles. */
  waiters: number;
  /** The bytes, once settled with them (the flight stays joinable while they are being cached). */
  got: Fetched | undefined;
}

interface Claim {
  readonly c: ChunkInfo;
  readonly key: string;
  readonly flight: Flight;
}

interface RunMode {
  /** Prefetch: wait at the gate while on-demand reads wait for the backend. */
  readonly low: boolean;
  readonly signal: AbortSignal | undefined;
  /** Largest merged backend read. */
  readonly maxMerge: number;
  /** Resolve only once fetched chunks are stored in the cache. */
  readonly awaitStored: boolean;
  /** A read someone asked for: counted in the cache's request statistics. */
  readonly asked: boolean;
}

const ON_DEMAND: RunMode = {
  low: false,
  signal: undefined,
  maxMerge: MAX_MERGED_READ,
  awaitStored: false,
  asked: true,
};
/** The background fetch of a file's next chunks: on-demand priority, but nobody asked yet. */
const READ_AHEAD: RunMode = { ...ON_DEMAND, asked: false };

function newFlight(prio: Priority): Flight {
  let resolve: ((f: Fetched) => void) | undefined;
  let reject: ((e: unknown) => void) | undefined;
  const promise = new Promise<Fetched>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // Every flight is awaited by its claimer; this only keeps an early failure from counting as unhandled.
  promise.catch(() => undefined);
  return { promise, resolve: resolve!, reject: reject!, settled: false, prio, waiters: 0, got: undefined };
}

function hasDigest(c: ChunkInfo): boolean {
  return c.id.some((x) => x !== 0);
}

function cancelled(): NydusError {
  return new NydusError('ERR_IO', 'Prefetch was cancelled');
}

/**
 * An opened RAFS image: a bootstrap plus a source of blob bytes. File ranges are assembled
 * from chunks fetched (merged when contiguous), decompressed and optionally verified.
 *
 * Chunk fetching is single-flight: concurrent readers needing the same chunk (blob index, chunk
 * index) share one backend read and one decompression, and all get its bytes or its error. With
 * a cache, ready chunks are read from it, and fetched ones are stored in it once verified.
 * Prefetch (`prefetchChunks`) runs at low priority: its backend reads wait while on-demand reads
 * are waiting for the backend, unless an on-demand read needs one of its chunks.
 */
export class RafsImage {
  readonly bootstrap: Bootstrap;
  readonly cache: ChunkCache | undefined;
  readonly #source: BlobSource;
  readonly #readers = new Map<number, Promise<BlobReader>>();
  readonly #resolver: ChunkResolver;
  readonly #validate: boolean;

  readonly #blobChunks = new Map<number, Promise<ChunkInfo[]>>();
  readonly #stores = new Map<number, Promise<CachedBlob | undefined>>();
  readonly #inflight = new Map<string, Flight>();
  /** Fetches still storing chunks in the cache; close() waits for them. */
  readonly #background = new Set<Promise<void>>();
  /** On-demand backend reads in progress; low-priority reads wait while there are any. */
  #demandReads = 0;
  #idleWaiters: (() => void)[] = [];
  #backendReads = 0;
  #backendBytes = 0;
  /** Recently used chunks by key, least recently used first. */
  readonly #recent = new Map<string, Fetched>();
  #recentBytes = 0;
  readonly #recentLimit: number;
  readonly #readAhead: number;
  readonly #pool: BufferPool | undefined;
  /** Chunk lists of recently read files, least recently used first. */
  readonly #chunkLists = new Map<number, ChunkInfo[]>();

  constructor(bootstrap: Bootstrap, source: BlobSource, opts: RafsImageOptions = {}) {
    this.bootstrap = bootstrap;
    this.#source = source;
    this.cache = opts.cache;
    this.#validate = opts.validate === true;
    this.#recentLimit = Math.max(0, opts.recentBytes ?? DEFAULT_RECENT_BYTES);
    // Read-ahead lands in the recent memory: without it there is nowhere to keep it.
    this.#readAhead = this.#recentLimit === 0 ? 0 : Math.max(0, opts.readAheadBytes ?? DEFAULT_READ_AHEAD);
    this.#resolver = opts.resolver ?? ((blobIndex, ciIndex) => this.#fromBlobMeta(blobIndex, ciIndex));
    if (opts.reuseBuffers === true) {
      // Slots up to the chunk size; free ones kept: 4 MiB worth per size class.
      this.#pool = new BufferPool(Math.max(bootstrap.superblock.chunkSize, 4096), 4 << 20);
    }
  }

  /** Reads issued to the backend so far (merged reads count once). */
  get backendReads(): number {
    return this.#backendReads;
  }

  /** Bytes asked of the backend so far. */
  get backendBytes(): number {
    return this.#backendBytes;
  }

  /** How the chunk buffer pool is doing (undefined without `reuseBuffers`). */
  get bufferPool(): { slotSize: number; created: number; reused: number; idle: number } | undefined {
    const p = this.#pool;
    return p === undefined
      ? undefined
      : { slotSize: p.slotSize, created: p.created, reused: p.reused, idle: p.idle };
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
    let r = this.#readers.get(index);
    if (r === undefined) {
      const blob = this.bootstrap.blobs[index];
      if (blob === undefined)
        return Promise.reject(new FormatError(`Chunk refers to blob index ${index}, which does not exist`));
      r = this.#source.open(blob);
      // A failed open is not cached: the blob may appear later.
      r.catch(() => this.#readers.delete(index));
      this.#readers.set(index, r);
    }
    return r;
  }

  /** The cache storage of blob `index`, opened once; undefined without a cache that stores it. */
  #cachedBlob(index: number): Promise<CachedBlob | undefined> {
    const cache = this.cache;
    if (cache === undefined) return Promise.resolve(undefined);
    let s = this.#stores.get(index);
    if (s === undefined) {
      const blob = this.bootstrap.blobs[index];
      if (blob === undefined)
        return Promise.reject(new FormatError(`Chunk refers to blob index ${index}, which does not exist`));
      s = cache.openBlob(blob);
      // Like readers, a failed open is retried at the next read.
      s.catch(() => this.#stores.delete(index));
      this.#stores.set(index, s);
    }
    return s;
  }

  /** Wait for chunks still being stored in the cache, then close the blob readers. */
  async close(): Promise<void> {
    while (this.#background.size > 0) await Promise.allSettled([...this.#background]);
    const readers = [...this.#readers.values()];
    this.#readers.clear();
    this.#stores.clear();
    this.#recent.clear();
    this.#recentBytes = 0;
    await Promise.allSettled(readers.map(async (r) => (await r).close()));
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
  async readChunk(c: ChunkInfo, opts: ReadOptions = {}): Promise<Buffer> {
    const [got] = await this.#readRun([c], this.#check(opts), ON_DEMAND);
    const data = got!.slot === undefined ? got!.data : Buffer.from(got!.data);
    this.#unpin(got!);
    return data;
  }

  /** Whether chunk `c` is stored in the cache (false without a cache). */
  async isChunkCached(c: ChunkInfo): Promise<boolean> {
    const store = await this.#cachedBlob(c.blobIndex);
    return store?.isReady(c.index) === true;
  }

  /**
   * Fetch chunks of one blob into the cache at low priority (prefetch). Contiguous chunks merge
   * into backend reads of any size, each of which waits while on-demand reads are waiting for the
   * backend. Resolves once the chunks are stored; rejects with the first failure (the other
   * chunks are still stored), or when `signal` aborts before the reads are issued.
   */
  async prefetchChunks(chunks: readonly ChunkInfo[], signal?: AbortSignal): Promise<void> {
    if (chunks.length === 0) return;
    const blobIndex = chunks[0]!.blobIndex;
    if (chunks.some((c) => c.blobIndex !== blobIndex))
      throw new NydusError('ERR_INVALID_ARG', 'Prefetch request mixes chunks of different blobs');
    const got = await this.#readRun(chunks, this.#check({}), {
      low: true,
      signal,
      maxMerge: Number.MAX_SAFE_INTEGER,
      awaitStored: true,
      asked: false,
    });
    for (const g of got) this.#unpin(g);
  }

  /** The digest check a read gets: rafs validate or the read's own ask, else the cache's. */
  #check(opts: ReadOptions): Check {
    if (opts.verify === true || this.#validate) return 2;
    return this.cache?.validate === true ? 1 : 0;
  }

  #checkChunk(c: ChunkInfo, reader: BlobReader): void {
    const b = this.bootstrap;
    const where = `Chunk ${c.index} of blob ${c.blobIndex}`;
    if (c.uncompressedSize > Limits.MAX_CHUNK_SIZE)
      throw new FormatError(`${where}: uncompressed size ${c.uncompressedSize} is too large`);
    if (c.compressedSize > MAX_STORED_CHUNK)
      throw new FormatError(`${where}: compressed size ${c.compressedSize} is too large`);
    if (c.compressedOffset + c.compressedSize > reader.size) {
      throw new FormatError(
        `${where} (${c.compressedSize} bytes at ${c.compressedOffset}) points past the end of blob ${b.blobs[c.blobIndex]?.blobId ?? '?'} (${reader.size} bytes)`,
      );
    }
    if ((c.flags & ChunkFlag.COMPRESSED) === 0 && c.compressedSize !== c.uncompressedSize) {
      throw new FormatError(
        `${where}: stored uncompressed but sizes differ (${c.compressedSize} vs ${c.uncompressedSize})`,
      );
    }
    if (c.flags & (ChunkFlag.ENCRYPTED | ChunkFlag.BATCH)) {
      throw new NydusError('ERR_UNSUPPORTED', `${where}: encrypted and batch chunks are not supported yet`);
    }
  }

  /**
   * Bytes of a run of chunks of one blob, each pinned for the caller (who unpins them). Chunks
   * already in flight are joined; the others are claimed and fetched (from the cache, else from
   * the backend with contiguous ranges merged).
   */
  async #readRun(run: readonly ChunkInfo[], check: Check, mode: RunMode): Promise<Fetched[]> {
    const first = run[0]!;
    const reader = await this.blobReader(first.blobIndex);
    for (const c of run) this.#checkChunk(c, reader);
    const prio: Priority = { low: mode.low, wake: undefined };
    const waits: Promise<Fetched>[] = [];
    const claims: Claim[] = [];
    let recentHits = 0;
    for (const c of run) {
      const key = chunkKey(c);
      // Prefetch skips the memory: it is there to fill the cache.
      const hit = mode.low ? undefined : this.#recent.get(key);
      if (hit !== undefined) {
        this.#recent.delete(key);
        this.#recent.set(key, hit);
        hit.pins++;
        waits.push(Promise.resolve(hit));
        recentHits++;
        continue;
      }
      let f = this.#inflight.get(key);
      if (f === undefined) {
        f = newFlight(prio);
        this.#inflight.set(key, f);
        claims.push({ c, key, flight: f });
      } else if (!mode.low && f.prio.low) {
        // An on-demand read needs a chunk prefetch has claimed: the prefetch run stops yielding.
        f.prio.low = false;
        f.prio.wake?.();
      }
      if (f.got !== undefined) f.got.pins++;
      else f.waiters++;
      waits.push(f.promise);
    }
    if (claims.length > 0) {
      const fetching = this.#fetch(claims, reader, check, prio, mode, run.length);
      this.#background.add(fetching);
      void fetching.finally(() => this.#background.delete(fetching));
      if (mode.awaitStored) await fetching;
    } else if (mode.asked) {
      this.cache?.noteRequest(run.length, recentHits);
    }
    // Joined flights may have been fetched under a weaker check than this read asks.
    return this.#takeAll(await Promise.allSettled(waits), (g, i) => {
      if (check !== 0 && !g.verified) this.#verify(run[i]!, g.data, check);
    });
  }

  /**
   * Fetch claimed chunks and settle their flights. Never rejects; resolves once fetched chunks
   * are stored in the cache.
   */
  async #fetch(
    claims: readonly Claim[],
    reader: BlobReader,
    check: Check,
    prio: Priority,
    mode: RunMode,
    requestChunks: number,
  ): Promise<void> {
    const writes: Promise<void>[] = [];
    try {
      const store = await this.#cachedBlob(claims[0]!.c.blobIndex);
      let need: readonly Claim[] = claims;
      let hits = 0;
      if (store !== undefined) {
        const got = await Promise.all(claims.map((cl) => this.#fromCache(store, cl.c, check)));
        const missing: Claim[] = [];
        claims.forEach((cl, i) => {
          const r = got[i];
          if (r === undefined) {
            missing.push(cl);
          } else {
            hits++;
            this.#settle(cl, r);
          }
        });
        need = missing;
      }
      if (mode.asked) this.cache?.noteRequest(requestChunks, hits);
      let i = 0;
      while (i < need.length) {
        const start = need[i]!.c.compressedOffset;
        let end = start + need[i]!.c.compressedSize;
        let j = i + 1;
        while (j < need.length) {
          const n = need[j]!.c;
          if (n.compressedOffset !== end || n.compressedOffset + n.compressedSize - start > mode.maxMerge)
            break;
          end = n.compressedOffset + n.compressedSize;
          j++;
        }
        const group = need.slice(i, j);
        i = j;
        if (prio.low) await this.#gate(prio, mode.signal);
        const decoded = await this.#fetchGroup(group, reader, start, end - start, prio);
        group.forEach((cl, k) => {
          const r = decoded[k]!;
          if (r.status === 'rejected') {
            this.#fail(cl, r.reason);
            return;
          }
          const got = r.value;
          try {
            this.#verify(cl.c, got.data, check);
          } catch (e) {
            this.#recycle(got);
            this.#fail(cl, e);
            return;
          }
          got.verified = check !== 0 && hasDigest(cl.c);
          if (store !== undefined && store.canStore(cl.c)) {
            // Readers get the bytes now; the flight stays joinable until they are stored, so no
            // one fetches the chunk again in between.
            this.#resolveFlight(cl.flight, got);
            got.pins++;
            writes.push(
              store
                .write(cl.c, got.data)
                .catch(() => undefined)
                .finally(() => {
                  this.#forget(cl);
                  this.#unpin(got);
                }),
            );
          } else {
            this.#settle(cl, got);
          }
        });
      }
    } catch (e) {
      for (const cl of claims) if (!cl.flight.settled) this.#fail(cl, e);
    }
    await Promise.all(writes);
  }

  /**
   * One merged backend read and the decoding of the chunks in it (in parallel; big ones on
   * worker threads). Pool slots hold the bytes when the image reuses buffers: the read lands in
   * one, a lone uncompressed chunk keeps it, every other chunk decodes into a slot of its own.
   */
  async #fetchGroup(
    group: readonly Claim[],
    reader: BlobReader,
    offset: number,
    length: number,
    prio: Priority,
  ): Promise<PromiseSettledResult<Fetched>[]> {
    const pool = this.#pool;
    let rawSlot = pool?.serves(length) === true ? pool.take(length) : undefined;
    let raw: Buffer;
    try {
      raw = await this.#backendRead(reader, offset, length, prio, rawSlot);
    } catch (e) {
      if (rawSlot !== undefined) pool!.give(rawSlot);
      return group.map(() => ({ status: 'rejected', reason: e }));
    }
    if (rawSlot !== undefined && !landedIn(raw, rawSlot)) {
      pool!.give(rawSlot);
      rawSlot = undefined;
    }
    const decoded = await Promise.allSettled(
      group.map(async ({ c }) => {
        const stored = raw.subarray(
          c.compressedOffset - offset,
          c.compressedOffset - offset + c.compressedSize,
        );
        if ((c.flags & ChunkFlag.COMPRESSED) === 0) {
          if (rawSlot === undefined) return fetched(stored, false);
          if (group.length === 1) {
            const slot = rawSlot;
            rawSlot = undefined;
            return fetched(stored, false, slot);
          }
        }
        const size = c.uncompressedSize;
        const slot = pool?.serves(size) === true ? pool.take(size) : undefined;
        try {
          if ((c.flags & ChunkFlag.COMPRESSED) === 0) {
            const data = slot === undefined ? Buffer.from(stored) : slot.subarray(0, size);
            if (slot !== undefined) stored.copy(data);
            return fetched(data, false, slot);
          }
          const algo = this.bootstrap.blobs[c.blobIndex]!.compressor;
          return fetched(await decompressTo(algo, stored, size, slot), false, slot);
        } catch (e) {
          if (slot !== undefined) pool!.give(slot);
          throw e;
        }
      }),
    );
    if (rawSlot !== undefined) pool!.give(rawSlot);
    return decoded;
  }

  /** A ready chunk from the cache, checked when asked; a wrong one is dropped and refetched. */
  async #fromCache(store: CachedBlob, c: ChunkInfo, check: Check): Promise<Fetched | undefined> {
    if (!store.isReady(c.index)) return undefined;
    const pool = this.#pool;
    let slot = pool?.serves(c.uncompressedSize) === true ? pool.take(c.uncompressedSize) : undefined;
    const data = await store.read(c, slot);
    if (slot !== undefined && !landedIn(data, slot)) {
      pool!.give(slot);
      slot = undefined;
    }
    if (data === undefined) return undefined;
    if (check === 0 || !hasDigest(c)) return fetched(data, false, slot);
    const bad = this.#mismatch(c, data);
    if (bad !== undefined) {
      if (slot !== undefined) pool!.give(slot);
      await store.invalidate(c, bad);
      return undefined;
    }
    return fetched(data, true, slot);
  }

  async #backendRead(
    reader: BlobReader,
    offset: number,
    length: number,
    prio: Priority,
    into: Buffer | undefined,
  ): Promise<Buffer> {
    const demand = !prio.low;
    if (demand) this.#demandReads++;
    this.#backendReads++;
    this.#backendBytes += length;
    this.cache?.noteBackendRead(length);
    try {
      return await reader.read(offset, length, into);
    } finally {
      if (demand && --this.#demandReads === 0) {
        const waiters = this.#idleWaiters;
        this.#idleWaiters = [];
        for (const w of waiters) w();
      }
    }
  }

  /** Low-priority reads wait here while on-demand reads are waiting for the backend. */
  async #gate(prio: Priority, signal: AbortSignal | undefined): Promise<void> {
    while (prio.low && this.#demandReads > 0) {
      if (signal?.aborted === true) throw cancelled();
      await new Promise<void>((resolve) => {
        const wake = (): void => {
          signal?.removeEventListener('abort', wake);
          prio.wake = undefined;
          resolve();
        };
        prio.wake = wake;
        this.#idleWaiters.push(wake);
        signal?.addEventListener('abort', wake, { once: true });
      });
    }
    if (prio.low && signal?.aborted === true) throw cancelled();
  }

  #settle(cl: Claim, got: Fetched): void {
    this.#resolveFlight(cl.flight, got);
    this.#forget(cl);
    this.#remember(cl.key, got);
    // Nobody may be left to hold it (every waiter gave up): back to the pool.
    this.#recycle(got);
  }

  /** Settle a flight with bytes: each reader waiting for it gets a pin on them. */
  #resolveFlight(f: Flight, got: Fetched): void {
    got.pins += f.waiters;
    f.waiters = 0;
    f.got = got;
    f.settled = true;
    f.resolve(got);
  }

  /**
   * The pinned chunks of settled reads, in order, each passed to `accept` (which throws to
   * refuse it) until the first failure; when anything failed, every chunk got is unpinned and
   * the first failure is thrown.
   */
  #takeAll<T extends Fetched | Fetched[]>(
    settled: readonly PromiseSettledResult<T>[],
    accept?: (value: T, index: number) => void,
  ): Fetched[] {
    const got: Fetched[] = [];
    let failure: { e: unknown } | undefined;
    settled.forEach((r, i) => {
      if (r.status === 'rejected') {
        failure ??= { e: r.reason };
        return;
      }
      if (Array.isArray(r.value)) got.push(...r.value);
      else got.push(r.value);
      if (failure === undefined && accept !== undefined) {
        try {
          accept(r.value, i);
        } catch (e) {
          failure = { e };
        }
      }
    });
    if (failure !== undefined) {
      for (const g of got) this.#unpin(g);
      throw failure.e;
    }
    return got;
  }

  #unpin(got: Fetched): void {
    got.pins--;
    this.#recycle(got);
  }

  /** Return the bytes' slot to the pool once no one holds them. */
  #recycle(got: Fetched): void {
    if (got.slot !== undefined && got.pins <= 0 && !got.kept) {
      this.#pool!.give(got.slot);
      got.slot = undefined;
    }
  }

  /** Bytes a chunk takes in memory: its whole slot when pooled. */
  #footprint(got: Fetched): number {
    return got.slot?.length ?? got.data.length;
  }

  /** Keep a fetched chunk in the recent-chunks memory, evicting the least recently used. */
  #remember(key: string, got: Fetched): void {
    if (this.#footprint(got) > this.#recentLimit) return;
    const old = this.#recent.get(key);
    if (old !== undefined) {
      this.#recent.delete(key);
      this.#recentBytes -= this.#footprint(old);
      old.kept = false;
      this.#recycle(old);
    }
    got.kept = true;
    this.#recent.set(key, got);
    this.#recentBytes += this.#footprint(got);
    for (const [k, v] of this.#recent) {
      if (this.#recentBytes <= this.#recentLimit) break;
      this.#recent.delete(k);
      this.#recentBytes -= this.#footprint(v);
      v.kept = false;
      this.#recycle(v);
    }
  }

  #fail(cl: Claim, e: unknown): void {
    cl.flight.settled = true;
    cl.flight.reject(e);
    this.#forget(cl);
  }

  #forget(cl: Claim): void {
    if (this.#inflight.get(cl.key) === cl.flight) this.#inflight.delete(cl.key);
  }

  /** Why `data` is not chunk `c` (digest, then CRC-32C when recorded); undefined when it is. */
  #mismatch(c: ChunkInfo, data: Buffer): string | undefined {
    const blob = this.bootstrap.blobs[c.blobIndex]!;
    const h = digest(blob.digester, data);
    if (!h.equals(c.id)) return `has digest ${h.toString('hex')}, expected ${c.id.toString('hex')}`;
    if (c.flags & ChunkFlag.HAS_CRC32 && crc32cOf(data) !== c.crc32) return 'fails its CRC-32C check';
    return undefined;
  }

  #verify(c: ChunkInfo, data: Buffer, check: Check): void {
    if (check === 0) return;
    const blob = this.bootstrap.blobs[c.blobIndex]!;
    if (!hasDigest(c)) {
      if (check === 1) return;
      throw new NydusError(
        'ERR_DIGEST',
        `Chunk ${c.index} of blob ${blob.blobId} has no recorded digest to verify against`,
      );
    }
    const bad = this.#mismatch(c, data);
    if (bad !== undefined)
      throw new NydusError('ERR_DIGEST', `Chunk ${c.index} of blob ${blob.blobId} ${bad}`);
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
    const attr = this.bootstrap.getAttr(ino);
    if (!isReg(attr.mode)) throw new NydusError('ERR_INODE_TYPE', `Inode ${ino} is not a regular file`);
    if (offset >= attr.size || length <= 0) return owned(Buffer.alloc(0));
    const end = Math.min(attr.size, offset + length);
    const b = this.bootstrap;
    if (hasV6Extras(b)) {
      const inline = b.inlineData(ino);
      if (inline !== undefined) return owned(Buffer.from(inline.subarray(offset, end)));
    }
    const chunks = await this.#fileChunks(ino);
    const wanted = chunksIn(chunks, offset, end);
    const check = this.#check(opts);
    this.#maybeReadAhead(chunks, wanted);
    // Group by blob, preserving order, so contiguous chunks of one blob merge into one read.
    const runs: ChunkInfo[][] = [];
    for (const c of wanted) {
      const last = runs[runs.length - 1];
      if (last !== undefined && last[0]!.blobIndex === c.blobIndex) last.push(c);
      else runs.push([c]);
    }
    const held = this.#takeAll(await Promise.allSettled(runs.map((r) => this.#readRun(r, check, ON_DEMAND))));
    const parts: Buffer[] = [];
    let pos = offset;
    held.forEach((got, k) => {
      const c = wanted[k]!;
      const from = Math.max(pos, c.fileOffset);
      const to = Math.min(end, c.fileOffset + got.data.length);
      if (to <= from) return;
      if (from > pos) parts.push(Buffer.alloc(from - pos));
      parts.push(got.data.subarray(from - c.fileOffset, to - c.fileOffset));
      pos = to;
    });
    if (end > pos) parts.push(Buffer.alloc(end - pos));
    let release = NOTHING_TO_RELEASE;
    if (held.some((g) => g.slot !== undefined)) {
      let released = false;
      release = () => {
        if (released) return;
        released = true;
        for (const g of held) this.#unpin(g);
      };
    } else {
      for (const g of held) this.#unpin(g);
    }
    return { parts, length: end - offset, release };
  }

  /**
   * Start fetching the chunks that follow a read's last chunk in the file (same blob, up to the
   * read-ahead size, stopping at one already in memory or in flight) without waiting, so a
   * sequential reader finds them ready. Failures are left for the reads that need the chunks.
   */
  #maybeReadAhead(chunks: readonly ChunkInfo[], wanted: readonly ChunkInfo[]): void {
    const last = wanted[wanted.length - 1];
    if (this.#readAhead === 0 || last === undefined) return;
    const ahead: ChunkInfo[] = [];
    let bytes = 0;
    // Chunk k usually starts at k x chunk size; search only when it does not.
    const guess = Math.floor(last.fileOffset / this.bootstrap.superblock.chunkSize);
    const at = chunks[guess] === last ? guess : chunks.indexOf(last);
    for (let i = at + 1; i < chunks.length && bytes < this.#readAhead; i++) {
      const c = chunks[i]!;
      if (c.blobIndex !== last.blobIndex) break;
      const k = chunkKey(c);
      if (this.#recent.has(k) || this.#inflight.has(k)) break;
      ahead.push(c);
      bytes += c.uncompressedSize;
    }
    if (ahead.length > 0)
      this.#readRun(ahead, this.#check({}), READ_AHEAD).then(
        (got) => got.forEach((g) => this.#unpin(g)),
        () => undefined,
      );
  }

  /** `chunks(ino)`, remembered for the most recently read files. */
  async #fileChunks(ino: number): Promise<ChunkInfo[]> {
    const known = this.#chunkLists.get(ino);
    if (known !== undefined) {
      this.#chunkLists.delete(ino);
      this.#chunkLists.set(ino, known);
      return known;
    }
    let list = await this.chunks(ino);
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
