// The module, not the global `performance`: Node.js builds the global on first use, which made
// the first FUSE request of a fresh daemon take ~5 ms longer (loading its internal modules).
import { performance } from 'node:perf_hooks';
import type { BlobCacheStats } from '../cache/index.js';
import type { BlobInfo } from '../format/model.js';
import type { BlobReader, BlobSource } from '../storage/blob-source.js';

/**
 * Daemon metrics in upstream's shapes (docs/upstream-surface.md section 3): per RAFS instance
 * file-operation stats, per backend read stats, and a bounded ring of error events. Counters are
 * plain numbers: the daemon is one event loop, so there is nothing to synchronise.
 */

/** File operations counted, in upstream's array order. */
export const FOPS = [
  'getattr',
  'readlink',
  'open',
  'release',
  'read',
  'statfs',
  'getxattr',
  'listxattr',
  'opendir',
  'lookup',
  'readdir',
  'readdirplus',
  'access',
  'forget',
  'batch-forget',
] as const;
export type Fop = (typeof FOPS)[number];
const FOP_INDEX = new Map<string, number>(FOPS.map((f, i) => [f, i]));

export function fopIndex(op: string): number | undefined {
  return FOP_INDEX.get(op);
}

/** Size buckets: <1K, 1K, 4K, 16K, 64K, 128K, 512K, 1M+ (upstream's request size index). */
export function sizeBucket(size: number): number {
  const kib = Math.floor(size / 1024);
  if (kib < 1) return 0;
  if (kib < 4) return 1;
  if (kib < 16) return 2;
  if (kib < 64) return 3;
  if (kib < 128) return 4;
  if (kib < 512) return 5;
  if (kib < 1024) return 6;
  return 7;
}

/** Latency buckets in µs: ≤200, ≤1ms, ≤20ms, ≤50ms, ≤500ms, ≤1s, ≤2s, more. */
function microsBucket(us: number): number {
  const bounds = [200, 1_000, 20_000, 50_000, 500_000, 1_000_000, 2_000_000];
  const i = bounds.findIndex((b) => us <= b);
  return i < 0 ? 7 : i;
}

/** Latency buckets in ms: ≤1, ≤20, ≤50, ≤100, ≤500, ≤1000, ≤2000, more. */
function millisBucket(ms: number): number {
  const bounds = [1, 20, 50, 100, 500, 1000, 2000];
  const i = bounds.findIndex((b) => ms <= b);
  return i < 0 ? 7 : i;
}

const zeros = (n: number): number[] => new Array<number>(n).fill(0);

interface InodeStats {
  total_fops: number;
  data_read: number;
  block_count_read: number[];
  fop_hits: number[];
  fop_errors: number[];
}

interface Pattern {
  ino: number;
  nr_read: number;
  first_access_time_secs: number;
  first_access_time_nanos: number;
}

export interface FsMetricsOptions {
  /** `iostats_files`: per-inode counters. */
  readonly filesAccount?: boolean;
  /** `access_pattern`: first access time and read count per file. */
  readonly accessPattern?: boolean;
  /** `latest_read_files`: the set of files read since the last query. */
  readonly latestReadFiles?: boolean;
}

/** File-operation stats of one RAFS instance (`GET /api/v1/metrics` and friends). */
export class FsMetrics {
  readonly id: string;
  readonly #opts: FsMetricsOptions;
  nrOpens = 0;
  dataRead = 0;
  readonly blockCountRead = zeros(8);
  readonly fopHits = zeros(FOPS.length);
  readonly fopErrors = zeros(FOPS.length);
  readonly fopLatencyTotal = zeros(FOPS.length);
  readonly readLatencyDist = zeros(8);
  readonly #files = new Map<number, InodeStats>();
  readonly #patterns = new Map<number, Pattern>();
  #latest = new Set<number>();

  constructor(id: string, opts: FsMetricsOptions = {}) {
    this.id = id;
    this.#opts = opts;
  }

