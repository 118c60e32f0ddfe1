import { readFile } from 'node:fs/promises';
import { errorText, NydusError } from '../errors/errors.js';
import { checkMountpoint, FuseSession } from '../fuse/session.js';
import { LOG_LEVELS, type Logger, type LogLevel } from '../log/logger.js';
import { RafsImage } from '../rafs/image.js';
import { loadBootstrapFile } from '../rafs/open.js';
import { checkBackend, createBackend, invalid, isKind, type Backend } from './backends.js';
import { createChunkCache } from '../cache/index.js';
import { prefetchInodes, startPrefetch } from '../cache/prefetch.js';
import { ApiError, type DaemonControl, type MetricsKind, type MountRequest } from './api/control.js';
import { startApiServer } from './api/server.js';
import {
  ConfigError,
  configApiView,
  localfsShortcutConfig,
  parseDaemonConfig,
  type DaemonConfig,
} from './config/index.js';
import { BackendMetrics, blobcacheJSON, EventRing, FsMetrics, MeteredBlobSource } from './metrics.js';
import { tuneMalloc } from './malloc.js';
import { RafsFs } from './rafs-fs.js';
import { pseudoPath, Vfs, type VfsInstance } from './vfs.js';

/**
 * nydusd: one FUSE mount (the VFS) with RAFS instances on it, the optional HTTP API, and the
 * daemon state machine upstream exposes (INIT → RUNNING → STOPPED). Started with
 * `--bootstrap`, the image sits at the virtual mountpoint ("/" by default); without it the
 * mount is an empty pseudo tree and images come and go through the API.
 */

export type DaemonState = 'INIT' | 'READY' | 'RUNNING' | 'STOPPED';

export interface DaemonOptions {
  readonly mountpoint: string;
  readonly bootstrap?: string;
  /** A config file (v1 JSON, v2 JSON or v2 TOML). */
  readonly configFile?: string;
  /** `-D/--localfs-dir`: the shortcut config over this blob directory. */
  readonly localfsDir?: string;
  /** Where the `--bootstrap` image goes inside the FUSE tree. Default "/". */
  readonly virtualMountpoint?: string;
  /** `--prefetch-files`: a file listing paths to prefetch, one per line. */
  readonly prefetchFilesList?: string;
  readonly apisock?: string;
  readonly threads?: number;
  readonly id?: string;
  readonly version: string;
  readonly logger: Logger;
  /** Called after `PUT /api/v1/daemon/exit` has stopped the daemon. */
  readonly onExit?: () => void;
}

/** One RAFS image mounted in the VFS. */
interface Instance extends VfsInstance {
  readonly mountpoint: string;
  readonly source: string;
  readonly config: DaemonConfig;
  readonly image: RafsImage;
  readonly backend: BackendMetrics;
  /** Where the image's blobs come from. */
  readonly blobs: Backend;
  readonly cache: ChunkCache;
  readonly mountedTime: Date;
  prefetch: { done: Promise<void>; cancel(): void } | undefined;
}

type ChunkCache = ReturnType<typeof createChunkCache>;

/**
 * The kernel read-ahead of the FUSE mount: 4 MiB lets a sequential reader keep four 1 MiB
 * reads in flight (the kernel's 128 KiB default allows one small read at a time, and each
 * round trip through the daemon costs more than through a C daemon). It also widens the
 * read-around of mmap faults to 4 MiB, which costs only local reads while blobs are local; a
 * daemon started with an image on a remote backend keeps the kernel's default instead, so a
 * lazy start fetches little more than it reads (benchmark B5).
 */
const FUSE_READ_AHEAD_KB = 4096;

const HOT_CONFIG_KEYS = ['registry_auth', 'proxy_url', 'dragonfly_scheduler_endpoint'];

/** upstream's `time` serde form: "2026-11-22 08:00:00.123000000 +00:00:00". */
function rustTime(d: Date): string {
  const iso = d.toISOString();
  return `${iso.slice(0, 10)} ${iso.slice(11, 19)}.${iso.slice(20, 23)}000000 +00:00:00`;
}

/** Config text or file → config, warnings logged. */
function parseConfigText(text: string | Buffer, source: string, log: Logger): DaemonConfig {
  const parsed = parseDaemonConfig(text, { source });
  for (const w of parsed.warnings) log.warn(`config: ${w}`);
  return parsed.config;
}

