#!/usr/bin/env node
/**
 * The `nydusd` entry, CommonJS on purpose. FUSE requests and blob reads both run on the libuv
 * pool (each outstanding /dev/fuse read holds one pool thread), so the pool must be sized before
 * its first use, and Node's ES module loader uses it while loading an ES entry. A CommonJS entry
 * loads synchronously, so the size set here applies; the daemon itself is ESM.
 *
 * Memory: a daemon is long-lived and one runs per image, so the entry starts Node the way a
 * daemon wants it, by replacing this process (execve: same pid, same fds and stdio) with Node
 * started with `DAEMON_NODE_FLAGS` and `MALLOC_ENV`, which only take effect at start-up.
 * `NYDUSD_NODE_FLAGS=0` in the environment keeps the process as it is (Node's defaults).
 */
// eslint-disable-next-line @typescript-eslint/no-require-imports -- the entry loads synchronously (CommonJS)
import thresholds = require('../daemon/malloc-thresholds.cjs');

/**
 * - `--max-semi-space-size=1`: V8's young generation capped at 1 MiB semi-spaces (default 16).
 *   The daemon's objects are small and short-lived; the default lets it keep ~30 MiB of young
 *   space, for a few percent less time in collections.
 * - `--heap-growing-percent=50`: the old generation may grow by half its live size before the
 *   next full collection (V8 starts small heaps at several times), so garbage of reads does not
 *   pile up to tens of MiB between collections.
 * - `--harmony-rab-gsab-transfer`: ArrayBuffer.prototype.transfer (shipped in later V8s), which
 *   lets the chunk buffer pool free a buffer it lets go at once (storage/buffer-pool.ts).
 * - `--no-turbo-inlining`: TurboFan compiles each hot function by itself, without inlining its
 *   callees. A new daemon's first pass over an image spends a quarter of its CPU compiling (on
 *   V8's worker threads); without inlining that is about a third less, for the same speed once
 *   warm (B3 rootfs, fresh daemon: 1.16 -> 1.07 CPU s; second pass 0.66 either way).
 */
const DAEMON_NODE_FLAGS = [
  '--max-semi-space-size=1',
  '--heap-growing-percent=50',
  '--harmony-rab-gsab-transfer',
  '--no-turbo-inlining',
];
/**
 * glibc's malloc: at most two arenas (default 8 per core), so pool threads share their heaps;
 * and the thresholds daemon/malloc.ts explains (DAEMON_MMAP_THRESHOLD, DAEMON_TRIM_THRESHOLD),
 * read by glibc at start instead of set later through koffi (which the daemon would then load
 * before its first read).
 */
const MALLOC_ENV: Record<string, string> = {
  MALLOC_ARENA_MAX: '2',
  MALLOC_MMAP_THRESHOLD_: String(thresholds.DAEMON_MMAP_THRESHOLD),
  MALLOC_TRIM_THRESHOLD_: String(thresholds.DAEMON_TRIM_THRESHOLD),
};

/**
 * libuv's thread pool. The daemon reads /dev/fuse on the loop itself (fuse/poll.ts, through
 * koffi) and local blobs from the page cache at once (storage/localfs.ts), so the pool only
 * serves file reads that wait for the disk, cache files and the decompression of big chunks:
 * libuv's default of 4 threads. Remote backends read through undici's sockets, not the pool.
 * Without the poller (NYDUS_FUSE_POLL=0, or no koffi) each /dev/fuse reader holds a pool thread
 * while it waits (fuse/session.ts): 16 then.
 */
process.env['UV_THREADPOOL_SIZE'] ??= process.env['NYDUS_FUSE_POLL'] === '0' || !hasKoffi() ? '16' : '4';

function hasKoffi(): boolean {
  try {
    require.resolve('koffi');
    return true;
  } catch {
    return false;
  }
}

function restartTuned(): void {
  if (process.env['NYDUSD_NODE_FLAGS'] === '0') return;
  // Started with the flags already (by this entry, or by a user who chose their own).
  if (process.execArgv.some((a) => a.startsWith('--max-semi-space-size'))) return;
  const script = process.argv[1];
  if (script === undefined) return;
  // Nothing to serve: not worth a second start.
  const args = process.argv.slice(2);
  if (args.some((a) => a === '-V' || a === '--version' || a === '-h' || a === '--help')) return;
  // A Node IPC channel (fork) is an inherited fd this entry would have to carry over too.
  if (process.env['NODE_CHANNEL_FD'] !== undefined) return;
  let execve: (path: string, argv: (string | null)[], envp: (string | null)[]) => number;
  let fcntl: (fd: number, cmd: number, ...rest: unknown[]) => number;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- the entry must load it synchronously
    const koffi = require('koffi') as typeof import('koffi');
    const libc = koffi.load('libc.so.6');
    execve = libc.func('int execve(const char *path, const char **argv, const char **envp)') as typeof execve;
    fcntl = libc.func('int fcntl(int fd, int cmd, ...)') as typeof fcntl;
  } catch {
    return; // no koffi or no glibc: run with Node's defaults
  }
  // Node marks the standard fds close-on-exec at start-up: keep them across the execve.
  const F_SETFD = 2;
  for (const fd of [0, 1, 2]) fcntl(fd, F_SETFD, 'int', 0);
  const env = { ...process.env };
  for (const [k, v] of Object.entries(MALLOC_ENV)) env[k] ??= v;
  const envp: (string | null)[] = Object.entries(env).map(([k, v]) => `${k}=${v ?? ''}`);
  envp.push(null);
  const argv = [process.execPath, ...process.execArgv, ...DAEMON_NODE_FLAGS, script, ...args];
  // Returns only when it failed; then this process goes on as it is.
  execve(process.execPath, [...argv, null], envp);
}

restartTuned();
void import('./nydusd-main.js');
