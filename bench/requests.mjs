// Cost per FUSE request type on a mounted rootfs image: our nydusd against squashfuse and the
// kernel's own EROFS, plus the FUSE round-trip floor of this machine (STATFS, which every
// daemon answers without work and the kernel never caches).
//
// One long-running client process (python3, so no start-up per call) makes many calls of one
// kind and times them; the daemon's CPU is read from /proc/PID/stat around it, and nydusd's
// request counts from its metrics API. Every tool serves a fresh mount per round, each round
// in its own shuffled order (measure.mjs roundOrder), and each phase starts from the caches it
// needs (dropped or primed).
// Everything is bounded in time and every mount is undone at the end, on error and on a signal.
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { dirname, join, resolve } from 'node:path';
import process from 'node:process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { roundOrder } from './measure.mjs';

/** Milliseconds a mount may take to answer, a daemon to exit, a client phase to run. */
const MOUNT_TIMEOUT_MS = 30_000;
const EXIT_TIMEOUT_MS = 15_000;
const PHASE_TIMEOUT_MS = 180_000;
/** Calls per round of the repeated phases (statfs, getattr). */
const REPEAT_CALLS = 20_000;
/** Files up to this size are the "small files" read. */
const SMALL_FILE = 128 * 1024;
const HZ = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout) || 100;

/**
 * The phases, in the order they run on a mount. `drop` is what /proc/sys/vm/drop_caches gets
 * first (2: dentries and inodes, so names are looked up again; 1: page cache only).
 * @type {{ id: string, label: string, unit: string, drop: number, prime: boolean, fops: string[] }[]}
 */
export const PHASES = [
  { id: 'statfs', label: 'statfs (round-trip floor)', unit: 'call', drop: 0, prime: false, fops: ['statfs'] },
  {
    id: 'lookup',
    label: 'lookup (lstat of every entry, names dropped)',
    unit: 'entry',
    drop: 2,
    prime: false,
    fops: ['lookup'],
  },
  {
    id: 'getattr',
    label: 'getattr (statx AT_STATX_FORCE_SYNC, names cached)',
    unit: 'call',
    drop: 0,
    prime: true,
    fops: ['getattr'],
  },
  {
    id: 'readdir',
    label: 'readdir (list every directory, names dropped)',
    unit: 'directory',
    drop: 2,
    prime: false,
    fops: ['readdir', 'readdirplus', 'opendir', 'lookup'],
  },
  {
    id: 'read-small',
    label: `read of small files (every file up to ${SMALL_FILE / 1024} KiB, whole)`,
    unit: 'file',
    drop: 1,
    prime: true,
    fops: ['read', 'open', 'release'],
  },
  {
    id: 'read-big',
    label: 'read of the biggest file (whole, sequential)',
    unit: 'MiB',
    drop: 1,
    prime: true,
    fops: ['read', 'open', 'release'],
  },
];

