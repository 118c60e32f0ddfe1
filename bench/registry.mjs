// B4, B5 and B7 of ../shared/docs/benchmarks.md: the registry path, all on this machine over
// loopback, against Debian's docker-registry started here.
//
//   B7  `nydusify convert` of an OCI image of the rootfs-large data set from and to the local
//       registry, against the floor of pulling its layers (`skopeo copy`), unpacking them
//       (`umoci raw unpack`) and building one image of the tree (`mksquashfs -comp zstd
//       -Xcompression-level 3`); where convert's time goes, from its debug log.
//   B4  lazy start through ONE shared 100 Mbit/s link (bench/link.mjs, in a child process, in
//       front of the registry): `nydusify mount` of the converted image + `chroot MNT CMD`,
//       against `skopeo copy` + `umoci unpack` + `chroot BUNDLE/rootfs CMD`; time from the start
//       to the first byte CMD prints.
//   B5  for ours in B4: nydusd's backend bytes (`read_amount_total`), the bytes CMD read
//       (`data_read`), the bootstrap, and the bytes the link carried.
//
// Rounds alternate ours and the peer (who goes first swaps every round), caches are dropped
// before every run, and every run of ours starts with an empty work dir (no blob cache).
import { fork, spawn, spawnSync } from 'node:child_process';
import {
  closeSync,
  createReadStream,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { createHash } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { createServer } from 'node:net';
import { join } from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';
import { treeStats } from './datasets.mjs';
import { dropCaches, machineBusySeconds, median, outputOf, timedRun, waitQuiet } from './measure.mjs';

/** Bump when the data set or the image recipe changes: the cached copies are made again. */
const RECIPE_VERSION = 1;
/** Packages installed into the minbase rootfs for rootfs-large. */
export const LARGE_PACKAGES = ['python3', 'perl', 'gcc', 'g++', 'make', 'git', 'curl', 'ca-certificates'];
/** The link of B4: 100 Mbit/s, shared by every connection. */
export const LINK_BYTES_PER_SECOND = 100e6 / 8;
/** The command B4 runs from the image (override: NYDUS_BENCH_B4_CMD, a shell command). */
export const DEFAULT_B4_CMD = `python3 -c 'print(1)'`;
/** Seconds any one step of a run may take. */
const STEP_TIMEOUT_S = 900;

/**
 * Runs a command to its end; throws, with the end of its log (or of its stderr), unless it exits
 * with 0. Its output goes to `log` when given (else its stdout is returned); `timeoutS` kills it
 * with SIGKILL after that many seconds.
 * @param {string} cmd
 * @param {string[]} args
 * @param {{ cwd?: string, log?: string, env?: NodeJS.ProcessEnv, timeoutS?: number }} [o]
 */
export function must(cmd, args, o = {}) {
  const fd = o.log !== undefined ? openSync(o.log, 'a') : undefined;
  const r = spawnSync(cmd, args, {
    stdio: ['ignore', fd ?? 'pipe', fd ?? 'pipe'],
    encoding: 'utf8',
    ...(o.cwd !== undefined && { cwd: o.cwd }),
    ...(o.env !== undefined && { env: o.env }),
    ...(o.timeoutS !== undefined && { timeout: o.timeoutS * 1000, killSignal: 'SIGKILL' }),
    maxBuffer: 256 * 1024 * 1024,
  });
  if (fd !== undefined) closeSync(fd);
  if (r.error !== undefined || r.status !== 0) {
    const why = r.error?.message ?? `exit ${r.status ?? r.signal}`;
    const tail =
      o.log !== undefined && existsSync(o.log)
        ? lastLines(o.log)
        : `${r.stderr ?? ''}`.trim().split('\n').slice(-4).join(' / ');
    throw new Error(`${cmd} ${args.join(' ')} failed (${why}): ${tail}`);
  }
  return r.stdout ?? '';
}

/** The last `n` lines of a log, joined by " / " ("no log" when there is none). @param {string} file @param {number} [n] */
export function lastLines(file, n = 4) {
  return existsSync(file) ? readFileSync(file, 'utf8').trim().split('\n').slice(-n).join(' / ') : 'no log';
}

/** @param {string} path */
function sha256File(path) {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(path)
      .on('data', (d) => h.update(d))
      .on('error', reject)
      .on('end', () => resolve(h.digest('hex')));
  });
}

// ---------------------------------------------------------------------------------------------
// The data set and its OCI image

/**
 * rootfs-large: the minbase rootfs plus LARGE_PACKAGES installed by apt-get in a chroot.
 * Besides the tree, it keeps the list of paths the installation created or changed (their
 * ctime is newer than a stamp made before it), which become the image's upper layers.
 * @param {string} work
 * @param {import('./datasets.mjs').DataSet} base the minbase rootfs
 * @param {(msg: string) => void} say
 * @returns {import('./datasets.mjs').DataSet & { base: string, changedList: string }}
 */
