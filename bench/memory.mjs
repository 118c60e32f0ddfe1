// B6, the daemon's memory: the floor (a bare `node`), nydusd idle after one mount with its
// memory broken down by cause (GET /api/v1/daemon/memory), what each more image mounted in the
// same daemon through the API costs, and a soak: readers walking a mounted rootfs image for
// `soakSeconds`, the daemon's RSS sampled once a second.
//
// Runs inside bench/run.mjs (benchMemory/renderMemory) or alone:
//   node bench/memory.mjs [--quick]
// which builds a rootfs image from /var/tmp/nydus-bench/data/rootfs with this checkout's dist/
// into /var/tmp/nydus-bench/memory and runs with a 10 min soak (60 s with --quick).
// Every daemon and reader is killed and every mount undone at the end, on an error and on
// SIGINT/SIGTERM; every wait is bounded.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { dirname, join, resolve } from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';

const MOUNT_TIMEOUT_MS = 30_000;
const EXIT_TIMEOUT_MS = 20_000;
const API_TIMEOUT_MS = 30_000;
/** Seconds a daemon rests after a mount before its idle memory is read. */
const SETTLE_S = 5;
/** The soak's first minute is warm-up: growth is judged on what follows it. */
const WARMUP_S = 60;
/** Growth of the soak's median RSS (last window against the first after warm-up) that still counts as flat. */
const FLAT_MIB = 4;

const sleep = (/** @type {number} */ ms) => new Promise((r) => setTimeout(r, ms));
const mib = (/** @type {number} */ kib) => Math.round((kib / 1024) * 10) / 10;

/** Processes (by pid, killed as a group) and mounts this module made. */
const live = { pids: new Set(), mounts: new Set() };

function cleanup() {
  for (const pid of live.pids) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  }
  live.pids.clear();
  for (const m of live.mounts) {
    if (isMounted(m)) spawnSync('umount', ['-l', m], { timeout: 10_000 });
    rmSync(m, { recursive: true, force: true });
  }
  live.mounts.clear();
}

/** Whether something is mounted at `dir` (from the mount table: a dead FUSE mount hangs a stat). */
function isMounted(/** @type {string} */ dir) {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[4]?.replace(/\\040/g, ' ') === dir);
}

/**
 * /proc/PID/status figures in KiB (NaN once gone).
 * @param {number} pid
 */
function status(pid) {
  let text = '';
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    // gone
  }
  const f = (/** @type {string} */ k) =>
    Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN);
  return { rss: f('VmRSS'), hwm: f('VmHWM'), anon: f('RssAnon'), file: f('RssFile') };
}

/** CPU seconds of a process so far (utime + stime). */
function cpuSeconds(/** @type {number} */ pid) {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return NaN;
  }
}

/**
 * One request to the daemon's API socket; the JSON answer (undefined when empty).
 * @param {string} sock
 * @param {string} method
 * @param {string} path
 * @param {unknown} [body]
 */
function api(sock, method, path, body) {
  return new Promise((res, rej) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = request(
      {
        socketPath: sock,
        method,
        path,
        headers: data === undefined ? {} : { 'content-type': 'application/json' },
      },
      (r) => {
        let text = '';
        r.setEncoding('utf8');
        r.on('data', (d) => (text += d));
        r.on('end', () => {
          if ((r.statusCode ?? 500) >= 300) rej(new Error(`${method} ${path}: HTTP ${r.statusCode} ${text}`));
          else res(text === '' ? undefined : JSON.parse(text));
        });
      },
    );
    req.setTimeout(API_TIMEOUT_MS, () => req.destroy(new Error(`${method} ${path}: no answer`)));
    req.on('error', rej);
    req.end(data);
  });
}

/** The daemon config the benchmarks use: localfs over the image's blob directory, no cache. */
function configText(/** @type {string} */ blobDir) {
  return JSON.stringify({
    device: { backend: { type: 'localfs', config: { dir: blobDir } }, cache: { type: 'dummycache' } },
    mode: 'direct',
    digest_validate: false,
    iostats_files: false,
  });
}

