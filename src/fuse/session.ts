import { spawn } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import { mountPoints, unescapeMountPath } from '../util/mounts.js';
import { basename, dirname, join, resolve } from 'node:path';
import {
  closeSync,
  constants,
  openSync,
  read,
  readFileSync,
  readSync,
  writeFileSync,
  realpathSync,
  statSync,
  writeSync,
  writevSync,
} from 'node:fs';
import { NydusError, errorText } from '../errors/errors.js';
import type { Logger } from '../log/logger.js';
import {
  Errno,
  expectsReply,
  FUSE_UNIQUE_RESEND,
  InitFlag,
  minReadBufferSize,
  opcodeName,
  Size,
} from './abi.js';
import { FuseError, errnoOf } from './errors.js';
import { negotiateInit, refusedInitFlags, type InitOptions } from './init.js';
import { makeBlocking, pollFuse, type FusePoller } from './poll.js';
import {
  decodeInHeader,
  decodeRequest,
  type AccessRequest,
  type FlushRequest,
  type FuseRequest,
  type GetattrRequest,
  type GetxattrRequest,
  type InitRequest,
  type ListxattrRequest,
  type LookupRequest,
  type OpendirRequest,
  type OpenRequest,
  type ReaddirplusRequest,
  type ReaddirRequest,
  type ReadlinkRequest,
  type ReadRequest,
  type ReleasedirRequest,
  type ReleaseRequest,
  type StatfsRequest,
} from './messages.js';
import {
  attrReply,
  dataReply,
  emptyReply,
  entryReply,
  errorReply,
  initReply,
  openReply,
  replyHeader,
  statfsReply,
  xattrReply,
  type AttrOut,
  type EntryOut,
  type Kstatfs,
  type OpenOut,
} from './replies.js';

/**
 * A FUSE session over /dev/fuse without libfuse: mount with mount(8) on an fd we hold, then
 * read requests, hand them to an async handler and write the replies. Several reads are kept
 * outstanding on the fd (each one a libuv pool thread), so a slow handler never blocks others.
 */

/**
 * The file system behind a session, one method per op. Methods that are absent answer ENOSYS
 * (OPENDIR included: with NO_OPENDIR_SUPPORT the kernel then stops sending it). A thrown
 * FuseError answers its errno; any other error answers EIO (project errors map by code) and is
 * logged.
 */
export interface FuseHandler {
  /** What to ask for in INIT; called once per INIT. */
  init(req: InitRequest): InitOptions;
  /** After INIT was accepted, with the granted flags. */
  initialized?(flags: bigint): void;
  lookup?(req: LookupRequest): Promise<EntryOut> | EntryOut;
  getattr?(req: GetattrRequest): Promise<AttrOut> | AttrOut;
  readlink?(req: ReadlinkRequest): Promise<Buffer> | Buffer;
  open?(req: OpenRequest): Promise<OpenOut> | OpenOut;
  opendir?(req: OpendirRequest): Promise<OpenOut> | OpenOut;
  /**
   * The data (at most req.size bytes; fewer at the end of the file), or data lent until the
   * reply is written, when the session calls its `release`.
   */
  read?(req: ReadRequest): Promise<Buffer | LentBytes> | Buffer | LentBytes;
  /** A packed body (packDirents); empty at the end of the directory. */
  readdir?(req: ReaddirRequest): Promise<Buffer> | Buffer;
  readdirplus?(req: ReaddirplusRequest): Promise<Buffer> | Buffer;
  statfs?(req: StatfsRequest): Promise<Kstatfs> | Kstatfs;
  /** The value; the session answers the size probe and ERANGE. */
  getxattr?(req: GetxattrRequest): Promise<Buffer> | Buffer;
  /** NUL-terminated names, concatenated. */
  listxattr?(req: ListxattrRequest): Promise<Buffer> | Buffer;
  access?(req: AccessRequest): Promise<void> | void;
  flush?(req: FlushRequest): Promise<void> | void;
  release?(req: ReleaseRequest): Promise<void> | void;
  releasedir?(req: ReleasedirRequest): Promise<void> | void;
  destroy?(): void;
}

