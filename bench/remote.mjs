// B9: the cost of the network path. The rootfs image of B2/B3 (v6, zstd), read cold from end to
// end (`tar -cf - . | wc -c`, page cache dropped, no blob cache) through each remote backend on
// loopback, against the localfs backend on the same image in the same run:
//   registry     Debian's docker-registry, the blob pushed as a layer of a repository;
//   s3, oss      s3rver (npm), the blob an object of a bucket (path-style URLs on loopback);
//   http-proxy   nginx serving the blob directory (HEAD for the size, ranged GETs);
//   registry through nginx as the P2P proxy (a caching forward proxy): uncached (its cache
//                emptied before the run) and cached (the run right after, cache warm).
// Each round runs every variant once, in its own shuffled order; medians of the rounds.
import { spawn } from 'node:child_process';
import {
  closeSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createConnection } from 'node:net';
import { dirname, join } from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';
import { median, processMemory, processTree, roundOrder, timedShell, waitQuiet } from './measure.mjs';
import { B3_SCRIPT, isMounted, mountFuse, unmount } from './mount.mjs';
import { freePort, lastLines, sleep, startRegistry } from './registry.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
/** Seconds the read of the whole image may take through one backend. */
const READ_TIMEOUT_S = 300;
const REPO = 'bench/rootfs';
const BUCKET = 'nydus';
const PREFIX = 'blobs/';

/**
 * @typedef {object} Variant
 * @property {string} id
 * @property {string} label
 * @property {'peer' | 'ours'} kind the localfs backend is what every remote one is compared with
 * @property {(s: Servers) => Record<string, unknown>} backend the v2 `backend` table
 * @property {boolean} [coldProxy] empty the proxy's cache before the run
 */

/**
 * @typedef {object} Servers
 * @property {string} blobDir
 * @property {string} registry host:port
 * @property {number} s3 port
 * @property {number} static nginx serving the blob directory
 * @property {number} proxy nginx as a caching forward proxy
 */

/**
 * The registry backend through nginx as the P2P proxy (no fallback: every read goes through it).
 * @param {Servers} s
 */
const throughProxy = (s) => ({
  type: 'registry',
  registry: {
    scheme: 'http',
    host: s.registry,
    repo: REPO,
    proxy: { url: `http://127.0.0.1:${s.proxy}`, fallback: false },
  },
});

/** @type {Variant[]} */
export const REMOTE_VARIANTS = [
  {
    id: 'localfs',
    label: 'localfs (the blob file)',
    kind: 'peer',
    backend: (s) => ({ type: 'localfs', localfs: { dir: s.blobDir } }),
  },
  {
    id: 'registry',
    label: 'registry (docker-registry)',
    kind: 'ours',
    backend: (s) => ({ type: 'registry', registry: { scheme: 'http', host: s.registry, repo: REPO } }),
  },
  {
    id: 's3',
    label: 's3 (s3rver)',
    kind: 'ours',
    backend: (s) => ({
      type: 's3',
      s3: {
        scheme: 'http',
        endpoint: `127.0.0.1:${s.s3}`,
        region: 'us-east-1',
        bucket_name: BUCKET,
        object_prefix: PREFIX,
        access_key_id: 'S3RVER',
        access_key_secret: 'S3RVER',
      },
    }),
  },
  {
    id: 'oss',
    label: 'oss (s3rver)',
    kind: 'ours',
    backend: (s) => ({
      type: 'oss',
      oss: {
        scheme: 'http',
        endpoint: `127.0.0.1:${s.s3}`,
        bucket_name: BUCKET,
        object_prefix: PREFIX,
      },
    }),
  },
  {
    id: 'http-proxy',
    label: 'http-proxy (nginx, static files)',
    kind: 'ours',
    backend: (s) => ({
      type: 'http-proxy',
      'http-proxy': { addr: `http://127.0.0.1:${s.static}`, path: '/blobs' },
    }),
  },
  {
    id: 'proxy-uncached',
    label: 'registry through nginx as proxy, uncached',
    kind: 'ours',
    coldProxy: true,
    backend: throughProxy,
  },
  {
    id: 'proxy-cached',
    label: 'registry through nginx as proxy, cached',
    kind: 'ours',
    backend: throughProxy,
  },
];