/**
 * Start a daemon on `mnt` (with `image` at its root, or none), wait for the mount.
 * @param {string[]} nydusd
 * @param {string} dir work directory of this daemon
 * @param {{ bootstrap: string, blobDir: string } | undefined} image
 */
async function startDaemon(nydusd, dir, image) {
  const mnt = join(dir, 'mnt');
  mkdirSync(mnt, { recursive: true });
  live.mounts.add(mnt);
  const sock = join(dir, 'api.sock');
  const args = [...nydusd.slice(1), '--mountpoint', mnt, '--apisock', sock, '--log-level', 'warn'];
  if (image !== undefined) {
    writeFileSync(join(dir, 'nydusd.json'), configText(image.blobDir));
    args.push('--config', join(dir, 'nydusd.json'), '--bootstrap', image.bootstrap);
  }
  const log = join(dir, 'nydusd.log');
  const child = spawn(nydusd[0], args, { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
  const pid = /** @type {number} */ (child.pid);
  live.pids.add(pid);
  let err = '';
  child.stderr.on('data', (d) => (err = (err + d).slice(-4000)));
  let exited = false;
  child.on('exit', () => (exited = true));
  const until = Date.now() + MOUNT_TIMEOUT_MS;
  while (!isMounted(mnt) || !existsSync(sock)) {
    if (exited || Date.now() > until) {
      writeFileSync(log, err);
      throw new Error(`nydusd did not mount ${mnt}: ${err.trim().split('\n').slice(-3).join(' / ')}`);
    }
    await sleep(100);
  }
  return { pid, mnt, sock, child, stop: () => stopDaemon(pid, child, mnt) };
}

/**
 * SIGTERM, wait for the exit (bounded), then make sure nothing is left.
 * @param {number} pid
 * @param {import('node:child_process').ChildProcess} child
 * @param {string} mnt
 */
async function stopDaemon(pid, child, mnt) {
  if (child.exitCode === null && child.signalCode === null) {
    const gone = new Promise((r) => child.once('exit', r));
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      // gone
    }
    await Promise.race([gone, sleep(EXIT_TIMEOUT_MS)]);
  }
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // gone
  }
  live.pids.delete(pid);
  if (isMounted(mnt)) spawnSync('umount', ['-l', mnt], { timeout: 10_000 });
}

/** RSS of a bare `node` process that only waits (the floor every Node daemon starts from). */
async function floor() {
  const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], {
    stdio: 'ignore',
    detached: true,
  });
  const pid = /** @type {number} */ (child.pid);
  live.pids.add(pid);
  try {
    await sleep(2000);
    return status(pid);
  } finally {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // gone
    }
    live.pids.delete(pid);
  }
}

/** Drop the kernel's page cache (the readers then go to the daemon again). */
function dropCaches() {
  try {
    writeFileSync('/proc/sys/vm/drop_caches', '1');
  } catch {
    // not root: the readers mostly hit the page cache after their first pass
  }
}

/**
 * The memory breakdown by cause, in MiB, from the daemon's report and the floor.
 * @param {any} report GET /api/v1/daemon/memory
 * @param {{ rss: number, anon: number, file: number }} fl the floor, KiB
 */
function breakdown(report, fl) {
  const p = report.process;
  const v = report.v8;
  const chunk = report.instances.reduce(
    (/** @type {{ bootstrap: number, recent: number, pool: number }} */ a, /** @type {any} */ i) => ({
      bootstrap: a.bootstrap + i.bootstrap,
      recent: a.recent + i.recent.held,
      pool: a.pool + (i.buffer_pool?.idle ?? 0),
    }),
    { bootstrap: 0, recent: 0, pool: 0 },
  );
  const otherBuffers = Math.max(0, v.array_buffers - chunk.bootstrap - chunk.recent - chunk.pool);
  const round = (/** @type {number} */ x) => Math.round(x * 10) / 10;
  return {
    floor: mib(fl.rss),
    code: round(p.rss_file - mib(fl.file)),
    v8NewSpace: round(v.spaces.new_space?.size ?? 0),
    v8OldAndCode: round(v.heap_total - (v.spaces.new_space?.size ?? 0)),
    bootstrap: round(chunk.bootstrap),
    recentChunks: round(chunk.recent),
    bufferPool: round(chunk.pool),
    otherBuffers: round(otherBuffers),
    mallocAndThreads: round(p.rss_anon - mib(fl.anon) - v.heap_total - v.array_buffers),
    total: p.rss,
  };
}

