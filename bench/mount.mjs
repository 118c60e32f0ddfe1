// B2, B3 and B6 on mounted images: the metadata walk (`find -printf` of every entry's size,
// mode and owner), the cold read of every file (`tar -cf - . | wc -c`) and the peak memory of
// the daemon that served both, for our nydusd against squashfuse and kernel EROFS on images of
// the same data.
//
// Every round mounts each image afresh (a new daemon, so its own caches start cold too), runs
// B2 then B3 with the kernel's caches dropped before each, reads the daemon's VmHWM and
// unmounts. Each round runs the tools in its own shuffled order, as in B1 (measure.mjs
// roundOrder). Every mount and unmount is bounded in time, and whatever is still mounted at the
// end (or on SIGINT/SIGTERM) is unmounted.
import { spawn, spawnSync } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  realpathSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { basename, join } from 'node:path';
import process from 'node:process';
import {
  bytesUnder,
  disturbed,
  mayRepeat,
  median,
  outputOf,
  processMemory,
  processTree,
  roundOrder,
  timedShell,
  waitQuiet,
} from './measure.mjs';

/** Seconds a B2 or B3 command may take before it is killed. */
const COMMAND_TIMEOUT_S = 900;
/** Milliseconds a mount may take to appear, and a daemon to exit after SIGTERM. */
const MOUNT_TIMEOUT_MS = 30_000;
const EXIT_TIMEOUT_MS = 20_000;
/** Seconds umount(8), mount(8) and losetup(8) may take. */
const CMD_TIMEOUT_MS = 20_000;

/**
 * An image of a data set, made once per run (ours) or cached between runs (the peers' images,
 * keyed by the data set and the command that made them).
 * @typedef {object} Image
 * @property {string} id
 * @property {string} label how it was made
 * @property {string} dir where its files are
 * @property {number} bytes its size on disk (ours: bootstrap + blobs)
 * @property {number} [bootstrapBytes] ours: the bootstrap's size (nydusd maps it; the pages it reads count in its RSS, file-backed)
 * @property {number} seconds how long making it took (0 when cached)
 * @property {boolean} cached
 * @property {string} [failed]
 */

/**
 * @typedef {object} MountTool
 * @property {string} id
 * @property {string} label how the tables name it
 * @property {'ours' | 'peer' | 'extra'} kind peers are what the bar compares against; extras are
 *   shown for context only
 * @property {string} image the id of the image it serves
 * @property {'fuse' | 'kernel'} how a user-space daemon, or the kernel itself
 * @property {string} [bin] the peer daemon's program (default: the id)
 * @property {number} [readAheadKb] the kernel read-ahead the harness sets on the peer's mount
 * @property {boolean} [few] a row no bar is judged on: at most ctx.fewRounds rounds
 */

/** @type {MountTool[]} */
export const MOUNT_TOOLS = [
  { id: 'nydusd-zstd', label: 'nydusd, v6 zstd', kind: 'ours', image: 'nydus-zstd', how: 'fuse' },
  {
    id: 'nydusd-lz4_block',
    label: 'nydusd, v6 lz4_block',
    kind: 'ours',
    image: 'nydus-lz4_block',
    how: 'fuse',
    few: true,
  },
  { id: 'squashfuse', label: 'squashfuse, zstd', kind: 'peer', image: 'squashfs-zstd', how: 'fuse' },
  {
    id: 'squashfuse_ll',
    label: 'squashfuse_ll, zstd',
    kind: 'extra',
    image: 'squashfs-zstd',
    how: 'fuse',
    few: true,
  },
  {
    // nydusd sets its mount's read-ahead to 1 MiB: the same for squashfuse shows what that
    // setting alone is worth.
    id: 'squashfuse-ra1m',
    label: 'squashfuse, zstd, read-ahead 1 MiB',
    kind: 'extra',
    image: 'squashfs-zstd',
    how: 'fuse',
    bin: 'squashfuse',
    readAheadKb: 1024,
    few: true,
  },
  {
    id: 'erofs',
    label: 'kernel EROFS, lz4hc (loop)',
    kind: 'peer',
    image: 'erofs-lz4hc',
    how: 'kernel',
  },
];

