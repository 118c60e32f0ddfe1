// Running one command for the benchmark: cold page cache, wall time, CPU time and peak RSS.
import { spawnSync } from 'node:child_process';
import {
  closeSync,
  existsSync,
  lstatSync,
  openSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
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
 * @property {number} [processWall] for a tool that times itself (run.mjs, Tool.selfTimed): the
 *   process's own `wall`, which `wall` then replaces with the tool's figure
 * @property {number} [processCpu] the same for `cpu`
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
 * What the whole run may spend waiting for a quiet machine and repeating disturbed runs, in
 * seconds (unbounded until `setBudgets` sets them), and what it spent.
 */
export const budgets = { quietLeft: Infinity, repeatLeft: Infinity, waited: 0, repeated: 0, skipped: 0 };

/**
 * Bounds the total time of the waits for a quiet machine and of the repeated runs.
 * @param {{ quiet: number, repeat: number }} b seconds
 */
export function setBudgets(b) {
  budgets.quietLeft = b.quiet;
  budgets.repeatLeft = b.repeat;
}

/**
 * Waits until the machine is quiet (under `cores` of CPU busy over half a second), at most
 * `maxSeconds` and at most what is left of the run's budget for these waits (once it is spent,
 * no wait: not even the half-second check). Returns the seconds waited.
 * @param {number} maxSeconds
 * @param {number} [cores]
 */
export function waitQuiet(maxSeconds, cores = 0.1) {
  const limit = Math.min(maxSeconds, budgets.quietLeft);
  if (limit <= 0) return 0;
  const t0 = performance.now();
  while (busyCores() > cores && (performance.now() - t0) / 1000 < limit) sleep(1);
  const waited = (performance.now() - t0) / 1000;
  budgets.quietLeft -= waited;
  budgets.waited += waited;
  return waited;
}

/**
 * Whether a disturbed run of `seconds` may be repeated within what is left of the run's budget
 * for repeats (which it then takes).
 * @param {number} seconds
 */
export function mayRepeat(seconds) {
  if (seconds > budgets.repeatLeft) {
    budgets.skipped++;
    return false;
  }
  budgets.repeatLeft -= seconds;
  budgets.repeated += seconds;
  return true;
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
 * Runs `argv` under GNU time with an empty `outDir`, its output going to `logPath`. The output
 * bytes are those under `countDir` (default `outDir`); with `clean`, `outDir` is removed once
 * they are counted (before anything flushes them to the disk: the next run's sync is shorter).
 * @param {string[]} argv
 * @param {{ outDir: string, logPath: string, dropCache: boolean, countDir?: string, clean?: boolean }} o
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
  const countDir = o.countDir ?? o.outDir;
  const outputBytes = existsSync(countDir) ? bytesUnder(countDir) : 0;
  if (o.clean === true) rmSync(o.outDir, { recursive: true, force: true });
  return {
    wall,
    timeWall: e ?? NaN,
    rssKiB: m ?? NaN,
    cpu,
    otherCpu: Math.max(0, busy - cpu),
    outputBytes,
    status: r.error !== undefined ? -1 : r.status,
    log: r.error !== undefined ? `${log}\n${r.error.message}` : log,
    dropped,
  };
}

/**
 * The order of the tools in round `round`: a shuffle seeded by the round (the same in every run
 * of the bench), so a tool follows different tools from round to round (B1, B2/B3/B6 and the
 * request costs all run their rounds in it). A run can leave the machine in a state that
 * changes the next one (a tar stream build was 0.3 s slower right after the build from the tar
 * file than after the tar floor); rotating one order would not help, since every tool then
 * follows the same one in every round but one.
 * @param {number} n
 * @param {number} round
 * @returns {number[]}
 */
export function roundOrder(n, round) {
  const order = Array.from({ length: n }, (_, i) => i);
  let seed = Math.imul(round + 1, 0x9e3779b1) >>> 0;
  for (let i = n - 1; i > 0; i--) {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    const j = (seed >>> 8) % (i + 1);
    const t = order[i] ?? i;
    order[i] = order[j] ?? j;
    order[j] = t;
  }
  return order;
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

/** PF_KTHREAD in /proc/PID/stat's flags: kernel threads are not "other work". */
const PF_KTHREAD = 0x00200000;

/**
 * Fields of /proc/PID/stat after the command name (field 3 onwards), or undefined when the
 * process is gone.
 * @param {number | string} pid
 * @returns {string[] | undefined}
 */
function statFields(pid) {
  let text;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  return text.slice(text.lastIndexOf(')') + 2).split(' ');
}

/**
 * CPU seconds (user + system, all threads) a living process has used, NaN when it is gone.
 * @param {number} pid
 */
export function processCpuSeconds(pid) {
  const f = statFields(pid);
  if (f === undefined) return NaN;
  // utime and stime are fields 14 and 15 (index 11 and 12 from field 3).
  return (Number(f[11]) + Number(f[12])) / HZ;
}

/**
 * CPU ticks of every user-space process (own time plus that of its reaped children), by pid and
 * start time, leaving out the pids in `exclude` (this process, the daemon being measured).
 * @param {ReadonlySet<number>} exclude
 * @returns {Map<string, number>}
 */
export function userCpuSnapshot(exclude) {
  /** @type {Map<string, number>} */
  const snap = new Map();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || exclude.has(Number(name))) continue;
    const f = statFields(name);
    if (f === undefined) continue;
    if ((Number(f[6]) & PF_KTHREAD) !== 0) continue;
    // utime, stime, cutime, cstime (fields 14-17); starttime (field 22) tells a reused pid.
    const ticks = Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
    snap.set(`${name}:${f[19]}`, ticks);
  }
  return snap;
}

/**
 * CPU seconds other user-space processes used between two snapshots: the growth of those seen
 * twice, all of those that started in between (processes that started and ended in between are
 * counted in their parent's children time once it reaped them).
 * @param {Map<string, number>} before
 * @param {Map<string, number>} after
 */
export function userCpuBetween(before, after) {
  let ticks = 0;
  for (const [key, t] of after) ticks += Math.max(0, t - (before.get(key) ?? 0));
  return ticks / HZ;
}

/**
 * Memory figures of a living process from /proc/PID/status, in KiB (NaN when gone): peak
 * resident set (VmHWM) and the current one (VmRSS).
 * @param {number} pid
 */
export function processMemory(pid) {
  let text = '';
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return { hwmKiB: NaN, rssKiB: NaN };
  }
  const field = (/** @type {string} */ k) =>
    Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN);
  return { hwmKiB: field('VmHWM'), rssKiB: field('VmRSS') };
}