/**
 * Readers over `dir`: each walks every file in its own random order and reads it, again and
 * again. A process group each, so that killing it ends its pipeline.
 * @param {string} dir
 * @param {number} n
 */
function startReaders(dir, n) {
  const script = 'while :; do find . -type f -print0 | shuf -z | xargs -0 cat > /dev/null 2>&1; done';
  const pids = [];
  for (let i = 0; i < n; i++) {
    const c = spawn('bash', ['-c', script], { cwd: dir, stdio: 'ignore', detached: true });
    live.pids.add(/** @type {number} */ (c.pid));
    pids.push(/** @type {number} */ (c.pid));
  }
  return () => {
    for (const pid of pids) {
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        // gone
      }
      live.pids.delete(pid);
    }
  };
}

/** @param {number[]} xs */
function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * B6: floor, idle, breakdown, per extra image, soak.
 * @param {{ work: string, nydusd: string[], images: { bootstrap: string, blobDir: string, label?: string }[],
 *   soakSeconds: number, readers: number, say?: (s: string) => void }} opts
 */
export async function benchMemory({ work, nydusd, images, soakSeconds, readers, say = () => undefined }) {
  if (images.length === 0) throw new Error('benchMemory needs at least one image');
  const base = join(work, 'memory', 'runs');
  mkdirSync(base, { recursive: true });
  const onSignal = () => {
    cleanup();
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  /** @type {any} */
  const result = {
    images: images.map((i) => ({
      label: i.label ?? i.bootstrap,
      bootstrapBytes: statSync(i.bootstrap).size,
    })),
  };
  try {
    // The floor.
    const fl = await floor();
    result.floor = { rssMiB: mib(fl.rss), anonMiB: mib(fl.anon), fileMiB: mib(fl.file) };
    say(`floor (bare node): ${result.floor.rssMiB} MiB`);

    // Idle after one mount, started as B3 starts it (the image at the root).
    const d = await startDaemon(nydusd, mkdtempSync(join(base, 'idle-')), images[0]);
    try {
      await sleep(SETTLE_S * 1000);
      const st = status(d.pid);
      const report = await api(d.sock, 'GET', '/api/v1/daemon/memory');
      result.idle = { rssMiB: mib(st.rss), hwmMiB: mib(st.hwm), report, breakdown: breakdown(report, fl) };
      say(`idle after one mount: ${result.idle.rssMiB} MiB (peak ${result.idle.hwmMiB})`);
    } finally {
      await d.stop();
    }

    // One daemon, every image mounted through the API in turn (the snapshotter's shared mode).
    const a = await startDaemon(nydusd, mkdtempSync(join(base, 'api-')), undefined);
    try {
      await sleep(SETTLE_S * 1000);
      let before = status(a.pid).rss;
      result.emptyDaemonMiB = mib(before);
      result.perImage = [];
      for (let i = 0; i < images.length; i++) {
        const img = images[i];
        await api(a.sock, 'POST', `/api/v1/mount?mountpoint=${encodeURIComponent(`/img${i}`)}`, {
          source: img.bootstrap,
          fs_type: 'rafs',
          config: configText(img.blobDir),
        });
        await sleep(SETTLE_S * 1000);
        const now = status(a.pid).rss;
        result.perImage.push({
          label: img.label ?? img.bootstrap,
          rssMiB: mib(now),
          deltaMiB: mib(now - before),
          bootstrapMiB: Math.round((statSync(img.bootstrap).size / 1048576) * 10) / 10,
        });
        say(`image ${i + 1} through the API: ${mib(now)} MiB (+${mib(now - before)})`);
        before = now;
      }
      result.allMounted = await api(a.sock, 'GET', '/api/v1/daemon/memory');
    } finally {
      await a.stop();
    }

    // The soak: a fresh daemon with the first image, `readers` readers, RSS once a second.
    const s = await startDaemon(nydusd, mkdtempSync(join(base, 'soak-')), images[0]);
    try {
      await sleep(2000);
      const cpu0 = cpuSeconds(s.pid);
      const stopReaders = startReaders(s.mnt, readers);
      /** @type {number[]} */
      const samples = [];
      const t0 = Date.now();
      try {
        for (let k = 1; k <= soakSeconds; k++) {
          await sleep(Math.max(0, t0 + k * 1000 - Date.now()));
          if (s.child.exitCode !== null || s.child.signalCode !== null)
            throw new Error('nydusd exited during the soak');
          samples.push(mib(status(s.pid).rss));
          if (k % 5 === 0) dropCaches();
          if (k % 60 === 0) say(`soak ${k}/${soakSeconds} s: ${samples.at(-1)} MiB`);
        }
      } finally {
        stopReaders();
      }
      const st = status(s.pid);
      const window = soakSeconds >= 300 ? 60 : 10;
      const rows = [];
      for (let a = 0; a < samples.length; a += window) {
        const w = samples.slice(a, a + window);
        rows.push({
          fromS: a,
          toS: a + w.length,
          min: Math.min(...w),
          median: Math.round(median(w) * 10) / 10,
          max: Math.max(...w),
        });
      }
      const warm = Math.min(WARMUP_S, Math.floor(samples.length / 2));
      const after = rows.filter((r) => r.fromS >= warm);
      const first = after[0];
      const last = after.at(-1);
      const growth =
        first === undefined || last === undefined ? NaN : Math.round((last.median - first.median) * 10) / 10;
      result.soak = {
        seconds: soakSeconds,
        readers,
        windowS: window,
        warmupS: warm,
        samples,
        rows,
        hwmMiB: mib(st.hwm),
        daemonCpuS: Math.round((cpuSeconds(s.pid) - cpu0) * 10) / 10,
        growthMiB: growth,
        flat: Number.isFinite(growth) && growth <= FLAT_MIB,
      };
      say(`soak: peak ${result.soak.hwmMiB} MiB, growth after warm-up ${growth} MiB`);
    } finally {
      await s.stop();
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    cleanup();
  }
  return result;
}

/**
 * The B6 section (markdown).
 * @param {any} r a benchMemory result
 */
export function renderMemory(r) {
  const out = ['### B6: daemon memory', ''];
  const b = r.idle?.breakdown;
  if (r.floor !== undefined && r.idle !== undefined) {
    out.push(
      `Floor (a bare \`node\` waiting): **${r.floor.rssMiB} MiB** RSS. nydusd idle ${SETTLE_S} s after mounting ` +
        `${r.images[0].label}: **${r.idle.rssMiB} MiB** (with its API socket; peak so far ${r.idle.hwmMiB} MiB).`,
      '',
      '| Cause (idle, one image) | MiB |',
      '| --- | ---: |',
      `| Floor: bare node | ${b.floor} |`,
      `| Code above the floor: node binary pages, JS modules, native libraries, pages of the mapped bootstrap read so far (file-backed RSS) | ${b.code} |`,
      `| V8 young generation (semi-spaces) | ${b.v8NewSpace} |`,
      `| V8 old generation and code space | ${b.v8OldAndCode} |`,
      `| Bootstrap (kept in memory; 0 when the daemon maps it, NYDUS_MMAP) | ${b.bootstrap} |`,
      `| Recent decompressed chunks | ${b.recentChunks} |`,
      `| Chunk buffer pool, free slots | ${b.bufferPool} |`,
      `| Other buffers (FUSE request buffers, ...) | ${b.otherBuffers} |`,
      `| The rest: malloc heap, thread stacks, V8 outside its heap (less pages of the rows above that are committed but never touched) | ${b.mallocAndThreads} |`,
      `| **Total RSS** | **${b.total}** |`,
      '',
      `Runtime: node flags \`${(r.idle.report.runtime.node_flags ?? []).join(' ') || '(none)'}\`, ` +
        `libuv pool ${r.idle.report.runtime.uv_threadpool_size}, MALLOC_ARENA_MAX ${r.idle.report.runtime.malloc_arena_max ?? 'unset'}.`,
      '',
    );
  }
  if (r.perImage !== undefined && r.perImage.length > 0) {
    const extra = r.perImage.slice(1).map((/** @type {any} */ p) => p.deltaMiB);
    out.push(
      `Images mounted one after the other in one daemon through the API (\`POST /api/v1/mount\`, the ` +
        `snapshotter's shared mode), RSS ${SETTLE_S} s after each; the daemon with no image: ${r.emptyDaemonMiB} MiB.`,
      '',
      '| Image | Bootstrap MiB | RSS MiB | More than before MiB |',
      '| --- | ---: | ---: | ---: |',
      ...r.perImage.map(
        (/** @type {any} */ p) => `| ${p.label} | ${p.bootstrapMiB} | ${p.rssMiB} | ${p.deltaMiB} |`,
      ),
      '',
      extra.length > 0
        ? `Each image after the first: at most ${Math.max(...extra)} MiB more.`
        : 'Only one image: nothing to say per extra image.',
      '',
    );
  }
  const s = r.soak;
  if (s !== undefined) {
    out.push(
      `Soak: ${s.readers} readers reading every file of ${r.images[0].label} in random order, again and again, for ` +
        `${s.seconds} s (page cache dropped every 5 s, so reads keep reaching the daemon); RSS once a second, ` +
        `by ${s.windowS} s window. Peak ${s.hwmMiB} MiB, daemon CPU ${s.daemonCpuS} s.`,
      '',
      '| Window (s) | Min MiB | Median MiB | Max MiB |',
      '| --- | ---: | ---: | ---: |',
      ...s.rows.map((/** @type {any} */ w) => `| ${w.fromS}-${w.toS} | ${w.min} | ${w.median} | ${w.max} |`),
      '',
      `After the ${s.warmupS} s warm-up the median moved ${s.growthMiB} MiB from the first window to the last: ` +
        (s.flat ? `**no growth** (within ${FLAT_MIB} MiB).` : `**it grew** (more than ${FLAT_MIB} MiB).`),
      '',
    );
  }
  return out.join('\n');
}

// Alone: build a rootfs image with this checkout's build and run everything.
if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const quick = process.argv.includes('--quick');
  const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
  const bench = '/var/tmp/nydus-bench';
  const data = join(bench, 'data', 'rootfs');
  const work = join(bench, 'memory');
  const dir = join(work, 'image-rootfs');
  const say = (/** @type {string} */ s) => process.stderr.write(`[memory] ${s}\n`);
  if (!existsSync(join(dir, 'bootstrap'))) {
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(join(dir, 'blobs'), { recursive: true });
    say(`building ${dir} from ${data}`);
    const b = spawnSync(
      process.execPath,
      [
        join(root, 'dist/src/cli/nydus-image.js'),
        'create',
        '--compressor',
        'zstd',
        '--fs-version',
        '6',
        '-B',
        join(dir, 'bootstrap'),
        '-D',
        join(dir, 'blobs'),
        data,
      ],
      { stdio: ['ignore', 'ignore', 'inherit'], timeout: 600_000 },
    );
    if (b.status !== 0) {
      rmSync(dir, { recursive: true, force: true });
      throw new Error('nydus-image create failed');
    }
  }
  // The same image three times: three instances, each with its own memory.
  const image = { bootstrap: join(dir, 'bootstrap'), blobDir: join(dir, 'blobs') };
  const r = await benchMemory({
    work,
    nydusd: [process.execPath, join(root, 'dist/src/cli/nydusd.cjs')],
    images: [1, 2, 3].map((i) => ({ ...image, label: `rootfs (instance ${i})` })),
    soakSeconds: quick ? 60 : 600,
    readers: 16,
    say,
  });
  writeFileSync(join(work, 'results-memory.json'), JSON.stringify(r, null, 1));
  process.stdout.write(`${renderMemory(r)}\n`);
}
