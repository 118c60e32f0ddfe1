import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { Agent, request } from 'undici';
import { prng } from './prng.js';

/**
 * A programmable fault proxy for tests: an HTTP server on 127.0.0.1 relaying every request to one
 * upstream (`http://127.0.0.1:PORT`), which answers the requests it selects wrongly on purpose.
 * The fault is switched at run time (`set`), and counters tell what it saw and did.
 *
 * Faults act on the response the upstream gave (read whole, then written back with its full
 * Content-Length), or replace it:
 * - `reset`: part of the body, then a TCP reset (RST);
 * - `stall`: part of the body, then no byte for `ms`, then the rest (a client with a shorter
 *   body timeout gives up first);
 * - `status`: `status` (503 for a 5xx burst, 429 with Retry-After) instead of asking the upstream;
 * - `truncate`: part of the body, then a clean close although Content-Length promised more;
 * - `trickle`: the body at `bytesPerSecond`;
 * - `flip`: the body with one byte flipped (bit 0 of the byte at `at`, default the middle).
 *
 * Which requests: those `match` accepts (default: GET), each with probability `rate` (default
 * 1; a seeded PRNG, so runs repeat), until `count` were hit (default: no limit). A response
 * with no body is passed on as it is by body faults.
 */

export type FaultKind = 'reset' | 'stall' | 'status' | 'truncate' | 'trickle' | 'flip';

interface FaultCommon {
  /** Fraction of the matching requests hit, 0..1 (default 1). */
  rate?: number;
  /** Stop after this many hits (default: no limit); `set` starts counting again. */
  count?: number;
}

export type Fault = FaultCommon &
  (
    | { kind: 'reset'; /** Body bytes sent before the reset (default half). */ afterBytes?: number }
    | {
        kind: 'stall';
        ms: number;
        /** Body bytes sent before the stall (default half). */ afterBytes?: number;
      }
    | {
        kind: 'status';
        status: number;
        /** Retry-After seconds sent with a 429 or 503. */ retryAfter?: number;
      }
    | { kind: 'truncate'; /** Body bytes sent before the close (default half). */ afterBytes?: number }
    | { kind: 'trickle'; bytesPerSecond: number }
    | { kind: 'flip'; /** Body offset of the flipped byte (default the middle). */ at?: number }
  );

export interface FaultCounters {
  /** Requests received. */
  requests: number;
  /** Requests `match` accepted. */
  matched: number;
  /** Requests a fault was applied to. */
  injected: number;
  /** Hits by fault kind (over the proxy's life). */
  byKind: Record<FaultKind, number>;
  /** Requests the upstream did not answer (relayed as 502). */
  upstreamErrors: number;
  /** Body bytes written to clients. */
  bytesOut: number;
}

export interface FaultProxyOptions {
  /** `http://127.0.0.1:PORT` of the server behind. */
  upstream: string;
  /** Requests faults may apply to (default: GET). */
  match?: (method: string, path: string) => boolean;
  /** Seed of the request selection (default 1). */
  seed?: number;
}

export interface FaultProxy {
  /** `127.0.0.1:PORT`: what a backend config names instead of the upstream. */
  readonly host: string;
  readonly url: string;
  readonly port: number;
  /** The fault now in force (undefined: relay faithfully). */
  readonly fault: Fault | undefined;
  /** Switch the fault (undefined: none); the `count` of the new one starts at 0. */
  set(fault: Fault | undefined): void;
  readonly counters: FaultCounters;
  resetCounters(): void;
  /** Close the server and every connection to it. */
  close(): Promise<void>;
}

/** Headers that belong to one connection, not to the message. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'content-length',
]);

function zeroCounters(): FaultCounters {
  return {
    requests: 0,
    matched: 0,
    injected: 0,
    byKind: { reset: 0, stall: 0, status: 0, truncate: 0, trickle: 0, flip: 0 },
    upstreamErrors: 0,
    bytesOut: 0,
  };
}

/** Write `data` and wait until it is handed to the socket (false: the client went away). */
function writeAll(res: ServerResponse, data: Buffer): Promise<boolean> {
  if (data.length === 0) return Promise.resolve(!res.destroyed);
  return new Promise((resolve) => {
    if (res.destroyed) {
      resolve(false);
      return;
    }
    res.write(data, (err) => resolve(err == null && !res.destroyed));
  });
}

/** Wait `ms`, or less when the response is closed meanwhile. */
function pause(res: ServerResponse, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      res.off('close', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    res.once('close', done);
  });
}

