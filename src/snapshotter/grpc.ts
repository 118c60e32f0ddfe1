import { chmodSync, chownSync, lstatSync, mkdirSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { protoDir } from './proto-dir.js';
import { errorText, isNydusError, NydusError, type ErrorCode } from '../errors/errors.js';
import type { Logger } from '../log/logger.js';
import type { Info, Kind, Mount, Snapshotter } from './types.js';

/**
 * The gRPC face of the snapshotter: containerd's Snapshots service (our own .proto files under
 * <repo>/proto, wire-identical to containerd's) over a `Snapshotter`, served on a unix socket
 * the way containerd's proxy snapshotter plugin dials it.
 *
 * As containerd's own service adapter (contrib/snapshotservice): the request's `snapshotter`
 * name is ignored, List answers in messages of 100 infos, Update passes `update_mask.paths` as
 * the field paths, and errors become the gRPC status codes containerd's errdefs turn back into
 * its error classes (see `toGrpcError`).
 */

/** Where the .proto files live: <repo>/proto, seen from the compiled dist/src/snapshotter. */

/** containerd's message limits for its proxy plugins (defaults.DefaultMaxRecvMsgSize). */
export const MAX_MESSAGE_SIZE = 16 << 20;

/** Server options with containerd's 16 MiB message limits both ways. */
export const SERVER_OPTIONS: grpc.ServerOptions = {
  'grpc.max_receive_message_length': MAX_MESSAGE_SIZE,
  'grpc.max_send_message_length': MAX_MESSAGE_SIZE,
};

/** A gRPC server with those limits, ready for `addSnapshotsService` and `listenUnix`. */
export function createGrpcServer(): grpc.Server {
  return new grpc.Server(SERVER_OPTIONS);
}

/** containerd's List batch: infos per stream message. */
export const LIST_BATCH = 100;

/** How long `close()` lets in-flight calls finish before cutting them. */
const SHUTDOWN_GRACE_MS = 5000;

/** Longest unix socket path: sun_path holds 108 bytes including the terminating NUL. */
const MAX_SOCKET_PATH = 107;

export interface GrpcServer {
  /** The socket path the server listens on. */
  address: string;
  server: grpc.Server;
  /** Stops the whole server (in-flight calls get a few seconds) and removes its socket. */
  close(): Promise<void>;
}

const loaded = new Map<string, grpc.GrpcObject>();

/**
 * Loads a proto under the project's proto directory (see protoDir). Field names keep their proto spelling (`created_at`), enums are their value
 * names, 64-bit integers are numbers, absent fields take their defaults.
 */
export function loadProto(relPath: string): grpc.GrpcObject {
  const hit = loaded.get(relPath);
  if (hit !== undefined) return hit;
  const dir = protoDir(relPath);
  const def = protoLoader.loadSync(join(dir, relPath), {
    keepCase: true,
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
    includeDirs: [dir],
  });
  const obj = grpc.loadPackageDefinition(def);
  loaded.set(relPath, obj);
  return obj;
}

// ---- Messages as proto-loader hands them over (keepCase, enums as names, longs as numbers) ----

interface PbTimestamp {
  seconds: number | string;
  nanos: number;
}

type PbKind = 'UNKNOWN' | 'VIEW' | 'ACTIVE' | 'COMMITTED';

interface PbInfo {
  name: string;
  parent: string;
  kind: PbKind;
  created_at: PbTimestamp | null;
  updated_at: PbTimestamp | null;
  labels: Record<string, string>;
}

interface PbMount {
  type: string;
  source: string;
  target: string;
  options: string[];
}

interface KeyRequest {
  snapshotter: string;
  key: string;
}
interface CreateRequest extends KeyRequest {
  parent: string;
  labels: Record<string, string>;
}
interface CommitRequest extends KeyRequest {
  name: string;
  labels: Record<string, string>;
}
interface UpdateRequest {
  snapshotter: string;
  info: PbInfo | null;
  update_mask: { paths: string[] } | null;
}
interface ListRequest {
  snapshotter: string;
  filters: string[];
}
interface MountsResponse {
  mounts: PbMount[];
}
interface InfoResponse {
  info: PbInfo;
}
interface UsageResponse {
  size: number;
  inodes: number;
}
type Empty = Record<string, never>;

// ---- Conversions ----

const KIND_TO_PB: Record<Kind, PbKind> = { view: 'VIEW', active: 'ACTIVE', committed: 'COMMITTED' };

/** As containerd's toKind: VIEW and ACTIVE are themselves, anything else is committed. */
function kindFromPb(k: PbKind | undefined): Kind {
  if (k === 'VIEW') return 'view';
  if (k === 'ACTIVE') return 'active';
  return 'committed';
}

function timestampFromDate(d: Date): PbTimestamp {
  const ms = d.getTime();
  if (!Number.isFinite(ms)) return { seconds: 0, nanos: 0 };
  const seconds = Math.floor(ms / 1000);
  return { seconds, nanos: (ms - seconds * 1000) * 1e6 };
}

function dateFromTimestamp(t: PbTimestamp | null | undefined): Date {
  if (t === null || t === undefined) return new Date(0);
  return new Date(Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6));
}

