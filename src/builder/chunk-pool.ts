import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { NydusError } from '../errors/errors.js';
import type { Compressor, Digester } from '../codec/algorithms.js';
import type { ChunkDone, ChunkJob, FileJob } from './chunk-worker.js';

export interface ProcessedChunk {
  /** H(data) with the image digester. */
  id: Buffer;
  /** Bytes to store in the blob: compressed, or the data itself when compression did not help. */
  stored: Buffer;
  compressed: boolean;
  uncompressedSize: number;
}

/** Jobs sent to a worker in one message, at most. */
const BATCH = 8;

/**
 * Digest and compress chunks on worker threads, one per core. `submit` resolves in any order;
 * callers that need blob order keep their own queue of the promises. The number of chunks in
 * flight is the caller's to bound (see `ChunkQueue`).
 */
export class ChunkPool {
  readonly #workers: Worker[] = [];
  readonly #busy: number[] = [];
  readonly #pending = new Map<
    number,
    { resolve: (c: ProcessedChunk) => void; reject: (e: Error) => void; size: number; w: number }
  >();
  readonly #compressor: Compressor;
  readonly #digester: Digester;
  #seq = 0;
  #failed: Error | undefined;
  /** Jobs not yet posted, per worker; posted together on the next turn of the event loop. */
  readonly #batches: { jobs: (ChunkJob | FileJob)[]; transfer: ArrayBuffer[] }[] = [];
  #flushScheduled = false;

  constructor(compressor: Compressor, digester: Digester, threads = availableParallelism()) {
    this.#compressor = compressor;
    this.#digester = digester;
    for (let i = 0; i < Math.max(1, threads); i++) {
      const w = new Worker(new URL('./chunk-worker.js', import.meta.url));
      w.on('message', (ms: ChunkDone[]) => {
        for (const m of ms) this.#done(m);
      });
      w.on('error', (e) =>
        this.#fail(new NydusError('ERR_IO', `Chunk worker failed: ${e.message}`, { cause: e })),
      );
      this.#workers.push(w);
      this.#busy.push(0);
      this.#batches.push({ jobs: [], transfer: [] });
    }
  }

  get threads(): number {
    return this.#workers.length;
  }

  #done(m: ChunkDone): void {
    const p = this.#pending.get(m.seq);
    if (p === undefined) return;
    this.#pending.delete(m.seq);
    this.#busy[p.w]!--;
    if (m.fileError !== undefined) {
      p.reject(new NydusError('ERR_IO', m.fileError));
      return;
    }
    if (m.error !== undefined) {
      p.reject(new NydusError('ERR_IO', `Cannot compress chunk: ${m.error}`));
      return;
    }
    p.resolve({
      id: Buffer.from(m.id.buffer, m.id.byteOffset, m.id.byteLength),
      stored: Buffer.from(m.stored.buffer, m.stored.byteOffset, m.stored.byteLength),
      compressed: m.compressed,
      uncompressedSize: p.size,
    });
  }

  #fail(e: Error): void {
    this.#failed = e;
    for (const p of this.#pending.values()) p.reject(e);
    this.#pending.clear();
  }

  /**
   * Process one chunk. A buffer that owns its whole ArrayBuffer (`Buffer.allocUnsafeSlow`) and is
   * passed with `transferable` moves to the worker and must not be used again; any other buffer
   * is copied first (it may be a slice of Node's shared allocation pool).
   */
  submit(data: Buffer, transferable = false): Promise<ProcessedChunk> {
    const own =
      transferable && data.byteOffset === 0 && data.byteLength === data.buffer.byteLength
        ? new Uint8Array(data.buffer, 0, data.byteLength)
        : new Uint8Array(data);
    return this.#enqueue(
      (seq) => ({ seq, data: own, compressor: this.#compressor, digester: this.#digester }),
      data.length,
      own.buffer as ArrayBuffer,
    );
  }

  /**
   * Read a whole file of `size` bytes (at most one chunk) on a worker, then process it as one
   * chunk. Rejects with a user-facing NydusError if the file cannot be read or has changed.
   */
  submitFile(path: string | Buffer, size: number): Promise<ProcessedChunk> {
    return this.#enqueue(
      (seq) => ({ seq, path, size, compressor: this.#compressor, digester: this.#digester }),
      size,
      undefined,
    );
  }

  #enqueue(
    make: (seq: number) => ChunkJob | FileJob,
    size: number,
    transfer: ArrayBuffer | undefined,
  ): Promise<ProcessedChunk> {
    if (this.#failed !== undefined) return Promise.reject(this.#failed);
    let w = 0;
    for (let i = 1; i < this.#busy.length; i++) if (this.#busy[i]! < this.#busy[w]!) w = i;
    const seq = this.#seq++;
    const batch = this.#batches[w]!;
    batch.jobs.push(make(seq));
    if (transfer !== undefined) batch.transfer.push(transfer);
    if (batch.jobs.length >= BATCH) this.#post(w);
    else if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(() => {
        this.#flushScheduled = false;
        for (let i = 0; i < this.#workers.length; i++) this.#post(i);
      });
    }
    return new Promise((resolve, reject) => {
      this.#pending.set(seq, { resolve, reject, size, w });
      this.#busy[w]!++;
    });
  }

  #post(w: number): void {
    const batch = this.#batches[w]!;
    if (batch.jobs.length === 0) return;
    this.#workers[w]!.postMessage(batch.jobs, batch.transfer);
    this.#batches[w] = { jobs: [], transfer: [] };
  }

  async close(): Promise<void> {
    await Promise.all(this.#workers.map((w) => w.terminate()));
  }
}
