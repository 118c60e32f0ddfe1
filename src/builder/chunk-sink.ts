import { NydusError } from '../errors/errors.js';
import type { ChunkInfo } from '../format/model.js';
import type { BatchResult, ChunkPool, FileStamp, ProcessedChunk } from './chunk-pool.js';
import { movable, sharedBuffer } from '../util/shared-buffer.js';
import type { ChunkJob, ReadJob } from './chunk-worker.js';
import type { BuildInode } from './tree.js';

/** Chunks already stored somewhere (chunk dict, parent layer, earlier in this build), by id and size. */
export class ChunkDict {
  readonly #map = new Map<string, ChunkInfo>();

  static key(id: Buffer, size: number): string {
    // latin1: one code unit per byte, the cheapest exact string of the digest.
    return `${id.toString('latin1')}:${size}`;
  }

  get(id: Buffer, size: number): ChunkInfo | undefined {
    return this.#map.get(ChunkDict.key(id, size));
  }

  add(c: ChunkInfo): void {
    const k = ChunkDict.key(c.id, c.uncompressedSize);
    if (!this.#map.has(k)) this.#map.set(k, c);
  }

  get size(): number {
    return this.#map.size;
  }
}

/** Where new chunk data goes (the blob writer, created on the first new chunk). */
export interface ChunkStore {
  /**
   * Append a chunk's stored bytes (taken in before it returns: the buffer is free again
   * afterwards) and return its record (fileOffset 0: the caller sets it).
   */
  addChunk(p: ProcessedChunk): ChunkInfo;
}

export interface SinkStats {
  chunks: number;
  dedupChunks: number;
  dedupBytes: number;
  storedBytes: number;
  sourceBytes: number;
}

interface Slot {
  inode: BuildInode;
  k: number;
  size: number;
}

interface Batch {
  jobs: ChunkJob[];
  slots: Slot[];
  transfer: ArrayBuffer[];
  bytes: number;
  /** Where `pushBytes` copies chunk data: one buffer moves to the worker for the batch. */
  slab: Buffer | undefined;
  slabUsed: number;
}

/** A batch is posted once it holds this many bytes of data (or `BATCH_JOBS` chunks). */
const BATCH_BYTES = 512 * 1024;
const BATCH_JOBS = 128;
/**
 * Result buffers kept for the workers. A buffer is free again once its batch has landed (the
 * blob writer copies what it stores), so about one per batch in flight circulates; this only
 * caps how many wait here.
 */
const FREE_OUT_KEEP = 32;

/**
 * Feeds file data through the chunk pool and lands the results in blob order. Chunks go to the
 * workers in batches (many small files make one message); files on disk are read by the
 * workers themselves. At most `window` batches are in flight (memory stays at a few MiB per
 * worker); results are taken in submission order, deduplicated against the dict, written to
 * the store, and recorded as the inode's chunk k.
 */
export class ChunkSink {
  readonly #pool: ChunkPool;
  readonly #dict: ChunkDict;
  readonly #storeOf: () => Promise<ChunkStore>;
  #store: ChunkStore | undefined;
  readonly #window: number;
  readonly #queue: { slots: Slot[]; result: Promise<BatchResult> }[] = [];
  #open: Batch | undefined;
  #flushScheduled = false;
  /** Slabs back from the workers, for the next batches (fresh memory costs page faults). */
  readonly #freeSlabs: ArrayBufferLike[] = [];
  /** Chunk-size buffers back from the workers, for `pushStream` to fill again. */
  readonly #freeChunks: ArrayBufferLike[] = [];
  /** Result buffers the store is done with, for the workers to fill again. */
  readonly #freeOut: ArrayBufferLike[] = [];
  readonly stats: SinkStats = { chunks: 0, dedupChunks: 0, dedupBytes: 0, storedBytes: 0, sourceBytes: 0 };
  readonly chunkSize: number;
  /** Called after landed chunks with the bytes of source consumed so far. */
  onProgress: ((sourceBytes: number) => void) | undefined;

  constructor(
    pool: ChunkPool,
    dict: ChunkDict,
    store: () => Promise<ChunkStore>,
    chunkSize: number,
    window = pool.threads * 3,
  ) {
    this.#pool = pool;
    this.#dict = dict;
    this.#storeOf = store;
    this.chunkSize = chunkSize;
    this.#window = Math.max(2, window);
  }