/** The B2 and B3 commands, as the report quotes them. */
export const B2_SCRIPT = `find "$0" -printf '%s %m %u %g\\n' | wc -l`;
export const B3_SCRIPT = 'tar -cf - . | wc -c';

/**
 * @param {string} cmd
 * @param {string[]} args
 * @param {number} [timeoutMs]
 */
function run(cmd, args, timeoutMs = CMD_TIMEOUT_MS) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs, killSignal: 'SIGKILL' });
  const text = `${r.stdout ?? ''}${r.stderr ?? ''}`.trim();
  if (r.error !== undefined) return { ok: false, text: `${text} ${r.error.message}`.trim() };
  return { ok: r.status === 0, text };
}

/** Decode the octal escapes (\040 ...) of a /proc/self/mountinfo path. */
const unescapeMountPath = (/** @type {string} */ s) =>
  s.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));

/**
 * Whether something is mounted at `real` (a resolved path), read from the mount table without
 * touching the path itself (a dead FUSE mount would hang a stat).
 * @param {string} real
 */
export function isMounted(real) {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => l.length > 0 && unescapeMountPath(l.split(' ')[4] ?? '') === real);
}

/** @param {number} ms */
const sleep = (ms) => new Promise((res) => setTimeout(res, ms));

/**
 * Mounts made by this process, so that they can be cleaned up whatever happens.
 * @type {Map<string, { child?: import('node:child_process').ChildProcess, image?: string }>}
 */
const active = new Map();

/**
 * Unmounts everything this process mounted, synchronously (for an exit on a signal or an error):
 * kill the daemons, `umount -l` what is left, detach loop devices.
 */
export function cleanupMountsSync() {
  for (const [mnt, s] of active) {
    if (s.child !== undefined && s.child.exitCode === null && s.child.signalCode === null) {
      try {
        s.child.kill('SIGKILL');
      } catch {
        // already gone
      }
    }
    if (isMounted(mnt)) run('umount', ['-l', mnt]);
    if (s.image !== undefined) detachLoops(s.image);
    active.delete(mnt);
  }
}

/**
 * Detaches loop devices still backed by `image` (mount -o loop sets autoclear, so normally none).
 * @param {string} image
 */
function detachLoops(image) {
  const out = run('losetup', ['-j', image]).text;
  for (const line of out.split('\n')) {
    const dev = /^(\/dev\/loop\d+):/.exec(line)?.[1];
    if (dev !== undefined) run('losetup', ['-d', dev]);
  }
}

/**
 * Waits for a child process to exit, at most `ms`; whether it did.
 * @param {import('node:child_process').ChildProcess} child
 * @param {number} ms
 */
async function waitExit(child, ms) {
  if (child.exitCode !== null || child.signalCode !== null) return true;
  /** @type {NodeJS.Timeout | undefined} */
  let timer;
  const exited = await Promise.race([
    new Promise((res) => child.once('exit', () => res(true))),
    new Promise((res) => (timer = setTimeout(() => res(false), ms))),
  ]);
  clearTimeout(timer);
  return exited === true;
}

/**
 * A mounted image being measured.
 * @typedef {object} Mounted
 * @property {string} mnt resolved mountpoint
 * @property {number} [pid] the daemon's pid (FUSE)
 * @property {import('node:child_process').ChildProcess} [child]
 * @property {string} [image] the loop device's backing file (kernel)
 * @property {string} logPath the daemon's or mount(8)'s output
 * @property {number} mountSeconds from spawning the daemon (or mount(8)) to a served root
 * @property {number} [readAheadKb] the mount's kernel read-ahead once mounted (FUSE)
 */

/**
 * Mounts an image with a FUSE daemon started in the foreground (its pid is the daemon's) and
 * waits until the mount table shows it and its root answers.
 * @param {string[]} argv
 * @param {string} mnt resolved mountpoint
 * @param {string} logPath
 * @returns {Promise<Mounted>}
 */
