import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { RegistryClient } from '../../src/registry/client.js';
import { curl } from '../helpers/api.js';
import { makeEveryEntryTree } from '../helpers/fs-tree.js';
import {
  canFuse,
  cleanup,
  createImage,
  startDaemon,
  stopDaemon,
  md5All,
  tmp,
  type Daemon,
} from '../helpers/nydusd.js';
import { prng } from '../helpers/prng.js';
import { blobDataPath, needRegistry, startRegistry, type TestRegistry } from '../helpers/registry.js';

/**
 * nydusd's registry backend against Debian's docker-registry: an image whose blob lives only in
 * the registry, read lazily through a real FUSE mount (seed 000's registry.json), then the
 * faults: the registry going away and coming back, wrong and hot-updated credentials, tokens
 * that expire.
 */

interface Built {
  src: string;
  boot: string;
  blobDigests: string[];
  blobBytes: number;
}

/** Build an image of a tree with a few big random files, and push its blob(s) to `repo`. */
async function buildAndPush(dir: string, reg: TestRegistry, repo: string): Promise<Built> {
  const src = join(dir, 'src');
  const blobs = join(dir, 'blobs');
  mkdirSync(src);
  mkdirSync(blobs);
  await makeEveryEntryTree(src, { bigDir: 50 });
  const rnd = prng(11);
  for (const name of ['big1', 'big2', 'big3']) {
    const big = Buffer.alloc(3 * 1024 * 1024 + 123);
    for (let i = 0; i < big.length; i++) big[i] = Math.floor(rnd() * 256);
    writeFileSync(join(src, name), big);
  }
  writeFileSync(join(src, 'small.txt'), 'hello from the registry\n');
  const boot = join(dir, 'image.boot');
  await createImage(src, boot, blobs, ['--chunk-size', '0x100000']);
  const client = new RegistryClient(reg.host, {
    plainHttp: !reg.url.startsWith('https'),
    ...(reg.caFile !== undefined ? { caCertFiles: [reg.caFile] } : {}),
    ...(reg.user !== undefined ? { credentials: { username: reg.user, password: reg.pass! } } : {}),
  });
  const digests: string[] = [];
  let bytes = 0;
  try {
    for (const id of readdirSync(blobs)) {
      const path = join(blobs, id);
      const data = readFileSync(path);
      // The registry backend fetches sha256:<blob id>: the id must be the file's digest.
      assert.equal(createHash('sha256').update(data).digest('hex'), id, 'blob id = sha256 of the blob file');
      await client.repository(repo).pushBlob(`sha256:${id}`, data.length, path);
      digests.push(`sha256:${id}`);
      bytes += statSync(path).size;
    }
  } finally {
    await client.close();
  }
  return { src, boot, blobDigests: digests, blobBytes: bytes };
}

function registryConfig(
  dir: string,
  reg: TestRegistry,
  repo: string,
  extra: Record<string, unknown> = {},
  cache = true,
  validate = false,
): string {
  const p = join(dir, `registry-${Math.random().toString(36).slice(2)}.json`);
  const doc = {
    device: {
      backend: {
        type: 'registry',
        config: { scheme: 'http', host: reg.host, repo, timeout: 3, connect_timeout: 3, ...extra },
      },
      ...(cache ? { cache: { type: 'blobcache', config: { work_dir: join(dir, 'cache') } } } : {}),
    },
    digest_validate: validate,
    mode: 'direct',
  };
  writeFileSync(p, JSON.stringify(doc));
  return p;
}

interface BackendMetrics {
  read_count: number;
  read_errors: number;
  read_amount_total: number;
}

async function backendMetrics(sock: string): Promise<BackendMetrics> {
  const r = await curl(sock, 'GET', '/api/v1/metrics/backend');
  assert.equal(r.status, 200, r.body);
  return r.json as BackendMetrics;
}

/** The errno code of a failed read (EIO expected when a chunk cannot be fetched). */
async function readError(path: string): Promise<string | undefined> {
  try {
    await readFile(path);
    return undefined;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code;
  }
}

interface Served {
  reg: TestRegistry;
  img: Built;
  mnt: string;
  sock: string;
  daemon: Daemon;
}

/**
 * One registry (`regOpts`), the test image pushed to `repo`, and nydusd mounting it with the
 * registry backend (`backend` keys added to the config); `body` runs against the mount, then
 * the daemon must stop cleanly. Everything is torn down whatever happens.
 */