export function rootfsLarge(work, base, say) {
  const dir = join(work, 'data', 'rootfs-large');
  const marker = `${dir}.done.json`;
  const changedList = `${dir}.changed.list`;
  const params = `${RECIPE_VERSION} ${LARGE_PACKAGES.join(' ')}`;
  const description =
    `The minbase rootfs plus \`chroot DIR apt-get install -y --no-install-recommends ` +
    `${LARGE_PACKAGES.join(' ')}\`.`;
  const common = { name: 'rootfs-large', dir, description, base: base.dir, changedList };
  if (existsSync(marker) && existsSync(dir) && existsSync(changedList)) {
    try {
      const m = JSON.parse(readFileSync(marker, 'utf8'));
      if (m.params === params) return { ...common, stats: m.stats, prepSeconds: 0 };
    } catch {
      // made again below
    }
  }
  const t0 = performance.now();
  const tmp = `${dir}.tmp`;
  const log = `${dir}.log`;
  for (const p of [tmp, dir, marker, changedList]) rmSync(p, { recursive: true, force: true });
  say(`rootfs-large: copying the minbase rootfs, apt-get install ${LARGE_PACKAGES.join(' ')} (log: ${log})`);
  writeFileSync(log, '');
  must('cp', ['-a', base.dir, tmp]);
  // ctime of what the installation touches must be newer than the stamp's mtime.
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1100);
  const stamp = join(work, 'data', 'rootfs-large.stamp');
  writeFileSync(stamp, '');
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1100);
  const procDir = join(tmp, 'proc');
  mkdirSync(procDir, { recursive: true });
  copyResolvConf(tmp);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive', LC_ALL: 'C' };
  must('mount', ['--bind', '/proc', procDir]);
  try {
    must('chroot', [tmp, 'apt-get', 'update', '-q'], { log, env });
    must('chroot', [tmp, 'apt-get', 'install', '-y', '-q', '--no-install-recommends', ...LARGE_PACKAGES], {
      log,
      env,
    });
    must('chroot', [tmp, 'apt-get', 'clean'], { log, env });
  } finally {
    spawnSync('umount', ['-l', procDir]);
  }
  const changed = must('find', ['.', '-cnewer', stamp, '-not', '-path', './proc/*'], { cwd: tmp })
    .split('\n')
    .filter((l) => l !== '' && l !== '.');
  writeFileSync(changedList, `${changed.join('\n')}\n`);
  renameSync(tmp, dir);
  const stats = treeStats(dir);
  writeFileSync(marker, JSON.stringify({ params, stats }));
  return { ...common, stats, prepSeconds: (performance.now() - t0) / 1000 };
}

/** The host's resolver config into the chroot (a symlink there would point outside). @param {string} root */
function copyResolvConf(root) {
  const dst = join(root, 'etc', 'resolv.conf');
  rmSync(dst, { force: true });
  writeFileSync(dst, readFileSync('/etc/resolv.conf'));
}

/**
 * @typedef {object} OciImage
 * @property {string} layout the OCI layout directory (tag "oci")
 * @property {{ digest: string, size: number, diffId: string, tarBytes: number, entries: number, what: string }[]} layers
 * @property {number} compressedBytes all layer blobs
 * @property {number} seconds to make it (0 when cached)
 */

/**
 * An OCI image layout of rootfs-large with three gzip layers: the minbase rootfs, what the
 * installation changed outside /usr/lib/python3*, and what it changed under it. Cached.
 * @param {string} work
 * @param {ReturnType<typeof rootfsLarge>} ds
 * @param {(msg: string) => void} say
 * @returns {Promise<OciImage>}
 */
