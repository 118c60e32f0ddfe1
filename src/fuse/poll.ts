import { constants } from 'node:fs';
import { createRequire } from 'node:module';

/**
 * Reading /dev/fuse on the main thread when it is readable, instead of a read kept waiting on a
 * libuv pool thread. A pool read costs a thread hop per request (the pool thread wakes, hands
 * the request to the loop, the loop wakes, then submits the next read to another thread): on a
 * small machine that hop costs more than serving a metadata request. Here the loop's own epoll
 * watches the connection's fd, made non-blocking, through libuv's uv_poll called with koffi,
 * and the request is read with one non-blocking read(2).
 *
 * The fd itself is watched, not a clone (FUSE_DEV_IOC_CLONE): a clone has its own processing
 * queue, which the kernel ends (ECONNABORTED) when the clone closes, so a request read by a
 * daemon that dies would fail instead of waiting in the kernel for a successor to have it
 * resent (failover). O_NONBLOCK is set on the open file, which a successor shares: `stop`
 * clears it again, and the pool readers wait a little on EAGAIN instead of spinning.
 *
 * Unavailable (undefined) when koffi, or libuv's symbols in this process, cannot be loaded;
 * the session then keeps its pool readers. NYDUS_FUSE_POLL=0 turns it off.
 */

const F_GETFL = 3;
const F_SETFL = 4;
/** uv_handle_type UV_POLL and uv_poll_event UV_READABLE. */
const UV_POLL = 8;
const UV_READABLE = 1;

export interface FusePoller {
  /** The watched fd (the connection's). */
  readonly fd: number;
  /**
   * One non-blocking read(2) of the fd into `buf`: the bytes read, or minus the errno (-EAGAIN
   * when no request waits). Cheaper than fs.readSync, which throws (an Error built) on EAGAIN.
   */
  read(buf: Buffer): number;
  /** One write(2) of `buf` to the fd (a whole reply): the bytes written, or minus the errno. */
  write(buf: Buffer): number;
  /** Stop watching and make the fd blocking again; idempotent. */
  stop(): void;
  /** Stop watching and release the watcher (the fd stays open); idempotent. */
  close(): void;
}

interface UvApi {
  loop: unknown;
  handleSize: number;
  alloc: (n: number) => unknown;
  init: (loop: unknown, handle: unknown, fd: number) => number;
  start: (handle: unknown, events: number, cb: unknown) => number;
  stop: (handle: unknown) => number;
  close: (handle: unknown, cb: null) => void;
  fcntl: (fd: number, cmd: number, arg: number) => number;
  read: (fd: number, buf: Buffer, n: number) => number | bigint;
  write: (fd: number, buf: Buffer, n: number) => number | bigint;
  errno: () => number;
  register: (fn: (h: unknown, status: number, events: number) => void) => unknown;
  unregister: (cb: unknown) => void;
}

let api: UvApi | null | undefined;

function loadApi(): UvApi | null {
  if (api !== undefined) return api;
  api = null;
  try {
    const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
    // null: the symbols of this process (node exports libuv's).
    const self = koffi.load(null);
    const libc = koffi.load('libc.so.6');
    const cbType = koffi.pointer(koffi.proto('void nydus_uv_poll_cb(void *handle, int status, int events)'));
    const loop = (self.func('void *uv_default_loop()') as () => unknown)();
    const handleSize = Number(
      (self.func('size_t uv_handle_size(int)') as (t: number) => number | bigint)(UV_POLL),
    );
    if (loop === null || !(handleSize > 0)) return null;
    api = {
      loop,
      handleSize,
      alloc: (n): unknown => koffi.alloc('uint8_t', n) as unknown,
      init: self.func('int uv_poll_init(void *loop, void *handle, int fd)') as UvApi['init'],
      start: self.func('int uv_poll_start(void *handle, int events, nydus_uv_poll_cb *cb)') as UvApi['start'],
      stop: self.func('int uv_poll_stop(void *handle)') as UvApi['stop'],
      close: self.func('void uv_close(void *handle, void *cb)') as UvApi['close'],
      fcntl: libc.func('int fcntl(int fd, int cmd, int arg)') as UvApi['fcntl'],
      read: libc.func('intptr_t read(int fd, void *buf, size_t count)') as UvApi['read'],
      write: libc.func('intptr_t write(int fd, const void *buf, size_t count)') as UvApi['write'],
      errno: (): number => koffi.errno(),
      register: (fn) => koffi.register(fn, cbType),
      unregister: (cb) => koffi.unregister(cb as never),
    };
  } catch {
    api = null;
  }
  return api;
}

/** Make `fd` blocking (the pool readers' way) when it was left non-blocking; false if unable. */
export function makeBlocking(fd: number): boolean {
  const uv = loadApi();
  if (uv === null) return false;
  const fl = uv.fcntl(fd, F_GETFL, 0);
  return fl >= 0 && uv.fcntl(fd, F_SETFL, fl & ~constants.O_NONBLOCK) === 0;
}

/**
 * Watch the connection `fd` with the loop: `onReadable` runs on the main thread whenever a
 * request (or the end of the connection) waits; reads of `fd` then never block. Undefined when
 * this cannot be done.
 */
export function pollFuse(fd: number, onReadable: () => void): FusePoller | undefined {
  if (process.env['NYDUS_FUSE_POLL'] === '0') return undefined;
  const uv = loadApi();
  if (uv === null) return undefined;
  const fl = uv.fcntl(fd, F_GETFL, 0);
  if (fl < 0 || uv.fcntl(fd, F_SETFL, fl | constants.O_NONBLOCK) !== 0) return undefined;
  const handle = uv.alloc(uv.handleSize);
  let cb: unknown;
  try {
    if (uv.init(uv.loop, handle, fd) !== 0) throw new Error('uv_poll_init failed');
    // Any wake-up goes to the reader: an error status or a hang-up makes its read fail.
    cb = uv.register(() => onReadable());
    if (uv.start(handle, UV_READABLE, cb) !== 0) {
      uv.close(handle, null);
      throw new Error('uv_poll_start failed');
    }
  } catch {
    if (cb !== undefined) uv.unregister(cb);
    uv.fcntl(fd, F_SETFL, fl & ~constants.O_NONBLOCK);
    return undefined;
  }
  let watching = true;
  let open = true;
  return {
    fd,
    read(buf: Buffer): number {
      const n = Number(uv.read(fd, buf, buf.length));
      return n >= 0 ? n : -uv.errno();
    },
    write(buf: Buffer): number {
      const n = Number(uv.write(fd, buf, buf.length));
      return n >= 0 ? n : -uv.errno();
    },
    stop(): void {
      if (!watching) return;
      watching = false;
      uv.stop(handle);
      // Best effort: the fd may be closed already (the connection ended).
      const now = uv.fcntl(fd, F_GETFL, 0);
      if (now >= 0) uv.fcntl(fd, F_SETFL, now & ~constants.O_NONBLOCK);
    },
    close(): void {
      if (!open) return;
      open = false;
      this.stop();
      // libuv frees a closed handle at the next loop turn: the memory (koffi's) and the
      // callback stay referenced until then.
      uv.close(handle, null);
      setImmediate(() => {
        uv.unregister(cb);
        void handle;
      });
    },
  };
}