async function withRegistryMount(
  regOpts: Parameters<typeof startRegistry>[0],
  repo: string,
  backend: {
    repo?: string;
    keys?: Record<string, unknown>;
    cache?: boolean;
    validate?: boolean;
    /** Write the config file yourself (default: the v1 JSON of `registryConfig`). */
    config?: (reg: TestRegistry, dir: string) => string;
    daemonArgs?: (dir: string) => string[];
  },
  body: (s: Served) => Promise<void>,
): Promise<void> {
  const { dir, mnt } = tmp();
  const reg = await startRegistry(regOpts);
  const sock = join(dir, 'api.sock');
  let d: Daemon | undefined;
  try {
    const img = await buildAndPush(dir, reg, repo);
    const cfg =
      backend.config?.(reg, dir) ??
      registryConfig(dir, reg, backend.repo ?? repo, backend.keys, backend.cache ?? true, backend.validate);
    const extra = backend.daemonArgs?.(dir) ?? [];
    d = await startDaemon(mnt, ['--config', cfg, '--bootstrap', img.boot, '--apisock', sock, ...extra]);
    await body({ reg, img, mnt, sock, daemon: d });
    await stopDaemon(d);
    d = undefined;
  } finally {
    cleanup(d, mnt);
    await reg.stop();
  }
}

test('registry backend (plain HTTP, seed 000 config): a small read fetches a small part; the whole tree matches; the registry going away gives EIO for uncached reads only, and reads work again once it is back', async (t) => {
  if (!canFuse(t) || !needRegistry(t)) return;
  await withRegistryMount({}, 'test/image', {}, async ({ reg, img, mnt, sock }) => {
    // Lazy: one small file costs a small part of the blob.
    assert.equal(readFileSync(join(mnt, 'small.txt'), 'utf8'), 'hello from the registry\n');
    const m1 = await backendMetrics(sock);
    assert.ok(m1.read_count >= 1, JSON.stringify(m1));
    assert.ok(
      m1.read_amount_total < img.blobBytes / 4,
      `one small file fetched ${m1.read_amount_total} of ${img.blobBytes} bytes`,
    );

    // One big file read whole, then the registry goes away.
    assert.deepEqual(readFileSync(join(mnt, 'big1')), readFileSync(join(img.src, 'big1')));
    await reg.stop();
    // Cached data still reads; uncached data is an EIO for that read only.
    assert.deepEqual(readFileSync(join(mnt, 'big1')), readFileSync(join(img.src, 'big1')));
    assert.equal(await readError(join(mnt, 'big2')), 'EIO');
    const ev = await curl(sock, 'GET', '/api/v1/daemon/events');
    assert.ok((ev.json as { total_errors: number }).total_errors >= 1, ev.body);
    assert.ok(readdirSync(mnt).includes('big3'), 'metadata still answers');

    await reg.restart();
    assert.deepEqual(readFileSync(join(mnt, 'big2')), readFileSync(join(img.src, 'big2')));
    assert.equal(await md5All(mnt), await md5All(img.src));
    const m2 = await backendMetrics(sock);
    assert.ok(m2.read_errors >= 1, `failed reads are counted: ${JSON.stringify(m2)}`);
  });
});

test('registry backend: a blob missing from the registry is a warning at mount and an EIO on read', async (t) => {
  if (!canFuse(t) || !needRegistry(t)) return;
  // The config names a repo that does not hold the blob.
  await withRegistryMount({}, 'test/image', { repo: 'test/other', cache: false }, async ({ mnt, daemon }) => {
    assert.equal(await readError(join(mnt, 'small.txt')), 'EIO');
    assert.match(daemon.stderr(), /not in the registry|not found|BLOB_UNKNOWN/i);
  });
});

test('registry backend: a blob corrupted in the registry gives EIO with digest_validate, never wrong bytes, and other files still read', async (t) => {
  if (!canFuse(t) || !needRegistry(t)) return;
  await withRegistryMount({}, 'test/image', { cache: false, validate: true }, async ({ reg, img, mnt }) => {
    // Flip bytes in the middle of the stored blob: chunks there fail their digest.
    const data = blobDataPath(reg, img.blobDigests[0]!);
    const bytes = readFileSync(data);
    const at = Math.floor(bytes.length / 2);
    for (let i = 0; i < 4096; i++) bytes[at + i] = bytes[at + i]! ^ 0x5a;
    writeFileSync(data, bytes);
    const results = await Promise.all(
      ['big1', 'big2', 'big3'].map(async (f) => {
        try {
          const got = await readFile(join(mnt, f));
          assert.deepEqual(got, readFileSync(join(img.src, f)), `${f} read whole must be right`);
          return 'ok';
        } catch (e) {
          return (e as NodeJS.ErrnoException).code ?? String(e);
        }
      }),
    );
    assert.ok(results.includes('EIO'), `a file over the flipped bytes fails: ${results.join(', ')}`);
    assert.equal(readFileSync(join(mnt, 'small.txt'), 'utf8'), 'hello from the registry\n');
  });
});

