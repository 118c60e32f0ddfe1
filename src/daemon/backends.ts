import type { BlobInfo } from '../format/model.js';
import type { Logger } from '../log/logger.js';
import type { BlobReader, BlobSource } from '../storage/blob-source.js';
import type { LoadedBootstrap } from '../rafs/open.js';
import { LocalFsBlobSource } from '../storage/localfs.js';
import type { BackendType } from './config/limits.js';
import type { DaemonConfig } from './config/schema.js';
import type { Backend, BackendKind } from './backend/kind.js';
import { inlineBlobFiles } from './local-blobs.js';

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

/**
 * Each backend's module loads when a config first names it: a daemon over local blobs never
 * loads the network backends (HTTP clients, registry auth, object store signing): ~0.5 MiB.
 */
const KINDS: Record<BackendType, () => Promise<BackendKind>> = {
  localfs: async () => (await import('./backend/localfs.js')).localFsBackend,
  localdisk: async () => (await import('./backend/localdisk.js')).localDiskBackend,
  oss: async () => (await import('./backend/oss.js')).ossBackend,
  s3: async () => (await import('./backend/s3.js')).s3Backend,
  registry: async () => (await import('./backend/registry.js')).registryBackend,
  'http-proxy': async () => (await import('./backend/http-proxy.js')).httpProxyBackend,
};
const loadedKinds = new Map<BackendType, BackendKind>();

/** Refuse a backend nydusd cannot serve before anything is opened. */
export async function checkBackend(config: DaemonConfig): Promise<void> {
  const type = config.backend.type;
  let kind = loadedKinds.get(type);
  if (kind === undefined) {
    kind = await KINDS[type]();
    loadedKinds.set(type, kind);
  }
  await kind.check(config);
}

/** The backend a daemon config names (checked with `checkBackend`), for an image loaded from `loaded`. */
export function createBackend(
  config: DaemonConfig,
  loaded: LoadedBootstrap,
  log: Logger,
  event?: (message: string) => void,
): Backend {
  const kind = loadedKinds.get(config.backend.type);
  if (kind === undefined)
    throw new Error(`createBackend: checkBackend was not called for ${config.backend.type}`);
  const backend = kind.create({ config, loaded, log, event });
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
