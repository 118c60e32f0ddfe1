import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ApiError,
  type DaemonControl,
  type MetricsKind,
  type MountRequest,
} from '../../src/daemon/api/control.js';
import { startApiServer, type ApiServer } from '../../src/daemon/api/server.js';
import { createLogger, type Logger } from '../../src/log/logger.js';

/** A DaemonControl that records its calls and answers with fixed upstream-shaped data. */

export const DAEMON_INFO = {
  version: {
    package_ver: 'v2.3.0',
    git_commit: '0123456789abcdef',
    build_time: '2024-01-01T00:00:00Z',
    profile: 'release',
    rustc: 'node v20',
  },
  id: 'daemon-1',
  supervisor: null,
  state: 'RUNNING',
  backend_collection: {
    '/': {
      backend_type: 'Rafs',
      mountpoint: '/',
      mounted_time: '2024-05-06 07:08:09.5 +00:00:00',
      config: {
        version: 2,
        id: '',
        backend: { type: 'localfs', localfs: { dir: '/blobs' } },
        cache: { type: 'blobcache', prefetch: { enable: true, threads: 4, batch_size: 131072 } },
        rafs: { mode: 'cached', validate: false },
      },
    },
    '/pt': {
      backend_type: 'PassthroughFs',
      mountpoint: '/pt',
      mounted_time: '2024-05-06 07:08:10.0 +00:00:00',
    },
  },
};

export const BACKEND_METRICS = {
  id: '/',
  backend_type: 'localfs',
  read_count: 12,
  read_errors: 1,
  read_amount_total: 3145728,
  read_cumulative_latency_millis_total: 240,
  read_cumulative_latency_millis_dist: [10, 20, 30, 0, 0, 0, 0, 180],
  read_count_block_size_dist: [2, 4, 3, 0, 0, 0, 0, 3],
  read_latency_sizes_dist: Array.from({ length: 8 }, () => Array.from({ length: 8 }, () => 0)),
};

export const BLOBCACHE_METRICS = {
  id: '/',
  underlying_files: ['/cache/blob1', '/cache/blob1.chunk_map'],
  store_path: '/cache',
  partial_hits: 5,
  whole_hits: 7,
  total: 20,
  entries_count: 1,
  prefetch_data_amount: 2097152,
  prefetch_requests_count: 4,
  prefetch_workers: 2,
  prefetch_unmerged_chunks: 3,
  prefetch_cumulative_time_millis: 1000,
  prefetch_begin_time_secs: 100,
  prefetch_begin_time_millis: 0,
  prefetch_end_time_secs: 102,
  prefetch_end_time_millis: 0,
  buffered_backend_size: 0,
  data_all_ready: false,
};

