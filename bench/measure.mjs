// Running one command for the benchmark: cold page cache, wall time, CPU time and peak RSS.
import { spawnSync } from 'node:child_process';
import { closeSync, lstatSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const GNU_TIME = '/usr/bin/time';

/**
 * @typedef {object} RunResult
 * @property {number} wall seconds, measured here around the process (monotonic clock)
 * @property {number} cpu user + system seconds (GNU time %U + %S)
 * @property {number} rssKiB peak resident set size (GNU time %M)
 * @property {number} timeWall GNU time's own %e, kept as a cross-check
 * @property {number} otherCpu CPU seconds the rest of the machine used while the command ran
 *   (other processes, kernel threads such as writeback): a sign of a disturbed measurement
 * @property {number} outputBytes bytes of every file the command left in its output directory
 * @property {number | null} status exit code
 * @property {string} log the command's stdout and stderr
 */

/** Clock ticks per second of /proc/stat (USER_HZ). */
const HZ = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout) || 100;

/** CPU seconds the whole machine has been busy (all but idle and iowait), from /proc/stat. */
export function machineBusySeconds() {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
  const f = line.trim().split(/\s+/).slice(1, 9).map(Number);
  const total = f.reduce((a, x) => a + x, 0);
  return (total - (f[3] ?? 0) - (f[4] ?? 0)) / HZ;
}

/** @param {number} seconds */
function sleep(seconds) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, seconds * 1000);
}

/** Share of one core the machine used over the last `seconds`. */
function busyCores(seconds = 0.5) {
  const b0 = machineBusySeconds();
  sleep(seconds);
  return (machineBusySeconds() - b0) / seconds;
}

/**
 * Waits until the machine is quiet (under `cores` of CPU busy over half a second), at most
 * `maxSeconds`. Returns the seconds waited.
 * @param {number} maxSeconds
 * @param {number} [cores]
 */
export function waitQuiet(maxSeconds, cores = 0.1) {
  const t0 = performance.now();
  while (busyCores() > cores && (performance.now() - t0) / 1000 < maxSeconds) sleep(1);
  return (performance.now() - t0) / 1000;
}

/**
 * Whether other work on the machine took a noticeable share of the CPU while a command ran.
 * @param {{ otherCpu: number, wall: number }} r
 */
export function disturbed(r) {
  return r.otherCpu > Math.max(0.3, 0.2 * r.wall);
}

/**
 * `sync`, then drop the page cache, dentries and inodes. Returns false when not permitted.
 * @returns {boolean}
 */
export function dropCaches() {
  spawnSync('sync');
  try {
    writeFileSync('/proc/sys/vm/drop_caches', '3');
    return true;
  } catch {
    return false;
  }
}

/**
 * Bytes of the regular files under `dir`.
 * @param {string} dir
 * @returns {number}
 */
export function bytesUnder(dir) {
  let n = 0;
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    const st = lstatSync(p);
    if (st.isDirectory()) n += bytesUnder(p);
    else if (st.isFile()) n += st.size;
  }
  return n;
}

/**
 * Runs `argv` under GNU time with an empty `outDir`, its output going to `logPath`.
 * @param {string[]} argv
 * @param {{ outDir: string, logPath: string, dropCache: boolean }} o
 * @returns {RunResult & { dropped: boolean }}
 */
export function timedRun(argv, o) {
  rmSync(o.outDir, { recursive: true, force: true });
  spawnSync('mkdir', ['-p', o.outDir]);
  const dropped = o.dropCache ? dropCaches() : false;
  const timeFile = `${o.logPath}.time`;
  const fd = openSync(o.logPath, 'w');
  const busy0 = machineBusySeconds();
  const t0 = process.hrtime.bigint();
  const r = spawnSync(GNU_TIME, ['-o', timeFile, '-f', '%e %M %U %S', ...argv], {
    stdio: ['ignore', fd, fd],
  });
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const busy = machineBusySeconds() - busy0;
  closeSync(fd);
  const log = readFileSync(o.logPath, 'utf8');
  // GNU time writes "Command exited with non-zero status N" before the numbers on failure.
  const line = readFileSync(timeFile, 'utf8').trim().split('\n').at(-1) ?? '';
  const [e, m, u, s] = line.split(/\s+/).map(Number);
  const cpu = (u ?? NaN) + (s ?? NaN);
  return {
    wall,
    timeWall: e ?? NaN,
    rssKiB: m ?? NaN,
    cpu,
    otherCpu: Math.max(0, busy - cpu),
    outputBytes: bytesUnder(o.outDir),
    status: r.error !== undefined ? -1 : r.status,
    log: r.error !== undefined ? `${log}\n${r.error.message}` : log,
    dropped,
  };
}

/**
 * @param {number[]} xs
 * @returns {number}
 */
export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  if (s.length === 0) return NaN;
  return s.length % 2 === 1 ? (s[m] ?? NaN) : ((s[m - 1] ?? NaN) + (s[m] ?? NaN)) / 2;
}

/**
 * A command's first line of output (or all of it with `all`), '' when it cannot run.
 * @param {string} cmd
 * @param {string[]} args
 * @param {boolean} [all]
 */
export function outputOf(cmd, args, all = false) {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.error !== undefined) return '';
  const text = `${r.stdout ?? ''}${r.stderr ?? ''}`.trim();
  return all ? text : (text.split('\n')[0] ?? '');
}