test('registry backend over HTTPS with Basic auth, from a v2 TOML config (ca_cert_files): prefetch fills the blob cache in the background, and then every file reads with the registry gone', async (t) => {
  if (!canFuse(t) || !needRegistry(t)) return;
  const toml = (reg: TestRegistry, dir: string): string => {
    const p = join(dir, 'nydusd.toml');
    const auth = Buffer.from(`${reg.user}:${reg.pass}`).toString('base64');
    writeFileSync(
      p,
      [
        'version = 2',
        '[backend]',
        'type = "registry"',
        '[backend.registry]',
        'scheme = "https"',
        `host = "${reg.host}"`,
        'repo = "secure/image"',
        `auth = "${auth}"`,
        `ca_cert_files = ["${reg.caFile!}"]`,
        '[cache]',
        'type = "blobcache"',
        '[cache.filecache]',
        `work_dir = "${join(dir, 'cache')}"`,
        '[rafs.prefetch]',
        'enable = true',
        'threads = 2',
        '',
      ].join('\n'),
    );
    return p;
  };
  const list = (dir: string): string[] => {
    const p = join(dir, 'prefetch.list');
    writeFileSync(p, '/\n');
    return ['--prefetch-files', p];
  };
  const regOpts = { tls: true, htpasswd: { user: 'bob', pass: 'hunter2' } };
  await withRegistryMount(
    regOpts,
    'secure/image',
    { config: toml, daemonArgs: list },
    async ({ reg, img, mnt, sock, daemon }) => {
      const deadline = Date.now() + 60_000;
      for (;;) {
        const bc = (await curl(sock, 'GET', '/api/v1/metrics/blobcache')).json as {
          prefetch_end_time_secs: number;
          prefetch_workers: number;
        };
        // The end time moves with every request done; the workers go back to 0 at the very end.
        if (bc.prefetch_end_time_secs > 0 && bc.prefetch_workers === 0) break;
        assert.ok(
          Date.now() < deadline,
          `prefetch did not finish: ${JSON.stringify(bc)}: ${daemon.stderr()}`,
        );
        await sleep(100);
      }
      const fetched = await backendMetrics(sock);
      assert.ok(
        fetched.read_amount_total >= img.blobBytes / 2,
        `prefetch fetched ${JSON.stringify(fetched)}`,
      );
      assert.doesNotMatch(daemon.stderr(), /Prefetch .* failed/, 'every prefetch request succeeded');
      await reg.stop();
      assert.equal(await md5All(mnt), await md5All(img.src));
      assert.equal((await backendMetrics(sock)).read_errors, 0, 'nothing needed the registry after prefetch');
    },
  );
});

test('registry backend with token auth: wrong credentials give EIO, a hot update through PUT /api/v1/config makes reads work, and an expired token is renewed', async (t) => {
  if (!canFuse(t) || !needRegistry(t)) return;
  const bad = Buffer.from('alice:wrong').toString('base64');
  const regOpts = { token: { user: 'alice', pass: 'secret' } };
  await withRegistryMount(
    regOpts,
    'team/image',
    { keys: { auth: bad }, cache: false },
    async ({ reg, img, mnt, sock }) => {
      // The token issuer runs in this process: every read of the mount here must be asynchronous,
      // or the issuer could not answer the daemon while this process waits for the read.
      assert.equal(await readError(join(mnt, 'small.txt')), 'EIO');

      // Tokens from now on live 2 s: the daemon must renew them by itself.
      reg.tokenIssuer!.expiresIn = 2;
      const good = Buffer.from('alice:secret').toString('base64');
      const put = await curl(sock, 'PUT', '/api/v1/config?id=/', JSON.stringify({ registry_auth: good }));
      assert.equal(put.status, 204, put.body);
      const got = await curl(sock, 'GET', '/api/v1/config?id=/');
      assert.equal((got.json as { registry_auth?: string }).registry_auth, good);
      assert.equal(await readFile(join(mnt, 'small.txt'), 'utf8'), 'hello from the registry\n');

      const before = reg.tokenIssuer!.issued;
      assert.deepEqual(await readFile(join(mnt, 'big1')), readFileSync(join(img.src, 'big1')));
      await sleep(3000);
      assert.deepEqual(await readFile(join(mnt, 'big2')), readFileSync(join(img.src, 'big2')));
      assert.ok(reg.tokenIssuer!.issued > before, 'a new token was fetched after expiry');
    },
  );
});