export async function mountFuse(argv, mnt, logPath) {
  const fd = openSync(logPath, 'w');
  const t0 = performance.now();
  const [cmd = '', ...args] = argv;
  const child = spawn(cmd, args, { stdio: ['ignore', fd, fd] });
  closeSync(fd);
  active.set(mnt, { child });
  const tail = () => readFileSync(logPath, 'utf8').trim().split('\n').slice(-3).join(' / ');
  const failed = (/** @type {string} */ why) =>
    new Error(`${argv[0] === process.execPath ? 'nydusd' : cmd}: ${why}: ${tail()}`);
  /** @type {Error | undefined} */
  let spawnError;
  child.once('error', (e) => (spawnError = e));
  /** @type {Mounted} */
  const m = { mnt, child, ...(child.pid !== undefined && { pid: child.pid }), logPath, mountSeconds: NaN };
  try {
    for (;;) {
      if (spawnError !== undefined) throw failed(`cannot start (${spawnError.message})`);
      if (child.exitCode !== null || child.signalCode !== null)
        throw failed(`exited (${child.exitCode ?? child.signalCode}) before mounting`);
      if (isMounted(mnt)) break;
      if (performance.now() - t0 > MOUNT_TIMEOUT_MS)
        throw failed(`not mounted within ${MOUNT_TIMEOUT_MS / 1000} s`);
      await sleep(20);
    }
    // The root answers (INIT done): a bounded stat in another process.
    const st = run('stat', ['-c', '%F', mnt], MOUNT_TIMEOUT_MS);
    if (!st.ok) throw failed(`mounted but its root does not answer (${st.text})`);
  } catch (e) {
    await unmount(m);
    throw e;
  }
  m.mountSeconds = (performance.now() - t0) / 1000;
  m.readAheadKb = Number(readFileSync(bdiReadAhead(mnt), 'utf8').trim());
  return m;
}

/**
 * The sysfs file of a mount's kernel read-ahead (its bdi, named by the device numbers).
 * @param {string} mnt
 */
function bdiReadAhead(mnt) {
  const dev = outputOf('mountpoint', ['-d', mnt]);
  return `/sys/class/bdi/${dev}/read_ahead_kb`;
}

/**
 * Mounts an EROFS image with the kernel, over a loop device.
 * @param {string} image
 * @param {string} mnt
 * @param {string} logPath
 * @returns {Mounted}
 */
function mountErofs(image, mnt, logPath) {
  const t0 = performance.now();
  active.set(mnt, { image });
  const r = run('mount', ['-t', 'erofs', '-o', 'loop,ro', image, mnt], MOUNT_TIMEOUT_MS);
  writeFileSync(logPath, r.text);
  if (!r.ok || !isMounted(mnt)) {
    if (isMounted(mnt)) run('umount', ['-l', mnt]);
    detachLoops(image);
    active.delete(mnt);
    throw new Error(`mount -t erofs failed: ${r.text}`);
  }
  return { mnt, image, logPath, mountSeconds: (performance.now() - t0) / 1000 };
}

/**
 * Unmounts, each step bounded: SIGTERM to the daemon (ours and libfuse's unmount on it), then
 * umount(8), then `umount -l`, then SIGKILL. Returns what went wrong on the way ('' when
 * nothing did); throws only when the mountpoint is still mounted at the end.
 * @param {Mounted} m
 */
export async function unmount(m) {
  const problems = [];
  const alive = () => m.child !== undefined && m.child.exitCode === null && m.child.signalCode === null;
  if (m.child !== undefined && alive()) {
    m.child.kill('SIGTERM');
    if (!(await waitExit(m.child, EXIT_TIMEOUT_MS)))
      problems.push(`the daemon did not exit within ${EXIT_TIMEOUT_MS / 1000} s of SIGTERM`);
  }
  if (isMounted(m.mnt)) {
    if (m.child !== undefined) problems.push('still mounted after the daemon ended');
    const r = run('umount', [m.mnt]);
    if (!r.ok) problems.push(`umount: ${r.text}`);
  }
  if (isMounted(m.mnt)) {
    const r = run('umount', ['-l', m.mnt]);
    problems.push(`umount -l: ${r.ok ? 'done' : r.text}`);
  }
  if (m.child !== undefined && alive()) {
    m.child.kill('SIGKILL');
    if (!(await waitExit(m.child, EXIT_TIMEOUT_MS))) problems.push('the daemon survived SIGKILL');
  }
  if (m.image !== undefined) detachLoops(m.image);
  if (isMounted(m.mnt)) throw new Error(`${m.mnt} is still mounted: ${problems.join('; ')}`);
  active.delete(m.mnt);
  return problems.join('; ');
}

