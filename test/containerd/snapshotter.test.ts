import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { ApiClient } from '../../src/daemon/api/client.js';
import { needContainerd, startContainerd, type Containerd } from '../helpers/containerd.js';
import { makeBusyboxLayout, makeLayeredLayout, pushLayout, processTempDir } from '../helpers/oci-images.js';
import { freePort, needRegistry, startRegistry, type TestRegistry } from '../helpers/registry.js';
import {
  convertToNydus,
  copyImage,
  mountsUnder,
  nydusdPids,
  pushCorruptBootstrap,
  pushWithoutTopLayer,
  scrubSnapshotter,
  SEED_003_TEMPLATE,
  type SnapshotterProc,
  snapshotterRoot,
  startSnapshotter,
} from '../helpers/snapshotter.js';

/**
 * The snapshotter end to end with real containerd, runc, ctr-remote and docker-registry: a Nydus
 * image converted by our nydusify is pulled lazily (the data layers never reach containerd's
 * content store) and a container runs from it; an OCI image runs through the same snapshotter.
 * One registry, one snapshotter and one containerd serve the whole file.
 */

interface Env {
  reg: TestRegistry;
  /** A registry with htpasswd auth, and in the snapshotter's Docker config wrong credentials for it. */
  authReg: TestRegistry;
  authNydus: string;
  /** $DOCKER_CONFIG of the snapshotter. */
  dockerDir: string;
  /** The layered image without its top layer, converted: it shares the other data layers. */
  sibling: string;
  sn: SnapshotterProc;
  ctd: Containerd;
  /** The Nydus image and its OCI source. */
  nydus: string;
  oci: string;
  busybox: string;
  metricsUrl: string;
  systemSock: string;
  manifest: { layers: Array<{ digest: string; size: number; annotations?: Record<string, string> }> };
}

let env: Env | undefined;

async function getManifest(reg: TestRegistry, repo: string, tag: string): Promise<Env['manifest']> {
  const res = await fetch(`${reg.url}/v2/${repo}/manifests/${tag}`, {
    headers: { accept: 'application/vnd.oci.image.manifest.v1+json' },
  });
  assert.equal(res.status, 200);
  return (await res.json()) as Env['manifest'];
}

async function setup(): Promise<Env> {
  if (env !== undefined) return env;
  const reg = await startRegistry();
  const layered = await makeLayeredLayout();
  const src = await pushLayout(layered.dir, layered.tag, reg.host, 'layered:latest');
  const nydus = `${reg.host}/layered:nydus`;
  await convertToNydus(src.ref, nydus);
  // The same image without its top layer: an image sharing its other layers (and so data blobs).
  await pushWithoutTopLayer(reg.url, 'layered', 'latest', 'base');
  const sibling = `${reg.host}/layered:base-nydus`;
  await convertToNydus(`${reg.host}/layered:base`, sibling);
  const bb = await makeBusyboxLayout();
  const busybox = await pushLayout(bb.dir, bb.tag, reg.host, 'busybox:latest');
  await pushCorruptBootstrap(reg.url, 'layered', 'nydus', 'corrupt');
  const authReg = await startRegistry({ htpasswd: { user: 'alice', pass: 'right' } });
  const authNydus = `${authReg.host}/busybox:nydus`;
  // An image of its own (shared layers would let containerd reuse the anonymous image's snapshots).
  await convertToNydus(busybox.ref, `${reg.host}/busybox:nydus`);
  copyImage(`${reg.host}/busybox:nydus`, `${authNydus}`, 'alice:right');
  const dockerDir = processTempDir('sn-docker');
  writeFileSync(
    join(dockerDir, 'config.json'),
    JSON.stringify({ auths: { [authReg.host]: { auth: Buffer.from('alice:wrong').toString('base64') } } }),
  );
  const metricsPort = await freePort();
  const base = snapshotterRoot();
  const toml = [
    'version = 1',
    '[system]',
    'enable = true',
    `address = "${join(base, 'system.sock')}"`,
    '[metrics]',
    `address = "127.0.0.1:${metricsPort}"`,
    'collect_interval = "1s"',
    '[remote.auth]',
    'credential_renewal_interval = "1s"',
  ].join('\n');
  // Seed 003's nydusd config without its background prefetch, which would fetch the whole image
  // and hide whether reads are lazy (the CRI test runs with the seed's config as it is).
  const template = { ...SEED_003_TEMPLATE, fs_prefetch: { enable: false } };
  const sn = await startSnapshotter({
    root: base,
    toml,
    template,
    env: { ...process.env, DOCKER_CONFIG: dockerDir },
  });
  const ctd = await startContainerd({ snapshotterSock: sn.sock });
  env = {
    reg,
    authReg,
    authNydus,
    sibling,
    dockerDir,
    sn,
    ctd,
    nydus,
    oci: src.ref,
    busybox: busybox.ref,
    manifest: await getManifest(reg, 'layered', 'nydus'),
    metricsUrl: `http://127.0.0.1:${metricsPort}/v1/metrics`,
    systemSock: join(base, 'system.sock'),
  };
  return env;
}

