import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { NydusError } from '../../../src/errors/errors.js';
import type { BlobInfo } from '../../../src/format/model.js';
import { markTransient } from '../../../src/registry/transport.js';
import { httpProxyBlobUrl, httpProxyBackend } from '../../../src/daemon/backend/http-proxy.js';
import type { DaemonConfig } from '../../../src/daemon/config/schema.js';
import { parseDaemonConfig } from '../../../src/daemon/config/parse.js';
import {
  Connection,
  type ConnectionConfig,
  type MirrorConfig,
  type SendRequest,
} from '../../../src/storage/remote/connection.js';
import { HttpBlobSource } from '../../../src/storage/remote/http-blob.js';
import type { LoadedBootstrap } from '../../../src/rafs/open.js';

/**
 * The backend connection against plain node:http servers standing for the origin, a P2P proxy
 * and mirrors: routing, fallback, the Dragonfly headers, health checks, mirror failure limits
 * and recovery, the retry budgets, and HttpBlobSource's ranged reads.
 */

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

interface TestServer {
  url: string;
  port: number;
  seen: { method: string; url: string; headers: IncomingMessage['headers'] }[];
  handler: Handler;
  close(): Promise<void>;
}

async function serve(handler: Handler, listenOn?: string): Promise<TestServer> {
  const s: TestServer = {
    url: '',
    port: 0,
    seen: [],
    handler,
    close: () => new Promise((r) => server.close(() => r())),
  };
  const server: Server = createServer((req, res) => {
    s.seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    s.handler(req, res);
  });
  server.keepAliveTimeout = 100;
  await new Promise<void>((r) =>
    listenOn !== undefined ? server.listen(listenOn, r) : server.listen(0, '127.0.0.1', r),
  );
  if (listenOn === undefined) {
    s.port = (server.address() as AddressInfo).port;
    s.url = `http://127.0.0.1:${s.port}`;
  }
  s.close = () => {
    server.closeAllConnections();
    return new Promise((r) => server.close(() => r()));
  };
  return s;
}

/** A port nothing listens on. */
async function deadPort(): Promise<number> {
  const s = await serve(() => undefined);
  await s.close();
  return s.port;
}

const BLOB = Buffer.from(Array.from({ length: 10_000 }, (_, i) => (i * 7) & 0xff));

/** Serves BLOB with HEAD and Range. */
const blobHandler: Handler = (req, res) => {
  const range = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
  if (range !== null) {
    const a = Number(range[1]);
    const b = Math.min(Number(range[2]), BLOB.length - 1);
    res.writeHead(206, { 'content-range': `bytes ${a}-${b}/${BLOB.length}`, 'content-length': b - a + 1 });
    res.end(req.method === 'HEAD' ? undefined : BLOB.subarray(a, b + 1));
    return;
  }
  res.writeHead(200, { 'content-length': BLOB.length });
  res.end(req.method === 'HEAD' ? undefined : BLOB);
};

function cfg(
  over: Partial<ConnectionConfig> & { proxyUrl?: string; fallback?: boolean; pingUrl?: string } = {},
): ConnectionConfig {
  return {
    skip_verify: false,
    ca_cert_files: [],
    timeout: 5,
    connect_timeout: 2,
    retry_limit: 0,
    proxy: {
      url: over.proxyUrl ?? '',
      ping_url: over.pingUrl ?? '',
      fallback: over.fallback ?? true,
      check_interval: 1,
      use_http: false,
      check_pause_elapsed: 300,
      dragonfly_scheduler_endpoint: '',
    },
    ...(over.mirrors !== undefined ? { mirrors: over.mirrors } : {}),
  };
}

function mirror(host: string, over: Partial<MirrorConfig> = {}): MirrorConfig {
  return {
    host,
    auth_through: true,
    headers: {},
    ping_url: '',
    health_check_interval: 1,
    failure_limit: 2,
    health_check_pause_elapsed: 300,
    ...over,
  };
}

function get(url: string, over: Partial<SendRequest> = {}): SendRequest {
  return { method: 'GET', url: new URL(url), headers: {}, what: `GET ${url}`, ...over };
}

async function text(c: Connection, req: SendRequest): Promise<{ status: number; body: string }> {
  const res = await c.send(req);
  return { status: res.statusCode, body: await res.body.text() };
}

