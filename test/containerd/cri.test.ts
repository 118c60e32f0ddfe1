import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { needContainerd, pushPauseImage, startContainerd, type Containerd } from '../helpers/containerd.js';
import { containerConfig, criClient, parseCriLog, podConfig, type CriClient } from '../helpers/cri.js';
import { makeLayeredLayout, pushLayout } from '../helpers/oci-images.js';
import { needRegistry, startRegistry, type TestRegistry } from '../helpers/registry.js';
import {
  convertToNydus,
  copyImage,
  mountsUnder,
  nydusdPids,
  pushWithoutTopLayer,
  scrubSnapshotter,
  type SnapshotterProc,
  snapshotterRoot,
  startSnapshotter,
} from '../helpers/snapshotter.js';

/**
 * The Kubernetes path: containerd's CRI plugin with `snapshotter = "nydus"` and snapshot
 * annotations on, the snapshotter in shared mode with the CRI keychain, driven over the CRI gRPC
 * API as kubelet would (images through the snapshotter's socket, the image-endpoint, so it sees
 * the credentials; pods and containers through containerd's). The registry needs credentials,
 * given in PullImage only. Also: the snapshotter restarts (SIGTERM, then SIGKILL) while a
 * container runs, and the container keeps reading its image.
 */

const USER = 'kube';
const PASS = 'let-me-in';

interface Env {
  reg: TestRegistry;
  authReg: TestRegistry;
  base: string;
  sn: SnapshotterProc;
  toml: string;
  ctd: Containerd;
  /** CRI image service through the snapshotter, runtime service of containerd. */
  images: CriClient;
  runtime: CriClient;
  nydus: string;
  logDir: string;
}

let env: Env | undefined;

async function setup(): Promise<Env> {
  if (env !== undefined) return env;
  const reg = await startRegistry();
  const authReg = await startRegistry({ htpasswd: { user: USER, pass: PASS } });
  const layered = await makeLayeredLayout();
  const src = await pushLayout(layered.dir, layered.tag, reg.host, 'layered:latest');
  await convertToNydus(src.ref, `${reg.host}/layered:nydus`);
  await pushWithoutTopLayer(reg.url, 'layered', 'latest', 'base');
  await convertToNydus(`${reg.host}/layered:base`, `${reg.host}/layered:base-nydus`);
  const nydus = `${authReg.host}/layered:nydus`;
  copyImage(`${reg.host}/layered:nydus`, `${nydus}`, `${USER}:${PASS}`);
  const pause = (await pushPauseImage(reg.host, 'pause:1')).ref;
  // The snapshotter starts first (containerd dials its proxy plugins at start and backs off when
  // nothing answers); its CRI proxy reaches containerd through a link made once containerd runs.
  const base = snapshotterRoot();
  const ctdLink = join(base, 'containerd.sock');
  const toml = `version = 1\n[remote.auth]\nenable_cri_keychain = true\nimage_service_address = "${ctdLink}"\n`;
  const sn = await startSnapshotter({ root: base, daemonMode: 'shared', toml });
  const ctd = await startContainerd({
    snapshotterSock: sn.sock,
    cri: {
      snapshotter: 'nydus',
      disableSnapshotAnnotations: false,
      sandboxImage: pause,
      plainHttpRegistries: [reg.host, authReg.host],
    },
  });
  symlinkSync(ctd.sock, ctdLink);
  env = {
    reg,
    authReg,
    base,
    sn,
    toml,
    ctd,
    images: criClient(sn.sock),
    runtime: criClient(ctd.sock),
    nydus,
    logDir: mkdtempSync(join(tmpdir(), 'nydus-cri-')),
  };
  return env;
}

test.after(async () => {
  if (env === undefined) return;
  env.images.close();
  env.runtime.close();
  await env.ctd.stop();
  await env.sn.stop().catch(() => undefined);
  await scrubSnapshotter(env.base);
  await env.reg.stop();
  await env.authReg.stop();
});

test('CRI: PullImage through the snapshotter with credentials only there, a pod and a container run from the Nydus image lazily (shared daemon)', async (t) => {
  if (!needContainerd(t) || !needRegistry(t)) return;
  const e = await setup();
  const ref = await e.images.pullImage(e.nydus, { username: USER, password: PASS }, undefined, 120_000);
  assert.match(ref, /^sha256:/);
  const content = new Set(await e.ctd.contentDigests('k8s.io'));
  const manifest = (await (
    await fetch(`${e.reg.url}/v2/layered/manifests/nydus`, {
      headers: { accept: 'application/vnd.oci.image.manifest.v1+json' },
    })
  ).json()) as { layers: Array<{ digest: string; annotations?: Record<string, string> }> };
  for (const l of manifest.layers) {
    if (l.annotations?.['containerd.io/snapshot/nydus-blob'] !== undefined) {
      assert.ok(!content.has(l.digest), `data layer ${l.digest} was downloaded by containerd`);
    }
  }
  const pod = podConfig({ name: 'nydus-pod', logDirectory: e.logDir });
  const podId = await e.runtime.runPodSandbox(pod, undefined, 120_000);
  const cid = await e.runtime.createContainer(
    podId,
    containerConfig({ name: 'reader', image: e.nydus, command: ['/bin/cat', '/data/keep.txt'] }),
    pod,
    60_000,
  );
  await e.runtime.startContainer(cid, 60_000);
  const st = await e.runtime.waitExited(cid, 60_000);
  assert.equal(st.exit_code, 0, `${JSON.stringify(st)}\n${e.sn.output().slice(-3000)}`);
  const lines = parseCriLog(readFileSync(join(e.logDir, 'reader.log'), 'utf8'));
  assert.deepEqual(
    lines.map((l) => `${l.stream} ${l.text}`),
    ['stdout kept through every layer'],
  );
  assert.equal(nydusdPids(e.sn.base).length, 1, 'one shared nydusd');
  await e.runtime.removeContainer(cid);
  await e.runtime.stopPodSandbox(podId);
  await e.runtime.removePodSandbox(podId);
});