  /**
   * Record one operation on inode `ino` that took `micros` µs. `bytes` is the data returned
   * by a read.
   */
  record(op: Fop, ino: number, ok: boolean, micros: number, bytes = 0): void {
    const i = FOP_INDEX.get(op)!;
    if (op === 'read') this.blockCountRead[sizeBucket(bytes)]!++;
    if (ok) {
      this.fopHits[i]!++;
      if (op === 'read') this.dataRead += bytes;
      else if (op === 'open') this.nrOpens++;
      else if (op === 'release') this.nrOpens = Math.max(0, this.nrOpens - 1);
    } else this.fopErrors[i]!++;
    this.readLatencyDist[microsBucket(micros)]!++;
    this.fopLatencyTotal[i]! += Math.round(micros);
    if (this.#opts.filesAccount === true) {
      let s = this.#files.get(ino);
      if (s === undefined) {
        s = {
          total_fops: 0,
          data_read: 0,
          block_count_read: zeros(8),
          fop_hits: zeros(15),
          fop_errors: zeros(15),
        };
        this.#files.set(ino, s);
      }
      if (ok) {
        s.fop_hits[i]!++;
        s.total_fops++;
        if (op === 'read') {
          s.data_read += bytes;
          s.block_count_read[sizeBucket(bytes)]!++;
        }
      } else s.fop_errors[i]!++;
    }
    if (op === 'read') {
      if (this.#opts.accessPattern === true) {
        let p = this.#patterns.get(ino);
        if (p === undefined) {
          const now = Date.now();
          p = {
            ino,
            nr_read: 0,
            first_access_time_secs: Math.floor(now / 1000),
            first_access_time_nanos: (now % 1000) * 1_000_000,
          };
          this.#patterns.set(ino, p);
        }
        p.nr_read++;
      }
      if (this.#opts.latestReadFiles === true && ok) this.#latest.add(ino);
    }
  }

  toJSON(): Record<string, unknown> {
    return {
      files_account_enabled: this.#opts.filesAccount === true,
      access_pattern_enabled: this.#opts.accessPattern === true,
      record_latest_read_files_enabled: this.#opts.latestReadFiles === true,
      measure_latency: true,
      id: this.id,
      nr_opens: this.nrOpens,
      data_read: this.dataRead,
      block_count_read: [...this.blockCountRead],
      fop_hits: [...this.fopHits],
      fop_errors: [...this.fopErrors],
      fop_cumulative_latency_total: [...this.fopLatencyTotal],
      read_latency_dist: [...this.readLatencyDist],
    };
  }

