import { errorText, FormatError, NydusError } from '../errors/errors.js';
import { decompressNow, decompressTo } from '../codec/compress.js';
import { ChunkFlag } from '../format/flags.js';
import type { Compressor } from '../codec/algorithms.js';
import type { BlobInfo, ChunkInfo } from '../format/model.js';
import type { BlobReader, BlobSource } from './blob-source.js';
import { BufferPool } from './buffer-pool.js';
import type { CachedBlob, ChunkCache } from './chunk-cache.js';
import { type Check, chunkMismatch, checkChunkRecord, hasDigest, verifyChunk } from './chunk-check.js';
import {
  cancelled,
  chunkKey,
  type Claim,
  type Fetched,
  fetched,
  type Flight,
  landedIn,
  newFlight,
  ON_DEMAND,
  prefetchMode,
  type Priority,
  READ_AHEAD,
  type RunMode,
} from './fetch-run.js';

/** The blob table a device serves: chunk records refer to blobs by their index in it. */
export interface BlobTable {
  /** Read at every use, so a blob id replaced later (inline-meta images) is seen. */
  readonly blobs: readonly BlobInfo[];
}

export interface BlobDeviceOptions {
  /** The image's chunk size: the largest pooled buffer. */
  chunkSize: number;
  /** Chunk cache consulted before the backend; without one every read goes to the backend. */
  cache?: ChunkCache | undefined;
  /** Verify every chunk before it is used or cached (upstream `rafs.validate`), whatever a read asks. */
  validate?: boolean | undefined;
  /**
   * The backend is not on this machine (registry, object store, proxy): every chunk it sends
   * that has a recorded digest is verified before it is used or cached, whatever a read asks,
   * and a chunk that does not decode or match is fetched once more before its reads fail
   * (ERR_DIGEST). Wrong bytes from the network never reach a reader.
   */
  untrusted?: boolean | undefined;
  /**
   * Bytes of recently used decompressed chunks kept in memory (least recently used out first),
   * so a file read in pieces smaller than a chunk decompresses each chunk once. Default 4 MiB;
   * 0 turns it off.
   */
  recentBytes?: number | undefined;
  /**
   * Reuse chunk-sized buffers instead of allocating one per fetched chunk (a daemon streaming
   * big files): pinned chunk bytes are then valid only until released.
   */
  reuseBuffers?: boolean | undefined;
}

export interface ChunkReadOptions {
  /** Verify every chunk's digest (and CRC-32C when recorded) before using it. */
  verify?: boolean;
}

/** The bytes of one chunk, decompressed: not to be modified. */
export interface ChunkBytes {
  readonly data: Buffer;
}

/** Chunks read together, pinned: their bytes stay valid until `release()`. */
export interface PinnedChunks {
  /** One entry per chunk asked for, in order. */
  readonly chunks: readonly ChunkBytes[];
  /** Unpin them; call once, after the last use. `NOTHING_TO_RELEASE` when nothing is pooled. */
  readonly release: () => void;
}

/** The release of bytes nobody else shares (no pool slot among them). */
export const NOTHING_TO_RELEASE = (): void => undefined;

/**
 * 4 MiB. With 2 MiB here and 2 MiB of pool below (and the reads answered at once) B3 on
 * big-files cost the daemon about half more CPU (0.74 against 0.47 s, four times the page
 * faults) for no lower peak.
 */
const DEFAULT_RECENT_BYTES = 4 << 20;
/** Bytes of free chunk buffers a device keeps for reuse, all sizes together. */
const POOL_KEEP_BYTES = 4 << 20;
const NO_OPTIONS: ChunkReadOptions = {};
/**
 * Largest chunk `readChunkNow` decodes on the calling thread (the event loop): about 2 ms of
 * zstd; the default chunk is 1 MiB.
 */
const NOW_DECODE_MAX = 2 << 20;
/** What a prefetch read tells the backend (a lower priority, a smaller retry budget). */
const PREFETCH_READ = { prefetch: true } as const;

/** A merged backend read: its chunks decoded, or the read's own failure. */
type GroupResult = { ok: true; decoded: PromiseSettledResult<Fetched>[] } | { ok: false; error: unknown };

