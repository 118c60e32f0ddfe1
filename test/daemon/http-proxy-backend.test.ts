import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeEveryEntryTree } from '../helpers/fs-tree.js';
import { forwardProxy, needNginx, startNginx, staticBlobs } from '../helpers/nginx.js';
import {
  canFuse,
  cleanup,
  createImage,
  md5sUnder,
  startDaemon,
  stopDaemon,
  tmp,
  v1Config,
  type Daemon,
} from '../helpers/nydusd.js';
import { prng } from '../helpers/prng.js';
import { freePort } from '../helpers/registry.js';

/**
 * nydusd's http-proxy backend against real nginx: blobs served from a directory over HTTP
 * (`addr` + `path`, Range and HEAD by nginx), through a forward proxy, and over a unix socket
 * (upstream asks for "/" whatever the blob); every file's md5 equals the localfs mount's.
 */

interface Image {
  dir: string;
  src: string;
  boot: string;
  blobs: string;
  blobId: string;
}

let shared: Image | undefined;

async function image(): Promise<Image> {
  if (shared !== undefined) return shared;
  const { dir } = tmp();
  const src = join(dir, 'src');
  const blobs = join(dir, 'blobs');
  mkdirSync(src);
  mkdirSync(blobs);
  await makeEveryEntryTree(src, { bigDir: 30 });
  const rnd = prng(5);
  for (const name of ['big1', 'big2']) {
    const b = Buffer.alloc(1024 * 1024 + 333);
    for (let i = 0; i < b.length; i++) b[i] = Math.floor(rnd() * 256);
    writeFileSync(join(src, name), b);
  }
  const boot = join(dir, 'image.boot');
  await createImage(src, boot, blobs, ['--chunk-size', '0x40000']);
  const ids = readdirSync(blobs);
  assert.equal(ids.length, 1, 'one data blob');
  shared = { dir, src, boot, blobs, blobId: ids[0]! };
  return shared;
}

test.after(() => {
  if (shared !== undefined) rmSync(shared.dir, { recursive: true, force: true });
});

/** Mount `boot` with config file `cfg` and return every file's md5; the daemon stops cleanly. */
async function md5sWith(
  t: import('node:test').TestContext,
  img: Image,
  backend: Record<string, unknown>,
): Promise<[string, string][]> {
  const { dir, mnt } = tmp();
  let d: Daemon | undefined;
  t.after(() => {
    cleanup(d, mnt);
    rmSync(dir, { recursive: true, force: true });
  });
  const cfg = join(dir, 'config.json');
  writeFileSync(cfg, JSON.stringify({ device: { backend }, mode: 'direct' }));
  d = await startDaemon(mnt, ['--config', cfg, '--bootstrap', img.boot]);
  const sums = await md5sUnder(mnt);
  await stopDaemon(d);
  d = undefined;
  return sums;
}

async function localfsMd5s(t: import('node:test').TestContext, img: Image): Promise<[string, string][]> {
  const { dir, mnt } = tmp();
  let d: Daemon | undefined;
  t.after(() => {
    cleanup(d, mnt);
    rmSync(dir, { recursive: true, force: true });
  });
  d = await startDaemon(mnt, ['--config', v1Config(dir, img.blobs), '--bootstrap', img.boot]);
  const sums = await md5sUnder(mnt);
  await stopDaemon(d);
  d = undefined;
  return sums;
}

test('http-proxy backend over HTTP: addr + path + blob id served by nginx (Range, HEAD), directly and through a forward proxy; every md5 equals the localfs mount', async (t) => {
  if (!canFuse(t) || !needNginx(t)) return;
  const img = await image();
  const [port, proxyPort] = [await freePort(), await freePort()];
  const server = await startNginx({
    servers: staticBlobs(`127.0.0.1:${port}`, '/ns/repo/blobs', img.blobs),
    ports: [port],
  });
  t.after(() => server.dispose());
  const proxy = await startNginx({ servers: forwardProxy(proxyPort), ports: [proxyPort] });
  t.after(() => proxy.dispose());
  const want = await localfsMd5s(t, img);
  assert.ok(want.length > 30, `${want.length} files`);

  const direct = await md5sWith(t, img, {
    type: 'http-proxy',
    config: { addr: `http://127.0.0.1:${port}`, path: '/ns/repo/blobs' },
  });
  assert.deepEqual(direct, want);
  const lines = server.access();
  assert.ok(
    lines.some((l) => l.startsWith(`HEAD /ns/repo/blobs/${img.blobId} 200`)),
    lines.slice(0, 5).join('\n'),
  );
  assert.ok(
    lines.some((l) => l.startsWith(`GET /ns/repo/blobs/${img.blobId} 206`) && /range=bytes=\d+-\d+/.test(l)),
    lines.slice(0, 5).join('\n'),
  );

  const viaProxy = await md5sWith(t, img, {
    type: 'http-proxy',
    config: {
      addr: `http://127.0.0.1:${port}`,
      path: '/ns/repo/blobs',
      proxy: { url: `http://127.0.0.1:${proxyPort}`, fallback: false },
    },
  });
  assert.deepEqual(viaProxy, want);
  assert.ok(
    proxy.access().some((l) => l.includes(`/ns/repo/blobs/${img.blobId}`) && l.includes('p2p=true')),
    proxy.access().slice(0, 5).join('\n'),
  );
});

test('http-proxy backend over a unix socket: every request is for "/" (upstream quirk), served by nginx listening on the socket; md5s equal the localfs mount', async (t) => {
  if (!canFuse(t) || !needNginx(t)) return;
  const img = await image();
  const { dir } = tmp();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const sock = join(dir, 'blobs.sock');
  const server = await startNginx({
    servers: `server {
  listen unix:${sock};
  location = / { root ${img.blobs}; rewrite ^ /${img.blobId} break; }
}`,
    sockets: [sock],
  });
  t.after(() => server.dispose());
  const got = await md5sWith(t, img, { type: 'http-proxy', config: { addr: sock, path: '/ignored' } });
  assert.deepEqual(got, await localfsMd5s(t, img));
  const lines = server.access();
  assert.ok(lines.length >= 2);
  assert.ok(
    lines.every((l) => / \/ 20[06] /.test(l)),
    lines.slice(0, 5).join('\n'),
  );
});

test('http-proxy backend: a missing socket or no addr is refused at start with a clear error', async (t) => {
  if (!canFuse(t)) return;
  const img = await image();
  const { dir, mnt } = tmp();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  for (const [config, msg] of [
    [{ addr: join(dir, 'nope.sock') }, /socket ".*nope\.sock" does not exist/],
    [{ addr: 'ftp://127.0.0.1/x' }, /addr/],
  ] as const) {
    const cfg = join(dir, 'c.json');
    writeFileSync(
      cfg,
      JSON.stringify({ device: { backend: { type: 'http-proxy', config } }, mode: 'direct' }),
    );
    await assert.rejects(startDaemon(mnt, ['--config', cfg, '--bootstrap', img.boot]), msg);
  }
});
