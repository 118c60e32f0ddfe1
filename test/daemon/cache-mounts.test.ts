import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  closeSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { RafsImage } from '../../src/rafs/image.js';
import { loadBootstrapFile } from '../../src/rafs/open.js';
import { LocalFsBlobSource } from '../../src/storage/localfs.js';
import { curl } from '../helpers/api.js';
import { makeEveryEntryTree } from '../helpers/fs-tree.js';
import {
  canFuse,
  cleanup,
  sh,
  startDaemon,
  stopDaemon,
  tmp,
  WAIT_MS,
  type Daemon,
  createImage,
  md5All,
} from '../helpers/nydusd.js';
import { prng } from '../helpers/prng.js';

/**
 * The blob cache, digest validation and prefetch through real mounts: many concurrent readers,
 * a restart that must be served from the persisted cache alone, a corrupted blob.
 */

function v1(dir: string, name: string, doc: Record<string, unknown>): string {
  const p = join(dir, name);
  writeFileSync(p, JSON.stringify(doc));
  return p;
}

function blobCacheConfig(
  blobDir: string,
  cacheDir: string,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    device: {
      backend: { type: 'localfs', config: { dir: blobDir } },
      cache: { type: 'blobcache', config: { work_dir: cacheDir } },
    },
    mode: 'direct',
    digest_validate: true,
    ...extra,
  };
}

