import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { chmodSync, chownSync, lstatSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { NydusError, errorText } from '../errors/errors.js';
import type { Logger } from '../log/logger.js';
import type { DaemonManager } from './daemons.js';
import { procStatus } from './metrics.js';
import { backendOf, type JsonObject } from './nydusd-config.js';

/**
 * The system controller (upstream-surface §7.10): an HTTP API on a unix socket that lists the
 * daemons and their images, takes prefetch lists for images, and shows a daemon's backend.
 * Errors are `{"code":"Unknown","message":...}` as upstream's.
 */

export interface SystemOptions {
  address: string;
  uid: number;
  gid: number;
  daemons: DaemonManager;
  /** Prefetch lists by image reference (PUT /api/v1/prefetch), used by the next nydusd start. */
  prefetch: Map<string, string>;
  /** Hot upgrade of every daemon to another nydusd binary (PUT /api/v1/daemons/upgrade). */
  upgrade?: (nydusdPath: string) => Promise<void>;
  log: Logger;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

async function body(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > 1 << 20) throw new HttpError(413, 'request body larger than 1 MiB');
    chunks.push(c as Buffer);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new HttpError(400, `request body is not JSON: ${errorText(e)}`);
  }
}

export class SystemController {
  readonly #o: SystemOptions;
  readonly #server: Server;

  private constructor(o: SystemOptions) {
    this.#o = o;
    this.#server = createServer((req, res) => {
      this.handle(req, res).catch((e: unknown) => {
        const status = e instanceof HttpError ? e.status : 500;
        this.send(res, status, { code: 'Unknown', message: errorText(e) });
      });
    });
  }

  static async start(o: SystemOptions): Promise<SystemController> {
    mkdirSync(dirname(o.address), { recursive: true, mode: 0o700 });
    try {
      if (!lstatSync(o.address).isSocket()) {
        throw new NydusError(
          'ERR_INVALID_ARG',
          `System controller address "${o.address}" exists and is not a socket`,
        );
      }
      rmSync(o.address);
    } catch (e) {
      if (e instanceof NydusError) throw e;
    }
    const c = new SystemController(o);
    await new Promise<void>((resolve, reject) => {
      c.#server.once('error', (e) =>
        reject(
          new NydusError(
            'ERR_IO',
            `Cannot listen on the system controller socket "${o.address}": ${e.message}`,
          ),
        ),
      );
      c.#server.listen(o.address, () => resolve());
    });
    chmodSync(o.address, 0o660);
    if (o.uid > 0 || o.gid > 0) chownSync(o.address, o.uid, o.gid);
    o.log.info(`System controller listening on ${o.address}`);
    return c;
  }

  private send(res: ServerResponse, status: number, v: unknown): void {
    const text = v === undefined ? '' : JSON.stringify(v);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const path = url.pathname;
    const d = this.#o.daemons;
    if (req.method === 'GET' && path === '/api/v1/daemons') {
      const instances = d.instances();
      const out = d.daemons().map((rec) => ({
        id: rec.id,
        pid: rec.pid,
        api_socket: rec.apiSock,
        supervisor_path: rec.supervisor ?? '',
        reference: instances.find((i) => i.daemonId === rec.id)?.imageRef ?? '',
        mountpoint: rec.mountpoint,
        startup_cpu_utilization: 0,
        memory_rss_kb: procStatus(rec.pid, 'VmRSS'),
        read_data_kb: 0,
        instances: Object.fromEntries(
          instances
            .filter((i) => i.daemonId === rec.id)
            .map((i) => [
              i.snapshotId,
              {
                snapshot_id: i.snapshotId,
                snapshot_dir: dirname(i.bootstrap),
                mountpoint: i.mountpoint,
                image_id: i.imageRef,
              },
            ]),
        ),
      }));
      return this.send(res, 200, out);
    }
    if (req.method === 'GET' && path === '/api/v1/daemons/records') {
      throw new HttpError(501, 'not implemented');
    }
    const backend = /^\/api\/v1\/daemons\/([^/]+)\/backend$/.exec(path);
    if (req.method === 'GET' && backend !== null) {
      const id = decodeURIComponent(backend[1]!);
      const inst = d.instances().find((i) => i.daemonId === id);
      if (inst === undefined) throw new HttpError(404, `daemon "${id}" not found or serving no image`);
      const cfg = JSON.parse(readFileSync(inst.configPath, 'utf8')) as JsonObject;
      return this.send(res, 200, backendOf(cfg));
    }
    if (req.method === 'PUT' && path === '/api/v1/prefetch') {
      const list = await body(req);
      if (!Array.isArray(list)) throw new HttpError(400, 'expected a JSON array of {"image","prefetch"}');
      for (const item of list) {
        const image = (item as { image?: unknown }).image;
        const files = (item as { prefetch?: unknown }).prefetch;
        if (typeof image !== 'string' || typeof files !== 'string') {
          throw new HttpError(400, 'every entry needs "image" and "prefetch" strings');
        }
        this.#o.prefetch.set(image, files);
      }
      return this.send(res, 200, undefined);
    }
    if (req.method === 'PUT' && path === '/api/v1/daemons/upgrade') {
      const b = (await body(req)) as { nydusd_path?: unknown };
      if (typeof b.nydusd_path !== 'string' || b.nydusd_path === '')
        throw new HttpError(400, 'body needs "nydusd_path"');
      if (this.#o.upgrade === undefined)
        throw new HttpError(501, 'hot upgrade needs recover_policy = "failover"');
      await this.#o.upgrade(b.nydusd_path);
      return this.send(res, 200, undefined);
    }
    throw new HttpError(404, `no route ${req.method ?? ''} ${path}`);
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
      rmSync(this.#o.address, { force: true });
    });
  }
}
