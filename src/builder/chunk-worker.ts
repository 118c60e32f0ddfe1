import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';
import type { Compressor, Digester } from '../codec/algorithms.js';
import { compress } from '../codec/compress.js';
import { digest } from '../codec/digest.js';
import { errorText } from '../errors/errors.js';

/** A chunk to digest and compress, sent to a worker (its buffer is transferred). */
export interface ChunkJob {
  seq: number;
  data: Uint8Array;
  compressor: Compressor;
  digester: Digester;
}

/**
 * A whole small file (at most one chunk) for the worker to read itself, then digest and
 * compress: the read runs on the worker, so many small files never queue on the main thread.
 */
export interface FileJob {
  seq: number;
  path: string | Uint8Array;
  /** Size seen by the scan; the file must still have exactly this many bytes. */
  size: number;
  compressor: Compressor;
  digester: Digester;
}

/** What a worker sends back. `stored` is either the compressed form or the data itself. */
export interface ChunkDone {
  seq: number;
  id: Uint8Array;
  stored: Uint8Array;
  compressed: boolean;
  /** Worker failure (a bug or a codec error). */
  error?: string;
  /** A message for the user about the source file (unreadable, changed). */
  fileError?: string;
}

function processChunk(seq: number, data: Buffer, compressor: Compressor, digester: Digester): ChunkDone {
  const id = digest(digester, data);
  // A chunk is stored compressed only when that is strictly smaller (rafs-format.md 4.1).
  const c = compressor === 'none' || data.length === 0 ? data : compress(compressor, data);
  const compressed = c !== data && c.length < data.length;
  return { seq, id, stored: compressed ? Uint8Array.from(c) : data, compressed };
}

class FileProblem extends Error {}

/** Read the whole file, refusing one that is not `size` bytes long or changes while read. */
function readWhole(path: string | Uint8Array, size: number): Buffer {
  const p = typeof path === 'string' ? path : Buffer.from(path.buffer, path.byteOffset, path.byteLength);
  const shown = p.toString();
  let fd: number;
  try {
    fd = openSync(p, 'r');
  } catch (e) {
    throw new FileProblem(`Cannot read "${shown}": ${errorText(e)}`);
  }
  try {
    const before = fstatSync(fd, { bigint: true });
    // One spare byte shows a file that grew since the scan.
    const buf = Buffer.allocUnsafeSlow(size + 1);
    let got = 0;
    for (;;) {
      const n = readSync(fd, buf, got, buf.length - got, got);
      if (n === 0) break;
      got += n;
      if (got === buf.length) break;
    }
    if (got < size)
      throw new FileProblem(`File "${shown}" changed during the build: it is shorter than ${size} bytes`);
    const after = fstatSync(fd, { bigint: true });
    if (
      got !== size ||
      after.size !== BigInt(size) ||
      after.mtimeNs !== before.mtimeNs ||
      after.ctimeNs !== before.ctimeNs
    )
      throw new FileProblem(`File "${shown}" changed during the build`);
    return buf.subarray(0, size);
  } catch (e) {
    if (e instanceof FileProblem) throw e;
    throw new FileProblem(`Cannot read "${shown}": ${errorText(e)}`);
  } finally {
    closeSync(fd);
  }
}

function work(job: ChunkJob | FileJob): ChunkDone {
  if ('path' in job) {
    return processChunk(job.seq, readWhole(job.path, job.size), job.compressor, job.digester);
  }
  const data = Buffer.from(job.data.buffer, job.data.byteOffset, job.data.byteLength);
  return processChunk(job.seq, data, job.compressor, job.digester);
}

function failed(seq: number, e: unknown): ChunkDone {
  const base = { seq, id: new Uint8Array(0), stored: new Uint8Array(0), compressed: false };
  return e instanceof FileProblem ? { ...base, fileError: e.message } : { ...base, error: String(e) };
}

parentPort?.on('message', (jobs: (ChunkJob | FileJob)[]) => {
  const out: ChunkDone[] = [];
  const transfer: ArrayBuffer[] = [];
  for (const job of jobs) {
    let done: ChunkDone;
    try {
      done = work(job);
    } catch (e) {
      done = failed(job.seq, e);
    }
    out.push(done);
    const b = done.stored.buffer as ArrayBuffer;
    if (b.byteLength > 0 && !transfer.includes(b)) transfer.push(b);
  }
  parentPort!.postMessage(out, transfer);
});