async function until(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

test('proxy: requests go to the proxy in absolute form with Host and the Dragonfly headers; prefetch has priority 3', async (t) => {
  const origin = await serve((_q, r) => r.end('origin'));
  const proxy = await serve((_q, r) => r.end('via proxy'));
  const c = new Connection(cfg({ proxyUrl: proxy.url }));
  t.after(async () => {
    await c.close();
    await origin.close();
    await proxy.close();
  });
  assert.deepEqual(await text(c, get(`${origin.url}/a/b?x=1`)), { status: 200, body: 'via proxy' });
  const s = proxy.seen[0]!;
  assert.equal(s.url, `${origin.url}/a/b?x=1`);
  assert.equal(s.headers.host, `127.0.0.1:${origin.port}`);
  assert.equal(s.headers['x-dragonfly-priority'], '6');
  assert.equal(s.headers['x-dragonfly-use-p2p'], 'true');
  assert.equal(s.headers['x-dragonfly-prefetch'], 'false');
  assert.equal(s.headers['user-agent'], 'nydusd/1.0.0');
  await text(c, get(`${origin.url}/p`, { prefetch: true }));
  assert.equal(proxy.seen[1]!.headers['x-dragonfly-priority'], '3');
  assert.equal(proxy.seen[1]!.headers['x-dragonfly-prefetch'], 'true');
  // direct requests (tokens, uploads) never use the proxy
  assert.equal((await text(c, get(`${origin.url}/t`, { direct: true }))).body, 'origin');
  assert.equal(origin.seen.length, 1);
});

test('proxy with fallback: a 5xx or a dead proxy sends the request to the origin at once; without fallback the 5xx is the answer and a dead proxy an error', async (t) => {
  const origin = await serve((_q, r) => r.end('origin'));
  const proxy = await serve((_q, r) => {
    r.statusCode = 502;
    r.end('bad gateway');
  });
  const dead = await deadPort();
  const events: string[] = [];
  const c1 = new Connection(cfg({ proxyUrl: proxy.url }), { event: (m) => events.push(m) });
  const c2 = new Connection(cfg({ proxyUrl: proxy.url, fallback: false }));
  const c3 = new Connection(cfg({ proxyUrl: `http://127.0.0.1:${dead}` }));
  const c4 = new Connection(cfg({ proxyUrl: `http://127.0.0.1:${dead}`, fallback: false }));
  t.after(async () => {
    await Promise.all([c1.close(), c2.close(), c3.close(), c4.close()]);
    await origin.close();
    await proxy.close();
  });
  assert.deepEqual(await text(c1, get(`${origin.url}/x`)), { status: 200, body: 'origin' });
  assert.equal(proxy.seen.length, 1);
  assert.ok(
    events.some((e) => e.includes('answered HTTP 502')),
    events.join('\n'),
  );
  assert.deepEqual(await text(c2, get(`${origin.url}/x`)), { status: 502, body: 'bad gateway' });
  assert.deepEqual(await text(c3, get(`${origin.url}/x`)), { status: 200, body: 'origin' });
  await assert.rejects(c4.send(get(`${origin.url}/x`)), (e: NydusError) => e.code === 'ERR_NETWORK');
});

test('proxy health: an unhealthy ping sends requests direct with fallback and fails them without; a good ping brings the proxy back', async (t) => {
  let pingStatus = 500;
  const origin = await serve((_q, r) => r.end('origin'));
  const proxy = await serve((q, r) => {
    if (q.url === '/ping') r.statusCode = pingStatus;
    r.end(q.url === '/ping' ? '' : 'via proxy');
  });
  const c1 = new Connection(cfg({ proxyUrl: proxy.url, pingUrl: `${proxy.url}/ping` }));
  const c2 = new Connection(cfg({ proxyUrl: proxy.url, pingUrl: `${proxy.url}/ping`, fallback: false }));
  t.after(async () => {
    await Promise.all([c1.close(), c2.close()]);
    await origin.close();
    await proxy.close();
  });
  await until(() => c1.proxyHealthy === false && c2.proxyHealthy === false, 'the proxy to be unhealthy');
  assert.equal((await text(c1, get(`${origin.url}/x`))).body, 'origin');
  await assert.rejects(c2.send(get(`${origin.url}/x`)), /proxy is not healthy and fallback is disabled/);
  pingStatus = 200;
  await until(() => c1.proxyHealthy === true && c2.proxyHealthy === true, 'the proxy to recover');
  assert.equal((await text(c1, get(`${origin.url}/x`))).body, 'via proxy');
  assert.equal((await text(c2, get(`${origin.url}/x`))).body, 'via proxy');
});

test('proxy errors: 403 is not retried, 429 goes to the origin for on-demand reads and gives up for prefetch, X-Dragonfly-Error-Type: proxy falls back', async (t) => {
  let status = 403;
  const origin = await serve((_q, r) => r.end('origin'));
  const proxy = await serve((_q, r) => {
    r.statusCode = status;
    if (status === 400) r.setHeader('x-dragonfly-error-type', 'proxy');
    r.end('no');
  });
  const c = new Connection(cfg({ proxyUrl: proxy.url }));
  t.after(async () => {
    await c.close();
    await origin.close();
    await proxy.close();
  });
  let calls = 0;
  await assert.rejects(
    c.withRetries('read', false, async ({ noProxy }) => {
      calls++;
      const res = await c.send(get(`${origin.url}/x`, { noProxy }));
      return res.body.text();
    }),
    (e: NydusError) => e.code === 'ERR_AUTH' && /HTTP 403/.test(e.message),
  );
  assert.equal(calls, 1, '403: no retry');
  status = 429;
  assert.equal((await text(c, get(`${origin.url}/x`))).body, 'origin');
  await assert.rejects(c.send(get(`${origin.url}/x`, { prefetch: true })), /rate-limited/);
  status = 400;
  assert.equal((await text(c, get(`${origin.url}/x`))).body, 'origin');
});

test('retry budgets: on-demand 3 retries with the last one off the proxy; prefetch 1 retry; a permanent error none', async (t) => {
  const c = new Connection(cfg({ proxyUrl: 'http://127.0.0.1:9' }));
  t.after(() => c.close());
  const seen: { attempt: number; noProxy: boolean }[] = [];
  await assert.rejects(
    c.withRetries('read', false, (ctx) => {
      seen.push(ctx);
      return Promise.reject(markTransient(new NydusError('ERR_NETWORK', 'boom')));
    }),
    /boom/,
  );
  assert.deepEqual(seen, [
    { attempt: 0, noProxy: false },
    { attempt: 1, noProxy: false },
    { attempt: 2, noProxy: false },
    { attempt: 3, noProxy: true },
  ]);
  let n = 0;
  await assert.rejects(
    c.withRetries('prefetch', true, () => {
      n++;
      return Promise.reject(markTransient(new NydusError('ERR_NETWORK', 'boom')));
    }),
  );
  assert.equal(n, 2);
  n = 0;
  await assert.rejects(
    c.withRetries('read', false, () => {
      n++;
      return Promise.reject(new NydusError('ERR_NOT_FOUND', 'gone'));
    }),
  );
  assert.equal(n, 1);
  assert.equal(
    await c.withRetries('read', false, ({ attempt }) =>
      attempt < 2 ? Promise.reject(markTransient(new Error('x'))) : Promise.resolve('ok'),
    ),
    'ok',
  );
});

test('mirrors: a failing first mirror passes the request on, is disabled at failure_limit, and comes back when its ping answers; headers go to their mirror only', async (t) => {
  let m1Status = 502;
  const origin = await serve((_q, r) => r.end('origin'));
  const m1 = await serve((_q, r) => {
    r.statusCode = m1Status;
    r.end('m1');
  });
  const m2 = await serve((_q, r) => r.end('m2'));
  const c = new Connection(
    cfg({
      mirrors: [
        mirror(m1.url, { headers: { 'X-Only-M1': 'yes' } }),
        mirror(m2.url, { headers: { 'X-Only-M2': 'yes' } }),
      ],
    }),
  );
  t.after(async () => {
    await c.close();
    await Promise.all([origin.close(), m1.close(), m2.close()]);
  });
  assert.equal((await text(c, get(`${origin.url}/v2/r/blobs/x?q=1`))).body, 'm2');
  assert.equal(m1.seen[0]!.url, '/v2/r/blobs/x?q=1');
  assert.equal(m1.seen[0]!.headers['x-only-m1'], 'yes');
  assert.equal(m1.seen[0]!.headers['x-only-m2'], undefined);
  assert.equal(m2.seen[0]!.headers['x-only-m2'], 'yes');
  assert.equal(m2.seen[0]!.headers['x-only-m1'], undefined);
  assert.equal((await text(c, get(`${origin.url}/y`))).body, 'm2');
  assert.deepEqual(
    c.mirrorStates.map((m) => m.enabled),
    [false, true],
  );
  const before = m1.seen.length;
  assert.equal((await text(c, get(`${origin.url}/z`))).body, 'm2');
  assert.equal(m1.seen.filter((s) => s.url !== '/v2').length, before, 'a disabled mirror gets no requests');
  m1Status = 200;
  await until(() => c.mirrorStates[0]!.enabled, 'mirror 1 to recover');
  assert.ok(
    m1.seen.some((s) => s.url === '/v2'),
    'pinged at <host>/v2',
  );
  assert.equal((await text(c, get(`${origin.url}/w`))).body, 'm1');
  assert.equal(origin.seen.length, 0);
});

test('mirrors: every mirror failing leaves the origin; auth_through=false keeps requests without Authorization at the origin; mirrors with a proxy are refused', async (t) => {
  const origin = await serve((_q, r) => r.end('origin'));
  const m = await serve((_q, r) => r.end('mirror'));
  const dead = await deadPort();
  const c1 = new Connection(cfg({ mirrors: [mirror(`http://127.0.0.1:${dead}`)] }));
  const c2 = new Connection(cfg({ mirrors: [mirror(m.url, { auth_through: false })] }));
  t.after(async () => {
    await Promise.all([c1.close(), c2.close()]);
    await Promise.all([origin.close(), m.close()]);
  });
  assert.equal((await text(c1, get(`${origin.url}/a`))).body, 'origin');
  assert.equal((await text(c2, get(`${origin.url}/a`))).body, 'origin');
  assert.equal(
    (await text(c2, get(`${origin.url}/a`, { headers: { Authorization: 'Bearer t' } }))).body,
    'mirror',
  );
  assert.throws(
    () => new Connection(cfg({ proxyUrl: origin.url, mirrors: [mirror(m.url)] })),
    /"mirrors" and "proxy" cannot be used together/,
  );
  assert.throws(
    () =>
      parseDaemonConfig(
        JSON.stringify({
          device: {
            backend: {
              type: 'registry',
              config: {
                host: '127.0.0.1:5000',
                repo: 'a/b',
                proxy: { url: origin.url },
                mirrors: [{ host: m.url }],
              },
            },
          },
          mode: 'direct',
        }),
      ),
    /mirrors: cannot be used together with "proxy"/,
  );
});

test('hot proxy update: setProxyUrl switches the proxy, and an empty URL turns it off', async (t) => {
  const origin = await serve((_q, r) => r.end('origin'));
  const p1 = await serve((_q, r) => r.end('p1'));
  const p2 = await serve((_q, r) => r.end('p2'));
  const c = new Connection(cfg({ proxyUrl: p1.url }));
  t.after(async () => {
    await c.close();
    await Promise.all([origin.close(), p1.close(), p2.close()]);
  });
  assert.equal((await text(c, get(`${origin.url}/a`))).body, 'p1');
  c.setProxyUrl(p2.url);
  assert.equal((await text(c, get(`${origin.url}/a`))).body, 'p2');
  c.setProxyUrl('');
  assert.equal((await text(c, get(`${origin.url}/a`))).body, 'origin');
});

function blobInfo(id: string): BlobInfo {
  return { blobId: id } as BlobInfo;
}

test('HttpBlobSource: size from HEAD, ranged reads with Content-Range checked, a 200 full body skipped to the offset, short bodies retried, 404 is ERR_NOT_FOUND', async (t) => {
  let mode: 'range' | 'full' | 'short-once' | 'wrong-range' = 'range';
  let shorts = 0;
  const origin = await serve((req, res) => {
    if (!req.url!.startsWith('/blobs/abc')) {
      res.statusCode = 404;
      res.end();
      return;
    }
    if (req.method === 'GET' && mode === 'full') {
      res.writeHead(200, { 'content-length': BLOB.length });
      res.end(BLOB);
      return;
    }
    if (req.method === 'GET' && mode === 'wrong-range') {
      res.writeHead(206, { 'content-range': `bytes 0-9/${BLOB.length}`, 'content-length': 10 });
      res.end(BLOB.subarray(0, 10));
      return;
    }
    if (req.method === 'GET' && mode === 'short-once' && shorts === 0) {
      shorts++;
      const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range!)!;
      res.writeHead(206, {
        'content-range': `bytes ${m[1]}-${m[2]}/${BLOB.length}`,
        'content-length': Number(m[2]) - Number(m[1]) + 1,
      });
      res.write(BLOB.subarray(Number(m[1]), Number(m[1]) + 5));
      res.destroy();
      return;
    }
    blobHandler(req, res);
  });
  const conn = new Connection(cfg());
  const src = new HttpBlobSource({
    conn,
    kind: 'http-proxy',
    urlFor: (id) => new URL(`${origin.url}/blobs/${id}`),
  });
  t.after(async () => {
    await src.close();
    await origin.close();
  });
  const r = await src.open(blobInfo('abc'));
  assert.equal(r.size, BLOB.length);
  assert.deepEqual(await r.read(100, 1000), BLOB.subarray(100, 1100));
  assert.equal(origin.seen.at(-1)!.headers.range, 'bytes=100-1099');
  mode = 'full';
  const into = Buffer.alloc(2000);
  const got = await r.read(5000, 500, into);
  assert.deepEqual(got, BLOB.subarray(5000, 5500));
  assert.equal(got.buffer, into.buffer, 'landed in the buffer given');
  mode = 'short-once';
  assert.deepEqual(await r.read(7, 300), BLOB.subarray(7, 307));
  assert.equal(shorts, 1);
  mode = 'wrong-range';
  await assert.rejects(r.read(50, 10), /another range/);
  await assert.rejects(r.read(BLOB.length - 5, 10), (e: NydusError) => e.code === 'ERR_FORMAT');
  await assert.rejects(src.open(blobInfo('missing')), (e: NydusError) => e.code === 'ERR_NOT_FOUND');
});