  async #land(): Promise<void> {
    const { slots, result } = this.#queue.shift()!;
    const r = await result;
    if (r.slab !== undefined && r.slab.byteLength === BATCH_BYTES && this.#freeSlabs.length <= this.#window)
      this.#freeSlabs.push(r.slab);
    if (r.returned !== undefined)
      for (const b of r.returned)
        if (b.byteLength === this.chunkSize && this.#freeChunks.length <= this.#window)
          this.#freeChunks.push(b);
    let at = 0;
    for (let i = 0; i < slots.length; i++) {
      const slot = slots[i]!;
      const id = r.ids.subarray(i * 32, i * 32 + 32);
      const stored = r.data.subarray(at, at + r.sizes[i]!);
      at += stored.length;
      let c = this.#dict.get(id, slot.size);
      if (c === undefined) {
        this.#store ??= await this.#storeOf();
        c = this.#store.addChunk({
          id,
          stored,
          compressed: r.compressed[i] === 1,
          uncompressedSize: slot.size,
        });
        this.#dict.add(c);
        this.stats.storedBytes += c.compressedSize;
      } else {
        this.stats.dedupChunks++;
        this.stats.dedupBytes += slot.size;
      }
      this.stats.chunks++;
      this.stats.sourceBytes += slot.size;
      const fileOffset = slot.k * this.chunkSize;
      // Records are never changed in place: a first chunk shares the dict's record.
      slot.inode.chunks![slot.k] = c.fileOffset === fileOffset ? c : { ...c, fileOffset };
    }
    if (this.#freeOut.length < FREE_OUT_KEEP) this.#freeOut.push(r.data.buffer);
    this.onProgress?.(this.stats.sourceBytes);
  }

  #post(): void {
    const b = this.#open;
    if (b === undefined) return;
    this.#open = undefined;
    const slab = b.slab === undefined ? undefined : new Uint8Array(b.slab.buffer, 0, b.slabUsed);
    const result = this.#pool.run(b.jobs, b.bytes, b.transfer, slab, this.#freeOut.pop());
    // Rejections surface when the batch lands; keep them from being reported as unhandled first.
    result.catch(() => undefined);
    this.#queue.push({ slots: b.slots, result });
  }

  /** Land batches until fewer than `window` are in flight. */
  async #settle(): Promise<void> {
    while (this.#queue.length >= this.#window) await this.#land();
  }

  #batch(): Batch {
    let b = this.#open;
    if (b === undefined) {
      b = this.#open = { jobs: [], slots: [], transfer: [], bytes: 0, slab: undefined, slabUsed: 0 };
      if (!this.#flushScheduled) {
        // A batch still open on the next turn of the event loop goes out unfilled when a
        // worker would otherwise wait for it (a slow stream, the end of a directory walk).
        this.#flushScheduled = true;
        setImmediate(() => {
          this.#flushScheduled = false;
          if (this.#pool.inFlight < this.#pool.threads) this.#post();
        });
      }
    }
    return b;
  }

