// B8 of ../shared/docs/benchmarks.md and the snapshotter's memory figures: container start
// through containerd, all on this machine over loopback, against Debian's docker-registry
// started here.
//
//   B8   from `ctr-remote image rpull` to the first byte a command run in the container prints,
//        over ONE shared 100 Mbit/s link (bench/link.mjs, in a child process, in front of the
//        registry): ours is containerd + containerd-nydus-grpc (dedicated mode) with the Nydus
//        image of rootfs-large (`ctr-remote image rpull --snapshotter nydus` + `ctr run
//        --snapshotter nydus`), the peer `ctr image pull` + `ctr run` of the same OCI image with
//        containerd's overlayfs snapshotter. For ours also: the bytes nydusd fetched
//        (`read_amount_total` on its API socket) and read, the peak RSS (VmHWM) of the
//        snapshotter and of nydusd.
//   mem  the snapshotter in shared mode (one nydusd for every image): containers from N = 1..4
//        Nydus images (rootfs-large plus one small layer of its own, so that each is a separate
//        instance of the daemon), and the RSS of the shared nydusd after each.
//
// Every run starts from nothing: a new containerd root and state (empty content store, no
// snapshots), a new snapshotter root (no blob cache) and dropped caches; everything started is
// stopped, unmounted and removed after it. Rounds alternate ours and the peer (who goes first
// swaps every round).
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  closeSync,
  copyFileSync,
  cpSync,
  existsSync,
  linkSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { connect } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { dropCaches, machineBusySeconds, median, outputOf, processMemory, waitQuiet } from './measure.mjs';
import {
  alternateRounds,
  apiGet,
  cleanupRegistrySync,
  DEFAULT_B4_CMD,
  lastLines,
  must as mustWith,
  ociImage,
  rootfsLarge,
  run as runWith,
  secs,
  sleep,
  startLinkChild,
  startRegistry,
} from './registry.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
/** The containerd namespace of every run. */
const NAMESPACE = 'nydus-bench';
/** Seconds any one step of a run may take. */
const STEP_TIMEOUT_S = 600;
/** Images of the memory part (separate instances of the shared nydusd). */
export const MEMORY_IMAGES = 4;
/** The nydusd config template of the snapshotter: registry backend over plain HTTP, blob cache. */
const NYDUSD_TEMPLATE = {
  device: {
    backend: {
      type: 'registry',
      config: { scheme: 'http', skip_verify: true, timeout: 10, connect_timeout: 5, retry_limit: 2 },
    },
    cache: { type: 'blobcache', config: { work_dir: 'cache' } },
  },
  mode: 'direct',
  digest_validate: false,
  enable_xattr: true,
  fs_prefetch: { enable: false },
};
/** PATH for containerd, its shims and ctr: Debian puts runc in /usr/sbin. */
const PATH = [
  ...new Set([
    ...(process.env['PATH'] ?? '').split(':').filter((d) => d !== ''),
    '/usr/local/sbin',
    '/usr/local/bin',
    '/usr/sbin',
    '/usr/bin',
    '/sbin',
    '/bin',
  ]),
].join(':');

/** Environment of containerd and ctr: no CONTAINERD_* from outside, sbin dirs on PATH. */
function childEnv() {
  /** @type {NodeJS.ProcessEnv} */
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('CONTAINERD_')) env[k] = v;
  env['PATH'] = PATH;
  return env;
}

/**
 * registry.mjs's must() with the environment of containerd and ctr and this module's step timeout.
 * @param {string} cmd
 * @param {string[]} args
 * @param {{ log?: string, timeoutS?: number }} [o]
 */
const must = (cmd, args, o = {}) => mustWith(cmd, args, { env: childEnv(), timeoutS: STEP_TIMEOUT_S, ...o });

/**
 * registry.mjs's run() with the environment of containerd and ctr and this module's step timeout;
 * the command line and its output go to the log too.
 * @param {string} cmd
 * @param {string[]} args
 * @param {{ log: string, timeoutS?: number, mark?: RegExp }} o
 */
const run = (cmd, args, o) =>
  runWith(cmd, args, { env: childEnv(), timeoutS: STEP_TIMEOUT_S, transcript: true, ...o });

// ---------------------------------------------------------------------------------------------
// Processes and mounts: what this module started must not outlive the run

/** Processes started here. @type {Set<import('node:child_process').ChildProcess>} */
const children = new Set();
/** Directories holding a containerd's or a snapshotter's state (mounts, sockets). @type {Set<string>} */
const stateDirs = new Set();

/** Undo the octal escapes of /proc/self/mountinfo. @param {string} s */
const unescapeMount = (s) => s.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));

/** Mount points at or below `dir`, in mount order. @param {string} dir */
export function mountsUnder(dir) {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => unescapeMount(l.split(' ')[4] ?? ''))
    .filter((m) => m === dir || m.startsWith(`${dir}/`));
}