/** The client: one process per phase, timing only its loop. Prints one JSON line. */
const CLIENT = String.raw`
import ctypes, json, os, sys, time
mode, mnt, listfile = sys.argv[1], sys.argv[2], sys.argv[3]
calls = int(sys.argv[4]) if len(sys.argv) > 4 else 0
def load():
    dirs, files = [], []
    with open(listfile) as f:
        for line in f:
            kind, size, rel = line.rstrip('\n').split(' ', 2)
            (dirs if kind == 'd' else files).append((int(size), kind, rel))
    return dirs, files
if mode == 'list':
    out = []
    for root, ds, fs in os.walk(mnt):
        for n in ds + fs:
            p = os.path.join(root, n)
            st = os.lstat(p)
            kind = 'd' if os.path.isdir(p) and not os.path.islink(p) else ('f' if os.path.isfile(p) and not os.path.islink(p) else 'o')
            out.append('%s %d %s' % (kind, st.st_size, os.path.relpath(p, mnt)))
    with open(listfile, 'w') as f:
        f.write('\n'.join(out) + '\n')
    print(json.dumps({'entries': len(out)}))
    sys.exit(0)
dirs, files = load()
paths = [os.path.join(mnt, rel) for _, _, rel in dirs + files]
if mode == 'prime':
    for p in paths: os.lstat(p)
    print(json.dumps({'calls': len(paths)}))
    sys.exit(0)
libc = ctypes.CDLL(None, use_errno=True)
buf = ctypes.create_string_buffer(256)
AT_FDCWD, AT_SYMLINK_NOFOLLOW, AT_STATX_FORCE_SYNC, STATX_BASIC_STATS = -100, 0x100, 0x2000, 0x7ff
t0 = time.perf_counter(); c0 = os.times()
n = 0; nbytes = 0
if mode == 'statfs':
    for _ in range(calls): os.statvfs(mnt)
    n = calls
elif mode == 'getattr':
    some = [p.encode() for p in paths[:2000]]
    statx = libc.statx
    for i in range(calls):
        if statx(AT_FDCWD, some[i % len(some)], AT_SYMLINK_NOFOLLOW | AT_STATX_FORCE_SYNC, STATX_BASIC_STATS, buf) != 0:
            raise OSError(ctypes.get_errno(), 'statx')
    n = calls
elif mode == 'lookup':
    for p in paths: os.lstat(p)
    n = len(paths)
elif mode == 'readdir':
    for _, _, rel in dirs: os.listdir(os.path.join(mnt, rel))
    os.listdir(mnt)
    n = len(dirs) + 1
elif mode == 'read-small':
    for size, kind, rel in files:
        if kind == 'f' and size <= SMALL:
            with open(os.path.join(mnt, rel), 'rb', buffering=0) as f:
                while True:
                    b = f.read(1 << 20)
                    if not b: break
                    nbytes += len(b)
            n += 1
elif mode == 'read-big':
    size, kind, rel = max((x for x in files if x[1] == 'f'), key=lambda x: x[0])
    with open(os.path.join(mnt, rel), 'rb', buffering=0) as f:
        while True:
            b = f.read(1 << 20)
            if not b: break
            nbytes += len(b)
    n = nbytes / 1048576
c1 = os.times()
print(json.dumps({'calls': n, 'bytes': nbytes, 'wall': time.perf_counter() - t0, 'user': c1.user - c0.user, 'sys': c1.system - c0.system}))
`.replace('SMALL', String(SMALL_FILE));

/** @param {number} ms */
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** @param {string} cmd @param {string[]} args @param {number} [timeout] */
function run(cmd, args, timeout = 20_000) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout, killSignal: 'SIGKILL' });
  return { ok: r.status === 0 && r.error === undefined, out: `${r.stdout ?? ''}${r.stderr ?? ''}`.trim() };
}

/** Whether something is mounted at `mnt` (the mount table only: a dead FUSE mount hangs a stat). */
function isMounted(mnt) {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => (l.split(' ')[4] ?? '').replace(/\\040/g, ' ') === mnt);
}

/** CPU seconds (user + system) of a process and its threads; 0 once it is gone. */
function cpuOf(pid) {
  if (pid === undefined) return 0;
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / HZ;
  } catch {
    return 0;
  }
}

/** GET a path of nydusd's API on its unix socket, as JSON (undefined on any failure). */
function apiGet(socketPath, path) {
  return new Promise((res) => {
    const req = request({ socketPath, path, timeout: 5000 }, (r) => {
      let body = '';
      r.setEncoding('utf8').on('data', (d) => (body += d));
      r.on('end', () => {
        try {
          res(JSON.parse(body));
        } catch {
          res(undefined);
        }
      });
    });
    req.on('error', () => res(undefined));
    req.on('timeout', () => req.destroy());
    req.end();
  });
}

/**
 * The order of `fop_hits` in `/api/v1/metrics` (upstream's): `FOPS` of daemon/metrics.js in the
 * build whose nydusd is measured (the `nydusd.cjs` of `argv`).
 * @param {string[]} argv
 * @returns {Promise<readonly string[]>}
 */
async function fopOrder(argv) {
  const entry = argv.find((a) => a.endsWith('/nydusd.cjs'));
  if (entry === undefined) throw new Error(`no nydusd.cjs in the nydusd command line: ${argv.join(' ')}`);
  const metrics = join(dirname(entry), '..', 'daemon', 'metrics.js');
  return (await import(pathToFileURL(metrics).href)).FOPS;
}

/**
 * Requests per fop nydusd served so far (hits and errors).
 * @param {string} sock
 * @param {readonly string[]} fops the order of the counters (fopOrder)
 */
