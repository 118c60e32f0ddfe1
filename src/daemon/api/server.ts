import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect } from 'node:net';
import { lstat, readFile, stat, unlink } from 'node:fs/promises';
import type { Duplex } from 'node:stream';
import { NydusError, errorText } from '../../errors/errors.js';
import type { Logger } from '../../log/logger.js';
import {
  BodyError,
  MAX_BODY_BYTES,
  asObject,
  configLooksInline,
  jsonText,
  legacyMountFrom,
  mountRequestFrom,
  parseJson,
  readBody,
  requiredString,
  stringMap,
} from './body.js';
import { ApiError, type DaemonControl, type MetricsKind, type MountRequest } from './control.js';

/**
 * The nydusd HTTP API on a unix socket (docs/upstream-surface.md section 3): upstream's routes,
 * status codes, headers and error bodies. The server only parses requests and renders answers;
 * the work is done by a DaemonControl.
 *
 * Error messages follow upstream's: the route's error kind wrapping the cause, as in
 * `Mount(<cause>)` or `Pattern(Metrics(Stats(NoCounter)))`; clients match substrings of them.
 */

export const API_SERVER_NAME = 'Nydus API';

export interface ApiServer {
  /** The socket path the server listens on. */
  readonly path: string;
  /** Stop listening, drop open connections and remove the socket file. */
  close(): Promise<void>;
}

/** A finished answer: status and JSON text (none for 204). */
interface Reply {
  status: number;
  body?: string;
  /** Work to do once the answer is written (daemon exit). */
  after?: () => unknown;
}

/** A request the API refuses before the daemon sees it, or a daemon error already rendered. */
class HttpFailure extends Error {
  readonly status: number;

  constructor(status: number, message: string) {
    super(message);
    this.name = 'HttpFailure';
    this.status = status;
  }
}

const badRequest = (): HttpFailure => new HttpFailure(400, 'BadRequest');
const queryMissing = (key: string): HttpFailure =>
  new HttpFailure(400, `QueryString(${JSON.stringify(`'${key}' should be specified in query string`)})`);
const parseBodyFailure = (e: BodyError): HttpFailure =>
  new HttpFailure(400, `ParseBody(Error(${JSON.stringify(e.message)}))`);

interface Request {
  method: string;
  query: URLSearchParams;
  body: Buffer | undefined;
}

type Handler = (req: Request) => Promise<Reply>;

const ok = (value: unknown): Reply => ({ status: 200, body: jsonText(value) });
const noContent = (): Reply => ({ status: 204 });

/** Upstream's `extract_query_part`: the first value of a query parameter. */
function queryPart(req: Request, key: string): string | undefined {
  return req.query.get(key) ?? undefined;
}

function requireQuery(req: Request, key: string): string {
  const v = queryPart(req, key);
  if (v === undefined) throw queryMissing(key);
  return v;
}

/** Parse the body as JSON; a parse failure is a 400 `ParseBody`. */
function bodyJson(body: Buffer, repair = false): unknown {
  try {
    return parseJson(body, repair);
  } catch (e) {
    if (e instanceof BodyError) throw parseBodyFailure(e);
    throw e;
  }
}

/** Run a conversion of a parsed body; its BodyError is a 400 `ParseBody`. */
function fromBody<T>(convert: () => T): T {
  try {
    return convert();
  } catch (e) {
    if (e instanceof BodyError) throw parseBodyFailure(e);
    throw e;
  }
}

/** An ApiError, also one from another copy of control.js (matched by name and status). */
function isApiError(e: unknown): e is ApiError {
  if (e instanceof ApiError) return true;
  if (!(e instanceof Error) || e.name !== 'ApiError') return false;
  const status = (e as { status?: unknown }).status;
  return typeof status === 'number' && Number.isInteger(status) && status >= 400 && status <= 599;
}

/**
 * Call the daemon. Its ApiError keeps its status, anything else is a 500; the message is the
 * route's error kind around the cause. `metrics` marks metric routes, whose missing-instance
 * error reads as upstream's `Metrics(Stats(NoCounter))`.
 */
async function daemon<T>(kind: string, call: () => T | Promise<T>, metrics = false): Promise<T> {
  try {
    return await call();
  } catch (e) {
    if (e instanceof HttpFailure) throw e;
    let status = 500;
    let cause = errorText(e);
    if (isApiError(e)) {
      status = e.status;
      // Upstream's only "not found" of the metrics is this one; clients match its text.
      if (metrics && status === 404) cause = 'Metrics(Stats(NoCounter))';
    }
    throw new HttpFailure(status, `${kind}(${cause})`);
  }
}

