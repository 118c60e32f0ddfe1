import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import { after, before, test } from 'node:test';
import { isNydusError } from '../../src/errors/errors.js';
import { RegistryClient, type RegistryOptions } from '../../src/registry/client.js';
import {
  blobDataPath,
  haveRegistry,
  needRegistry,
  sha256Digest,
  startRegistry,
  type TestRegistry,
} from '../helpers/registry.js';

let reg: TestRegistry;
const cleanups: (() => Promise<void> | void)[] = [];

before(async () => {
  if (haveRegistry()) reg = await startRegistry();
});

after(async () => {
  for (const c of cleanups.reverse()) await c();
  await reg?.stop();
});

function code(c: string, re?: RegExp) {
  return (e: unknown) => isNydusError(e) && e.code === c && (re === undefined || re.test(e.message));
}

/** A loopback TCP server whose connections `onConn` drives by hand. */
async function rawServer(onConn: (s: Socket) => void): Promise<string> {
  const sockets = new Set<Socket>();
  const srv = createNetServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    onConn(s);
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        srv.close(() => resolve());
      }),
  );
  return `127.0.0.1:${(srv.address() as AddressInfo).port}`;
}

/** A loopback HTTP server standing in for a registry or blob storage. */
async function fakeHttp(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<string> {
  const srv = createHttpServer(handler);
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        srv.closeAllConnections();
        srv.close(() => resolve());
      }),
  );
  return `127.0.0.1:${(srv.address() as AddressInfo).port}`;
}

function client(host: string, opts: RegistryOptions = {}): RegistryClient {
  const c = new RegistryClient(host, {
    plainHttp: true,
    retries: 0,
    retryDelayMs: 10,
    timeoutMs: 400,
    connectTimeoutMs: 400,
    env: { DOCKER_CONFIG: '/nonexistent' },
    ...opts,
  });
  cleanups.push(() => c.close());
  return c;
}

const data = randomBytes(64 * 1024);
const digest = sha256Digest(data);

test('a registry that accepts and never answers gives ERR_TIMEOUT', async () => {
  const host = await rawServer(() => undefined);
  const repo = client(host).repository('x/y');
  // undici's timers have a resolution of about a second, so these run side by side.
  await Promise.all([
    assert.rejects(repo.getManifest('latest'), code('ERR_TIMEOUT', /no response within 400 ms/)),
    assert.rejects(repo.readBlobRange(digest, 0, 10), code('ERR_TIMEOUT')),
    // Retried, then still a timeout.
    assert.rejects(client(host, { retries: 1 }).repository('x/y').fetchBlob(digest), code('ERR_TIMEOUT')),
  ]);
});

test('a body that stops half way gives an error, never short bytes', async () => {
  const serve = (close: boolean) =>
    rawServer((s) => {
      s.once('data', () => {
        s.write(
          `HTTP/1.1 200 OK\r\nContent-Length: ${data.length}\r\nContent-Type: application/octet-stream\r\n\r\n`,
        );
        s.write(data.subarray(0, data.length / 2));
        if (close) setTimeout(() => s.destroy(), 20);
      });
    });
  const drain = async (r: NodeJS.ReadableStream): Promise<void> => {
    for await (const _ of r) void _;
  };
  for (const [close, errCode] of [
    [false, 'ERR_TIMEOUT'],
    [true, 'ERR_NETWORK'],
  ] as const) {
    const repo = client(await serve(close)).repository('x/y');
    await Promise.all([
      assert.rejects(repo.fetchBlob(digest), code(errCode)),
      assert.rejects(repo.readBlobRange(digest, 40_000, 1000), code(errCode)),
      assert.rejects(async () => drain(await repo.openBlob(digest)), code(errCode)),
    ]);
  }
});

test('ranges: a 206 of another range is refused, a 200 (at any offset) is skipped into place, a short 206 is an error', async () => {
  let mode: 'wrong' | 'ignore' | 'short' = 'wrong';
  let requests = 0;
  const host = await fakeHttp((req, res) => {
    requests++;
    const m = /bytes=(\d+)-(\d+)/.exec(req.headers.range ?? '');
    const a = Number(m?.[1]);
    const b = Number(m?.[2]);
    if (mode === 'wrong') {
      res.writeHead(206, { 'content-range': `bytes ${a + 1}-${b + 1}/${data.length}` });
      res.end(data.subarray(a + 1, b + 2));
    } else if (mode === 'ignore') {
      res.writeHead(200, { 'content-length': data.length });
      res.end(data);
    } else {
      res.writeHead(206, { 'content-range': `bytes ${a}-${b}/${data.length}` });
      res.end(data.subarray(a, b)); // one byte short, no content-length mismatch (chunked)
    }
  });
  const repo = client(host, { retries: 1 }).repository('x/y');
  await assert.rejects(repo.readBlobRange(digest, 100, 50), code('ERR_REGISTRY', /another range/));
  mode = 'ignore';
  assert.deepEqual(await repo.readBlobRange(digest, 30_000, 5000), data.subarray(30_000, 35_000));
  // At offset 0 too: a 200 answer is the whole blob, its tail is not "more than asked".
  assert.deepEqual(await repo.readBlobRange(digest, 0, 5000), data.subarray(0, 5000));
  mode = 'short';
  requests = 0;
  await assert.rejects(repo.readBlobRange(digest, 100, 50), code('ERR_NETWORK', /49 of 50/));
  assert.equal(requests, 2, 'a short answer is retried');
});

