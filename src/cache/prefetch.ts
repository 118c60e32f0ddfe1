import { setImmediate as yieldToLoop, setTimeout as sleep } from 'node:timers/promises';
import { errorText } from '../errors/errors.js';
import { isDir, isReg } from '../format/flags.js';
import type { Bootstrap, ChunkInfo } from '../format/model.js';
import type { Logger } from '../log/logger.js';
import type { RafsImage } from '../rafs/image.js';
import { BlobCache } from './blobcache.js';
import { newBlobCacheStats, type BlobCacheStats } from './stats.js';

/**
 * Filesystem-level prefetch (upstream `rafs.prefetch` / v1 `fs_prefetch`): reads the chunks of
 * chosen files into the image's chunk cache in the background so later reads need no backend.
 */

export interface PrefetchOptions {
  /** Inodes to prefetch first, in order; directories stand for every regular file below them. */
  inodes: number[];
  /** Then every other regular file of the image. */
  prefetchAll: boolean;
  /** Requests in flight at once (1-1024). */
  threads: number;
  /** Largest merged request in bytes of blob data (contiguous chunks of one blob merge up to it). */
  mergingSize: number;
  /** Bytes per second of backend data; 0 = unlimited. Values below the chunk size are raised to it. */
  bandwidthRate: number;
}

export interface PrefetchHandle {
  /** Resolves when prefetch has finished or was cancelled; never rejects (errors are logged). */
  done: Promise<void>;
  /** Stop issuing requests; `done` resolves once the requests in flight have ended. */
  cancel(): void;
}

interface Request {
  readonly chunks: ChunkInfo[];
  /** The compressed span the request covers. */
  readonly bytes: number;
  readonly planned: number;
}

/** How many files are planned between two yields to the event loop. */
const PLAN_BATCH = 256;

/**
 * Start prefetching into `image.cache`. Without a cache that stores data (none, dummycache) it
 * logs and does nothing. Backend reads run at low priority (see BlobDevice.prefetchChunks).
 */
export function startPrefetch(image: RafsImage, opts: PrefetchOptions, logger: Logger): PrefetchHandle {
  const ac = new AbortController();
  const done = runPrefetch(image, opts, logger, ac.signal).catch((e: unknown) => {
    if (!ac.signal.aborted) logger.warn(`Prefetch stopped: ${errorText(e)}`);
  });
  return { done, cancel: () => ac.abort() };
}

/**
 * The inodes a mount prefetches: those of `files` (absolute paths inside the image, as
 * `--prefetch-files` or the API's `prefetch_files` give them) when any are given, since upstream
 * lets such a list override the bootstrap's prefetch table; else the bootstrap's table. Paths
 * that do not exist are logged and skipped.
 */
export function prefetchInodes(
  image: RafsImage,
  files: readonly string[] | undefined,
  logger: Logger,
): number[] {
  const list = (files ?? []).map((f) => f.trim()).filter((f) => f !== '');
  if (list.length === 0) return image.bootstrap.prefetchInos();
  const out: number[] = [];
  for (const f of list) {
    let e;
    try {
      e = image.lookupPath(f);
    } catch (err) {
      logger.warn(`Prefetch file "${f}" skipped: ${errorText(err)}`);
      continue;
    }
    if (e === undefined) logger.warn(`Prefetch file "${f}" does not exist in the image, skipped`);
    else out.push(e.ino);
  }
  return out;
}

async function runPrefetch(
  image: RafsImage,
  opts: PrefetchOptions,
  log: Logger,
  signal: AbortSignal,
): Promise<void> {
  const cache = image.cache;
  if (cache === undefined || !cache.storesData) {
    log.info('Prefetch skipped: there is no blob cache to fill');
    return;
  }
  const stats = cache instanceof BlobCache ? cache.stats : newBlobCacheStats('');
  const threads = Math.min(1024, Math.max(1, Math.floor(opts.threads)));
  const chunkSize = image.bootstrap.superblock.chunkSize;
  const bandwidth =
    opts.bandwidthRate > 0 ? new Bandwidth(Math.max(opts.bandwidthRate, chunkSize)) : undefined;
  const started = Date.now();
  stats.prefetchBeginTimeSecs = Math.floor(started / 1000);
  stats.prefetchBeginTimeMillis = started % 1000;
  stats.prefetchWorkers += threads;
  const seenFiles = new Set<number>();
  const seenChunks = new Set<string>();
  let requests = 0;
  try {
    const phases: number[][] = [opts.inodes];
    if (opts.prefetchAll) phases.push([image.bootstrap.rootIno]);
    for (const roots of phases) {
      if (signal.aborted) break;
      const plan = await planRequests(image, roots, opts.mergingSize, seenFiles, seenChunks, log, signal);
      requests += plan.length;
      await issue(image, plan, threads, bandwidth, stats, log, signal);
    }
  } finally {
    stats.prefetchWorkers -= threads;
  }
  log.info(
    `Prefetch ${signal.aborted ? 'cancelled' : 'finished'}: ${seenFiles.size} file(s), ${requests} request(s) in ${Date.now() - started} ms`,
  );
}

