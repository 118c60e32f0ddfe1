import { closeSync, fstatSync, openSync, readSync, type BigIntStats } from 'node:fs';
import { parentPort } from 'node:worker_threads';
import type { Compressor, Digester } from '../codec/algorithms.js';
import { compressInto, compressIntoBound } from '../codec/compress.js';
import { nativeWillNeed } from '../codec/native.js';
import { digest } from '../codec/digest.js';
import { errorText } from '../errors/errors.js';
import { movable, sharedBuffer } from '../util/shared-buffer.js';

/** What a file looked like when the build listed it; a read that finds otherwise fails. */
export interface FileStamp {
  size: number;
  mtimeNs: bigint;
  ctimeNs: bigint;
}

/**
 * A piece of a file for the worker to read itself (then digest and compress): reads run on the
 * workers, so the main thread never waits for file data.
 */
export interface ReadJob {
  path: string | Uint8Array;
  offset: number;
  len: number;
  /** The file's size when it was listed. */
  size: number;
  /** Its stamp when it was listed; without one, the worker takes it when it opens the file. */
  stamp?: FileStamp;
}

/** Data already in memory (a tar stream's), moved to the worker. */
export interface DataJob {
  data: Uint8Array;
}

/** Data in the batch's `slab`: bytes [at, at + len). */
export interface SlabJob {
  at: number;
  len: number;
}

export type ChunkJob = ReadJob | DataJob | SlabJob;

/** Chunks digested and compressed in one message, in order. */
export interface ChunkBatch {
  id: number;
  compressor: Compressor;
  digester: Digester;
  jobs: ChunkJob[];
  /** The data of the batch's slab jobs (moved to the worker with the batch). */
  slab?: Uint8Array;
  /**
   * A buffer for the results, back from an earlier batch (the sender is done with it): used
   * when it is large enough, so the results need no fresh memory.
   */
  out?: ArrayBufferLike;
}

/**
 * What a worker sends back for a batch: per chunk its digest (32 bytes each in `ids`), the
 * length of what to store and whether that is compressed; the stored bytes of all chunks one
 * after the other in `data`. On a failure, the chunks before it and the failure.
 */
export interface BatchDone {
  id: number;
  ids: Uint8Array;
  sizes: Uint32Array;
  compressed: Uint8Array;
  data: Uint8Array;
  /** The batch's slab, handed back for reuse. */
  slab?: Uint8Array;
  /** The buffers of the batch's data jobs, handed back for reuse (a finished batch only). */
  returned?: ArrayBufferLike[];
  /** Chunks done (all of them unless `error` or `fileError`). */
  count: number;
  /** Worker failure (a bug or a codec error). */
  error?: string;
  /** A message for the user about the source file (unreadable, changed). */
  fileError?: string;
}

class FileProblem extends Error {}

/** Least size of a new result buffer: a batch of 512 KiB of data, or one chunk of 1 MiB, fits. */
const OUT_MIN = 2 * 1024 * 1024;

/** Reused read buffer (grows to the largest chunk read). */
let scratch = Buffer.allocUnsafeSlow(0);

function changed(st: BigIntStats, stamp: FileStamp): boolean {
  return st.size !== BigInt(stamp.size) || st.mtimeNs !== stamp.mtimeNs || st.ctimeNs !== stamp.ctimeNs;
}

/**
 * Read [offset, offset + len) of a file into `into`, refusing a file that is not `size` bytes
 * long or has changed (against its stamp, or, without one, while it is read).
 */
function readPiece(job: ReadJob, into: Buffer, opened?: Opened): void {
  const p = pathOf(job);
  const shown = p.toString();
  let fd: number;
  if (opened !== undefined) {
    if (typeof opened === 'number') fd = opened;
    else throw new FileProblem(`Cannot read "${shown}": ${errorText(opened.error)}`);
  } else {
    try {
      fd = openSync(p, 'r');
    } catch (e) {
      throw new FileProblem(`Cannot read "${shown}": ${errorText(e)}`);
    }
  }
  try {
    let stamp = job.stamp;
    if (stamp === undefined) {
      const st = fstatSync(fd, { bigint: true });
      stamp = { size: job.size, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs };
    }
    // The last piece asks for one byte more: a file that grew shows it.
    const last = job.offset + job.len >= job.size;
    const want = job.len + (last ? 1 : 0);
    let got = 0;
    for (;;) {
      const n = readSync(fd, into, got, want - got, job.offset + got);
      if (n === 0) break;
      got += n;
      // A short read of a regular file is its end: no second call to see 0.
      if (got >= job.len) break;
    }
    if (got < job.len)
      throw new FileProblem(`File "${shown}" changed during the build: it is shorter than ${job.size} bytes`);
    if (got !== job.len || changed(fstatSync(fd, { bigint: true }), stamp))
      throw new FileProblem(`File "${shown}" changed during the build`);
  } catch (e) {
    if (e instanceof FileProblem) throw e;
    throw new FileProblem(`Cannot read "${shown}": ${errorText(e)}`);
  } finally {
    closeSync(fd);
  }
}