/**
 * Bytes lent to the session for one reply, in parts written in order: `release()` is called
 * once the reply is written.
 */
export interface LentBytes {
  readonly parts: readonly Buffer[];
  /** Bytes in all parts. */
  readonly length: number;
  release(): void;
}

export interface MountOptions {
  /** The source column of the mount table. Default "nydusfs". */
  readonly source?: string;
  /** The subtype: the mount shows as `fuse.<subtype>`. Default "nydusfs". */
  readonly subtype?: string;
  /** Extra -o options appended to the fixed ones. */
  readonly extraOptions?: readonly string[];
  /** Bound on mount(8) and umount(8). Default 20 s. */
  readonly timeoutMs?: number;
}

export interface SessionOptions extends MountOptions {
  /** Reads kept outstanding on the fd. Default 4. */
  readonly threads?: number;
  /**
   * The kernel's read-ahead for this mount, in KiB (its bdi `read_ahead_kb`), set once INIT is
   * done; the kernel's own default (128) when absent. A sequential reader then has up to this
   * much in flight, in reads of up to max_pages each, instead of one 128 KiB read at a time.
   */
  readonly readAheadKb?: number;
  readonly logger?: Logger;
}

/**
 * What INIT settled for a connection. A daemon that takes over a connection from its
 * predecessor (failover) never sees INIT, so this travels in the handed-over state.
 */
export interface FuseInitInfo {
  /** The negotiated protocol minor. */
  readonly minor: number;
  /** The flags the kernel offered (FUSE_HAS_RESEND among them tells it can resend). */
  readonly kernelFlags: bigint;
  /** The flags the reply granted. */
  readonly flags: bigint;
}

export interface AdoptOptions extends SessionOptions {
  /** INIT as the predecessor negotiated it. */
  readonly init?: FuseInitInfo;
}

/** enum fuse_notify_code FUSE_NOTIFY_RESEND (7.40, Linux 6.9). */
const FUSE_NOTIFY_RESEND = 7;
/** Where fusectl may be mounted, as upstream looks for it. */
const FUSECTL_DIRS = ['/proc/sys/fs/fuse/connections', '/sys/fs/fuse/connections'];

const DEFAULT_TIMEOUT_MS = 20_000;
/** Requests the poller's reader serves per wake-up at most, so the loop's other work goes on. */
const DRAIN_MAX = 16;
const { EAGAIN, EINTR, ENOENT } = osConstants.errno;
/** The largest WRITE we accept sets the read buffer size: 1 MiB plus the header. */
const MAX_WRITE = 1 << 20;

/** Device minor of the mount at `real` (the FUSE connection number), from mountinfo. */
function mountDevMinor(real: string): number | undefined {
  return mountAt(real)?.minor;
}

/** The last mount at `real` in /proc/self/mountinfo: its device numbers and file system type. */
export function mountAt(real: string): { major: number; minor: number; fstype: string } | undefined {
  const line = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .reverse()
    .find((l) => unescapeMountPath(l.split(' ')[4] ?? '') === real);
  if (line === undefined) return undefined;
  const m = /^(\d+):(\d+)$/.exec(line.split(' ')[2] ?? '');
  const fields = line.split(' ');
  const fstype = fields[fields.indexOf('-') + 1] ?? '';
  return m === null ? undefined : { major: Number(m[1]), minor: Number(m[2]), fstype };
}

/**
 * The absolute path of a mountpoint without touching the mountpoint itself (only its parent is
 * resolved): a FUSE mount whose daemon is gone, or not serving yet, would hang a stat.
 */
export function mountpointPath(path: string): string {
  const abs = resolve(path);
  try {
    return join(realpathSync(dirname(abs)), basename(abs));
  } catch (e) {
    throw new NydusError('ERR_INVALID_ARG', `Mountpoint "${path}" does not exist: ${errorText(e)}`);
  }
}

/** Whether a FUSE file system is mounted at `path` (mountinfo only: the mount is not touched). */
export function isFuseMount(path: string): boolean {
  const m = mountAt(mountpointPath(path));
  return m !== undefined && (m.fstype === 'fuse' || m.fstype.startsWith('fuse.'));
}