/**
 * The data set's marker (what its generator was asked for and what it made), which keys the
 * cached peer images.
 * @param {import('./datasets.mjs').DataSet} ds
 */
function dataSetKey(ds) {
  try {
    return readFileSync(`${ds.dir}.done.json`, 'utf8');
  } catch {
    return `${ds.dir} ${JSON.stringify(ds.stats)}`;
  }
}

/**
 * @param {string} dir
 * @returns {number}
 */
function sizeOf(dir) {
  return existsSync(dir) ? bytesUnder(dir) : 0;
}

/**
 * Makes the images of one data set under WORK/mount/images/SET: ours with the CLI of the
 * private build (always made again: src/ changes), the peers' only when their cache key changed.
 * @param {import('./datasets.mjs').DataSet} ds
 * @param {{ work: string, nydusImage: string, say: (msg: string) => void }} ctx
 * @returns {Record<string, Image>}
 */
export function prepareImages(ds, ctx) {
  // By the data set's directory: the quick and the full sizes of a data set have their own.
  const root = join(ctx.work, 'mount', 'images', basename(ds.dir));
  const logs = join(ctx.work, 'logs', ds.name);
  mkdirSync(logs, { recursive: true });
  const dpkg = (/** @type {string} */ pkg) => outputOf('dpkg-query', ['-W', '-f', '${Version}', pkg]);
  /** @type {{ id: string, label: string, cache: boolean, version?: string, argv: (dir: string) => string[] }[]} */
  const recipes = [
    ...['zstd', 'lz4_block'].map((c) => ({
      id: `nydus-${c}`,
      label: `nydus-image create --compressor ${c} --fs-version 6`,
      cache: false,
      argv: (/** @type {string} */ dir) => [
        process.execPath,
        ctx.nydusImage,
        'create',
        '--compressor',
        c,
        '--fs-version',
        '6',
        '-B',
        join(dir, 'bootstrap'),
        '-D',
        join(dir, 'blobs'),
        ds.dir,
      ],
    })),
    {
      id: 'squashfs-zstd',
      label: 'mksquashfs -comp zstd',
      cache: true,
      version: dpkg('squashfs-tools'),
      argv: (dir) => ['mksquashfs', ds.dir, join(dir, 'image.sqfs'), '-comp', 'zstd', '-noappend', '-quiet'],
    },
    {
      id: 'erofs-lz4hc',
      label: 'mkfs.erofs -zlz4hc',
      cache: true,
      version: dpkg('erofs-utils'),
      argv: (dir) => ['mkfs.erofs', '-zlz4hc', join(dir, 'image.erofs'), ds.dir],
    },
  ];
  /** @type {Record<string, Image>} */
  const images = {};
  for (const r of recipes) {
    const dir = join(root, r.id);
    const argv = r.argv(dir);
    const key = JSON.stringify({ data: dataSetKey(ds), argv, version: r.version ?? '' });
    const keyFile = join(dir, '.key.json');
    if (r.cache && existsSync(keyFile) && readFileSync(keyFile, 'utf8') === key) {
      images[r.id] = { id: r.id, label: r.label, dir, bytes: sizeOf(dir), seconds: 0, cached: true };
      continue;
    }
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(r.cache ? dir : join(dir, 'blobs'), { recursive: true });
    ctx.say(`${ds.name}: making the ${r.label} image`);
    const logPath = join(logs, `image-${r.id}.log`);
    const fd = openSync(logPath, 'w');
    const t0 = performance.now();
    const p = spawnSync(argv[0] ?? '', argv.slice(1), {
      stdio: ['ignore', fd, fd],
      timeout: 3600_000,
      killSignal: 'SIGKILL',
    });
    closeSync(fd);
    const seconds = (performance.now() - t0) / 1000;
    /** @type {Image} */
    const img = { id: r.id, label: r.label, dir, bytes: 0, seconds, cached: false };
    if (p.error !== undefined || p.status !== 0) {
      img.failed = `${p.error?.message ?? `exit ${p.status ?? p.signal}`}: ${readFileSync(logPath, 'utf8').trim().split('\n').slice(-2).join(' / ')}`;
      ctx.say(`${ds.name}: ${r.label} FAILED (${img.failed})`);
    } else {
      rmSync(join(dir, '.key.json'), { force: true });
      img.bytes = sizeOf(dir);
      if (!r.cache) img.bootstrapBytes = statSync(join(dir, 'bootstrap')).size;
      if (r.cache) writeFileSync(keyFile, key);
    }
    images[r.id] = img;
  }
  return images;
}

