// The benchmarks of ../shared/docs/benchmarks.md that run on one machine, written to
// BENCHMARKS.md at the project root:
//   B1  build throughput: `nydus-image create` against mksquashfs and mkfs.erofs, from a
//       directory, and from a tar file (`--type tar-rafs`) against `tar -xf` + mksquashfs, and
//       the Node.js floor of the build (b1-floor.mjs: walk, read, zstd, blake3, no RAFS);
//   B2  metadata walk of a mounted image, B3 cold read of every file of it, B6 peak RSS of the
//       daemon serving B2 and B3: our nydusd against squashfuse and kernel EROFS (mount.mjs);
//   the request costs under B2/B3 (requests.mjs: per request type, ours against squashfuse and
//       kernel EROFS, and the FUSE round trip) and the memory of nydusd under B6 (memory.mjs: the
//       floor, RSS by cause, per extra image mounted through the API, a soak of 16 readers);
//   B4  lazy start from a registry over a shared 100 Mbit/s link, B5 the bytes it fetched, B7
//       `nydusify convert` against pull + unpack + mksquashfs (registry.mjs);
//   B8  container start through containerd over the same link: containerd + containerd-nydus-grpc
//       (`ctr-remote image rpull` + `ctr run`) against `ctr image pull` + `ctr run` with the
//       overlayfs snapshotter, the bytes nydusd fetched, the snapshotter's peak RSS, and the RSS
//       of a shared-mode nydusd per image added (containerd.mjs);
//   B9  cold read of the rootfs image through each remote backend on loopback (registry, s3, oss,
//       http-proxy, and the registry through nginx as a caching P2P proxy, uncached and cached)
//       against the localfs backend on the same image (remote.mjs);
//   the fault matrix (faults.mjs, run as its own process: it writes its own block of the report).
// Side by side in one run (tools alternate within each round, cold caches before every run,
// medians of the rounds).
//
//   npm run bench          the full run: the sizes of ../shared/docs/benchmarks.md (rootfs,
//                          rootfs-large, big-files 2 x 256 MiB, many-small 50,000 files), 5
//                          rounds, a 10-minute memory soak; under 60 minutes on 2 cores (the rows
//                          no bar is judged on run on fewer data sets and rounds: FULL_PLAN)
//   npm run bench:quick    NYDUS_BENCH_QUICK=1: the everyday run, B1-B3, B6 and the request and
//                          memory parts only, at the small sizes (no rootfs-large, big-files 4 x
//                          96 MiB, many-small 20,000 files), 3 rounds, a 1-minute soak
//
// The run prints an estimate of every part at the start and what each took at the end (kept in
// WORK/results-run.json and in the report). The waits for a quiet machine and the repeats of
// disturbed runs have a budget for the whole run (NYDUS_BENCH_QUIET_S, NYDUS_BENCH_REPEAT_S).
//
// Ours is compiled from src/ into the work directory at the start (the project's tsc and
// tsconfig), so that other builds of dist/ during the run cannot change what is measured.
//
// B1's measurements are saved in WORK/results.json, B2/B3/B6's in WORK/results-mount.json, the
// request costs in WORK/results-requests.json, the daemon memory in WORK/results-memory.json,
// B4/B5/B7's in WORK/results-registry.json, B8's in WORK/results-containerd.json, B9's in
// WORK/results-remote.json (the fault matrix in WORK/results-faults.json, by faults.mjs); a run
// of only some parts replaces their own files and the report takes the others from the earlier
// runs (each part of the report gives its own date and mode; a part without saved results keeps
// its text from the existing report). A part that fails is reported and the run goes on.
//
// Environment (all optional):
//   NYDUS_BENCH_QUICK    1: the quick mode (above)
//   NYDUS_BENCH_DIR      work directory for data sets, outputs and logs (/var/tmp/nydus-bench)
//   NYDUS_BENCH_ROUNDS   rounds per data set (5, quick 3); the slow rows that are not a bar's
//                        (see FEW_ROUNDS) run at most 3
//   NYDUS_BENCH_SETS     comma-separated subset of rootfs,rootfs-large,big-files,many-small (all
//                        four; quick: all but rootfs-large)
//   NYDUS_BENCH_BIG_MIB  size of each big file in MiB (256, quick 96)
//   NYDUS_BENCH_BIG_COUNT number of big files, half compressible and half random (2, quick 4)
//   NYDUS_BENCH_SMALL    number of small files (50000, quick 20000)
//   NYDUS_BENCH_SOAK_S   seconds of the memory soak (600, quick 60)
//   NYDUS_BENCH_QUIET_S  seconds the whole run may wait for a quiet machine (120, quick 60)
//   NYDUS_BENCH_REPEAT_S seconds the whole run may spend repeating disturbed runs (120, quick 60)
//   NYDUS_BENCH_OUTPUT   report path (BENCHMARKS.md at the project root)
//   NYDUS_BENCH_ONLY     comma-separated subset of b1,b2,b3,b6,requests,memory,b4,b5,b7,b8,b9,
//                        faults (all; quick: b1,b2,b3,b6,requests,memory); b2, b3 and b6 share
//                        their mounts, and b6 alone runs both b2 and b3 (its peak is over both);
//                        b4 and b5 are the same runs; b8 includes the snapshotter's memory
//                        figures (peak RSS during B8, shared-mode nydusd RSS per image)
//   NYDUS_BENCH_B4_CMD   the command B4 and B8 run from the image (python3 -c 'print(1)')
//
// B8 needs root, containerd, runc, ctr-remote (Debian: containerd, runc, stargz-snapshotter)
// besides B4's docker-registry and skopeo; it starts a containerd (and for ours a
// containerd-nydus-grpc of the private build) from nothing for every run, on their own roots
// and sockets under WORK/containerd, and takes them down after it.
//
// `node bench/run.mjs --render [FILE...]` writes the report again from the measurements runs
// saved (the WORK/results*.json files above by default; a file is taken as mount, requests,
// memory, registry, containerd, remote or run-time results by its "kind", B1's otherwise), e.g.
// after a change to the report's wording.
import { spawnSync } from 'node:child_process';
import console from 'node:console';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { availableParallelism, release, totalmem } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import process from 'node:process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { bigFiles, manySmall, QUICK_SIZES, rootfs } from './datasets.mjs';
import {
  budgets,
  disturbed,
  mayRepeat,
  median,
  outputOf,
  roundOrder,
  setBudgets,
  timedRun,
  waitQuiet,
} from './measure.mjs';
import {
  benchMounts,
  cleanupMountsSync,
  MOUNT_TOOLS,
  mountVersions,
  prepareImages,
  writeNydusdConfig,
} from './mount.mjs';
import { benchContainerd, cleanupContainerdSync } from './containerd.mjs';
import { benchRegistry, cleanupRegistrySync, rootfsLarge } from './registry.mjs';
import { benchRemote } from './remote.mjs';
import { renderReport } from './report.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
/** The nydus-image CLI measured: the private build made at the start of the run. */
let cli = '';
/** The codec modules of the private build, which the Node.js floor (b1-floor.mjs) calls. */
let floorCodec = '';
/** The private build's root (src/builder/build.js), which the warm build (b1-warm.mjs) runs. */
let warmBuild = '';

/**
 * @param {string} name
 * @param {number} dflt
 */
