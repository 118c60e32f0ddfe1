import { readFileSync, statSync } from 'node:fs';
import { lstat, readFile } from 'node:fs/promises';
import { getHeapSpaceStatistics } from 'node:v8';
import { connect } from 'node:net';
import { createRequire } from 'node:module';
import type * as Z from 'zod';
import { errorText, NydusError } from '../errors/errors.js';
import {
  checkMountpoint,
  FuseSession,
  isFuseMount,
  mountAt,
  mountpointPath,
  type FuseInitInfo,
} from '../fuse/session.js';
import { closeFd, UnixConnection, type Received } from '../util/fdpass.js';
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
import {
  BackendMetrics,
  blobcacheJSON,
  EventRing,
  FsMetrics,
  memoryReport,
  MeteredBlobSource,
} from './metrics.js';
import { settleAfterMount, trimMalloc, trimWhenQuiet, tuneMalloc } from './malloc.js';
import { RafsFs } from './rafs-fs.js';
import { pseudoPath, slotBase, Vfs, type VfsInstance, type VfsState } from './vfs.js';

/**
 * nydusd: one FUSE mount (the VFS) with RAFS instances on it, the optional HTTP API, and the
 * daemon state machine upstream exposes (INIT → RUNNING → STOPPED). Started with
 * `--bootstrap`, the image sits at the virtual mountpoint ("/" by default); without it the
 * mount is an empty pseudo tree and images come and go through the API.
 */

export type DaemonState = 'INIT' | 'READY' | 'RUNNING' | 'STOPPED';

/** What a daemon that took a connection over does about the requests its predecessor left. */
export type FailoverPolicy = 'none' | 'resend' | 'flush';

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
  /** `--supervisor`: the socket `sendfd` sends the state to and `takeover` fetches it from. */
  readonly supervisor?: string;
  /** `--upgrade`: stay in INIT without mounting and wait for PUT /api/v1/daemon/fuse/takeover. */
  readonly upgrade?: boolean;
  /** `--failover-policy`, applied at the start after a takeover. Default resend. */
  readonly failoverPolicy?: FailoverPolicy;
  /** Bound on each supervisor transfer. Default 10 s (the snapshotter's own bound). */
  readonly supervisorTimeoutMs?: number;
  readonly version: string;
  readonly logger: Logger;
  /** Called after `PUT /api/v1/daemon/exit` has stopped the daemon. */
  readonly onExit?: () => void;
}

/** Where an instance's config came from, to rebuild it after a takeover. */
type ConfigSource = { readonly text: string } | { readonly localfsDir: string };