/**
 * The blob device (upstream's storage `BlobDevice` over its blob caches): serves the chunks of
 * the blobs of one image, whatever backend holds them. A backend only reads byte ranges of a
 * blob (`BlobSource`); everything else is here:
 *
 * - Single flight: concurrent readers needing the same chunk (blob index, chunk index) share one
 *   backend read and one decompression, and all get its bytes or its error.
 * - Merged reads: contiguous chunks of a run are fetched with one backend read (up to 4 MiB
 *   on demand, any size for prefetch), decoded in parallel (big ones on worker threads).
 * - Priorities: prefetch (`prefetchChunks`) waits at a gate while on-demand reads are waiting
 *   for the backend, unless an on-demand read needs one of its chunks.
 * - Cache: ready chunks are read from the `ChunkCache`, fetched ones are stored in it once
 *   verified; a chunk stays joinable in flight until stored.
 * - Verification (`validate`, a read's `verify`, the cache's `validate`, `untrusted`): a wrong
 *   chunk fails only the reads that need it and is never cached; from an untrusted backend it
 *   is fetched once more first.
 * - Memory: recently used chunks are kept (LRU, `recentBytes`) until a read reaches their end
 *   (`done`, `readChunkNow`'s `last`: a sequential reader needs them no more); with
 *   `reuseBuffers` chunk bytes live in pool slots, pinned by every reader and cache write, back
 *   in the pool when the last one is done and the recent memory has let them go.
 */
export class BlobDevice {
  readonly cache: ChunkCache | undefined;
  readonly #table: BlobTable;
  readonly #source: BlobSource;
  readonly #readers = new Map<number, Promise<BlobReader>>();
  /** The readers of #readers once open: what `readChunkNow` reads through. */
  readonly #opened = new Map<number, BlobReader>();
  readonly #validate: boolean;
  readonly #untrusted: boolean;
  #refetches = 0;
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
  /** Reads asked of the device so far, of any kind (see `uses`). */
  #uses = 0;
  readonly #pool: BufferPool | undefined;

  constructor(blobs: BlobTable | readonly BlobInfo[], source: BlobSource, opts: BlobDeviceOptions) {
    this.#table = isBlobList(blobs) ? { blobs } : blobs;
    this.#source = source;
    this.cache = opts.cache;
    this.#validate = opts.validate === true;
    this.#untrusted = opts.untrusted === true;
    this.#recentLimit = Math.max(0, opts.recentBytes ?? DEFAULT_RECENT_BYTES);
    if (opts.reuseBuffers === true) {
      // Slots up to the chunk size; free ones kept up to POOL_KEEP_BYTES.
      this.#pool = new BufferPool(Math.max(opts.chunkSize, 4096), POOL_KEEP_BYTES);
    }
  }

  /** The blob table, as it is now. */
  get blobs(): readonly BlobInfo[] {
    return this.#table.blobs;
  }

  /** Bytes of the recent-chunk memory (0: off). */
  get recentLimit(): number {
    return this.#recentLimit;
  }

  /** Reads issued to the backend so far (merged reads count once). */
  get backendReads(): number {
    return this.#backendReads;
  }

  /** Bytes asked of the backend so far. */
  get backendBytes(): number {
    return this.#backendBytes;
  }

  /** Whether chunks from the backend are always verified (a backend that is not local). */
  get untrusted(): boolean {
    return this.#untrusted;
  }

  /** Chunks fetched again because the backend's bytes did not decode or match their digest. */
  get refetches(): number {
    return this.#refetches;
  }

  /** How the chunk buffer pool is doing (undefined without `reuseBuffers`). */
  get bufferPool():
    { slotSize: number; created: number; reused: number; idle: number; idleBytes: number } | undefined {
    const p = this.#pool;
    return p === undefined
      ? undefined
      : { slotSize: p.slotSize, created: p.created, reused: p.reused, idle: p.idle, idleBytes: p.idleBytes };
  }

  /** What the device holds in memory now: the recent-chunk memory and the chunks in flight. */
  get memory(): { recentLimit: number; recentBytes: number; recentChunks: number; inflightChunks: number } {
    return {
      recentLimit: this.#recentLimit,
      recentBytes: this.#recentBytes,
      recentChunks: this.#recent.size,
      inflightChunks: this.#inflight.size,
    };
  }