export function isMountPoint(path: string): boolean {
  let real: string;
  try {
    real = realpathSync(path);
  } catch {
    return false;
  }
  return mountPoints().includes(real);
}

function refuseBusy(real: string, path: string): void {
  if (mountPoints().includes(real))
    throw new NydusError(
      'ERR_INVALID_ARG',
      `Mountpoint "${path}" is busy: something is already mounted there`,
    );
}

/**
 * Check a mountpoint before mounting: it exists, is a directory, and nothing is mounted there.
 * The mount table is read before the path is touched: stat on a mount this process serves (or
 * on a dead FUSE mount) would hang or fail confusingly.
 */
export function checkMountpoint(path: string): string {
  let real: string;
  try {
    real = join(realpathSync(dirname(resolve(path))), basename(resolve(path)));
  } catch (e) {
    throw new NydusError('ERR_INVALID_ARG', `Mountpoint "${path}" does not exist: ${errorText(e)}`);
  }
  refuseBusy(real, path);
  try {
    real = realpathSync(real);
  } catch (e) {
    throw new NydusError('ERR_INVALID_ARG', `Mountpoint "${path}" does not exist: ${errorText(e)}`);
  }
  refuseBusy(real, path);
  if (!statSync(real).isDirectory())
    throw new NydusError('ERR_INVALID_ARG', `Mountpoint "${path}" is not a directory`);
  return real;
}

interface CmdResult {
  code: number | null;
  stderr: string;
}

function runCmd(cmd: string, args: string[], timeoutMs: number, fd?: number): Promise<CmdResult> {
  return new Promise((resolve, reject) => {
    const stdio: ('ignore' | 'pipe' | number)[] = ['ignore', 'ignore', 'pipe'];
    if (fd !== undefined) stdio.push(fd);
    const child = spawn(cmd, args, { stdio });
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new NydusError('ERR_IO', `${cmd} ${args.join(' ')} did not finish within ${timeoutMs} ms`));
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new NydusError('ERR_IO', `Cannot run ${cmd}: ${errorText(e)}`));
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr: stderr.trim() });
    });
  });
}

/** Threads of the libuv pool (fixed at its first use from UV_THREADPOOL_SIZE; libuv's default is 4). */
function libuvPoolSize(): number {
  const n = Number(process.env['UV_THREADPOOL_SIZE'] ?? 4);
  return Number.isInteger(n) && n > 0 ? Math.min(n, 1024) : 4;
}

type Reply = Buffer | readonly Buffer[] | null;

/**
 * `encode(unique, v)` of a handler's answer: at once when it is a value, after it settles when
 * it is a promise (no promise is made for a synchronous answer).
 */
function then<T>(
  v: T | Promise<T>,
  unique: bigint,
  encode: (unique: bigint, v: T) => Reply,
): Reply | Promise<Reply> {
  return v instanceof Promise ? v.then((x) => encode(unique, x)) : encode(unique, v);
}

/** A reply whose body is `body` (packed dirents): header and body in one writev, no copy. */
function bodyReply(unique: bigint, body: Buffer): Reply {
  return body.length === 0 ? replyHeader(unique, 0) : [replyHeader(unique, body.length), body];
}

/** A mounted FUSE file system being served. */
export class FuseSession {
  readonly mountpoint: string;
  readonly #fd: number;
  readonly #handler: FuseHandler;
  readonly #log: Logger | undefined;
  readonly #timeoutMs: number;
  readonly #threads: number;
  readonly #readAheadKb: number | undefined;
  #fdOpen = true;
  #mounted = true;
  #done: Promise<void> | undefined;
  /** Set by `detach`: readers stop issuing new reads. */
  #detaching = false;
  #init: FuseInitInfo | undefined;
  /** Requests the kernel resent (FUSE_UNIQUE_RESEND) that this session served. */
  #resent = 0;
  /** Requests being served, by unique: what `GET /api/v1/metrics/inflight` lists. */
  readonly #requests = new Map<bigint, { opcode: number; nodeid: bigint; startMs: number }>();
  /** The main-thread reader, when it could be set up (otherwise the pool readers serve). */
  #poller: FusePoller | undefined;
  /** The connection number (the mount's device minor), for fusectl. */
  #dev: number | undefined;

