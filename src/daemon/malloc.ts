import { createRequire } from 'node:module';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { errorText } from '../errors/errors.js';
import type { Logger } from '../log/logger.js';
import thresholds from './malloc-thresholds.cjs';

/**
 * glibc's malloc, tuned for a daemon that streams chunk data, and given back to the system
 * when the daemon goes quiet.
 *
 * Chunk data (1 MiB blob reads and decompressed chunks) lives in buffers from a pool; above
 * glibc's default threshold (128 KiB) each new one would be a fresh mmap whose pages fault in
 * one by one and go back to the kernel at free. Raising the mmap and trim thresholds lets the
 * heap reuse that memory instead. Measured again in session 3 of issue #12 (B3, fresh daemon):
 * with glibc's defaults the daemon used 40-50% more CPU on rootfs-large (4.4-4.9 s against
 * 2.8-3.3 s) for 7-9 MiB less peak RSS, so the raised mmap threshold still pays; a 2 MiB trim
 * threshold (with 2 MiB of recent chunks and pool) gave no lower peak once reads were answered
 * at once, and on big-files cost about half more CPU (0.74 against 0.47 s, four times the page
 * faults). The price is that glibc keeps what it freed: `trimWhenQuiet` hands it back
 * (malloc_trim) once the daemon has been quiet for a while, and `settleAfterMount` does the
 * same, after a full collection, once the start-up garbage is there to collect. Where mallopt
 * cannot be called (not glibc, no koffi), nothing changes.
 */

const M_TRIM_THRESHOLD = -1;
const M_MMAP_THRESHOLD = -3;

interface Libc {
  mallopt(param: number, value: number): number;
  mallocTrim(pad: number): number;
}

const requireHere = createRequire(import.meta.url);
let libcFns: Libc | null | undefined;

function libc(log: Logger): Libc | null {
  if (libcFns !== undefined) return libcFns;
  try {
    const koffi = requireHere('koffi') as typeof import('koffi');
    const lib = koffi.load('libc.so.6');
    const mallopt = lib.func('int mallopt(int, int)') as (p: number, v: number) => number;
    const trim = lib.func('int malloc_trim(size_t)') as (pad: number) => number;
    libcFns = { mallopt, mallocTrim: trim };
  } catch (e) {
    log.debug(`glibc malloc not reachable (${errorText(e)}); its defaults stay`);
    libcFns = null;
  }
  return libcFns;
}

/** Whether koffi is loaded already (then calling libc costs nothing more). */
function koffiLoaded(): boolean {
  try {
    return requireHere.cache[requireHere.resolve('koffi')] !== undefined;
  } catch {
    return false;
  }
}

/**
 * Raise glibc's mmap and trim thresholds to the daemon's (malloc-thresholds.cts, which the
 * nydusd entry puts in the environment instead): for nydusd, and `nydus-image create`, whose
 * chunk and tar buffers (about 1 MiB each) are allocated and freed all through a build: with
 * the thresholds raised the heap reuses them instead of mapping fresh pages each time (tar
 * build of rootfs: about a quarter fewer page faults and 4% less CPU). The converter builds
 * inside nydusify's own process and does not call it.
 */
export function tuneMalloc(log: Logger): void {
  // Started with the thresholds in the environment, which glibc read at start (the nydusd entry
  // does that): nothing to do, and no need to load koffi before the first read.
  // (Thresholds someone else chose that way are theirs to keep.)
  if (
    process.env['MALLOC_MMAP_THRESHOLD_'] !== undefined ||
    process.env['MALLOC_TRIM_THRESHOLD_'] !== undefined
  )
    return;
  const c = libc(log);
  if (c === null) return;
  const ok =
    c.mallopt(M_MMAP_THRESHOLD, thresholds.DAEMON_MMAP_THRESHOLD) === 1 &&
    c.mallopt(M_TRIM_THRESHOLD, thresholds.DAEMON_TRIM_THRESHOLD) === 1;
  if (!ok) log.debug('mallopt refused the thresholds; the defaults stay');
}

/** Give glibc's free memory back to the system (no-op without glibc). */
export function trimMalloc(log: Logger): void {
  libc(log)?.mallocTrim(0);
}

let fullGc: (() => void) | null | undefined;

/** A full V8 collection, without `--expose-gc` on the command line. */
function collect(): void {
  if (fullGc === undefined) {
    try {
      setFlagsFromString('--expose-gc');
      fullGc = runInNewContext('gc') as () => void;
    } catch {
      fullGc = null;
    } finally {
      setFlagsFromString('--no-expose-gc');
    }
  }
  fullGc?.();
}

/**
 * Once the daemon serves its mount: collect the start-up garbage (module loading, the bootstrap
 * parse) and give the freed memory back, so the idle daemon holds only what it uses. V8 would
 * get there by itself some 10 s later (its memory reducer), glibc not at all with the raised
 * trim threshold.
 */
export function settleAfterMount(log: Logger): void {
  collect();
  // Not worth loading koffi for: before the first read there is little for glibc to give back.
  if (koffiLoaded()) trimMalloc(log);
}

/**
 * Check every `everyMs` whether the process was quiet (under 2% of a core since the previous
 * check) after having been busy; if so, give glibc's free memory back once. Returns the stop.
 */
export function trimWhenQuiet(log: Logger, everyMs = 10_000): () => void {
  let last = process.cpuUsage();
  let busySinceTrim = false;
  const timer = setInterval(() => {
    const now = process.cpuUsage(last);
    last = process.cpuUsage();
    const usedMs = (now.user + now.system) / 1000;
    if (usedMs > everyMs * 0.02) {
      busySinceTrim = true;
      return;
    }
    if (busySinceTrim) {
      busySinceTrim = false;
      trimMalloc(log);
    }
  }, everyMs);
  timer.unref();
  return () => clearInterval(timer);
}
