import type { BlobInfo } from '../format/model.js';
import type { Logger } from '../log/logger.js';
import type { BlobReader, BlobSource } from '../storage/blob-source.js';
import type { LoadedBootstrap } from '../rafs/open.js';
import { LocalFsBlobSource } from '../storage/localfs.js';
import type { BackendType, DaemonConfig } from './config/schema.js';
import type { Backend, BackendKind } from './backend/kind.js';
import { inlineBlobFiles } from './local-blobs.js';
import { httpProxyBackend } from './backend/http-proxy.js';
import { localDiskBackend } from './backend/localdisk.js';
import { localFsBackend } from './backend/localfs.js';
import { ossBackend } from './backend/oss.js';
import { registryBackend } from './backend/registry.js';
import { s3Backend } from './backend/s3.js';

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

const KINDS: Record<BackendType, BackendKind> = {
  localfs: localFsBackend,
  localdisk: localDiskBackend,
  oss: ossBackend,
  s3: s3Backend,
  registry: registryBackend,
  'http-proxy': httpProxyBackend,
};

/** Refuse a backend nydusd cannot serve before anything is opened. */
export async function checkBackend(config: DaemonConfig): Promise<void> {
  await KINDS[config.backend.type].check(config);
}

/** The backend a daemon config names (checked with `checkBackend`), for an image loaded from `loaded`. */
export function createBackend(
  config: DaemonConfig,
  loaded: LoadedBootstrap,
  log: Logger,
  event?: (message: string) => void,
): Backend {
  const backend = KINDS[config.backend.type].create({ config, loaded, log, event });
  // localfs reads the image's own blob files itself.
  if (config.backend.type === 'localfs') return backend;
  const files = inlineBlobFiles(loaded);
  if (files.size === 0) return backend;
  return { ...backend, source: new WithLocalFiles(files, backend.source) };
}

export {
  backendTable,
  invalid,
  isKind,
  type Backend,
  type BackendContext,
  type BackendKind,
} from './backend/kind.js';