async function fopCounts(sock, fops) {
  let m;
  for (let attempt = 0; attempt < 3 && m === undefined; attempt++) {
    if (attempt > 0) await sleep(200);
    m = await apiGet(sock, '/api/v1/metrics');
  }
  if (m === undefined || !Array.isArray(m.fop_hits)) return undefined;
  /** @type {Record<string, number>} */
  const out = {};
  fops.forEach((f, i) => (out[f] = (m.fop_hits[i] ?? 0) + (m.fop_errors?.[i] ?? 0)));
  return out;
}

/**
 * @typedef {object} Mount
 * @property {string} mnt
 * @property {import('node:child_process').ChildProcess} [child]
 * @property {string} [sock] nydusd's API socket
 * @property {string} [image] the loop device's backing file (EROFS)
 */

/** Mounts made and not yet undone, for the clean-up on error or signal. @type {Set<Mount>} */
const live = new Set();

function cleanupSync() {
  for (const m of live) {
    if (m.child !== undefined && m.child.exitCode === null) m.child.kill('SIGKILL');
    if (isMounted(m.mnt)) run('umount', ['-l', m.mnt]);
    if (m.image !== undefined) detachLoops(m.image);
  }
  live.clear();
}

/** Detach the loop devices backed by `image`. */
function detachLoops(image) {
  const r = run('losetup', ['-j', image]);
  for (const line of r.out.split('\n')) {
    const dev = line.split(':')[0];
    if (dev?.startsWith('/dev/loop')) run('losetup', ['-d', dev]);
  }
}

/**
 * Mount one tool's image at `mnt` and wait until its root answers.
 * @param {'nydusd' | 'squashfuse' | 'erofs'} tool
 * @param {{ nydusd: { argv: string[] }, erofs: { image: string }, squashfuse: { image: string } }} images
 * @param {string} mnt
 * @param {string} logPath
 * @returns {Promise<Mount>}
 */
async function mount(tool, images, mnt, logPath) {
  if (tool === 'erofs') {
    /** @type {Mount} */
    const m = { mnt, image: images.erofs.image };
    live.add(m);
    const r = run('mount', ['-t', 'erofs', '-o', 'loop,ro', images.erofs.image, mnt], MOUNT_TIMEOUT_MS);
    if (!r.ok) throw new Error(`mount -t erofs failed: ${r.out}`);
    return m;
  }
  /** @type {string[]} */
  let argv;
  /** @type {string | undefined} */
  let sock;
  if (tool === 'nydusd') {
    argv = [...images.nydusd.argv];
    const i = argv.findIndex((a) => a === '--apisock' || a === '-A');
    if (i >= 0) sock = argv[i + 1];
    else {
      sock = join(dirname(logPath), `requests-api-${process.pid}.sock`);
      rmSync(sock, { force: true });
      argv.push('--apisock', sock);
    }
    argv.push('--mountpoint', mnt);
  } else argv = ['squashfuse', '-f', images.squashfuse.image, mnt];
  const fd = openSync(logPath, 'w');
  const child = spawn(argv[0] ?? '', argv.slice(1), { stdio: ['ignore', fd, fd] });
  closeSync(fd);
  /** @type {Mount} */
  const m = { mnt, child, ...(sock !== undefined && { sock }) };
  live.add(m);
  const t0 = Date.now();
  while (!isMounted(mnt)) {
    if (child.exitCode !== null || child.signalCode !== null)
      throw new Error(`${tool} exited before mounting: ${readFileSync(logPath, 'utf8').trim().slice(-300)}`);
    if (Date.now() - t0 > MOUNT_TIMEOUT_MS)
      throw new Error(`${tool} did not mount within ${MOUNT_TIMEOUT_MS} ms`);
    await sleep(20);
  }
  if (!run('stat', ['-c', '%F', mnt], MOUNT_TIMEOUT_MS).ok)
    throw new Error(`${tool}: the mount does not answer`);
  return m;
}

