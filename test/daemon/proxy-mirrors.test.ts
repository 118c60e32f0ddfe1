import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { RegistryClient } from '../../src/registry/client.js';
import { curl } from '../helpers/api.js';
import {
  cachingForwardProxy,
  fixedStatus,
  forwardProxy,
  needNginx,
  reverseProxy,
  startNginx,
  type Nginx,
} from '../helpers/nginx.js';
import {
  canFuse,
  cleanup,
  createImage,
  md5All,
  startDaemon,
  stopDaemon,
  tmp,
  type Daemon,
} from '../helpers/nydusd.js';
import { prng } from '../helpers/prng.js';
import { freePort, needRegistry, startRegistry, type TestRegistry } from '../helpers/registry.js';

/**
 * nydusd's registry backend through a P2P proxy and through mirrors, all real: Debian's
 * docker-registry as the origin, nginx as the forward proxy (its access log records the
 * X-Dragonfly headers) and as the mirrors, nydusd on a FUSE mount. The proxy goes away and comes
 * back (fallback on and off, health checks), is switched by the config API, and a list of two
 * mirrors has its first one failing, disabled, and recovering.
 */

const FILES = 10;
const FILE_SIZE = 300 * 1024 + 17;

interface Image {
  src: string;
  boot: string;
}

/** A tree of FILES random files (each in its own chunks), its blob pushed to `repo`. */
async function buildAndPush(dir: string, reg: TestRegistry, repo: string): Promise<Image> {
  const src = join(dir, 'src');
  const blobs = join(dir, 'blobs');
  mkdirSync(src);
  mkdirSync(blobs);
  const rnd = prng(7);
  for (let i = 0; i < FILES; i++) {
    const b = Buffer.alloc(FILE_SIZE);
    for (let j = 0; j < b.length; j++) b[j] = Math.floor(rnd() * 256);
    writeFileSync(join(src, `f${i}`), b);
  }
  const boot = join(dir, 'image.boot');
  await createImage(src, boot, blobs, ['--chunk-size', '0x40000']);
  const client = new RegistryClient(reg.host, { plainHttp: true });
  try {
    for (const id of readdirSync(blobs)) {
      const p = join(blobs, id);
      await client.repository(repo).pushBlob(`sha256:${id}`, readFileSync(p).length, p);
    }
  } finally {
    await client.close();
  }
  return { src, boot };
}