test.after(async () => {
  if (env === undefined) return;
  await env.ctd.stop();
  await env.sn.stop().catch(() => undefined);
  await scrubSnapshotter(env.sn.base);
  await env.reg.stop();
  await env.authReg.stop();
});

function ok(r: { code: number; stdout: string; stderr: string }, what: string, e: Env): void {
  assert.equal(r.code, 0, `${what} failed: ${r.stderr}\n--- snapshotter:\n${e.sn.output().slice(-3000)}`);
}

async function backendReadBytes(root: string): Promise<number> {
  let total = 0;
  for (const id of readdirSync(join(root, 'socket'))) {
    const c = new ApiClient(join(root, 'socket', id, 'api.sock'), { timeoutMs: 5000 });
    try {
      const m = (await c
        .get('/api/v1/metrics/backend', { id: '/' })
        .catch(() => c.get('/api/v1/metrics/backend'))) as {
        read_amount_total?: number;
      };
      total += m.read_amount_total ?? 0;
    } finally {
      await c.close();
    }
  }
  return total;
}

test('ctr-remote rpull of a Nydus image through containerd-nydus-grpc: data layers are skipped, a container runs from the lazily mounted image, only part of it is fetched', async (t) => {
  if (!needContainerd(t) || !needRegistry(t)) return;
  const e = await setup();
  const plugins = await e.ctd.ctr(['plugins', 'ls']);
  assert.match(plugins.stdout, /io\.containerd\.snapshotter\.v1\s+nydus\s+.*ok/);

  const pull = await e.ctd.ctr(['image', 'rpull', '--plain-http', '--snapshotter', 'nydus', e.nydus], {
    remote: true,
    timeoutMs: 120_000,
  });
  ok(pull, 'rpull', e);
  const content = new Set(await e.ctd.contentDigests());
  const data = e.manifest.layers.filter(
    (l) => l.annotations?.['containerd.io/snapshot/nydus-blob'] !== undefined,
  );
  const meta = e.manifest.layers.filter(
    (l) => l.annotations?.['containerd.io/snapshot/nydus-bootstrap'] !== undefined,
  );
  assert.ok(
    data.length > 0 && meta.length === 1,
    'the converted image has data layers and one bootstrap layer',
  );
  for (const l of data)
    assert.ok(!content.has(l.digest), `data layer ${l.digest} was downloaded by containerd`);
  assert.ok(content.has(meta[0]!.digest), 'the bootstrap layer is in the content store');

  const run = await e.ctd.ctr(
    [
      'run',
      '--snapshotter',
      'nydus',
      '--rm',
      e.nydus,
      'nydus-c1',
      '/bin/cat',
      '/data/keep.txt',
      '/data/resurrect.txt',
    ],
    { timeoutMs: 60_000 },
  );
  ok(run, 'ctr run', e);
  assert.equal(run.stdout, 'kept through every layer\nback in layer 4 with new content\n');

  const fetched = await backendReadBytes(e.sn.root);
  const total = data.reduce((s, l) => s + l.size, 0);
  assert.ok(fetched > 0, 'the registry backend read something');
  assert.ok(fetched < total / 2, `fetched ${fetched} of ${total} blob bytes: not lazy`);
});

