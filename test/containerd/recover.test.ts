import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { needContainerd, startContainerd } from '../helpers/containerd.js';
import { makeLayeredLayout, pushLayout } from '../helpers/oci-images.js';
import { needRegistry, startRegistry, type TestRegistry } from '../helpers/registry.js';
import { binPath } from '../helpers/run-bin.js';
import { Agent, request } from 'undici';
import {
  convertToNydus,
  nydusdPids,
  scrubSnapshotter,
  snapshotterRoot,
  startSnapshotter,
} from '../helpers/snapshotter.js';

/**
 * nydusd killed under a running container (upstream-surface §7.8): the snapshotter keeps each
 * daemon's FUSE connection and state through its supervisor, and a new nydusd takes the same
 * mount over, so the container's overlay keeps working. A reader in the container checks the
 * files over and over while the test drops the page cache, so its reads reach nydusd.
 */

let reg: TestRegistry | undefined;
let image: string | undefined;

async function nydusImage(): Promise<string> {
  if (image !== undefined) return image;
  reg = await startRegistry();
  const layered = await makeLayeredLayout();
  const src = await pushLayout(layered.dir, layered.tag, reg.host, 'layered:latest');
  image = `${reg.host}/layered:nydus`;
  await convertToNydus(src.ref, image);
  return image;
}

test.after(async () => {
  await reg?.stop();
});

const READER = [
  'n=0',
  'want=$(md5sum /data/big.bin | cut -d" " -f1)',
  'while [ ! -e /out/stop ]; do',
  '  got=$(md5sum /data/big.bin | cut -d" " -f1) || echo "ERROR md5sum failed" >> /out/log',
  '  [ "$got" = "$want" ] || echo "ERROR digest $got" >> /out/log',
  '  cat /data/keep.txt > /dev/null || echo "ERROR cat failed" >> /out/log',
  '  n=$((n+1)); echo $n > /out/count',
  'done',
].join('\n');

async function scenario(policy: 'failover' | 'restart', trigger: 'kill' | 'upgrade' = 'kill'): Promise<void> {
  const ref = await nydusImage();
  const base = snapshotterRoot();
  const out = mkdtempSync(join(tmpdir(), `nydus-rec-${policy}-`));
  writeFileSync(join(out, 'log'), '');
  const sn = await startSnapshotter({
    root: base,
    toml: [
      'version = 1',
      '[daemon]',
      `recover_policy = "${policy}"`,
      '[system]',
      'enable = true',
      `address = "${join(base, 'system.sock')}"`,
    ].join('\n'),
    template: {
      device: {
        backend: {
          type: 'registry',
          config: { scheme: 'http', timeout: 10, connect_timeout: 5, retry_limit: 2 },
        },
        cache: { type: 'blobcache', config: { work_dir: 'cache' } },
      },
      mode: 'direct',
      fs_prefetch: { enable: false },
    },
  });
  const ctd = await startContainerd({ snapshotterSock: sn.sock });
  const stopReader = (): void => writeFileSync(join(out, 'stop'), '');
  try {
    const pull = await ctd.ctr(['image', 'rpull', '--plain-http', '--snapshotter', 'nydus', ref], {
      remote: true,
      timeoutMs: 120_000,
    });
    assert.equal(pull.code, 0, pull.stderr);
    const run = await ctd.ctr([
      'run',
      '-d',
      '--snapshotter',
      'nydus',
      '--mount',
      `type=bind,src=${out},dst=/out,options=rbind:rw`,
      ref,
      `reader-${policy}`,
      '/bin/sh',
      '-c',
      READER,
    ]);
    assert.equal(run.code, 0, `${run.stderr}\n${sn.output().slice(-3000)}`);
    const count = (): number => Number(readFileSync(join(out, 'count'), 'utf8').trim() || '0');
    const dropCaches = (): void => writeFileSync('/proc/sys/vm/drop_caches', '3');
    let deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      try {
        if (count() >= 2) break;
      } catch {
        // not written yet
      }
      await sleep(100);
    }
    assert.ok(count() >= 2, `the reader runs: ${readFileSync(join(out, 'log'), 'utf8')}`);

    const before = nydusdPids(sn.root);
    assert.equal(before.length, 1);
    dropCaches();
    if (trigger === 'kill') {
      process.kill(before[0]!, 'SIGKILL');
      // The snapshotter sees the death and a successor takes the mount over.
      deadline = Date.now() + 30_000;
      while (Date.now() < deadline && !/took over its mount|running again/.test(sn.output())) {
        dropCaches();
        await sleep(100);
      }
      assert.match(sn.output(), /took over its mount/, sn.output().slice(-4000));
    } else {
      const sys = new Agent({ connect: { socketPath: join(base, 'system.sock') } });
      const dropping = setInterval(dropCaches, 100);
      try {
        const r = await request('http://localhost/api/v1/daemons/upgrade', {
          method: 'PUT',
          dispatcher: sys,
          body: JSON.stringify({ nydusd_path: binPath('nydusd'), version: 'test', policy: 'rolling' }),
        });
        assert.equal(r.statusCode, 200, `${await r.body.text()}\n${sn.output().slice(-4000)}`);
        await r.body.dump();
        const daemons = (await (
          await request('http://localhost/api/v1/daemons', { dispatcher: sys })
        ).body.json()) as Array<{
          api_socket: string;
          pid: number;
        }>;
        assert.match(daemons[0]!.api_socket, /api1\.sock$/);
      } finally {
        clearInterval(dropping);
        await sys.close();
      }
    }
    const after = nydusdPids(sn.root);
    assert.equal(after.length, 1);
    assert.notEqual(after[0], before[0]);
    // Reads keep going through the new daemon.
    const n = count();
    deadline = Date.now() + 20_000;
    while (Date.now() < deadline && count() < n + 3) {
      dropCaches();
      await sleep(100);
    }
    assert.ok(count() >= n + 3, 'the reader goes on after the takeover');
    stopReader();
    assert.equal(
      readFileSync(join(out, 'log'), 'utf8'),
      '',
      'the reader in the container never saw an error',
    );
  } finally {
    stopReader();
    await ctd.stop();
    await sn.stop().catch(() => undefined);
    await scrubSnapshotter(base);
    rmSync(out, { recursive: true, force: true });
  }
}

test('recover_policy failover: nydusd killed under a running container; a successor takes the mount over and the reader in the container never sees an error', async (t) => {
  if (!needContainerd(t) || !needRegistry(t)) return;
  await scenario('failover');
});

test('recover_policy restart (the default): nydusd killed under a running container; the container keeps reading through the restarted daemon', async (t) => {
  if (!needContainerd(t) || !needRegistry(t)) return;
  await scenario('restart');
});

test('hot upgrade through the system controller (PUT /api/v1/daemons/upgrade): the new nydusd takes the mount over while the container reads, with no error', async (t) => {
  if (!needContainerd(t) || !needRegistry(t)) return;
  await scenario('failover', 'upgrade');
});