/** Lazily unmount everything at or below `dir`, the latest mounts first. @param {string} dir */
function unmountUnder(dir) {
  for (let round = 0; round < 5; round++) {
    const ms = mountsUnder(dir);
    if (ms.length === 0) return;
    for (const m of ms.reverse()) spawnSync('umount', ['-l', m], { timeout: 20_000 });
  }
}

/** Living processes: pid, parent and command line. */
function processes() {
  /** @type {{ pid: number, ppid: number, argv: string[] }[]} */
  const out = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (rest[0] === 'Z') continue;
      const argv = readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0');
      out.push({ pid: Number(name), ppid: Number(rest[1]), argv });
    } catch {
      // gone
    }
  }
  return out;
}

/**
 * nydusd processes of a snapshotter root (their --apisock is under ROOT/socket/).
 * @param {string} root
 */
export function nydusdPids(root) {
  return processes()
    .filter((p) => {
      const i = p.argv.indexOf('--apisock');
      return i >= 0 && (p.argv[i + 1] ?? '').startsWith(`${root}/socket/`);
    })
    .map((p) => p.pid);
}

/**
 * The runc shims of the containerd on `sock` (they name its address on their command line) and
 * every process below them.
 * @param {string} sock
 */
function shimTree(sock) {
  const all = processes();
  const doomed = new Set(
    all
      .filter((p) => (p.argv[0] ?? '').includes('containerd-shim') && p.argv.includes(sock))
      .map((p) => p.pid),
  );
  for (let grew = true; grew;) {
    grew = false;
    for (const p of all) {
      if (doomed.has(p.ppid) && !doomed.has(p.pid)) {
        doomed.add(p.pid);
        grew = true;
      }
    }
  }
  return [...doomed];
}

/** @param {number[]} pids */
function killPids(pids) {
  for (const pid of [...pids].reverse()) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }
}

/**
 * Takes down what is left in a state dir: the shims of its containerd, the nydusd processes of
 * its snapshotter, its mounts; then removes it.
 * @param {string} dir
 */
function scrubDir(dir) {
  const sock = join(dir, 'ctd', 'c.sock');
  killPids(shimTree(sock));
  killPids(nydusdPids(join(dir, 'sn', 'r')));
  unmountUnder(dir);
  rmSync(dir, { recursive: true, force: true });
  stateDirs.delete(dir);
}

/**
 * Kills what this module started (and what registry.mjs's helpers started for it: the registry,
 * the link, the commands of run()), unmounts and removes its state (also on the way out).
 */
export function cleanupContainerdSync() {
  cleanupRegistrySync();
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const d of [...stateDirs]) scrubDir(d);
}

/** @param {string} path */
function socketAnswers(path) {
  return new Promise((done) => {
    const s = connect(path);
    s.once('connect', () => {
      s.destroy();
      done(true);
    });
    s.once('error', () => done(false));
  });
}

// ---------------------------------------------------------------------------------------------
// containerd and the snapshotter

/** A TOML basic string. @param {string} s */
const q = (s) => JSON.stringify(s);

/**
 * containerd on its own root, state and socket under `dir` (created), with the snapshotter on
 * `snapshotterSock` as `[proxy_plugins.nydus]` when given; waits until `ctr version` answers.
 * @param {string} dir
 * @param {string | undefined} snapshotterSock
 */
