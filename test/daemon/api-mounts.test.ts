import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { curl, localfsConfigText } from '../helpers/api.js';
import { diffSnapshots, snapshot } from '../helpers/fs-tree.js';
import {
  canFuse,
  cleanup,
  mounted,
  startDaemon,
  tmp,
  WAIT_MS,
  type Daemon,
  createImage,
  mountReadAheadKb,
} from '../helpers/nydusd.js';
import { prng } from '../helpers/prng.js';
import { runBin } from '../helpers/run-bin.js';

/**
 * nydusd's API end to end: a daemon started without --bootstrap serves an empty pseudo root;
 * images are mounted and umounted at pseudo paths with curl (as the upstream docs do), read
 * through the kernel, shown by nydusctl, counted by the metrics.
 */

/** A small tree of `files` files with seeded contents; returns the total bytes. */
function makeTree(dir: string, seed: number, files: number): number {
  const rnd = prng(seed);
  let total = 0;
  mkdirSync(join(dir, 'sub', 'deeper'), { recursive: true });
  for (let i = 0; i < files; i++) {
    const size = Math.floor(rnd() * 200_000);
    const buf = Buffer.alloc(size);
    // A third of the files compress well, the rest not at all.
    const range = i % 3 === 0 ? 4 : 256;
    for (let k = 0; k < size; k++) buf[k] = Math.floor(rnd() * range);
    const where =
      i % 3 === 0
        ? join(dir, `f${i}`)
        : i % 3 === 1
          ? join(dir, 'sub', `g${i}`)
          : join(dir, 'sub', 'deeper', `h${i}`);
    writeFileSync(where, buf);
    total += size;
  }
  return total;
}

function mountBody(source: string, blobDir: string): string {
  return JSON.stringify({
    source,
    fs_type: 'rafs',
    config: localfsConfigText(blobDir, { iostats_files: true }),
  });
}