export async function ociImage(work, ds, say) {
  const layout = join(work, 'images', 'rootfs-large-oci');
  const marker = `${layout}.done.json`;
  const params = `${RECIPE_VERSION} ${JSON.stringify(ds.stats)}`;
  if (existsSync(marker) && existsSync(layout)) {
    const m = JSON.parse(readFileSync(marker, 'utf8'));
    if (m.params === params) return { ...m.image, seconds: 0 };
  }
  const t0 = performance.now();
  rmSync(layout, { recursive: true, force: true });
  const blobs = join(layout, 'blobs', 'sha256');
  mkdirSync(blobs, { recursive: true });
  const tmp = join(work, 'images', 'rootfs-large-tmp');
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  const changed = readFileSync(ds.changedList, 'utf8')
    .split('\n')
    .filter((l) => l !== '');
  const isPy = (/** @type {string} */ p) => p.startsWith('./usr/lib/python3');
  const lists = [
    { what: 'the minbase rootfs', dir: ds.base, list: undefined },
    {
      what: 'installed or changed by apt-get, outside /usr/lib/python3*',
      dir: ds.dir,
      list: changed.filter((p) => !isPy(p)),
    },
    { what: 'installed by apt-get under /usr/lib/python3*', dir: ds.dir, list: changed.filter(isPy) },
  ];
  say(`OCI image of rootfs-large: 3 layers (tar + gzip -6), in ${layout}`);
  const layers = await Promise.all(
    lists.map(async (l, i) => {
      const tar = join(tmp, `layer${i}.tar`);
      const args = ['--numeric-owner', '--xattrs', '-cf', tar, '-C', l.dir];
      if (l.list === undefined) args.push('.');
      else {
        writeFileSync(join(tmp, `layer${i}.list`), `${l.list.join('\n')}\n`);
        args.push('--no-recursion', '-T', join(tmp, `layer${i}.list`));
      }
      must('tar', args);
      const diffId = await sha256File(tar);
      const tarBytes = statSync(tar).size;
      await new Promise((resolve, reject) => {
        const out = openSync(`${tar}.gz`, 'w');
        const c = spawn('gzip', ['-n', '-6', '-c', tar], { stdio: ['ignore', out, 'inherit'] });
        c.on('error', reject);
        c.on('exit', (code) => {
          closeSync(out);
          if (code === 0) resolve(undefined);
          else reject(new Error(`gzip exited with ${code}`));
        });
      });
      const digest = await sha256File(`${tar}.gz`);
      const size = statSync(`${tar}.gz`).size;
      renameSync(`${tar}.gz`, join(blobs, digest));
      rmSync(tar);
      const entries = l.list === undefined ? treeStatsCount(l.dir) : l.list.length;
      return {
        digest: `sha256:${digest}`,
        size,
        diffId: `sha256:${diffId}`,
        tarBytes,
        entries,
        what: l.what,
      };
    }),
  );
  rmSync(tmp, { recursive: true, force: true });
  const putJson = (/** @type {unknown} */ obj) => {
    const bytes = Buffer.from(JSON.stringify(obj));
    const digest = createHash('sha256').update(bytes).digest('hex');
    writeFileSync(join(blobs, digest), bytes);
    return { digest: `sha256:${digest}`, size: bytes.length };
  };
  const created = '2026-01-01T00:00:00Z';
  const config = putJson({
    created,
    architecture: 'amd64',
    os: 'linux',
    config: {
      Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
      Cmd: ['/bin/bash'],
    },
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
    history: layers.map((l) => ({ created, created_by: `nydus-ts bench: ${l.what}` })),
  });
  const manifest = putJson({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
    layers: layers.map((l) => ({
      mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
      digest: l.digest,
      size: l.size,
    })),
  });
  writeFileSync(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  writeFileSync(
    join(layout, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          ...manifest,
          annotations: { 'org.opencontainers.image.ref.name': 'oci' },
        },
      ],
    }),
  );
  const image = { layout, layers, compressedBytes: layers.reduce((a, l) => a + l.size, 0) };
  writeFileSync(marker, JSON.stringify({ params, image }));
  return { ...image, seconds: (performance.now() - t0) / 1000 };
}

/** @param {string} dir */
function treeStatsCount(dir) {
  const s = treeStats(dir);
  return s.files + s.dirs + s.symlinks + s.other;
}

// ---------------------------------------------------------------------------------------------
// The registry and the link

/** A TCP port free on 127.0.0.1 (for a server started next). */
export async function freePort() {
  const srv = createServer();
  await new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => resolve(undefined));
  });
  const port = /** @type {import('node:net').AddressInfo} */ (srv.address()).port;
  await new Promise((resolve) => srv.close(() => resolve(undefined)));
  return port;
}

/** @param {number} ms */
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Processes started here that must not outlive the run. @type {Set<import('node:child_process').ChildProcess>} */
const children = new Set();
/** Mount points of ours that must not outlive the run. @type {Set<string>} */
const mounts = new Set();

/** Kills what this module started and unmounts what it mounted (also on the way out). */
export function cleanupRegistrySync() {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const m of mounts) if (isMounted(m)) spawnSync('umount', ['-l', m], { timeout: 20_000 });
}

/** @param {string} path */
function isMounted(path) {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[4] === path);
}

/**
 * Debian's docker-registry on 127.0.0.1 with its storage in `dir` (emptied); waits until it
 * answers on /v2/.
 * @param {string} dir
 */
export async function startRegistry(dir) {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, 'data'), { recursive: true });
  const host = `127.0.0.1:${await freePort()}`;
  const configFile = join(dir, 'config.yml');
  // YAML is a superset of JSON.
  writeFileSync(
    configFile,
    JSON.stringify({
      version: '0.1',
      log: { level: 'error', accesslog: { disabled: true } },
      storage: { filesystem: { rootdirectory: join(dir, 'data') }, delete: { enabled: true } },
      http: { addr: host, secret: 'nydus-ts-bench' },
    }),
  );
  const logFile = join(dir, 'registry.log');
  const fd = openSync(logFile, 'w');
  const child = spawn('docker-registry', ['serve', configFile], { stdio: ['ignore', fd, fd] });
  closeSync(fd);
  children.add(child);
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await Promise.race([new Promise((r) => child.once('exit', r)), sleep(5000)]);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
    children.delete(child);
  };
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`docker-registry exited: ${lastLines(logFile)}`);
    const ok = await new Promise((resolve) => {
      const req = httpRequest(`http://${host}/v2/`, { timeout: 1000 }, (res) => {
        res.resume();
        resolve(res.statusCode === 200);
      });
      req.on('error', () => resolve(false));
      req.on('timeout', () => req.destroy());
      req.end();
    });
    if (ok) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`docker-registry did not answer on ${host}`);
    }
    await sleep(50);
  }
  return { host, pid: /** @type {number} */ (child.pid), stop };
}