function infoToPb(info: Info): PbInfo {
  return {
    name: info.name,
    parent: info.parent,
    kind: KIND_TO_PB[info.kind],
    created_at: timestampFromDate(info.created),
    updated_at: timestampFromDate(info.updated),
    labels: { ...info.labels },
  };
}

function infoFromPb(pb: PbInfo | null): Info {
  return {
    name: pb?.name ?? '',
    parent: pb?.parent ?? '',
    kind: kindFromPb(pb?.kind),
    labels: { ...(pb?.labels ?? {}) },
    created: dateFromTimestamp(pb?.created_at),
    updated: dateFromTimestamp(pb?.updated_at),
  };
}

function mountsToPb(mounts: Mount[]): MountsResponse {
  return {
    mounts: mounts.map((m) => ({
      type: m.type,
      source: m.source,
      target: m.target ?? '',
      options: [...m.options],
    })),
  };
}

// ---- Errors ----

/** What a handler answers a failed call with: grpc-js turns `code` and `details` into the status. */
export type GrpcStatusError = grpc.ServerErrorResponse & { code: grpc.status; details: string };

/**
 * NydusError codes to the status codes containerd's errdefs.FromGRPC maps back to its classes
 * (errdefs.IsNotFound, IsAlreadyExists...: the snapshot and unpack logic branches on them).
 * ERR_AUTH is PermissionDenied: containerd 2.x reads it as errdefs.ErrPermissionDenied, 1.6
 * as an unknown error; either way the message reaches the user ("<message>: permission denied"
 * or "<message>: unknown").
 */
const CODE_TO_STATUS: Partial<Record<ErrorCode, grpc.status>> = {
  ERR_NOT_FOUND: grpc.status.NOT_FOUND,
  ERR_ALREADY_EXISTS: grpc.status.ALREADY_EXISTS,
  ERR_FAILED_PRECONDITION: grpc.status.FAILED_PRECONDITION,
  ERR_INVALID_ARG: grpc.status.INVALID_ARGUMENT,
  ERR_UNSUPPORTED: grpc.status.UNIMPLEMENTED,
  ERR_AUTH: grpc.status.PERMISSION_DENIED,
};

/**
 * A thrown value as the gRPC error a handler answers with: NydusErrors by their code (see
 * CODE_TO_STATUS), anything else UNKNOWN; the details are the error's message.
 */
export function toGrpcError(e: unknown): GrpcStatusError {
  const message = errorText(e);
  const code = (isNydusError(e) ? CODE_TO_STATUS[e.code] : undefined) ?? grpc.status.UNKNOWN;
  return Object.assign(new Error(message), { code, details: message, metadata: new grpc.Metadata() });
}

/**
 * Logs a failed call: expected outcomes (not found, exists...) at debug, other NydusErrors at
 * warn, anything else (a bug) at error with its stack.
 */
function logFailure(log: Logger, what: string, e: unknown, ms: string): void {
  if (!isNydusError(e)) {
    const stack = e instanceof Error && e.stack !== undefined ? e.stack : String(e);
    log.error(`${what} failed after ${ms} ms with an unexpected error: ${stack}`);
  } else if (CODE_TO_STATUS[e.code] !== undefined) {
    log.debug(`${what} failed after ${ms} ms: ${e.code}: ${e.message}`);
  } else {
    log.warn(`${what} failed after ${ms} ms: ${e.code}: ${e.message}`);
  }
}