test('nydusd without --bootstrap: curl mounts images at /a and /b/c, both read right, one is umounted, nydusctl shows them, metrics count the reads', async (t) => {
  if (!canFuse(t)) return;
  const { dir, mnt } = tmp();
  const sock = join(dir, 'api.sock');
  const blobs = join(dir, 'blobs');
  mkdirSync(blobs);
  let d: Daemon | undefined;
  try {
    const srcA = join(dir, 'srcA');
    const srcB = join(dir, 'srcB');
    mkdirSync(srcA);
    mkdirSync(srcB);
    const bytesA = makeTree(srcA, 1, 30);
    makeTree(srcB, 2, 20);
    await createImage(srcA, join(dir, 'a.boot'), blobs);
    await createImage(srcB, join(dir, 'b.boot'), blobs, ['--fs-version', '5', '--compressor', 'lz4_block']);

    d = await startDaemon(mnt, ['--apisock', sock]);
    assert.deepEqual(readdirSync(mnt), [], 'an empty root until something is mounted');
    // No image at start: the kernel's own read-ahead (at most 128 KiB), not the 1 MiB of a daemon
    // started with a local image, since images mounted later are most often remote.
    assert.ok(mountReadAheadKb(mnt) <= 128, `read_ahead_kb ${mountReadAheadKb(mnt)}`);
    const info0 = await curl(sock, 'GET', '/api/v1/daemon');
    assert.equal(info0.status, 200);
    assert.equal((info0.json as { state: string }).state, 'RUNNING');

    let r = await curl(sock, 'POST', '/api/v1/mount?mountpoint=/a', mountBody(join(dir, 'a.boot'), blobs));
    assert.equal(r.status, 204, r.body);
    r = await curl(sock, 'POST', '/api/v1/mount?mountpoint=/b/c', mountBody(join(dir, 'b.boot'), blobs));
    assert.equal(r.status, 204, r.body);
    assert.deepEqual(readdirSync(mnt).sort(), ['a', 'b']);
    assert.deepEqual(readdirSync(join(mnt, 'b')), ['c']);

    // Both images read back equal to their sources (every byte, mode, owner, mtime).
    assert.deepEqual(
      diffSnapshots(snapshot(srcA, { skipRoot: true }), snapshot(join(mnt, 'a'), { skipRoot: true })),
      [],
    );
    assert.deepEqual(
      diffSnapshots(snapshot(srcB, { skipRoot: true }), snapshot(join(mnt, 'b', 'c'), { skipRoot: true })),
      [],
    );

    // Chunk memory an image holds after its reads (recent chunks, free pooled buffers) goes once
    // no one has read it for a few seconds: a shared daemon keeps no MiB per image it served once.
    interface Mem {
      instances: {
        mountpoint: string;
        recent: { chunks: number };
        buffer_pool: { idle_slots: number } | null;
      }[];
    }
    const heldBy = async (mp: string): Promise<number> => {
      const r = await curl(sock, 'GET', '/api/v1/daemon/memory');
      assert.equal(r.status, 200, r.body);
      const i = (r.json as Mem).instances.find((x) => x.mountpoint === mp);
      assert.ok(i !== undefined, `no instance ${mp} in ${r.body}`);
      return i.recent.chunks + (i.buffer_pool?.idle_slots ?? 0);
    };
    assert.ok((await heldBy('/b/c')) > 0, 'chunk memory held right after the reads');
    const until = Date.now() + WAIT_MS;
    while ((await heldBy('/b/c')) + (await heldBy('/a')) > 0 && Date.now() < until) await sleep(250);
    assert.equal(
      (await heldBy('/b/c')) + (await heldBy('/a')),
      0,
      'idle images let go of their chunk memory',
    );

    // nydusctl shows both mounts.
    const ctl = await runBin('nydusctl', ['--sock', sock, 'info'], { timeoutMs: WAIT_MS });
    assert.equal(ctl.code, 0, ctl.stderr);
    assert.match(ctl.stdout, /\/a\b/);
    assert.match(ctl.stdout, /\/b\/c/);
    const raw = await runBin('nydusctl', ['--sock', sock, '--raw', 'info'], { timeoutMs: WAIT_MS });
    assert.equal(raw.code, 0, raw.stderr);
    const rawInfo = JSON.parse(raw.stdout) as {
      backend_collection: Record<string, { backend_type: string }>;
    };
    assert.deepEqual(Object.keys(rawInfo.backend_collection).sort(), ['/a', '/b/c']);
    assert.equal(rawInfo.backend_collection['/a']!.backend_type, 'Rafs');

    // Metrics: every byte of /a was read once through the daemon (the page cache keeps the rest).
    const m = await curl(sock, 'GET', '/api/v1/metrics?id=/a');
    assert.equal(m.status, 200, m.body);
    const fs = m.json as { data_read: number; fop_hits: number[]; id: string };
    assert.equal(fs.id, '/a');
    assert.ok(fs.data_read >= bytesA, `data_read ${fs.data_read} < ${bytesA}`);
    assert.ok(fs.fop_hits[4]! > 0, 'reads counted');
    assert.ok(
      fs.fop_hits[9]! + fs.fop_hits[10]! + fs.fop_hits[11]! > 0,
      'lookups or directory reads counted',
    );
    const files = await curl(sock, 'GET', '/api/v1/metrics/files?id=/a');
    assert.equal(files.status, 200, files.body);
    assert.ok(Object.keys(files.json as object).length >= 30, 'per-file counters with iostats_files');
    const be = await curl(sock, 'GET', '/api/v1/metrics/backend?id=/a');
    assert.equal(be.status, 200, be.body);
    assert.ok((be.json as { read_amount_total: number }).read_amount_total > 0);
    const noId = await curl(sock, 'GET', '/api/v1/metrics');
    assert.equal(noId.status, 404, 'two instances and no id');
    assert.match(noId.body, /NoCounter/);
    const backendInfo = await curl(sock, 'GET', '/api/v1/daemon/backend?mountpoint=/b/c');
    assert.equal(backendInfo.status, 200, backendInfo.body);

    // Bad requests get clear errors and change nothing.
    const bad: [string, string, string | undefined, number][] = [
      ['POST', '/api/v1/mount?mountpoint=/x', '{not json', 400],
      ['POST', '/api/v1/mount?mountpoint=/b/c', mountBody(join(dir, 'a.boot'), blobs), 400],
      ['POST', '/api/v1/mount?mountpoint=/y', mountBody(join(dir, 'missing.boot'), blobs), 400],
      [
        'POST',
        '/api/v1/mount?mountpoint=/z',
        JSON.stringify({
          source: join(dir, 'a.boot'),
          fs_type: 'rafs',
          config: '{"version": 2, "backend": {"type": 7}}',
        }),
        400,
      ],
      ['DELETE', '/api/v1/mount?mountpoint=/nope', undefined, 404],
      ['GET', '/api/v1/nothing-here', undefined, 404],
    ];
    for (const [method, path, body, status] of bad) {
      const e = await curl(sock, method, path, body);
      assert.equal(e.status, status, `${method} ${path}: ${e.body}`);
      const err = e.json as { code: string; message: string };
      assert.equal(err.code, 'UNDEFINED');
      assert.ok(err.message.length > 0);
      assert.doesNotMatch(err.message, /\n\s+at /, 'no stack trace');
    }
    assert.deepEqual(readdirSync(mnt).sort(), ['a', 'b'], 'nothing changed');

    // Umount /a: it disappears, /b/c keeps serving.
    r = await curl(sock, 'DELETE', '/api/v1/mount?mountpoint=/a');
    assert.equal(r.status, 204, r.body);
    assert.deepEqual(readdirSync(mnt), ['b']);
    assert.equal(existsSync(join(mnt, 'a')), false);
    assert.deepEqual(
      diffSnapshots(snapshot(srcB, { skipRoot: true }), snapshot(join(mnt, 'b', 'c'), { skipRoot: true })),
      [],
    );
    const after = await curl(sock, 'GET', '/api/v1/daemon');
    assert.deepEqual(Object.keys((after.json as { backend_collection: object }).backend_collection), [
      '/b/c',
    ]);

    // Mount again at /a (same path, new instance), through nydusctl this time.
    writeFileSync(join(dir, 'a.json'), localfsConfigText(blobs));
    const nm = await runBin(
      'nydusctl',
      ['--sock', sock, 'mount', '-s', join(dir, 'a.boot'), '-c', join(dir, 'a.json'), '-m', '/a'],
      {
        timeoutMs: WAIT_MS,
      },
    );
    assert.equal(nm.code, 0, nm.stderr);
    assert.deepEqual(
      diffSnapshots(snapshot(srcA, { skipRoot: true }), snapshot(join(mnt, 'a'), { skipRoot: true })),
      [],
    );
    const nu = await runBin('nydusctl', ['--sock', sock, 'umount', '-m', '/a'], { timeoutMs: WAIT_MS });
    assert.equal(nu.code, 0, nu.stderr);
    assert.equal(existsSync(join(mnt, 'a')), false);

    // Exit through the API: 204, then the daemon unmounts and exits 0.
    r = await curl(sock, 'PUT', '/api/v1/daemon/exit');
    assert.equal(r.status, 204, r.body);
    const code = await Promise.race([d.exited, sleep(WAIT_MS).then(() => 'hung' as const)]);
    assert.equal(code, 0, d.stderr());
    assert.equal(mounted(mnt), false);
    assert.equal(existsSync(sock), false, 'the socket file is removed at exit');
  } finally {
    cleanup(d, mnt);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the legacy PUT /api/v1/mount body of the virtio-fs doc (seed 002, its missing quote included) mounts an image', async (t) => {
  if (!canFuse(t)) return;
  const { dir, mnt } = tmp();
  const sock = join(dir, 'api.sock');
  const blobs = join(dir, 'blobs');
  mkdirSync(blobs);
  let d: Daemon | undefined;
  try {
    const src = join(dir, 'src');
    mkdirSync(src);
    makeTree(src, 3, 5);
    const boot = join(dir, 'image.boot');
    await createImage(src, boot, blobs);
    const cfg = join(dir, 'config.json');
    writeFileSync(cfg, localfsConfigText(blobs));
    d = await startDaemon(mnt, ['--apisock', sock]);
    // What the doc's shell line sends: the quote before `config` is lost to the shell.
    const body = `{"source":"${boot}","fstype":"rafs","mountpoint":"/foo/bar",config":"${cfg}"}`;
    const r = await curl(sock, 'PUT', '/api/v1/mount', body);
    assert.equal(r.status, 204, r.body);
    assert.deepEqual(
      diffSnapshots(snapshot(src, { skipRoot: true }), snapshot(join(mnt, 'foo', 'bar'), { skipRoot: true })),
      [],
    );
    assert.ok(readFileSync(join(mnt, 'foo', 'bar', 'f0')).length >= 0);
  } finally {
    if (d !== undefined) d.child.kill('SIGTERM');
    if (d !== undefined) await Promise.race([d.exited, sleep(WAIT_MS)]);
    cleanup(d, mnt);
    rmSync(dir, { recursive: true, force: true });
  }
});