  /** The reader of blob `index`, opened once. */
  blobReader(index: number): Promise<BlobReader> {
    let r = this.#readers.get(index);
    if (r === undefined) {
      const blob = this.#table.blobs[index];
      if (blob === undefined)
        return Promise.reject(new FormatError(`Chunk refers to blob index ${index}, which does not exist`));
      r = this.#source.open(blob);
      const opening = r;
      // A failed open is not cached: the blob may appear later.
      r.then(
        (reader) => {
          if (this.#readers.get(index) === opening) this.#opened.set(index, reader);
        },
        () => this.#readers.delete(index),
      );
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
      const blob = this.#table.blobs[index];
      if (blob === undefined)
        return Promise.reject(new FormatError(`Chunk refers to blob index ${index}, which does not exist`));
      s = cache.openBlob(blob);
      // Like readers, a failed open is retried at the next read.
      s.catch(() => this.#stores.delete(index));
      this.#stores.set(index, s);
    }
    return s;
  }

  /** Reads asked of the device so far, of any kind: a count that stands still means no one reads. */
  get uses(): number {
    return this.#uses;
  }

  /**
   * Let go of the recent-chunk memory and of the pool's free buffers (freed at once), for a
   * device no one reads now: an image left idle in a shared daemon then holds only its
   * metadata, not up to 4 MiB of recent chunks and 4 MiB of pooled buffers. Chunks in flight and
   * bytes a reader still holds stay. Returns the bytes held before (0: nothing to let go).
   */
  releaseIdle(): number {
    const held = this.#recentBytes + (this.#pool?.idleBytes ?? 0);
    if (held === 0) return 0;
    for (const got of this.#recent.values()) this.#letGo(got);
    this.#recent.clear();
    this.#pool?.drain();
    return held;
  }

  /** Wait for chunks still being stored in the cache, then close the blob readers. */
  async close(): Promise<void> {
    while (this.#background.size > 0) await Promise.allSettled([...this.#background]);
    const readers = [...this.#readers.values()];
    this.#readers.clear();
    this.#opened.clear();
    this.#stores.clear();
    this.#recent.clear();
    this.#recentBytes = 0;
    await Promise.allSettled(readers.map(async (r) => (await r).close()));
  }

  /** Bytes of one chunk, decompressed, verified when asked; a copy when buffers are reused. */
  async readChunk(c: ChunkInfo, opts: ChunkReadOptions = NO_OPTIONS): Promise<Buffer> {
    const [got] = await this.#readRun([c], this.#check(opts), ON_DEMAND);
    const data = got!.slot === undefined ? got!.data : Buffer.from(got!.data);
    this.#unpin(got!);
    return data;
  }

  /**
   * The bytes of `chunks` (in any order, of any blobs), pinned. Consecutive chunks of one blob
   * form one run, whose contiguous uncached chunks are fetched with merged backend reads; runs
   * are read concurrently. When any chunk fails, nothing stays pinned and the first failure in
   * order is thrown (a run's own first failure, in chunk order).
   */
  async readChunks(chunks: readonly ChunkInfo[], opts: ChunkReadOptions = NO_OPTIONS): Promise<PinnedChunks> {
    const check = this.#check(opts);
    // Group by blob, preserving order, so contiguous chunks of one blob merge into one read.
    const runs: ChunkInfo[][] = [];
    for (const c of chunks) {
      const last = runs[runs.length - 1];
      if (last !== undefined && last[0]!.blobIndex === c.blobIndex) last.push(c);
      else runs.push([c]);
    }
    const held = this.#takeAll(await Promise.allSettled(runs.map((r) => this.#readRun(r, check, ON_DEMAND))));
    return this.#pinned(held);
  }

  /** Chunks got for a reader (each pinned once for it), with their release. */
  #pinned(held: Fetched[]): PinnedChunks {
    if (!held.some((g) => g.slot !== undefined)) {
      // Nothing pooled: the bytes stay valid without pins.
      for (const g of held) this.#unpin(g);
      return { chunks: held, release: NOTHING_TO_RELEASE };
    }
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      for (const g of held) this.#unpin(g);
    };
    return { chunks: held, release };
  }

  /**
   * `readChunks` of one chunk answered at once, with no promise, when it can be: the chunk's
   * blob reader is open and can read without waiting (a local blob file: pages in the page
   * cache), the device is trusted and stores nothing (no cache, or one that keeps no data), the
   * chunk is not in flight, and it is in the recent memory or is read at once and decoded here
   * (at most NOW_DECODE_MAX bytes). Otherwise undefined, with nothing kept or counted:
   * `readChunks` then serves the read (and words any failure, which this path never throws).
   * `last`: the reader is done with the chunk after this read (a sequential read reaching its
   * end), so the recent memory does not keep it (and lets it go if it held it).
   */
  readChunkNow(c: ChunkInfo, opts: ChunkReadOptions = NO_OPTIONS, last = false): PinnedChunks | undefined {
    if (this.#untrusted || this.cache?.storesData === true) return undefined;
    const reader = this.#opened.get(c.blobIndex);
    const blob = this.#table.blobs[c.blobIndex];
    if (reader?.readNow === undefined || blob === undefined) return undefined;
    const key = chunkKey(c);
    if (this.#inflight.has(key)) return undefined;
    const check = this.#check(opts);
    const hit = this.#recent.get(key);
    let got: Fetched | undefined = hit;
    try {
      checkChunkRecord(c, blob, reader.size);
      if (hit !== undefined) {
        if (check !== 0 && !hit.verified) this.#verify(c, hit.data, check);
      } else if (c.uncompressedSize <= NOW_DECODE_MAX) {
        // (Big chunks decode on worker threads, through readChunks, not stalling this thread.)
        got = this.#fetchNow(c, reader, check);
      }
    } catch {
      return undefined;
    }
    if (got === undefined) return undefined;
    // Pinned first: letting it go (or evicting to make room) must not recycle it.
    got.pins++;
    if (hit === undefined) {
      if (!last) this.#remember(key, got);
    } else {
      this.#recent.delete(key);
      if (last) this.#letGo(hit);
      else this.#recent.set(key, hit);
    }
    this.cache?.noteRequest(1, hit === undefined ? 0 : 1);
    return this.#pinned([got]);
  }

  /**
   * Chunk `c` read without waiting, decoded and checked here; undefined when its bytes could not
   * be read at once. Counted as a backend read only when got; a buffer taken for a chunk that
   * does not decode or pass its check goes back to the pool (and the failure is thrown).
   */
  #fetchNow(c: ChunkInfo, reader: BlobReader, check: Check): Fetched | undefined {
    const pool = this.#pool;
    const offset = c.compressedOffset;
    const length = c.compressedSize;
    let rawSlot = pool?.serves(length) === true ? pool.take(length) : undefined;
    let got: Fetched | undefined;
    let ok = false;
    try {
      const raw = reader.readNow!(offset, length, rawSlot);
      if (raw === undefined) return undefined;
      if (rawSlot !== undefined && !landedIn(raw, rawSlot)) {
        pool!.give(rawSlot);
        rawSlot = undefined;
      }
      const algo = this.#table.blobs[c.blobIndex]!.compressor;
      got = decodeChunk(
        { c, algo, stored: raw.subarray(0, length), rawSlot, lone: true, pool },
        decompressNow,
      );
      this.#verify(c, got.data, check);
      got.verified = check !== 0 && hasDigest(c);
      ok = true;
    } finally {
      // Slots no chunk keeps: the read's (unless the chunk is a view of it), the chunk's own when
      // it failed its check.
      if (!ok && got?.slot !== undefined && got.slot !== rawSlot) pool!.give(got.slot);
      if (rawSlot !== undefined && (!ok || got?.slot !== rawSlot)) pool!.give(rawSlot);
    }
    this.#backendReads++;
    this.#backendBytes += length;
    this.cache?.noteBackendRead(length);
    return got;
  }

  /**
   * A reader is done with `chunks` (a read reached their end): the recent memory lets them go.
   * Bytes still pinned stay valid until released.
   */
  done(chunks: readonly ChunkInfo[]): void {
    for (const c of chunks) {
      const key = chunkKey(c);
      const got = this.#recent.get(key);
      if (got === undefined) continue;
      this.#recent.delete(key);
      this.#letGo(got);
    }
  }

  /** Whether chunk `c` is in the recent-chunk memory or being fetched. */
  isHeld(c: ChunkInfo): boolean {
    const k = chunkKey(c);
    return this.#recent.has(k) || this.#inflight.has(k);
  }

  /**
   * Start fetching `chunks` (of one blob, in order) into the recent-chunk memory without waiting,
   * at on-demand priority (read-ahead of a file's next chunks). Failures are left for the reads
   * that need the chunks.
   */
  readAhead(chunks: readonly ChunkInfo[]): void {
    if (chunks.length === 0) return;
    this.#readRun(chunks, this.#check(NO_OPTIONS), READ_AHEAD).then(
      (got) => got.forEach((g) => this.#unpin(g)),
      () => undefined,
    );
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
    const got = await this.#readRun(chunks, this.#check(NO_OPTIONS), prefetchMode(signal));
    for (const g of got) this.#unpin(g);
  }

  /** The digest check a read gets: rafs validate or the read's own ask, else the cache's. */
  #check(opts: ChunkReadOptions): Check {
    // Every read of any kind asks for its check first: counted here, once per read.
    this.#uses++;
    if (opts.verify === true || this.#validate) return 2;
    return this.cache?.validate === true ? 1 : 0;
  }

  /**
   * Bytes of a run of chunks of one blob, each pinned for the caller (who unpins them). Chunks
   * already in flight are joined; the others are claimed and fetched (from the cache, else from
   * the backend with contiguous ranges merged).
   */
  async #readRun(run: readonly ChunkInfo[], check: Check, mode: RunMode): Promise<Fetched[]> {
    const first = run[0]!;
    const reader = await this.blobReader(first.blobIndex);
    const blob = this.#table.blobs[first.blobIndex];
    for (const c of run) checkChunkRecord(c, blob, reader.size);
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
      // An untrusted backend's chunks are checked against their recorded digests in any case.
      const fetchCheck: Check = this.#untrusted && check === 0 ? 1 : check;
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
        const got = await this.#fetchGroup(group, reader, start, end - start, prio);
        if (!got.ok) {
          for (const cl of group) this.#fail(cl, got.error);
          continue;
        }
        const again: Claim[] = [];
        group.forEach((cl, k) => {
          const r = this.#checked(cl.c, got.decoded[k]!, fetchCheck);
          if (r.ok) this.#keep(cl, r.got, store, writes);
          // (A chunk with no digest to check against fails as it is: fetching it again cannot help.)
          else if (this.#untrusted && (fetchCheck !== 2 || hasDigest(cl.c))) again.push(cl);
          else this.#fail(cl, r.error);
        });
        // Bytes from the network that are wrong: one more fetch of each such chunk by itself.
        for (const cl of again) {
          this.#refetches++;
          const one = await this.#fetchGroup([cl], reader, cl.c.compressedOffset, cl.c.compressedSize, prio);
          if (!one.ok) {
            this.#fail(cl, one.error);
            continue;
          }
          const r = this.#checked(cl.c, one.decoded[0]!, fetchCheck);
          if (r.ok) this.#keep(cl, r.got, store, writes);
          else this.#fail(cl, this.#corrupt(cl.c, r.error));
        }
      }
    } catch (e) {
      for (const cl of claims) if (!cl.flight.settled) this.#fail(cl, e);
    }
    await Promise.all(writes);
  }

  /** Fetched bytes of chunk `c` once they pass `check`; the decoding or digest failure otherwise. */
  #checked(
    c: ChunkInfo,
    r: PromiseSettledResult<Fetched>,
    check: Check,
  ): { ok: true; got: Fetched } | { ok: false; error: unknown } {
    if (r.status === 'rejected') return { ok: false, error: r.reason };
    const got = r.value;
    try {
      this.#verify(c, got.data, check);
    } catch (e) {
      this.#recycle(got);
      return { ok: false, error: e };
    }
    got.verified = check !== 0 && hasDigest(c);
    return { ok: true, got };
  }

  /** Settle a claim with checked bytes, storing them in the cache when it takes them. */
  #keep(cl: Claim, got: Fetched, store: CachedBlob | undefined, writes: Promise<void>[]): void {
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
  }