export const FS_METRICS = {
  files_account_enabled: false,
  access_pattern_enabled: false,
  record_latest_read_files_enabled: false,
  measure_latency: true,
  id: '/',
  nr_opens: 3,
  data_read: 5242880,
  block_count_read: [0, 0, 0, 0, 0, 0, 0, 5],
  fop_hits: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
  fop_errors: [0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
  fop_cumulative_latency_total: Array.from({ length: 15 }, () => 0),
  read_latency_dist: [1, 2, 3, 0, 0, 0, 0, 0],
};

export interface Call {
  method: string;
  args: unknown[];
}

export class FakeControl implements DaemonControl {
  readonly calls: Call[] = [];
  mounts = new Set<string>(['/']);
  inflightOps: { inode: number; opcode: number; unique: number; timestamp_secs: number }[] = [];
  config: Record<string, Record<string, string>> = {};
  /** When set, the next call of that method throws it. */
  failNext = new Map<string, unknown>();
  /** Backend metrics answered in turn (the last one repeats), for interval runs. */
  backendSamples: unknown[] = [BACKEND_METRICS];
  /** Resolves the pending mount when set: lets a test hold a mount in flight. */
  mountGate: Promise<void> | undefined;
  exited = 0;

  private record(method: string, ...args: unknown[]): void {
    this.calls.push({ method, args });
    const e = this.failNext.get(method);
    if (e !== undefined) {
      this.failNext.delete(method);
      // Tests hand in any value, non-Errors included, to see how the server copes with it.
      // eslint-disable-next-line @typescript-eslint/only-throw-error
      throw e;
    }
  }

  callsOf(method: string): unknown[][] {
    return this.calls.filter((c) => c.method === method).map((c) => c.args);
  }

  daemonInfo(): Record<string, unknown> {
    this.record('daemonInfo');
    return structuredClone(DAEMON_INFO);
  }

  setLogLevel(level: string): void {
    this.record('setLogLevel', level);
    if (!['trace', 'debug', 'info', 'warn', 'error', 'off'].includes(level))
      throw new ApiError(400, `Unknown log level "${level}"`);
  }

  events(): Record<string, unknown> {
    this.record('events');
    return { max_errors: 0, total_errors: 0, max_size: 1048576, total_size: 0, errors: [] };
  }

  backendInfo(mountpoint: string): Record<string, unknown> {
    this.record('backendInfo', mountpoint);
    if (!this.mounts.has(mountpoint)) throw new ApiError(404, `Mountpoint "${mountpoint}" is not mounted`);
    return { version: 0x500, flags: 'COMPRESSION_LZ4', inodes_count: 6n ** 30n };
  }

  start(): void {
    this.record('start');
  }

  exit(): void {
    this.record('exit');
    this.exited++;
  }

  async mount(mountpoint: string, req: MountRequest): Promise<void> {
    this.record('mount', mountpoint, req);
    if (this.mountGate !== undefined) await this.mountGate;
    if (this.mounts.has(mountpoint)) throw new ApiError(400, `Mountpoint "${mountpoint}" is already mounted`);
    this.mounts.add(mountpoint);
  }

  remount(mountpoint: string, req: MountRequest): Promise<void> {
    this.record('remount', mountpoint, req);
    if (!this.mounts.has(mountpoint))
      return Promise.reject(new ApiError(404, `Mountpoint "${mountpoint}" is not mounted`));
    return Promise.resolve();
  }

  umount(mountpoint: string): Promise<void> {
    this.record('umount', mountpoint);
    if (!this.mounts.delete(mountpoint))
      return Promise.reject(new ApiError(404, `Mountpoint "${mountpoint}" is not mounted`));
    return Promise.resolve();
  }

  metrics(kind: MetricsKind, id: string | undefined, latest: boolean): unknown {
    this.record('metrics', kind, id, latest);
    if (id !== undefined && !this.mounts.has(id))
      throw new ApiError(404, 'no counter found for the metric: NoCounter');
    switch (kind) {
      case 'fs':
        return FS_METRICS;
      case 'files':
        return latest ? [[1, 5], [9]] : { '5': { total_fops: 2, data_read: 10 } };
      case 'pattern':
        return [{ ino: 5, nr_read: 1, first_access_time_secs: 1, first_access_time_nanos: 2 }];
      case 'backend':
        return this.backendSamples.length > 1 ? this.backendSamples.shift() : this.backendSamples[0];
      case 'blobcache':
        return BLOBCACHE_METRICS;
    }
  }

  inflight(): { inode: number; opcode: number; unique: number; timestamp_secs: number }[] {
    this.record('inflight');
    return this.inflightOps;
  }

  getConfig(id: string): Record<string, string> {
    this.record('getConfig', id);
    return this.config[id] ?? {};
  }

  setConfig(id: string, values: Record<string, unknown>): void {
    this.record('setConfig', id, values);
    for (const k of Object.keys(values))
      if (!['registry_auth', 'proxy_url', 'dragonfly_scheduler_endpoint'].includes(k))
        throw new ApiError(400, `Unknown config key "${k}"`);
    this.config[id] = { ...this.config[id], ...(values as Record<string, string>) };
  }
}

/** A temporary directory for sockets (short, under the system temp dir). */
export function tempDir(): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'nydus-api-'));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export const quietLogger: Logger = createLogger('off');

export interface Running {
  control: FakeControl;
  server: ApiServer;
  sock: string;
  dir: string;
  stop(): Promise<void>;
}

/** Start the API server with a fresh FakeControl on a socket in a new temp dir. */
export async function startFake(logger: Logger = quietLogger): Promise<Running> {
  const { dir, cleanup } = tempDir();
  const sock = join(dir, 'api.sock');
  const control = new FakeControl();
  const server = await startApiServer(sock, control, logger);
  return {
    control,
    server,
    sock,
    dir,
    stop: async () => {
      await server.close();
      cleanup();
    },
  };
}