function envInt(name, dflt) {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer, got "${v}"`);
  return n;
}

/**
 * The parts of a run, in the order they run, with the NYDUS_BENCH_ONLY names each covers and
 * the file its measurements are saved in.
 */
export const PARTS = [
  { id: 'b1', names: ['b1'], file: 'results.json', title: 'B1' },
  { id: 'mounts', names: ['b2', 'b3', 'b6'], file: 'results-mount.json', title: 'B2, B3, B6' },
  { id: 'requests', names: ['requests'], file: 'results-requests.json', title: 'request costs' },
  { id: 'memory', names: ['memory'], file: 'results-memory.json', title: 'daemon memory' },
  { id: 'registry', names: ['b4', 'b5', 'b7'], file: 'results-registry.json', title: 'B4, B5, B7' },
  { id: 'containerd', names: ['b8'], file: 'results-containerd.json', title: 'B8' },
  { id: 'remote', names: ['b9'], file: 'results-remote.json', title: 'B9' },
  { id: 'faults', names: ['faults'], file: 'results-faults.json', title: 'fault matrix' },
];
const BENCHMARKS = PARTS.flatMap((p) => p.names);
const QUICK_ONLY = ['b1', 'b2', 'b3', 'b6', 'requests', 'memory'];
const SET_NAMES = ['rootfs', 'rootfs-large', 'big-files', 'many-small'];

const quick = process.env['NYDUS_BENCH_QUICK'] === '1';
const config = {
  /** 'full' (the sizes of ../shared/docs/benchmarks.md) or 'quick' (npm run bench:quick). */
  mode: quick ? 'quick' : 'full',
  work: resolve(process.env['NYDUS_BENCH_DIR'] || '/var/tmp/nydus-bench'),
  only: (process.env['NYDUS_BENCH_ONLY'] || (quick ? QUICK_ONLY : BENCHMARKS).join(','))
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter((s) => s !== ''),
  rounds: envInt('NYDUS_BENCH_ROUNDS', quick ? 3 : 5),
  sets: (process.env['NYDUS_BENCH_SETS'] || SET_NAMES.filter((s) => !quick || s !== 'rootfs-large').join(','))
    .split(',')
    .map((s) => s.trim()),
  bigMiB: envInt('NYDUS_BENCH_BIG_MIB', quick ? QUICK_SIZES.bigMiB : 256),
  bigCount: envInt('NYDUS_BENCH_BIG_COUNT', quick ? QUICK_SIZES.bigCount : 2),
  smallFiles: envInt('NYDUS_BENCH_SMALL', quick ? QUICK_SIZES.smallFiles : 50_000),
  soakSeconds: envInt('NYDUS_BENCH_SOAK_S', quick ? 60 : 600),
  quietBudget: envInt('NYDUS_BENCH_QUIET_S', quick ? 60 : 120),
  repeatBudget: envInt('NYDUS_BENCH_REPEAT_S', quick ? 60 : 120),
  output: resolve(process.env['NYDUS_BENCH_OUTPUT'] || join(ROOT, 'BENCHMARKS.md')),
};

/**
 * FULL_PLAN: how the full run keeps under 60 minutes on 2 cores. The rows a bar is judged on run
 * every round on every data set: in B1 ours with zstd from the directory and from the tar file,
 * `mksquashfs -Xcompression-level 3`, the tar floor and the Node.js floor with blake3 (the one
 * without blake3 runs FEW_ROUNDS); in B2/B3/B6 nydusd zstd, squashfuse and
 * kernel EROFS. The others run at most FEW_ROUNDS rounds, and in the full mode only on some data
 * sets (Tool.fullSets; the extra mount rows only on rootfs, FULL_FEW_MOUNT_SETS): the
 * default-level mksquashfs (B1's second bar, which ours passes by 2.5x to 11x in the quick mode)
 * on rootfs and many-small (the thinnest margin), not on rootfs-large (32 s a run) and
 * big-files (26 s); our lz4_block and none builds, mkfs.erofs and the cold read only on rootfs.
 * B9, which has no bar (the remote backends against localfs), and the request costs (a breakdown
 * of B2/B3, no bar either) run FEW_ROUNDS rounds.
 * big-files has 2 files of 256 MiB, not 4: the default-level mksquashfs spends 100 CPU s a run on
 * 1 GiB, and every row reads and writes twice as much. The quick mode runs every row on every
 * data set (3 rounds).
 */
export const FEW_ROUNDS = 3;
/** The data sets the extra mount rows (MountTool.few) run on in the full mode. */
export const FULL_FEW_MOUNT_SETS = ['rootfs'];

/** @param {string} msg */
const say = (msg) => console.log(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}`);

/**
 * @typedef {object} Tool
 * @property {string} id
 * @property {string} label how the table names it
 * @property {'ours' | 'peer' | 'reference' | 'floor' | 'warm'} kind 'floor': the Node.js floor
 *   (b1-floor.mjs); 'warm': our build with V8 warmed up (b1-warm.mjs)
 * @property {'dir' | 'tar'} [source] what it reads: the data set's directory (default) or a tar
 *   file of it (made once and cached, tarOf)
 * @property {boolean} [few] a row no bar is judged on: at most FEW_ROUNDS rounds
 * @property {string[]} [fullSets] the data sets it runs on in the full mode (all when not given):
 *   the rows no bar is judged on leave out the data sets where they cost the most (FULL_PLAN)
 * @property {string} [countUnder] the subdirectory of its output directory whose bytes are its
 *   output (default: all of it)
 * @property {RegExp} [selfTimed] the tool times itself: its wall and CPU seconds are the first and
 *   second groups of this pattern in its output, not the process's (the process's are kept as
 *   `processWall` and `processCpu`)
 * @property {(src: string, out: string) => string[]} argv
 */

/**
 * @param {'zstd' | 'lz4_block' | 'none'} c
 * @param {'dir' | 'tar'} [source]
 * @returns {Tool}
 */
const ours = (c, source = 'dir') => ({
  id: source === 'tar' ? `nydus-tar-${c}` : `nydus-${c}`,
  label: `nydus-image create${source === 'tar' ? ' --type tar-rafs' : ''} --compressor ${c}`,
  kind: 'ours',
  source,
  ...(c !== 'zstd' && { few: true, fullSets: ['rootfs'] }),
  argv: (src, out) => [
    process.execPath,
    cli,
    'create',
    ...(source === 'tar' ? ['--type', 'tar-rafs'] : []),
    '--compressor',
    c,
    '--fs-version',
    '6',
    '-B',
    join(out, 'bootstrap'),
    '-b',
    join(out, 'blob'),
    src,
  ],
});

/**
 * The Node.js floor (bench/b1-floor.mjs): walk, lstat, read, zstd level 3 with the builder's
 * binding on the builder's chunks and worker setup, and with `digest` the blake3 chunk ids, the
 * compressed bytes written to one file; no RAFS metadata. With the digests it is the floor the
 * report compares ours with (every round); without, a row no bar is judged on.
 * @param {boolean} digest
 * @returns {Tool}
 */
const floor = (digest) => ({
  id: digest ? 'floor-zstd-blake3' : 'floor-zstd',
  label: `Node.js floor: walk + lstat + read + zstd level 3${digest ? ' + blake3' : ''} (bench/b1-floor.mjs)`,
  kind: 'floor',
  ...(!digest && { few: true }),
  argv: (src, out) => [
    process.execPath,
    join(ROOT, 'bench', 'b1-floor.mjs'),
    '--codec',
    floorCodec,
    ...(digest ? [] : ['--no-digest']),
    src,
    join(out, 'chunks.bin'),
  ],
});

/**
 * Our zstd build with V8 warmed up (bench/b1-warm.mjs): `build()` run three times in one Node.js
 * process, caches dropped before each, the last one timed by the process itself. No bar is judged
 * on it: it splits the cold build's time into start-up and warm-up (the cold row minus this) and
 * the build's own work (this).
 * @type {Tool}
 */
const warm = {
  id: 'nydus-zstd-warm',
  label:
    'nydus-image build() with V8 warmed up: the 3rd of 3 builds in one Node.js process (bench/b1-warm.mjs)',
  kind: 'warm',
  few: true,
  selfTimed: /^b1-warm: last build ([\d.]+) s wall, ([\d.]+) CPU s$/m,
  argv: (src, out) => [process.execPath, join(ROOT, 'bench', 'b1-warm.mjs'), '--build', warmBuild, src, out],
};

/** The level-matched mksquashfs: the peer of B1's bar. */
const SQ3 = ['-comp', 'zstd', '-Xcompression-level', '3', '-noappend', '-quiet'];

