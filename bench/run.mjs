// The benchmarks of ../shared/docs/benchmarks.md that run on one machine, written to
// BENCHMARKS.md at the project root:
//   B1  build throughput: `nydus-image create` against mksquashfs and mkfs.erofs;
//   B2  metadata walk of a mounted image, B3 cold read of every file of it, B6 peak RSS of the
//       daemon serving B2 and B3: our nydusd against squashfuse and kernel EROFS (mount.mjs);
//   B4  lazy start from a registry over a shared 100 Mbit/s link, B5 the bytes it fetched, B7
//       `nydusify convert` against pull + unpack + mksquashfs (registry.mjs);
//   B8  container start through containerd over the same link: containerd + containerd-nydus-grpc
//       (`ctr-remote image rpull` + `ctr run`) against `ctr image pull` + `ctr run` with the
//       overlayfs snapshotter, the bytes nydusd fetched, the snapshotter's peak RSS, and the RSS
//       of a shared-mode nydusd per image added (containerd.mjs);
//   B9  cold read of the rootfs image through each remote backend on loopback (registry, s3, oss,
//       http-proxy, and the registry through nginx as a caching P2P proxy, uncached and cached)
//       against the localfs backend on the same image (remote.mjs).
// Side by side in one run (tools alternate within each round, cold caches before every run,
// medians of the rounds).
//
//   npm run bench
//
// Ours is compiled from src/ into the work directory at the start (the project's tsc and
// tsconfig), so that other builds of dist/ during the run cannot change what is measured.
//
// B1's measurements are saved in WORK/results.json, B2/B3/B6's in WORK/results-mount.json,
// B4/B5/B7's in WORK/results-registry.json, B8's in WORK/results-containerd.json, B9's in
// WORK/results-remote.json; a run of only
// some benchmarks replaces its own file
// and the report takes the others from the earlier runs (each part of the report gives its own
// date; a part without saved results keeps its text from the existing report).
//
// Environment (all optional):
//   NYDUS_BENCH_DIR      work directory for data sets, outputs and logs (/var/tmp/nydus-bench)
//   NYDUS_BENCH_ROUNDS   rounds per data set (5; fewer only for trying the harness out)
//   NYDUS_BENCH_SETS     comma-separated subset of rootfs,big-files,many-small
//   NYDUS_BENCH_BIG_MIB  size of each of the 4 big files in MiB (96)
//   NYDUS_BENCH_SMALL    number of small files (20000)
//   NYDUS_BENCH_OUTPUT   report path (BENCHMARKS.md at the project root)
//   NYDUS_BENCH_ONLY     comma-separated subset of b1,b2,b3,b6,b4,b5,b7,b8,b9 (all); b2, b3 and b6
//                        share their mounts, and b6 alone runs both b2 and b3 (its peak is over
//                        both); b4 and b5 are the same runs; b8 includes the snapshotter's memory
//                        figures (peak RSS during B8, shared-mode nydusd RSS per image)
//   NYDUS_BENCH_B4_CMD   the command B4 and B8 run from the image (python3 -c 'print(1)')
//
// B8 needs root, containerd, runc, ctr-remote (Debian: containerd, runc, stargz-snapshotter)
// besides B4's docker-registry and skopeo; it starts a containerd (and for ours a
// containerd-nydus-grpc of the private build) from nothing for every run, on their own roots
// and sockets under WORK/containerd, and takes them down after it.
//
// `node bench/run.mjs --render [FILE...]` writes the report again from the measurements runs
// saved (WORK/results.json, WORK/results-mount.json, WORK/results-registry.json and
// WORK/results-containerd.json by default; a file is taken as mount, registry or containerd
// results by its "kind"), e.g. after a change to the report's wording.
import { spawnSync } from 'node:child_process';
import console from 'node:console';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { availableParallelism, release, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';
import { bigFiles, manySmall, rootfs } from './datasets.mjs';
import { disturbed, median, outputOf, timedRun, waitQuiet } from './measure.mjs';
import { benchMounts, cleanupMountsSync, MOUNT_TOOLS, mountVersions, prepareImages } from './mount.mjs';
import { benchContainerd, cleanupContainerdSync } from './containerd.mjs';
import { benchRegistry, cleanupRegistrySync } from './registry.mjs';
import { benchRemote } from './remote.mjs';
import { renderReport } from './report.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
/** The nydus-image CLI measured: the private build made at the start of the run. */
let cli = '';

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

const BENCHMARKS = ['b1', 'b2', 'b3', 'b6', 'b4', 'b5', 'b7', 'b8', 'b9'];
const MOUNT_BENCHMARKS = ['b2', 'b3', 'b6'];
const REGISTRY_BENCHMARKS = ['b4', 'b5', 'b7'];
const CONTAINERD_BENCHMARKS = ['b8'];
const REMOTE_BENCHMARKS = ['b9'];

const config = {
  work: resolve(process.env['NYDUS_BENCH_DIR'] || '/var/tmp/nydus-bench'),
  only: (process.env['NYDUS_BENCH_ONLY'] || BENCHMARKS.join(','))
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter((s) => s !== ''),
  rounds: envInt('NYDUS_BENCH_ROUNDS', 5),
  sets: (process.env['NYDUS_BENCH_SETS'] || 'rootfs,big-files,many-small').split(',').map((s) => s.trim()),
  bigMiB: envInt('NYDUS_BENCH_BIG_MIB', 96),
  smallFiles: envInt('NYDUS_BENCH_SMALL', 20_000),
  output: resolve(process.env['NYDUS_BENCH_OUTPUT'] || join(ROOT, 'BENCHMARKS.md')),
};

/** @param {string} msg */
const say = (msg) => console.log(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}`);

/**
 * @typedef {object} Tool
 * @property {string} id
 * @property {string} label how the table names it
 * @property {'ours' | 'peer' | 'reference'} kind
 * @property {(src: string, out: string) => string[]} argv
 */

/** @param {'zstd' | 'lz4_block' | 'none'} c @returns {Tool} */
const ours = (c) => ({
  id: `nydus-${c}`,
  label: `nydus-image create --compressor ${c}`,
  kind: 'ours',
  argv: (src, out) => [
    process.execPath,
    cli,
    'create',
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

/** @type {Tool[]} */
export const TOOLS = [
  ours('zstd'),
  ours('lz4_block'),
  ours('none'),
  {
    id: 'mksquashfs-zstd',
    label: 'mksquashfs -comp zstd',
    kind: 'peer',
    argv: (src, out) => ['mksquashfs', src, join(out, 'image.sqfs'), '-comp', 'zstd', '-noappend', '-quiet'],
  },
  {
    id: 'mksquashfs-zstd-l3',
    label: 'mksquashfs -comp zstd -Xcompression-level 3',
    kind: 'peer',
    argv: (src, out) => [
      'mksquashfs',
      src,
      join(out, 'image.sqfs'),
      '-comp',
      'zstd',
      '-Xcompression-level',
      '3',
      '-noappend',
      '-quiet',
    ],
  },
  {
    id: 'mkfs.erofs-lz4hc',
    label: 'mkfs.erofs -zlz4hc',
    kind: 'peer',
    argv: (src, out) => ['mkfs.erofs', '-zlz4hc', join(out, 'image.erofs'), src],
  },
  {
    id: 'read',
    label: 'cold read: tar -cf - . | wc -c',
    kind: 'reference',
    argv: (src) => ['sh', '-c', 'tar -cf - -C "$0" . | wc -c', src],
  },
];

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
 * @property {{ wall: number, min: number, max: number, cpu: number, otherCpu: number, rssKiB: number, outputBytes: number }} [median]
 * @property {RegExpExecArray | null} [stats] nydus-image's own stats line (ours)
 */

/**
 * All tools on one data set, alternating: round r starts at tool r (mod n), so no tool always
 * runs right after the same one.
 * @param {import('./datasets.mjs').DataSet} ds
 * @returns {{ results: ToolResult[], cachesDropped: boolean,
 *   quiet: { waited: number, repeated: number, keptDisturbed: number } }}
 */
function benchDataSet(ds) {
  const outRoot = join(config.work, 'out', ds.name);
  const logRoot = join(config.work, 'logs', ds.name);
  mkdirSync(logRoot, { recursive: true });
  /** @type {ToolResult[]} */
  const results = TOOLS.map((tool) => ({ tool, runs: [] }));
  let cachesDropped = true;
  const quiet = { waited: 0, repeated: 0, keptDisturbed: 0 };
  for (let round = 0; round < config.rounds; round++) {
    for (let k = 0; k < results.length; k++) {
      const res = results[(round + k) % results.length];
      if (res === undefined || res.failed !== undefined) continue;
      const outDir = join(outRoot, res.tool.id);
      const logPath = join(logRoot, `${res.tool.id}.log`);
      // Wait for a quiet machine; repeat (at most twice) a run that other work disturbed.
      let r;
      for (let attempt = 0; ; attempt++) {
        quiet.waited += waitQuiet(60);
        r = timedRun(res.tool.argv(ds.dir, outDir), { outDir, logPath, dropCache: true });
        if (r.status !== 0 || !disturbed(r)) break;
        if (attempt === 2) {
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
      res.runs.push(r);
      say(
        `${ds.name} round ${round + 1}/${config.rounds}: ${res.tool.label}: ${r.wall.toFixed(2)} s, ` +
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
  return { results, cachesDropped, quiet };
}

/**
 * The data sets of the run, made or taken from the cache.
 * @param {string[]} unavailable Debian packages that could not be had
 */
function dataSets(unavailable) {
  /** @type {import('./datasets.mjs').DataSet[]} */
  const sets = [];
  for (const name of config.sets) {
    say(`data set ${name}: making (or reusing the cached copy)`);
    if (name === 'rootfs') {
      sets.push(
        unavailable.includes('debootstrap')
          ? {
              name,
              dir: '',
              description: 'debootstrap --variant=minbase bookworm',
              skipped: 'debootstrap is not installed and could not be installed',
            }
          : rootfs(config.work, say),
      );
    } else if (name === 'big-files') sets.push(bigFiles(config.work, config.bigMiB));
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

/**
 * B1 on every data set.
 * @param {import('./datasets.mjs').DataSet[]} sets
 * @param {ReturnType<typeof machine>} mach
 * @param {number} prepSeconds
 * @param {number} started
 */
function runB1(sets, mach, prepSeconds, started) {
  const tmp = mkdtempSync(join(config.work, 'probe-'));
  const probe = probeOurs(tmp, config.rounds);
  rmSync(tmp, { recursive: true, force: true });
  say(
    `nydus-image encoders: ${JSON.stringify(probe.encoders)}; fixed cost ${probe.fixedSeconds.toFixed(2)} s`,
  );

  const benchStarted = performance.now();
  /** @type {{ ds: import('./datasets.mjs').DataSet, results: ToolResult[],
   *   quiet: { waited: number, repeated: number, keptDisturbed: number } }[]} */
  const measured = [];
  let cachesDropped = probe.cachesDropped;
  for (const ds of sets) {
    if (ds.skipped !== undefined) continue;
    const r = benchDataSet(ds);
    cachesDropped &&= r.cachesDropped;
    measured.push({ ds, results: r.results, quiet: r.quiet });
  }
  const now = performance.now();
  return {
    command: 'npm run bench',
    config,
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
 * B2, B3 and B6 on every data set.
 * @param {import('./datasets.mjs').DataSet[]} sets
 * @param {ReturnType<typeof machine>} mach
 * @param {string} build the private build's directory
 * @param {number} started
 */
async function runMounts(sets, mach, build, started) {
  const b2 = config.only.includes('b2') || config.only.includes('b6');
  const b3 = config.only.includes('b3') || config.only.includes('b6');
  const benchStarted = performance.now();
  let prepSeconds = 0;
  /** @type {{ ds: import('./datasets.mjs').DataSet, images: Record<string, import('./mount.mjs').Image>,
   *   results: import('./mount.mjs').MountResult[],
   *   quiet: { waited: number, repeated: number, keptDisturbed: number } }[]} */
  const measured = [];
  let cachesDropped = true;
  try {
    for (const ds of sets) {
      if (ds.skipped !== undefined) continue;
      const t0 = performance.now();
      const images = prepareImages(ds, {
        work: config.work,
        nydusImage: join(build, 'src', 'cli', 'nydus-image.js'),
        say,
      });
      prepSeconds += (performance.now() - t0) / 1000;
      const r = await benchMounts(ds, images, {
        work: config.work,
        rounds: config.rounds,
        nydusd: join(build, 'src', 'cli', 'nydusd.cjs'),
        b2,
        b3,
        say,
      });
      cachesDropped &&= r.cachesDropped;
      measured.push({ ds, images, results: r.results, quiet: r.quiet });
    }
  } finally {
    cleanupMountsSync();
  }
  const now = performance.now();
  return {
    kind: 'mount',
    command: 'npm run bench',
    config,
    phases: { b2, b3, b6: config.only.includes('b6') },
    date: utcNow(),
    machine: { ...mach, mountVersions: mountVersions() },
    sets,
    measured,
    cachesDropped,
    imageSeconds: prepSeconds,
    benchSeconds: (now - benchStarted) / 1000 - prepSeconds,
    totalSeconds: (now - started) / 1000,
    tools: MOUNT_TOOLS,
  };
}

const resultsPath = () => join(config.work, 'results.json');
const mountResultsPath = () => join(config.work, 'results-mount.json');
const registryResultsPath = () => join(config.work, 'results-registry.json');
const containerdResultsPath = () => join(config.work, 'results-containerd.json');
const remoteResultsPath = () => join(config.work, 'results-remote.json');

/**
 * B4, B5 and B7 on rootfs-large (made from the rootfs data set).
 * @param {import('./datasets.mjs').DataSet[]} sets
 * @param {ReturnType<typeof machine>} mach
 * @param {string} build the private build's directory
 * @param {number} started
 */
async function runRegistry(sets, mach, build, started) {
  const base = sets.find((s) => s.name === 'rootfs') ?? rootfs(config.work, say);
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
    command: 'npm run bench',
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
 * @param {number} started
 */
async function runContainerd(sets, mach, build, started) {
  if (process.getuid?.() !== 0) throw new Error('B8 needs root (containerd, mounts, drop_caches)');
  const base = sets.find((s) => s.name === 'rootfs') ?? rootfs(config.work, say);
  const loadavg = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(', ');
  const before = loadavg();
  const t0 = performance.now();
  const result = await benchContainerd({ work: config.work, rounds: config.rounds, build, say, base });
  return {
    kind: 'containerd',
    command: 'npm run bench',
    config,
    date: utcNow(),
    machine: mach,
    load: { before, after: loadavg() },
    benchSeconds: (performance.now() - t0) / 1000,
    totalSeconds: (performance.now() - started) / 1000,
    result,
  };
}

/**
 * B9 on the rootfs data set's v6 zstd image (made as for B2/B3).
 * @param {import('./datasets.mjs').DataSet[]} sets
 * @param {ReturnType<typeof machine>} mach
 * @param {string} build the private build's directory
 * @param {number} started
 */
async function runRemote(sets, mach, build, started) {
  if (process.getuid?.() !== 0) throw new Error('B9 needs root (FUSE mounts, drop_caches)');
  const ds = sets.find((s) => s.name === 'rootfs') ?? rootfs(config.work, say);
  const images = prepareImages(ds, {
    work: config.work,
    nydusImage: join(build, 'src', 'cli', 'nydus-image.js'),
    say,
  });
  const img = images['nydus-zstd'];
  if (img === undefined || img.failed !== undefined)
    throw new Error(`no rootfs image for B9: ${img?.failed ?? 'not made'}`);
  let result;
  try {
    result = await benchRemote(
      { dir: img.dir, label: `the ${ds.name} data set's \`${img.label}\` image` },
      { work: config.work, rounds: config.rounds, nydusd: join(build, 'src', 'cli', 'nydusd.cjs'), say },
    );
  } finally {
    cleanupMountsSync();
  }
  return {
    kind: 'remote',
    command: 'npm run bench',
    config,
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

async function main() {
  const started = performance.now();
  const unknown = config.sets.filter((s) => !['rootfs', 'big-files', 'many-small'].includes(s));
  if (unknown.length > 0) throw new Error(`Unknown data set(s) ${unknown.join(', ')}`);
  const unknownBench = config.only.filter((b) => !BENCHMARKS.includes(b));
  if (unknownBench.length > 0 || config.only.length === 0)
    throw new Error(
      `NYDUS_BENCH_ONLY must list some of ${BENCHMARKS.join(',')}, got "${config.only.join(',')}"`,
    );
  const wantB1 = config.only.includes('b1');
  const wantMounts = config.only.some((b) => MOUNT_BENCHMARKS.includes(b));
  const wantRegistry = config.only.some((b) => REGISTRY_BENCHMARKS.includes(b));
  const wantContainerd = config.only.some((b) => CONTAINERD_BENCHMARKS.includes(b));
  const wantRemote = config.only.some((b) => REMOTE_BENCHMARKS.includes(b));
  mkdirSync(config.work, { recursive: true });
  say(
    `work directory ${config.work}, ${config.rounds} rounds, data sets ${config.sets.join(', ')}, ` +
      `benchmarks ${config.only.join(', ')}`,
  );
  const unavailable = installDebs(
    wantMounts,
    wantRegistry || wantContainerd || wantRemote,
    wantContainerd,
    wantRemote,
  );
  // Before the build: the commit and src/ state it compiles.
  const mach = machine();
  const build = privateBuild();
  cli = join(build, 'src', 'cli', 'nydus-image.js');

  // B4/B5/B7, B8 and B9 need only the rootfs (runRegistry, runContainerd and runRemote make it
  // when it is not among these).
  const sets = wantB1 || wantMounts ? dataSets(unavailable) : [];
  const prepSeconds = sets.reduce((a, s) => a + (s.prepSeconds ?? 0), 0);

  let b1;
  if (wantB1) {
    b1 = runB1(sets, mach, prepSeconds, started);
    save(resultsPath(), b1);
  } else b1 = load(resultsPath());
  let mounts;
  if (wantMounts) {
    mounts = await runMounts(sets, mach, build, started);
    save(mountResultsPath(), mounts);
  } else mounts = load(mountResultsPath());
  let registry;
  if (wantRegistry) {
    registry = await runRegistry(sets, mach, build, started);
    save(registryResultsPath(), registry);
  } else registry = load(registryResultsPath());
  let containerd;
  if (wantContainerd) {
    containerd = await runContainerd(sets, mach, build, started);
    save(containerdResultsPath(), containerd);
  } else containerd = load(containerdResultsPath());
  let remote;
  if (wantRemote) {
    remote = await runRemote(sets, mach, build, started);
    save(remoteResultsPath(), remote);
  } else remote = load(remoteResultsPath());
  await writeReport(b1, mounts, registry, containerd, remote);
  const saved = [
    wantB1 && resultsPath(),
    wantMounts && mountResultsPath(),
    wantRegistry && registryResultsPath(),
    wantContainerd && containerdResultsPath(),
    wantRemote && remoteResultsPath(),
  ]
    .filter(Boolean)
    .join(' and ');
  say(
    `wrote ${config.output} and ${saved} (${((performance.now() - started) / 60000).toFixed(1)} min in all)`,
  );
}

/**
 * Writes the report; a part whose results are not saved here keeps its text from the existing
 * report (e.g. measured on another machine).
 * @param {Parameters<typeof renderReport>[0]} b1
 * @param {Parameters<typeof renderReport>[1]} mounts
 * @param {Parameters<typeof renderReport>[2]} registry
 * @param {Parameters<typeof renderReport>[4]} containerd
 * @param {Parameters<typeof renderReport>[5]} remote
 */
async function writeReport(b1, mounts, registry, containerd, remote) {
  const old = existsSync(config.output) ? readFileSync(config.output, 'utf8') : '';
  const kept = {
    b1: b1 === undefined ? keptPart(old, '## B1:') : undefined,
    mounts: mounts === undefined ? keptPart(old, '## B2, B3, B6:') : undefined,
    registry: registry === undefined ? keptPart(old, '## B4, B5, B7: the registry path') : undefined,
    containerd: containerd === undefined ? keptPart(old, '## B8:') : undefined,
    remote: remote === undefined ? keptPart(old, '## B9:') : undefined,
  };
  // The fault-injection matrix (bench/faults.mjs) is its own block: kept as it is.
  const faults = /<!-- faults:begin -->[\s\S]*?<!-- faults:end -->/.exec(old)?.[0];
  const text = renderReport(b1, mounts, registry, kept, containerd, remote);
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
  let b1;
  let mounts;
  let registry;
  let containerd;
  let remote;
  const files =
    paths.length > 0
      ? paths
      : [
          resultsPath(),
          mountResultsPath(),
          registryResultsPath(),
          containerdResultsPath(),
          remoteResultsPath(),
        ].filter((p) => existsSync(p));
  for (const path of files) {
    const input = JSON.parse(readFileSync(path, 'utf8'));
    if (input.kind === 'mount') mounts = input;
    else if (input.kind === 'registry') registry = input;
    else if (input.kind === 'containerd') containerd = input;
    else if (input.kind === 'remote') remote = input;
    else b1 = input;
  }
  await writeReport(b1, mounts, registry, containerd, remote);
  say(`wrote ${config.output} from ${files.join(' and ') || 'nothing (no saved results)'}`);
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
  (render >= 0 ? renderOnly(process.argv.slice(render + 1)) : main()).catch((e) => {
    console.error(`bench: ${e instanceof Error ? e.message : String(e)}`);
    process.exitCode = 1;
  });
}
