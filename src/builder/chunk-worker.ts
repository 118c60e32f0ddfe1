import { parentPort } from 'node:worker_threads';
import type { Compressor, Digester } from '../codec/algorithms.js';
import { compress } from '../codec/compress.js';
import { digest } from '../codec/digest.js';

/** A chunk to digest and compress, sent to a worker (its buffer is transferred). */
export interface ChunkJob {
  seq: number;
  data: Uint8Array;
  compressor: Compressor;
  digester: Digester;
}

/** What a worker sends back. `stored` is either the compressed form or the data itself. */
export interface ChunkDone {
  seq: number;
  id: Uint8Array;
  stored: Uint8Array;
  compressed: boolean;
  error?: string;
}

function work(job: ChunkJob): ChunkDone {
  const data = Buffer.from(job.data.buffer, job.data.byteOffset, job.data.byteLength);
  const id = digest(job.digester, data);
  // A chunk is stored compressed only when that is strictly smaller (rafs-format.md 4.1).
  const c = job.compressor === 'none' || data.length === 0 ? data : compress(job.compressor, data);
  const compressed = c !== data && c.length < data.length;
  return { seq: job.seq, id, stored: compressed ? Uint8Array.from(c) : data, compressed };
}

parentPort?.on('message', (job: ChunkJob) => {
  let out: ChunkDone;
  try {
    out = work(job);
  } catch (e) {
    out = {
      seq: job.seq,
      id: new Uint8Array(0),
      stored: new Uint8Array(0),
      compressed: false,
      error: String(e),
    };
  }
  const transfer =
    out.stored.buffer === job.data.buffer
      ? [job.data.buffer as ArrayBuffer]
      : [out.stored.buffer as ArrayBuffer];
  parentPort!.postMessage(out, transfer);
});