/** The flag that makes this module, run as a program, the child side of startLinkChild. */
const LINK_CHILD_FLAG = '--link-child';

/**
 * bench/link.mjs at LINK_BYTES_PER_SECOND in a child process (this module, forked with
 * LINK_CHILD_FLAG, whatever module calls it; so that nothing this process does can stall it), in
 * front of `targetPort` on 127.0.0.1; `stats()` asks it for the bytes carried so far.
 * @param {number} targetPort
 */
export async function startLinkChild(targetPort) {
  const child = fork(
    fileURLToPath(import.meta.url),
    [LINK_CHILD_FLAG, String(targetPort), String(LINK_BYTES_PER_SECOND)],
    { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] },
  );
  children.add(child);
  /** @type {(m: any) => void} */
  let next = () => {};
  child.on('message', (m) => next(m));
  const ask = (/** @type {string} */ what) =>
    new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('the link process does not answer')), 10_000);
      next = (m) => {
        clearTimeout(t);
        resolve(m);
      };
      if (what !== '') child.send(what);
    });
  const ready = /** @type {{ port: number }} */ (await ask(''));
  return {
    port: ready.port,
    /** @returns {Promise<{ bytesDown: number, bytesUp: number, connections: number }>} */
    stats: () => /** @type {any} */ (ask('stats')),
    stop: async () => {
      child.kill('SIGTERM');
      await Promise.race([new Promise((r) => child.once('exit', r)), sleep(5000)]);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      children.delete(child);
    },
  };
}

/** The child side of startLinkChild. @param {string[]} argv */
async function linkChild(argv) {
  const { startLink } = await import('./link.mjs');
  const link = await startLink({
    targetHost: '127.0.0.1',
    targetPort: Number(argv[0]),
    bytesPerSecond: Number(argv[1]),
  });
  process.on('message', (m) => {
    if (m === 'stats') process.send?.(link.stats());
  });
  process.on('SIGTERM', () => void link.close().then(() => process.exit(0)));
  process.on('disconnect', () => void link.close().then(() => process.exit(0)));
  process.send?.({ port: link.port });
}

// ---------------------------------------------------------------------------------------------
// Running things asynchronously (the link and the daemon must keep going meanwhile)

/**
 * Spawns a command (its stderr to `log`); resolves with its exit status, when its stdout gave its
 * first byte, and when its stdout first matched `mark`. With `transcript`, the command line goes
 * to the log before it and its stdout (the first 20,000 characters) after it.
 * @param {string} cmd
 * @param {string[]} args
 * @param {{ log: string, timeoutS?: number, mark?: RegExp, env?: NodeJS.ProcessEnv, transcript?: boolean }} o
 * @returns {Promise<{ status: number | null, firstOut: bigint | undefined, marked: bigint | undefined,
 *   end: bigint, stdout: string }>}
 */
export function run(cmd, args, o) {
  return new Promise((resolve) => {
    const fd = openSync(o.log, 'a');
    if (o.transcript === true) writeFileSync(fd, `$ ${cmd} ${args.join(' ')}\n`);
    const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', fd], ...(o.env !== undefined && { env: o.env }) });
    closeSync(fd);
    children.add(c);
    /** @type {bigint | undefined} */
    let firstOut;
    /** @type {bigint | undefined} */
    let marked;
    let stdout = '';
    c.stdout.on('data', (d) => {
      const now = process.hrtime.bigint();
      firstOut ??= now;
      stdout += d.toString();
      if (marked === undefined && o.mark?.test(stdout) === true) marked = now;
    });
    const timer = setTimeout(() => c.kill('SIGKILL'), (o.timeoutS ?? STEP_TIMEOUT_S) * 1000);
    const finish = (/** @type {number | null} */ status) => {
      clearTimeout(timer);
      children.delete(c);
      // After it ended: nothing else writes to the log meanwhile.
      if (o.transcript === true) {
        writeFileSync(o.log, `${stdout.length > 20_000 ? `${stdout.slice(0, 20_000)}...\n` : stdout}`, {
          flag: 'a',
        });
      }
      resolve({ status, firstOut, marked, end: process.hrtime.bigint(), stdout: stdout.trim() });
    };
    c.on('error', (e) => {
      writeFileSync(o.log, `\n${e.message}\n`, { flag: 'a' });
      finish(-1);
    });
    c.on('close', (code) => finish(code));
  });
}

/** @param {string} log */
const tail = (log) => lastLines(log, 3);

/**
 * GET a path of nydusd's API on its unix socket, as JSON.
 * @param {string} sock
 * @param {string} path
 */
export function apiGet(sock, path) {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ socketPath: sock, path, method: 'GET', timeout: 10_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => {
        if (res.statusCode !== 200) reject(new Error(`GET ${path}: HTTP ${res.statusCode} ${body}`));
        else {
          try {
            resolve(JSON.parse(body));
          } catch (e) {
            reject(e);
          }
        }
      });
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error(`GET ${path}: timeout`)));
    req.end();
  });
}

/** Seconds between two readings of process.hrtime.bigint(). @param {bigint} a @param {bigint} b */
export const secs = (a, b) => Number(b - a) / 1e9;

// ---------------------------------------------------------------------------------------------
// B4 / B5