function elapsed(start: number): string {
  return (performance.now() - start).toFixed(2);
}

/** A unary handler around `fn`: timing, debug log, error mapping; never throws into grpc-js. */
function unary<Req, Res>(
  log: Logger,
  method: string,
  describe: (req: Req) => string,
  fn: (req: Req) => Promise<Res>,
): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    const start = performance.now();
    let what = `Snapshots.${method}`;
    void (async () => {
      try {
        const args = describe(call.request);
        if (args !== '') what = `${what} ${args}`;
        const res = await fn(call.request);
        log.debug(`${what} done in ${elapsed(start)} ms`);
        callback(null, res);
      } catch (e) {
        logFailure(log, what, e, elapsed(start));
        callback(toGrpcError(e));
      }
    })();
  };
}

/** Thrown inside walk's callback to stop it when the client went away. */
class ListCancelled extends Error {}

function q(s: string): string {
  return JSON.stringify(s);
}

/** Adds containerd's Snapshots service backed by sn. */
export function addSnapshotsService(server: grpc.Server, sn: Snapshotter, log: Logger): void {
  const pkg = loadProto('containerd/services/snapshots/v1/snapshots.proto');
  const v1 = (
    ((pkg['containerd'] as grpc.GrpcObject)['services'] as grpc.GrpcObject)['snapshots'] as grpc.GrpcObject
  )['v1'] as grpc.GrpcObject;
  const service = (v1['Snapshots'] as grpc.ServiceClientConstructor).service;

  const keyOnly = (r: KeyRequest): string => `key=${q(r.key)}`;
  const create = (r: CreateRequest): string => `key=${q(r.key)} parent=${q(r.parent)}`;

  const list: grpc.handleServerStreamingCall<ListRequest, { info: PbInfo[] }> = (call) => {
    const start = performance.now();
    const filters = call.request.filters ?? [];
    const what = `Snapshots.List filters=${JSON.stringify(filters)}`;
    let batch: PbInfo[] = [];
    let sent = 0;
    const gone = (): boolean => call.cancelled || call.destroyed;
    const send = async (): Promise<void> => {
      if (gone()) throw new ListCancelled();
      const msg = { info: batch };
      sent += batch.length;
      batch = [];
      if (call.write(msg)) return;
      // Back-pressure: wait until the client reads, or goes away.
      await new Promise<void>((res) => {
        const done = (): void => {
          call.off('drain', done);
          call.off('cancelled', done);
          call.off('close', done);
          res();
        };
        call.on('drain', done);
        call.on('cancelled', done);
        call.on('close', done);
      });
    };
    void (async () => {
      try {
        await sn.walk(async (info) => {
          batch.push(infoToPb(info));
          if (batch.length >= LIST_BATCH) await send();
        }, filters);
        if (batch.length > 0) await send();
        log.debug(`${what} done in ${elapsed(start)} ms: ${sent} snapshots`);
        call.end();
      } catch (e) {
        if (e instanceof ListCancelled || gone()) {
          log.debug(`${what} cancelled by the client after ${elapsed(start)} ms`);
          return;
        }
        logFailure(log, what, e, elapsed(start));
        call.emit('error', toGrpcError(e));
      }
    })();
  };

  const impl: grpc.UntypedServiceImplementation = {
    Prepare: unary<CreateRequest, MountsResponse>(log, 'Prepare', create, async (r) =>
      mountsToPb(await sn.prepare(r.key, r.parent, r.labels ?? {})),
    ),
    View: unary<CreateRequest, MountsResponse>(log, 'View', create, async (r) =>
      mountsToPb(await sn.view(r.key, r.parent, r.labels ?? {})),
    ),
    Mounts: unary<KeyRequest, MountsResponse>(log, 'Mounts', keyOnly, async (r) =>
      mountsToPb(await sn.mounts(r.key)),
    ),
    Commit: unary<CommitRequest, Empty>(
      log,
      'Commit',
      (r) => `name=${q(r.name)} key=${q(r.key)}`,
      async (r) => {
        await sn.commit(r.name, r.key, r.labels ?? {});
        return {};
      },
    ),
    Remove: unary<KeyRequest, Empty>(log, 'Remove', keyOnly, async (r) => {
      await sn.remove(r.key);
      return {};
    }),
    Stat: unary<KeyRequest, InfoResponse>(log, 'Stat', keyOnly, async (r) => ({
      info: infoToPb(await sn.stat(r.key)),
    })),
    Update: unary<UpdateRequest, InfoResponse>(
      log,
      'Update',
      (r) => `key=${q(r.info?.name ?? '')} paths=${JSON.stringify(r.update_mask?.paths ?? [])}`,
      async (r) => {
        if (r.info === null || r.info === undefined) {
          throw new NydusError('ERR_INVALID_ARG', 'Update request without info');
        }
        return { info: infoToPb(await sn.update(infoFromPb(r.info), [...(r.update_mask?.paths ?? [])])) };
      },
    ),
    List: list,
    Usage: unary<KeyRequest, UsageResponse>(log, 'Usage', keyOnly, async (r) => {
      const u = await sn.usage(r.key);
      return { size: u.size, inodes: u.inodes };
    }),
    Cleanup: unary<{ snapshotter: string }, Empty>(
      log,
      'Cleanup',
      () => '',
      async () => {
        await sn.cleanup();
        return {};
      },
    ),
  };
  server.addService(service, impl);
}