test('5xx answers are retried with backoff, 4xx are not', async () => {
  let failures = 2;
  let status = 503;
  let requests = 0;
  const host = await fakeHttp((_req, res) => {
    requests++;
    if (failures > 0) {
      failures--;
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ errors: [{ code: 'UNAVAILABLE', message: 'try later' }] }));
      return;
    }
    res.writeHead(200, { 'content-length': data.length });
    res.end(data);
  });
  assert.deepEqual(await client(host, { retries: 3 }).repository('x/y').fetchBlob(digest), data);
  assert.equal(requests, 3);
  failures = 5;
  await assert.rejects(
    client(host, { retries: 1 }).repository('x/y').fetchBlob(digest),
    code('ERR_REGISTRY', /HTTP 503: UNAVAILABLE: try later/),
  );
  failures = 1;
  status = 400;
  requests = 0;
  await assert.rejects(
    client(host, { retries: 3 }).repository('x/y').fetchBlob(digest),
    code('ERR_REGISTRY', /HTTP 400/),
  );
  assert.equal(requests, 1);
});

test('redirects to blob storage are followed and cached; a 403 from storage goes back to the registry', async () => {
  let storageRefuses = 0;
  let storageHits = 0;
  let registryHits = 0;
  const storage = await fakeHttp((req, res) => {
    storageHits++;
    if (req.headers.authorization !== undefined) {
      res.writeHead(400).end('credentials leaked to storage');
      return;
    }
    if (storageRefuses > 0) {
      storageRefuses--;
      res.writeHead(403).end('<Error>expired</Error>');
      return;
    }
    const m = /bytes=(\d+)-(\d+)/.exec(req.headers.range ?? '');
    if (m === null) {
      res.writeHead(200, { 'content-length': data.length }).end(data);
      return;
    }
    const a = Number(m[1]);
    const b = Number(m[2]);
    res.writeHead(206, { 'content-range': `bytes ${a}-${b}/${data.length}` }).end(data.subarray(a, b + 1));
  });
  const registry = await fakeHttp((req, res) => {
    registryHits++;
    // Relative and absolute locations both work.
    const loc =
      registryHits % 2 === 1
        ? `http://${storage}/store/${digest}?sig=secret`
        : `//${storage}/store/${digest}?sig=x`;
    res.writeHead(307, { location: loc }).end();
    void req;
  });
  const repo = client(registry, { headers: { authorization: 'Bearer must-not-leak' } }).repository('x/y');
  assert.deepEqual(await repo.readBlobRange(digest, 10, 20), data.subarray(10, 30));
  assert.deepEqual(await repo.readBlobRange(digest, 1000, 20), data.subarray(1000, 1020));
  assert.equal(registryHits, 1, 'the redirect was cached');
  assert.equal(storageHits, 2);
  storageRefuses = 1;
  assert.deepEqual(await repo.fetchBlob(digest), data);
  assert.equal(registryHits, 2, 'a refused storage URL sends the client back to the registry');
});

test('a corrupt blob in the registry gives ERR_DIGEST from fetchBlob and openBlob', async (t) => {
  if (!needRegistry(t)) return;
  const c = client(reg.host, { timeoutMs: 10_000 });
  const repo = c.repository('faults/corrupt');
  await repo.pushBlob(digest, data.length, data);
  const file = blobDataPath(reg, digest);
  const bytes = readFileSync(file);
  bytes[1000] = bytes[1000]! ^ 0xff;
  writeFileSync(file, bytes);
  await assert.rejects(repo.fetchBlob(digest), code('ERR_DIGEST', new RegExp(digest)));
  const stream = await repo.openBlob(digest);
  let received = 0;
  await assert.rejects(async () => {
    for await (const chunk of stream) received += (chunk as Buffer).length;
  }, code('ERR_DIGEST'));
  assert.ok(received <= data.length);
  // Ranged reads cannot be checked against the blob digest: the bytes come as stored.
  assert.equal((await repo.readBlobRange(digest, 999, 3))[1], bytes[1000]);
});

test('a stopped registry is a connection error; after restart() its data is served again', async (t) => {
  if (!needRegistry(t)) return;
  const c = client(reg.host, { timeoutMs: 10_000, retryDelayMs: 10 });
  const repo = c.repository('faults/restart');
  const b = randomBytes(5000);
  await repo.pushBlob(sha256Digest(b), b.length, b);
  await reg.stop();
  await assert.rejects(repo.readBlobRange(sha256Digest(b), 0, 10), code('ERR_NETWORK', /ECONNREFUSED/));
  await reg.restart();
  assert.deepEqual(await repo.readBlobRange(sha256Digest(b), 100, 10), b.subarray(100, 110));
});