async function startContainerd(dir, snapshotterSock) {
  for (const d of ['root', 'state', 'opt']) mkdirSync(join(dir, d), { recursive: true });
  const sock = join(dir, 'c.sock');
  const config = join(dir, 'config.toml');
  const disabled = [
    'io.containerd.grpc.v1.cri',
    'io.containerd.snapshotter.v1.aufs',
    'io.containerd.snapshotter.v1.btrfs',
    'io.containerd.snapshotter.v1.devmapper',
    'io.containerd.snapshotter.v1.zfs',
    'io.containerd.tracing.processor.v1.otlp',
    'io.containerd.internal.v1.tracing',
  ];
  const lines = [
    'version = 2',
    `root = ${q(join(dir, 'root'))}`,
    `state = ${q(join(dir, 'state'))}`,
    `disabled_plugins = [${disabled.map(q).join(', ')}]`,
    '[grpc]',
    `  address = ${q(sock)}`,
    '[ttrpc]',
    `  address = ${q(`${sock}.ttrpc`)}`,
    '[debug]',
    '  level = "info"',
    '[plugins]',
    '  [plugins."io.containerd.internal.v1.opt"]',
    `    path = ${q(join(dir, 'opt'))}`,
  ];
  if (snapshotterSock !== undefined) {
    lines.push(
      '[proxy_plugins]',
      '  [proxy_plugins.nydus]',
      '    type = "snapshot"',
      `    address = ${q(snapshotterSock)}`,
    );
  }
  writeFileSync(config, `${lines.join('\n')}\n`);
  const logFile = join(dir, 'containerd.log');
  const fd = openSync(logFile, 'w');
  const child = spawn('containerd', ['--config', config], { stdio: ['ignore', fd, fd], env: childEnv() });
  closeSync(fd);
  children.add(child);
  /** ctr's arguments for this containerd and the namespace. @param {string[]} args */
  const ctrArgs = (args) => ['-a', sock, '-n', NAMESPACE, ...args];
  const ctr = (/** @type {string[]} */ args, /** @type {{ timeoutS?: number }} */ o = {}) =>
    spawnSync('ctr', ctrArgs(args), {
      encoding: 'utf8',
      env: childEnv(),
      timeout: (o.timeoutS ?? 30) * 1000,
      killSignal: 'SIGKILL',
    });
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      // What `ctr run --rm` did not remove (a failed run).
      const ids = (/** @type {string[]} */ a) =>
        (ctr(a).stdout ?? '')
          .split('\n')
          .map((l) => l.trim())
          .filter((l) => l !== '');
      for (const id of ids(['tasks', 'ls', '-q'])) {
        ctr(['tasks', 'kill', '-a', '-s', 'SIGKILL', id]);
        ctr(['tasks', 'delete', '-f', id]);
      }
      const cs = ids(['containers', 'ls', '-q']);
      if (cs.length > 0) ctr(['containers', 'delete', ...cs]);
      child.kill('SIGTERM');
      await Promise.race([new Promise((r) => child.once('exit', r)), sleep(10_000)]);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
    children.delete(child);
    const shims = shimTree(sock);
    const deadline = Date.now() + 3000;
    while (Date.now() < deadline && shimTree(sock).length > 0) await sleep(50);
    killPids(shims.filter((p) => existsSync(`/proc/${p}`)));
  };
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null)
      throw new Error(`containerd exited at start: ${lastLines(logFile)}`);
    if (existsSync(sock) && ctr(['version'], { timeoutS: 5 }).status === 0) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`containerd did not answer on ${sock}: ${lastLines(logFile)}`);
    }
    await sleep(50);
  }
  return { sock, pid: /** @type {number} */ (child.pid), logFile, ctrArgs, ctr, stop };
}

/**
 * containerd-nydus-grpc of the private build, root `dir/r`, socket `dir/grpc.sock`, logging to
 * `dir/snapshotter.log`; `cleanup_on_close` so that it stops its nydusd processes when it ends.
 * @param {string} dir
 * @param {string} build
 * @param {'dedicated' | 'shared'} mode
 */