  /** The failure of a chunk an untrusted backend sent wrong twice. */
  #corrupt(c: ChunkInfo, e: unknown): NydusError {
    const blob = this.#table.blobs[c.blobIndex];
    return new NydusError(
      'ERR_DIGEST',
      `Chunk ${c.index} of blob ${blob?.blobId ?? c.blobIndex} came from the backend wrong twice: ${errorText(e)}`,
      { cause: e },
    );
  }

  /**
   * One merged backend read and the decoding of the chunks in it (in parallel; big ones on
   * worker threads). Pool slots hold the bytes when the device reuses buffers: the read lands in
   * one, a lone uncompressed chunk keeps it, every other chunk decodes into a slot of its own.
   */
  async #fetchGroup(
    group: readonly Claim[],
    reader: BlobReader,
    offset: number,
    length: number,
    prio: Priority,
  ): Promise<GroupResult> {
    const pool = this.#pool;
    let rawSlot = pool?.serves(length) === true ? pool.take(length) : undefined;
    let raw: Buffer;
    try {
      raw = await this.#backendRead(reader, offset, length, prio, rawSlot);
    } catch (e) {
      if (rawSlot !== undefined) pool!.give(rawSlot);
      return { ok: false, error: e };
    }
    if (rawSlot !== undefined && !landedIn(raw, rawSlot)) {
      pool!.give(rawSlot);
      rawSlot = undefined;
    }
    const lone = group.length === 1;
    const decoded = await Promise.allSettled(
      group.map(async ({ c }) => {
        const stored = raw.subarray(
          c.compressedOffset - offset,
          c.compressedOffset - offset + c.compressedSize,
        );
        const algo = this.#table.blobs[c.blobIndex]!.compressor;
        return decodeChunk({ c, algo, stored, rawSlot, lone, pool }, decompressTo);
      }),
    );
    // The raw bytes' slot, unless a chunk kept it.
    if (rawSlot !== undefined && !decoded.some((r) => r.status === 'fulfilled' && r.value.slot === rawSlot))
      pool!.give(rawSlot);
    return { ok: true, decoded };
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
    const bad = chunkMismatch(this.#table.blobs[c.blobIndex]!, c, data);
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
      return await (prio.low
        ? reader.read(offset, length, into, PREFETCH_READ)
        : reader.read(offset, length, into));
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
      this.#letGo(old);
    }
    got.kept = true;
    this.#recent.set(key, got);
    this.#recentBytes += this.#footprint(got);
    for (const [k, v] of this.#recent) {
      if (this.#recentBytes <= this.#recentLimit) break;
      this.#recent.delete(k);
      this.#letGo(v);
    }
  }

  /** A chunk just taken out of the recent memory: no longer counted there, and recycled. */
  #letGo(got: Fetched): void {
    this.#recentBytes -= this.#footprint(got);
    got.kept = false;
    this.#recycle(got);
  }

  #fail(cl: Claim, e: unknown): void {
    cl.flight.settled = true;
    cl.flight.reject(e);
    this.#forget(cl);
  }

  #forget(cl: Claim): void {
    if (this.#inflight.get(cl.key) === cl.flight) this.#inflight.delete(cl.key);
  }

  #verify(c: ChunkInfo, data: Buffer, check: Check): void {
    if (check === 0) return;
    verifyChunk(this.#table.blobs[c.blobIndex]!, c, data, check);
  }
}

