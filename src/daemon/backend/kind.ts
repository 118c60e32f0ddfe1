import { stat } from 'node:fs/promises';
import { NydusError } from '../../errors/errors.js';
import type { Logger } from '../../log/logger.js';
import type { BlobSource } from '../../storage/blob-source.js';
import type { LoadedBootstrap } from '../../rafs/open.js';
import type { BackendType } from '../config/limits.js';
import type { DaemonConfig } from '../config/schema.js';

/** The blob source of one mounted image, and what the daemon may do with it. */
export interface Backend {
  /** Upstream's backend type name (`localfs`, `registry`, ...), as the metrics report it. */
  readonly type: string;
  readonly source: BlobSource;
  /** Whether blobs are on this machine (kernel read-ahead is then cheap; data is trusted). */
  readonly local: boolean;
  /** Hot-update credentials (`registry_auth`); undefined when the backend has none. */
  setAuth?(auth: string): void;
  /** Hot-update the P2P proxy URL (`proxy_url`); undefined when the backend has no proxy. */
  setProxyUrl?(url: string): void;
  close(): Promise<void>;
}

/** What a backend is made from. */
export interface BackendContext {
  config: DaemonConfig;
  loaded: LoadedBootstrap;
  log: Logger;
  /** Record a failed backend request in the daemon's error ring (`/api/v1/daemon/events`). */
  event?: ((message: string) => void) | undefined;
}

/** One backend type: its config check (before anything is opened) and its constructor. */
export interface BackendKind {
  /** Refuse a config this backend cannot serve, with a clear ERR_INVALID_ARG. */
  check(config: DaemonConfig): Promise<void>;
  create(ctx: BackendContext): Backend;
}

/** An ERR_INVALID_ARG for a bad daemon argument or config. */
export function invalid(msg: string): never {
  throw new NydusError('ERR_INVALID_ARG', msg);
}

/** Whether `p` is an existing file (or directory). */
export async function isKind(p: string, kind: 'file' | 'dir'): Promise<boolean> {
  try {
    const s = await stat(p);
    return kind === 'file' ? s.isFile() : s.isDirectory();
  } catch {
    return false;
  }
}

/** The table of a backend type, or a clear error when the config lacks it. */
export function backendTable<T extends BackendType>(
  config: DaemonConfig,
  type: T,
): NonNullable<DaemonConfig['backend'][T]> {
  const t = config.backend[type];
  if (t === undefined || t === null) invalid(`backend type ${type} needs a "${type}" table`);
  return t;
}

/** A backend type that nydusd cannot serve yet. */
export function unsupportedBackend(type: string): BackendKind {
  const fail = (): never => {
    throw new NydusError('ERR_UNSUPPORTED', `backend ${type} is not supported by nydusd yet`);
  };
  return {
    check: () =>
      Promise.reject(new NydusError('ERR_UNSUPPORTED', `backend ${type} is not supported by nydusd yet`)),
    create: fail,
  };
}