/** @type {Tool[]} */
export const TOOLS = [
  ours('zstd'),
  ours('lz4_block'),
  ours('none'),
  {
    id: 'mksquashfs-zstd',
    label: 'mksquashfs -comp zstd',
    kind: 'peer',
    few: true,
    fullSets: ['rootfs', 'many-small'],
    argv: (src, out) => ['mksquashfs', src, join(out, 'image.sqfs'), '-comp', 'zstd', '-noappend', '-quiet'],
  },
  {
    id: 'mksquashfs-zstd-l3',
    label: 'mksquashfs -comp zstd -Xcompression-level 3',
    kind: 'peer',
    argv: (src, out) => ['mksquashfs', src, join(out, 'image.sqfs'), ...SQ3],
  },
  {
    id: 'mkfs.erofs-lz4hc',
    label: 'mkfs.erofs -zlz4hc',
    kind: 'peer',
    few: true,
    fullSets: ['rootfs'],
    argv: (src, out) => ['mkfs.erofs', '-zlz4hc', join(out, 'image.erofs'), src],
  },
  {
    id: 'read',
    label: 'cold read: tar -cf - . | wc -c',
    kind: 'reference',
    few: true,
    fullSets: ['rootfs'],
    argv: (src) => ['sh', '-c', 'tar -cf - -C "$0" . | wc -c', src],
  },
  floor(true),
  floor(false),
  warm,
  ours('zstd', 'tar'),
  {
    // A tar on a pipe, as `nydusify convert` streams each layer: read as it comes, in order, never
    // at positions (the bar of the tar path is judged on this row). `cat` runs in the same timing.
    id: 'nydus-tarstream-zstd',
    label: 'cat SET.tar | nydus-image create --type tar-rafs --compressor zstd /dev/stdin',
    kind: 'ours',
    source: 'tar',
    argv: (tar, out) => [
      'sh',
      '-c',
      'cat "$0" | "$1" "$2" create --type tar-rafs --compressor zstd --fs-version 6 -B "$3/bootstrap" -b "$3/blob" /dev/stdin',
      tar,
      process.execPath,
      cli,
      out,
    ],
  },
  {
    // The floor of a build from a tar stream: unpack, then the level-matched mksquashfs, timed
    // as one run (one shell); its output is the image only.
    id: 'tar-x-mksquashfs-zstd-l3',
    label: 'tar -xf + mksquashfs -comp zstd -Xcompression-level 3',
    kind: 'peer',
    source: 'tar',
    countUnder: 'image',
    argv: (tar, out) => [
      'sh',
      '-c',
      `mkdir "$1/tree" "$1/image" && tar -xf "$0" -C "$1/tree" && mksquashfs "$1/tree" "$1/image/image.sqfs" ${SQ3.join(' ')}`,
      tar,
      out,
    ],
  },
];

/** Why a row is not run on a data set in the full mode (the report explains it once). */
export const FULL_MODE_LEFT_OUT = 'left out in the full mode';

/**
 * Why `tool` is not run on `ds` in this run, or undefined when it is.
 * @param {Tool} tool
 * @param {import('./datasets.mjs').DataSet} ds
 */
export function notRun(tool, ds) {
  // mkfs.erofs -zlz4hc spends about 0.5 CPU s per MiB of incompressible data on one core: 90 s
  // a run on the quick big-files, 2 minutes on the full one, for a row no bar is judged on. The
  // B2/B3 part makes that image once (cached) and gives the time it took.
  if (tool.id === 'mkfs.erofs-lz4hc' && ds.name === 'big-files') {
    return (
      'not run on big-files: lz4hc spends about 0.5 CPU s per MiB of random data on one core (90 s a run ' +
      'on 4 x 96 MiB); the B2/B3 part gives the time its image of big-files took to make'
    );
  }
  if (config.mode === 'full' && tool.fullSets !== undefined && !tool.fullSets.includes(ds.name)) {
    return FULL_MODE_LEFT_OUT;
  }
  return undefined;
}

/**
 * Rounds of `tool`: every round for the bar's rows, at most FEW_ROUNDS for the others.
 * @param {{ few?: boolean }} tool
 * @param {number} rounds
 */
export const roundsOf = (tool, rounds) => (tool.few === true ? Math.min(rounds, FEW_ROUNDS) : rounds);

/**
 * Debian packages the benchmark drives, by the command that needs them (`mount`: only B2/B3/B6;
 * `registry`: only B4/B5/B7, B8 and B9; `containerd`: only B8; `remote`: only B9).
 */
const DEBS = [
  { cmd: 'mksquashfs', pkg: 'squashfs-tools', needed: true },
  { cmd: 'mkfs.erofs', pkg: 'erofs-utils', needed: true },
  { cmd: '/usr/bin/time', pkg: 'time', needed: true },
  { cmd: 'debootstrap', pkg: 'debootstrap', needed: false },
  { cmd: 'squashfuse', pkg: 'squashfuse', needed: true, mount: true },
  { cmd: 'docker-registry', pkg: 'docker-registry', needed: true, registry: true },
  { cmd: 'skopeo', pkg: 'skopeo', needed: true, registry: true },
  { cmd: 'umoci', pkg: 'umoci', needed: true, registry: true },
  { cmd: 'containerd', pkg: 'containerd', needed: true, containerd: true },
  { cmd: 'runc', pkg: 'runc', needed: true, containerd: true },
  { cmd: 'ctr-remote', pkg: 'stargz-snapshotter', needed: true, containerd: true },
  { cmd: 'nginx', pkg: 'nginx', needed: true, remote: true },
];

/** @param {string} pkg */
const dpkgInstalled = (pkg) => spawnSync('dpkg', ['-s', pkg], { stdio: 'ignore' }).status === 0;

/** @param {string} pkg */
const dpkgVersion = (pkg) => outputOf('dpkg-query', ['-W', '-f', '${Version}', pkg]) || 'not installed';

/**
 * Installs what is missing (as root, with apt-get); returns packages that could not be had.
 * @param {boolean} mounts whether B2/B3/B6 run
 * @param {boolean} registry whether B4/B5/B7 or B8 run
 * @param {boolean} [containerd] whether B8 runs
 */
function installDebs(mounts, registry, containerd = false, remote = false) {
  const missing = DEBS.filter(
    (d) =>
      (mounts || d.mount !== true) &&
      (registry || d.registry !== true) &&
      (containerd || d.containerd !== true) &&
      (remote || d.remote !== true) &&
      !dpkgInstalled(d.pkg),
  );
  if (missing.length === 0) return [];
  const names = missing.map((d) => d.pkg);
  if (process.getuid?.() === 0) {
    say(`apt-get install ${names.join(' ')}`);
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    spawnSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
    spawnSync('apt-get', ['install', '-y', '-qq', ...names], { stdio: 'inherit', env });
  }
  const still = missing.filter((d) => !dpkgInstalled(d.pkg));
  const fatal = still.filter((d) => d.needed);
  if (fatal.length > 0) {
    throw new Error(
      `Missing Debian packages ${fatal.map((d) => d.pkg).join(', ')} (run as root or apt-get install them)`,
    );
  }
  return still.map((d) => d.pkg);
}

/**
 * Compiles what `include` names (globs under the project) with the project's tsc and tsconfig
 * into `outDir`, with package.json copied and node_modules linked into `dir`, so that what is
 * measured cannot change when dist/ is built again during a run.
 * @param {string} dir emptied first
 * @param {string[]} include
 * @param {string} outDir
 * @param {string} what for the messages
 */
export function compileProject(dir, include, outDir, what) {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  writeFileSync(
    join(dir, 'tsconfig.json'),
    JSON.stringify({
      extends: join(ROOT, 'tsconfig.json'),
      compilerOptions: { outDir, rootDir: ROOT, sourceMap: false },
      include,
    }),
  );
  copyFileSync(join(ROOT, 'package.json'), join(dir, 'package.json'));
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
  say(`compiling ${what} into ${dir}`);
  const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  const r = spawnSync(process.execPath, [tsc, '-p', join(dir, 'tsconfig.json')], { stdio: 'inherit' });
  if (r.status !== 0)
    throw new Error(`tsc failed on ${what} (exit ${r.status ?? r.signal}): nothing measured`);
}

/** Compiles src/ into WORK/build and returns the build's directory. */
function privateBuild() {
  const dir = join(config.work, 'build');
  compileProject(dir, [join(ROOT, 'src', '**', '*.ts'), join(ROOT, 'src', '**', '*.cts')], dir, 'src/');
  return dir;
}

/** What the machine is, for the report. */
export function machine() {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  const model = /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1]?.trim() ?? 'unknown';
  const flags = /^flags\s*:\s*(.*)$/m.exec(cpuinfo)?.[1]?.split(' ') ?? [];
  const mhz = /^cpu MHz\s*:\s*(.*)$/m.exec(cpuinfo)?.[1]?.trim();
  const df = outputOf('df', ['--output=source,fstype', config.work], true).split('\n')[1] ?? '';
  const lddLibs = (/** @type {string} */ bin) => {
    const path = outputOf('sh', ['-c', `command -v ${bin}`]);
    const out = path === '' ? '' : outputOf('ldd', [path], true);
    return (
      [...new Set([...out.matchAll(/(lib(?:zstd|lz4)\.so\.\d+) =>/g)].map((m) => m[1]))].join(', ') || 'none'
    );
  };
  let head = outputOf('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD']);
  // --no-optional-locks: a read-only look, no index refresh.
  const dirty = outputOf(
    'git',
    ['-C', ROOT, '--no-optional-locks', 'status', '--porcelain', '--', 'src'],
    true,
  );
  if (head !== '' && dirty !== '') head += ' (with uncommitted changes in src/)';
  return {
    nproc: outputOf('nproc', []) || String(availableParallelism()),
    memGiB: totalmem() / 1024 ** 3,
    kernel: release(),
    cpu: model,
    cpuMHz: mhz,
    cpuHints: ['sha_ni', 'avx2', 'avx512f'].filter((f) => flags.includes(f)),
    node: process.version,
    disk: df.trim().replace(/\s+/, ' '),
    commit: head || 'unknown',
    versions: {
      mksquashfs: outputOf('mksquashfs', ['-version']),
      squashfsTools: dpkgVersion('squashfs-tools'),
      erofsUtils: dpkgVersion('erofs-utils'),
      libzstd1: dpkgVersion('libzstd1'),
      liblz4: dpkgVersion('liblz4-1'),
      debootstrap: dpkgVersion('debootstrap'),
      gnuTime: dpkgVersion('time'),
      mksquashfsLinks: lddLibs('mksquashfs'),
      erofsLinks: lddLibs('mkfs.erofs'),
    },
  };
}