test('the system controller lists the daemon and its image, takes prefetch lists, and the metrics show the snapshotter and nydusd', async (t) => {
  if (!needContainerd(t) || !needRegistry(t)) return;
  const e = await setup();
  // The image of the first test stays mounted while its meta snapshot exists.
  const sys = new Agent({ connect: { socketPath: e.systemSock } });
  t.after(() => sys.close());
  const get = async (path: string): Promise<{ status: number; json: unknown }> => {
    const r = await request(`http://localhost${path}`, { dispatcher: sys });
    const text = await r.body.text();
    return { status: r.statusCode, json: text === '' ? undefined : (JSON.parse(text) as unknown) };
  };
  const daemons = (await get('/api/v1/daemons')).json as Array<{
    id: string;
    pid: number;
    memory_rss_kb: number;
    instances: Record<string, { image_id: string; mountpoint: string }>;
  }>;
  assert.equal(daemons.length, 1);
  const d = daemons[0]!;
  assert.ok(d.pid > 0 && d.memory_rss_kb > 0);
  assert.deepEqual(
    Object.values(d.instances).map((i) => i.image_id),
    [e.nydus],
  );
  const backend = (await get(`/api/v1/daemons/${d.id}/backend`)).json as {
    type: string;
    config: { host: string; repo: string };
  };
  assert.equal(backend.type, 'registry');
  assert.equal(backend.config.host, e.reg.host);
  assert.equal(backend.config.repo, 'layered');
  assert.equal((await get('/api/v1/daemons/records')).status, 501);
  const missing = await get('/api/v1/daemons/nope/backend');
  assert.equal(missing.status, 404);
  assert.equal((missing.json as { code: string }).code, 'Unknown');
  const put = await request('http://localhost/api/v1/prefetch', {
    method: 'PUT',
    dispatcher: sys,
    body: JSON.stringify([{ image: e.nydus, prefetch: '/data/keep.txt\n' }]),
  });
  assert.equal(put.statusCode, 200);
  await put.body.dump();

  await new Promise((r) => setTimeout(r, 1500));
  const text = await (await fetch(e.metricsUrl)).text();
  assert.match(text, /^snapshotter_memory_usage_kilobytes [1-9]/m);
  assert.match(text, /^nydusd_counts 1$/m);
  assert.match(
    text,
    new RegExp(`^nydusd_total_read_bytes\\{image_ref="${e.nydus.replace(/[.]/g, '\\.')}"\\} [1-9]`, 'm'),
  );
  assert.match(
    text,
    /snapshotter_snapshot_operation_elapsed_milliseconds_count\{operation="prepare"\} [1-9]/,
  );
});

test('an OCI image runs through the same snapshotter (overlayfs behaviour)', async (t) => {
  if (!needContainerd(t) || !needRegistry(t)) return;
  const e = await setup();
  ok(
    await e.ctd.ctr(['image', 'pull', '--plain-http', '--snapshotter', 'nydus', e.busybox], {
      timeoutMs: 120_000,
    }),
    'pull',
    e,
  );
  const run = await e.ctd.ctr(
    ['run', '--snapshotter', 'nydus', '--rm', e.busybox, 'oci-c1', '/bin/echo', 'hello-oci'],
    {
      timeoutMs: 60_000,
    },
  );
  ok(run, 'ctr run', e);
  assert.equal(run.stdout, 'hello-oci\n');
  const snaps = await e.ctd.ctr(['snapshots', '--snapshotter', 'nydus', 'ls']);
  ok(snaps, 'snapshots ls', e);
  assert.match(snaps.stdout, /Committed/);
});

test('bad input: a corrupt bootstrap layer and refused credentials are clear errors to ctr, and the snapshotter keeps serving other images', async (t) => {
  if (!needContainerd(t) || !needRegistry(t)) return;
  const e = await setup();
  const corrupt = `${e.reg.host}/layered:corrupt`;
  ok(
    await e.ctd.ctr(['image', 'rpull', '--plain-http', '--snapshotter', 'nydus', corrupt], {
      remote: true,
      timeoutMs: 120_000,
    }),
    'rpull',
    e,
  );
  const bad = await e.ctd.ctr(
    ['run', '--snapshotter', 'nydus', '--rm', corrupt, 'corrupt-c1', '/bin/cat', '/data/keep.txt'],
    {
      timeoutMs: 60_000,
    },
  );
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /bootstrap of image .*layered:corrupt is corrupt/);

  ok(
    await e.ctd.ctr(
      ['image', 'rpull', '--plain-http', '--user', 'alice:right', '--snapshotter', 'nydus', e.authNydus],
      {
        remote: true,
        timeoutMs: 120_000,
      },
    ),
    'rpull with credentials',
    e,
  );
  const refused = await e.ctd.ctr(
    ['run', '--snapshotter', 'nydus', '--rm', e.authNydus, 'auth-c1', '/bin/echo', 'hi'],
    {
      timeoutMs: 60_000,
    },
  );
  assert.notEqual(refused.code, 0, `${refused.stdout}\n${refused.stderr}`);
  assert.match(refused.stderr, /refused access to image/);
  assert.equal(nydusdPids(e.sn.root).length <= 1, true, 'no nydusd was left for the failed images');

  const good = await e.ctd.ctr(
    ['run', '--snapshotter', 'nydus', '--rm', e.nydus, 'after-bad', '/bin/cat', '/data/keep.txt'],
    {
      timeoutMs: 60_000,
    },
  );
  ok(good, 'ctr run after the failures', e);
  assert.equal(good.stdout, 'kept through every layer\n');
});