  /** `GET /metrics/files`: per-inode counters keyed by inode number. */
  files(): Record<string, InodeStats> {
    return Object.fromEntries([...this.#files].map(([ino, s]) => [String(ino), s]));
  }

  /** `GET /metrics/files?latest=true`: inode ranges read since the last call; then cleared. */
  takeLatestReadFiles(): number[][] {
    const inos = [...this.#latest].sort((a, b) => a - b);
    this.#latest = new Set();
    const out: number[][] = [];
    for (const ino of inos) {
      const last = out[out.length - 1];
      if (last !== undefined && last[last.length - 1]! + 1 === ino) {
        if (last.length === 1) last.push(ino);
        else last[1] = ino;
      } else out.push([ino]);
    }
    return out;
  }

  /** `GET /metrics/pattern`: files read at least once. */
  patterns(): Pattern[] {
    return [...this.#patterns.values()].filter((p) => p.nr_read > 0);
  }
}

/** Read stats of one backend (`GET /api/v1/metrics/backend`). */
export class BackendMetrics {
  readonly backendType: string;
  readCount = 0;
  readErrors = 0;
  readAmountTotal = 0;
  readLatencyTotalMs = 0;
  readonly latencyBySize = zeros(8);
  readonly countBySize = zeros(8);
  readonly latencySizes: number[][] = Array.from({ length: 8 }, () => zeros(8));

  constructor(backendType: string) {
    this.backendType = backendType;
  }

  record(bytes: number, ok: boolean, millis: number): void {
    const ms = Math.floor(millis);
    this.readCount++;
    if (!ok) this.readErrors++;
    this.readLatencyTotalMs += ms;
    this.readAmountTotal += bytes;
    const s = sizeBucket(bytes);
    this.latencyBySize[s]! += ms;
    this.countBySize[s]!++;
    this.latencySizes[s]![millisBucket(ms)]!++;
  }

  toJSON(): Record<string, unknown> {
    return {
      backend_type: this.backendType,
      read_count: this.readCount,
      read_errors: this.readErrors,
      read_amount_total: this.readAmountTotal,
      read_cumulative_latency_millis_total: this.readLatencyTotalMs,
      read_cumulative_latency_millis_dist: [...this.latencyBySize],
      read_count_block_size_dist: [...this.countBySize],
      read_latency_sizes_dist: this.latencySizes.map((r) => [...r]),
    };
  }
}

/** A BlobSource whose reads are counted in `metrics`. */
export class MeteredBlobSource implements BlobSource {
  readonly #inner: BlobSource;
  readonly metrics: BackendMetrics;

  constructor(inner: BlobSource, metrics: BackendMetrics) {
    this.#inner = inner;
    this.metrics = metrics;
  }

  async open(blob: BlobInfo): Promise<BlobReader> {
    const r = await this.#inner.open(blob);
    const m = this.metrics;
    const now = r.readNow?.bind(r);
    return {
      size: r.size,
      // A read that cannot be made at once is not counted: `read` then makes it.
      ...(now !== undefined && {
        readNow(offset: number, length: number, into?: Buffer): Buffer | undefined {
          const t0 = performance.now();
          const b = now(offset, length, into);
          if (b !== undefined) m.record(b.length, true, performance.now() - t0);
          return b;
        },
      }),
      async read(offset, length, into, opts): Promise<Buffer> {
        const t0 = performance.now();
        try {
          const b = await r.read(offset, length, into, opts);
          m.record(b.length, true, performance.now() - t0);
          return b;
        } catch (e) {
          m.record(0, false, performance.now() - t0);
          throw e;
        }
      },
      close: () => r.close(),
    };
  }
}

/** Bounded ring of error events (`GET /api/v1/daemon/events`): 500 entries, 50 KiB. */
export class EventRing {
  readonly maxErrors: number;
  readonly maxSize: number;
  totalErrors = 0;
  #size = 0;
  readonly #errors: string[] = [];

  constructor(maxErrors = 500, maxSize = 50 * 1024) {
    this.maxErrors = maxErrors;
    this.maxSize = maxSize;
  }

  push(message: string): void {
    const m = Buffer.byteLength(message) > this.maxSize ? message.slice(0, this.maxSize) : message;
    this.#errors.push(m);
    this.#size += Buffer.byteLength(m);
    this.totalErrors++;
    while (this.#errors.length > this.maxErrors || this.#size > this.maxSize) {
      this.#size -= Buffer.byteLength(this.#errors.shift()!);
    }
  }

  toJSON(): Record<string, unknown> {
    return {
      max_errors: this.maxErrors,
      total_errors: this.totalErrors,
      max_size: this.maxSize,
      total_size: this.#size,
      errors: [...this.#errors],
    };
  }
}

/** `GET /api/v1/metrics/blobcache`. */
export function blobcacheJSON(s: BlobCacheStats): Record<string, unknown> {
  return {
    underlying_files: [...s.underlyingFiles].sort(),
    store_path: s.storePath,
    partial_hits: s.partialHits,
    whole_hits: s.wholeHits,
    total: s.total,
    entries_count: s.entriesCount,
    prefetch_data_amount: s.prefetchDataAmount,
    prefetch_requests_count: s.prefetchRequestsCount,
    prefetch_workers: s.prefetchWorkers,
    prefetch_unmerged_chunks: s.prefetchUnmergedChunks,
    prefetch_cumulative_time_millis: s.prefetchCumulativeTimeMillis,
    prefetch_begin_time_secs: s.prefetchBeginTimeSecs,
    prefetch_begin_time_millis: s.prefetchBeginTimeMillis,
    prefetch_end_time_secs: s.prefetchEndTimeSecs,
    prefetch_end_time_millis: s.prefetchEndTimeMillis,
    buffered_backend_size: s.bufferedBackendSize,
    data_all_ready: s.dataAllReady,
  };
}

/** What one instance's blob device holds in memory (see `memoryReport`). */
export interface InstanceMemory {
  readonly mountpoint: string;
  readonly bufferPool:
    { slotSize: number; created: number; reused: number; idle: number; idleBytes: number } | undefined;
  readonly memory: { recentLimit: number; recentBytes: number; recentChunks: number; inflightChunks: number };
  /** Bytes of the bootstrap kept in memory. */
  readonly bootstrapBytes: number;
}

const MIB = 1 << 20;
const mib = (n: number): number => Math.round((n / MIB) * 100) / 100;

/**
 * GET /api/v1/daemon/memory (ours, not upstream's): where the daemon's memory goes, for the
 * memory benchmark and for anyone sizing a node. Sizes are MiB. `process` is the kernel's view
 * (/proc/self/status: rss, peak rss, anonymous and file-backed parts, threads), `v8` the heap
 * (per space) and the memory outside it that V8 knows of (external, array buffers), `instances`
 * what each image's blob device holds (buffer pool free slots, recent chunks, chunks in
 * flight), `runtime` the settings that decide the rest (Node flags, libuv pool, glibc arenas).
 */
export function memoryReport(
  instances: readonly InstanceMemory[],
  v8: { heapSpaces: { space_name: string; space_size: number; space_used_size: number }[] },
  status: string,
): Record<string, unknown> {
  const field = (k: string): number | null => {
    const m = new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(status);
    return m === null ? null : Math.round((Number(m[1]) / 1024) * 100) / 100;
  };
  const threads = /^Threads:\s+(\d+)/m.exec(status);
  const mu = process.memoryUsage();
  return {
    process: {
      rss: field('VmRSS'),
      peak_rss: field('VmHWM'),
      rss_anon: field('RssAnon'),
      rss_file: field('RssFile'),
      threads: threads === null ? null : Number(threads[1]),
    },
    v8: {
      heap_total: mib(mu.heapTotal),
      heap_used: mib(mu.heapUsed),
      external: mib(mu.external),
      array_buffers: mib(mu.arrayBuffers),
      spaces: Object.fromEntries(
        v8.heapSpaces
          .filter((s) => s.space_size > 0)
          .map((s) => [s.space_name, { size: mib(s.space_size), used: mib(s.space_used_size) }]),
      ),
    },
    instances: instances.map((i) => ({
      mountpoint: i.mountpoint,
      bootstrap: mib(i.bootstrapBytes),
      buffer_pool:
        i.bufferPool === undefined
          ? null
          : {
              slot_size: i.bufferPool.slotSize,
              created: i.bufferPool.created,
              reused: i.bufferPool.reused,
              idle_slots: i.bufferPool.idle,
              idle: mib(i.bufferPool.idleBytes),
            },
      recent: {
        limit: mib(i.memory.recentLimit),
        held: mib(i.memory.recentBytes),
        chunks: i.memory.recentChunks,
      },
      inflight_chunks: i.memory.inflightChunks,
    })),
    runtime: {
      node_flags: process.execArgv,
      uv_threadpool_size: Number(process.env['UV_THREADPOOL_SIZE'] ?? 4),
      malloc_arena_max: process.env['MALLOC_ARENA_MAX'] ?? null,
    },
  };
}