  private constructor(fd: number, mountpoint: string, handler: FuseHandler, opts: SessionOptions) {
    this.#fd = fd;
    this.mountpoint = mountpoint;
    this.#handler = handler;
    this.#log = opts.logger;
    this.#timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#threads = Math.max(1, opts.threads ?? 4);
    this.#readAheadKb = opts.readAheadKb;
  }

  /**
   * Mount a read-only FUSE file system at `mountpoint` and start serving it with `handler`.
   * Needs root (mount(8) with an fd). Fails with one clear message when the mountpoint is
   * missing, not a directory or busy, or when mount(8) refuses.
   */
  static async mount(
    mountpoint: string,
    handler: FuseHandler,
    opts: SessionOptions = {},
  ): Promise<FuseSession> {
    const real = checkMountpoint(mountpoint);
    let fd: number;
    try {
      fd = openSync('/dev/fuse', constants.O_RDWR);
    } catch (e) {
      throw new NydusError('ERR_IO', `Cannot open /dev/fuse: ${errorText(e)}`);
    }
    const options = [
      'fd=3',
      'rootmode=40000',
      'user_id=0',
      'group_id=0',
      'allow_other',
      'default_permissions',
      'ro',
      ...(opts.extraOptions ?? []),
    ].join(',');
    try {
      const r = await runCmd(
        'mount',
        ['-i', '-t', `fuse.${opts.subtype ?? 'nydusfs'}`, '-o', options, opts.source ?? 'nydusfs', real],
        opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
        fd,
      );
      if (r.code !== 0)
        throw new NydusError(
          'ERR_IO',
          `Cannot mount FUSE at "${mountpoint}": ${r.stderr || `mount exited ${r.code}`}`,
        );
    } catch (e) {
      closeSync(fd);
      throw e;
    }
    const s = new FuseSession(fd, real, handler, opts);
    s.#dev = mountDevMinor(real);
    s.#start();
    return s;
  }

  /**
   * A session on a connection another process set up (failover, hot upgrade): `fd` is its
   * /dev/fuse fd, received from the supervisor, and the file system is mounted at `mountpoint`
   * already. Nothing is read before `serve()`. The session owns `fd` from now on.
   */
  static adopt(fd: number, mountpoint: string, handler: FuseHandler, opts: AdoptOptions = {}): FuseSession {
    const real = mountpointPath(mountpoint);
    const s = new FuseSession(fd, real, handler, opts);
    s.#dev = mountDevMinor(real);
    s.#init = opts.init;
    if (opts.init !== undefined) handler.initialized?.(opts.init.flags);
    return s;
  }