/** Stats line nydus-image logs at the end of a build. */
const STATS_RE =
  /(\d+) files, (\d+) bytes in (\d+) chunks \((\d+) deduplicated, (\d+) bytes saved\), (\d+) bytes stored/;

/**
 * Fixed cost of one `nydus-image create` (empty source directory), and the encoder each
 * compressor loaded, from its log.
 * @param {string} tmp
 * @param {number} rounds
 */
function probeOurs(tmp, rounds) {
  const empty = join(tmp, 'empty');
  mkdirSync(empty, { recursive: true });
  /** @type {Record<string, string>} */
  const encoders = {};
  for (const c of /** @type {const} */ (['zstd', 'lz4_block'])) {
    const r = timedRun(ours(c).argv(empty, join(tmp, 'out')), {
      outDir: join(tmp, 'out'),
      logPath: join(tmp, 'probe.log'),
      dropCache: false,
    });
    if (r.status !== 0) throw new Error(`nydus-image create failed on an empty directory:\n${r.log}`);
    encoders[c] = /Compressing with (.*)$/m.exec(r.log)?.[1]?.trim() ?? 'unknown';
  }
  const walls = [];
  let cachesDropped = true;
  for (let i = 0; i < rounds; i++) {
    waitQuiet(30);
    const r = timedRun(ours('zstd').argv(empty, join(tmp, 'out')), {
      outDir: join(tmp, 'out'),
      logPath: join(tmp, 'probe.log'),
      dropCache: true,
    });
    cachesDropped &&= r.dropped;
    walls.push(r.wall);
  }
  return { encoders, fixedSeconds: median(walls), cachesDropped };
}

/**
 * @typedef {object} ToolResult
 * @property {Tool} tool
 * @property {import('./measure.mjs').RunResult[]} runs
 * @property {string} [failed]
 * @property {string} [notRun] why the tool did not run on this data set
 * @property {{ wall: number, min: number, max: number, cpu: number, otherCpu: number, rssKiB: number, outputBytes: number }} [median]
 * @property {RegExpExecArray | null} [stats] nydus-image's own stats line (ours)
 */

/**
 * A tar file of the data set (`tar -cf`, GNU format), made once and cached in WORK/tars, keyed
 * by the data set's marker: the source of the tar-path rows of B1.
 * @param {import('./datasets.mjs').DataSet} ds
 * @returns {{ path: string, bytes: number, seconds: number }}
 */
function tarOf(ds) {
  const dir = join(config.work, 'tars');
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `${basename(ds.dir)}.tar`);
  const keyFile = `${path}.key`;
  let key = `${ds.dir} ${JSON.stringify(ds.stats)}`;
  try {
    key = readFileSync(`${ds.dir}.done.json`, 'utf8');
  } catch {
    // keyed by the stats
  }
  const size = () => Number(outputOf('stat', ['-c', '%s', path]));
  if (existsSync(path) && existsSync(keyFile) && readFileSync(keyFile, 'utf8') === key)
    return { path, bytes: size(), seconds: 0 };
  say(`${ds.name}: making its tar file ${path}`);
  const t0 = performance.now();
  rmSync(keyFile, { force: true });
  const tmp = `${path}.tmp`;
  const r = spawnSync('tar', ['-cf', tmp, '-C', ds.dir, '.'], { stdio: ['ignore', 'ignore', 'pipe'] });
  if (r.status !== 0) throw new Error(`tar -cf of ${ds.dir} failed: ${String(r.stderr).trim()}`);
  renameSync(tmp, path);
  writeFileSync(keyFile, key);
  return { path, bytes: size(), seconds: (performance.now() - t0) / 1000 };
}

/**
 * All tools on one data set, in rounds, each round in its own order (roundOrder). A tool with
 * fewer rounds (roundsOf) runs in the first ones.
 * @param {import('./datasets.mjs').DataSet} ds
 * @returns {{ results: ToolResult[], cachesDropped: boolean, tar?: { path: string, bytes: number, seconds: number },
 *   quiet: { waited: number, repeated: number, keptDisturbed: number } }}
 */
function benchDataSet(ds) {
  const outRoot = join(config.work, 'out', ds.name);
  const logRoot = join(config.work, 'logs', ds.name);
  mkdirSync(logRoot, { recursive: true });
  /** @type {ToolResult[]} */
  const results = TOOLS.map((tool) => {
    const why = notRun(tool, ds);
    return why === undefined ? { tool, runs: [] } : { tool, runs: [], notRun: why };
  });
  /** @type {{ path: string, bytes: number, seconds: number } | undefined} */
  let tar;
  if (results.some((r) => r.tool.source === 'tar' && r.notRun === undefined)) {
    try {
      tar = tarOf(ds);
    } catch (e) {
      for (const r of results)
        if (r.tool.source === 'tar') r.failed = `no tar file: ${e instanceof Error ? e.message : String(e)}`;
    }
  }
  let cachesDropped = true;
  const quiet = { waited: 0, repeated: 0, keptDisturbed: 0 };
  for (let round = 0; round < config.rounds; round++) {
    for (const k of roundOrder(results.length, round)) {
      const res = results[k];
      if (res === undefined || res.failed !== undefined || res.notRun !== undefined) continue;
      const rounds = roundsOf(res.tool, config.rounds);
      if (round >= rounds) continue;
      const outDir = join(outRoot, res.tool.id);
      const logPath = join(logRoot, `${res.tool.id}.log`);
      const src = res.tool.source === 'tar' ? (tar?.path ?? '') : ds.dir;
      // Wait for a quiet machine; repeat (at most twice, within the run's budget) a run that
      // other work disturbed.
      let r;
      for (let attempt = 0; ; attempt++) {
        quiet.waited += waitQuiet(60);
        r = timedRun(res.tool.argv(src, outDir), {
          outDir,
          logPath,
          dropCache: true,
          clean: true,
          ...(res.tool.countUnder !== undefined && { countDir: join(outDir, res.tool.countUnder) }),
        });
        if (r.status !== 0 || !disturbed(r)) break;
        if (attempt === 2 || !mayRepeat(r.wall)) {
          quiet.keptDisturbed++;
          break;
        }
        quiet.repeated++;
        say(`${ds.name}: ${res.tool.label} disturbed (others used ${r.otherCpu.toFixed(2)} CPU s), again`);
      }
      cachesDropped &&= r.dropped;
      if (r.status !== 0) {
        res.failed = `exit ${r.status}: ${r.log.trim().split('\n').slice(-2).join(' / ')}`;
        say(`${ds.name} round ${round + 1}: ${res.tool.label} FAILED (${res.failed}); log ${logPath}`);
        continue;
      }
      if (res.tool.kind === 'ours') res.stats = STATS_RE.exec(r.log);
      if (res.tool.selfTimed !== undefined) {
        const m = res.tool.selfTimed.exec(r.log);
        if (m === null) {
          res.failed = `no timing line in its output; log ${logPath}`;
          say(`${ds.name} round ${round + 1}: ${res.tool.label} FAILED (${res.failed})`);
          continue;
        }
        r = { ...r, processWall: r.wall, processCpu: r.cpu, wall: Number(m[1]), cpu: Number(m[2]) };
      }
      res.runs.push(r);
      say(
        `${ds.name} round ${round + 1}/${rounds}: ${res.tool.label}: ${r.wall.toFixed(2)} s, ` +
          `${(r.rssKiB / 1024).toFixed(0)} MiB RSS, ${r.outputBytes} bytes out`,
      );
    }
  }
  for (const res of results) {
    if (res.failed !== undefined || res.runs.length === 0) continue;
    const walls = res.runs.map((r) => r.wall);
    res.median = {
      wall: median(walls),
      min: Math.min(...walls),
      max: Math.max(...walls),
      cpu: median(res.runs.map((r) => r.cpu)),
      otherCpu: median(res.runs.map((r) => r.otherCpu)),
      rssKiB: median(res.runs.map((r) => r.rssKiB)),
      outputBytes: median(res.runs.map((r) => r.outputBytes)),
    };
  }
  rmSync(outRoot, { recursive: true, force: true });
  return { results, cachesDropped, quiet, ...(tar !== undefined && { tar }) };
}