/** A v1 config (`device.backend.config` with `proxy` or `mirrors`), no blob cache, no read amplification. */
function config(dir: string, reg: TestRegistry, repo: string, extra: Record<string, unknown>): string {
  const p = join(dir, `config-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(
    p,
    JSON.stringify({
      device: {
        backend: {
          type: 'registry',
          config: { scheme: 'http', host: reg.host, repo, timeout: 3, connect_timeout: 2, ...extra },
        },
      },
      mode: 'direct',
      amplify_io: 0,
    }),
  );
  return p;
}

function md5(b: Buffer): string {
  return createHash('md5').update(b).digest('hex');
}

/** Read `f<i>` from the mount and check it against the source; undefined or the errno code. */
async function readFileOf(mnt: string, img: Image, i: number): Promise<string | undefined> {
  try {
    const got = await readFile(join(mnt, `f${i}`));
    assert.equal(md5(got), md5(readFileSync(join(img.src, `f${i}`))), `f${i} has the right bytes`);
    return undefined;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === undefined) throw e;
    return code;
  }
}

/** Blob GETs in an nginx access log. */
function blobGets(n: Nginx, filter = ''): string[] {
  return n.access().filter((l) => l.startsWith('GET ') && l.includes('/blobs/sha256:') && l.includes(filter));
}

interface Ctx {
  dir: string;
  reg: TestRegistry;
  img: Image;
  repo: string;
}

/** One registry and image for the whole file. */
let shared: Promise<Ctx> | undefined;
function setup(): Promise<Ctx> {
  shared ??= (async () => {
    const { dir } = tmp();
    const reg = await startRegistry({});
    const repo = 'test/proxied';
    const img = await buildAndPush(dir, reg, repo);
    return { dir, reg, img, repo };
  })();
  return shared;
}

test.after(async () => {
  if (shared === undefined) return;
  const c = await shared.catch(() => undefined);
  if (c === undefined) return;
  await c.reg.stop();
  rmSync(c.dir, { recursive: true, force: true });
});

async function mountWith(
  t: import('node:test').TestContext,
  ctx: Ctx,
  backend: Record<string, unknown>,
): Promise<{ d: Daemon; mnt: string; sock: string }> {
  const { dir, mnt } = tmp();
  const sock = join(dir, 'api.sock');
  const started: { d?: Daemon } = {};
  t.after(() => {
    cleanup(started.d, mnt);
    rmSync(dir, { recursive: true, force: true });
  });
  const d = await startDaemon(mnt, [
    '--config',
    config(dir, ctx.reg, ctx.repo, backend),
    '--bootstrap',
    ctx.img.boot,
    '--apisock',
    sock,
    '--log-level',
    'info',
  ]);
  started.d = d;
  return { d, mnt, sock };
}

/** Read the next unread files until `cond` holds (at most `max` files). */
async function readUntil(
  next: () => number,
  read: (i: number) => Promise<string | undefined>,
  cond: () => boolean,
  what: string,
): Promise<void> {
  for (let tries = 0; tries < 20; tries++) {
    const i = next();
    assert.equal(await read(i), undefined, `f${i} reads`);
    if (cond()) return;
    await sleep(500);
  }
  throw new Error(`gave up waiting for ${what}`);
}

test('proxy with fallback: blob reads go through the proxy with the Dragonfly headers; with the proxy down they go to the registry; the health check brings the proxy back; proxy_url is switched hot', async (t) => {
  if (!canFuse(t) || !needRegistry(t) || !needNginx(t)) return;
  const ctx = await setup();
  const port = await freePort();
  const proxy = await startNginx({ servers: forwardProxy(port), ports: [port] });
  t.after(() => proxy.dispose());
  const { d, mnt, sock } = await mountWith(t, ctx, {
    proxy: {
      url: `http://127.0.0.1:${port}`,
      ping_url: `http://127.0.0.1:${port}/ping`,
      fallback: true,
      check_interval: 1,
    },
  });
  let n = 0;
  const read = (i: number): Promise<string | undefined> => readFileOf(mnt, ctx.img, i);
  assert.equal(await read(n++), undefined);
  const through = blobGets(proxy);
  assert.ok(through.length >= 1, proxy.access().join('\n'));
  assert.ok(
    through.every(
      (l) => l.includes(`host=${ctx.reg.host}`) && l.includes('p2p=true') && / prio=(6|3) /.test(l),
    ),
    through.join('\n'),
  );
  assert.ok(
    through.some((l) => l.includes('prio=6') && l.includes('prefetch=false')),
    through.join('\n'),
  );

  // The proxy goes away: reads keep working from the registry.
  await proxy.stop();
  assert.equal(await read(n++), undefined);
  assert.equal(await read(n++), undefined);

  // The proxy is back: the health check sends traffic to it again.
  await proxy.start();
  const before = blobGets(proxy).length;
  await readUntil(
    () => n++,
    read,
    () => blobGets(proxy).length > before,
    'reads through the restarted proxy',
  );

  // Hot update: no proxy, then the proxy again.
  let put = await curl(sock, 'PUT', '/api/v1/config?id=/', JSON.stringify({ proxy_url: '' }));
  assert.equal(put.status, 204, put.body);
  const off = blobGets(proxy).length;
  assert.equal(await read(n++), undefined);
  assert.equal(blobGets(proxy).length, off, 'no proxy after proxy_url ""');
  put = await curl(
    sock,
    'PUT',
    '/api/v1/config?id=/',
    JSON.stringify({ proxy_url: `http://127.0.0.1:${port}` }),
  );
  assert.equal(put.status, 204, put.body);
  assert.equal(await read(n++), undefined);
  assert.ok(blobGets(proxy).length > off, 'the proxy again after proxy_url');

  assert.equal(await md5All(mnt), await md5All(ctx.img.src));
  await stopDaemon(d);
});

test('a caching P2P proxy (nginx) in front of the registry: a second daemon reads every blob byte from the proxy cache, and every file is right', async (t) => {
  if (!canFuse(t) || !needRegistry(t) || !needNginx(t)) return;
  const ctx = await setup();
  const port = await freePort();
  const proxy = await startNginx({ servers: cachingForwardProxy(port), ports: [port] });
  t.after(() => proxy.dispose());
  const backend = {
    proxy: { url: `http://127.0.0.1:${port}`, ping_url: `http://127.0.0.1:${port}/ping`, fallback: false },
  };
  const first = await mountWith(t, ctx, backend);
  assert.equal(await md5All(first.mnt), await md5All(ctx.img.src));
  await stopDaemon(first.d);
  const warmed = blobGets(proxy).length;
  assert.ok(warmed >= 1, proxy.access().join('\n'));
  // The first request for the blob (its HEAD: nginx fetches the whole blob for it) missed.
  assert.ok(
    proxy.access().some((l) => l.includes('/blobs/sha256:') && l.includes('cache=MISS')),
    proxy.access().join('\n'),
  );

  const second = await mountWith(t, ctx, backend);
  assert.equal(await md5All(second.mnt), await md5All(ctx.img.src));
  const again = blobGets(proxy).slice(warmed);
  assert.ok(again.length >= 1, proxy.access().join('\n'));
  assert.ok(
    again.every((l) => l.includes('cache=HIT')),
    `every blob read of the second daemon is a cache hit:\n${again.join('\n')}`,
  );
  await stopDaemon(second.d);
});