  /** Queue a job; a promise when the caller must wait for the window to have room. */
  #add(
    inode: BuildInode,
    k: number,
    job: ChunkJob,
    size: number,
    transfer?: ArrayBuffer,
  ): Promise<void> | undefined {
    const b = this.#batch();
    b.jobs.push(job);
    b.slots.push({ inode, k, size });
    if (transfer !== undefined) b.transfer.push(transfer);
    b.bytes += size;
    if (b.bytes >= BATCH_BYTES || b.jobs.length >= BATCH_JOBS) {
      this.#post();
      if (this.#queue.length >= this.#window) return this.#settle();
    }
    return undefined;
  }

  /**
   * Queue chunk k of `inode` (data of at most chunkSize bytes). With `transferable`, `data` is
   * a view of a buffer the caller owns whole and leaves alone from now on (`sharedBuffer`,
   * `Buffer.allocUnsafeSlow`, or a buffer back from a worker), which the worker gets as it is
   * (shared, or moved); any other buffer is copied first (it may be a slice of Node's shared
   * allocation pool).
   */
  async push(inode: BuildInode, k: number, data: Buffer, transferable = false): Promise<void> {
    inode.chunks ??= [];
    const own = transferable
      ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
      : new Uint8Array(data);
    await this.#add(inode, k, { data: own }, own.byteLength, movable(own.buffer) ? own.buffer : undefined);
  }

  /**
   * Queue all of a file's data at once: `data` holds exactly `inode.size` bytes, and must not
   * change until the returned promise (if any) settles. Chunks are copied into the open batch's
   * slab, which moves to the worker as one buffer. A promise only when the caller must wait for
   * room in the window.
   */
  pushBytes(inode: BuildInode, data: Buffer, what: string): Promise<void> | undefined {
    if (data.length !== inode.size)
      throw new NydusError('ERR_IO', `${what}: read ${data.length} bytes, expected ${inode.size}`);
    inode.chunks = [];
    if (data.length === 0) return undefined;
    if (data.length <= this.chunkSize) return this.#pushSlab(inode, 0, data);
    return this.#pushAll(inode, Buffer.from(data));
  }

  async #pushAll(inode: BuildInode, data: Buffer): Promise<void> {
    for (let k = 0, off = 0; off < data.length; k++, off += this.chunkSize) {
      await this.#pushSlab(inode, k, data.subarray(off, off + this.chunkSize));
    }
  }

  #pushSlab(inode: BuildInode, k: number, data: Buffer): Promise<void> | undefined {
    const len = data.length;
    let b = this.#open;
    if (b !== undefined && b.slab !== undefined && b.slab.length - b.slabUsed < len) {
      this.#post();
      if (this.#queue.length >= this.#window)
        return this.#settle().then(() => this.#pushSlab(inode, k, data));
    }
    b = this.#batch();
    if (b.slab === undefined) {
      const free = len <= BATCH_BYTES ? this.#freeSlabs.pop() : undefined;
      b.slab = free === undefined ? sharedBuffer(Math.max(BATCH_BYTES, len)) : Buffer.from(free);
      if (movable(b.slab.buffer)) b.transfer.push(b.slab.buffer);
    }
    const at = b.slabUsed;
    data.copy(b.slab, at);
    b.slabUsed += len;
    return this.#add(inode, k, { at, len }, len);
  }

  /**
   * A buffer of `len` bytes (at most a chunk) for one chunk's data, to fill and hand to `push`
   * as transferable: one back from a worker when there is one (fresh memory costs page faults).
   */
  #chunkBuffer(len: number): Buffer {
    const free = this.#freeChunks.pop();
    return free === undefined ? sharedBuffer(len) : Buffer.from(free, 0, len);
  }

  /**
   * Chunk a stream of file data (pieces of any size) into fixed-size chunks. Each chunk is
   * gathered into a buffer of its own, which the worker then reads where it is (shared memory, no copy).
   */
  async pushStream(inode: BuildInode, data: AsyncIterable<Buffer>, what: string): Promise<number> {
    inode.chunks = [];
    const size = inode.size;
    let k = 0;
    let total = 0;
    // The chunk being filled: sized to what the file still holds (never more than a chunk).
    let chunk: Buffer | undefined;
    let filled = 0;
    const tooLong = (): NydusError =>
      new NydusError(
        'ERR_IO',
        `${what}: more data than its size of ${size} bytes (did it change during the build?)`,
      );
    for await (const piece of data) {
      let at = 0;
      while (at < piece.length) {
        if (chunk === undefined) {
          const left = size - total;
          if (left <= 0) throw tooLong();
          const len = Math.min(this.chunkSize, left);
          chunk = this.#chunkBuffer(len);
          filled = 0;
        }
        const n = Math.min(chunk.length - filled, piece.length - at);
        piece.copy(chunk, filled, at, at + n);
        filled += n;
        at += n;
        if (filled === chunk.length) {
          total += filled;
          const full = chunk;
          chunk = undefined;
          await this.push(inode, k++, full, true);
        }
      }
    }
    if (chunk !== undefined) total += filled;
    if (total !== size) {
      throw new NydusError(
        'ERR_IO',
        `${what}: read ${total} bytes, expected ${size} (did it change during the build?)`,
      );
    }
    return total;
  }

  /**
   * Chunk a file's data read by `read` (up to `n` bytes into `buf` at `at`; 0 at its end)
   * straight into chunk buffers: no piece of it is copied on this thread.
   */
  async pushInto(
    inode: BuildInode,
    read: (buf: Buffer, at: number, n: number) => Promise<number>,
    what: string,
  ): Promise<void> {
    inode.chunks = [];
    const size = inode.size;
    for (let k = 0, off = 0; off < size; k++) {
      const len = Math.min(this.chunkSize, size - off);
      const chunk = this.#chunkBuffer(len);
      for (let filled = 0; filled < len;) {
        const n = await read(chunk, filled, len - filled);
        if (n === 0) throw new NydusError('ERR_IO', `${what}: read ${off + filled} bytes, expected ${size}`);
        filled += n;
      }
      off += len;
      await this.push(inode, k, chunk, true);
    }
  }

  /**
   * Chunk a regular file from the file system: the workers read it, refusing a file that
   * changes while it is read, or, given `stamp` (what the walk saw), since it was listed.
   */
  pushFile(inode: BuildInode, path: string | Buffer, stamp?: FileStamp): Promise<void> {
    return this.pushRange(inode, path, 0, inode.size, stamp);
  }

  /**
   * Chunk `inode.size` bytes at `at` of the file at `path` (`fileSize` bytes long: a file in a
   * tar file, or the whole file), read by the workers, who refuse a file that changed (against
   * `stamp`, or, without one, while it is read).
   */
  async pushRange(
    inode: BuildInode,
    path: string | Buffer,
    at: number,
    fileSize: number,
    stamp?: FileStamp,
  ): Promise<void> {
    const size = inode.size;
    inode.chunks = [];
    // A Buffer path is copied: posting a view of Node's allocation pool would clone all of it.
    const p: string | Uint8Array = typeof path === 'string' ? path : new Uint8Array(path);
    for (let k = 0, off = 0; off < size; k++, off += this.chunkSize) {
      const len = Math.min(this.chunkSize, size - off);
      const job: ReadJob =
        stamp === undefined
          ? { path: p, offset: at + off, len, size: fileSize }
          : { path: p, offset: at + off, len, size: fileSize, stamp };
      await this.#add(inode, k, job, len);
    }
  }

  /** Land everything still in flight. */
  async drain(): Promise<void> {
    this.#post();
    while (this.#queue.length > 0) await this.#land();
  }
}