/**
 * The data sets of the run, made or taken from the cache.
 * @param {string[]} unavailable Debian packages that could not be had
 */
function dataSets(unavailable) {
  /** @type {import('./datasets.mjs').DataSet[]} */
  const sets = [];
  /** @type {import('./datasets.mjs').DataSet | undefined} */
  let base;
  const minbase = () => {
    base ??= unavailable.includes('debootstrap')
      ? {
          name: 'rootfs',
          dir: '',
          description: 'debootstrap --variant=minbase bookworm',
          skipped: 'debootstrap is not installed and could not be installed',
        }
      : rootfs(config.work, say);
    return base;
  };
  for (const name of config.sets) {
    say(`data set ${name}: making (or reusing the cached copy)`);
    if (name === 'rootfs') sets.push(minbase());
    else if (name === 'rootfs-large') {
      const b = minbase();
      let ds;
      try {
        ds =
          b.skipped !== undefined
            ? {
                name,
                dir: '',
                description: 'the minbase rootfs plus packages',
                skipped: `no minbase rootfs: ${b.skipped}`,
              }
            : rootfsLarge(config.work, b, say);
      } catch (e) {
        ds = {
          name,
          dir: '',
          description: 'the minbase rootfs plus packages',
          skipped: e instanceof Error ? e.message : String(e),
        };
      }
      sets.push(ds);
    } else if (name === 'big-files') sets.push(bigFiles(config.work, config.bigMiB, config.bigCount));
    else sets.push(manySmall(config.work, config.smallFiles));
    const ds = sets.at(-1);
    if (ds?.skipped !== undefined) say(`data set ${name} SKIPPED: ${ds.skipped}`);
    else if (ds?.stats !== undefined)
      say(
        `data set ${name}: ${ds.stats.files} files, ${ds.stats.bytes} bytes (${ds.prepSeconds?.toFixed(1)} s)`,
      );
  }
  return sets;
}

const utcNow = () => new Date().toISOString().slice(0, 16).replace('T', ' ') + ' UTC';
const command = () => (config.mode === 'quick' ? 'npm run bench:quick' : 'npm run bench');

/**
 * B1 on every data set.
 * @param {import('./datasets.mjs').DataSet[]} sets
 * @param {ReturnType<typeof machine>} mach
 * @param {number} prepSeconds
 */
function runB1(sets, mach, prepSeconds) {
  const started = performance.now();
  const tmp = mkdtempSync(join(config.work, 'probe-'));
  const probe = probeOurs(tmp, config.rounds);
  rmSync(tmp, { recursive: true, force: true });
  say(
    `nydus-image encoders: ${JSON.stringify(probe.encoders)}; fixed cost ${probe.fixedSeconds.toFixed(2)} s`,
  );

  const benchStarted = performance.now();
  /** @type {{ ds: import('./datasets.mjs').DataSet, results: ToolResult[],
   *   quiet: { waited: number, repeated: number, keptDisturbed: number },
   *   tar?: { path: string, bytes: number, seconds: number } }[]} */
  const measured = [];
  let cachesDropped = probe.cachesDropped;
  for (const ds of sets) {
    if (ds.skipped !== undefined) continue;
    const r = benchDataSet(ds);
    cachesDropped &&= r.cachesDropped;
    measured.push({ ds, results: r.results, quiet: r.quiet, ...(r.tar !== undefined && { tar: r.tar }) });
  }
  const now = performance.now();
  return {
    command: command(),
    config,
    fewRounds: FEW_ROUNDS,
    date: utcNow(),
    machine: mach,
    sets,
    measured,
    probe,
    cachesDropped,
    prepSeconds,
    benchSeconds: (now - benchStarted) / 1000,
    totalSeconds: (now - started) / 1000,
    tools: TOOLS,
  };
}

/**
 * The images of the data sets made in this run, by data set directory: ours are made once per
 * run (src/ changes), the peers' come from their cache (prepareImages).
 * @type {Map<string, { images: Record<string, import('./mount.mjs').Image>, seconds: number }>}
 */
const imagesMade = new Map();

/**
 * @param {import('./datasets.mjs').DataSet} ds
 * @param {string} build the private build's directory
 */
function imagesOf(ds, build) {
  let made = imagesMade.get(ds.dir);
  if (made === undefined) {
    const t0 = performance.now();
    const images = prepareImages(ds, {
      work: config.work,
      nydusImage: join(build, 'src', 'cli', 'nydus-image.js'),
      say,
    });
    made = { images, seconds: (performance.now() - t0) / 1000 };
    imagesMade.set(ds.dir, made);
  }
  return made;
}

/**
 * B2, B3 and B6 on every data set.
 * @param {import('./datasets.mjs').DataSet[]} sets
 * @param {ReturnType<typeof machine>} mach
 * @param {string} build the private build's directory
 */
async function runMounts(sets, mach, build) {
  const started = performance.now();
  const b2 = config.only.includes('b2') || config.only.includes('b6');
  const b3 = config.only.includes('b3') || config.only.includes('b6');
  let prepSeconds = 0;
  /** @type {{ ds: import('./datasets.mjs').DataSet, images: Record<string, import('./mount.mjs').Image>,
   *   results: import('./mount.mjs').MountResult[],
   *   quiet: { waited: number, repeated: number, keptDisturbed: number } }[]} */
  const measured = [];
  let cachesDropped = true;
  try {
    for (const ds of sets) {
      if (ds.skipped !== undefined) continue;
      const made = imagesOf(ds, build);
      prepSeconds += made.seconds;
      const r = await benchMounts(ds, made.images, {
        work: config.work,
        rounds: config.rounds,
        fewRounds: FEW_ROUNDS,
        ...(config.mode === 'full' && { fewSets: FULL_FEW_MOUNT_SETS }),
        nydusd: join(build, 'src', 'cli', 'nydusd.cjs'),
        b2,
        b3,
        say,
      });
      cachesDropped &&= r.cachesDropped;
      measured.push({ ds, images: made.images, results: r.results, quiet: r.quiet });
    }
  } finally {
    cleanupMountsSync();
  }
  const totalSeconds = (performance.now() - started) / 1000;
  return {
    kind: 'mount',
    command: command(),
    config,
    fewRounds: FEW_ROUNDS,
    phases: { b2, b3, b6: config.only.includes('b6') },
    date: utcNow(),
    machine: { ...mach, mountVersions: mountVersions() },
    sets,
    measured,
    cachesDropped,
    imageSeconds: prepSeconds,
    benchSeconds: totalSeconds - prepSeconds,
    totalSeconds,
    tools: MOUNT_TOOLS,
  };
}

/**
 * A module of the bench written separately (requests.mjs, memory.mjs), or undefined when it is
 * not there (yet).
 * @param {string} name
 * @returns {Promise<Record<string, any> | undefined>}
 */
async function optionalModule(name) {
  const path = join(dirname(fileURLToPath(import.meta.url)), name);
  if (!existsSync(path)) return undefined;
  return import(pathToFileURL(path).href);
}

/** The rootfs data set of the run (made when it is not among the run's data sets). */
const rootfsOf = (/** @type {import('./datasets.mjs').DataSet[]} */ sets) =>
  sets.find((s) => s.name === 'rootfs') ?? rootfs(config.work, say);

/**
 * An image of ours that mount.mjs does not make (its daemon config written next to it).
 * @param {import('./datasets.mjs').DataSet} ds
 * @param {string} build
 * @param {'none'} compressor
 */
