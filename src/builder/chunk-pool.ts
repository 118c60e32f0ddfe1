import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { NydusError } from '../errors/errors.js';
import type { Compressor, Digester } from '../codec/algorithms.js';
import type { ChunkDone, ChunkJob } from './chunk-worker.js';

export interface ProcessedChunk {
  /** H(data) with the image digester. */
  id: Buffer;
  /** Bytes to store in the blob: compressed, or the data itself when compression did not help. */
  stored: Buffer;
  compressed: boolean;
  uncompressedSize: number;
}

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

  constructor(compressor: Compressor, digester: Digester, threads = availableParallelism()) {
    this.#compressor = compressor;
    this.#digester = digester;
    for (let i = 0; i < Math.max(1, threads); i++) {
      const w = new Worker(new URL('./chunk-worker.js', import.meta.url));
      w.on('message', (m: ChunkDone) => this.#done(m));
      w.on('error', (e) =>
        this.#fail(new NydusError('ERR_IO', `Chunk worker failed: ${e.message}`, { cause: e })),
      );
      this.#workers.push(w);
      this.#busy.push(0);
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

  /** Process one chunk; `data` is copied into a buffer of its own, which moves to the worker. */
  submit(data: Buffer): Promise<ProcessedChunk> {
    if (this.#failed !== undefined) return Promise.reject(this.#failed);
    let w = 0;
    for (let i = 1; i < this.#busy.length; i++) if (this.#busy[i]! < this.#busy[w]!) w = i;
    const seq = this.#seq++;
    // Never transfer a caller's buffer: it may be a slice of Node's shared allocation pool.
    const own = new Uint8Array(data);
    const job: ChunkJob = { seq, data: own, compressor: this.#compressor, digester: this.#digester };
    return new Promise((resolve, reject) => {
      this.#pending.set(seq, { resolve, reject, size: data.length, w });
      this.#busy[w]!++;
      this.#workers[w]!.postMessage(job, [own.buffer]);
    });
  }

  async close(): Promise<void> {
    await Promise.all(this.#workers.map((w) => w.terminate()));
  }
}