function bind(server: grpc.Server, path: string): Promise<void> {
  return new Promise((res, rej) => {
    server.bindAsync(`unix:${path}`, grpc.ServerCredentials.createInsecure(), (err) => {
      if (err !== null) rej(err);
      else res();
    });
  });
}

function shutdown(server: grpc.Server): Promise<void> {
  return new Promise((res) => {
    const timer = setTimeout(() => {
      server.forceShutdown();
      res();
    }, SHUTDOWN_GRACE_MS);
    server.tryShutdown(() => {
      clearTimeout(timer);
      res();
    });
  });
}

function isSocketAt(path: string): boolean {
  try {
    return lstatSync(path).isSocket();
  } catch {
    return false;
  }
}

/**
 * Binds a unix socket: a stale socket file is removed, a non-socket file is ERR_INVALID_ARG,
 * parent dirs are created (0o700 for new ones), then chown to uid/gid when given, chmod 0o660.
 */
export async function listenUnix(
  server: grpc.Server,
  path: string,
  opts: { uid?: number; gid?: number } = {},
): Promise<GrpcServer> {
  const abs = resolve(path);
  if (Buffer.byteLength(abs) > MAX_SOCKET_PATH) {
    throw new NydusError(
      'ERR_INVALID_ARG',
      `Socket path "${abs}" is ${Buffer.byteLength(abs)} bytes, longer than the ${MAX_SOCKET_PATH}-byte limit`,
    );
  }
  try {
    // New directories only get 0o700 (umask can only take bits away); existing ones are kept.
    mkdirSync(dirname(abs), { recursive: true, mode: 0o700 });
  } catch (e) {
    throw new NydusError('ERR_IO', `Cannot create the directory of socket "${abs}": ${errorText(e)}`, {
      cause: e,
    });
  }
  let st;
  try {
    st = lstatSync(abs);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new NydusError('ERR_IO', `Cannot check socket path "${abs}": ${errorText(e)}`, { cause: e });
    }
  }
  if (st !== undefined) {
    if (!st.isSocket()) {
      throw new NydusError('ERR_INVALID_ARG', `Socket path "${abs}" exists and is not a socket`);
    }
    rmSync(abs, { force: true });
  }
  try {
    await bind(server, abs);
  } catch (e) {
    throw new NydusError('ERR_IO', `Cannot listen on "${abs}": ${errorText(e)}`, { cause: e });
  }
  try {
    if (opts.uid !== undefined || opts.gid !== undefined) chownSync(abs, opts.uid ?? -1, opts.gid ?? -1);
    chmodSync(abs, 0o660);
  } catch (e) {
    server.forceShutdown();
    rmSync(abs, { force: true });
    throw new NydusError('ERR_IO', `Cannot set owner and mode of socket "${abs}": ${errorText(e)}`, {
      cause: e,
    });
  }
  let closing: Promise<void> | undefined;
  return {
    address: abs,
    server,
    close(): Promise<void> {
      closing ??= shutdown(server).then(() => {
        if (isSocketAt(abs)) rmSync(abs, { force: true });
      });
      return closing;
    },
  };
}