function extraImage(ds, build, compressor) {
  const dir = join(config.work, 'memory', 'images', `${basename(ds.dir)}-${compressor}`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, 'blobs'), { recursive: true });
  say(`${ds.name}: making its --compressor ${compressor} image`);
  const r = spawnSync(
    process.execPath,
    [
      join(build, 'src', 'cli', 'nydus-image.js'),
      'create',
      '--compressor',
      compressor,
      '--fs-version',
      '6',
      '-B',
      join(dir, 'bootstrap'),
      '-D',
      join(dir, 'blobs'),
      ds.dir,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  if (r.status !== 0)
    throw new Error(`nydus-image create failed: ${String(r.stderr).trim().split('\n').at(-1)}`);
  return dir;
}

/**
 * The request costs (requests.mjs) on the rootfs data set's images.
 * @param {{ benchRequests: Function }} mod
 * @param {import('./datasets.mjs').DataSet[]} sets
 * @param {ReturnType<typeof machine>} mach
 * @param {string} build
 */
async function runRequests(mod, sets, mach, build) {
  const started = performance.now();
  const ds = rootfsOf(sets);
  if (ds.skipped !== undefined) throw new Error(`no rootfs data set: ${ds.skipped}`);
  const { images } = imagesOf(ds, build);
  const need = (/** @type {string} */ id) => {
    const img = images[id];
    if (img === undefined || img.failed !== undefined)
      throw new Error(`no ${id} image: ${img?.failed ?? 'not made'}`);
    return img;
  };
  const z = need('nydus-zstd');
  writeNydusdConfig(z);
  let result;
  try {
    result = await mod.benchRequests({
      work: config.work,
      images: {
        nydusd: {
          argv: [
            process.execPath,
            join(build, 'src', 'cli', 'nydusd.cjs'),
            '--config',
            join(z.dir, 'nydusd.json'),
            '--bootstrap',
            join(z.dir, 'bootstrap'),
          ],
        },
        erofs: { image: join(need('erofs-lz4hc').dir, 'image.erofs') },
        squashfuse: { image: join(need('squashfs-zstd').dir, 'image.sqfs') },
      },
      rounds: Math.min(config.rounds, FEW_ROUNDS),
      say,
    });
  } finally {
    cleanupMountsSync();
  }
  return {
    kind: 'requests',
    command: command(),
    config,
    date: utcNow(),
    machine: mach,
    dataSet: ds.name,
    totalSeconds: (performance.now() - started) / 1000,
    result,
  };
}

/**
 * The daemon memory (memory.mjs) on rootfs-like images: our zstd and lz4_block images of rootfs
 * and of rootfs-large when the run has it, a --compressor none image of rootfs to make at least 3.
 * @param {{ benchMemory: Function }} mod
 * @param {import('./datasets.mjs').DataSet[]} sets
 * @param {ReturnType<typeof machine>} mach
 * @param {string} build
 */
async function runMemory(mod, sets, mach, build) {
  const started = performance.now();
  const base = rootfsOf(sets);
  if (base.skipped !== undefined) throw new Error(`no rootfs data set: ${base.skipped}`);
  const rootfsSets = [base, ...sets.filter((s) => s.name === 'rootfs-large' && s.skipped === undefined)];
  /** @type {{ bootstrap: string, blobDir: string, label: string }[]} */
  const images = [];
  for (const ds of rootfsSets) {
    for (const id of ['nydus-zstd', 'nydus-lz4_block']) {
      const img = imagesOf(ds, build).images[id];
      if (img !== undefined && img.failed === undefined)
        images.push({
          bootstrap: join(img.dir, 'bootstrap'),
          blobDir: join(img.dir, 'blobs'),
          label: `${ds.name} ${img.label}`,
        });
    }
  }
  if (images.length < 3) {
    const dir = extraImage(base, build, 'none');
    images.push({
      bootstrap: join(dir, 'bootstrap'),
      blobDir: join(dir, 'blobs'),
      label: `${base.name} --compressor none`,
    });
  }
  let result;
  try {
    result = await mod.benchMemory({
      work: config.work,
      nydusd: [process.execPath, join(build, 'src', 'cli', 'nydusd.cjs')],
      images,
      soakSeconds: config.soakSeconds,
      readers: 16,
      say,
    });
  } finally {
    cleanupMountsSync();
  }
  return {
    kind: 'memory',
    command: command(),
    config,
    date: utcNow(),
    machine: mach,
    images: images.map((i) => i.label),
    totalSeconds: (performance.now() - started) / 1000,
    result,
  };
}

/**
 * B4, B5 and B7 on rootfs-large (made from the rootfs data set).
 * @param {import('./datasets.mjs').DataSet[]} sets
 * @param {ReturnType<typeof machine>} mach
 * @param {string} build the private build's directory
 */
async function runRegistry(sets, mach, build) {
  const started = performance.now();
  const base = rootfsOf(sets);
  const loadavg = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(', ');
  const before = loadavg();
  const result = await benchRegistry({
    work: config.work,
    rounds: config.rounds,
    build,
    only: config.only,
    say,
    base,
  });
  return {
    kind: 'registry',
    command: command(),
    config,
    date: utcNow(),
    machine: {
      ...mach,
      registryVersions: Object.fromEntries(
        ['docker-registry', 'skopeo', 'umoci', 'squashfs-tools'].map((p) => [p, dpkgVersion(p)]),
      ),
    },
    load: { before, after: loadavg() },
    totalSeconds: (performance.now() - started) / 1000,
    result,
  };
}

/**
 * B8 and the snapshotter's memory figures on rootfs-large (made from the rootfs data set).
 * @param {import('./datasets.mjs').DataSet[]} sets
 * @param {ReturnType<typeof machine>} mach
 * @param {string} build the private build's directory
 */
async function runContainerd(sets, mach, build) {
  if (process.getuid?.() !== 0) throw new Error('B8 needs root (containerd, mounts, drop_caches)');
  const base = rootfsOf(sets);
  const loadavg = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(', ');
  const before = loadavg();
  const t0 = performance.now();
  const result = await benchContainerd({ work: config.work, rounds: config.rounds, build, say, base });
  return {
    kind: 'containerd',
    command: command(),
    config,
    date: utcNow(),
    machine: mach,
    load: { before, after: loadavg() },
    benchSeconds: (performance.now() - t0) / 1000,
    totalSeconds: (performance.now() - t0) / 1000,
    result,
  };
}

/**
 * B9 on the rootfs data set's v6 zstd image (made as for B2/B3).
 * @param {import('./datasets.mjs').DataSet[]} sets
 * @param {ReturnType<typeof machine>} mach
 * @param {string} build the private build's directory
 */
async function runRemote(sets, mach, build) {
  if (process.getuid?.() !== 0) throw new Error('B9 needs root (FUSE mounts, drop_caches)');
  const started = performance.now();
  const ds = rootfsOf(sets);
  const { images } = imagesOf(ds, build);
  const img = images['nydus-zstd'];
  if (img === undefined || img.failed !== undefined)
    throw new Error(`no rootfs image for B9: ${img?.failed ?? 'not made'}`);
  let result;
  try {
    result = await benchRemote(
      { dir: img.dir, label: `the ${ds.name} data set's \`${img.label}\` image` },
      {
        work: config.work,
        rounds: Math.min(config.rounds, FEW_ROUNDS),
        nydusd: join(build, 'src', 'cli', 'nydusd.cjs'),
        say,
      },
    );
  } finally {
    cleanupMountsSync();
  }
  const rounds = Math.min(config.rounds, FEW_ROUNDS);
  return {
    kind: 'remote',
    command: command(),
    config: { ...config, rounds },
    ...(rounds < config.rounds && {
      roundsNote: `B9 has no bar (each remote backend against localfs): ${rounds} rounds, not ${config.rounds}, to keep the whole run under 60 minutes.`,
    }),
    date: utcNow(),
    machine: {
      ...mach,
      remoteVersions: {
        ...Object.fromEntries(['docker-registry', 'nginx'].map((p) => [p, dpkgVersion(p)])),
        s3rver: JSON.parse(readFileSync(join(ROOT, 'node_modules', 's3rver', 'package.json'), 'utf8'))
          .version,
      },
    },
    totalSeconds: (performance.now() - started) / 1000,
    result,
  };
}

/**
 * The fault matrix: bench/faults.mjs in its own process (it compiles its harness, measures and
 * writes its block of the report, and saves WORK/results-faults.json).
 */
function runFaults() {
  say('fault matrix: node bench/faults.mjs');
  const r = spawnSync(process.execPath, [join(ROOT, 'bench', 'faults.mjs')], {
    stdio: 'inherit',
    env: { ...process.env, NYDUS_BENCH_DIR: config.work, NYDUS_BENCH_OUTPUT: config.output },
  });
  if (r.error !== undefined || r.status !== 0)
    throw new Error(`bench/faults.mjs failed (${r.error?.message ?? `exit ${r.status ?? r.signal}`})`);
}

/**
 * Saves one part's measurements (not the tools' logs), so the report can be rendered again
 * without a rerun.
 * @param {string} path
 * @param {unknown} input
 */
function save(path, input) {
  writeFileSync(
    path,
    JSON.stringify(input, (k, v) => (k === 'log' ? undefined : v), 1),
  );
}

/** @param {string} path */
function load(path) {
  return existsSync(path) ? JSON.parse(readFileSync(path, 'utf8')) : undefined;
}

const runResultsPath = () => join(config.work, 'results-run.json');

/**
 * Minutes each part of a run should take on a 2-core machine like the one of BENCHMARKS.md,
 * from per-run times measured there (see estimateB1 and estimateMounts for the two parts whose
 * time follows the data sets), for the estimate printed at the start.
 * @param {string} id
 * @param {import('./datasets.mjs').DataSet[]} sets
 */
function estimateSeconds(id, sets) {
  const rounds = config.rounds;
  switch (id) {
    case 'b1':
      return sets.reduce((t, ds) => t + estimateB1(ds, rounds), 0);
    case 'mounts':
      return sets.reduce((t, ds) => t + estimateMounts(ds, rounds), 0);
    case 'requests':
      return 20 + 15 * Math.min(rounds, FEW_ROUNDS);
    case 'memory':
      return config.soakSeconds + 150;
    case 'registry':
      return 60 * rounds;
    case 'containerd':
      return 20 + 60 * rounds;
    case 'remote':
      return 60 * Math.min(rounds, FEW_ROUNDS);
    case 'faults':
      return 120;
    default:
      return 0;
  }
}

/**
 * Seconds of one run of each B1 row on the quick-size data sets (medians measured on the
 * machine of BENCHMARKS.md, plus 1.5 s of sync, cache drop and quiet check per run), scaled by
 * the bytes of the data set at hand.
 */
const B1_SECONDS = {
  rootfs: { bytes: 199e6, dir: [2.6, 2.5, 2.4, 10.6, 1.2, 11.6, 1.0, 1.3, 1.2], tar: [2.6, 2.4] },
  'rootfs-large': { bytes: 605e6, dir: [7.5, 7.5, 7, 32, 3.6, 35, 3, 3.3, 3], tar: [7.5, 7] },
  'big-files': { bytes: 403e6, dir: [1.8, 1.3, 2.2, 19.5, 0.9, 92, 1.2, 1.3, 1.2], tar: [2, 2.5] },
  'many-small': { bytes: 163e6, dir: [6, 5, 5, 14.7, 3.2, 5.2, 2.8, 2.5, 2.3], tar: [5, 5] },
};

/**
 * @param {import('./datasets.mjs').DataSet} ds
 * @param {number} rounds
 */
function estimateB1(ds, rounds) {
  const e = B1_SECONDS[/** @type {keyof typeof B1_SECONDS} */ (ds.name)];
  if (e === undefined || ds.skipped !== undefined) return 0;
  const scale = (ds.stats?.bytes ?? e.bytes) / e.bytes;
  let t = 0;
  TOOLS.forEach((tool) => {
    if (notRun(tool, ds) !== undefined) return;
    const i = TOOLS.filter((x) => (x.source ?? 'dir') === (tool.source ?? 'dir')).indexOf(tool);
    const per = (tool.source === 'tar' ? e.tar : e.dir)[i] ?? 0;
    t += roundsOf(tool, rounds) * (per * scale + 1.5);
  });
  return t;
}

/**
 * Seconds of B2 + B3 of each mount row on the quick-size data sets (medians measured on the
 * machine of BENCHMARKS.md), scaled by the bytes of the data set at hand, plus 3.5 s a session
 * (mount, settling, two cache drops, quiet checks, unmount); and the seconds making our images.
 */
const MOUNT_SECONDS = {
  rootfs: { bytes: 199e6, images: 5.2, work: [2.9, 2.9, 2.3, 1.9, 2.3, 0.9] },
  'rootfs-large': { bytes: 605e6, images: 16, work: [8.7, 8.6, 7, 5.7, 6.8, 2.8] },
  'big-files': { bytes: 403e6, images: 3.8, work: [0.8, 0.8, 1.4, 1.3, 0.7, 0.7] },
  'many-small': { bytes: 163e6, images: 10.6, work: [5.9, 5.7, 12.2, 4.2, 12.1, 2.3] },
};

/**
 * @param {import('./datasets.mjs').DataSet} ds
 * @param {number} rounds
 */
function estimateMounts(ds, rounds) {
  const e = MOUNT_SECONDS[/** @type {keyof typeof MOUNT_SECONDS} */ (ds.name)];
  if (e === undefined || ds.skipped !== undefined) return 0;
  const scale = (ds.stats?.bytes ?? e.bytes) / e.bytes;
  let t = e.images * scale;
  MOUNT_TOOLS.forEach((tool, i) => {
    if (tool.few === true && config.mode === 'full' && !FULL_FEW_MOUNT_SETS.includes(ds.name)) return;
    t += roundsOf(tool, rounds) * ((e.work[i] ?? 0) * scale + 3.5);
  });
  return t;
}

/** @param {number} s */
const minutes = (s) => `${(s / 60).toFixed(1)} min`;

/**
 * The data sets of the run as the estimate sees them: their nominal sizes (the data sets are
 * not made).
 * @returns {import('./datasets.mjs').DataSet[]}
 */
function plannedSets() {
  /** @type {Record<string, number>} */
  const bytes = {
    rootfs: 199e6,
    'rootfs-large': 605e6,
    'big-files': config.bigMiB * config.bigCount * 1024 * 1024,
    'many-small': (163e6 / 20_000) * config.smallFiles,
  };
  return config.sets.map((name) => ({
    name,
    dir: '',
    description: '',
    stats: { files: 0, dirs: 0, symlinks: 0, other: 0, bytes: bytes[name] ?? 0, depth: 0 },
  }));
}

/**
 * The estimate of every part of the run, printed.
 * @param {{ id: string, title: string }[]} parts
 * @param {import('./datasets.mjs').DataSet[]} sets
 */
function printEstimate(parts, sets) {
  /** @type {Record<string, number>} */
  const estimate = Object.fromEntries(parts.map((p) => [p.id, estimateSeconds(p.id, sets)]));
  const total = Object.values(estimate).reduce((a, b) => a + b, 0);
  say(
    `estimate (${config.mode} mode; data sets and the peers' images cached, build of src/ ~1 min more): ` +
      `${parts.map((p) => `${p.title} ${minutes(estimate[p.id] ?? 0)}`).join(', ')}; ${minutes(total)} in all, ` +
      `plus at most ${minutes(config.quietBudget)} waiting for a quiet machine and ` +
      `${minutes(config.repeatBudget)} repeating disturbed runs`,
  );
  return { estimate, total };
}

/** The parts the run covers (NYDUS_BENCH_ONLY), checked. */
function plannedParts() {
  const unknown = config.sets.filter((s) => !SET_NAMES.includes(s));
  if (unknown.length > 0) throw new Error(`Unknown data set(s) ${unknown.join(', ')}`);
  const unknownBench = config.only.filter((b) => !BENCHMARKS.includes(b));
  if (unknownBench.length > 0 || config.only.length === 0)
    throw new Error(
      `NYDUS_BENCH_ONLY must list some of ${BENCHMARKS.join(',')}, got "${config.only.join(',')}"`,
    );
  return PARTS.filter((p) => p.names.some((n) => config.only.includes(n)));
}

async function main() {
  const started = performance.now();
  const parts = plannedParts();
  const want = (/** @type {string} */ id) => parts.some((p) => p.id === id);
  mkdirSync(config.work, { recursive: true });
  setBudgets({ quiet: config.quietBudget, repeat: config.repeatBudget });
  say(
    `${config.mode} run: work directory ${config.work}, ${config.rounds} rounds (at most ${FEW_ROUNDS} for ` +
      `the rows no bar is judged on), data sets ${config.sets.join(', ')}, benchmarks ${config.only.join(', ')}`,
  );
  const unavailable = installDebs(
    want('mounts') || want('requests') || want('memory'),
    want('registry') || want('containerd') || want('remote'),
    want('containerd'),
    want('remote'),
  );
  // Before the build: the commit and src/ state it compiles.
  const mach = machine();
  const build = privateBuild();
  cli = join(build, 'src', 'cli', 'nydus-image.js');
  floorCodec = join(build, 'src', 'codec');
  warmBuild = build;

  // B4/B5/B7, B8, B9 and the request and memory parts need only the rootfs (made when it is not
  // among these).
  const sets = want('b1') || want('mounts') ? dataSets(unavailable) : [];
  const prepSeconds = sets.reduce((a, s) => a + (s.prepSeconds ?? 0), 0);
  const setupSeconds = (performance.now() - started) / 1000;

  const { estimate, total: estTotal } = printEstimate(parts, sets.length > 0 ? sets : plannedSets());

  /** @type {{ id: string, title: string, seconds: number, estimate: number, status: string }[]} */
  const done = [];
  for (const part of parts) {
    const t0 = performance.now();
    let status = 'done';
    try {
      /** @type {unknown} */
      let result;
      if (part.id === 'b1') result = runB1(sets, mach, prepSeconds);
      else if (part.id === 'mounts') result = await runMounts(sets, mach, build);
      else if (part.id === 'requests' || part.id === 'memory') {
        const mod = await optionalModule(`${part.id}.mjs`);
        if (mod === undefined) status = `not measured: bench/${part.id}.mjs is not there`;
        else if (part.id === 'requests') result = await runRequests(mod, sets, mach, build);
        else result = await runMemory(mod, sets, mach, build);
      } else if (part.id === 'registry') result = await runRegistry(sets, mach, build);
      else if (part.id === 'containerd') result = await runContainerd(sets, mach, build);
      else if (part.id === 'remote') result = await runRemote(sets, mach, build);
      else if (part.id === 'faults') runFaults();
      if (result !== undefined) save(join(config.work, part.file), result);
    } catch (e) {
      status = `FAILED: ${e instanceof Error ? e.message : String(e)}`;
      say(`${part.title}: ${status}`);
    } finally {
      cleanupMountsSync();
      cleanupRegistrySync();
      cleanupContainerdSync();
    }
    const seconds = (performance.now() - t0) / 1000;
    done.push({ id: part.id, title: part.title, seconds, estimate: estimate[part.id] ?? 0, status });
    say(`${part.title}: ${status} in ${minutes(seconds)} (estimate ${minutes(estimate[part.id] ?? 0)})`);
  }
  const totalSeconds = (performance.now() - started) / 1000;
  const run = {
    kind: 'run',
    command: command(),
    config,
    date: utcNow(),
    machine: mach,
    setupSeconds,
    prepSeconds,
    parts: done,
    estimateSeconds: estTotal,
    budgets: {
      quietSeconds: config.quietBudget,
      quietWaited: budgets.waited,
      repeatSeconds: config.repeatBudget,
      repeated: budgets.repeated,
      repeatsRefused: budgets.skipped,
    },
    totalSeconds,
  };
  save(runResultsPath(), run);
  await writeReport(loadAll());
  say(
    `run time: setup ${minutes(setupSeconds)} (build, data sets), ` +
      done
        .map((p) => `${p.title} ${minutes(p.seconds)}${p.status === 'done' ? '' : ` (${p.status})`}`)
        .join(', ') +
      `; ${minutes(totalSeconds)} in all (estimate ${minutes(estTotal + setupSeconds)}); waited ` +
      `${minutes(budgets.waited)} for a quiet machine, repeated ${minutes(budgets.repeated)} of runs`,
  );
  say(`wrote ${config.output}`);
  if (done.some((p) => p.status.startsWith('FAILED'))) process.exitCode = 1;
}

/**
 * The saved results of every part, from `paths` (taken by their "kind") or from the work
 * directory.
 * @param {string[]} [paths]
 */
function loadAll(paths) {
  /** @type {Record<string, any>} */
  const inputs = {};
  const byKind = {
    mount: 'mounts',
    requests: 'requests',
    memory: 'memory',
    registry: 'registry',
    containerd: 'containerd',
    remote: 'remote',
    run: 'run',
  };
  const files =
    paths !== undefined && paths.length > 0
      ? paths
      : [
          ...PARTS.filter((p) => p.id !== 'faults').map((p) => join(config.work, p.file)),
          runResultsPath(),
        ].filter((p) => existsSync(p));
  for (const path of files) {
    const input = load(path);
    if (input === undefined) continue;
    const kind = /** @type {keyof typeof byKind | undefined} */ (input.kind);
    inputs[kind !== undefined && kind in byKind ? byKind[kind] : 'b1'] = input;
  }
  inputs['files'] = files;
  return inputs;
}

/**
 * Writes the report; a part whose results are not saved here keeps its text from the existing
 * report (e.g. measured on another machine).
 * @param {Record<string, any>} inputs as loadAll returns them
 */
async function writeReport(inputs) {
  const old = existsSync(config.output) ? readFileSync(config.output, 'utf8') : '';
  const kept = {
    b1: inputs['b1'] === undefined ? keptPart(old, '## B1:') : undefined,
    mounts: inputs['mounts'] === undefined ? keptPart(old, '## B2, B3, B6:') : undefined,
    registry:
      inputs['registry'] === undefined ? keptPart(old, '## B4, B5, B7: the registry path') : undefined,
    containerd: inputs['containerd'] === undefined ? keptPart(old, '## B8:') : undefined,
    remote: inputs['remote'] === undefined ? keptPart(old, '## B9:') : undefined,
  };
  // The fault-injection matrix (bench/faults.mjs) is its own block: kept as it is.
  const faults = /<!-- faults:begin -->[\s\S]*?<!-- faults:end -->/.exec(old)?.[0];
  const requestsMod = await optionalModule('requests.mjs');
  const memoryMod = await optionalModule('memory.mjs');
  const text = renderReport(
    inputs['b1'],
    inputs['mounts'],
    inputs['registry'],
    kept,
    inputs['containerd'],
    inputs['remote'],
    {
      requests: inputs['requests'],
      memory: inputs['memory'],
      run: inputs['run'],
      renderRequests: requestsMod?.['renderRequests'],
      renderMemory: memoryMod?.['renderMemory'],
    },
  );
  writeFileSync(
    config.output,
    await formatMarkdown(faults === undefined ? text : `${text.trimEnd()}\n\n${faults}\n`, config.output),
  );
}

/**
 * The text of one part of a report: from its heading to the next second-level heading.
 * @param {string} text
 * @param {string} heading how the part's heading line starts
 */
function keptPart(text, heading) {
  const lines = text.split('\n');
  const start = lines.findIndex((l) => l.startsWith(heading));
  if (start < 0) return undefined;
  let end = lines.findIndex((l, i) => i > start && l.startsWith('## '));
  if (end < 0) end = lines.length;
  return lines.slice(start, end).join('\n').trimEnd();
}

/**
 * `node bench/run.mjs --render [FILE...]`: the report again from saved measurements.
 * @param {string[]} paths
 */
async function renderOnly(paths) {
  const inputs = loadAll(paths);
  await writeReport(inputs);
  say(`wrote ${config.output} from ${inputs['files'].join(' and ') || 'nothing (no saved results)'}`);
}

/**
 * The project's prettier style, so that `prettier --check` passes on the generated file.
 * @param {string} text
 * @param {string} path
 */
export async function formatMarkdown(text, path) {
  try {
    const prettier = await import('prettier');
    const options = (await prettier.resolveConfig(path)) ?? {};
    return await prettier.format(text, { ...options, filepath: path });
  } catch (e) {
    say(`prettier not available (${e instanceof Error ? e.message : String(e)}): report left unformatted`);
    return text;
  }
}

// Not while being imported (e.g. by a test of the report).
if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  // Mounts never outlive the run: unmount on the way out, also on a signal.
  process.on('exit', () => {
    cleanupMountsSync();
    cleanupRegistrySync();
    cleanupContainerdSync();
  });
  for (const sig of /** @type {const} */ (['SIGINT', 'SIGTERM', 'SIGHUP'])) {
    process.once(sig, () => {
      cleanupMountsSync();
      cleanupRegistrySync();
      cleanupContainerdSync();
      process.exit(128 + (sig === 'SIGINT' ? 2 : sig === 'SIGTERM' ? 15 : 1));
    });
  }
  const render = process.argv.indexOf('--render');
  if (process.argv.includes('--estimate')) {
    // `node bench/run.mjs --estimate`: what a run with this environment would take, nothing run.
    printEstimate(plannedParts(), plannedSets());
  } else
    (render >= 0 ? renderOnly(process.argv.slice(render + 1)) : main()).catch((e) => {
      console.error(`bench: ${e instanceof Error ? e.message : String(e)}`);
      process.exitCode = 1;
    });
}