async function startSnapshotter(dir, build, mode) {
  const root = join(dir, 'r');
  const sock = join(dir, 'grpc.sock');
  if (root.length > 70) throw new Error(`the snapshotter root "${root}" is longer than 70 bytes`);
  mkdirSync(root, { recursive: true });
  const template = join(dir, 'nydusd-config.json');
  writeFileSync(template, JSON.stringify(NYDUSD_TEMPLATE, null, 2));
  const toml = join(dir, 'config.toml');
  writeFileSync(toml, 'version = 1\ncleanup_on_close = true\n');
  const logFile = join(dir, 'snapshotter.log');
  const fd = openSync(logFile, 'w');
  const child = spawn(
    process.execPath,
    [
      join(build, 'src', 'cli', 'containerd-nydus-grpc.js'),
      '--config',
      toml,
      '--root',
      root,
      '--address',
      sock,
      '--nydusd',
      join(build, 'src', 'cli', 'nydusd.cjs'),
      '--nydusd-config',
      template,
      '--daemon-mode',
      mode,
      '--log-to-stdout',
      '--log-level',
      'info',
    ],
    { stdio: ['ignore', fd, fd] },
  );
  closeSync(fd);
  children.add(child);
  const stop = async () => {
    let code = child.exitCode;
    if (code === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const exited = await Promise.race([
        new Promise((r) => child.once('exit', () => r(true))),
        sleep(30_000).then(() => false),
      ]);
      if (!exited) child.kill('SIGKILL');
      code = child.exitCode;
    }
    children.delete(child);
    // With cleanup_on_close nothing may be left: what is, is a finding.
    const leftNydusd = nydusdPids(root).length;
    const leftMounts = mountsUnder(root).length;
    return { code, signal: child.signalCode, leftNydusd, leftMounts };
  };
  const deadline = Date.now() + 30_000;
  while (!(existsSync(sock) && (await socketAnswers(sock)))) {
    if (child.exitCode !== null) throw new Error(`containerd-nydus-grpc exited: ${lastLines(logFile)}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`containerd-nydus-grpc did not listen within 30 s: ${lastLines(logFile)}`);
    }
    await sleep(50);
  }
  return { root, sock, pid: /** @type {number} */ (child.pid), logFile, stop };
}

/**
 * Backend and file system metrics of every nydusd of a snapshotter root (dedicated mode: one per
 * image), summed.
 * @param {string} root
 */
async function nydusdMetrics(root) {
  const dir = join(root, 'socket');
  const socks = existsSync(dir)
    ? readdirSync(dir)
        .map((id) => join(dir, id, 'api.sock'))
        .filter((s) => existsSync(s))
    : [];
  const sum = { daemons: socks.length, readAmountTotal: 0, readCount: 0, readErrors: 0, dataRead: 0 };
  for (const s of socks) {
    const be = /** @type {any} */ (await apiGet(s, '/api/v1/metrics/backend'));
    const fs = /** @type {any} */ (await apiGet(s, '/api/v1/metrics'));
    sum.readAmountTotal += Number(be.read_amount_total);
    sum.readCount += Number(be.read_count);
    sum.readErrors += Number(be.read_errors);
    sum.dataRead += Number(fs.data_read);
  }
  return sum;
}

/**
 * Peak and current RSS of processes in KiB, summed (NaN when one is gone).
 * @param {number[]} pids
 */
function memoryOf(pids) {
  const ms = pids.map((p) => processMemory(p));
  return {
    hwmKiB: ms.reduce((a, m) => a + m.hwmKiB, 0),
    rssKiB: ms.reduce((a, m) => a + m.rssKiB, 0),
  };
}

/** Lines of a snapshotter log at warn level or above (its findings), at most `n`. @param {string} file */
function complaints(file, n = 20) {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => /^\[[^\]]*\] (WARN|ERROR) /.test(l))
    .slice(0, n);
}

/**
 * Wall-clock time (ms) of the first line of a log of ours (`[2026-12-05 06:45:11.840 +00:00] INFO
 * message`) whose message matches `re`; NaN when there is none.
 * @param {string} file
 * @param {RegExp} re
 */
function loggedAt(file, re) {
  if (!existsSync(file)) return NaN;
  for (const l of readFileSync(file, 'utf8').split('\n')) {
    const m = /^\[(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d\.\d{3}) \+00:00\] \w+ (.*)$/.exec(l);
    if (m !== null && re.test(m[3] ?? '')) return Date.parse(`${m[1]}T${m[2]}Z`);
  }
  return NaN;
}

/**
 * Where the time of ours' `ctr run` went, from the logs' timestamps: until the snapshotter starts
 * nydusd (containerd prepares the container's snapshot), nydusd's start until it serves the
 * image, then the rest (overlay mount, runc, the command reading its files) to the first output.
 * @param {string} snLog the snapshotter's log
 * @param {string} root the snapshotter's root (nydusd logs under root/logs/ID/nydusd.log)
 * @param {number} runStartMs wall clock when `ctr run` started
 * @param {number} firstOutMs wall clock of the first output
 */
function runPhases(snLog, root, runStartMs, firstOutMs) {
  const starting = loggedAt(snLog, /^Starting nydusd /);
  const logs = join(root, 'logs');
  const serving = existsSync(logs)
    ? Math.min(...readdirSync(logs).map((id) => loggedAt(join(logs, id, 'nydusd.log'), /^nydusd serving /)))
    : NaN;
  if (!Number.isFinite(starting) || !Number.isFinite(serving)) return {};
  return {
    untilNydusd: (starting - runStartMs) / 1000,
    nydusdStart: (serving - starting) / 1000,
    afterNydusd: (firstOutMs - serving) / 1000,
  };
}

// ---------------------------------------------------------------------------------------------
// The images

/**
 * OCI layouts of rootfs-large with one small layer more each (a file naming the image), tags
 * mem-1..mem-N, in `dir` (made again; the big blobs are hard links to the cached layout's).
 * @param {string} dir
 * @param {import('./registry.mjs').OciImage} image
 * @param {number} n
 */
function memoryLayouts(dir, image, n) {
  rmSync(dir, { recursive: true, force: true });
  const blobs = join(dir, 'blobs', 'sha256');
  mkdirSync(blobs, { recursive: true });
  const srcBlobs = join(image.layout, 'blobs', 'sha256');
  for (const name of readdirSync(srcBlobs)) {
    try {
      linkSync(join(srcBlobs, name), join(blobs, name));
    } catch {
      copyFileSync(join(srcBlobs, name), join(blobs, name));
    }
  }
  const index = JSON.parse(readFileSync(join(image.layout, 'index.json'), 'utf8'));
  const baseDesc = index.manifests[0];
  const manifest = JSON.parse(readFileSync(join(srcBlobs, baseDesc.digest.slice(7)), 'utf8'));
  const config = JSON.parse(readFileSync(join(srcBlobs, manifest.config.digest.slice(7)), 'utf8'));
  const put = (/** @type {Buffer} */ bytes) => {
    const hex = createHash('sha256').update(bytes).digest('hex');
    writeFileSync(join(blobs, hex), bytes);
    return { digest: `sha256:${hex}`, size: bytes.length };
  };
  const manifests = [];
  for (let i = 1; i <= n; i++) {
    const tmp = join(dir, `layer-${i}`);
    mkdirSync(join(tmp, 'etc'), { recursive: true });
    writeFileSync(join(tmp, 'etc', 'nydus-bench-image'), `memory image ${i}\n`);
    const tar = join(dir, `layer-${i}.tar`);
    must('tar', [
      '--numeric-owner',
      '--owner=0',
      '--group=0',
      '--mtime=@0',
      '--no-recursion',
      '-cf',
      tar,
      '-C',
      tmp,
      'etc',
      'etc/nydus-bench-image',
    ]);
    const tarBytes = readFileSync(tar);
    const diffId = `sha256:${createHash('sha256').update(tarBytes).digest('hex')}`;
    const layer = put(gzipSync(tarBytes));
    rmSync(tmp, { recursive: true, force: true });
    rmSync(tar);
    const cfg = put(
      Buffer.from(
        JSON.stringify({
          ...config,
          rootfs: { type: 'layers', diff_ids: [...config.rootfs.diff_ids, diffId] },
          history: [
            ...(config.history ?? []),
            { created: config.created, created_by: `nydus-ts bench: memory image ${i}` },
          ],
        }),
      ),
    );
    const man = put(
      Buffer.from(
        JSON.stringify({
          ...manifest,
          config: { ...manifest.config, ...cfg },
          layers: [
            ...manifest.layers,
            { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...layer },
          ],
        }),
      ),
    );
    manifests.push({
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      ...man,
      annotations: { 'org.opencontainers.image.ref.name': `mem-${i}` },
    });
  }
  writeFileSync(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  writeFileSync(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests }));
}

/**
 * `nydusify convert` of `source` to `target` (plain HTTP registry).
 * @param {string} nydusify
 * @param {string} source
 * @param {string} target
 * @param {string} work
 * @param {string} log
 */
function convert(nydusify, source, target, work, log) {
  rmSync(work, { recursive: true, force: true });
  must(
    process.execPath,
    [nydusify, 'convert', '--source', source, '--target', target, '--plain-http', '--work-dir', work],
    { log },
  );
  const bootstrap = readdirSync(work, { recursive: true, encoding: 'utf8' }).find(
    (p) => p.endsWith('/bootstrap') || p === 'bootstrap',
  );
  const bootstrapBytes = bootstrap !== undefined ? statSync(join(work, bootstrap)).size : NaN;
  rmSync(work, { recursive: true, force: true });
  return { bootstrapBytes };
}

// ---------------------------------------------------------------------------------------------
// B8

/**
 * @typedef {object} B8Run
 * @property {number} first seconds from the start of the pull to the command's first output byte
 * @property {number} total seconds until `ctr run` exited
 * @property {Record<string, number>} steps seconds of each step
 * @property {string} output what the command printed
 * @property {number} linkDown bytes the link carried to the client
 * @property {number} linkUp bytes the link carried to the registry
 * @property {number} machineCpu CPU seconds the whole machine used meanwhile
 * @property {boolean} dropped
 * @property {{ readAmountTotal: number, readCount: number, readErrors: number, dataRead: number,
 *   daemons: number }} [fetched] ours only: nydusd's metrics after the command
 * @property {{ snapshotterHwmKiB: number, snapshotterRssKiB: number, nydusdHwmKiB: number,
 *   nydusdRssKiB: number, nydusdCount: number }} [memory] ours only
 * @property {{ code: number | null, signal: string | null, leftNydusd: number, leftMounts: number }} [stopped]
 * @property {string[]} [complaints] ours only: the snapshotter's warnings and errors
 */

/**
 * A run's state directory, from nothing (what an earlier run left in it taken down first), and its
 * log, empty.
 * @param {string} dir
 * @param {string} log
 */
function openRunDir(dir, log) {
  scrubDir(dir);
  mkdirSync(dir, { recursive: true });
  stateDirs.add(dir);
  writeFileSync(log, '');
}

/**
 * After a run: keeps the logs of its snapshotter and containerd, and with `nydusdLogs` those of
 * its nydusd processes, beside `log` (LOG without .log, then .snapshotter.log, .containerd.log,
 * .nydusd-logs/); then takes down and removes everything in its state directory.
 * @param {string} dir
 * @param {string} log
 * @param {boolean} nydusdLogs
 */
function closeRunDir(dir, log, nydusdLogs) {
  const base = log.replace(/\.log$/, '');
  // The logs are small: kept; the rest (the roots, the blob cache) is dropped.
  for (const f of ['sn/snapshotter.log', 'ctd/containerd.log']) {
    if (existsSync(join(dir, f))) copyFileSync(join(dir, f), `${base}.${f.split('/')[1]}`);
  }
  const nydusd = join(dir, 'sn', 'r', 'logs');
  if (nydusdLogs && existsSync(nydusd)) cpSync(nydusd, `${base}.nydusd-logs`, { recursive: true });
  scrubDir(dir);
}

/**
 * One container start of ours or of the peer, from nothing; everything is taken down after it.
 * @param {{ who: 'ours' | 'peer', dir: string, build: string, ref: string, cmd: string, id: string,
 *   link: Awaited<ReturnType<typeof startLinkChild>>, log: string }} o
 * @returns {Promise<B8Run>}
 */
async function containerStart(o) {
  openRunDir(o.dir, o.log);
  /** @type {Awaited<ReturnType<typeof startSnapshotter>> | undefined} */
  let sn;
  /** @type {Awaited<ReturnType<typeof startContainerd>> | undefined} */
  let ctd;
  try {
    if (o.who === 'ours') sn = await startSnapshotter(join(o.dir, 'sn'), o.build, 'dedicated');
    ctd = await startContainerd(join(o.dir, 'ctd'), sn?.sock);
    const snap = o.who === 'ours' ? ['--snapshotter', 'nydus'] : [];
    const dropped = dropCaches();
    const link0 = await o.link.stats();
    const busy0 = machineBusySeconds();
    const startMs = Date.now();
    const t0 = process.hrtime.bigint();
    const pull =
      o.who === 'ours'
        ? await run('ctr-remote', ctd.ctrArgs(['image', 'rpull', '--plain-http', ...snap, o.ref]), {
            log: o.log,
          })
        : await run('ctr', ctd.ctrArgs(['image', 'pull', '--plain-http', o.ref]), {
            log: o.log,
            mark: /^unpacking /m,
          });
    if (pull.status !== 0) throw new Error(`the pull exited with ${pull.status}: ${lastLines(o.log)}`);
    const r = await run('ctr', ctd.ctrArgs(['run', ...snap, '--rm', o.ref, o.id, '/bin/sh', '-c', o.cmd]), {
      log: o.log,
      timeoutS: 300,
    });
    if (r.status !== 0 || r.firstOut === undefined)
      throw new Error(`ctr run exited with ${r.status}, output "${r.stdout}": ${lastLines(o.log)}`);
    const machineCpu = machineBusySeconds() - busy0;
    const link1 = await o.link.stats();
    /** @type {B8Run} */
    const res = {
      first: secs(t0, r.firstOut),
      total: secs(t0, r.end),
      steps: {
        pull: secs(t0, pull.end),
        ...(pull.marked !== undefined
          ? { fetch: secs(t0, pull.marked), unpack: secs(pull.marked, pull.end) }
          : {}),
        run: secs(pull.end, r.firstOut),
      },
      output: r.stdout,
      linkDown: link1.bytesDown - link0.bytesDown,
      linkUp: link1.bytesUp - link0.bytesUp,
      machineCpu,
      dropped,
    };
    if (sn !== undefined) {
      const wall = (/** @type {bigint} */ t) => startMs + secs(t0, t) * 1000;
      Object.assign(res.steps, runPhases(sn.logFile, sn.root, wall(pull.end), wall(r.firstOut)));
      res.fetched = await nydusdMetrics(sn.root);
      const pids = nydusdPids(sn.root);
      const nm = memoryOf(pids);
      const sm = processMemory(sn.pid);
      res.memory = {
        snapshotterHwmKiB: sm.hwmKiB,
        snapshotterRssKiB: sm.rssKiB,
        nydusdHwmKiB: nm.hwmKiB,
        nydusdRssKiB: nm.rssKiB,
        nydusdCount: pids.length,
      };
    }
    await ctd.stop();
    ctd = undefined;
    if (sn !== undefined) {
      res.stopped = await sn.stop();
      res.complaints = complaints(sn.logFile);
      sn = undefined;
    }
    return res;
  } finally {
    await ctd?.stop();
    await sn?.stop();
    closeRunDir(o.dir, o.log, true);
  }
}

/**
 * The memory part: the snapshotter in shared mode; a container from each of the images in turn
 * (their data read: the command runs), the shared nydusd's RSS after each.
 * @param {{ dir: string, build: string, refs: string[], cmd: string, log: string }} o
 */
async function sharedMemory(o) {
  openRunDir(o.dir, o.log);
  /** @type {Awaited<ReturnType<typeof startSnapshotter>> | undefined} */
  let sn;
  /** @type {Awaited<ReturnType<typeof startContainerd>> | undefined} */
  let ctd;
  try {
    sn = await startSnapshotter(join(o.dir, 'sn'), o.build, 'shared');
    ctd = await startContainerd(join(o.dir, 'ctd'), sn.sock);
    dropCaches();
    const steps = [];
    for (let i = 0; i < o.refs.length; i++) {
      const ref = /** @type {string} */ (o.refs[i]);
      const pull = await run(
        'ctr-remote',
        ctd.ctrArgs(['image', 'rpull', '--plain-http', '--snapshotter', 'nydus', ref]),
        { log: o.log },
      );
      if (pull.status !== 0) throw new Error(`rpull ${ref} exited with ${pull.status}: ${lastLines(o.log)}`);
      const r = await run(
        'ctr',
        ctd.ctrArgs([
          'run',
          '--snapshotter',
          'nydus',
          '--rm',
          ref,
          `mem-${i + 1}`,
          '/bin/sh',
          '-c',
          `cat /etc/nydus-bench-image; ${o.cmd}`,
        ]),
        { log: o.log, timeoutS: 300 },
      );
      if (r.status !== 0 || !r.stdout.startsWith(`memory image ${i + 1}`))
        throw new Error(`ctr run ${ref} exited with ${r.status}, output "${r.stdout}": ${lastLines(o.log)}`);
      const pids = nydusdPids(sn.root);
      // Let the daemon settle, then the median of a few samples (the JS heap moves).
      await sleep(1000);
      const samples = [];
      for (let k = 0; k < 5; k++) {
        samples.push(memoryOf(pids).rssKiB);
        await sleep(200);
      }
      const mem = memoryOf(pids);
      const mnt = join(sn.root, 'mnt');
      steps.push({
        images: i + 1,
        nydusdCount: pids.length,
        instances: existsSync(mnt) ? readdirSync(mnt).length : NaN,
        nydusdRssKiB: median(samples),
        nydusdHwmKiB: mem.hwmKiB,
        snapshotterRssKiB: processMemory(sn.pid).rssKiB,
        output: r.stdout,
      });
    }
    await ctd.stop();
    ctd = undefined;
    const stopped = await sn.stop();
    const found = complaints(sn.logFile);
    sn = undefined;
    return { steps, stopped, complaints: found };
  } finally {
    await ctd?.stop();
    await sn?.stop();
    closeRunDir(o.dir, o.log, false);
  }
}

/** Versions of what B8 drives. */
export function containerdVersions() {
  const dpkg = (/** @type {string} */ p) =>
    outputOf('dpkg-query', ['-W', '-f', '${Version}', p]) || 'not installed';
  return {
    containerd: dpkg('containerd'),
    runc: dpkg('runc'),
    stargzSnapshotter: dpkg('stargz-snapshotter'),
    dockerRegistry: dpkg('docker-registry'),
    skopeo: dpkg('skopeo'),
  };
}

/**
 * B8 and the shared-mode memory figures on rootfs-large.
 * @param {{ work: string, rounds: number, build: string, say: (msg: string) => void,
 *   base: import('./datasets.mjs').DataSet }} ctx
 */
export async function benchContainerd(ctx) {
  const { say } = ctx;
  const cmd = process.env['NYDUS_BENCH_B4_CMD'] || DEFAULT_B4_CMD;
  const nydusify = join(ctx.build, 'src', 'cli', 'nydusify.js');
  if (ctx.base.skipped !== undefined) throw new Error(`the rootfs data set is missing: ${ctx.base.skipped}`);
  // The snapshotter reads its .proto files from <build>/../proto (three levels above
  // src/snapshotter): a copy of the project's, frozen with the build like the code.
  const protoDir = join(dirname(ctx.build), 'proto');
  rmSync(protoDir, { recursive: true, force: true });
  cpSync(join(ROOT, 'proto'), protoDir, { recursive: true });

  const ds = rootfsLarge(ctx.work, ctx.base, say);
  say(`data set rootfs-large: ${ds.stats?.files} files, ${ds.stats?.bytes} bytes`);
  const image = await ociImage(ctx.work, ds, say);
  const root = join(ctx.work, 'containerd');
  const logs = join(root, 'logs');
  rmSync(logs, { recursive: true, force: true });
  mkdirSync(logs, { recursive: true });
  const t0 = performance.now();
  const registry = await startRegistry(join(root, 'registry'));
  /** @type {{ ours: B8Run[], peer: B8Run[], failed?: string, ref?: string, peerRef?: string }} */
  const b8 = { ours: [], peer: [] };
  /** @type {{ rounds: Awaited<ReturnType<typeof sharedMemory>>[], failed?: string, bootstrapBytes: number[] }} */
  const memory = { rounds: [], bootstrapBytes: [] };
  let quietWaited = 0;
  let converted = { bootstrapBytes: NaN };
  let setupSeconds = 0;
  try {
    const source = `${registry.host}/rootfs:oci`;
    say(`B8: docker-registry on ${registry.host}; pushing ${source}, converting it to rootfs-nydus:nydus`);
    const setupLog = join(logs, 'setup.log');
    must(
      'skopeo',
      ['copy', '--quiet', '--dest-tls-verify=false', `oci:${image.layout}:oci`, `docker://${source}`],
      { log: setupLog },
    );
    converted = convert(
      nydusify,
      source,
      `${registry.host}/rootfs-nydus:nydus`,
      join(root, 'convert'),
      setupLog,
    );
    const memLayout = join(root, 'mem-oci');
    memoryLayouts(memLayout, image, MEMORY_IMAGES);
    for (let i = 1; i <= MEMORY_IMAGES; i++) {
      const src = `${registry.host}/mem-${i}:oci`;
      must(
        'skopeo',
        ['copy', '--quiet', '--dest-tls-verify=false', `oci:${memLayout}:mem-${i}`, `docker://${src}`],
        { log: setupLog },
      );
      const c = convert(nydusify, src, `${registry.host}/mem-${i}:nydus`, join(root, 'convert'), setupLog);
      memory.bootstrapBytes.push(c.bootstrapBytes);
    }
    rmSync(memLayout, { recursive: true, force: true });
    setupSeconds = (performance.now() - t0) / 1000;
    say(`B8: images ready in ${setupSeconds.toFixed(0)} s`);

    const link = await startLinkChild(Number(registry.host.split(':')[1]));
    const linkHost = `127.0.0.1:${link.port}`;
    const refs = { ours: `${linkHost}/rootfs-nydus:nydus`, peer: `${linkHost}/rootfs:oci` };
    b8.ref = refs.ours;
    b8.peerRef = refs.peer;
    say(`B8: link ${linkHost} -> ${registry.host} at 100 Mbit/s; command \`${cmd}\``);
    try {
      quietWaited += await alternateRounds(
        { rounds: ctx.rounds, name: 'B8', say, into: b8 },
        async (who, round) => {
          const r = await containerStart({
            who,
            dir: join(root, who),
            build: ctx.build,
            ref: refs[who],
            cmd,
            id: `b8-${who}-${round + 1}`,
            link,
            log: join(logs, `${who}-${round + 1}.log`),
          });
          b8[who].push(r);
          say(
            `B8 round ${round + 1}: ${who} ${r.first.toFixed(2)} s to first output (pull ${r.steps['pull']?.toFixed(2)} s, ` +
              `run ${r.steps['run']?.toFixed(2)} s); link ${r.linkDown} bytes` +
              (r.fetched !== undefined
                ? `; nydusd fetched ${r.fetched.readAmountTotal}, read ${r.fetched.dataRead}; ` +
                  `snapshotter VmHWM ${((r.memory?.snapshotterHwmKiB ?? NaN) / 1024).toFixed(0)} MiB, ` +
                  `nydusd ${((r.memory?.nydusdHwmKiB ?? NaN) / 1024).toFixed(0)} MiB`
                : ''),
          );
        },
      );
    } finally {
      await link.stop();
    }

    // Memory in shared mode, straight from the registry (no link: only memory is measured).
    for (let round = 0; round < ctx.rounds; round++) {
      quietWaited += waitQuiet(20);
      try {
        const r = await sharedMemory({
          dir: join(root, 'shared'),
          build: ctx.build,
          refs: Array.from({ length: MEMORY_IMAGES }, (_, i) => `${registry.host}/mem-${i + 1}:nydus`),
          cmd,
          log: join(logs, `shared-${round + 1}.log`),
        });
        memory.rounds.push(r);
        say(
          `memory round ${round + 1}: shared nydusd RSS ${r.steps
            .map((s) => `${s.images}: ${(s.nydusdRssKiB / 1024).toFixed(1)} MiB (${s.instances} instances)`)
            .join(', ')}`,
        );
      } catch (e) {
        const msg = e instanceof Error ? e.message : String(e);
        say(`memory round ${round + 1}: FAILED: ${msg}`);
        memory.failed = msg;
      }
    }
  } finally {
    await registry.stop();
    cleanupContainerdSync();
    // The registry's storage (the images pushed and converted here) is made again every run.
    rmSync(join(root, 'registry'), { recursive: true, force: true });
    // runc's state directory of the namespace, left empty once every container is gone.
    const runcNs = join('/run/containerd/runc', NAMESPACE);
    if (existsSync(runcNs) && readdirSync(runcNs).length === 0) rmSync(runcNs, { recursive: true });
  }
  return {
    dataSet: { name: ds.name, description: ds.description, stats: ds.stats },
    image: { layers: image.layers, compressedBytes: image.compressedBytes },
    converted,
    cmd,
    b8,
    memory,
    quietWaited,
    setupSeconds,
    versions: containerdVersions(),
    medians: {
      b8Ours: median(b8.ours.map((r) => r.first)),
      b8Peer: median(b8.peer.map((r) => r.first)),
    },
  };
}