/**
 * A process and its living descendants (from the ppid field of /proc/PID/stat).
 * @param {number} pid
 * @returns {number[]}
 */
export function processTree(pid) {
  /** @type {Map<number, number[]>} */
  const children = new Map();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const f = statFields(name);
    if (f === undefined) continue;
    const ppid = Number(f[1]);
    children.set(ppid, [...(children.get(ppid) ?? []), Number(name)]);
  }
  const out = [];
  const todo = [pid];
  while (todo.length > 0) {
    const p = /** @type {number} */ (todo.pop());
    out.push(p);
    todo.push(...(children.get(p) ?? []));
  }
  return out;
}

/**
 * @typedef {object} ShellResult
 * @property {number} wall seconds, measured here around the command (monotonic clock)
 * @property {number} cpu user + system seconds of the command and its children (GNU time)
 * @property {number} daemonCpu CPU seconds the daemon serving the mount used meanwhile (0 without one)
 * @property {number} otherCpu CPU seconds other user-space processes used meanwhile
 * @property {number} kernelCpu the rest of the machine's busy time meanwhile: kernel threads
 *   (loop device, decompression workers, writeback), interrupts
 * @property {string} stdout what the command printed (trimmed)
 * @property {number | null} status exit code (-1 when it could not run or was killed)
 * @property {boolean} dropped whether the caches were dropped before it
 * @property {string} log its stderr, and why it failed
 */

/**
 * Runs a bash script under GNU time, after dropping the caches, bounded by `timeoutSeconds`
 * (coreutils timeout kills the script's whole process group), and accounts for the CPU time of
 * the daemon `daemonPid` and of the rest of the machine while it ran.
 * @param {string} script run with `bash -o pipefail -c script args...`
 * @param {string[]} args
 * @param {{ logPath: string, timeoutSeconds: number, daemonPid?: number, cwd?: string }} o
 * @returns {ShellResult}
 */
export function timedShell(script, args, o) {
  const dropped = dropCaches();
  const timeFile = `${o.logPath}.time`;
  rmSync(timeFile, { force: true });
  const errFd = openSync(o.logPath, 'w');
  const exclude = new Set([process.pid, ...(o.daemonPid !== undefined ? [o.daemonPid] : [])]);
  const users0 = userCpuSnapshot(exclude);
  const daemon0 = o.daemonPid !== undefined ? processCpuSeconds(o.daemonPid) : 0;
  const busy0 = machineBusySeconds();
  const t0 = process.hrtime.bigint();
  const r = spawnSync(
    GNU_TIME,
    [
      '-o',
      timeFile,
      '-f',
      '%e %M %U %S',
      'timeout',
      '-s',
      'KILL',
      String(o.timeoutSeconds),
      'bash',
      '-o',
      'pipefail',
      '-c',
      script,
      ...args,
    ],
    {
      stdio: ['ignore', 'pipe', errFd],
      encoding: 'utf8',
      // A backstop only: timeout(1) ends the script first.
      timeout: (o.timeoutSeconds + 30) * 1000,
      killSignal: 'SIGKILL',
      ...(o.cwd !== undefined && { cwd: o.cwd }),
    },
  );
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const busy = machineBusySeconds() - busy0;
  const daemonCpu = o.daemonPid !== undefined ? processCpuSeconds(o.daemonPid) - daemon0 : 0;
  const otherCpu = userCpuBetween(users0, userCpuSnapshot(exclude));
  closeSync(errFd);
  let log = readFileSync(o.logPath, 'utf8');
  let cpu = NaN;
  try {
    const line = readFileSync(timeFile, 'utf8').trim().split('\n').at(-1) ?? '';
    const [, , u, s] = line.split(/\s+/).map(Number);
    cpu = (u ?? NaN) + (s ?? NaN);
  } catch {
    log += '\n(no GNU time output)';
  }
  let status = r.status;
  if (r.error !== undefined) {
    status = -1;
    log += `\n${r.error.message}`;
  } else if (status === 137) {
    log += `\nkilled after ${o.timeoutSeconds} s`;
  }
  return {
    wall,
    cpu,
    daemonCpu: Number.isFinite(daemonCpu) ? daemonCpu : NaN,
    otherCpu,
    kernelCpu: Math.max(0, busy - cpu - (Number.isFinite(daemonCpu) ? daemonCpu : 0) - otherCpu),
    stdout: (r.stdout ?? '').trim(),
    status,
    dropped,
    log,
  };
}
