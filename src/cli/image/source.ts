import { readFile } from 'node:fs/promises';
import { errorText, NydusError } from '../../errors/errors.js';
import { loadBootstrapFile, type LoadedBootstrap } from '../../rafs/open.js';
import { RafsImage } from '../../rafs/image.js';
import { LocalFsBlobSource, type LocalFsOptions } from '../../storage/localfs.js';

/** The bootstrap argument: positional BOOTSTRAP or the deprecated -B/--bootstrap. */
export function bootstrapArg(positional: string | undefined, flag: string | undefined): string {
  if (positional !== undefined && flag !== undefined) {
    throw new NydusError(
      'ERR_INVALID_ARG',
      'Give the bootstrap either as BOOTSTRAP or with -B/--bootstrap, not both',
    );
  }
  const p = positional ?? flag;
  if (p === undefined) throw new NydusError('ERR_INVALID_ARG', 'Missing BOOTSTRAP (the RAFS metadata file)');
  return p;
}

export interface BlobArgs {
  blobDir?: string;
  blob?: string;
  config?: string;
}

/**
 * The localfs settings out of a nydusd config file (v1: device.backend, v2: backend). Only the
 * localfs backend is served here; other backends arrive with the daemon's storage layer.
 */
async function localfsFromConfig(path: string): Promise<LocalFsOptions> {
  let cfg: unknown;
  try {
    const text = await readFile(path, 'utf8');
    // Upstream docs show // comments inside JSON; drop whole-line ones.
    cfg = JSON.parse(text.replace(/^\s*\/\/.*$/gm, ''));
  } catch (e) {
    throw new NydusError('ERR_INVALID_ARG', `Cannot read config "${path}": ${errorText(e)}`, { cause: e });
  }
  const obj = (v: unknown): Record<string, unknown> | undefined =>
    typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  const root = obj(cfg);
  const v2 = obj(root?.['backend']);
  const v1 = obj(obj(root?.['device'])?.['backend']);
  const backend = v2 ?? v1;
  const type = backend?.['type'];
  if (typeof type !== 'string')
    throw new NydusError('ERR_INVALID_ARG', `Config "${path}" has no backend type`);
  if (type !== 'localfs') {
    throw new NydusError(
      'ERR_UNSUPPORTED',
      `Config "${path}": backend "${type}" is not supported by this command yet (use localfs or -D)`,
    );
  }
  const lc = obj(v2 !== undefined ? v2['localfs'] : backend?.['config']) ?? {};
  const opts: LocalFsOptions = {};
  if (typeof lc['dir'] === 'string') opts.dir = lc['dir'];
  if (typeof lc['blob_file'] === 'string' && lc['blob_file'] !== '') opts.blobFile = lc['blob_file'];
  if (Array.isArray(lc['alt_dirs']))
    opts.altDirs = lc['alt_dirs'].filter((d): d is string => typeof d === 'string');
  return opts;
}

export interface OpenedImage {
  loaded: LoadedBootstrap;
  image: RafsImage;
  /** Whether a blob location was given, so data can be read. */
  hasData: boolean;
}

/** Open a bootstrap (or inline-meta blob) with the blob source the flags describe. */
export async function openImage(bootstrapPath: string, args: BlobArgs): Promise<OpenedImage> {
  if (args.blobDir !== undefined && args.config !== undefined) {
    throw new NydusError('ERR_INVALID_ARG', '-D/--blob-dir and -C/--config cannot be used together');
  }
  const loaded = await loadBootstrapFile(bootstrapPath);
  let opts: LocalFsOptions = {};
  if (args.config !== undefined) opts = await localfsFromConfig(args.config);
  if (args.blobDir !== undefined) opts.dir = args.blobDir;
  if (args.blob !== undefined) opts.blobFile = args.blob;
  const files = new Map<string, string>();
  if (loaded.inlineBlob !== undefined) files.set(loaded.inlineBlob.blobId, loaded.inlineBlob.path);
  opts.files = files;
  const hasData = opts.dir !== undefined || opts.blobFile !== undefined || files.size > 0;
  const image = new RafsImage(loaded.bootstrap, new LocalFsBlobSource(opts));
  return { loaded, image, hasData };
}
