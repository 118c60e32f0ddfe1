import { lstatSync, unlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import { arch, constants as osConstants, endianness, platform } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { NydusError } from '../errors/errors.js';

/**
 * Unix stream sockets that carry file descriptors (SCM_RIGHTS), which Node cannot do by itself:
 * libc's socket, bind, listen, accept4, connect, sendmsg, recvmsg, poll and close through koffi.
 * Every socket is non-blocking; waiting for a peer is a poll(2) with a zero timeout repeated on
 * timers, so no call ever blocks the event loop or holds a libuv pool thread, and every wait
 * ends at its deadline with an ERR_TIMEOUT.
 *
 * This is what nydusd's failover uses to hand the /dev/fuse fd and its state to a supervisor and
 * back (docs/architecture.md, "Failover").
 */

// Linux values (the same on x86_64 and aarch64).
const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;
const MSG_CTRUNC = 0x8;
const MSG_NOSIGNAL = 0x4000;
const MSG_CMSG_CLOEXEC = 0x40000000;
const POLLIN = 0x1;
const POLLOUT = 0x4;
const POLLERR = 0x8;
const POLLHUP = 0x10;
const POLLNVAL = 0x20;
const EINTR = osConstants.errno.EINTR;
const EAGAIN = osConstants.errno.EAGAIN;

/** sizeof(sockaddr_un.sun_path). */
const SUN_PATH_MAX = 108;
/** LP64 layouts: struct msghdr, struct iovec, struct cmsghdr header. */
const MSGHDR_SIZE = 56;
const IOVEC_SIZE = 16;
const CMSG_HDR = 16;
/** Most fds one message may carry (SCM_MAX_FD is 253; upstream's supervisor takes 64). */
export const MAX_FDS = 64;
const CONTROL_SIZE = CMSG_HDR + align8(4 * MAX_FDS);
/** Bytes one recvmsg asks for. */
const RECV_CHUNK = 256 * 1024;
/** Default bound on the bytes one connection may deliver. */
const DEFAULT_MAX_BYTES = 64 << 20;

function align8(n: number): number {
  return (n + 7) & ~7;
}

interface Libc {
  socket(domain: number, type: number, protocol: number): number;
  bind(fd: number, addr: Buffer, len: number): number;
  listen(fd: number, backlog: number): number;
  accept4(fd: number, addr: null, len: null, flags: number): number;
  connect(fd: number, addr: Buffer, len: number): number;
  sendmsg(fd: number, msg: unknown, flags: number): number | bigint;
  recvmsg(fd: number, msg: unknown, flags: number): number | bigint;
  poll(fds: Buffer, n: number, timeout: number): number;
  close(fd: number): number;
  errno(): number;
  alloc(size: number): { ptr: unknown; bytes: Buffer; addr: bigint; free(): void };
}

let libcCache: Libc | undefined;

function libc(): Libc {
  if (libcCache !== undefined) return libcCache;
  if (platform() !== 'linux' || endianness() !== 'LE' || !['x64', 'arm64'].includes(arch()))
    throw new NydusError(
      'ERR_UNSUPPORTED',
      `Passing file descriptors is implemented for 64-bit little-endian Linux only, not ${platform()}/${arch()}`,
    );
  let koffi: typeof import('koffi');
  let lib: ReturnType<typeof import('koffi').load>;
  try {
    koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
    lib = koffi.load('libc.so.6');
  } catch (e) {
    throw new NydusError('ERR_UNSUPPORTED', `Cannot load libc through koffi: ${String(e)}`, { cause: e });
  }
  const k = koffi;
  const f = <T>(decl: string): T => lib.func(decl) as unknown as T;
  libcCache = {
    socket: f('int socket(int, int, int)'),
    bind: f('int bind(int, const void *, uint32_t)'),
    listen: f('int listen(int, int)'),
    accept4: f('int accept4(int, void *, void *, int)'),
    connect: f('int connect(int, const void *, uint32_t)'),
    sendmsg: f('long sendmsg(int, void *, int)'),
    recvmsg: f('long recvmsg(int, void *, int)'),
    poll: f('int poll(void *, unsigned long, int)'),
    close: f('int close(int)'),
    errno: () => k.errno(),
    alloc(size: number) {
      const ptr: unknown = k.alloc('uint8', size);
      const bytes = Buffer.from(k.view(ptr, size));
      bytes.fill(0);
      return { ptr, bytes, addr: k.address(ptr), free: () => k.free(ptr) };
    },
  };
  return libcCache;
}

function errnoName(n: number): string {
  for (const [name, v] of Object.entries(osConstants.errno)) if (v === n) return name;
  return `errno ${n}`;
}

function sysError(what: string, errno: number): NydusError {
  return new NydusError('ERR_IO', `${what} failed: ${errnoName(errno)}`);
}

/** struct sockaddr_un for `path`, and its length. */
function sockaddr(path: string): { addr: Buffer; len: number } {
  const p = Buffer.from(path);
  if (p.length === 0 || p.length >= SUN_PATH_MAX || p.includes(0))
    throw new NydusError(
      'ERR_INVALID_ARG',
      `Socket path "${path}" must be 1 to ${SUN_PATH_MAX - 1} bytes without NUL (it has ${p.length})`,
    );
  const addr = Buffer.alloc(2 + SUN_PATH_MAX);
  addr.writeUInt16LE(AF_UNIX, 0);
  p.copy(addr, 2);
  return { addr, len: 2 + p.length + 1 };
}

function newSocket(): number {
  const c = libc();
  const fd = c.socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw sysError('socket(AF_UNIX)', c.errno());
  return fd;
}

/** Close a file descriptor we own (errors ignored: the fd is gone either way). */
export function closeFd(fd: number): void {
  if (fd >= 0) libc().close(fd);
}

/** poll(2) once without waiting: the returned events of `fd`. */
function pollNow(fd: number, events: number): number {
  const c = libc();
  const pfd = Buffer.alloc(8);
  pfd.writeInt32LE(fd, 0);
  pfd.writeInt16LE(events, 4);
  for (;;) {
    const n = c.poll(pfd, 1, 0);
    if (n >= 0) return n === 0 ? 0 : pfd.readUInt16LE(6);
    const e = c.errno();
    if (e !== EINTR) throw sysError('poll', e);
  }
}

/** Something that can stop a wait early: a closed listener or connection. */
interface Cancel {
  readonly cancelled: string | undefined;
}

/**
 * Wait until `fd` reports one of `events` (or an error/hangup, which the next call reports), at
 * most until `deadline` (Date.now() ms). Polls on timers: 1 ms at first, backing off to 20 ms.
 */
async function waitFor(
  fd: number,
  events: number,
  deadline: number,
  what: string,
  cancel: Cancel,
): Promise<void> {
  let delay = 1;
  for (;;) {
    if (cancel.cancelled !== undefined) throw new NydusError('ERR_IO', `${what}: ${cancel.cancelled}`);
    const got = pollNow(fd, events);
    if ((got & (events | POLLERR | POLLHUP | POLLNVAL)) !== 0) return;
    const left = deadline - Date.now();
    if (left <= 0) throw new NydusError('ERR_TIMEOUT', `${what}: no answer within the time limit`);
    await sleep(Math.min(delay, left));
    delay = Math.min(delay * 2, 20);
  }
}

/** What one connection delivered until its peer closed it. */
export interface Received {
  readonly data: Buffer;
  /** The fds passed with it, now owned by the caller (close-on-exec set). */
  readonly fds: number[];
}

/** A connected unix stream socket. */
export class UnixConnection implements Cancel {
  #fd: number;
  #cancelled: string | undefined;

  private constructor(fd: number) {
    this.#fd = fd;
  }

  /** @internal */
  static adopt(fd: number): UnixConnection {
    return new UnixConnection(fd);
  }

  get cancelled(): string | undefined {
    return this.#cancelled;
  }

  /**
   * Connect to the socket at `path`. A refused or missing socket fails at once (nobody listens);
   * a full backlog is retried until the time is up.
   */
  static async connect(path: string, timeoutMs: number): Promise<UnixConnection> {
    const c = libc();
    const { addr, len } = sockaddr(path);
    const deadline = Date.now() + timeoutMs;
    let delay = 1;
    for (;;) {
      const fd = newSocket();
      if (c.connect(fd, addr, len) === 0) return new UnixConnection(fd);
      const e = c.errno();
      c.close(fd);
      if (e !== EAGAIN && e !== EINTR) {
        const why =
          e === osConstants.errno.ENOENT
            ? 'no such socket (is anyone listening?)'
            : e === osConstants.errno.ECONNREFUSED
              ? 'connection refused (nobody is listening)'
              : errnoName(e);
        throw new NydusError('ERR_IO', `Cannot connect to "${path}": ${why}`);
      }
      const left = deadline - Date.now();
      if (left <= 0)
        throw new NydusError('ERR_TIMEOUT', `Cannot connect to "${path}": its backlog stayed full`);
      await sleep(Math.min(delay, left));
      delay = Math.min(delay * 2, 20);
    }
  }

  /**
   * Send `data` with `fds` attached to its first byte: one sendmsg carries the fds and as much
   * data as the socket takes, further sends the rest (what a reader looping recvmsg until EOF
   * expects). `data` must not be empty when fds are sent.
   */
  async send(data: Buffer, fds: readonly number[], timeoutMs: number): Promise<void> {
    if (fds.length > MAX_FDS)
      throw new NydusError('ERR_INVALID_ARG', `At most ${MAX_FDS} fds can be sent at once`);
    if (fds.length > 0 && data.length === 0)
      throw new NydusError(
        'ERR_INVALID_ARG',
        'File descriptors need at least one byte of data to travel with',
      );
    const c = libc();
    const deadline = Date.now() + timeoutMs;
    const chunk = Math.min(Math.max(data.length, 1), RECV_CHUNK);
    const mem = c.alloc(MSGHDR_SIZE + IOVEC_SIZE + CONTROL_SIZE + chunk);
    try {
      const iov = MSGHDR_SIZE;
      const ctl = iov + IOVEC_SIZE;
      const buf = ctl + CONTROL_SIZE;
      let sent = 0;
      let fdsPending = fds.length > 0;
      while (sent < data.length) {
        const n = Math.min(chunk, data.length - sent);
        data.copy(mem.bytes, buf, sent, sent + n);
        const b = mem.bytes;
        b.fill(0, 0, ctl);
        b.writeBigUInt64LE(mem.addr + BigInt(iov), 16); // msg_iov
        b.writeBigUInt64LE(1n, 24); // msg_iovlen
        b.writeBigUInt64LE(mem.addr + BigInt(buf), iov); // iov_base
        b.writeBigUInt64LE(BigInt(n), iov + 8); // iov_len
        if (fdsPending) {
          const cmsgLen = CMSG_HDR + 4 * fds.length;
          b.writeBigUInt64LE(mem.addr + BigInt(ctl), 32); // msg_control
          b.writeBigUInt64LE(BigInt(CMSG_HDR + align8(4 * fds.length)), 40); // msg_controllen
          b.writeBigUInt64LE(BigInt(cmsgLen), ctl); // cmsg_len
          b.writeInt32LE(SOL_SOCKET, ctl + 8);
          b.writeInt32LE(SCM_RIGHTS, ctl + 12);
          fds.forEach((fd, i) => b.writeInt32LE(fd, ctl + CMSG_HDR + 4 * i));
        }
        const r = Number(c.sendmsg(this.#fd, mem.ptr, MSG_NOSIGNAL));
        if (r < 0) {
          const e = c.errno();
          if (e === EINTR) continue;
          if (e !== EAGAIN) throw sysError('sendmsg', e);
          await waitFor(this.#fd, POLLOUT, deadline, 'Sending on a unix socket', this);
          continue;
        }
        sent += r;
        fdsPending = false;
      }
    } finally {
      mem.free();
    }
  }

  /**
   * Read until the peer closes the connection: all its data and every fd passed with it. A
   * message whose fds did not fit (MSG_CTRUNC) fails, as does more than `maxBytes` of data; fds
   * received before a failure are closed.
   */
  async receiveAll(timeoutMs: number, maxBytes = DEFAULT_MAX_BYTES): Promise<Received> {
    const c = libc();
    const deadline = Date.now() + timeoutMs;
    const mem = c.alloc(MSGHDR_SIZE + IOVEC_SIZE + CONTROL_SIZE + RECV_CHUNK);
    const parts: Buffer[] = [];
    const fds: number[] = [];
    let total = 0;
    try {
      const iov = MSGHDR_SIZE;
      const ctl = iov + IOVEC_SIZE;
      const buf = ctl + CONTROL_SIZE;
      for (;;) {
        const b = mem.bytes;
        b.fill(0, 0, buf);
        b.writeBigUInt64LE(mem.addr + BigInt(iov), 16);
        b.writeBigUInt64LE(1n, 24);
        b.writeBigUInt64LE(mem.addr + BigInt(ctl), 32);
        b.writeBigUInt64LE(BigInt(CONTROL_SIZE), 40);
        b.writeBigUInt64LE(mem.addr + BigInt(buf), iov);
        b.writeBigUInt64LE(BigInt(RECV_CHUNK), iov + 8);
        const r = Number(c.recvmsg(this.#fd, mem.ptr, MSG_CMSG_CLOEXEC));
        if (r < 0) {
          const e = c.errno();
          if (e === EINTR) continue;
          if (e !== EAGAIN) throw sysError('recvmsg', e);
          await waitFor(this.#fd, POLLIN, deadline, 'Receiving on a unix socket', this);
          continue;
        }
        // Control messages first: fds may come with the last bytes.
        const controlLen = Number(b.readBigUInt64LE(40));
        for (let off = 0; off + CMSG_HDR <= controlLen;) {
          const len = Number(b.readBigUInt64LE(ctl + off));
          if (len < CMSG_HDR || off + len > controlLen) break;
          if (b.readInt32LE(ctl + off + 8) === SOL_SOCKET && b.readInt32LE(ctl + off + 12) === SCM_RIGHTS) {
            for (let p = CMSG_HDR; p + 4 <= len; p += 4) fds.push(b.readInt32LE(ctl + off + p));
          }
          off += align8(len);
        }
        if ((b.readInt32LE(48) & MSG_CTRUNC) !== 0)
          throw new NydusError(
            'ERR_IO',
            `The peer passed more than ${MAX_FDS} file descriptors in one message`,
          );
        if (r === 0) break;
        total += r;
        if (total > maxBytes)
          throw new NydusError('ERR_FORMAT', `The peer sent more than ${maxBytes} bytes on a unix socket`);
        parts.push(Buffer.from(b.subarray(buf, buf + r)));
      }
    } catch (e) {
      for (const fd of fds) c.close(fd);
      throw e;
    } finally {
      mem.free();
    }
    return { data: Buffer.concat(parts), fds };
  }

  /** Close the socket; a wait in progress fails with "closed". */
  close(): void {
    this.#cancelled ??= 'the connection was closed';
    if (this.#fd >= 0) {
      libc().close(this.#fd);
      this.#fd = -1;
    }
  }
}

/**
 * A listening unix stream socket at a path. `listen` is synchronous, so a caller can listen,
 * then ask a peer to connect, then await `accept`.
 */
export class UnixListener implements Cancel {
  readonly path: string;
  #fd: number;
  #ino: number;
  #cancelled: string | undefined;

  private constructor(path: string, fd: number, ino: number) {
    this.path = path;
    this.#fd = fd;
    this.#ino = ino;
  }

  get cancelled(): string | undefined {
    return this.#cancelled;
  }

  /** Listen at `path`; a socket file left there is replaced, any other kind of file refused. */
  static listen(path: string, backlog = 16): UnixListener {
    const c = libc();
    const { addr, len } = sockaddr(path);
    try {
      if (!lstatSync(path).isSocket())
        throw new NydusError('ERR_INVALID_ARG', `"${path}" exists and is not a socket`);
      unlinkSync(path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    const fd = newSocket();
    if (c.bind(fd, addr, len) !== 0 || c.listen(fd, backlog) !== 0) {
      const e = c.errno();
      c.close(fd);
      throw new NydusError('ERR_IO', `Cannot listen on "${path}": ${errnoName(e)}`);
    }
    return new UnixListener(path, fd, lstatSync(path).ino);
  }

  /** The next connection, waiting at most `timeoutMs`. */
  async accept(timeoutMs: number): Promise<UnixConnection> {
    const c = libc();
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.#cancelled !== undefined)
        throw new NydusError('ERR_IO', `Accepting on "${this.path}": ${this.#cancelled}`);
      const fd = c.accept4(this.#fd, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd >= 0) return UnixConnection.adopt(fd);
      const e = c.errno();
      if (e === EINTR || osConstants.errno.ECONNABORTED === e) continue;
      if (e !== EAGAIN) throw sysError(`accept on "${this.path}"`, e);
      try {
        await waitFor(this.#fd, POLLIN, deadline, `Waiting for a connection on "${this.path}"`, this);
      } catch (err) {
        if (err instanceof NydusError && err.code === 'ERR_TIMEOUT')
          throw new NydusError('ERR_TIMEOUT', `Nobody connected to "${this.path}" within ${timeoutMs} ms`);
        throw err;
      }
    }
  }

  /** Stop listening and remove the socket file (only ours: a successor may have bound the path). */
  close(reason = 'the listener was closed'): void {
    this.#cancelled ??= reason;
    if (this.#fd < 0) return;
    libc().close(this.#fd);
    this.#fd = -1;
    try {
      if (lstatSync(this.path).ino === this.#ino) unlinkSync(this.path);
    } catch {
      // already gone
    }
  }
}