  /** Start serving an adopted session (a mounted one serves from the start); idempotent. */
  serve(): void {
    if (this.#done === undefined && this.#fdOpen) this.#start();
  }

  /** The /dev/fuse fd (what failover hands to the supervisor). */
  get fd(): number {
    return this.#fd;
  }

  /** The FUSE connection number (the mount's device minor, its fusectl directory). */
  get connection(): number | undefined {
    return this.#dev;
  }

  /** INIT as negotiated on this connection (by this session or its predecessor). */
  get initInfo(): FuseInitInfo | undefined {
    return this.#init;
  }

  /** Requests served so far that the kernel had resent after a failover. */
  get resentRequests(): number {
    return this.#resent;
  }

  /**
   * Ask the kernel to queue again every request a dead predecessor had read but not answered
   * (FUSE_NOTIFY_RESEND, Linux 6.9+; the kernel offers FUSE_HAS_RESEND then), falling back to
   * fusectl's `resend` file where a kernel has one. False with a warning when neither works:
   * those requests then wait forever.
   */
  resend(): boolean {
    const offered = this.#init === undefined || (this.#init.kernelFlags & InitFlag.HAS_RESEND) !== 0n;
    if (offered) {
      const b = Buffer.alloc(Size.OUT_HEADER);
      b.writeUInt32LE(Size.OUT_HEADER, 0);
      b.writeInt32LE(FUSE_NOTIFY_RESEND, 4);
      b.writeBigUInt64LE(0n, 8);
      try {
        writeSync(this.#fd, b);
        this.#log?.info('FUSE: asked the kernel to resend the requests the previous daemon left unanswered');
        return true;
      } catch (e) {
        this.#log?.warn(`FUSE_NOTIFY_RESEND failed (${errorText(e)}); trying fusectl`);
      }
    }
    if (this.#fusectl('resend')) return true;
    this.#log?.warn(
      'FUSE: this kernel cannot resend requests (no FUSE_HAS_RESEND); requests read by the previous daemon stay unanswered',
    );
    return false;
  }

  /**
   * The `flush` fail-over policy: fusectl's `flush` file (a vendor kernel feature, as upstream
   * uses it) ends the requests the predecessor left. False with a warning where it is missing.
   */
  flush(): boolean {
    if (this.#fusectl('flush')) return true;
    this.#log?.warn(
      'FUSE: this kernel has no fusectl "flush"; requests read by the previous daemon stay unanswered',
    );
    return false;
  }

  #fusectl(event: string): boolean {
    if (this.#dev === undefined) return false;
    for (const dir of FUSECTL_DIRS) {
      try {
        writeFileSync(`${dir}/${this.#dev}/${event}`, '1');
        this.#log?.info(`FUSE: wrote ${dir}/${this.#dev}/${event}`);
        return true;
      } catch {
        // not there: the next place, or none
      }
    }
    return false;
  }

  /**
   * Stop serving without unmounting, for a successor that holds the same connection (hot
   * upgrade): no more reads are issued and the requests in progress are answered (waiting at
   * most `timeoutMs`). Reads already waiting in the kernel stay until the process exits; a
   * request one of them takes is left unanswered, and the successor has the kernel resend it.
   */
  async detach(timeoutMs = this.#timeoutMs): Promise<void> {
    this.#detaching = true;
    this.#mounted = false;
    // No more reads (the fd blocking again, as a successor may expect it).
    this.#poller?.stop();
    const deadline = Date.now() + timeoutMs;
    while (this.#requests.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    if (this.#requests.size > 0)
      this.#log?.warn(
        `FUSE: ${this.#requests.size} request(s) still in progress after ${timeoutMs} ms; leaving them to the successor`,
      );
  }

  /** Settles when the kernel ended the connection (after unmount) and the fd is closed. */
  get done(): Promise<void> {
    return this.#done ?? Promise.resolve();
  }

  #start(): void {
    const size = minReadBufferSize(MAX_WRITE);
    const buf = Buffer.allocUnsafeSlow(size);
    let settle: { resolve: () => void; reject: (e: unknown) => void } | undefined;
    const poller = pollFuse(this.#fd, () => this.#onReadable(buf, settle));
    if (poller !== undefined) {
      this.#poller = poller;
      this.#done = new Promise<void>((resolve, reject) => (settle = { resolve, reject })).then(
        () => this.#close(),
        (e: unknown) => {
          this.#close();
          throw e;
        },
      );
      return;
    }
    // Each reader holds a libuv pool thread while it waits: leave at least two for blob I/O.
    const n = Math.max(1, Math.min(this.#threads, libuvPoolSize() - 2));
    const readers = Array.from({ length: n }, (_, i) => this.#reader(size, i === 0 ? buf : undefined));
    this.#done = Promise.all(readers).then(
      () => this.#close(),
      (e: unknown) => {
        this.#close();
        throw e;
      },
    );
  }

  #close(): void {
    this.#mounted = false;
    this.#poller?.close();
    if (this.#fdOpen) {
      this.#fdOpen = false;
      closeSync(this.#fd);
    }
  }

  /**
   * The poller's reader, on each wake-up: non-blocking reads of the fd, each request served at
   * once, until none waits (EAGAIN) or DRAIN_MAX were served. A request that came while the
   * previous one was served (a client on the other core, the kernel's read-ahead) is then read
   * without going back to the loop and the loop's epoll (level-triggered: it wakes again while
   * requests wait). Replies of requests served asynchronously are written when the wake-up ends.
   */
  #onReadable(buf: Buffer, settle: { resolve: () => void; reject: (e: unknown) => void } | undefined): void {
    const p = this.#poller;
    if (p === undefined || settle === undefined) return;
    for (let i = 0; i < DRAIN_MAX && !this.#detaching; i++) {
      const n = p.read(buf);
      if (n > 0) {
        this.#serve(buf.subarray(0, n));
        continue;
      }
      // (Never from /dev/fuse; served, as an empty request, once per wake-up as before.)
      if (n === 0) {
        this.#serve(buf.subarray(0, 0));
        return;
      }
      if (n === -EAGAIN) return;
      if (n === -EINTR || n === -ENOENT) continue;
      // Anything else: read again the usual way, for the error as fs reports it.
      this.#readOnce(p, buf, settle);
      return;
    }
  }

  /** One read with fs.readSync (its errors as fs reports them), served at once. */
  #readOnce(p: FusePoller, buf: Buffer, settle: { resolve: () => void; reject: (e: unknown) => void }): void {
    let n: number;
    try {
      n = readSync(p.fd, buf, 0, buf.length, null);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EAGAIN' || code === 'EINTR' || code === 'ENOENT') return;
      p.stop();
      if (code === 'ENODEV' || code === 'EBADF') settle.resolve();
      else settle.reject(new NydusError('ERR_IO', `Reading /dev/fuse failed: ${errorText(e)}`));
      return;
    }
    this.#serve(buf.subarray(0, n));
  }

  /**
   * One reader: a read(2) on the fd kept outstanding on the libuv pool, each request decoded
   * (copying what it keeps) before the next read reuses the buffer. Settles when the connection
   * ends (ENODEV after unmount).
   */
  #reader(size: number, own?: Buffer): Promise<void> {
    const buf = own ?? Buffer.allocUnsafeSlow(size);
    return new Promise((resolve, reject) => {
      const next = (): void => {
        if (!this.#fdOpen || this.#detaching) {
          resolve();
          return;
        }
        read(this.#fd, buf, 0, size, null, (err, n) => {
          if (err !== null) {
            const code = err.code;
            if (code === 'EINTR' || code === 'ENOENT') next();
            // A non-blocking fd (left so by a predecessor that polled it): blocking again, or a
            // short wait instead of a spin.
            else if (code === 'EAGAIN') {
              if (!makeBlocking(this.#fd)) setTimeout(next, 5);
              else next();
            } else if (code === 'ENODEV' || code === 'EBADF') resolve();
            else reject(new NydusError('ERR_IO', `Reading /dev/fuse failed: ${errorText(err)}`));
            return;
          }
          // Detached: a request read now is left unanswered in the kernel, which resends it
          // to the successor (its images are closed here).
          if (!this.#detaching) this.#serve(buf.subarray(0, n));
          next();
        });
      };
      next();
    });
  }

  /**
   * Serve one request. A handler that answers synchronously (every metadata op of an in-memory
   * image) is answered before this returns, with no promise on the way; only a request whose
   * handler returns a promise is entered in `#requests` (a synchronous one can never be seen in
   * progress: nothing else runs meanwhile).
   */
  #serve(bytes: Buffer): void {
    let req: FuseRequest;
    try {
      req = decodeRequest(bytes);
    } catch (e) {
      this.#log?.warn(`Bad FUSE request: ${errorText(e)}`);
      try {
        const h = decodeInHeader(bytes);
        if (expectsReply(h.opcode)) this.#write(errorReply(h.unique, errnoOf(e)));
      } catch {
        // not even a header: nothing to answer
      }
      return;
    }
    if (req.unique >= FUSE_UNIQUE_RESEND) {
      this.#resent++;
      this.#log?.debug(
        `FUSE ${req.op} (unique ${req.unique & ~FUSE_UNIQUE_RESEND}) was resent by the kernel`,
      );
    }
    let reply: Reply | Promise<Reply>;
    try {
      reply = this.#dispatch(req);
    } catch (e) {
      this.#fail(req, e);
      return;
    }
    if (!(reply instanceof Promise)) {
      this.#finish(req, reply);
      return;
    }
    const unique = req.unique;
    this.#requests.set(unique, { opcode: req.opcode, nodeid: req.nodeid, startMs: Date.now() });
    reply.then(
      (r) => {
        this.#requests.delete(unique);
        this.#finish(req, r);
      },
      (e: unknown) => {
        this.#requests.delete(unique);
        this.#fail(req, e);
      },
    );
  }