/** @param {Mount} m */
async function unmount(m) {
  const c = m.child;
  if (c !== undefined && c.exitCode === null && c.signalCode === null) {
    const exited = new Promise((r) => c.once('exit', r));
    c.kill('SIGTERM');
    await Promise.race([exited, sleep(EXIT_TIMEOUT_MS)]);
  }
  if (isMounted(m.mnt)) run('umount', [m.mnt]);
  if (isMounted(m.mnt)) run('umount', ['-l', m.mnt]);
  if (c !== undefined && c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  if (m.image !== undefined) detachLoops(m.image);
  live.delete(m);
}

/** @param {number} what 1, 2 or 3 */
function dropCaches(what) {
  spawnSync('sync');
  writeFileSync('/proc/sys/vm/drop_caches', String(what));
}

/**
 * Run the client in `mode` against `mnt`.
 * @returns {{ calls: number, bytes?: number, wall: number, user: number, sys: number, entries?: number }}
 */
function client(mode, mnt, listFile, calls = 0) {
  const r = spawnSync('python3', ['-c', CLIENT, mode, mnt, listFile, String(calls)], {
    encoding: 'utf8',
    timeout: PHASE_TIMEOUT_MS,
    killSignal: 'SIGKILL',
  });
  if (r.status !== 0)
    throw new Error(`client ${mode}: ${r.error?.message ?? ''} ${(r.stderr ?? '').trim().slice(-400)}`);
  return JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}');
}