test('the snapshotter restarts (SIGTERM, then a crash) while a container runs: the container keeps reading, and is removed afterwards', async (t) => {
  if (!needContainerd(t) || !needRegistry(t)) return;
  const e = await setup();
  await e.images.pullImage(e.nydus, { username: USER, password: PASS }, undefined, 120_000);
  const pod = podConfig({ name: 'long-pod', logDirectory: e.logDir });
  const podId = await e.runtime.runPodSandbox(pod, undefined, 120_000);
  const cid = await e.runtime.createContainer(
    podId,
    containerConfig({ name: 'sleeper', image: e.nydus, command: ['/bin/sleep', '3600'] }),
    pod,
    60_000,
  );
  await e.runtime.startContainer(cid, 60_000);
  const read = async (): Promise<string> =>
    (await e.runtime.execSync(cid, ['/bin/cat', '/data/replace-me.txt'], 30_000)).stdout;
  const expected = await read();
  assert.notEqual(expected, '');

  assert.equal(await e.sn.stop(), 0);
  assert.equal(nydusdPids(e.sn.base).length, 1, 'nydusd outlives the snapshotter');
  assert.equal(await read(), expected, 'reads while the snapshotter is down');
  e.sn = await startSnapshotter({ root: e.base, daemonMode: 'shared', toml: e.toml });
  assert.equal(await read(), expected, 'reads after a restart');
  assert.match(e.sn.output(), /Reconnected to nydusd/);

  await e.sn.kill();
  e.sn = await startSnapshotter({ root: e.base, daemonMode: 'shared', toml: e.toml });
  assert.equal(await read(), expected, 'reads after a crash and restart');
  e.images.close();
  e.images = criClient(e.sn.sock);

  // containerd's connection to the restarted snapshotter comes back on the next call that fails
  // over to a new dial; make sure it is up before the GC needs it.
  const until = Date.now() + 20_000;
  while (
    (await e.ctd.ctr(['snapshots', '--snapshotter', 'nydus', 'ls'], { namespace: 'k8s.io' })).code !== 0
  ) {
    assert.ok(Date.now() < until, 'containerd reconnects to the restarted snapshotter');
    await new Promise((r) => setTimeout(r, 200));
  }
  await e.runtime.stopContainer(cid, 0, 30_000);
  await e.runtime.removeContainer(cid);
  await e.runtime.stopPodSandbox(podId);
  await e.runtime.removePodSandbox(podId);
  await e.images.removeImage(e.nydus);
  // containerd's GC removes the image's snapshots; the image is unmounted from the shared daemon.
  const deadline = Date.now() + 30_000;
  // In shared mode each image is a directory of the one FUSE mount at <root>/mnt.
  const shown = (): string[] => readdirSync(join(e.sn.root, 'mnt'));
  assert.equal(mountsUnder(join(e.sn.root, 'mnt')).length, 1, 'the shared nydusd is mounted');
  while (Date.now() < deadline && shown().length > 0) await new Promise((r) => setTimeout(r, 200));
  assert.deepEqual(shown(), [], 'the image is unmounted from the shared nydusd');
});

test('shared mode: containers from two images sharing data layers run on the one shared nydusd, each image a directory of its mount', async (t) => {
  if (!needContainerd(t) || !needRegistry(t)) return;
  const e = await setup();
  const images = [`${e.reg.host}/layered:nydus`, `${e.reg.host}/layered:base-nydus`];
  for (const img of images) {
    const pull = await e.ctd.ctr(['image', 'rpull', '--plain-http', '--snapshotter', 'nydus', img], {
      remote: true,
      timeoutMs: 120_000,
    });
    assert.equal(pull.code, 0, pull.stderr);
  }
  for (const [i, img] of images.entries()) {
    for (const n of [1, 2]) {
      const r = await e.ctd.ctr(
        ['run', '--snapshotter', 'nydus', '--rm', img, `shared-${i}-${n}`, '/bin/cat', '/data/keep.txt'],
        {
          timeoutMs: 60_000,
        },
      );
      assert.equal(r.code, 0, `${r.stderr}\n${e.sn.output().slice(-3000)}`);
      assert.equal(r.stdout, 'kept through every layer\n');
    }
  }
  assert.equal(nydusdPids(e.sn.base).length, 1, 'one shared nydusd');
  assert.ok(readdirSync(join(e.sn.root, 'mnt')).length >= 2, 'each image is mounted in the shared daemon');
  for (const img of images) await e.ctd.ctr(['image', 'rm', '--sync', img]);
});