/** @param {number} port */
function portOpen(port) {
  return new Promise((resolve) => {
    const c = createConnection({ host: '127.0.0.1', port });
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

/**
 * nginx on two loopback ports: a static server of the blob directory (the http-proxy origin)
 * and a caching forward proxy (what a P2P proxy is to nydusd: absolute-form requests, the
 * whole blob fetched once and ranges served from the cache).
 * @param {string} dir
 * @param {string} blobDir
 */
async function startNginx(dir, blobDir) {
  mkdirSync(join(dir, 'tmp'), { recursive: true });
  const [stat, proxy] = [await freePort(), await freePort()];
  const conf = join(dir, 'nginx.conf');
  writeFileSync(
    conf,
    `worker_processes 2;
error_log ${join(dir, 'error.log')} warn;
pid ${join(dir, 'nginx.pid')};
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${join(dir, 'tmp', 'body')};
  proxy_temp_path ${join(dir, 'tmp', 'proxy')};
  fastcgi_temp_path ${join(dir, 'tmp', 'fastcgi')};
  uwsgi_temp_path ${join(dir, 'tmp', 'uwsgi')};
  scgi_temp_path ${join(dir, 'tmp', 'scgi')};
  proxy_cache_path ${join(dir, 'cache')} levels=1:2 keys_zone=blobs:10m max_size=8g inactive=1d use_temp_path=off;
  server {
    listen 127.0.0.1:${stat};
    location /blobs/ { alias ${blobDir}/; }
  }
  server {
    listen 127.0.0.1:${proxy};
    location / {
      proxy_pass http://$http_host;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache blobs;
      proxy_cache_key $http_host$uri;
      proxy_cache_valid 200 206 1d;
      proxy_cache_lock on;
      proxy_cache_lock_timeout 600s;
    }
  }
}
`,
  );
  /** @type {import('node:child_process').ChildProcess | undefined} */
  let child;
  const start = async () => {
    const fd = openSync(join(dir, 'nginx.out'), 'w');
    child = spawn('nginx', ['-p', dir, '-c', conf, '-g', 'daemon off;'], { stdio: ['ignore', fd, fd] });
    closeSync(fd);
    const deadline = Date.now() + 10_000;
    while (!((await portOpen(stat)) && (await portOpen(proxy)))) {
      if (child.exitCode !== null) throw new Error(`nginx exited: ${lastLines(join(dir, 'error.log'))}`);
      if (Date.now() > deadline) throw new Error('nginx did not listen within 10 s');
      await sleep(50);
    }
  };
  const stop = async () => {
    const c = child;
    if (c === undefined || c.exitCode !== null || c.signalCode !== null) return;
    c.kill('SIGTERM');
    await Promise.race([new Promise((r) => c.once('exit', r)), sleep(5000)]);
    if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  };
  await start();
  return {
    stat,
    proxy,
    stop,
    /** Restart with an empty cache. */
    async emptyCache() {
      await stop();
      rmSync(join(dir, 'cache'), { recursive: true, force: true });
      await start();
    },
  };
}

/**
 * s3rver on loopback with the bucket made, in a process of its own (bench/s3-server.mjs).
 * @param {string} dir
 */
async function startS3(dir) {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const child = spawn(process.execPath, [join(HERE, 's3-server.mjs'), join(dir, 'data'), BUCKET], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const port = await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error('s3rver did not start within 20 s')), 20_000);
    child.stdout.on('data', (d) => {
      out += String(d);
      const m = /\{"port":(\d+)\}/.exec(out);
      if (m !== null) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`s3rver exited (${code}) before listening`));
    });
  });
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    await Promise.race([new Promise((r) => child.once('exit', r)), sleep(5000)]);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  return { port: /** @type {number} */ (port), stop };
}

/**
 * Pushes a blob file into the registry repository (a monolithic upload).
 * @param {string} host
 * @param {string} id
 * @param {Buffer} data
 */
async function pushBlob(host, id, data) {
  const start = await fetch(`http://${host}/v2/${REPO}/blobs/uploads/`, { method: 'POST' });
  const loc = start.headers.get('location');
  if (start.status !== 202 || loc === null) throw new Error(`upload of blob ${id}: HTTP ${start.status}`);
  const url = new URL(loc, `http://${host}`);
  url.searchParams.set('digest', `sha256:${id}`);
  const put = await fetch(url, {
    method: 'PUT',
    body: data,
    headers: { 'content-type': 'application/octet-stream' },
  });
  if (put.status !== 201) throw new Error(`upload of blob ${id}: HTTP ${put.status} ${await put.text()}`);
}

/**
 * Puts a blob as an object of the bucket (anonymous: s3rver does not check signatures).
 * @param {number} port
 * @param {string} id
 * @param {Buffer} data
 */