test('16 parallel readers hashing every file get the right sums; after a restart the same image is served from the persisted cache with zero backend reads', async (t) => {
  if (!canFuse(t)) return;
  const { dir, mnt } = tmp();
  const src = join(dir, 'src');
  const blobs = join(dir, 'blobs');
  const cache = join(dir, 'cache');
  const sock = join(dir, 'api.sock');
  mkdirSync(src);
  mkdirSync(blobs);
  let d: Daemon | undefined;
  try {
    await makeEveryEntryTree(src, { bigDir: 400 });
    // Plus files spanning several chunks, shared chunks and odd sizes.
    const rnd = prng(7);
    const big = Buffer.alloc(5 * 1024 * 1024 + 777);
    for (let i = 0; i < big.length; i++) big[i] = Math.floor(rnd() * 256);
    writeFileSync(join(src, 'big1'), big);
    writeFileSync(join(src, 'big2'), big.subarray(1024 * 1024));
    const boot = join(dir, 'image.boot');
    await createImage(src, boot, blobs, ['--chunk-size', '0x100000']);
    const want = await md5All(src);
    const cfg = v1(dir, 'cfg.json', blobCacheConfig(blobs, cache));

    d = await startDaemon(mnt, [
      '--config',
      cfg,
      '--bootstrap',
      boot,
      '--apisock',
      sock,
      '--thread-num',
      '8',
    ]);
    const sums = await Promise.all(Array.from({ length: 16 }, () => md5All(mnt)));
    for (const s of sums) assert.equal(s, want);
    const be1 = (await curl(sock, 'GET', '/api/v1/metrics/backend')).json as { read_count: number };
    assert.ok(be1.read_count > 0, 'the first pass read the backend');
    const bc = await curl(sock, 'GET', '/api/v1/metrics/blobcache');
    assert.equal(bc.status, 200, bc.body);
    const underlying = (bc.json as { underlying_files: string[] }).underlying_files;
    assert.ok(
      underlying.length >= 1 && underlying.every((f) => f.startsWith(cache)),
      JSON.stringify(bc.json),
    );
    await stopDaemon(d);
    d = undefined;
    assert.ok(
      readdirSync(cache).some((f) => f.endsWith('.blob.data')),
      `cache files: ${readdirSync(cache).join(', ')}`,
    );

    // Restart on the same cache: every byte comes from it.
    d = await startDaemon(mnt, ['--config', cfg, '--bootstrap', boot, '--apisock', sock]);
    assert.equal(await md5All(mnt), want);
    const be2 = (await curl(sock, 'GET', '/api/v1/metrics/backend')).json as {
      read_count: number;
      read_amount_total: number;
    };
    assert.equal(be2.read_count, 0, `backend reads after restart: ${JSON.stringify(be2)}`);
    assert.equal(be2.read_amount_total, 0);
    await stopDaemon(d);
    d = undefined;
  } finally {
    cleanup(d, mnt);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('one flipped byte in a blob with digest_validate: EIO for the files sharing that chunk only, the others read fine, the event is recorded', async (t) => {
  if (!canFuse(t)) return;
  const { dir, mnt } = tmp();
  const src = join(dir, 'src');
  const blobs = join(dir, 'blobs');
  const sock = join(dir, 'api.sock');
  mkdirSync(src);
  mkdirSync(blobs);
  let d: Daemon | undefined;
  try {
    const rnd = prng(11);
    const bytes = (n: number): Buffer => {
      const b = Buffer.alloc(n);
      for (let i = 0; i < n; i++) b[i] = Math.floor(rnd() * 256);
      return b;
    };
    const shared = bytes(300_000);
    writeFileSync(join(src, 'victim'), shared);
    writeFileSync(join(src, 'victim-copy'), shared);
    writeFileSync(join(src, 'bystander'), bytes(300_000));
    writeFileSync(join(src, 'small'), 'hello\n');
    const boot = join(dir, 'image.boot');
    await createImage(src, boot, blobs, ['--compressor', 'none']);

    // Where the victim's chunk sits in the blob.
    const loaded = await loadBootstrapFile(boot);
    const image = new RafsImage(loaded.bootstrap, new LocalFsBlobSource({ dir: blobs }));
    const ino = image.lookupPath('/victim')!.ino;
    const [chunk] = await image.chunks(ino);
    await image.close();
    const blobPath = join(blobs, loaded.bootstrap.blobs[chunk!.blobIndex]!.blobId);
    const fd = openSync(blobPath, 'r+');
    const at = chunk!.compressedOffset + 1234;
    const one = Buffer.alloc(1);
    readSync(fd, one, 0, 1, at);
    one[0] = one[0]! ^ 0x40;
    writeSync(fd, one, 0, 1, at);
    closeSync(fd);

    const cfg = v1(dir, 'cfg.json', {
      device: { backend: { type: 'localfs', config: { dir: blobs } } },
      mode: 'direct',
      digest_validate: true,
    });
    d = await startDaemon(mnt, ['--config', cfg, '--bootstrap', boot, '--apisock', sock]);
    for (const f of ['victim', 'victim-copy']) {
      assert.throws(
        () => readFileSync(join(mnt, f)),
        (e: NodeJS.ErrnoException) => e.code === 'EIO',
        f,
      );
    }
    assert.ok(readFileSync(join(mnt, 'bystander')).length === 300_000);
    assert.equal(readFileSync(join(mnt, 'small'), 'utf8'), 'hello\n');
    const ev = await curl(sock, 'GET', '/api/v1/daemon/events');
    assert.equal(ev.status, 200, ev.body);
    const events = ev.json as { total_errors: number; errors: string[] };
    assert.ok(events.total_errors >= 1, ev.body);
    assert.match(events.errors.join('\n'), /digest/i);
    // The daemon keeps serving.
    assert.equal(readFileSync(join(mnt, 'small'), 'utf8'), 'hello\n');
    await stopDaemon(d);
    d = undefined;
  } finally {
    cleanup(d, mnt);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--prefetch-files with fs_prefetch fills the blob cache in the background: a later read needs no backend read', async (t) => {
  if (!canFuse(t)) return;
  const { dir, mnt } = tmp();
  const src = join(dir, 'src');
  const blobs = join(dir, 'blobs');
  const cache = join(dir, 'cache');
  const sock = join(dir, 'api.sock');
  mkdirSync(join(src, 'hot'), { recursive: true });
  mkdirSync(blobs);
  let d: Daemon | undefined;
  try {
    const rnd = prng(5);
    for (let i = 0; i < 8; i++) {
      const b = Buffer.alloc(200_000 + i);
      for (let k = 0; k < b.length; k++) b[k] = Math.floor(rnd() * 256);
      writeFileSync(join(src, 'hot', `h${i}`), b);
      writeFileSync(join(src, `cold${i}`), b.subarray(7));
    }
    const boot = join(dir, 'image.boot');
    await createImage(src, boot, blobs);
    const list = join(dir, 'prefetch.txt');
    writeFileSync(list, '/hot\n\n/does-not-exist\n');
    const cfg = v1(
      dir,
      'cfg.json',
      blobCacheConfig(blobs, cache, {
        fs_prefetch: { enable: true, threads_count: 2, merging_size: 131072, bandwidth_rate: 0 },
      }),
    );
    d = await startDaemon(mnt, [
      '--config',
      cfg,
      '--bootstrap',
      boot,
      '--apisock',
      sock,
      '--prefetch-files',
      list,
    ]);
    // Wait (bounded) for the prefetch to finish.
    const deadline = Date.now() + WAIT_MS;
    let bc:
      { prefetch_data_amount: number; prefetch_end_time_secs: number; prefetch_workers: number } | undefined;
    for (;;) {
      bc = (await curl(sock, 'GET', '/api/v1/metrics/blobcache')).json as typeof bc;
      // Workers go back to 0 when the whole prefetch has ended.
      if (bc!.prefetch_end_time_secs > 0 && bc!.prefetch_workers === 0) break;
      if (Date.now() > deadline) assert.fail(`prefetch did not finish: ${JSON.stringify(bc)}`);
      await sleep(50);
    }
    assert.ok(bc!.prefetch_data_amount >= 8 * 200_000, JSON.stringify(bc));
    const before = ((await curl(sock, 'GET', '/api/v1/metrics/backend')).json as { read_count: number })
      .read_count;
    const got = await sh('sh', ['-c', 'cat hot/* | md5sum'], mnt);
    const want = await sh('sh', ['-c', 'cat hot/* | md5sum'], src);
    assert.equal(got, want);
    const afterReads = ((await curl(sock, 'GET', '/api/v1/metrics/backend')).json as { read_count: number })
      .read_count;
    assert.equal(afterReads, before, 'the prefetched files came from the cache');
    assert.match(d.stderr(), /does-not-exist/, 'a listed path missing from the image is reported');
    await stopDaemon(d);
    d = undefined;
  } finally {
    cleanup(d, mnt);
    rmSync(dir, { recursive: true, force: true });
  }
});