/**
 * @typedef {object} B4Run
 * @property {number} first seconds from the start to CMD's first output byte
 * @property {number} total seconds until CMD exited
 * @property {Record<string, number>} steps seconds of each step
 * @property {string} output what CMD printed
 * @property {number} linkDown bytes the link carried to the client
 * @property {number} linkUp bytes the link carried to the registry
 * @property {number} otherCpu CPU seconds the machine used meanwhile beyond this run's processes (approx.)
 * @property {boolean} dropped
 * @property {{ readAmountTotal: number, readCount: number, readErrors: number, dataRead: number,
 *   bootstrapBytes: number, blobCacheBytes: number }} [b5] ours only
 */

/**
 * One lazy start of ours.
 * @param {{ nydusify: string, work: string, ref: string, cmd: string, link: Awaited<ReturnType<typeof startLinkChild>> }} o
 * @returns {Promise<B4Run>}
 */
async function lazyStartOurs(o) {
  const dir = join(o.work, 'ours');
  const mnt = join(dir, 'mnt');
  const wd = join(dir, 'work');
  const log = join(o.work, 'ours.log');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(mnt, { recursive: true });
  writeFileSync(log, '');
  const dropped = dropCaches();
  const link0 = await o.link.stats();
  const busy0 = machineBusySeconds();
  const startMs = Date.now();
  const t0 = process.hrtime.bigint();
  const fd = openSync(log, 'a');
  const d = spawn(
    process.execPath,
    [
      o.nydusify,
      '-D',
      'mount',
      '--target',
      o.ref,
      '--target-insecure',
      '--mount-path',
      mnt,
      '--work-dir',
      wd,
    ],
    { stdio: ['ignore', fd, fd] },
  );
  closeSync(fd);
  children.add(d);
  mounts.add(mnt);
  try {
    const deadline = Date.now() + 120_000;
    while (!isMounted(mnt)) {
      if (d.exitCode !== null) throw new Error(`nydusify mount exited with ${d.exitCode}: ${tail(log)}`);
      if (Date.now() > deadline) throw new Error(`nydusify mount did not mount within 120 s: ${tail(log)}`);
      await sleep(5);
    }
    const tMounted = process.hrtime.bigint();
    const r = await run('chroot', [mnt, '/bin/sh', '-c', o.cmd], { log, timeoutS: 300 });
    if (r.status !== 0 || r.firstOut === undefined)
      throw new Error(`chroot ${mnt} ${o.cmd}: exit ${r.status}, output "${r.stdout}": ${tail(log)}`);
    const busy = machineBusySeconds() - busy0;
    const sock = join(wd, 'nydusd.sock');
    const be = /** @type {any} */ (await apiGet(sock, '/api/v1/metrics/backend'));
    const fs = /** @type {any} */ (await apiGet(sock, '/api/v1/metrics'));
    const link1 = await o.link.stats();
    const mountMs = startMs + secs(t0, tMounted) * 1000;
    return {
      first: secs(t0, r.firstOut),
      total: secs(t0, r.end),
      steps: {
        mount: secs(t0, tMounted),
        command: secs(tMounted, r.firstOut),
        ...mountPhases(readFileSync(log, 'utf8'), startMs, mountMs),
      },
      output: r.stdout,
      linkDown: link1.bytesDown - link0.bytesDown,
      linkUp: link1.bytesUp - link0.bytesUp,
      otherCpu: busy,
      dropped,
      b5: {
        readAmountTotal: Number(be.read_amount_total),
        readCount: Number(be.read_count),
        readErrors: Number(be.read_errors),
        dataRead: Number(fs.data_read),
        bootstrapBytes: statSync(join(wd, 'bootstrap')).size,
        blobCacheBytes: existsSync(join(wd, 'cache'))
          ? Number(outputOf('du', ['-sb', join(wd, 'cache')]).split(/\s/)[0])
          : NaN,
      },
    };
  } finally {
    if (d.exitCode === null) {
      d.kill('SIGTERM');
      await Promise.race([new Promise((r) => d.once('exit', r)), sleep(30_000)]);
      if (d.exitCode === null && d.signalCode === null) d.kill('SIGKILL');
    }
    children.delete(d);
    if (isMounted(mnt)) spawnSync('umount', ['-l', mnt], { timeout: 20_000 });
    mounts.delete(mnt);
  }
}

/**
 * One full pull, unpack and run (the peer).
 * @param {{ work: string, ref: string, cmd: string, link: Awaited<ReturnType<typeof startLinkChild>> }} o
 * @returns {Promise<B4Run>}
 */