test('proxy without fallback: with the proxy down reads fail with EIO and a clear error; once it is back they work', async (t) => {
  if (!canFuse(t) || !needRegistry(t) || !needNginx(t)) return;
  const ctx = await setup();
  const port = await freePort();
  const proxy = await startNginx({ servers: forwardProxy(port), ports: [port] });
  t.after(() => proxy.dispose());
  const { d, mnt, sock } = await mountWith(t, ctx, {
    proxy: {
      url: `http://127.0.0.1:${port}`,
      ping_url: `http://127.0.0.1:${port}/ping`,
      fallback: false,
      check_interval: 1,
    },
  });
  assert.equal(await readFileOf(mnt, ctx.img, 0), undefined);
  await proxy.stop();
  assert.equal(await readFileOf(mnt, ctx.img, 1), 'EIO');
  const ev = await curl(sock, 'GET', '/api/v1/daemon/events');
  assert.match(ev.body, /proxy/, 'the events ring names the proxy');
  assert.match(d.stderr(), /proxy .*(failed|not healthy)/);
  await proxy.start();
  const deadline = Date.now() + 15_000;
  let err: string | undefined = 'EIO';
  while (err !== undefined && Date.now() < deadline) {
    err = await readFileOf(mnt, ctx.img, 1);
    if (err !== undefined) await sleep(500);
  }
  assert.equal(err, undefined, 'reads work again through the proxy');
  assert.ok(blobGets(proxy).length >= 1);
  await stopDaemon(d);
});

test('mirrors (v1 device.backend.config.mirrors): the first mirror failing passes reads to the second, is disabled after failure_limit, and is used again once its ping recovers', async (t) => {
  if (!canFuse(t) || !needRegistry(t) || !needNginx(t)) return;
  const ctx = await setup();
  const [p1, p2] = [await freePort(), await freePort()];
  const m1 = await startNginx({ servers: fixedStatus(p1, 502), ports: [p1] });
  t.after(() => m1.dispose());
  const m2 = await startNginx({ servers: reverseProxy(p2, ctx.reg.host), ports: [p2] });
  t.after(() => m2.dispose());
  const mirror = (port: number, name: string): Record<string, unknown> => ({
    host: `http://127.0.0.1:${port}`,
    auth_through: true,
    headers: { 'X-Test-Mirror': name },
    health_check_interval: 1,
    failure_limit: 2,
  });
  const { d, mnt } = await mountWith(t, ctx, { mirrors: [mirror(p1, 'one'), mirror(p2, 'two')] });
  const read = (i: number): Promise<string | undefined> => readFileOf(mnt, ctx.img, i);
  let n = 0;
  for (; n < 3; n++) assert.equal(await read(n), undefined);
  const failed = m1.access().filter((l) => !l.startsWith('GET /v2 ') && l.includes(' 502 '));
  assert.ok(failed.length >= 2, m1.access().join('\n'));
  assert.ok(
    failed.every((l) => l.includes('mirror=one')),
    failed.join('\n'),
  );
  assert.ok(blobGets(m2, 'mirror=two').length >= 1, m2.access().join('\n'));
  assert.match(d.stderr(), /failure limit 2 reached, mirror disabled/);

  // Disabled: more reads never reach mirror one (only its pings do).
  const count = m1.access().filter((l) => !l.startsWith('GET /v2 ')).length;
  assert.equal(await read(n++), undefined);
  assert.equal(m1.access().filter((l) => !l.startsWith('GET /v2 ')).length, count);

  // Mirror one recovers: its ping (GET /v2) answers below 500 and it serves reads again.
  await m1.stop();
  await m1.start(reverseProxy(p1, ctx.reg.host));
  await readUntil(
    () => n++,
    read,
    () => blobGets(m1, 'mirror=one').some((l) => / 20[06] /.test(l)),
    'reads through the recovered mirror one',
  );
  assert.match(d.stderr(), /Mirror http:\/\/127\.0\.0\.1:\d+ recovered/);
  assert.equal(await md5All(mnt), await md5All(ctx.img.src));
  await stopDaemon(d);
});