test('credentials from the Docker config: fixed credentials make the refused image run, and renewed ones reach the running nydusd', async (t) => {
  if (!needContainerd(t) || !needRegistry(t)) return;
  const e = await setup();
  const writeAuth = (userPass: string): void =>
    writeFileSync(
      join(e.dockerDir, 'config.json'),
      JSON.stringify({ auths: { [e.authReg.host]: { auth: Buffer.from(userPass).toString('base64') } } }),
    );
  writeAuth('alice:right');
  ok(
    await e.ctd.ctr(
      ['image', 'rpull', '--plain-http', '--user', 'alice:right', '--snapshotter', 'nydus', e.authNydus],
      {
        remote: true,
        timeoutMs: 120_000,
      },
    ),
    'rpull',
    e,
  );
  const run = await e.ctd.ctr(
    ['run', '--snapshotter', 'nydus', '--rm', e.authNydus, 'auth-ok', '/bin/echo', 'authorized'],
    {
      timeoutMs: 60_000,
    },
  );
  ok(run, 'ctr run with the right credentials', e);
  assert.equal(run.stdout, 'authorized\n');
  // Which daemon serves that image, from the system controller.
  const sys = new Agent({ connect: { socketPath: e.systemSock } });
  t.after(() => sys.close());
  const daemons = (await (
    await request('http://localhost/api/v1/daemons', { dispatcher: sys })
  ).body.json()) as Array<{
    api_socket: string;
    instances: Record<string, { image_id: string }>;
  }>;
  const d = daemons.find((x) => Object.values(x.instances).some((i) => i.image_id === e.authNydus));
  assert.ok(d !== undefined, 'a daemon serves the image');
  writeAuth('alice:rotated');
  const want = Buffer.from('alice:rotated').toString('base64');
  const c = new ApiClient(d.api_socket, { timeoutMs: 5000 });
  t.after(() => c.close());
  const deadline = Date.now() + 15_000;
  let got: unknown;
  while (Date.now() < deadline) {
    got = ((await c.get('/api/v1/config', { id: '/' })) as { registry_auth?: string }).registry_auth;
    if (got === want) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.equal(got, want, 'the renewed credentials reached nydusd');
  // The snapshotter logs the renewal once nydusd has taken it (and its config file is written).
  const renewed = /Credentials of image .*busybox:nydus renewed/;
  for (let i = 0; i < 50 && !renewed.test(e.sn.output()); i++) await new Promise((r) => setTimeout(r, 100));
  assert.match(e.sn.output(), renewed);
});

test('two images sharing their data layers: each gets its own nydusd (dedicated mode) and the blob cache holds each shared blob once', async (t) => {
  if (!needContainerd(t) || !needRegistry(t)) return;
  const e = await setup();
  for (const img of [e.nydus, e.sibling]) {
    ok(
      await e.ctd.ctr(['image', 'rpull', '--plain-http', '--snapshotter', 'nydus', img], {
        remote: true,
        timeoutMs: 120_000,
      }),
      'rpull',
      e,
    );
  }
  for (const [img, id] of [
    [e.nydus, 'share-a'],
    [e.sibling, 'share-b'],
  ] as const) {
    const r = await e.ctd.ctr(
      ['run', '--snapshotter', 'nydus', '--rm', img, id, '/bin/md5sum', '/data/big.bin'],
      { timeoutMs: 60_000 },
    );
    ok(r, `ctr run ${id}`, e);
    assert.match(r.stdout, /^[0-9a-f]{32} {2}\/data\/big.bin\n$/);
  }
  // The daemons serving the two images, from the system controller.
  const sys = new Agent({ connect: { socketPath: e.systemSock } });
  t.after(() => sys.close());
  const all = (await (
    await request('http://localhost/api/v1/daemons', { dispatcher: sys })
  ).body.json()) as Array<{
    api_socket: string;
    instances: Record<string, { image_id: string }>;
  }>;
  const serving = (img: string): string[] =>
    all.filter((d) => Object.values(d.instances).some((i) => i.image_id === img)).map((d) => d.api_socket);
  assert.equal(serving(e.nydus).length, 1);
  assert.equal(serving(e.sibling).length, 1);
  const daemons = [...serving(e.nydus), ...serving(e.sibling)];
  assert.notEqual(daemons[0], daemons[1], 'one nydusd per image');
  assert.equal(nydusdPids(e.sn.root).length, all.length);
  // Blobs both images name are read from one cache file, whichever daemon fetched them.
  const sibling = await getManifest(e.reg, 'layered', 'base-nydus');
  const blobsOf = (m: Env['manifest']): string[] =>
    m.layers
      .filter((l) => l.annotations?.['containerd.io/snapshot/nydus-blob'] !== undefined)
      .map((l) => l.digest.slice(7));
  const shared = blobsOf(e.manifest).filter((b) => blobsOf(sibling).includes(b));
  assert.ok(shared.length > 0, 'the two images share data blobs');
  const files: string[][] = [];
  for (const sock of daemons) {
    const c = new ApiClient(sock, { timeoutMs: 5000 });
    try {
      files.push(
        ((await c.get('/api/v1/metrics/blobcache')) as { underlying_files: string[] }).underlying_files,
      );
    } finally {
      await c.close();
    }
  }
  // Both read /data/big.bin, so both opened the blob that holds it.
  const usedByBoth = shared.filter((b) => files.every((list) => list.some((f) => f.includes(b))));
  assert.ok(usedByBoth.length > 0, 'both daemons read a shared blob');
  for (const b of usedByBoth) {
    const paths = files.map((list) => list.filter((f) => f.includes(b)));
    assert.deepEqual(paths[0], paths[1], `one cache file set for blob ${b}`);
  }
});

test('two containers from one Nydus image share one nydusd; removing the image and containerd GC leave no mount, daemon or cache file', async (t) => {
  if (!needContainerd(t) || !needRegistry(t)) return;
  const e = await setup();
  ok(
    await e.ctd.ctr(['image', 'rpull', '--plain-http', '--snapshotter', 'nydus', e.nydus], {
      remote: true,
      timeoutMs: 120_000,
    }),
    'rpull',
    e,
  );
  const daemonsBefore = nydusdPids(e.sn.root).length;
  assert.ok(daemonsBefore >= 1, 'the image is mounted since the first test');
  for (const id of ['nydus-a', 'nydus-b']) {
    ok(
      await e.ctd.ctr([
        'container',
        'create',
        '--snapshotter',
        'nydus',
        e.nydus,
        id,
        '/bin/cat',
        '/data/keep.txt',
      ]),
      'create',
      e,
    );
  }
  const r1 = await e.ctd.ctr(['task', 'start', 'nydus-a'], { timeoutMs: 60_000 });
  const r2 = await e.ctd.ctr(['task', 'start', 'nydus-b'], { timeoutMs: 60_000 });
  assert.equal(r1.stdout, 'kept through every layer\n', r1.stderr);
  assert.equal(r2.stdout, 'kept through every layer\n', r2.stderr);
  assert.equal(nydusdPids(e.sn.root).length, daemonsBefore, 'the nydusd of the image serves both containers');
  for (const id of ['nydus-a', 'nydus-b']) {
    await e.ctd.ctr(['task', 'rm', '-f', id]);
    ok(await e.ctd.ctr(['container', 'rm', id]), 'container rm', e);
  }
  const images = (await e.ctd.ctr(['image', 'ls', '-q'])).stdout.split('\n').filter((l) => l !== '');
  for (const img of images) await e.ctd.ctr(['image', 'rm', '--sync', img]);
  // containerd's GC removes the snapshots (and calls Cleanup) once nothing references them.
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline && (nydusdPids(e.sn.root).length > 0 || mountsUnder(e.sn.root).length > 0)) {
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.deepEqual(mountsUnder(e.sn.root), [], 'no mount is left');
  assert.deepEqual(nydusdPids(e.sn.root), [], 'no nydusd is left');
  const cache = readdirSync(join(e.sn.root, 'cache'));
  assert.deepEqual(cache, [], `cache files left: ${cache.join(', ')}`);
  assert.equal(readFileSync('/proc/self/mountinfo', 'utf8').includes(e.sn.base), false);
});