/** The `--prefetch-files` list: one path per line, blank lines and surrounding spaces ignored. */
async function readPrefetchList(file: string): Promise<string[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new NydusError('ERR_IO', `Cannot read --prefetch-files "${file}": ${errorText(e)}`);
  }
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.length > 0);
}

export class NydusDaemon implements DaemonControl {
  readonly #opts: DaemonOptions;
  readonly #log: Logger;
  readonly #vfs: Vfs;
  readonly #instances = new Map<string, Instance>();
  readonly #events = new EventRing();
  readonly #hotConfig = new Map<string, string>();
  #state: DaemonState = 'INIT';
  #session: FuseSession | undefined;
  #api: { close(): Promise<void> } | undefined;
  #stopping: Promise<void> | undefined;
  /** Mount/umount requests run one at a time. */
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(opts: DaemonOptions) {
    this.#opts = opts;
    this.#log = opts.logger;
    // One image at "/" owns the whole mount; otherwise the root is a pseudo tree that changes.
    this.#vfs = new Vfs({ pseudo: opts.bootstrap === undefined || (opts.virtualMountpoint ?? '/') !== '/' });
  }

  get state(): DaemonState {
    return this.#state;
  }

  get session(): FuseSession | undefined {
    return this.#session;
  }

  /** Check everything, mount, open the API socket, serve. */
  static async start(opts: DaemonOptions): Promise<NydusDaemon> {
    const d = new NydusDaemon(opts);
    checkMountpoint(opts.mountpoint);
    tuneMalloc(opts.logger);
    if (opts.configFile !== undefined && opts.localfsDir !== undefined)
      invalid('--config and --localfs-dir cannot be used together');
    if (opts.prefetchFilesList !== undefined && opts.bootstrap === undefined)
      invalid('--prefetch-files needs --bootstrap');
    if (opts.bootstrap !== undefined) {
      const config = await d.#startupConfig();
      const prefetch =
        opts.prefetchFilesList === undefined ? [] : await readPrefetchList(opts.prefetchFilesList);
      const vmp = opts.virtualMountpoint ?? '/';
      pseudoPath(vmp);
      await d.#mountInstance(vmp, opts.bootstrap, config, prefetch);
    }
    try {
      // The API first: once the mount is visible, the socket answers too.
      if (opts.apisock !== undefined) d.#api = await startApiServer(opts.apisock, d, d.#log);
      d.#session = await FuseSession.mount(opts.mountpoint, d.#vfs, {
        threads: opts.threads ?? 4,
        logger: d.#log,
        source: 'nydusfs',
        // Remote blobs: the kernel's own read-ahead, so a lazy start fetches no more than it reads.
        ...([...d.#instances.values()].some((i) => !i.blobs.local)
          ? {}
          : { readAheadKb: FUSE_READ_AHEAD_KB }),
      });
      d.#state = 'RUNNING';
    } catch (e) {
      await d.stop();
      throw e;
    }
    d.#log.info(
      `nydusd serving ${opts.mountpoint} (${d.#instances.size} image(s)${opts.apisock === undefined ? '' : `, API on ${opts.apisock}`}, ${opts.threads ?? 4} fuse threads)`,
    );
    return d;
  }

  async #startupConfig(): Promise<DaemonConfig> {
    const o = this.#opts;
    if (o.localfsDir !== undefined) {
      if (!(await isKind(o.localfsDir, 'dir')))
        invalid(`Blob directory "${o.localfsDir}" (--localfs-dir) does not exist or is not a directory`);
      return localfsShortcutConfig(o.localfsDir);
    }
    if (o.configFile === undefined) invalid('Either --config or --localfs-dir is needed with --bootstrap');
    let text: Buffer;
    try {
      text = await readFile(o.configFile);
    } catch (e) {
      throw new NydusError('ERR_IO', `Cannot read config "${o.configFile}": ${errorText(e)}`);
    }
    return parseConfigText(text, `"${o.configFile}"`, this.#log);
  }

  /** Open an image as an instance for `mountpoint`, put it in the VFS, start its prefetch. */
  async #mountInstance(
    mountpoint: string,
    bootstrap: string,
    config: DaemonConfig,
    prefetchFiles: string[],
  ): Promise<void> {
    const inst = await this.#openInstance(mountpoint, bootstrap, config);
    this.#vfs.mount(mountpoint, inst);
    this.#instances.set(mountpoint, inst);
    this.#startPrefetch(inst, prefetchFiles);
    const sb = inst.image.bootstrap.superblock;
    this.#log.info(
      `RAFS v${sb.version} image "${bootstrap}" mounted at ${mountpoint} (${inst.image.bootstrap.blobs.length} blob(s), cache ${config.cache.type})`,
    );
  }

  async #openInstance(mountpoint: string, bootstrap: string, config: DaemonConfig): Promise<Instance> {
    await checkBackend(config);
    if (config.cache.type === 'fscache')
      throw new NydusError('ERR_UNSUPPORTED', 'cache type fscache is not supported');
    if (!(await isKind(bootstrap, 'file')))
      invalid(`Bootstrap "${bootstrap}" does not exist or is not a file`);
    const loaded = await loadBootstrapFile(bootstrap);
    const backend = createBackend(config, loaded, this.#log);
    const metrics = new BackendMetrics(backend.type);
    const source = new MeteredBlobSource(backend.source, metrics);
    const cache = createChunkCache(
      config.cache.type === 'filecache'
        ? {
            type: 'blobcache',
            workDir: config.cache.filecache?.work_dir ?? '.',
            validate: config.cache.validate,
            logger: this.#log,
          }
        : { type: 'dummycache', logger: this.#log },
    );
    // rafs.batch_size (v1 amplify_io) is how far a read that misses fetches ahead.
    const image = new RafsImage(loaded.bootstrap, source, {
      cache,
      validate: config.rafs.validate,
      readAheadBytes: config.rafs.batch_size,
      // FUSE replies are written as soon as the bytes are there, so chunk buffers can be reused.
      reuseBuffers: true,
    });
    // Missing blobs show up now as a warning, not at the first read as an EIO only.
    for (let i = 0; i < image.bootstrap.blobs.length; i++) {
      try {
        await image.blobReader(i);
      } catch (e) {
        this.#log.warn(`blob ${image.bootstrap.blobs[i]!.blobId}: ${errorText(e)}`);
      }
    }
    const r = config.rafs;
    const fs = new RafsFs(image, {
      validate: r.validate,
      enableXattr: r.enable_xattr,
      nodeBase: this.#vfs.nextBase(mountpoint),
    });
    fs.warmUp();
    return {
      fs,
      metrics: new FsMetrics(mountpoint, {
        filesAccount: r.iostats_files,
        accessPattern: r.access_pattern,
        latestReadFiles: r.latest_read_files,
      }),
      onReadError: (e) => this.#event(`${mountpoint}: ${errorText(e)}`),
      mountpoint,
      source: bootstrap,
      config,
      image,
      backend: metrics,
      blobs: backend,
      cache,
      mountedTime: new Date(),
      prefetch: undefined,
    };
  }

  #startPrefetch(inst: Instance, files: string[]): void {
    const p = inst.config.rafs.prefetch;
    if (!p.enable) {
      if (files.length > 0)
        this.#log.warn(`prefetch is disabled in the config; ignoring ${files.length} prefetch file(s)`);
      return;
    }
    // As upstream: listed files replace the bootstrap's prefetch table; paths not in the image are warned about.
    const inodes = prefetchInodes(inst.image, files, this.#log);
    const task = startPrefetch(
      inst.image,
      {
        inodes,
        prefetchAll: p.prefetch_all,
        threads: Math.max(1, p.threads),
        mergingSize: p.batch_size,
        bandwidthRate: p.bandwidth_limit,
      },
      this.#log,
    );
    inst.prefetch = task;
    task.done.catch((e: unknown) => this.#log.warn(`prefetch of ${inst.mountpoint} failed: ${errorText(e)}`));
  }

  async #closeInstance(inst: Instance): Promise<void> {
    inst.prefetch?.cancel();
    await inst.prefetch?.done.catch(() => undefined);
    await inst.image.close();
    await inst.cache.close();
    await inst.blobs.close().catch((e: unknown) => this.#log.warn(`closing the backend: ${errorText(e)}`));
  }

  #event(message: string): void {
    this.#events.push(`${new Date().toISOString()} ERROR ${message}`);
    this.#log.error(message);
  }

  /** Run mount changes one at a time. */
  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const r = this.#queue.then(fn, fn);
    this.#queue = r.catch(() => undefined);
    return r;
  }

  /** Unmount everything and close the API; idempotent. */
  stop(): Promise<void> {
    return (this.#stopping ??= (async () => {
      await this.#api?.close().catch((e: unknown) => this.#log.warn(`closing the API: ${errorText(e)}`));
      await this.#session?.stop();
      for (const inst of this.#instances.values()) await this.#closeInstance(inst);
      this.#instances.clear();
      this.#state = 'STOPPED';
    })());
  }

  // ---- DaemonControl ----

  daemonInfo(): Record<string, unknown> {
    const collection: Record<string, unknown> = {};
    for (const [mp, inst] of this.#instances) {
      collection[mp] = {
        backend_type: 'Rafs',
        mountpoint: mp,
        mounted_time: rustTime(inst.mountedTime),
        config: configApiView(inst.config),
      };
    }
    return {
      version: {
        package_ver: this.#opts.version,
        git_commit: 'unknown',
        build_time: 'unknown',
        profile: 'release',
        rustc: `node ${process.version}`,
      },
      id: this.#opts.id ?? null,
      supervisor: null,
      state: this.#state,
      backend_collection: collection,
    };
  }

  setLogLevel(level: string): void {
    const l = level.toLowerCase();
    if (!(LOG_LEVELS as string[]).includes(l) || l === 'off')
      throw new ApiError(
        400,
        `Unknown log level "${level}", expected one of trace, debug, info, warn, error`,
      );
    this.#log.level = l as LogLevel;
    this.#log.info(`log level set to ${l}`);
  }

  events(): Record<string, unknown> {
    return this.#events.toJSON();
  }

  #instanceAt(mountpoint: string): Instance {
    const inst = this.#instances.get(mountpoint);
    if (inst === undefined) throw new ApiError(404, `No image is mounted at "${mountpoint}"`);
    return inst;
  }

  backendInfo(mountpoint: string): Record<string, unknown> {
    const inst = this.#instanceAt(mountpoint);
    const b = inst.image.bootstrap;
    const sb = b.superblock;
    return {
      ...sb.fields,
      version: sb.version === 5 ? 'V5' : 'V6',
      flags: sb.flags,
      root_inode: b.rootIno,
      inodes_count: sb.inodesCount,
      chunk_size: sb.chunkSize,
      compressor: sb.compressor,
      digester: sb.digester,
      prefetch_table_entries: b.prefetchInos().length,
      blobs: b.blobs.map((x) => ({
        blob_id: x.blobId,
        compressed_size: x.compressedSize,
        uncompressed_size: x.uncompressedSize,
        chunk_count: x.chunkCount,
        chunk_size: x.chunkSize,
        compressor: x.compressor,
        digester: x.digester,
      })),
    };
  }

  start(): void {
    if (this.#state !== 'RUNNING') throw new ApiError(400, `Unexpected event Start in state ${this.#state}`);
  }

  exit(): void {
    setImmediate(() => {
      void this.stop().then(
        () => this.#opts.onExit?.(),
        (e: unknown) => {
          this.#log.error(`stopping failed: ${errorText(e)}`);
          this.#opts.onExit?.();
        },
      );
    });
  }

  #checkPath(mountpoint: string): string {
    try {
      pseudoPath(mountpoint);
    } catch (e) {
      throw new ApiError(400, errorText(e));
    }
    return (
      '/' +
      mountpoint
        .split('/')
        .filter((p) => p.length > 0)
        .join('/')
    );
  }

  #requestConfig(req: MountRequest): DaemonConfig {
    if (req.fsType !== 'rafs')
      throw new ApiError(501, `fs_type "${req.fsType}" is not supported (only rafs is)`);
    try {
      return parseConfigText(req.config, 'mount request config', this.#log);
    } catch (e) {
      if (e instanceof ConfigError || e instanceof NydusError) throw new ApiError(400, errorText(e));
      throw e;
    }
  }

  #apiError(e: unknown): never {
    if (e instanceof ApiError) throw e;
    if (
      e instanceof NydusError &&
      ['ERR_INVALID_ARG', 'ERR_NOT_FOUND', 'ERR_FORMAT', 'ERR_IO'].includes(e.code)
    )
      throw new ApiError(400, errorText(e));
    if (e instanceof NydusError && e.code === 'ERR_UNSUPPORTED') throw new ApiError(501, errorText(e));
    throw new ApiError(500, errorText(e));
  }

  mount(mountpoint: string, req: MountRequest): Promise<void> {
    return this.#serial(async () => {
      if (this.#state === 'STOPPED') throw new ApiError(503, 'The daemon is stopping');
      const mp = this.#checkPath(mountpoint);
      const why = this.#vfs.checkMountable(mp);
      if (why !== undefined) throw new ApiError(400, `Cannot mount at "${mp}": ${why}`);
      const config = this.#requestConfig(req);
      try {
        await this.#mountInstance(mp, req.source, config, req.prefetchFiles ?? []);
      } catch (e) {
        this.#apiError(e);
      }
    });
  }

  remount(mountpoint: string, req: MountRequest): Promise<void> {
    return this.#serial(async () => {
      const mp = this.#checkPath(mountpoint);
      const old = this.#instanceAt(mp);
      const config = this.#requestConfig(req);
      let inst: Instance;
      try {
        inst = await this.#openInstance(mp, req.source, config);
      } catch (e) {
        this.#apiError(e);
      }
      this.#vfs.replace(mp, inst);
      this.#instances.set(mp, inst);
      this.#startPrefetch(inst, req.prefetchFiles ?? []);
      await this.#closeInstance(old);
      this.#log.info(`remounted ${mp} with "${req.source}"`);
    });
  }

  umount(mountpoint: string): Promise<void> {
    return this.#serial(async () => {
      const mp = this.#checkPath(mountpoint);
      const inst = this.#instanceAt(mp);
      this.#vfs.umount(mp);
      this.#instances.delete(mp);
      await this.#closeInstance(inst);
      this.#log.info(`umounted ${mp}`);
    });
  }

  #metricsInstance(id: string | undefined, what: string): Instance {
    if (id !== undefined) {
      const inst = this.#instances.get(id);
      if (inst === undefined) throw new ApiError(404, `${what}(NoCounter): no instance with id "${id}"`);
      return inst;
    }
    if (this.#instances.size === 1) return [...this.#instances.values()][0]!;
    throw new ApiError(404, `${what}(NoCounter): ${this.#instances.size} instances, give ?id=<mountpoint>`);
  }

  metrics(kind: MetricsKind, id: string | undefined, latest: boolean): unknown {
    switch (kind) {
      case 'fs':
        return this.#metricsInstance(id, 'Metrics(Stats').metrics.toJSON();
      case 'files': {
        const m = this.#metricsInstance(id, 'Metrics(Stats').metrics;
        return latest ? m.takeLatestReadFiles() : m.files();
      }
      case 'pattern':
        return this.#metricsInstance(id, 'Pattern(Metrics(Stats').metrics.patterns();
      case 'backend':
        return this.#metricsInstance(id, 'Metrics(Stats').backend.toJSON();
      case 'blobcache': {
        const inst = this.#metricsInstance(id, 'Metrics(Stats');
        return blobcacheJSON(inst.cache.stats);
      }
    }
  }

  inflight(): { inode: number; opcode: number; unique: number; timestamp_secs: number }[] {
    return (this.#session?.inflightRequests() ?? []).map((r) => ({
      inode: Number(r.nodeid),
      opcode: r.opcode,
      unique: Number(r.unique),
      timestamp_secs: Math.floor(r.startMs / 1000),
    }));
  }

  getConfig(id: string): Record<string, string> {
    const out: Record<string, string> = {};
    for (const k of HOT_CONFIG_KEYS) {
      const v = this.#hotConfig.get(`${id}:${k}`);
      if (v !== undefined) out[k] = v;
    }
    return out;
  }

  setConfig(id: string, values: Record<string, unknown>): void {
    for (const [k, v] of Object.entries(values)) {
      if (!HOT_CONFIG_KEYS.includes(k)) throw new ApiError(400, `Unknown config key "${k}"`);
      if (typeof v !== 'string') throw new ApiError(400, `Config key "${k}" needs a string value`);
    }
    for (const [k, v] of Object.entries(values)) {
      this.#hotConfig.set(`${id}:${k}`, v as string);
      // New credentials reach the backend of the instance `id` names (its mountpoint).
      if (k === 'registry_auth') {
        const inst = this.#instances.get(id === '' ? '/' : id);
        try {
          inst?.blobs.setAuth?.(v as string);
        } catch (e) {
          throw new ApiError(400, errorText(e));
        }
      }
    }
  }
}
