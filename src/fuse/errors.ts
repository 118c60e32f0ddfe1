import { FormatError, NydusError, type ErrorCode, type NydusErrorOptions } from '../errors/errors.js';
import { Errno, MAX_REPLY_ERRNO } from './abi.js';

/**
 * Errors of the FUSE layer. Both carry the errno the daemon should answer with, so the one place
 * that turns errors into replies (errnoOf) needs no knowledge of where they came from.
 */

/** A failure with a known errno answer (an INIT from a kernel too old, a value out of range). */
export class FuseError extends NydusError {
  readonly errno: number;

  constructor(code: ErrorCode, message: string, errno: number, options?: NydusErrorOptions) {
    super(code, message, options);
    this.name = 'FuseError';
    this.errno = errno;
  }
}

export interface RequestErrorContext {
  /** The request's `unique` when its first 16 bytes were there to read (best effort). */
  readonly unique?: bigint;
  /** The opcode, when its first 8 bytes were there to read. */
  readonly opcode?: number;
  /** The errno to answer with; EIO when not given. */
  readonly errno?: number;
}

/**
 * A request from /dev/fuse that does not decode. When `unique` is known the daemon can still
 * answer it with `errno` (unless the opcode takes no reply), so the caller blocked in the
 * kernel is released instead of waiting forever.
 */
export class FuseRequestError extends FormatError {
  readonly unique: bigint | undefined;
  readonly opcode: number | undefined;
  readonly errno: number;

  constructor(
    message: string,
    offset: number | undefined,
    ctx: RequestErrorContext,
    options?: NydusErrorOptions,
  ) {
    super(message, offset, options);
    this.name = 'FuseRequestError';
    this.unique = ctx.unique;
    this.opcode = ctx.opcode;
    this.errno = ctx.errno ?? Errno.EIO;
  }
}

/**
 * The errno to answer for an error thrown while serving a request. Errors of this layer keep
 * their own errno; project errors map by code; anything else is EIO.
 */
export function errnoOf(e: unknown): number {
  if (e instanceof FuseError || e instanceof FuseRequestError) {
    if (Number.isInteger(e.errno) && e.errno > 0 && e.errno <= MAX_REPLY_ERRNO) return e.errno;
    return Errno.EIO;
  }
  if (e instanceof NydusError) {
    switch (e.code) {
      case 'ERR_NOT_FOUND':
        return Errno.ENOENT;
      case 'ERR_INVALID_ARG':
      case 'ERR_INODE_TYPE':
        return Errno.EINVAL;
      case 'ERR_UNSUPPORTED':
        return Errno.ENOTSUP;
      default:
        return Errno.EIO;
    }
  }
  return Errno.EIO;
}

/** An encoder was handed a value its field cannot hold: a bug in the caller, never input. */
export function invalidField(what: string, value: unknown, range: string): NydusError {
  return new NydusError('ERR_INVALID_ARG', `Cannot encode ${what}: ${String(value)} is not ${range}`);
}