export async function startFaultProxy(o: FaultProxyOptions): Promise<FaultProxy> {
  const upstream = new URL(o.upstream);
  const agent = new Agent({ connections: 64, headersTimeout: 120_000, bodyTimeout: 120_000 });
  const match = o.match ?? ((method: string) => method === 'GET');
  const rnd = prng(o.seed ?? 1);
  let fault: Fault | undefined;
  let hits = 0;
  let counters = zeroCounters();
  const sockets = new Set<Socket>();

  /** Whether this request gets the fault in force. */
  const select = (req: IncomingMessage): Fault | undefined => {
    const f = fault;
    if (!match(req.method ?? 'GET', req.url ?? '/')) return undefined;
    counters.matched++;
    if (f === undefined) return undefined;
    if (f.count !== undefined && hits >= f.count) return undefined;
    if (f.rate !== undefined && f.rate < 1 && rnd() >= f.rate) return undefined;
    hits++;
    counters.injected++;
    counters.byKind[f.kind]++;
    return f;
  };

  const send = async (req: IncomingMessage, res: ServerResponse, f: Fault | undefined): Promise<void> => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    if (f?.kind === 'status') {
      const body = Buffer.from(`fault proxy: ${f.status}\n`);
      const headers: Record<string, string | number> = {
        'content-type': 'text/plain',
        'content-length': body.length,
      };
      if (f.retryAfter !== undefined) headers['retry-after'] = f.retryAfter;
      res.writeHead(f.status, headers);
      res.end(req.method === 'HEAD' ? undefined : body);
      return;
    }
    const headers: Record<string, string | string[]> = {};
    for (const [k, v] of Object.entries(req.headers)) {
      if (v !== undefined && !HOP_BY_HOP.has(k)) headers[k] = v;
    }
    const reqBody = Buffer.concat(chunks);
    let status: number;
    let resHeaders: Record<string, string | string[] | undefined>;
    let body: Buffer;
    try {
      const up = await request(new URL(req.url ?? '/', upstream), {
        method: (req.method ?? 'GET') as 'GET',
        headers,
        ...(reqBody.length > 0 ? { body: reqBody } : {}),
        dispatcher: agent,
      });
      status = up.statusCode;
      resHeaders = up.headers;
      body = Buffer.from(await up.body.arrayBuffer());
    } catch (e) {
      counters.upstreamErrors++;
      const msg = Buffer.from(
        `fault proxy: upstream failed: ${e instanceof Error ? e.message : String(e)}\n`,
      );
      res.writeHead(502, { 'content-type': 'text/plain', 'content-length': msg.length });
      res.end(msg);
      return;
    }
    const out: Record<string, string | string[]> = {};
    for (const [k, v] of Object.entries(resHeaders)) {
      if (v !== undefined && !HOP_BY_HOP.has(k)) out[k] = v;
    }
    // HEAD keeps the upstream's length; a body is sent with its full length, whatever happens next.
    const length = req.method === 'HEAD' ? resHeaders['content-length'] : String(body.length);
    if (length !== undefined) out['content-length'] = length;
    res.writeHead(status, out);
    if (req.method === 'HEAD' || body.length === 0 || f === undefined) {
      counters.bytesOut += body.length;
      res.end(req.method === 'HEAD' ? undefined : body);
      return;
    }
    const cut = (after: number | undefined): number =>
      Math.min(body.length - 1, Math.max(0, after ?? Math.floor(body.length / 2)));
    switch (f.kind) {
      case 'flip': {
        const bad = Buffer.from(body);
        const at = Math.min(body.length - 1, Math.max(0, f.at ?? Math.floor(body.length / 2)));
        bad[at] = bad[at]! ^ 0x01;
        counters.bytesOut += bad.length;
        res.end(bad);
        return;
      }
      case 'reset': {
        const n = cut(f.afterBytes);
        if (await writeAll(res, body.subarray(0, n))) counters.bytesOut += n;
        res.socket?.resetAndDestroy();
        return;
      }
      case 'truncate': {
        const n = cut(f.afterBytes);
        if (await writeAll(res, body.subarray(0, n))) counters.bytesOut += n;
        // A clean FIN, Content-Length not met.
        res.socket?.end();
        return;
      }
      case 'stall': {
        const n = cut(f.afterBytes);
        if (!(await writeAll(res, body.subarray(0, n)))) return;
        counters.bytesOut += n;
        await pause(res, f.ms);
        if (res.destroyed) return;
        counters.bytesOut += body.length - n;
        res.end(body.subarray(n));
        return;
      }
      case 'trickle': {
        const tick = 50;
        const step = Math.max(1, Math.floor((f.bytesPerSecond * tick) / 1000));
        for (let off = 0; off < body.length; off += step) {
          if (off > 0) await pause(res, tick);
          const piece = body.subarray(off, off + step);
          if (!(await writeAll(res, piece))) return;
          counters.bytesOut += piece.length;
        }
        res.end();
        return;
      }
    }
  };

  const server: Server = createServer((req, res) => {
    counters.requests++;
    const f = select(req);
    send(req, res, f).catch(() => res.destroy());
  });
  server.keepAliveTimeout = 30_000;
  server.on('connection', (s) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    host: `127.0.0.1:${port}`,
    url: `http://127.0.0.1:${port}`,
    port,
    get fault() {
      return fault;
    },
    set(f) {
      fault = f;
      hits = 0;
    },
    get counters() {
      return counters;
    },
    resetCounters() {
      counters = zeroCounters();
    },
    async close() {
      fault = undefined;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sockets) s.destroy();
      await closed;
      await agent.close();
    },
  };
}