/** Regular files (non-empty) at or below `roots`, each once, depth first. */
async function* regularFiles(
  b: Bootstrap,
  roots: readonly number[],
  seenFiles: Set<number>,
  log: Logger,
): AsyncGenerator<number> {
  const seenDirs = new Set<number>();
  let visited = 0;
  const stack = [...roots].reverse();
  while (stack.length > 0) {
    const ino = stack.pop()!;
    if (++visited % PLAN_BATCH === 0) await yieldToLoop();
    let mode: number;
    let size: number;
    try {
      ({ mode, size } = b.getAttr(ino));
    } catch (e) {
      log.warn(`Prefetch skips inode ${ino}: ${errorText(e)}`);
      continue;
    }
    if (isReg(mode)) {
      if (size > 0 && !seenFiles.has(ino)) {
        seenFiles.add(ino);
        yield ino;
      }
    } else if (isDir(mode) && !seenDirs.has(ino)) {
      seenDirs.add(ino);
      const kids: number[] = [];
      try {
        const count = b.childCount(ino);
        for (let pos = 0; pos < count;) {
          const batch = b.readdir(ino, pos, PLAN_BATCH);
          if (batch.length === 0) break;
          for (const e of batch) kids.push(e.ino);
          pos += batch.length;
        }
      } catch (e) {
        log.warn(`Prefetch cannot list directory inode ${ino}: ${errorText(e)}`);
      }
      for (let i = kids.length - 1; i >= 0; i--) stack.push(kids[i]!);
    }
  }
}

/**
 * Requests for the chunks of the files below `roots` not yet cached: per blob, sorted by blob
 * offset, contiguous chunks merged up to `mergingSize` bytes. Blobs keep the order in which the
 * files first use them.
 */
async function planRequests(
  image: RafsImage,
  roots: readonly number[],
  mergingSize: number,
  seenFiles: Set<number>,
  seenChunks: Set<string>,
  log: Logger,
  signal: AbortSignal,
): Promise<Request[]> {
  const byBlob = new Map<number, ChunkInfo[]>();
  for await (const ino of regularFiles(image.bootstrap, roots, seenFiles, log)) {
    if (signal.aborted) return [];
    let chunks: ChunkInfo[];
    try {
      chunks = await image.chunks(ino);
    } catch (e) {
      log.warn(`Prefetch skips inode ${ino}: ${errorText(e)}`);
      continue;
    }
    for (const c of chunks) {
      const key = `${c.blobIndex}:${c.index}:${c.compressedOffset}`;
      if (seenChunks.has(key)) continue;
      seenChunks.add(key);
      try {
        if (await image.isChunkCached(c)) continue;
      } catch (e) {
        // The cache files cannot be opened: the prefetch read reports it once per request.
        log.debug(`Prefetch cannot check chunk ${c.index} of blob index ${c.blobIndex}: ${errorText(e)}`);
      }
      let list = byBlob.get(c.blobIndex);
      if (list === undefined) byBlob.set(c.blobIndex, (list = []));
      list.push(c);
    }
  }
  const planned = Date.now();
  const out: Request[] = [];
  for (const list of byBlob.values()) {
    list.sort((a, b) => a.compressedOffset - b.compressedOffset);
    let i = 0;
    while (i < list.length) {
      const start = list[i]!.compressedOffset;
      let end = start + list[i]!.compressedSize;
      let j = i + 1;
      while (j < list.length) {
        const n = list[j]!;
        if (n.compressedOffset !== end || n.compressedOffset + n.compressedSize - start > mergingSize) break;
        end = n.compressedOffset + n.compressedSize;
        j++;
      }
      out.push({ chunks: list.slice(i, j), bytes: end - start, planned });
      i = j;
    }
  }
  return out;
}

/** Run `requests` with `threads` in flight, paced by `bandwidth`. */
async function issue(
  image: RafsImage,
  requests: readonly Request[],
  threads: number,
  bandwidth: Bandwidth | undefined,
  stats: BlobCacheStats,
  log: Logger,
  signal: AbortSignal,
): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (!signal.aborted && next < requests.length) {
      const r = requests[next++]!;
      const first = r.chunks[0]!;
      try {
        if (bandwidth !== undefined) await bandwidth.take(r.bytes, signal);
        if (signal.aborted) break;
        stats.prefetchRequestsCount++;
        stats.prefetchDataAmount += r.bytes;
        stats.prefetchUnmergedChunks += r.chunks.length;
        await image.prefetchChunks(r.chunks, signal);
      } catch (e) {
        if (signal.aborted) break;
        const blobId = image.bootstrap.blobs[first.blobIndex]?.blobId ?? `index ${first.blobIndex}`;
        log.warn(
          `Prefetch of ${r.chunks.length} chunk(s) (${r.bytes} bytes at ${first.compressedOffset}) of blob ${blobId} failed: ${errorText(e)}`,
        );
      }
      const now = Date.now();
      stats.prefetchEndTimeSecs = Math.floor(now / 1000);
      stats.prefetchEndTimeMillis = now % 1000;
      stats.prefetchCumulativeTimeMillis += now - r.planned;
    }
  };
  await Promise.all(Array.from({ length: Math.min(threads, requests.length) }, worker));
}

/**
 * A token bucket of `rate` bytes per second holding at most one second's worth. A request may
 * take more than is there: the debt is slept off before it is issued.
 */
class Bandwidth {
  readonly #rate: number;
  #tokens: number;
  #last = performance.now();

  constructor(rate: number) {
    this.#rate = rate;
    this.#tokens = rate;
  }

  async take(bytes: number, signal: AbortSignal): Promise<void> {
    const now = performance.now();
    this.#tokens = Math.min(this.#rate, this.#tokens + ((now - this.#last) / 1000) * this.#rate);
    this.#last = now;
    this.#tokens -= bytes;
    if (this.#tokens >= 0) return;
    try {
      await sleep((-this.#tokens / this.#rate) * 1000, undefined, { signal });
    } catch {
      // Aborted: the caller checks the signal.
    }
  }
}