/** A config given by the legacy mount body: the text itself, or the path of a file to read. */
async function legacyConfigText(config: string): Promise<string> {
  if (configLooksInline(config)) return config;
  try {
    const st = await stat(config);
    if (!st.isFile()) throw new Error('not a regular file');
    if (st.size > MAX_BODY_BYTES) throw new Error(`larger than ${MAX_BODY_BYTES} bytes`);
    return await readFile(config, 'utf8');
  } catch (e) {
    throw new HttpFailure(
      400,
      `Mount(failed to read config file ${JSON.stringify(config)}: ${errorText(e)})`,
    );
  }
}

function routes(control: DaemonControl): Map<string, Handler> {
  const r = new Map<string, Handler>();

  const daemonInfo = async (req: Request, withFs: boolean): Promise<Reply> => {
    if (req.method === 'GET' && req.body === undefined) {
      const info = await daemon('DaemonInfo', () => control.daemonInfo());
      if (withFs) return ok(info);
      const v2 = { ...info };
      delete v2['backend_collection'];
      return ok(v2);
    }
    if (req.method === 'PUT' && req.body !== undefined) {
      const conf = bodyJson(req.body);
      const level = fromBody(() => requiredString(asObject(conf, 'struct DaemonConf'), 'log_level'));
      await daemon('Configure', () => control.setLogLevel(level));
      return noContent();
    }
    throw badRequest();
  };

  /** A route answering one method without a body. */
  const simple = (method: string, handle: (req: Request) => Promise<Reply>): Handler => {
    return (req) => {
      if (req.method !== method || req.body !== undefined) throw badRequest();
      return handle(req);
    };
  };

  const metric = (kind: MetricsKind, errKind: string): Handler =>
    simple('GET', async (req) => {
      const id = queryPart(req, 'id');
      const latest = kind === 'files' && queryPart(req, 'latest') === 'true';
      return ok(await daemon(errKind, () => control.metrics(kind, id, latest), true));
    });

  // API v1
  r.set('/api/v1/daemon', (req) => daemonInfo(req, true));
  r.set(
    '/api/v1/daemon/events',
    simple('GET', async () => ok(await daemon('Events', () => control.events()))),
  );
  r.set(
    '/api/v1/daemon/memory',
    simple('GET', async () => {
      const memory = control.memory?.bind(control);
      if (memory === undefined) throw new HttpFailure(501, 'Memory(Unsupported)');
      return ok(await daemon('Memory', memory));
    }),
  );
  r.set(
    '/api/v1/daemon/backend',
    simple('GET', async (req) => {
      const mountpoint = requireQuery(req, 'mountpoint');
      return ok(await daemon('FsBackendInfo', () => control.backendInfo(mountpoint)));
    }),
  );
  r.set(
    '/api/v1/daemon/start',
    simple('PUT', async () => {
      await daemon('Configure', () => control.start());
      return noContent();
    }),
  );
  r.set(
    '/api/v1/daemon/exit',
    simple('PUT', () => Promise.resolve({ status: 204, after: () => control.exit() })),
  );
  // Failover: answered once the transfer with the supervisor is done (or failed).
  const upgrade = (call: (() => Promise<void>) | undefined): Handler =>
    simple('PUT', async () => {
      if (call === undefined) throw new HttpFailure(501, 'Upgrade(DaemonAbnormal(Unsupported))');
      await daemon('Upgrade', call);
      return noContent();
    });
  r.set('/api/v1/daemon/fuse/sendfd', upgrade(control.sendFd?.bind(control)));
  r.set('/api/v1/daemon/fuse/takeover', upgrade(control.takeover?.bind(control)));

  r.set('/api/v1/mount', async (req) => {
    const mountpoint = queryPart(req, 'mountpoint');
    if (mountpoint === undefined) {
      // The legacy form: PUT (or POST) with the mountpoint and a config file path in the body.
      const raw = req.body;
      if ((req.method === 'PUT' || req.method === 'POST') && raw !== undefined) {
        const body = bodyJson(raw, true);
        const legacy = fromBody(() => legacyMountFrom(asObject(body, 'struct ApiMountCmd')));
        if (legacy !== undefined) {
          const config = await legacyConfigText(legacy.req.config);
          const mreq: MountRequest = { ...legacy.req, config };
          await daemon('Mount', () => control.mount(legacy.mountpoint, mreq));
          return noContent();
        }
      }
      throw queryMissing('mountpoint');
    }
    if ((req.method === 'POST' || req.method === 'PUT') && req.body !== undefined) {
      const body = bodyJson(req.body, true);
      const mreq = fromBody(() => mountRequestFrom(asObject(body, 'struct ApiMountCmd')));
      if (req.method === 'POST') await daemon('Mount', () => control.mount(mountpoint, mreq));
      else await daemon('Mount', () => control.remount(mountpoint, mreq));
      return noContent();
    }
    if (req.method === 'DELETE' && req.body === undefined) {
      await daemon('Mount', () => control.umount(mountpoint));
      return noContent();
    }
    throw badRequest();
  });

  r.set('/api/v1/metrics', metric('fs', 'GlobalMetrics'));
  r.set('/api/v1/metrics/files', metric('files', 'FsFilesMetrics'));
  r.set('/api/v1/metrics/pattern', metric('pattern', 'Pattern'));
  r.set('/api/v1/metrics/backend', metric('backend', 'BackendMetrics'));
  r.set('/api/v1/metrics/blobcache', metric('blobcache', 'BlobcacheMetrics'));
  r.set(
    '/api/v1/metrics/inflight',
    simple('GET', async () => {
      const ops = await daemon('InflightMetrics', () => control.inflight(), true);
      return ops.length === 0 ? noContent() : ok(ops);
    }),
  );

  r.set('/api/v1/config', async (req) => {
    const id = queryPart(req, 'id') ?? '';
    if (req.method === 'GET' && req.body === undefined) {
      return ok(await daemon('Configure', () => control.getConfig(id)));
    }
    if (req.method === 'PUT' && req.body !== undefined) {
      const body = bodyJson(req.body);
      const values = fromBody(() => stringMap(body));
      await daemon('Configure', () => control.setConfig(id, values));
      return noContent();
    }
    throw badRequest();
  });

  // API v2
  r.set('/api/v2/daemon', (req) => daemonInfo(req, false));
  r.set('/api/v2/blobs', (req) => {
    // There is no blob-cache manager: well-formed requests are answered "unsupported" (501).
    const unsupported = (kind: string): Promise<Reply> =>
      Promise.reject(new HttpFailure(501, `${kind}(DaemonAbnormal(Unsupported))`));
    if (req.method === 'GET' && req.body === undefined) {
      if (queryPart(req, 'domain_id') !== undefined) return unsupported('GetBlobObjects');
    } else if (req.method === 'PUT' && req.body !== undefined) {
      const body = bodyJson(req.body);
      fromBody(() => asObject(body, 'struct BlobCacheEntry'));
      return unsupported('CreateBlobObject');
    } else if (req.method === 'DELETE' && req.body === undefined) {
      if (queryPart(req, 'domain_id') !== undefined) return unsupported('DeleteBlobObject');
      if (queryPart(req, 'blob_id') !== undefined) return unsupported('DeleteBlobFile');
    }
    throw badRequest();
  });

  return r;
}

