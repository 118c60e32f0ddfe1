import { stat } from 'node:fs/promises';
import { NydusError } from '../errors/errors.js';
import type { BlobInfo } from '../format/model.js';
import type { Logger } from '../log/logger.js';
import type { BlobReader, BlobSource } from '../storage/blob-source.js';
import type { LoadedBootstrap } from '../rafs/open.js';
import { LocalFsBlobSource } from '../storage/localfs.js';
import { RegistryBlobSource } from '../storage/registry.js';
import type { DaemonConfig } from './config/schema.js';
import { inlineBlobFiles, localfsOptions } from './local-blobs.js';

/** The blob source of one mounted image, and what the daemon may do with it. */
export interface Backend {
  /** Upstream's backend type name (`localfs`, `registry`), as the metrics report it. */
  readonly type: string;
  readonly source: BlobSource;
  /** Whether blobs are on this machine (kernel read-ahead is then cheap). */
  readonly local: boolean;
  /** Hot-update credentials (`registry_auth`); undefined when the backend has none. */
  setAuth?(auth: string): void;
  close(): Promise<void>;
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

/**
 * Blob files that come with the image (an inline-meta blob given as the bootstrap) are read
 * from their file; every other blob from `remote`.
 */
class WithLocalFiles implements BlobSource {
  readonly #files: LocalFsBlobSource;
  readonly #ids: ReadonlySet<string>;
  readonly #remote: BlobSource;

  constructor(files: ReadonlyMap<string, string>, remote: BlobSource) {
    this.#files = new LocalFsBlobSource({ files });
    this.#ids = new Set(files.keys());
    this.#remote = remote;
  }

  open(blob: BlobInfo): Promise<BlobReader> {
    return this.#ids.has(blob.blobId) ? this.#files.open(blob) : this.#remote.open(blob);
  }
}

const SUPPORTED = ['localfs', 'registry'];

/**
 * Refuse a backend nydusd cannot serve (a type not supported yet, localfs without its blob
 * directory or file, registry without its table) before anything is opened.
 */
export async function checkBackend(config: DaemonConfig): Promise<void> {
  const b = config.backend;
  if (!SUPPORTED.includes(b.type))
    throw new NydusError('ERR_UNSUPPORTED', `backend ${b.type} is not supported by nydusd yet`);
  if (b.type === 'registry' && b.registry === undefined)
    invalid('backend type registry needs a "registry" table');
  if (b.type !== 'localfs') return;
  const { blobFile, dir } = localfsOptions(config, 'nydusd');
  if (blobFile === undefined && dir === undefined) invalid('backend localfs needs "dir" or "blob_file"');
  if (blobFile !== undefined && !(await isKind(blobFile, 'file')))
    invalid(`Blob file "${blobFile}" does not exist`);
  if (blobFile === undefined && dir !== undefined && !(await isKind(dir, 'dir')))
    invalid(`Blob directory "${dir}" does not exist or is not a directory`);
}

/** The backend a daemon config names (checked with `checkBackend`), for an image loaded from `loaded`. */
export function createBackend(config: DaemonConfig, loaded: LoadedBootstrap, log: Logger): Backend {
  const b = config.backend;
  const files = inlineBlobFiles(loaded);
  if (b.type === 'registry') {
    const src = new RegistryBlobSource(b.registry!, { log });
    return {
      type: 'registry',
      source: files.size > 0 ? new WithLocalFiles(files, src) : src,
      local: false,
      setAuth: (auth) => src.setAuth(auth),
      close: () => src.close(),
    };
  }
  return {
    type: 'localfs',
    source: new LocalFsBlobSource({ ...localfsOptions(config, 'nydusd'), files }),
    local: true,
    close: () => Promise.resolve(),
  };
}
