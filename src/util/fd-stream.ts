import { read } from 'node:fs';
import { createRequire } from 'node:module';

/**
 * Reading a pipe (or any descriptor read from its current position) as a stream of buffers,
 * for a tar coming in on stdin or through a FIFO.
 *
 * Node's `fs.createReadStream` allocates a buffer of its high-water mark for every read and, when
 * the read returns less (a pipe returns at most what it holds: 64 KiB by default), copies what
 * came into a new buffer of that size: for a 600 MB tar on a pipe, 9,000 reads, 9,000 fresh
 * MiBs and as many copies. Here reads go into the free part of a 1 MiB slab, and what they return
 * is handed on as a view of it (no copy); a new slab is taken when less than 64 KiB is left. The
 * pipe itself is grown to 1 MiB when the kernel allows it (fcntl F_SETPIPE_SZ), so one read can
 * take up to that much.
 */

const SLAB = 1024 * 1024;
const MIN_READ = 64 * 1024;
const F_SETPIPE_SZ = 1031;

let fcntlFn: ((fd: number, cmd: number, arg: number) => number) | null | undefined;

/** Ask for a pipe buffer of `bytes`; a refusal (an older kernel, a limit, no koffi) is ignored. */
export function growPipe(fd: number, bytes = SLAB): boolean {
  if (fcntlFn === undefined) {
    fcntlFn = null;
    if (process.platform === 'linux') {
      try {
        const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
        fcntlFn = koffi.load('libc.so.6').func('int fcntl(int fd, int cmd, int arg)') as (
          fd: number,
          cmd: number,
          arg: number,
        ) => number;
      } catch {
        fcntlFn = null;
      }
    }
  }
  return fcntlFn !== null && fcntlFn(fd, F_SETPIPE_SZ, bytes) >= 0;
}

/**
 * One read(2) of `fd` into `buf` from `at` to its end, on the thread pool: at `pos` of the file,
 * or (null) at the descriptor's current position. The bytes read (0 at the end).
 */
export function readFd(fd: number, buf: Buffer, at: number, pos: number | null): Promise<number> {
  return new Promise((resolve, reject) =>
    read(fd, buf, at, buf.length - at, pos, (e, n) => (e === null ? resolve(n) : reject(e))),
  );
}

/**
 * The bytes of `fd` from its current position to its end, as views of 1 MiB slabs (see above).
 * The views are never written again once handed on. The descriptor is not closed here.
 */
export async function* fdChunks(fd: number): AsyncGenerator<Buffer> {
  let slab = Buffer.allocUnsafeSlow(SLAB);
  let used = 0;
  for (;;) {
    if (SLAB - used < MIN_READ) {
      slab = Buffer.allocUnsafeSlow(SLAB);
      used = 0;
    }
    const n = await readFd(fd, slab, used, null);
    if (n === 0) return;
    yield slab.subarray(used, used + n);
    used += n;
  }
}