  #finish(req: FuseRequest, reply: Reply): void {
    try {
      if (reply !== null) this.#write(reply);
      // The kernel caps read-ahead while it takes the INIT reply: raise it only afterwards.
      if (req.op === 'init') this.#setReadAhead();
    } catch (e) {
      this.#fail(req, e);
    }
  }

  #fail(req: FuseRequest, e: unknown): void {
    const errno = errnoOf(e);
    if (!(e instanceof FuseError)) {
      const what = req.op === 'unsupported' || req.op === 'modify' ? opcodeName(req.opcode) : req.op;
      this.#log?.error(`FUSE ${what} (nodeid ${req.nodeid}) failed: ${errorText(e)}`);
    }
    if (expectsReply(req.opcode)) this.#write(errorReply(req.unique, errno === 0 ? Errno.EIO : errno));
  }

  #write(reply: Buffer | readonly Buffer[]): void {
    if (!this.#fdOpen) return;
    // A one-buffer reply through the poller's write(2), cheaper than fs.writeSync; on a failure
    // the write is made again the usual way, for the error as fs reports it (a reply to
    // /dev/fuse is taken whole or not at all).
    if (this.#poller !== undefined && Buffer.isBuffer(reply) && this.#poller.write(reply) >= 0) return;
    try {
      if (Buffer.isBuffer(reply)) writeSync(this.#fd, reply);
      else writevSync(this.#fd, reply);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // ENOENT: the request was interrupted and its caller is gone; ENODEV: the mount is gone.
      if (code === 'ENOENT' || code === 'ENODEV' || code === 'EBADF') return;
      this.#log?.error(`Writing a FUSE reply failed: ${errorText(e)}`);
    }
  }

  /** The reply to a READ: the data after a header, lent bytes written here and given back. */
  #readReply(u: bigint, r: Buffer | LentBytes): Reply {
    if (Buffer.isBuffer(r)) return r.length === 0 ? replyHeader(u, 0) : [replyHeader(u, r.length), r];
    // Lent bytes: written here, synchronously, then given back.
    try {
      this.#write([replyHeader(u, r.length), ...r.parts]);
    } finally {
      r.release();
    }
    return null;
  }

  /** The reply to a request, or a promise of it when the handler answers asynchronously. */
  #dispatch(req: FuseRequest): Reply | Promise<Reply> {
    const h = this.#handler;
    const u = req.unique;
    const nosys = (): Buffer => errorReply(u, Errno.ENOSYS);
    switch (req.op) {
      case 'init': {
        const o = h.init(req);
        const n = negotiateInit(req, o);
        if (n.kind === 'accept') {
          this.#init = { minor: n.minor, kernelFlags: req.flags, flags: n.flags };
          const refused = refusedInitFlags(o.want, n.flags);
          if (refused.length > 0) this.#log?.debug(`FUSE kernel did not grant: ${refused.join(', ')}`);
          this.#log?.debug(`FUSE protocol 7.${n.minor} negotiated`);
          h.initialized?.(n.flags);
        }
        return initReply(u, n.reply);
      }
      case 'lookup':
        return h.lookup ? then(h.lookup(req), u, entryReply) : nosys();
      case 'getattr':
        return h.getattr ? then(h.getattr(req), u, attrReply) : nosys();
      case 'readlink':
        return h.readlink ? then(h.readlink(req), u, dataReply) : nosys();
      case 'open':
        return h.open ? then(h.open(req), u, openReply) : nosys();
      case 'opendir':
        return h.opendir ? then(h.opendir(req), u, openReply) : nosys();
      case 'read': {
        if (!h.read) return nosys();
        const r = h.read(req);
        return r instanceof Promise ? r.then((v) => this.#readReply(u, v)) : this.#readReply(u, r);
      }
      case 'readdir':
        return h.readdir ? then(h.readdir(req), u, bodyReply) : nosys();
      case 'readdirplus':
        return h.readdirplus ? then(h.readdirplus(req), u, bodyReply) : nosys();
      case 'statfs':
        return h.statfs ? then(h.statfs(req), u, statfsReply) : nosys();
      case 'getxattr': {
        if (!h.getxattr) return nosys();
        const size = req.size;
        return then(h.getxattr(req), u, (uu, v) => xattrReply(uu, size, v));
      }
      case 'listxattr': {
        if (!h.listxattr) return nosys();
        const size = req.size;
        return then(h.listxattr(req), u, (uu, v) => xattrReply(uu, size, v));
      }
      case 'access':
        return h.access ? then(h.access(req), u, emptyReply) : nosys();
      case 'flush':
        return h.flush ? then(h.flush(req), u, emptyReply) : nosys();
      case 'release':
        return then(h.release?.(req), u, emptyReply);
      case 'releasedir':
        return then(h.releasedir?.(req), u, emptyReply);
      case 'destroy':
        h.destroy?.();
        return emptyReply(u);
      case 'modify':
        return errorReply(u, Errno.EROFS);
      case 'forget':
      case 'batch-forget':
      case 'interrupt':
        return null;
      case 'unsupported':
        return expectsReply(req.opcode) ? nosys() : null;
    }
  }

  /**
   * Unmount and wait for the request loop to end. A busy mount is detached lazily (with a
   * warning) so the daemon can always exit.
   */
  async stop(): Promise<void> {
    // Never stat the mountpoint here: this thread serves it, and would wait on itself.
    if (this.#mounted && mountPoints().includes(this.mountpoint)) {
      let r: CmdResult;
      try {
        r = await runCmd('umount', [this.mountpoint], this.#timeoutMs);
      } catch (e) {
        r = { code: -1, stderr: errorText(e) };
      }
      if (r.code !== 0) {
        this.#log?.warn(`umount ${this.mountpoint} failed (${r.stderr}); detaching it lazily`);
        this.#abort();
        await runCmd('umount', ['-l', this.mountpoint], this.#timeoutMs).catch(() => undefined);
      }
    }
    // An adopted session that never served: nothing reads the fd, close it here.
    if (this.#done === undefined) this.#close();
    const bounded = new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        this.#log?.warn('FUSE request loop did not end after umount; aborting the connection');
        this.#abort();
        resolve();
      }, this.#timeoutMs);
      t.unref();
      void this.done
        .catch(() => undefined)
        .then(() => {
          clearTimeout(t);
          resolve();
        });
    });
    await bounded;
  }

  /** Set the mount's read-ahead (readAheadKb); a failure only costs speed, so it is logged. */
  #setReadAhead(): void {
    if (this.#readAheadKb === undefined || this.#dev === undefined) return;
    // FUSE mounts have anonymous devices (major 0): their bdi is named "0:<minor>".
    const path = `/sys/class/bdi/0:${this.#dev}/read_ahead_kb`;
    try {
      writeFileSync(path, String(this.#readAheadKb));
      this.#log?.debug(`FUSE read-ahead set to ${this.#readAheadKb} KiB`);
    } catch (e) {
      this.#log?.warn(`Cannot set the FUSE read-ahead (${path}): ${errorText(e)}`);
    }
  }

  /** Abort the connection through fusectl (when mounted): every waiter fails at once. */
  #abort(): void {
    if (this.#dev === undefined) return;
    try {
      writeFileSync(`/sys/fs/fuse/connections/${this.#dev}/abort`, '1');
    } catch {
      // fusectl not mounted: nothing more to do
    }
  }

  /** The requests being served right now, oldest first. */
  inflightRequests(): { unique: bigint; opcode: number; nodeid: bigint; startMs: number }[] {
    return [...this.#requests].map(([unique, r]) => ({ unique, ...r }));
  }
}