test('http-proxy backend: URLs are addr + path + "/" + blob id; over a unix socket every request is for "/" (upstream quirk); a missing socket is refused', async (t) => {
  assert.equal(
    httpProxyBlobUrl({ addr: 'http://127.0.0.1:9977', path: '/ns/repo/blobs' }, 'abc').href,
    'http://127.0.0.1:9977/ns/repo/blobs/abc',
  );
  assert.equal(
    httpProxyBlobUrl({ addr: 'http://127.0.0.1:9977/', path: 'ns/blobs/' }, 'abc').href,
    'http://127.0.0.1:9977/ns/blobs/abc',
  );
  assert.equal(
    httpProxyBlobUrl({ addr: 'http://127.0.0.1:9977', path: '' }, 'abc').href,
    'http://127.0.0.1:9977/abc',
  );
  const dir = mkdtempSync(join(tmpdir(), 'nydus-hp-'));
  const sock = join(dir, 'blob.sock');
  const server = await serve(blobHandler, sock);
  t.after(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const config = (addr: string): DaemonConfig =>
    ({
      backend: {
        type: 'http-proxy',
        'http-proxy': {
          addr,
          path: '/ignored',
          skip_verify: false,
          ca_cert_files: [],
          timeout: 5,
          connect_timeout: 5,
          retry_limit: 0,
          proxy: cfg().proxy,
        },
      },
    }) as unknown as DaemonConfig;
  await httpProxyBackend.check(config(sock));
  await assert.rejects(httpProxyBackend.check(config(join(dir, 'nope.sock'))), /does not exist/);
  await assert.rejects(httpProxyBackend.check(config('')), /needs "addr"/);
  const b = httpProxyBackend.create({
    config: config(sock),
    loaded: {} as LoadedBootstrap,
    log: undefined as never,
  });
  t.after(() => b.close());
  const r = await b.source.open(blobInfo('abcdef'));
  assert.equal(r.size, BLOB.length);
  assert.deepEqual(await r.read(10, 20), BLOB.subarray(10, 30));
  assert.ok(
    server.seen.every((s) => s.url === '/'),
    JSON.stringify(server.seen.map((s) => s.url)),
  );
  assert.ok(!('setProxyUrl' in b), 'no proxy over a socket');
});
