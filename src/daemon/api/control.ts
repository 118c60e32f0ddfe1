/**
 * What the HTTP API (src/daemon/api/server.ts) asks of the daemon. The API layer only parses
 * requests, calls these methods and renders their results or errors; the daemon
 * (src/daemon/daemon.ts) implements them. Results are plain JSON-able values in upstream's
 * shapes (docs/upstream-surface.md section 3).
 */

/** HTTP status an error maps to (upstream's mapping: 400 bad request, 404 unknown, 501 unsupported, 503 not ready). */
export type ApiStatus = 400 | 404 | 500 | 501 | 503;

/** An error with the status the API answers it with; the body is upstream's error shape. */
export class ApiError extends Error {
  readonly status: ApiStatus;

  constructor(status: ApiStatus, message: string) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
  }
}

/** Body of POST/PUT /api/v1/mount (and of the legacy body form, once normalised). */
export interface MountRequest {
  /** Bootstrap path (or a blob with inline metadata). */
  source: string;
  /** "rafs" (passthrough types are refused with 501 by the daemon). */
  fsType: string;
  /** The daemon config as text (v1/v2 JSON or v2 TOML), not a path. */
  config: string;
  /** Paths inside the image to prefetch. */
  prefetchFiles?: string[];
}

export type MetricsKind = 'fs' | 'files' | 'pattern' | 'backend' | 'blobcache';

export interface DaemonControl {
  /** GET /api/v1/daemon: version, id, supervisor, state, backend_collection. */
  daemonInfo(): Record<string, unknown>;
  /** PUT /api/v1/daemon {"log_level": L}; ApiError 400 for an unknown level. */
  setLogLevel(level: string): void;
  /** GET /api/v1/daemon/events: {max_errors, total_errors, max_size, total_size, errors[]}. */
  events(): Record<string, unknown>;
  /** GET /api/v1/daemon/backend?mountpoint=M: that instance's superblock metadata; ApiError 404 when M is not mounted. */
  backendInfo(mountpoint: string): Record<string, unknown>;
  /** PUT /api/v1/daemon/start: READY → RUNNING (after a takeover); ApiError 400 in another state. */
  start(): void;
  /**
   * PUT /api/v1/daemon/fuse/sendfd: send the daemon state and the /dev/fuse fd to the supervisor
   * (which listens before this is called). Absent: the API answers 501 (no failover).
   */
  sendFd?(): Promise<void>;
  /**
   * PUT /api/v1/daemon/fuse/takeover: fetch the state and the fd from the supervisor and restore
   * them (INIT → READY). Absent: the API answers 501 (no failover).
   */
  takeover?(): Promise<void>;
  /** PUT /api/v1/daemon/exit: answer first (204), then the daemon unmounts and exits. */
  exit(): void;
  /** POST /api/v1/mount?mountpoint=M. ApiError 400 if M is mounted already or the request is bad. */
  mount(mountpoint: string, req: MountRequest): Promise<void>;
  /** PUT /api/v1/mount?mountpoint=M: swap the image or config of a mounted RAFS instance. */
  remount(mountpoint: string, req: MountRequest): Promise<void>;
  /** DELETE /api/v1/mount?mountpoint=M; ApiError 404 when M is not mounted. */
  umount(mountpoint: string): Promise<void>;
  /**
   * GET /api/v1/metrics[/files|/pattern|/backend|/blobcache][?id=ID][&latest=true].
   * ApiError 404 with a message containing "NoCounter" when there is no such instance.
   */
  metrics(kind: MetricsKind, id: string | undefined, latest: boolean): unknown;
  /**
   * GET /api/v1/daemon/memory (ours, not upstream's): the daemon's memory by cause (process,
   * V8 heap, each instance's chunk memory, runtime settings). Absent: the API answers 501.
   */
  memory?(): Record<string, unknown>;
  /** GET /api/v1/metrics/inflight: FUSE requests in progress (empty: the API answers 204). */
  inflight(): { inode: number; opcode: number; unique: number; timestamp_secs: number }[];
  /** GET /api/v1/config?id=ID: the hot-reloadable settings as a flat map. */
  getConfig(id: string): Record<string, string>;
  /** PUT /api/v1/config?id=ID {key: value}; ApiError 400 for an unknown key. */
  setConfig(id: string, values: Record<string, unknown>): void;
}