async function fullPullPeer(o) {
  const dir = join(o.work, 'peer');
  const log = join(o.work, 'peer.log');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  writeFileSync(log, '');
  const dropped = dropCaches();
  const link0 = await o.link.stats();
  const busy0 = machineBusySeconds();
  const t0 = process.hrtime.bigint();
  const layout = join(dir, 'oci');
  const bundle = join(dir, 'bundle');
  const pull = await run(
    'skopeo',
    ['copy', '--quiet', '--src-tls-verify=false', `docker://${o.ref}`, `oci:${layout}:t`],
    { log },
  );
  if (pull.status !== 0) throw new Error(`skopeo copy failed: ${tail(log)}`);
  const unpack = await run('umoci', ['unpack', '--image', `${layout}:t`, bundle], { log });
  if (unpack.status !== 0) throw new Error(`umoci unpack failed: ${tail(log)}`);
  const r = await run('chroot', [join(bundle, 'rootfs'), '/bin/sh', '-c', o.cmd], { log, timeoutS: 300 });
  if (r.status !== 0 || r.firstOut === undefined)
    throw new Error(`chroot ${bundle}/rootfs ${o.cmd}: exit ${r.status}: ${tail(log)}`);
  const busy = machineBusySeconds() - busy0;
  const link1 = await o.link.stats();
  rmSync(dir, { recursive: true, force: true });
  return {
    first: secs(t0, r.firstOut),
    total: secs(t0, r.end),
    steps: {
      pull: secs(t0, pull.end),
      unpack: secs(pull.end, unpack.end),
      command: secs(unpack.end, r.firstOut),
    },
    output: r.stdout,
    linkDown: link1.bytesDown - link0.bytesDown,
    linkUp: link1.bytesUp - link0.bytesUp,
    otherCpu: busy,
    dropped,
  };
}

// ---------------------------------------------------------------------------------------------
// B7

/** `[2026-11-22 10:00:00.123 +00:00] INFO message` */
const LOG_LINE = /^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) \+00:00\] (\w+) (.*)$/;

/**
 * Where convert's time went, from its debug log: start-up (process start to its first line),
 * the source manifest and config, each layer (pull + decompress + build, streamed together:
 * "Converting layer" to "Pushing blob layer"), the tail after the last layer (blob pushes still
 * running, merging the bootstraps) and the final pushes (bootstrap layer, config, manifest).
 * @param {string} log
 * @param {number} startMs wall clock when the process was started
 * @param {number} endMs wall clock when it ended
 */
export function convertPhases(log, startMs, endMs) {
  /** @type {{ t: number, msg: string }[]} */
  const lines = [];
  for (const l of log.split('\n')) {
    const m = LOG_LINE.exec(l);
    if (m !== null) lines.push({ t: Date.parse(`${m[1]?.replace(' ', 'T')}Z`), msg: m[3] ?? '' });
  }
  const at = (/** @type {RegExp} */ re) => lines.find((l) => re.test(l.msg))?.t;
  const first = lines[0]?.t;
  const pulling = at(/^Pulling image /);
  // Layers finish in any order: match each start to its own "Layer SRC -> blob" debug line.
  const layerStarts = lines.flatMap((l) => {
    const m = /^Converting layer (\S+)/.exec(l.msg);
    return m === null ? [] : [{ t: l.t, src: m[1] }];
  });
  /** @type {Map<string, number>} */
  const ends = new Map();
  for (const l of lines) {
    const m = /^Layer (\S+) -> blob /.exec(l.msg);
    if (m?.[1] !== undefined) ends.set(m[1], l.t);
  }
  const bootPush = at(/^Pushing bootstrap layer /);
  const success = at(/^Success convert /);
  if (first === undefined || pulling === undefined || bootPush === undefined || success === undefined)
    return undefined;
  const firstLayer = layerStarts[0]?.t ?? pulling;
  const lastLayer = Math.max(...ends.values());
  return {
    startup: (first - startMs) / 1000,
    beforePull: (pulling - first) / 1000,
    manifestAndConfig: (firstLayer - pulling) / 1000,
    layers: (lastLayer - firstLayer) / 1000,
    /** By source layer digest: seconds from its start to its blob. */
    perLayer: Object.fromEntries(
      layerStarts.map((s) => [s.src, ((ends.get(s.src ?? '') ?? NaN) - s.t) / 1000]),
    ),
    pushesAndMerge: (bootPush - lastLayer) / 1000,
    finalPushes: (success - bootPush) / 1000,
    exit: (endMs - success) / 1000,
  };
}

/**
 * Where the time until the mount went, from `nydusify -D mount`'s log: its start-up (to its first
 * line; the HTTPS attempt and the fallback to HTTP are in it), the manifest (to "Pulling bootstrap
 * layer"), the bootstrap (to "Starting" nydusd) and nydusd's start (to the mount showing).
 * @param {string} log
 * @param {number} startMs
 * @param {number} mountMs
 * @returns {Record<string, number>}
 */
export function mountPhases(log, startMs, mountMs) {
  /** @type {{ t: number, msg: string }[]} */
  const lines = [];
  for (const l of log.split('\n')) {
    const m = LOG_LINE.exec(l);
    if (m !== null) lines.push({ t: Date.parse(`${m[1]?.replace(' ', 'T')}Z`), msg: m[3] ?? '' });
  }
  const first = lines[0]?.t;
  const pulling = lines.find((l) => /^Pulling bootstrap layer /.test(l.msg))?.t;
  const starting = lines.find((l) => /^Starting /.test(l.msg))?.t;
  if (first === undefined || pulling === undefined || starting === undefined) return {};
  return {
    mountStartup: (first - startMs) / 1000,
    mountManifest: (pulling - first) / 1000,
    mountBootstrap: (starting - pulling) / 1000,
    mountNydusd: (mountMs - starting) / 1000,
  };
}

