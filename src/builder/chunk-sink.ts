import { open } from 'node:fs/promises';
import { errorText, NydusError } from '../errors/errors.js';
import type { ChunkInfo } from '../format/model.js';
import type { ChunkPool, ProcessedChunk } from './chunk-pool.js';
import type { BuildInode } from './tree.js';

/** Chunks already stored somewhere (chunk dict, parent layer, earlier in this build), by id and size. */
export class ChunkDict {
  readonly #map = new Map<string, ChunkInfo>();

  static key(id: Buffer, size: number): string {
    return `${id.toString('hex')}:${size}`;
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
  addChunk(p: ProcessedChunk): Promise<ChunkInfo>;
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
  fileOffset: number;
  result: Promise<ProcessedChunk>;
}

/**
 * Feeds file data through the chunk pool and lands the results in blob order: at most
 * `window` chunks are in flight (memory stays at window x chunk size; small files are read by
 * the workers themselves), results are taken in
 * submission order, deduplicated against the dict, written to the store, and recorded as the
 * inode's chunk k.
 */
export class ChunkSink {
  readonly #pool: ChunkPool;
  readonly #dict: ChunkDict;
  readonly #store: () => Promise<ChunkStore>;
  readonly #window: number;
  readonly #queue: Slot[] = [];
  readonly stats: SinkStats = { chunks: 0, dedupChunks: 0, dedupBytes: 0, storedBytes: 0, sourceBytes: 0 };
  readonly chunkSize: number;
  /** Called after each landed chunk with the bytes of source consumed so far. */
  onProgress: ((sourceBytes: number) => void) | undefined;

  constructor(
    pool: ChunkPool,
    dict: ChunkDict,
    store: () => Promise<ChunkStore>,
    chunkSize: number,
    window = pool.threads * 16,
  ) {
    this.#pool = pool;
    this.#dict = dict;
    this.#store = store;
    this.chunkSize = chunkSize;
    this.#window = Math.max(2, window);
  }

  async #land(): Promise<void> {
    const slot = this.#queue.shift()!;
    const p = await slot.result;
    let c = this.#dict.get(p.id, p.uncompressedSize);
    if (c === undefined) {
      c = await (await this.#store()).addChunk(p);
      this.#dict.add(c);
      this.stats.storedBytes += c.compressedSize;
    } else {
      this.stats.dedupChunks++;
      this.stats.dedupBytes += p.uncompressedSize;
    }
    this.stats.chunks++;
    this.stats.sourceBytes += p.uncompressedSize;
    slot.inode.chunks![slot.k] = { ...c, fileOffset: slot.fileOffset };
    this.onProgress?.(this.stats.sourceBytes);
  }

  /**
   * Queue chunk k of `inode` (data of at most chunkSize bytes). With `transferable`, `data`
   * owns its ArrayBuffer and is handed to the worker (see ChunkPool.submit).
   */
  async push(inode: BuildInode, k: number, data: Buffer, transferable = false): Promise<void> {
    await this.#enqueue(inode, k, () => this.#pool.submit(data, transferable));
  }

  async #enqueue(inode: BuildInode, k: number, submit: () => Promise<ProcessedChunk>): Promise<void> {
    while (this.#queue.length >= this.#window) await this.#land();
    inode.chunks ??= [];
    const result = submit();
    // Rejections surface when the slot lands; keep them from being reported as unhandled first.
    result.catch(() => undefined);
    this.#queue.push({ inode, k, fileOffset: k * this.chunkSize, result });
  }

  /**
   * Chunk a stream of file data (pieces of any size) into fixed-size chunks. Each chunk is
   * gathered into a buffer of its own, which then moves to a worker without another copy.
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
          chunk = Buffer.allocUnsafeSlow(Math.min(this.chunkSize, left));
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

  /** Chunk a regular file from the file system, refusing files that change while read. */
  async pushFile(inode: BuildInode, path: string | Buffer): Promise<void> {
    if (inode.size <= this.chunkSize) {
      // One chunk: a worker reads it, so small files are read in parallel with no main-thread I/O.
      inode.chunks = [];
      await this.#enqueue(inode, 0, () => this.#pool.submitFile(path, inode.size));
      return;
    }
    const shown = path.toString();
    let fh;
    try {
      fh = await open(path, 'r');
    } catch (e) {
      throw new NydusError('ERR_IO', `Cannot read "${shown}": ${errorText(e)}`, { cause: e });
    }
    try {
      const before = await fh.stat({ bigint: true });
      const size = inode.size;
      inode.chunks = [];
      let k = 0;
      for (let off = 0; off < size; off += this.chunkSize) {
        const len = Math.min(this.chunkSize, size - off);
        const buf = Buffer.allocUnsafeSlow(len);
        let got = 0;
        while (got < len) {
          const { bytesRead } = await fh.read(buf, got, len - got, off + got);
          if (bytesRead === 0) break;
          got += bytesRead;
        }
        if (got !== len)
          throw new NydusError(
            'ERR_IO',
            `File "${shown}" changed during the build: it is shorter than ${size} bytes`,
          );
        await this.push(inode, k++, buf, true);
      }
      const after = await fh.stat({ bigint: true });
      if (
        after.size !== BigInt(size) ||
        after.mtimeNs !== before.mtimeNs ||
        after.ctimeNs !== before.ctimeNs
      ) {
        throw new NydusError('ERR_IO', `File "${shown}" changed during the build`);
      }
    } catch (e) {
      if (e instanceof NydusError) throw e;
      throw new NydusError('ERR_IO', `Cannot read "${shown}": ${errorText(e)}`, { cause: e });
    } finally {
      await fh.close();
    }
  }

  /** Land everything still in flight. */
  async drain(): Promise<void> {
    while (this.#queue.length > 0) await this.#land();
  }
}
