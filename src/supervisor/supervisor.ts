import { errorText, NydusError } from '../errors/errors.js';
import type { Logger } from '../log/logger.js';
import { closeFd, UnixListener, type UnixConnection } from '../util/fdpass.js';

/**
 * The supervisor of one nydusd: the process that keeps the daemon's state and its /dev/fuse fd
 * while nydusd is replaced (failover after a crash, hot upgrade). In production it is the
 * snapshotter; the protocol is upstream's (nydus-snapshotter pkg/supervisor with nydusd's
 * upgrade crate):
 *
 * - The supervisor listens on a unix socket (`--supervisor <path>` of nydusd) and nydusd always
 *   connects: once per `PUT /api/v1/daemon/fuse/sendfd` to hand over its state, once per
 *   `PUT /api/v1/daemon/fuse/takeover` to fetch it. The caller starts listening first, then calls
 *   the API, then awaits the transfer.
 * - Sending: one sendmsg carries the fd(s) (SCM_RIGHTS) and the first state bytes, further
 *   writes the rest, and closing the connection ends the message. The reader loops recvmsg
 *   until EOF.
 * - The state bytes are opaque here (nydusd alone decodes them).
 */
export class Supervisor {
  readonly path: string;
  readonly #log: Logger;
  #data: Buffer | undefined;
  #fds: number[] = [];
  /** The transfer in progress, at most one: its listener and connection. */
  #busy: { listener: UnixListener; conn?: UnixConnection } | undefined;
  #closed = false;

  constructor(path: string, log: Logger) {
    this.path = path;
    this.#log = log;
  }

  hasStates(): boolean {
    return this.#data !== undefined && this.#fds.length > 0;
  }

  /** Size of the kept state in bytes (0 without states). */
  get stateSize(): number {
    return this.#data?.length ?? 0;
  }

  /** Listen now (synchronously), so the caller can ask nydusd to connect right after. */
  #listen(what: string): UnixListener {
    if (this.#closed) throw new NydusError('ERR_FAILED_PRECONDITION', `Supervisor "${this.path}" is closed`);
    if (this.#busy !== undefined)
      throw new NydusError(
        'ERR_FAILED_PRECONDITION',
        `Supervisor "${this.path}" cannot ${what}: another transfer is in progress`,
      );
    const listener = UnixListener.listen(this.path);
    this.#busy = { listener };
    return listener;
  }

  #done(): void {
    if (this.#busy === undefined) return;
    this.#busy.conn?.close();
    this.#busy.listener.close();
    this.#busy = undefined;
  }

  /**
   * Listen and wait (at most `timeoutMs` in all) for nydusd to connect and send its state and
   * fds (after the caller asks it with PUT /api/v1/daemon/fuse/sendfd). They replace what was
   * kept before, whose fds are closed.
   */
  async waitStates(timeoutMs: number): Promise<void> {
    // Before the first await: listening when the call returns.
    const listener = this.#listen('wait for states');
    const deadline = Date.now() + timeoutMs;
    try {
      let conn: UnixConnection;
      try {
        conn = await listener.accept(timeoutMs);
      } catch (e) {
        throw this.#timeoutText(
          e,
          `no nydusd connected to send its states within ${timeoutMs} ms (was PUT /api/v1/daemon/fuse/sendfd called?)`,
        );
      }
      this.#busy!.conn = conn;
      let got;
      try {
        got = await conn.receiveAll(Math.max(1, deadline - Date.now()));
      } catch (e) {
        throw this.#timeoutText(e, `nydusd did not finish sending its states within ${timeoutMs} ms`);
      }
      if (got.fds.length === 0)
        throw new NydusError(
          'ERR_FORMAT',
          `Supervisor "${this.path}" received ${got.data.length} bytes of state but no file descriptor`,
        );
      if (this.#closed) {
        for (const fd of got.fds) closeFd(fd);
        throw new NydusError('ERR_FAILED_PRECONDITION', `Supervisor "${this.path}" was closed meanwhile`);
      }
      this.#release();
      this.#data = got.data;
      this.#fds = got.fds;
      this.#log.info(
        `supervisor ${this.path}: received states (${got.data.length} bytes, ${got.fds.length} fd(s))`,
      );
    } finally {
      this.#done();
    }
  }

  /**
   * Listen and wait (at most `timeoutMs` in all) for a new nydusd to connect (after the caller
   * sends it PUT /api/v1/daemon/fuse/takeover) and send it the kept state and fds. They stay
   * kept (a later failover can use them again until nydusd sends newer ones).
   */
  async sendStates(timeoutMs: number): Promise<void> {
    if (!this.hasStates())
      throw new NydusError(
        'ERR_FAILED_PRECONDITION',
        `Supervisor "${this.path}" has no states to send: nydusd never sent them (PUT /api/v1/daemon/fuse/sendfd)`,
      );
    // Before the first await: listening when the call returns.
    const listener = this.#listen('send states');
    const deadline = Date.now() + timeoutMs;
    const data = this.#data!;
    const fds = [...this.#fds];
    try {
      let conn: UnixConnection;
      try {
        conn = await listener.accept(timeoutMs);
      } catch (e) {
        throw this.#timeoutText(
          e,
          `no nydusd connected to take the states over within ${timeoutMs} ms (was PUT /api/v1/daemon/fuse/takeover called?)`,
        );
      }
      this.#busy!.conn = conn;
      try {
        await conn.send(data, fds, Math.max(1, deadline - Date.now()));
      } catch (e) {
        throw this.#timeoutText(e, `nydusd did not take the states within ${timeoutMs} ms`);
      }
      this.#log.info(`supervisor ${this.path}: sent states (${data.length} bytes, ${fds.length} fd(s))`);
    } finally {
      this.#done();
    }
  }

  #timeoutText(e: unknown, text: string): NydusError {
    if (e instanceof NydusError && e.code === 'ERR_TIMEOUT')
      return new NydusError('ERR_TIMEOUT', `Supervisor "${this.path}": ${text}`, { cause: e });
    return new NydusError(
      e instanceof NydusError ? e.code : 'ERR_IO',
      `Supervisor "${this.path}": ${errorText(e)}`,
      { cause: e },
    );
  }

  #release(): void {
    for (const fd of this.#fds) closeFd(fd);
    this.#fds = [];
    this.#data = undefined;
  }

  /** Close the kept fds and the socket; a transfer in progress fails. */
  close(): void {
    this.#closed = true;
    if (this.#busy !== undefined) {
      this.#busy.conn?.close();
      this.#busy.listener.close('the supervisor was closed');
    }
    this.#release();
  }
}
