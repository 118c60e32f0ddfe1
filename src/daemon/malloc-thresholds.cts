/**
 * The daemon's glibc malloc thresholds (daemon/malloc.ts says why), in a CommonJS module of their
 * own: the `nydusd` entry (CommonJS, cli/nydusd.cts) puts them in the environment before the
 * daemon starts, and malloc.ts sets them through mallopt where that did not happen.
 */
const thresholds = {
  /** glibc's mmap threshold: allocations below it come from the heap (default 128 KiB, dynamic). */
  DAEMON_MMAP_THRESHOLD: 32 << 20,
  /** glibc's trim threshold: free memory at the top of the heap kept before it is handed back. */
  DAEMON_TRIM_THRESHOLD: 64 << 20,
};
export = thresholds;
