import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { NydusError } from '../errors/errors.js';
import type { Compressor, Digester } from '../codec/algorithms.js';
import { movable } from '../util/shared-buffer.js';
import type { BatchDone, ChunkBatch, ChunkJob } from './chunk-worker.js';

export type { FileStamp } from './chunk-worker.js';

/** One chunk of a finished batch. */
export interface ProcessedChunk {
  /** H(data) with the image digester. */
  id: Buffer;
  /** Bytes to store in the blob: compressed, or the data itself when compression did not help. */
  stored: Buffer;
  compressed: boolean;
  uncompressedSize: number;
}

/** A batch's results, in job order. */
export interface BatchResult {
  ids: Buffer;
  sizes: Uint32Array;
  compressed: Uint8Array;
  /** The stored bytes of every chunk, one after the other. */
  data: Buffer;
  /** The whole buffer of the batch's slab, back from the worker for reuse. */
  slab?: ArrayBufferLike;
  /** The buffers of the batch's data jobs, back from the worker for reuse. */
  returned?: ArrayBufferLike[];
}

interface Pending {
  resolve: (r: BatchResult) => void;
  reject: (e: Error) => void;
  w: number;
  bytes: number;
}

/**
 * Digest and compress chunks on worker threads, one per core, a batch of chunks per message.
 * `run` resolves in any order; callers that need blob order keep their own queue of the
 * promises, and bound how many batches are in flight (see `ChunkSink`).
 */
export class ChunkPool {
  readonly #workers: Worker[] = [];
  /** Bytes of chunk data in flight per worker. */
  readonly #load: number[] = [];
  readonly #pending = new Map<number, Pending>();
  readonly compressor: Compressor;
  readonly digester: Digester;
  #seq = 0;
  #failed: Error | undefined;
  readonly #threads: number;
  #closed = false;
  #closing: Promise<void> | undefined;

  /** Workers start with the first batch: a build that stores no data never starts them. */
  constructor(compressor: Compressor, digester: Digester, threads = availableParallelism()) {
    this.compressor = compressor;
    this.digester = digester;
    this.#threads = Math.max(1, threads);
  }

  #start(): void {
    for (let i = 0; i < this.#threads; i++) {
      const w = new Worker(new URL('./chunk-worker.js', import.meta.url));
      w.on('message', (m: BatchDone) => this.#done(m));
      w.on('error', (e) =>
        this.#fail(new NydusError('ERR_IO', `Chunk worker failed: ${e.message}`, { cause: e })),
      );
      this.#workers.push(w);
      this.#load.push(0);
    }
  }

  get threads(): number {
    return this.#threads;
  }

  /** Batches posted and not answered yet. */
  get inFlight(): number {
    return this.#pending.size;
  }

  #done(m: BatchDone): void {
    const p = this.#pending.get(m.id);
    if (p === undefined) return;
    this.#pending.delete(m.id);
    this.#load[p.w]! -= p.bytes;
    if (m.fileError !== undefined) {
      p.reject(new NydusError('ERR_IO', m.fileError));
      return;
    }
    if (m.error !== undefined) {
      p.reject(new NydusError('ERR_IO', `Cannot compress chunk: ${m.error}`));
      return;
    }
    const r: BatchResult = {
      ids: Buffer.from(m.ids.buffer, m.ids.byteOffset, m.ids.byteLength),
      sizes: m.sizes,
      compressed: m.compressed,
      data: Buffer.from(m.data.buffer, m.data.byteOffset, m.data.byteLength),
    };
    if (m.slab !== undefined) r.slab = m.slab.buffer;
    if (m.returned !== undefined) r.returned = m.returned;
    p.resolve(r);
  }

  #fail(e: Error): void {
    this.#failed = e;
    for (const p of this.#pending.values()) p.reject(e);
    this.#pending.clear();
  }

  /**
   * Digest and compress a batch of chunks on the least loaded worker. `transfer` lists the
   * ArrayBuffers of data jobs that move to the worker (they must not be used again); `slab`
   * holds the data of slab jobs (its buffer must be in `transfer` unless it is shared). `out`,
   * a buffer back from an earlier batch's `data`, goes to the worker for the results (the
   * caller does not touch it until the batch is back).
   */
  run(
    jobs: ChunkJob[],
    bytes: number,
    transfer: ArrayBuffer[] = [],
    slab?: Uint8Array,
    out?: ArrayBufferLike,
  ): Promise<BatchResult> {
    if (this.#failed !== undefined) return Promise.reject(this.#failed);
    if (this.#closed) return Promise.reject(new NydusError('ERR_IO', 'Chunk pool is closed'));
    if (this.#workers.length === 0) this.#start();
    let w = 0;
    for (let i = 1; i < this.#load.length; i++) if (this.#load[i]! < this.#load[w]!) w = i;
    const id = this.#seq++;
    const batch: ChunkBatch = { id, compressor: this.compressor, digester: this.digester, jobs };
    if (slab !== undefined) batch.slab = slab;
    if (out !== undefined) batch.out = out;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, w, bytes });
      this.#load[w]! += bytes;
      this.#workers[w]!.postMessage(
        batch,
        out === undefined || !movable(out) ? transfer : [...transfer, out],
      );
    });
  }

  /** Stop the workers (once: later calls return the same promise). */
  close(): Promise<void> {
    this.#closed = true;
    this.#closing ??= Promise.all(this.#workers.map((w) => w.terminate())).then(() => undefined);
    return this.#closing;
  }
}
