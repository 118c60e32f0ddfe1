import { createServer, type Server } from 'node:http';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { ApiClient } from '../daemon/api/client.js';
import { NydusError, errorText } from '../errors/errors.js';
import type { Logger } from '../log/logger.js';
import type { DaemonManager } from './daemons.js';
import type { Snapshotter } from './types.js';

/**
 * Prometheus metrics at `http://<metrics.address>/v1/metrics` (upstream-surface §7.11): the
 * snapshotter's own process and operation timings, and each nydusd's counters, polled every
 * `collect_interval` and labelled by image reference.
 */

export interface MetricsOptions {
  address: string;
  collectIntervalMs: number;
  hungIoIntervalMs: number;
  daemons: DaemonManager;
  cacheDir: string;
  log: Logger;
}

const TIMED = ['prepare', 'mounts', 'remove', 'cleanup'] as const;

/** A number field (`VmRSS`, `Threads`, ...) of /proc/<pid>/status; 0 when it cannot be read. */
export function procStatus(pid: number | 'self', key: string): number {
  try {
    const m = new RegExp(`${key}:\\s+(\\d+)`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m === null ? 0 : Number(m[1]);
  } catch {
    return 0;
  }
}

function dirKb(dir: string): number {
  let bytes = 0;
  try {
    for (const n of readdirSync(dir)) {
      try {
        bytes += statSync(join(dir, n)).blocks * 512;
      } catch {
        // raced with a delete
      }
    }
  } catch {
    return 0;
  }
  return Math.round(bytes / 1024);
}

export class SnapshotterMetrics {
  readonly registry = new Registry();
  readonly opElapsed: Histogram<'operation'>;
  readonly blobsDeleted: Counter;
  readonly #o: MetricsOptions;
  readonly #started = Date.now();
  #server: Server | undefined;
  #timer: NodeJS.Timeout | undefined;
  #lastCpu = process.cpuUsage();
  #lastAt = Date.now();
  readonly #daemonGauges: Record<string, Gauge<'image_ref'>>;

  constructor(o: MetricsOptions) {
    this.#o = o;
    const r = this.registry;
    this.opElapsed = new Histogram({
      name: 'snapshotter_snapshot_operation_elapsed_milliseconds',
      help: 'Time of snapshot operations',
      labelNames: ['operation'],
      buckets: [1, 10, 100, 1000, 10_000, 60_000],
      registers: [r],
    });
    this.blobsDeleted = new Counter({
      name: 'snapshotter_cache_blobs_deleted_total',
      help: 'Cache blob files deleted by Cleanup',
      registers: [r],
    });
    const gauge = (name: string, help: string, collect: () => number): void => {
      new Gauge({
        name,
        help,
        registers: [r],
        collect() {
          this.set(collect());
        },
      });
    };
    gauge('snapshotter_memory_usage_kilobytes', 'Snapshotter RSS', () => procStatus('self', 'VmRSS'));
    gauge('snapshotter_thread_counts', 'Snapshotter threads', () => procStatus('self', 'Threads'));
    gauge('snapshotter_fd_counts', 'Snapshotter open fds', () => {
      try {
        return readdirSync('/proc/self/fd').length;
      } catch {
        return 0;
      }
    });
    gauge('snapshotter_run_time_seconds', 'Snapshotter run time', () => (Date.now() - this.#started) / 1000);
    gauge('snapshotter_cpu_user_time_seconds', 'Snapshotter user CPU', () => process.cpuUsage().user / 1e6);
    gauge(
      'snapshotter_cpu_system_time_seconds',
      'Snapshotter system CPU',
      () => process.cpuUsage().system / 1e6,
    );
    gauge('snapshotter_cpu_usage_percentage', 'Snapshotter CPU since the last scrape', () => {
      const now = Date.now();
      const d = process.cpuUsage(this.#lastCpu);
      const wall = Math.max(1, now - this.#lastAt) * 1000;
      this.#lastCpu = process.cpuUsage();
      this.#lastAt = now;
      return ((d.user + d.system) / wall) * 100;
    });
    gauge('snapshotter_cache_usage_kilobytes', 'Blob cache disk usage', () => dirKb(o.cacheDir));
    gauge('nydusd_counts', 'Running nydusd daemons', () => o.daemons.daemons().length);
    const perImage = (name: string, help: string): Gauge<'image_ref'> =>
      new Gauge({ name, help, labelNames: ['image_ref'], registers: [r] });
    this.#daemonGauges = {
      nydusd_total_read_bytes: perImage('nydusd_total_read_bytes', 'Bytes read through the file system'),
      nydusd_read_hits: perImage('nydusd_read_hits', 'Successful reads'),
      nydusd_read_errors: perImage('nydusd_read_errors', 'Failed reads'),
      nydusd_rss_kilobytes: perImage('nydusd_rss_kilobytes', 'nydusd RSS'),
      nydusd_hung_io_counts: perImage(
        'nydusd_hung_io_counts',
        'Requests in flight longer than hung_io_interval',
      ),
      nydusd_cache_partial_hits: perImage('nydusd_cache_partial_hits', 'Blob cache partial hits'),
      nydusd_cache_whole_hits: perImage('nydusd_cache_whole_hits', 'Blob cache whole hits'),
      nydusd_cache_total_requests: perImage('nydusd_cache_total_requests', 'Blob cache requests'),
      nydusd_cache_entries_count: perImage('nydusd_cache_entries_count', 'Blob cache entries'),
      nydusd_cache_prefetch_data_bytes: perImage('nydusd_cache_prefetch_data_bytes', 'Prefetched bytes'),
      nydusd_cache_prefetch_requests_count: perImage(
        'nydusd_cache_prefetch_requests_count',
        'Prefetch requests',
      ),
    };
  }

  /** Wrap a snapshotter so its operations are timed. */
  timed<T extends Snapshotter>(sn: T): T {
    const hist = this.opElapsed;
    return new Proxy(sn, {
      get(target, prop, receiver) {
        const v = Reflect.get(target, prop, receiver) as unknown;
        if (typeof v !== 'function') return v;
        const fn = v as (...a: unknown[]) => unknown;
        if (!(TIMED as readonly string[]).includes(String(prop))) return fn.bind(target);
        return async (...args: unknown[]) => {
          const end = hist.startTimer({ operation: String(prop) === 'mounts' ? 'mount' : String(prop) });
          try {
            return await fn.apply(target, args);
          } finally {
            end();
          }
        };
      },
    });
  }

  private async collect(): Promise<void> {
    const g = this.#daemonGauges;
    for (const x of Object.values(g)) x.reset();
    const d = this.#o.daemons;
    for (const rec of d.daemons()) {
      const insts = d.instances().filter((i) => i.daemonId === rec.id);
      const c = new ApiClient(rec.apiSock, { timeoutMs: 5_000 });
      try {
        for (const inst of insts) {
          const labels = { image_ref: inst.imageRef };
          const q = rec.mode === 'shared' ? { id: inst.pseudoPath ?? `/${inst.snapshotId}` } : undefined;
          const fs = (await c.get('/api/v1/metrics', q)) as {
            data_read?: number;
            fop_hits?: number[];
            fop_errors?: number[];
          };
          g['nydusd_total_read_bytes']!.set(labels, fs.data_read ?? 0);
          g['nydusd_read_hits']!.set(labels, fs.fop_hits?.[4] ?? 0);
          g['nydusd_read_errors']!.set(labels, fs.fop_errors?.[4] ?? 0);
          g['nydusd_rss_kilobytes']!.set(labels, procStatus(rec.pid, 'VmRSS'));
          const bc = (await c.get('/api/v1/metrics/blobcache', q).catch(() => ({}))) as Record<
            string,
            number
          >;
          g['nydusd_cache_partial_hits']!.set(labels, bc['partial_hits'] ?? 0);
          g['nydusd_cache_whole_hits']!.set(labels, bc['whole_hits'] ?? 0);
          g['nydusd_cache_total_requests']!.set(labels, bc['total'] ?? 0);
          g['nydusd_cache_entries_count']!.set(labels, bc['entries_count'] ?? 0);
          g['nydusd_cache_prefetch_data_bytes']!.set(labels, bc['prefetch_data_amount'] ?? 0);
          g['nydusd_cache_prefetch_requests_count']!.set(labels, bc['prefetch_requests_count'] ?? 0);
          const inflight = (await c.get('/api/v1/metrics/inflight').catch(() => [])) as Array<{
            timestamp_secs?: number;
          }>;
          const old = Date.now() / 1000 - this.#o.hungIoIntervalMs / 1000;
          g['nydusd_hung_io_counts']!.set(
            labels,
            Array.isArray(inflight) ? inflight.filter((r) => (r.timestamp_secs ?? Infinity) < old).length : 0,
          );
        }
      } catch (e) {
        this.#o.log.debug(`Metrics of nydusd ${rec.id}: ${errorText(e)}`);
      } finally {
        await c.close();
      }
    }
  }

  async start(): Promise<void> {
    const a = this.#o.address;
    const colon = a.lastIndexOf(':');
    const host = colon > 0 ? a.slice(0, colon).replace(/^\[|\]$/g, '') : '';
    const port = Number(a.slice(colon + 1));
    if (colon < 0 || !Number.isInteger(port) || port < 0 || port > 65535) {
      throw new NydusError('ERR_INVALID_ARG', `metrics.address "${a}" is not host:port or :port`);
    }
    this.#server = createServer((req, res) => {
      if (req.url !== '/v1/metrics') {
        res.writeHead(404).end('not found\n');
        return;
      }
      this.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(text),
        (e: unknown) => res.writeHead(500).end(errorText(e)),
      );
    });
    await new Promise<void>((resolve, reject) => {
      this.#server!.once('error', (e) =>
        reject(new NydusError('ERR_IO', `Cannot serve metrics on "${a}": ${e.message}`)),
      );
      this.#server!.listen(port, host === '' ? undefined : host, () => resolve());
    });
    await this.collect();
    this.#timer = setInterval(() => void this.collect(), Math.max(1000, this.#o.collectIntervalMs));
    this.#timer.unref();
    this.#o.log.info(`Metrics at http://${a}/v1/metrics`);
  }

  async close(): Promise<void> {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    const s = this.#server;
    if (s !== undefined) {
      await new Promise<void>((resolve) => {
        s.close(() => resolve());
        s.closeAllConnections();
      });
    }
  }
}