/** The floor of B7, as one script printing a timestamp after each step on stdout. */
const FLOOR_SCRIPT = [
  'set -e',
  'ts() { date +%s.%N; }',
  'ts',
  'skopeo copy --quiet --src-tls-verify=false "docker://$0" "oci:$1/oci:t" >&2',
  'ts',
  'umoci raw unpack --image "$1/oci:t" "$1/tree" >&2',
  'ts',
  'mksquashfs "$1/tree" "$1/image.sqfs" -comp zstd -Xcompression-level 3 -noappend -quiet >&2',
  'ts',
  'rm -rf "$1/oci" "$1/tree"',
].join('\n');

// ---------------------------------------------------------------------------------------------
// The whole part

/**
 * `o.rounds` rounds of ours and the peer, who goes first swapping every round, each run after
 * waiting (at most 20 s) for a quiet machine. A run that throws is said ("NAME round N: WHO
 * FAILED: ...") and noted in `o.into.failed`: a failure of ours replaces what is there, the
 * peer's only fills it when it is empty.
 * @param {{ rounds: number, name: string, say: (msg: string) => void, into: { failed?: string } }} o
 * @param {(who: 'ours' | 'peer', round: number) => Promise<void>} runOne
 * @returns {Promise<number>} the seconds waited for a quiet machine
 */
export async function alternateRounds(o, runOne) {
  let waited = 0;
  for (let round = 0; round < o.rounds; round++) {
    /** @type {('ours' | 'peer')[]} */
    const order = round % 2 === 0 ? ['ours', 'peer'] : ['peer', 'ours'];
    for (const who of order) {
      waited += waitQuiet(20);
      try {
        await runOne(who, round);
      } catch (e) {
        const msg = e instanceof Error ? e.message : String(e);
        o.say(`${o.name} round ${round + 1}: ${who} FAILED: ${msg}`);
        if (who === 'ours') o.into.failed = msg;
        else o.into.failed ??= `peer: ${msg}`;
      }
    }
  }
  return waited;
}

/**
 * @param {{ work: string, rounds: number, build: string, only: string[], say: (msg: string) => void,
 *   base: import('./datasets.mjs').DataSet }} ctx
 */