/**
 * The command that mounts `tool`'s image at `mnt`, or the kernel mount.
 * @param {MountTool} tool
 * @param {Image} img
 * @param {string} mnt
 * @param {string} logPath
 * @param {string} nydusd the daemon's CLI in the private build
 * @returns {Promise<Mounted>}
 */
async function mountTool(tool, img, mnt, logPath, nydusd) {
  if (tool.how === 'kernel') return mountErofs(join(img.dir, 'image.erofs'), mnt, logPath);
  if (tool.kind === 'ours') {
    return mountFuse(
      [
        process.execPath,
        nydusd,
        '--config',
        join(img.dir, 'nydusd.json'),
        '--bootstrap',
        join(img.dir, 'bootstrap'),
        '--mountpoint',
        mnt,
      ],
      mnt,
      logPath,
    );
  }
  const m = await mountFuse([tool.bin ?? tool.id, '-f', join(img.dir, 'image.sqfs'), mnt], mnt, logPath);
  if (tool.readAheadKb !== undefined) {
    writeFileSync(bdiReadAhead(mnt), String(tool.readAheadKb));
    m.readAheadKb = tool.readAheadKb;
  }
  return m;
}

/**
 * Our daemon's config: v1 JSON, localfs backend over the blob directory, no cache.
 * @param {Image} img
 */
export function writeNydusdConfig(img) {
  const cfg = {
    device: {
      backend: { type: 'localfs', config: { dir: join(img.dir, 'blobs') } },
      cache: { type: 'dummycache' },
    },
    mode: 'direct',
    digest_validate: false,
    iostats_files: false,
  };
  writeFileSync(join(img.dir, 'nydusd.json'), JSON.stringify(cfg, null, 2));
}

/**
 * One phase of a session (B2 or B3), as kept in the results.
 * @typedef {object} PhaseRun
 * @property {number} wall
 * @property {number} cpu the command's own CPU seconds (find, tar, wc)
 * @property {number} daemonCpu
 * @property {number} kernelCpu
 * @property {number} otherCpu
 * @property {number} output lines (B2) or bytes (B3) the command counted
 */

/**
 * One mount of one image: B2, B3 and the memory of the daemon.
 * @typedef {object} SessionRun
 * @property {number} mountSeconds
 * @property {PhaseRun} [b2]
 * @property {PhaseRun} [b3]
 * @property {number} readAheadKb the mount's kernel read-ahead (NaN for the kernel)
 * @property {number} idleRssKiB the daemon's RSS once settled after the mount, before B2 (NaN for
 *   the kernel): see settledRss
 * @property {number} [settleSeconds] how long it took to settle
 * @property {number} hwmKiB the daemon's peak RSS over the session (B2 and B3), summed over its
 *   processes
 * @property {number} [b2HwmKiB] its peak RSS from the mount to the end of B2
 * @property {number} [b3HwmKiB] its peak RSS during B3 alone (the peak is reset before B3)
 * @property {number} processes how many processes the daemon was at the end
 * @property {string} unmountProblems
 */

