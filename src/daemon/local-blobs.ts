import { NydusError } from '../errors/errors.js';
import type { LoadedBootstrap } from '../rafs/open.js';
import type { LocalFsOptions } from '../storage/localfs.js';
import type { DaemonConfig } from './config/schema.js';

/**
 * Where the blobs of an image on this machine are, from a daemon config: what nydusd mounts
 * and what `nydus-image check|inspect|unpack|export -C CONFIG` read, the same way.
 */

/**
 * The localfs settings of a config's backend (`dir`, `blob_file`, `alt_dirs`; empty strings
 * count as unset). Other backends are refused: `what` names who refuses.
 */
export function localfsOptions(config: DaemonConfig, what: string): LocalFsOptions {
  const backend = config.backend;
  if (backend.type !== 'localfs')
    throw new NydusError(
      'ERR_UNSUPPORTED',
      `backend ${backend.type} is not supported by ${what} yet (only localfs is)`,
    );
  const lfs = backend.localfs;
  return {
    ...(lfs?.dir ? { dir: lfs.dir } : {}),
    ...(lfs?.blob_file ? { blobFile: lfs.blob_file } : {}),
    altDirs: lfs?.alt_dirs ?? [],
  };
}

/** Blob files the image brings itself: the inline-meta blob given as the bootstrap, by blob id. */
export function inlineBlobFiles(loaded: LoadedBootstrap): Map<string, string> {
  const files = new Map<string, string>();
  if (loaded.inlineBlob !== undefined) files.set(loaded.inlineBlob.blobId, loaded.inlineBlob.path);
  return files;
}