async function putObject(port, id, data) {
  const r = await fetch(`http://127.0.0.1:${port}/${BUCKET}/${PREFIX}${id}`, {
    method: 'PUT',
    body: data,
    headers: { 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' },
  });
  if (r.status !== 200) throw new Error(`PUT object ${id}: HTTP ${r.status} ${await r.text()}`);
}

/**
 * B9 on one image: `image.dir` holds `bootstrap` and `blobs/`.
 * @param {{ dir: string, label: string }} image
 * @param {{ work: string, rounds: number, nydusd: string, say: (msg: string) => void }} ctx
 */
export async function benchRemote(image, ctx) {
  const root = join(ctx.work, 'remote');
  rmSync(root, { recursive: true, force: true });
  mkdirSync(join(root, 'logs'), { recursive: true });
  mkdirSync(join(root, 'configs'), { recursive: true });
  const mntPath = join(root, 'mnt');
  mkdirSync(mntPath, { recursive: true });
  const mnt = realpathSync(mntPath);
  const blobDir = join(image.dir, 'blobs');
  const blobs = readdirSync(blobDir).filter((f) => /^[0-9a-f]{64}$/.test(f));
  /** @type {(() => Promise<void>)[]} */
  const stops = [];
  try {
    const registry = await startRegistry(join(root, 'registry'));
    stops.push(registry.stop);
    const s3 = await startS3(join(root, 's3'));
    stops.push(s3.stop);
    const nginx = await startNginx(join(root, 'nginx'), blobDir);
    stops.push(nginx.stop);
    let blobBytes = 0;
    for (const id of blobs) {
      const data = readFileSync(join(blobDir, id));
      blobBytes += data.length;
      await pushBlob(registry.host, id, data);
      await putObject(s3.port, id, data);
    }
    ctx.say(`B9: ${blobs.length} blob(s), ${blobBytes} bytes, in the registry, the bucket and nginx`);
    /** @type {Servers} */
    const servers = { blobDir, registry: registry.host, s3: s3.port, static: nginx.stat, proxy: nginx.proxy };
    /** @type {{ variant: Variant, runs: { wall: number, bytes: number, daemonCpu: number, hwmKiB: number }[], failed?: string }[]} */
    const results = REMOTE_VARIANTS.map((variant) => ({ variant, runs: [] }));
    for (const r of results) {
      const cfg = {
        version: 2,
        id: `b9-${r.variant.id}`,
        backend: r.variant.backend(servers),
        cache: { type: 'dummycache' },
        rafs: { mode: 'direct' },
      };
      writeFileSync(join(root, 'configs', `${r.variant.id}.json`), JSON.stringify(cfg, null, 2));
    }
    for (let round = 0; round < ctx.rounds; round++) {
      // Each round in its own shuffled order (seeded by the round, as B1-B3), but "cached"
      // always right after "uncached" (that run warms the proxy's cache).
      const order = roundOrder(results.length, round).map((k) => results[k]);
      const cold = order.findIndex((r) => r?.variant.coldProxy === true);
      const warm = order.findIndex((r) => r?.variant.id === 'proxy-cached');
      if (cold >= 0 && warm >= 0 && warm !== cold + 1) {
        const [w] = order.splice(warm, 1);
        order.splice(order.findIndex((r) => r?.variant.coldProxy === true) + 1, 0, w);
      }
      for (const r of order) {
        if (r === undefined || r.failed !== undefined) continue;
        if (r.variant.coldProxy === true) await nginx.emptyCache();
        const logPath = join(root, 'logs', `nydusd-${r.variant.id}.log`);
        try {
          const m = await mountFuse(
            [
              process.execPath,
              ctx.nydusd,
              '--config',
              join(root, 'configs', `${r.variant.id}.json`),
              '--bootstrap',
              join(image.dir, 'bootstrap'),
              '--mountpoint',
              mnt,
              '--log-level',
              'warn',
            ],
            mnt,
            logPath,
          );
          try {
            waitQuiet(60);
            const sh = timedShell(B3_SCRIPT, [], {
              cwd: mnt,
              timeoutSeconds: READ_TIMEOUT_S,
              logPath: join(root, 'logs', `read-${r.variant.id}.log`),
              ...(m.pid !== undefined && { daemonPid: m.pid }),
            });
            if (sh.status !== 0)
              throw new Error(
                `tar failed (exit ${sh.status}): ${sh.log.trim().split('\n').slice(-2).join(' / ')}`,
              );
            const hwmKiB =
              m.pid !== undefined ? processTree(m.pid).reduce((a, p) => a + processMemory(p).hwmKiB, 0) : NaN;
            r.runs.push({ wall: sh.wall, bytes: Number(sh.stdout), daemonCpu: sh.daemonCpu, hwmKiB });
            ctx.say(`B9 round ${round + 1}/${ctx.rounds}: ${r.variant.label}: ${sh.wall.toFixed(2)} s`);
          } finally {
            await unmount(m);
          }
        } catch (e) {
          r.failed = `${e instanceof Error ? e.message : String(e)} (log: ${lastLines(logPath, 2)})`;
          ctx.say(`B9: ${r.variant.label} FAILED: ${r.failed}`);
          if (isMounted(mnt)) spawn('umount', ['-l', mnt]);
        }
      }
    }
    return {
      image: image.label,
      blobs: blobs.length,
      blobBytes,
      results: results.map((r) => ({
        id: r.variant.id,
        label: r.variant.label,
        kind: r.variant.kind,
        runs: r.runs,
        ...(r.failed !== undefined && { failed: r.failed }),
        ...(r.runs.length > 0 && {
          median: {
            wall: median(r.runs.map((x) => x.wall)),
            min: Math.min(...r.runs.map((x) => x.wall)),
            max: Math.max(...r.runs.map((x) => x.wall)),
            bytes: median(r.runs.map((x) => x.bytes)),
            daemonCpu: median(r.runs.map((x) => x.daemonCpu)),
            hwmKiB: median(r.runs.map((x) => x.hwmKiB)),
          },
        }),
      })),
    };
  } finally {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
  }
}