/** One RAFS image mounted in the VFS. */
interface Instance extends VfsInstance {
  readonly mountpoint: string;
  readonly source: string;
  /** Whether the bootstrap is mapped from its file (not held in the heap). */
  readonly sourceMapped: boolean;
  readonly config: DaemonConfig;
  readonly configSource: ConfigSource;
  readonly prefetchFiles: readonly string[];
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
 * The kernel read-ahead of the FUSE mount: 1 MiB lets a sequential reader's reads grow to a
 * whole 1 MiB chunk while the daemon fetches the next chunk ahead itself (the kernel's 128 KiB
 * default allows one small read at a time, and each round trip through the daemon costs more
 * than through a C daemon). 4 MiB (four 1 MiB reads in flight) read no faster and held more
 * chunk memory at once: B3 peak RSS on rootfs-large 90 against 80 MiB, big-files 75 against
 * 66 MiB, same read time and CPU (issue #12, session 4). A daemon started with an image on a
 * remote backend, or with no image at all (shared mode, images mounted later through the API),
 * keeps the kernel's default instead, so a lazy start fetches little more than it reads
 * (benchmark B5).
 */
const FUSE_READ_AHEAD_KB = 1024;

/** How often the daemon looks for images no one reads (#releaseIdleImages). */
const IDLE_CHECK_MS = 2000;

const HOT_CONFIG_KEYS = ['registry_auth', 'proxy_url', 'dragonfly_scheduler_endpoint'];

const SUPERVISOR_TIMEOUT_MS = 10_000;
/** The most state bytes a takeover accepts. */
const MAX_STATE_BYTES = 64 << 20;

/**
 * The state `sendfd` hands to the supervisor and `takeover` restores, with the /dev/fuse fd
 * passed beside it. Upstream encodes its own state with dbs-snapshot/versionize (the mount
 * commands with their VFS slot indexes, the VFS state, the FUSE connection id); only nydusd
 * reads it, so ours is versioned JSON: what rebuilds every instance into the same slot under
 * the same pseudo node ids, and the INIT the kernel negotiated with the first daemon.
 */
function handoverStateSchema(z: typeof Z) {
  return z.object({
    kind: z.literal('nydus-ts/fusedev'),
    version: z.literal(1),
    id: z.string().nullable(),
    mountpoint: z.string(),
    fuse: z.object({
      conn: z.number().int().nullable(),
      minor: z.number().int(),
      kernel_flags: z.string().regex(/^0x[0-9a-f]+$/),
      flags: z.string().regex(/^0x[0-9a-f]+$/),
    }),
    vfs: z.object({
      pseudo: z.boolean(),
      nextNode: z.string(),
      lastSlot: z.number().int(),
      dirs: z.array(z.object({ node: z.string(), path: z.string() })),
      mounts: z.array(z.object({ path: z.string(), slot: z.number().int() })),
    }),
    instances: z.array(
      z.object({
        mountpoint: z.string(),
        source: z.string(),
        config: z.union([z.object({ text: z.string() }), z.object({ localfs_dir: z.string() })]),
        prefetch_files: z.array(z.string()),
        mounted_time: z.string(),
      }),
    ),
    hot_config: z.record(z.string(), z.string()),
  });
}
type HandoverState = Z.infer<ReturnType<typeof handoverStateSchema>>;

function parseHandoverState(data: Buffer): HandoverState {
  let json: unknown;
  try {
    json = JSON.parse(data.toString('utf8'));
  } catch (e) {
    throw new NydusError('ERR_FORMAT', `The state from the supervisor is not JSON: ${errorText(e)}`);
  }
  // zod (CommonJS, loaded here on first use) only for a takeover: not in every daemon's RSS.
  const z = createRequire(import.meta.url)('zod') as typeof Z;
  const r = handoverStateSchema(z).safeParse(json);
  if (!r.success) {
    const what =
      typeof json === 'object' && json !== null && 'kind' in json
        ? `kind ${JSON.stringify(json.kind)}`
        : 'no kind';
    throw new NydusError(
      'ERR_FORMAT',
      `The state from the supervisor is not a nydus-ts daemon state (${what}): ${r.error.issues[0]?.message ?? ''}`,
    );
  }
  return r.data;
}

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

/** Whether connecting to the unix socket at `path` is refused (a socket file nobody listens on). */
function socketRefuses(path: string, timeoutMs = 2000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ path });
    const done = (refused: boolean): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(refused);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    s.once('connect', () => done(false));
    s.once('error', (e: NodeJS.ErrnoException) => done(e.code === 'ECONNREFUSED'));
  });
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
  #vfs: Vfs;
  readonly #instances = new Map<string, Instance>();
  readonly #events = new EventRing();
  readonly #hotConfig = new Map<string, string>();
  #state: DaemonState = 'INIT';
  #session: FuseSession | undefined;
  /** Another process may hold the /dev/fuse fd (it went to the supervisor, or came from it). */
  #fdShared = false;
  #left = false;
  /** Settles when the session being served ends. */
  readonly #ended: { promise: Promise<void>; resolve: () => void; reject: (e: unknown) => void };
  #api: { close(): Promise<void> } | undefined;
  #stopping: Promise<void> | undefined;
  /** Stops the quiet-time trim of malloc and the release of idle images' memory (see #settleMemory). */
  #stopMemoryTimers: (() => void) | undefined;
  /** Mount/umount requests run one at a time. */
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(opts: DaemonOptions) {
    this.#opts = opts;
    this.#log = opts.logger;
    // One image at "/" owns the whole mount; otherwise the root is a pseudo tree that changes.
    this.#vfs = new Vfs({ pseudo: opts.bootstrap === undefined || (opts.virtualMountpoint ?? '/') !== '/' });
    let resolve!: () => void;
    let reject!: (e: unknown) => void;
    const promise = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    promise.catch(() => undefined);
    this.#ended = { promise, resolve, reject };
  }

  /**
   * Settles when the FUSE session this daemon serves ends by itself (an unmount from outside);
   * never before the daemon serves one.
   */
  get ended(): Promise<void> {
    return this.#ended.promise;
  }

  #watch(session: FuseSession): void {
    session.done.then(this.#ended.resolve, this.#ended.reject);
  }

  get state(): DaemonState {
    return this.#state;
  }

  get session(): FuseSession | undefined {
    return this.#session;
  }

  /**
   * The daemon stopped serving and left the mount to another holder of its connection: reads
   * of /dev/fuse may still wait on the libuv pool (the process must exit without joining it).
   */
  get leftConnection(): boolean {
    return this.#left;
  }

  /** Check everything, mount, open the API socket, serve. */
  static async start(opts: DaemonOptions): Promise<NydusDaemon> {
    const d = new NydusDaemon(opts);
    if (opts.configFile !== undefined && opts.localfsDir !== undefined)
      invalid('--config and --localfs-dir cannot be used together');
    if (opts.prefetchFilesList !== undefined && opts.bootstrap === undefined)
      invalid('--prefetch-files needs --bootstrap');
    if (opts.upgrade === true && opts.apisock === undefined)
      invalid('--upgrade needs --apisock: the takeover comes through the API');
    // Upgrade mode, or a predecessor that crashed: no mount, INIT until the takeover.
    if (opts.upgrade === true || (opts.apisock !== undefined && (await d.#predecessorCrashed()))) {
      mountpointPath(opts.mountpoint);
      tuneMalloc(opts.logger);
      d.#api = await startApiServer(opts.apisock!, d, d.#log);
      d.#log.info(
        `nydusd waits in state INIT for a takeover of ${opts.mountpoint} (supervisor ${opts.supervisor ?? 'none'})`,
      );
      return d;
    }
    checkMountpoint(opts.mountpoint);
    tuneMalloc(opts.logger);
    if (opts.bootstrap !== undefined) {
      const { config, source } = await d.#startupConfig();
      const prefetch =
        opts.prefetchFilesList === undefined ? [] : await readPrefetchList(opts.prefetchFilesList);
      const vmp = opts.virtualMountpoint ?? '/';
      pseudoPath(vmp);
      await d.#mountInstance(vmp, opts.bootstrap, config, source, prefetch);
    }
    try {
      // The API first: once the mount is visible, the socket answers too.
      if (opts.apisock !== undefined) d.#api = await startApiServer(opts.apisock, d, d.#log);
      d.#session = await FuseSession.mount(opts.mountpoint, d.#vfs, {
        threads: opts.threads ?? 4,
        logger: d.#log,
        source: 'nydusfs',
        // Only a daemon started with local images gets the larger read-ahead. Remote blobs, or
        // no image yet (a shared daemon whose images come later through the API, most often
        // from a registry), keep the kernel's own, so a lazy start fetches no more than it reads.
        ...(d.#instances.size > 0 && [...d.#instances.values()].every((i) => i.blobs.local)
          ? { readAheadKb: FUSE_READ_AHEAD_KB }
          : {}),
      });
      d.#watch(d.#session);
      d.#state = 'RUNNING';
      d.#settleMemory();
    } catch (e) {
      await d.stop();
      throw e;
    }
    d.#log.info(
      `nydusd serving ${opts.mountpoint} (${d.#instances.size} image(s)${opts.apisock === undefined ? '' : `, API on ${opts.apisock}`}, ${opts.threads ?? 4} fuse threads)`,
    );
    return d;
  }

  /**
   * Upstream's crash detection: with an API socket and without --upgrade, a FUSE mount still at
   * the mountpoint and an API socket file nobody answers on mean the predecessor died (its
   * supervisor may hold the connection). Only mountinfo is read: the mount itself may hang.
   */
  async #predecessorCrashed(): Promise<boolean> {
    const o = this.#opts;
    if (o.apisock === undefined || !isFuseMount(o.mountpoint)) return false;
    try {
      if (!(await lstat(o.apisock)).isSocket()) return false;
    } catch {
      return false;
    }
    if (!(await socketRefuses(o.apisock))) return false;
    this.#log.warn(
      `A FUSE mount is left at ${o.mountpoint} and nothing answers on ${o.apisock}: the previous nydusd crashed; waiting for a takeover`,
    );
    return true;
  }

  async #startupConfig(): Promise<{ config: DaemonConfig; source: ConfigSource }> {
    const o = this.#opts;
    if (o.localfsDir !== undefined) {
      if (!(await isKind(o.localfsDir, 'dir')))
        invalid(`Blob directory "${o.localfsDir}" (--localfs-dir) does not exist or is not a directory`);
      return { config: localfsShortcutConfig(o.localfsDir), source: { localfsDir: o.localfsDir } };
    }
    if (o.configFile === undefined) invalid('Either --config or --localfs-dir is needed with --bootstrap');
    let text: Buffer;
    try {
      text = await readFile(o.configFile);
    } catch (e) {
      throw new NydusError('ERR_IO', `Cannot read config "${o.configFile}": ${errorText(e)}`);
    }
    return {
      config: parseConfigText(text, `"${o.configFile}"`, this.#log),
      source: { text: text.toString('utf8') },
    };
  }

  /** Open an image as an instance for `mountpoint`, put it in the VFS, start its prefetch. */
  async #mountInstance(
    mountpoint: string,
    bootstrap: string,
    config: DaemonConfig,
    configSource: ConfigSource,
    prefetchFiles: string[],
  ): Promise<void> {
    const inst = await this.#openInstance(mountpoint, bootstrap, config, configSource, prefetchFiles);
    this.#vfs.mount(mountpoint, inst);
    this.#instances.set(mountpoint, inst);
    this.#startPrefetch(inst, prefetchFiles);
    const sb = inst.image.bootstrap.superblock;
    this.#log.info(
      `RAFS v${sb.version} image "${bootstrap}" mounted at ${mountpoint} (${inst.image.bootstrap.blobs.length} blob(s), cache ${config.cache.type})`,
    );
  }

  async #openInstance(
    mountpoint: string,
    bootstrap: string,
    config: DaemonConfig,
    configSource: ConfigSource,
    prefetchFiles: readonly string[],
    nodeBase: bigint = this.#vfs.nextBase(mountpoint),
  ): Promise<Instance> {
    await checkBackend(config);
    if (config.cache.type === 'fscache')
      throw new NydusError('ERR_UNSUPPORTED', 'cache type fscache is not supported');
    if (!(await isKind(bootstrap, 'file')))
      invalid(`Bootstrap "${bootstrap}" does not exist or is not a file`);
    const loaded = await loadBootstrapFile(bootstrap, { map: true });
    const backend = createBackend(config, loaded, this.#log, (m) => this.#event(m));
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
      untrusted: !backend.local,
      readAheadBytes: config.rafs.batch_size,
      // Every request to a remote backend is a round trip: a reader walking the blob gets the
      // next chunks fetched ahead of it.
      blobReadAhead: !backend.local,
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
      nodeBase,
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
      sourceMapped: loaded.mapped === true,
      config,
      configSource,
      prefetchFiles: [...prefetchFiles],
      image,
      backend: metrics,
      blobs: backend,
      cache,
      mountedTime: new Date(),
      prefetch: undefined,
    };
  }

  #startPrefetch(inst: Instance, files: readonly string[]): void {
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

  /**
   * The daemon serves a new image: collect the garbage of loading it and hand the freed memory
   * back (daemon/malloc.ts), and from now on give memory back whenever reads stop for a while.
   */
  #settleMemory(): void {
    setImmediate(() => {
      if (this.#stopping === undefined) settleAfterMount(this.#log);
    });
    if (this.#stopMemoryTimers === undefined) {
      const stopTrim = trimWhenQuiet(this.#log);
      const stopRelease = this.#releaseIdleImages();
      this.#stopMemoryTimers = () => {
        stopTrim();
        stopRelease();
      };
    }
  }

  /**
   * Every IDLE_CHECK_MS, the images no one read since the previous check let go of their chunk
   * memory (recent chunks, pooled buffers; BlobDevice.releaseIdle) and glibc gets it back: in a
   * shared daemon each image read once (a container started) would otherwise keep up to 8 MiB
   * for good, so the daemon grew by that much per image. A read after it costs a fresh buffer.
   */
  #releaseIdleImages(): () => void {
    const seen = new WeakMap<Instance, number>();
    const timer = setInterval(() => {
      let released = 0;
      for (const inst of this.#instances.values()) {
        const device = inst.image.device;
        const uses = device.uses;
        if (seen.get(inst) === uses) released += device.releaseIdle();
        seen.set(inst, uses);
      }
      if (released > 0) {
        trimMalloc(this.#log);
        this.#log.debug(`idle images let go of ${(released / 2 ** 20).toFixed(1)} MiB of chunk memory`);
      }
    }, IDLE_CHECK_MS);
    timer.unref();
    return () => clearInterval(timer);
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
      this.#stopMemoryTimers?.();
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
      supervisor: this.#opts.supervisor ?? null,
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
    const session = this.#session;
    if (this.#state !== 'READY' || session === undefined)
      throw new ApiError(400, `Unexpected event Start in state ${this.#state}`);
    session.serve();
    this.#watch(session);
    this.#state = 'RUNNING';
    this.#settleMemory();
    // The requests the predecessor read and never answered.
    const policy = this.#opts.failoverPolicy ?? 'resend';
    if (policy === 'resend') session.resend();
    else if (policy === 'flush') session.flush();
    this.#log.info(
      `nydusd serving ${session.mountpoint} again after a takeover (${this.#instances.size} image(s), failover policy ${policy})`,
    );
  }

  // ---- failover: the supervisor protocol ----

  #supervisorPath(): string {
    const s = this.#opts.supervisor;
    if (s === undefined)
      throw new ApiError(
        501,
        'nydusd was started without --supervisor, so it has no one to hand its state to',
      );
    return s;
  }

  #handoverState(session: FuseSession, init: FuseInitInfo): HandoverState {
    const vfs: VfsState = this.#vfs.state();
    return {
      kind: 'nydus-ts/fusedev',
      version: 1,
      id: this.#opts.id ?? null,
      mountpoint: session.mountpoint,
      fuse: {
        conn: session.connection ?? null,
        minor: init.minor,
        kernel_flags: `0x${init.kernelFlags.toString(16)}`,
        flags: `0x${init.flags.toString(16)}`,
      },
      vfs: { ...vfs, dirs: [...vfs.dirs], mounts: [...vfs.mounts] },
      instances: [...this.#instances.values()].map((i) => ({
        mountpoint: i.mountpoint,
        source: i.source,
        config:
          'text' in i.configSource
            ? { text: i.configSource.text }
            : { localfs_dir: i.configSource.localfsDir },
        prefetch_files: [...i.prefetchFiles],
        mounted_time: i.mountedTime.toISOString(),
      })),
      hot_config: Object.fromEntries(this.#hotConfig),
    };
  }

  /**
   * PUT /api/v1/daemon/fuse/sendfd: connect to the supervisor and send the state with the
   * /dev/fuse fd (one sendmsg with SCM_RIGHTS, the rest of the state after it, then close).
   */
  sendFd(): Promise<void> {
    return this.#serial(async () => {
      const path = this.#supervisorPath();
      const session = this.#session;
      const init = session?.initInfo;
      if (
        (this.#state !== 'RUNNING' && this.#state !== 'READY') ||
        session === undefined ||
        init === undefined
      )
        throw new ApiError(503, `The daemon is not serving yet (state ${this.#state}); nothing to send`);
      const data = Buffer.from(JSON.stringify(this.#handoverState(session, init)));
      const timeout = this.#opts.supervisorTimeoutMs ?? SUPERVISOR_TIMEOUT_MS;
      let conn: UnixConnection | undefined;
      try {
        conn = await UnixConnection.connect(path, timeout);
        await conn.send(data, [session.fd], timeout);
      } catch (e) {
        throw new ApiError(500, `Cannot send the state to supervisor "${path}": ${errorText(e)}`);
      } finally {
        conn?.close();
      }
      this.#fdShared = true;
      this.#log.info(`sent the state (${data.length} bytes) and the FUSE fd to supervisor ${path}`);
    });
  }

  /**
   * PUT /api/v1/daemon/fuse/takeover (INIT only): fetch the state and the /dev/fuse fd from the
   * supervisor, rebuild every instance into its slot, and hold the connection without serving
   * it (READY) until PUT /api/v1/daemon/start.
   */
  takeover(): Promise<void> {
    return this.#serial(async () => {
      if (this.#state !== 'INIT')
        throw new ApiError(400, `Unexpected event Takeover in state ${this.#state}`);
      const path = this.#supervisorPath();
      const timeout = this.#opts.supervisorTimeoutMs ?? SUPERVISOR_TIMEOUT_MS;
      let got: Received;
      let conn: UnixConnection | undefined;
      try {
        conn = await UnixConnection.connect(path, timeout);
        got = await conn.receiveAll(timeout, MAX_STATE_BYTES);
      } catch (e) {
        throw new ApiError(500, `Cannot take the state over from supervisor "${path}": ${errorText(e)}`);
      } finally {
        conn?.close();
      }
      try {
        await this.#restore(got);
      } catch (e) {
        for (const fd of got.fds) closeFd(fd);
        if (e instanceof ApiError) throw e;
        throw new ApiError(500, `Takeover from supervisor "${path}" failed: ${errorText(e)}`);
      }
    });
  }

  async #restore(got: Received): Promise<void> {
    const [fd, ...extra] = got.fds;
    if (fd === undefined)
      throw new NydusError(
        'ERR_FORMAT',
        `The supervisor sent ${got.data.length} bytes of state but no FUSE fd`,
      );
    const state = parseHandoverState(got.data);
    const mnt = mountpointPath(this.#opts.mountpoint);
    if (state.mountpoint !== mnt)
      throw new NydusError(
        'ERR_INVALID_ARG',
        `The state is for mountpoint "${state.mountpoint}", this daemon serves "${mnt}"`,
      );
    const m = mountAt(mnt);
    if (m === undefined || !isFuseMount(mnt))
      throw new NydusError('ERR_FAILED_PRECONDITION', `Nothing FUSE is mounted at "${mnt}" any more`);
    if (state.fuse.conn !== null && m.minor !== state.fuse.conn)
      this.#log.warn(`The mount at ${mnt} is FUSE connection ${m.minor}, the state names ${state.fuse.conn}`);
    const slots = new Map(state.vfs.mounts.map((x) => [x.path, x.slot]));
    const opened = new Map<string, Instance>();
    try {
      for (const s of state.instances) {
        const source: ConfigSource =
          'text' in s.config ? { text: s.config.text } : { localfsDir: s.config.localfs_dir };
        const config =
          'text' in source
            ? parseConfigText(source.text, `the config of ${s.mountpoint}`, this.#log)
            : localfsShortcutConfig(source.localfsDir);
        const slot = slots.get(s.mountpoint);
        if (slot === undefined)
          throw new NydusError('ERR_FORMAT', `No slot for the instance at "${s.mountpoint}"`);
        const inst = await this.#openInstance(
          s.mountpoint,
          s.source,
          config,
          source,
          s.prefetch_files,
          slotBase(slot),
        );
        const t = new Date(s.mounted_time);
        opened.set(s.mountpoint, Number.isNaN(t.getTime()) ? inst : { ...inst, mountedTime: t });
      }
      this.#vfs = Vfs.restore(state.vfs, opened);
    } catch (e) {
      for (const inst of opened.values()) await this.#closeInstance(inst);
      throw e;
    }
    const init: FuseInitInfo = {
      minor: state.fuse.minor,
      kernelFlags: BigInt(state.fuse.kernel_flags),
      flags: BigInt(state.fuse.flags),
    };
    for (const x of extra) closeFd(x);
    this.#session = FuseSession.adopt(fd, mnt, this.#vfs, {
      threads: this.#opts.threads ?? 4,
      logger: this.#log,
      init,
    });
    for (const [mp, inst] of opened) {
      this.#instances.set(mp, inst);
      this.#startPrefetch(inst, inst.prefetchFiles);
    }
    for (const [k, v] of Object.entries(state.hot_config)) {
      this.#hotConfig.set(k, v);
      const [id, key] = [k.slice(0, k.lastIndexOf(':')), k.slice(k.lastIndexOf(':') + 1)];
      try {
        this.#applyHotConfig(id, key, v);
      } catch (e) {
        this.#log.warn(`restoring ${key} of "${id}": ${errorText(e)}`);
      }
    }
    this.#fdShared = true;
    this.#state = 'READY';
    this.#log.info(
      `took over ${mnt} (FUSE connection ${m.minor}, ${opened.size} image(s)); state READY, waiting for start`,
    );
  }

  /**
   * Stop serving and leave the mount to the process that holds the connection now (hot
   * upgrade): answer what is in progress, close the API and the images, never unmount.
   */
  #leave(): Promise<void> {
    return (this.#stopping ??= (async () => {
      this.#stopMemoryTimers?.();
      await this.#api?.close().catch((e: unknown) => this.#log.warn(`closing the API: ${errorText(e)}`));
      this.#left = this.#session !== undefined;
      await this.#session?.detach();
      for (const inst of this.#instances.values()) await this.#closeInstance(inst);
      this.#instances.clear();
      this.#state = 'STOPPED';
      this.#log.info('left the FUSE connection to its new holder without unmounting');
    })());
  }

  exit(): void {
    setImmediate(() => {
      // A successor or the supervisor may hold the connection: exit without unmounting, as upstream.
      void (this.#fdShared ? this.#leave() : this.stop()).then(
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

  /** Mounts need the FUSE tree, which a daemon waiting for a takeover does not have yet. */
  #refuseInit(): void {
    if (this.#state === 'INIT')
      throw new ApiError(503, 'The daemon waits for a takeover (state INIT); mount after it');
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
      this.#refuseInit();
      const mp = this.#checkPath(mountpoint);
      const why = this.#vfs.checkMountable(mp);
      if (why !== undefined) throw new ApiError(400, `Cannot mount at "${mp}": ${why}`);
      const config = this.#requestConfig(req);
      try {
        await this.#mountInstance(mp, req.source, config, { text: req.config }, req.prefetchFiles ?? []);
      } catch (e) {
        this.#apiError(e);
      }
      this.#settleMemory();
    });
  }

  remount(mountpoint: string, req: MountRequest): Promise<void> {
    return this.#serial(async () => {
      this.#refuseInit();
      const mp = this.#checkPath(mountpoint);
      const old = this.#instanceAt(mp);
      const config = this.#requestConfig(req);
      let inst: Instance;
      try {
        inst = await this.#openInstance(
          mp,
          req.source,
          config,
          { text: req.config },
          req.prefetchFiles ?? [],
        );
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

  memory(): Record<string, unknown> {
    const size = (path: string): number => {
      try {
        return statSync(path).size;
      } catch {
        return 0;
      }
    };
    let status = '';
    try {
      status = readFileSync('/proc/self/status', 'utf8');
    } catch {
      // not Linux: the process figures are null
    }
    const instances = [...this.#instances.values()].map((i) => ({
      mountpoint: i.mountpoint,
      bufferPool: i.image.device.bufferPool,
      memory: i.image.device.memory,
      bootstrapBytes: i.sourceMapped ? 0 : size(i.source),
    }));
    return memoryReport(instances, { heapSpaces: getHeapSpaceStatistics() }, status);
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
      try {
        this.#applyHotConfig(id, k, v as string);
      } catch (e) {
        throw new ApiError(400, errorText(e));
      }
    }
  }

  /**
   * A hot config value reaches the backend of the instance `id` names (its mountpoint): new
   * credentials (`registry_auth`), a new proxy URL (`proxy_url`). Other keys are only kept.
   */
  #applyHotConfig(id: string, key: string, value: string): void {
    const blobs = this.#instances.get(id === '' ? '/' : id)?.blobs;
    if (key === 'registry_auth') blobs?.setAuth?.(value);
    else if (key === 'proxy_url') blobs?.setProxyUrl?.(value);
  }
}
