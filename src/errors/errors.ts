/**
 * One error family for the whole project. Every error carries a stable `code` that callers
 * match on; the edges (cli, daemon, snapshotter) turn codes into exit codes, errno values or
 * gRPC statuses. Messages follow one style: sentence case, no trailing period, values quoted,
 * say what failed and in what state.
 */

export type ErrorCode =
  /** Bytes that do not decode as the structure they claim to be. */
  | 'ERR_FORMAT'
  /** Structurally valid, but uses a feature this implementation does not support. */
  | 'ERR_UNSUPPORTED'
  /** Data whose digest does not match what the metadata records. */
  | 'ERR_DIGEST'
  /** A compressed chunk that does not decompress to its recorded size. */
  | 'ERR_DECOMPRESS'
  /** A lookup that found nothing (path, inode, blob). */
  | 'ERR_NOT_FOUND'
  /** Wrong arguments, flags or configuration from the user. */
  | 'ERR_INVALID_ARG'
  /** I/O against the file system or a backend failed. */
  | 'ERR_IO'
  /** The operation is not valid for this kind of inode (read of a directory, ...). */
  | 'ERR_INODE_TYPE'
  /** A remote service refused the credentials (401/403 after authenticating). */
  | 'ERR_AUTH'
  /** A remote request did not complete within its timeout. */
  | 'ERR_TIMEOUT'
  /** A connection to a remote service failed or broke (refused, reset, TLS). */
  | 'ERR_NETWORK'
  /** A registry answered with an error other than not-found or auth (status and its error JSON). */
  | 'ERR_REGISTRY'
  /** Something with that name or key exists already (a snapshot key, a daemon id). */
  | 'ERR_ALREADY_EXISTS'
  /** The target is in a state that does not allow the operation (commit of a view, remove of a
   * snapshot that has children). */
  | 'ERR_FAILED_PRECONDITION';

export interface NydusErrorOptions {
  cause?: unknown;
}

export class NydusError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: NydusErrorOptions) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.name = 'NydusError';
  }
}

/** A structure failed to decode. `offset` is where in its source the problem was found. */
export class FormatError extends NydusError {
  readonly offset: number | undefined;

  constructor(message: string, offset?: number, options?: NydusErrorOptions) {
    super('ERR_FORMAT', offset === undefined ? message : `${message} (at offset ${offset})`, options);
    this.name = 'FormatError';
    this.offset = offset;
  }
}

export function isNydusError(e: unknown): e is NydusError {
  return e instanceof NydusError;
}

/** Text of any thrown value, for messages that wrap a foreign error. */
export function errorText(e: unknown): string {
  if (e instanceof Error) return e.message;
  return String(e);
}