/** Decodes a compressed chunk's bytes, into `into` when given. */
type Decoder<R> = (algo: Compressor, src: Buffer, size: number, into?: Buffer) => R;

/** A chunk's bytes as the backend read them, to decode (see `decodeChunk`). */
interface StoredChunk {
  c: ChunkInfo;
  /** What the chunk is compressed with, when it is. */
  algo: Compressor;
  stored: Buffer;
  /** The pool slot holding the backend read, if any. */
  rawSlot: Buffer | undefined;
  /** Whether the chunk was all of that read. */
  lone: boolean;
  pool: BufferPool | undefined;
}

/**
 * Chunk `c` from `stored`, decoded by `decode`: at once (`decompressNow`) or on a worker thread
 * (`decompressTo`), the only difference between the device's two ways to fetch. An uncompressed
 * chunk is a view of the read when no slot holds it or it was all of it (then it keeps the
 * slot); any other chunk is decoded or copied into a slot of its own when the pool serves its
 * size (given back if decoding fails), into a new buffer otherwise.
 */
function decodeChunk(s: StoredChunk, decode: Decoder<Buffer>): Fetched;
function decodeChunk(s: StoredChunk, decode: Decoder<Promise<Buffer>>): Promise<Fetched>;
function decodeChunk(
  { c, algo, stored, rawSlot, lone, pool }: StoredChunk,
  decode: Decoder<Buffer | Promise<Buffer>>,
): Fetched | Promise<Fetched> {
  const compressed = (c.flags & ChunkFlag.COMPRESSED) !== 0;
  if (!compressed && (rawSlot === undefined || lone)) return fetched(stored, false, rawSlot);
  const size = c.uncompressedSize;
  const slot = pool?.serves(size) === true ? pool.take(size) : undefined;
  const done = (data: Buffer): Fetched => {
    if (slot === undefined || landedIn(data, slot)) return fetched(data, false, slot);
    pool!.give(slot);
    return fetched(data, false);
  };
  const failed = (e: unknown): never => {
    if (slot !== undefined) pool!.give(slot);
    throw e;
  };
  try {
    if (!compressed) {
      const data = slot === undefined ? Buffer.from(stored) : slot.subarray(0, size);
      if (slot !== undefined) stored.copy(data);
      return fetched(data, false, slot);
    }
    const data = decode(algo, stored, size, slot);
    return data instanceof Promise ? data.then(done, failed) : done(data);
  } catch (e) {
    return failed(e);
  }
}

function isBlobList(b: BlobTable | readonly BlobInfo[]): b is readonly BlobInfo[] {
  return Array.isArray(b);
}