export async function benchRegistry(ctx) {
  const { say } = ctx;
  const nydusify = join(ctx.build, 'src', 'cli', 'nydusify.js');
  const cmd = process.env['NYDUS_BENCH_B4_CMD'] || DEFAULT_B4_CMD;
  const wantB7 = ctx.only.includes('b7');
  const wantB4 = ctx.only.includes('b4') || ctx.only.includes('b5');
  if (ctx.base.skipped !== undefined) throw new Error(`the rootfs data set is missing: ${ctx.base.skipped}`);
  const ds = rootfsLarge(ctx.work, ctx.base, say);
  say(
    `data set rootfs-large: ${ds.stats?.files} files, ${ds.stats?.bytes} bytes (${ds.prepSeconds?.toFixed(0)} s)`,
  );
  const image = await ociImage(ctx.work, ds, say);
  say(
    `OCI image: ${image.layers.map((l) => l.size).join(' + ')} bytes of gzip layers (${image.seconds.toFixed(0)} s)`,
  );

  const root = join(ctx.work, 'registry');
  const registry = await startRegistry(join(root, 'server'));
  const source = `${registry.host}/rootfs:oci`;
  /** @type {{ ours: any[], floor: any[], failed?: string }} */
  const b7 = { ours: [], floor: [] };
  /** @type {{ ours: B4Run[], peer: B4Run[], failed?: string, cmd: string, ref?: string }} */
  const b4 = { ours: [], peer: [], cmd };
  let quietWaited = 0;
  let nydusTarget = '';
  /** @type {any} */
  let converted;
  try {
    say(`docker-registry on ${registry.host}; pushing ${source} with skopeo`);
    must('skopeo', [
      'copy',
      '--quiet',
      '--dest-tls-verify=false',
      `oci:${image.layout}:oci`,
      `docker://${source}`,
    ]);

    // B7: convert rounds, each to a new repository (so nothing is already there), against the floor.
    const b7Rounds = wantB7 ? ctx.rounds : 1;
    for (let round = 0; round < b7Rounds; round++) {
      const order = round % 2 === 0 ? ['ours', 'floor'] : ['floor', 'ours'];
      for (const who of order) {
        if (who === 'floor' && !wantB7) continue;
        if (b7.failed !== undefined && who === 'ours') continue;
        quietWaited += waitQuiet(20);
        const dir = join(root, `b7-${who}`);
        const logPath = join(root, `b7-${who}-${round + 1}.log`);
        if (who === 'ours') {
          const target = `${registry.host}/rootfs-nydus-${round + 1}:nydus`;
          const startMs = Date.now();
          const r = timedRun(
            [
              process.execPath,
              nydusify,
              '-D',
              'convert',
              '--source',
              source,
              '--target',
              target,
              '--plain-http',
              '--work-dir',
              join(dir, 'work'),
              '--output-json',
              join(dir, 'metric.json'),
            ],
            { outDir: dir, logPath, dropCache: true },
          );
          const endMs = Date.now();
          if (r.status !== 0) {
            b7.failed = `exit ${r.status}: ${r.log.trim().split('\n').slice(-2).join(' / ')}`;
            say(`B7 round ${round + 1}: nydusify convert FAILED (${b7.failed}); log ${logPath}`);
            continue;
          }
          const metric = JSON.parse(readFileSync(join(dir, 'metric.json'), 'utf8'));
          const phases = convertPhases(r.log, startMs, endMs);
          if (nydusTarget === '') {
            nydusTarget = target;
            converted = {
              bootstrapBytes: statSync(
                join(dir, 'work', registry.host, `rootfs-nydus-${round + 1}:nydus`, 'bootstrap'),
              ).size,
              blobBytes: metric.TargetImageSize,
            };
          }
          b7.ours.push({ ...r, log: undefined, metric, phases, startMs, endMs });
          say(
            `B7 round ${round + 1}: nydusify convert ${r.wall.toFixed(2)} s (${r.cpu.toFixed(1)} CPU s, ${(r.rssKiB / 1024).toFixed(0)} MiB)`,
          );
        } else {
          const r = timedRun(['bash', '-c', FLOOR_SCRIPT, source, dir], {
            outDir: dir,
            logPath,
            dropCache: true,
          });
          if (r.status !== 0) {
            b7.floor.push({ failed: `exit ${r.status}: ${tail(logPath)}` });
            say(`B7 round ${round + 1}: floor FAILED; log ${logPath}`);
            continue;
          }
          const ts = r.log
            .trim()
            .split('\n')
            .filter((l) => /^\d+\.\d+$/.test(l))
            .map(Number);
          const steps = {
            pull: (ts[1] ?? NaN) - (ts[0] ?? NaN),
            unpack: (ts[2] ?? NaN) - (ts[1] ?? NaN),
            mksquashfs: (ts[3] ?? NaN) - (ts[2] ?? NaN),
          };
          b7.floor.push({ ...r, log: undefined, steps });
          say(
            `B7 round ${round + 1}: floor ${r.wall.toFixed(2)} s (pull ${steps.pull.toFixed(1)}, unpack ${steps.unpack.toFixed(1)}, mksquashfs ${steps.mksquashfs.toFixed(1)})`,
          );
        }
      }
    }
    if (!wantB7) b7.failed = 'not asked for (NYDUS_BENCH_ONLY)';

    // B4/B5 through one link.
    if (wantB4) {
      if (nydusTarget === '') throw new Error(`no converted image to mount (B7: ${b7.failed})`);
      const link = await startLinkChild(Number(registry.host.split(':')[1]));
      const linkHost = `127.0.0.1:${link.port}`;
      const ref = `${linkHost}/${nydusTarget.slice(registry.host.length + 1)}`;
      b4.ref = ref;
      say(`B4: link ${linkHost} -> ${registry.host} at 100 Mbit/s; command \`${cmd}\``);
      const work = join(root, 'b4');
      mkdirSync(work, { recursive: true });
      try {
        quietWaited += await alternateRounds(
          { rounds: ctx.rounds, name: 'B4', say, into: b4 },
          async (who, round) => {
            if (who === 'ours') {
              const r = await lazyStartOurs({ nydusify, work, ref, cmd, link });
              b4.ours.push(r);
              say(
                `B4 round ${round + 1}: ours ${r.first.toFixed(2)} s to first output (mount ${r.steps['mount']?.toFixed(2)} s); backend ${r.b5?.readAmountTotal} bytes, read ${r.b5?.dataRead}, link ${r.linkDown}`,
              );
            } else {
              const r = await fullPullPeer({ work, ref: `${linkHost}/rootfs:oci`, cmd, link });
              b4.peer.push(r);
              say(
                `B4 round ${round + 1}: peer ${r.first.toFixed(2)} s to first output (pull ${r.steps['pull']?.toFixed(1)}, unpack ${r.steps['unpack']?.toFixed(1)}); link ${r.linkDown}`,
              );
            }
          },
        );
      } finally {
        await link.stop();
      }
    }
  } finally {
    await registry.stop();
    cleanupRegistrySync();
  }
  const sq = (/** @type {any[]} */ runs, /** @type {(r: any) => number} */ f) =>
    median(runs.filter((r) => r.failed === undefined).map(f));
  return {
    dataSet: {
      name: ds.name,
      description: ds.description,
      stats: ds.stats,
      prepSeconds: ds.prepSeconds,
      packages: LARGE_PACKAGES,
    },
    image: { ...image, seconds: image.seconds },
    converted,
    cmd,
    b7,
    b4,
    quietWaited,
    medians: {
      b7Ours: sq(b7.ours, (r) => r.wall),
      b7Floor: sq(b7.floor, (r) => r.wall),
      b4Ours: sq(b4.ours, (r) => r.first),
      b4Peer: sq(b4.peer, (r) => r.first),
    },
  };
}

if (process.argv[2] === LINK_CHILD_FLAG) {
  linkChild(process.argv.slice(3)).catch((e) => {
    process.stderr.write(`link child: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(2);
  });
}