/**
 * @typedef {object} MountResult
 * @property {MountTool} tool
 * @property {SessionRun[]} runs
 * @property {string} [failed]
 * @property {Record<'b2' | 'b3', PhaseMedian | undefined> & { mountSeconds: number,
 *   readAheadKb: number, idleRssKiB: number, hwmKiB: number, b3HwmKiB?: number, processes: number }} [median]
 */

/**
 * @typedef {object} PhaseMedian
 * @property {number} wall
 * @property {number} min
 * @property {number} max
 * @property {number} cpu
 * @property {number} daemonCpu
 * @property {number} kernelCpu
 * @property {number} otherCpu
 * @property {number} output
 * @property {number[]} outputs every run's output count (all equal when all is well)
 */

/**
 * @param {import('./measure.mjs').ShellResult} r
 * @param {string} what
 * @returns {PhaseRun}
 */
function phase(r, what) {
  if (r.status !== 0) {
    throw new Error(`${what} failed (exit ${r.status}): ${r.log.trim().split('\n').slice(-3).join(' / ')}`);
  }
  return {
    wall: r.wall,
    cpu: r.cpu,
    daemonCpu: r.daemonCpu,
    kernelCpu: r.kernelCpu,
    otherCpu: r.otherCpu,
    output: Number(r.stdout),
  };
}

/**
 * @param {PhaseRun[]} runs
 * @returns {PhaseMedian | undefined}
 */
function phaseMedian(runs) {
  if (runs.length === 0) return undefined;
  const walls = runs.map((r) => r.wall);
  const med = (/** @type {(r: PhaseRun) => number} */ f) => median(runs.map(f));
  return {
    wall: median(walls),
    min: Math.min(...walls),
    max: Math.max(...walls),
    cpu: med((r) => r.cpu),
    daemonCpu: med((r) => r.daemonCpu),
    kernelCpu: med((r) => r.kernelCpu),
    otherCpu: med((r) => r.otherCpu),
    output: med((r) => r.output),
    outputs: runs.map((r) => r.output),
  };
}

/** Milliseconds between two samples of a settling daemon's RSS, and how many equal ones settle it. */
const SETTLE_SAMPLE_MS = 250;
const SETTLE_SAMPLES = 4;
/** Milliseconds a daemon may take to settle after its mount (its RSS is read then anyway). */
const SETTLE_MAX_MS = 5000;
/** RSS moves of at most this many KiB between samples count as settled. */
const SETTLE_KIB = 128;

/**
 * The RSS of a daemon once it is idle after its mount: sampled every 250 ms until 4 samples in
 * a row are within 128 KiB of each other (at most 5 s), summed over its processes.
 * @param {number} pid
 * @returns {Promise<{ rssKiB: number, seconds: number }>}
 */
export async function settledRss(pid) {
  const t0 = performance.now();
  const rss = () => processTree(pid).reduce((a, p) => a + processMemory(p).rssKiB, 0);
  const samples = [rss()];
  while (performance.now() - t0 < SETTLE_MAX_MS) {
    await sleep(SETTLE_SAMPLE_MS);
    samples.push(rss());
    const last = samples.slice(-SETTLE_SAMPLES);
    if (last.length === SETTLE_SAMPLES && Math.max(...last) - Math.min(...last) <= SETTLE_KIB) break;
  }
  return { rssKiB: samples.at(-1) ?? NaN, seconds: (performance.now() - t0) / 1000 };
}

/**
 * Peak RSS (VmHWM) of a daemon, summed over its processes.
 * @param {number} pid
 */
function peakKiB(pid) {
  return processTree(pid).reduce((a, p) => a + processMemory(p).hwmKiB, 0);
}

/**
 * Resets the peak RSS of a daemon's processes to their current RSS (`echo 5 >
 * /proc/PID/clear_refs`); whether it could.
 * @param {number} pid
 */
function resetPeak(pid) {
  let ok = true;
  for (const p of processTree(pid)) {
    try {
      writeFileSync(`/proc/${p}/clear_refs`, '5');
    } catch {
      ok = false;
    }
  }
  return ok;
}