function errorBody(message: string): string {
  return jsonText({ code: 'UNDEFINED', message });
}

function send(res: ServerResponse, reply: Reply, close = false): void {
  if (res.headersSent || res.destroyed) return;
  res.statusCode = reply.status;
  res.setHeader('Server', API_SERVER_NAME);
  res.setHeader('Content-Type', 'application/json');
  if (close) res.setHeader('Connection', 'close');
  if (reply.body !== undefined && reply.status !== 204) {
    const bytes = Buffer.from(reply.body, 'utf8');
    res.setHeader('Content-Length', bytes.length);
    res.end(bytes);
  } else {
    res.end();
  }
}

/** Answer to a request Node's HTTP parser refused (malformed, headers too large). */
function clientErrorReply(socket: Duplex): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const body = errorBody('BadRequest');
  socket.end(
    'HTTP/1.1 400 Bad Request\r\n' +
      `Server: ${API_SERVER_NAME}\r\n` +
      'Content-Type: application/json\r\n' +
      `Content-Length: ${Buffer.byteLength(body)}\r\n` +
      'Connection: close\r\n\r\n' +
      body,
  );
}

/** Whether something accepts connections on a unix socket path. */
function socketIsLive(path: string, timeoutMs = 2000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ path });
    const done = (live: boolean): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(live);
    };
    // No answer in time: someone holds the socket but is busy; treat it as live.
    const timer = setTimeout(() => done(true), timeoutMs);
    s.once('connect', () => done(true));
    s.once('error', (e: NodeJS.ErrnoException) => done(e.code === 'EAGAIN'));
  });
}