/** @param {number[]} xs */
function median(xs) {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * @param {{ work: string, images: { nydusd: { argv: string[] }, erofs: { image: string }, squashfuse: { image: string } }, rounds: number, say?: (msg: string) => void }} opts
 */
export async function benchRequests({ work, images, rounds, say = () => {} }) {
  const dir = join(work, 'requests');
  mkdirSync(dir, { recursive: true });
  const mnt = join(dir, 'mnt');
  mkdirSync(mnt, { recursive: true });
  const listFile = join(dir, 'entries.txt');
  rmSync(listFile, { force: true });
  const fops = await fopOrder(images.nydusd.argv);
  const onSignal = (/** @type {NodeJS.Signals} */ sig) => {
    cleanupSync();
    process.kill(process.pid, sig);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  process.once('exit', cleanupSync);
  const tools = /** @type {const} */ (['nydusd', 'squashfuse', 'erofs']);
  /** @type {Record<string, Record<string, { wall: number, calls: number, clientSys: number, daemonCpu: number, requests?: Record<string, number> }[]>>} */
  const runs = {};
  /** @type {Record<string, string>} */
  const failed = {};
  let entries = 0;
  try {
    for (let round = 0; round < rounds; round++) {
      // Each round in its own shuffled order: no tool always runs first or after the same one.
      const order = roundOrder(tools.length, round).map((i) => tools[i]);
      for (const tool of order) {
        if (tool === undefined || failed[tool] !== undefined) continue;
        say(`requests: round ${round + 1}/${rounds}, ${tool}`);
        /** @type {Mount | undefined} */
        let m;
        try {
          m = await mount(tool, images, mnt, join(dir, `${tool}.log`));
          if (!existsSync(listFile)) entries = client('list', mnt, listFile).entries ?? 0;
          const pid = m.child?.pid;
          for (const ph of PHASES) {
            if (ph.drop > 0) dropCaches(ph.drop);
            if (ph.prime) client('prime', mnt, listFile);
            const before = m.sock !== undefined ? await fopCounts(m.sock, fops) : undefined;
            const c0 = cpuOf(pid);
            const r = client(ph.id, mnt, listFile, REPEAT_CALLS);
            const daemonCpu = cpuOf(pid) - c0;
            const after = m.sock !== undefined ? await fopCounts(m.sock, fops) : undefined;
            /** @type {Record<string, number> | undefined} */
            let requests;
            if (before !== undefined && after !== undefined) {
              requests = {};
              for (const f of fops)
                if ((after[f] ?? 0) > (before[f] ?? 0)) requests[f] = (after[f] ?? 0) - (before[f] ?? 0);
            }
            ((runs[tool] ??= {})[ph.id] ??= []).push({
              wall: r.wall,
              calls: r.calls,
              clientSys: r.sys,
              daemonCpu,
              ...(requests !== undefined && { requests }),
            });
          }
        } catch (e) {
          failed[tool] = e instanceof Error ? e.message : String(e);
          say(`requests: ${tool} FAILED: ${failed[tool]}`);
        } finally {
          if (m !== undefined) await unmount(m);
        }
      }
    }
  } finally {
    cleanupSync();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.off('exit', cleanupSync);
  }
  /** @type {Record<string, Record<string, object>>} */
  const summary = {};
  for (const tool of tools) {
    for (const ph of PHASES) {
      const xs = runs[tool]?.[ph.id];
      if (xs === undefined || xs.length === 0) continue;
      const calls = median(xs.map((x) => x.calls));
      // nydusd's own request counts for this phase (the other daemons' kernels send about as
      // many; squashfuse adds OPEN/FLUSH/RELEASE per file and LOOKUPs where nydusd has READDIRPLUS).
      const nreq = median(
        (runs.nydusd?.[ph.id] ?? []).map((x) =>
          x.requests === undefined ? NaN : ph.fops.reduce((a, f) => a + (x.requests?.[f] ?? 0), 0),
        ),
      );
      (summary[tool] ??= {})[ph.id] = {
        calls,
        wallS: median(xs.map((x) => x.wall)),
        usPerOp: (median(xs.map((x) => x.wall)) / calls) * 1e6,
        daemonCpuS: median(xs.map((x) => x.daemonCpu)),
        daemonUsPerOp: tool === 'erofs' ? NaN : (median(xs.map((x) => x.daemonCpu)) / calls) * 1e6,
        clientSysUsPerOp: (median(xs.map((x) => x.clientSys)) / calls) * 1e6,
        nydusdRequests: nreq,
        usPerRequest: nreq > 0 ? (median(xs.map((x) => x.wall)) / nreq) * 1e6 : NaN,
        daemonUsPerRequest:
          nreq > 0 && tool !== 'erofs' ? (median(xs.map((x) => x.daemonCpu)) / nreq) * 1e6 : NaN,
        ...(tool === 'nydusd' && { requests: xs[xs.length - 1]?.requests }),
      };
    }
  }
  return {
    rounds,
    entries,
    smallFileBytes: SMALL_FILE,
    repeatCalls: REPEAT_CALLS,
    phases: PHASES,
    summary,
    runs,
    failed,
  };
}

/** @param {number} x @param {number} [digits] */
const fmt = (x, digits = 1) => (Number.isFinite(x) ? x.toFixed(digits) : '–');

/**
 * The result as markdown, starting at a `###` heading.
 * @param {Awaited<ReturnType<typeof benchRequests>>} result
 */
export function renderRequests(result) {
  const s = result.summary;
  const lines = [
    '### Cost per FUSE request',
    '',
    `Per request type on the rootfs image (${result.entries} entries), median of ${result.rounds} round(s), ` +
      'each tool on a fresh mount, each round in its own shuffled order (seeded by the round, as in B1). One python3 process per phase makes ' +
      "all the calls of the phase and times only its loop (no process start-up per call); the daemon's CPU " +
      'is the user + system time of its process (all threads, /proc/PID/stat) over the phase. "Per op" divides ' +
      'by the calls the client made; "per request" divides by the FUSE requests nydusd counted for the same ' +
      'phase (its metrics API; the kernel sends another daemon about as many, squashfuse also gets ' +
      'OPEN/FLUSH/RELEASE per file and LOOKUPs where nydusd is sent READDIRPLUS; its readdir is plain READDIR, ' +
      "without the attributes nydusd's READDIRPLUS carries for every entry). Kernel EROFS has no daemon: " +
      "its cost is the client's system time.",
    '',
    'Phases: statfs is the FUSE round-trip floor (the kernel never caches it and every daemon answers it ' +
      `without work; ${result.repeatCalls} calls); lookup is an lstat of every entry after dropping dentries ` +
      '(`drop_caches` 2); getattr is statx with AT_STATX_FORCE_SYNC on cached names, which sends GETATTR ' +
      `whatever the attribute timeout (${result.repeatCalls} calls); readdir lists every directory after ` +
      'dropping dentries; the reads read whole files after dropping the page cache only (names stay cached).',
    '',
    '| request | tool | µs per op (wall) | daemon CPU µs per op | client sys µs per op | nydusd requests per op | µs per request | daemon CPU µs per request |',
    '|---|---|---:|---:|---:|---:|---:|---:|',
  ];
  for (const ph of result.phases) {
    for (const tool of ['nydusd', 'squashfuse', 'erofs']) {
      const r = /** @type {any} */ (s[tool]?.[ph.id]);
      if (r === undefined) continue;
      lines.push(
        `| ${ph.label} | ${tool === 'erofs' ? 'kernel EROFS' : tool} | ${fmt(r.usPerOp)} / ${ph.unit} | ${fmt(r.daemonUsPerOp)} | ${fmt(r.clientSysUsPerOp)} | ${fmt(r.nydusdRequests / r.calls, 2)} | ${fmt(r.usPerRequest)} | ${fmt(r.daemonUsPerRequest)} |`,
      );
    }
  }
  const failed = Object.entries(result.failed);
  if (failed.length > 0) {
    lines.push('');
    for (const [tool, why] of failed) lines.push(`- ${tool} failed: ${why}`);
  }
  const n = /** @type {any} */ (s.nydusd);
  if (n !== undefined) {
    lines.push('', 'nydusd requests per phase (last round):', '');
    for (const ph of result.phases) lines.push(`- ${ph.id}: ${JSON.stringify(n[ph.id]?.requests ?? {})}`);
  }
  return `${lines.join('\n')}\n`;
}

/** The CLI: the bench's rootfs images (made here when missing), our build's nydusd. */
async function main() {
  const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
  const work = process.env['NYDUS_BENCH_WORK'] ?? '/var/tmp/nydus-bench';
  const roundsArg = process.argv.indexOf('--rounds');
  const rounds = roundsArg > 0 ? Number(process.argv[roundsArg + 1]) : 3;
  const src = join(work, 'data', 'rootfs');
  const dir = join(work, 'requests', 'images');
  mkdirSync(join(dir, 'blobs'), { recursive: true });
  const say = (/** @type {string} */ m) => process.stderr.write(`${m}\n`);
  const bootstrap = join(dir, 'bootstrap');
  const make = (/** @type {string} */ out, /** @type {string[]} */ argv) => {
    if (existsSync(out)) return;
    say(`making ${out}`);
    const r = spawnSync(argv[0] ?? '', argv.slice(1), {
      stdio: ['ignore', 'ignore', 'inherit'],
      timeout: 1800_000,
    });
    if (r.status !== 0) throw new Error(`${argv.join(' ')} failed`);
  };
  make(bootstrap, [
    process.execPath,
    join(root, 'dist/src/cli/nydus-image.js'),
    'create',
    '--compressor',
    'zstd',
    '--fs-version',
    '6',
    '-B',
    bootstrap,
    '-D',
    join(dir, 'blobs'),
    src,
  ]);
  // The mount bench's peer images of the same data set, when it made them.
  const shared = join(work, 'mount', 'images', 'rootfs');
  const sqfs = existsSync(join(shared, 'squashfs-zstd', 'image.sqfs'))
    ? join(shared, 'squashfs-zstd', 'image.sqfs')
    : join(dir, 'image.sqfs');
  const erofs = existsSync(join(shared, 'erofs-lz4hc', 'image.erofs'))
    ? join(shared, 'erofs-lz4hc', 'image.erofs')
    : join(dir, 'image.erofs');
  make(sqfs, ['mksquashfs', src, sqfs, '-comp', 'zstd', '-noappend', '-quiet']);
  make(erofs, ['mkfs.erofs', '-zlz4hc', erofs, src]);
  const config = join(dir, 'nydusd.json');
  writeFileSync(
    config,
    JSON.stringify({
      device: {
        backend: { type: 'localfs', config: { dir: join(dir, 'blobs') } },
        cache: { type: 'dummycache' },
      },
      mode: 'direct',
      digest_validate: false,
      iostats_files: false,
    }),
  );
  const result = await benchRequests({
    work,
    rounds,
    say,
    images: {
      nydusd: {
        argv: [
          process.execPath,
          join(root, 'dist/src/cli/nydusd.cjs'),
          '--config',
          config,
          '--bootstrap',
          bootstrap,
        ],
      },
      squashfuse: { image: sqfs },
      erofs: { image: erofs },
    },
  });
  writeFileSync(join(work, 'requests', 'results.json'), JSON.stringify(result, null, 2));
  process.stdout.write(renderRequests(result));
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((e) => {
    cleanupSync();
    process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
    process.exit(1);
  });
}