/**
 * B2, B3 and B6 of every tool on one data set, `rounds` rounds (at most `fewRounds` for the rows
 * marked `few`), each round in its own shuffled order (roundOrder).
 * @param {import('./datasets.mjs').DataSet} ds
 * @param {Record<string, Image>} images
 * @param {{ work: string, rounds: number, fewRounds?: number, fewSets?: string[], nydusd: string, b2: boolean,
 *   b3: boolean, say: (msg: string) => void }} ctx
 */
export async function benchMounts(ds, images, ctx) {
  const mntPath = join(ctx.work, 'mount', 'mnt');
  mkdirSync(mntPath, { recursive: true });
  const mnt = realpathSync(mntPath);
  if (isMounted(mnt)) {
    ctx.say(`${mnt} is still mounted from an earlier run: umount -l`);
    run('umount', ['-l', mnt]);
  }
  const logRoot = join(ctx.work, 'logs', ds.name);
  mkdirSync(logRoot, { recursive: true });
  for (const img of Object.values(images))
    if (img.id.startsWith('nydus-') && img.failed === undefined) writeNydusdConfig(img);
  /** @type {MountResult[]} */
  const results = MOUNT_TOOLS.filter(
    (tool) => tool.few !== true || ctx.fewSets === undefined || ctx.fewSets.includes(ds.name),
  ).map((tool) => {
    const img = images[tool.image];
    return img?.failed !== undefined
      ? { tool, runs: [], failed: `no image: ${img.failed}` }
      : { tool, runs: [] };
  });
  let cachesDropped = true;
  const quiet = { waited: 0, repeated: 0, keptDisturbed: 0 };
  for (let round = 0; round < ctx.rounds; round++) {
    for (const k of roundOrder(results.length, round)) {
      const res = results[k];
      if (res === undefined || res.failed !== undefined) continue;
      const rounds = res.tool.few === true ? Math.min(ctx.rounds, ctx.fewRounds ?? ctx.rounds) : ctx.rounds;
      if (round >= rounds) continue;
      const img = /** @type {Image} */ (images[res.tool.image]);
      const logPath = join(logRoot, `mount-${res.tool.id}.log`);
      /** @type {SessionRun | undefined} */
      let run1;
      try {
        for (let attempt = 0; ; attempt++) {
          const m = await mountTool(res.tool, img, mnt, logPath, ctx.nydusd);
          const idle = m.pid !== undefined ? await settledRss(m.pid) : undefined;
          /** @type {SessionRun} */
          const s = {
            mountSeconds: m.mountSeconds,
            readAheadKb: m.readAheadKb ?? NaN,
            idleRssKiB: idle?.rssKiB ?? NaN,
            ...(idle !== undefined && { settleSeconds: idle.seconds }),
            hwmKiB: NaN,
            processes: 0,
            unmountProblems: '',
          };
          /** @type {import('./measure.mjs').ShellResult[]} */
          const shells = [];
          let peakReset = false;
          try {
            const opts = {
              timeoutSeconds: COMMAND_TIMEOUT_S,
              ...(m.pid !== undefined && { daemonPid: m.pid }),
            };
            if (ctx.b2) {
              quiet.waited += waitQuiet(60);
              const r = timedShell(B2_SCRIPT, [mnt], {
                ...opts,
                logPath: join(logRoot, `b2-${res.tool.id}.log`),
              });
              shells.push(r);
              s.b2 = phase(r, 'find');
            }
            if (ctx.b3) {
              // Without the reset (not permitted) the peak after B3 is over the whole session.
              if (m.pid !== undefined) {
                s.b2HwmKiB = peakKiB(m.pid);
                peakReset = resetPeak(m.pid);
              }
              quiet.waited += waitQuiet(60);
              const r = timedShell(B3_SCRIPT, [], {
                ...opts,
                cwd: mnt,
                logPath: join(logRoot, `b3-${res.tool.id}.log`),
              });
              shells.push(r);
              s.b3 = phase(r, 'tar');
            }
            if (m.pid !== undefined) {
              s.processes = processTree(m.pid).length;
              const peak = peakKiB(m.pid);
              if (ctx.b3 && peakReset) s.b3HwmKiB = peak;
              s.hwmKiB = Math.max(peak, s.b2HwmKiB ?? 0);
            }
          } finally {
            s.unmountProblems = await unmount(m);
          }
          if (s.unmountProblems !== '')
            ctx.say(`${ds.name}: ${res.tool.label}: unmount: ${s.unmountProblems}`);
          for (const r of shells) cachesDropped &&= r.dropped;
          const bad = shells.find((r) => disturbed(r));
          if (bad === undefined) {
            run1 = s;
            break;
          }
          const took = shells.reduce((t, r) => t + r.wall, s.mountSeconds);
          if (attempt === 2 || !mayRepeat(took)) {
            quiet.keptDisturbed++;
            run1 = s;
            break;
          }
          quiet.repeated++;
          ctx.say(
            `${ds.name}: ${res.tool.label} disturbed (others used ${bad.otherCpu.toFixed(2)} CPU s), again`,
          );
        }
      } catch (e) {
        res.failed = e instanceof Error ? e.message : String(e);
        ctx.say(
          `${ds.name} round ${round + 1}: ${res.tool.label} FAILED (${res.failed}); logs in ${logRoot}`,
        );
        continue;
      }
      res.runs.push(run1);
      const mib = (/** @type {number} */ k) => `${(k / 1024).toFixed(0)} MiB`;
      ctx.say(
        `${ds.name} round ${round + 1}/${rounds}: ${res.tool.label}: mount ${run1.mountSeconds.toFixed(2)} s` +
          (run1.b2 ? `, B2 ${run1.b2.wall.toFixed(2)} s (${run1.b2.output} entries)` : '') +
          (run1.b3 ? `, B3 ${run1.b3.wall.toFixed(2)} s (${run1.b3.output} bytes)` : '') +
          (Number.isFinite(run1.idleRssKiB) ? `, idle RSS ${mib(run1.idleRssKiB)}` : '') +
          (Number.isFinite(run1.hwmKiB) ? `, peak RSS ${mib(run1.hwmKiB)}` : '') +
          (run1.b3HwmKiB !== undefined ? ` (during B3 ${mib(run1.b3HwmKiB)})` : ''),
      );
    }
  }
  for (const res of results) {
    if (res.runs.length === 0) continue;
    const b2 = res.runs.flatMap((r) => (r.b2 ? [r.b2] : []));
    const b3 = res.runs.flatMap((r) => (r.b3 ? [r.b3] : []));
    res.median = {
      b2: phaseMedian(b2),
      b3: phaseMedian(b3),
      mountSeconds: median(res.runs.map((r) => r.mountSeconds)),
      readAheadKb: median(res.runs.map((r) => r.readAheadKb)),
      idleRssKiB: median(res.runs.map((r) => r.idleRssKiB)),
      hwmKiB: median(res.runs.map((r) => r.hwmKiB)),
      ...(res.runs.some((r) => r.b3HwmKiB !== undefined) && {
        b3HwmKiB: median(res.runs.map((r) => r.b3HwmKiB ?? NaN)),
      }),
      processes: median(res.runs.map((r) => r.processes)),
    };
  }
  return { results, cachesDropped, quiet };
}

/** Versions of the mount peers, for the report. */
export function mountVersions() {
  const dpkg = (/** @type {string} */ pkg) =>
    outputOf('dpkg-query', ['-W', '-f', '${Version}', pkg]) || 'not installed';
  let fuseConn = '';
  try {
    fuseConn = statSync('/dev/fuse').isCharacterDevice() ? '/dev/fuse present' : '/dev/fuse is not a device';
  } catch {
    fuseConn = 'no /dev/fuse';
  }
  return {
    squashfuse: dpkg('squashfuse'),
    libfuse3: dpkg('libfuse3-3'),
    erofsUtils: dpkg('erofs-utils'),
    squashfsTools: dpkg('squashfs-tools'),
    utilLinux: dpkg('util-linux'),
    tar: dpkg('tar'),
    findutils: dpkg('findutils'),
    fuse: fuseConn,
  };
}