function pathOf(job: ReadJob): string | Buffer {
  return typeof job.path === 'string'
    ? job.path
    : Buffer.from(job.path.buffer, job.path.byteOffset, job.path.byteLength);
}

/** A file opened ahead: its descriptor, or why it could not be opened. */
type Opened = number | { error: unknown };

/**
 * Open the files of a batch of several reads and ask the kernel to start reading them all
 * (posix_fadvise WILLNEED): their reads are in flight together instead of one at a time.
 * Stops at the first file that cannot be opened (its error is reported in its turn).
 */
function openAhead(jobs: readonly ChunkJob[]): Opened[] | undefined {
  const willNeed = nativeWillNeed();
  if (willNeed === undefined || jobs.length < 2) return undefined;
  const out: Opened[] = [];
  for (const job of jobs) {
    if (!('path' in job)) break;
    try {
      const fd = openSync(pathOf(job), 'r');
      out.push(fd);
      willNeed(fd, job.offset, job.len);
    } catch (e) {
      out.push({ error: e });
      break;
    }
  }
  return out;
}

function runBatch(b: ChunkBatch): { done: BatchDone; transfer: ArrayBuffer[] } {
  const n = b.jobs.length;
  let room = 0;
  // One byte more per chunk: a file's last piece is read with one byte to spare.
  for (const j of b.jobs)
    room += compressIntoBound(b.compressor, 'data' in j ? j.data.byteLength : j.len) + 1;
  const slab =
    b.slab === undefined ? undefined : Buffer.from(b.slab.buffer, b.slab.byteOffset, b.slab.byteLength);
  // Fresh memory costs a page fault per page: buffers come back to be used again, and a new
  // one has room enough for any batch of chunks of the default size.
  const out =
    b.out !== undefined && b.out.byteLength >= room
      ? Buffer.from(b.out)
      : sharedBuffer(Math.max(room, OUT_MIN));
  const ids = new Uint8Array(n * 32);
  const sizes = new Uint32Array(n);
  const compressed = new Uint8Array(n);
  const raw = b.compressor === 'none';
  let at = 0;
  let count = 0;
  const done = (): BatchDone => ({ id: b.id, ids, sizes, compressed, data: out.subarray(0, at), count });
  const opened = openAhead(b.jobs);
  try {
    for (; count < n; count++) {
      const job = b.jobs[count]!;
      let data: Buffer;
      if ('data' in job) data = Buffer.from(job.data.buffer, job.data.byteOffset, job.data.byteLength);
      else if (!('path' in job)) data = slab!.subarray(job.at, job.at + job.len);
      else if (raw) {
        // Stored as read: read straight into the output.
        readPiece(job, out.subarray(at), take(opened, count));
        data = out.subarray(at, at + job.len);
      } else {
        if (scratch.length < job.len + 1) scratch = Buffer.allocUnsafeSlow(Math.max(job.len + 1, 64 * 1024));
        readPiece(job, scratch, take(opened, count));
        data = scratch.subarray(0, job.len);
      }
      ids.set(digest(b.digester, data), count * 32);
      // A chunk is stored compressed only when that is strictly smaller (rafs-format.md 4.1).
      const c = raw || data.length === 0 ? 0 : compressInto(b.compressor, data, out.subarray(at));
      if (c > 0) {
        compressed[count] = 1;
        sizes[count] = c;
        at += c;
      } else {
        if (data.buffer !== out.buffer || data.byteOffset !== at) data.copy(out, at);
        sizes[count] = data.length;
        at += data.length;
      }
    }
  } catch (e) {
    // Files opened ahead and not read (readPiece closes the ones it takes).
    if (opened !== undefined) for (let i = count + 1; i < opened.length; i++) closeQuietly(opened[i]!);
    const d = done();
    if (e instanceof FileProblem) d.fileError = e.message;
    else d.error = String(e);
    return { done: d, transfer: movable(out.buffer) ? [out.buffer] : [] };
  }
  const d = done();
  const transfer: ArrayBuffer[] = movable(out.buffer) ? [out.buffer] : [];
  // Data jobs' buffers go back too: the sender fills them again instead of fresh memory.
  for (const j of b.jobs) {
    const buf = 'data' in j ? j.data.buffer : undefined;
    if (buf === undefined || buf.byteLength === 0 || d.returned?.includes(buf) === true) continue;
    (d.returned ??= []).push(buf);
    if (movable(buf)) transfer.push(buf);
  }
  if (b.slab === undefined) return { done: d, transfer };
  d.slab = b.slab;
  if (movable(b.slab.buffer)) transfer.push(b.slab.buffer);
  return { done: d, transfer };
}

/** The descriptor opened ahead for job `i`, taken over by the caller (undefined: open it then). */
function take(opened: Opened[] | undefined, i: number): Opened | undefined {
  return opened?.[i];
}

function closeQuietly(o: Opened): void {
  if (typeof o === 'number') {
    try {
      closeSync(o);
    } catch {
      // already failing
    }
  }
}

parentPort?.on('message', (b: ChunkBatch) => {
  const { done, transfer } = runBatch(b);
  parentPort!.postMessage(done, transfer);
});