/** Remove a stale socket file; refuse a path that is something else or that a live process serves. */
async function clearSocketPath(path: string): Promise<void> {
  let st;
  try {
    st = await lstat(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new NydusError('ERR_IO', `Cannot check API socket path "${path}": ${errorText(e)}`);
  }
  if (!st.isSocket()) {
    throw new NydusError('ERR_INVALID_ARG', `API socket path "${path}" exists and is not a socket`);
  }
  if (await socketIsLive(path)) {
    throw new NydusError('ERR_INVALID_ARG', `API socket "${path}" is in use by another live process`);
  }
  try {
    await unlink(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT')
      throw new NydusError('ERR_IO', `Cannot remove stale API socket "${path}": ${errorText(e)}`);
  }
}

/**
 * Start the API server on `sockPath`. A stale socket file there is removed first; a path that is
 * not a socket, or a socket some live process listens on, is refused. The socket file is
 * removed again by `close()`.
 */
export async function startApiServer(
  sockPath: string,
  control: DaemonControl,
  logger: Logger,
): Promise<ApiServer> {
  await clearSocketPath(sockPath);
  const table = routes(control);

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const begin = process.hrtime.bigint();
    const method = req.method ?? 'GET';
    logger.debug(`<--- ${method} ${req.url ?? ''}`);
    let reply: Reply;
    let close = false;
    try {
      const body = await readBody(req);
      if (body.kind === 'too-large') {
        close = true;
        if (!body.drained) res.once('finish', () => req.socket.destroy());
        throw new HttpFailure(400, `BadRequest(request body larger than ${MAX_BODY_BYTES} bytes)`);
      }
      let url: URL;
      try {
        url = new URL(req.url ?? '/', 'http://localhost');
      } catch {
        throw badRequest();
      }
      const handler = table.get(url.pathname);
      if (handler === undefined) throw new HttpFailure(404, 'NoRoute');
      reply = await handler({ method, query: url.searchParams, body: body.body });
    } catch (e) {
      if (e instanceof HttpFailure) {
        reply = { status: e.status, body: errorBody(e.message) };
      } else {
        reply = { status: 500, body: errorBody(errorText(e)) };
      }
      if (reply.status >= 500)
        logger.warn(`API ${method} ${req.url ?? ''}: ${e instanceof Error ? e.message : ''}`);
    }
    const after = reply.after;
    if (after !== undefined) {
      // 'close' follows 'finish' once the answer is written, and comes too if the client left.
      res.once('close', () => {
        const failed = (e: unknown): void => logger.error(`API ${method} ${req.url ?? ''}: ${errorText(e)}`);
        try {
          // exit() is typed void, but an async implementation must not leave a rejection unhandled.
          const r: unknown = after();
          if (r instanceof Promise) r.catch(failed);
        } catch (e) {
          failed(e);
        }
      });
    }
    send(res, reply, close);
    const ms = Number(process.hrtime.bigint() - begin) / 1e6;
    logger.debug(
      `---> ${method} Status Code: ${reply.status}, Elapse: ${ms.toFixed(3)}ms, Body Size: ${reply.body?.length ?? 0}`,
    );
  };

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((e: unknown) => {
      // Only a bug gets here; keep serving.
      logger.error(`API request failed: ${errorText(e)}`);
      send(res, { status: 500, body: errorBody(errorText(e)) }, true);
    });
  });
  server.on('clientError', (_err, socket) => clientErrorReply(socket));

  await new Promise<void>((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException): void => {
      reject(
        new NydusError('ERR_IO', `Cannot listen on API socket "${sockPath}": ${e.message}`, { cause: e }),
      );
    };
    server.once('error', onError);
    server.listen(sockPath, () => {
      server.off('error', onError);
      resolve();
    });
  });
  server.on('error', (e) => logger.error(`API server: ${errorText(e)}`));
  const ino = (await lstat(sockPath)).ino;
  logger.info(`http server started on ${sockPath}`);

  let closing: Promise<void> | undefined;
  return {
    path: sockPath,
    close(): Promise<void> {
      closing ??= (async () => {
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        });
        try {
          // Only our own socket: a successor may already have bound the path again.
          const st = await lstat(sockPath);
          if (st.ino === ino && st.isSocket()) await unlink(sockPath);
        } catch {
          // already gone
        }
        logger.info('http server stopped');
      })();
      return closing;
    },
  };
}
