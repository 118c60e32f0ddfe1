import { readFile } from 'node:fs/promises';
import { parseDaemonConfig } from '../../daemon/config/index.js';
import { inlineBlobFiles, localfsOptions } from '../../daemon/local-blobs.js';
import type { Logger } from '../../log/logger.js';
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
 * The localfs settings of a nydusd config file (v1 or v2, JSON or TOML), read as nydusd reads
 * it: warnings (unknown keys) are logged, errors name the key. Only the localfs backend is
 * served here; other backends arrive with the daemon's storage layer.
 */
async function localfsFromConfig(path: string, log: Logger | undefined): Promise<LocalFsOptions> {
  let text: Buffer;
  try {
    text = await readFile(path);
  } catch (e) {
    throw new NydusError('ERR_INVALID_ARG', `Cannot read config "${path}": ${errorText(e)}`, { cause: e });
  }
  const parsed = parseDaemonConfig(text, { source: path });
  for (const w of parsed.warnings) log?.warn(`config: ${w}`);
  return localfsOptions(parsed.config, 'nydus-image');
}

export interface OpenedImage {
  loaded: LoadedBootstrap;
  image: RafsImage;
  /** Whether a blob location was given, so data can be read. */
  hasData: boolean;
}

/** Open a bootstrap (or inline-meta blob) with the blob source the flags describe. */
export async function openImage(bootstrapPath: string, args: BlobArgs, log?: Logger): Promise<OpenedImage> {
  if (args.blobDir !== undefined && args.config !== undefined) {
    throw new NydusError('ERR_INVALID_ARG', '-D/--blob-dir and -C/--config cannot be used together');
  }
  const loaded = await loadBootstrapFile(bootstrapPath);
  let opts: LocalFsOptions = {};
  if (args.config !== undefined) opts = await localfsFromConfig(args.config, log);
  if (args.blobDir !== undefined) opts.dir = args.blobDir;
  if (args.blob !== undefined) opts.blobFile = args.blob;
  const files = inlineBlobFiles(loaded);
  opts.files = files;
  const hasData = opts.dir !== undefined || opts.blobFile !== undefined || files.size > 0;
  const image = new RafsImage(loaded.bootstrap, new LocalFsBlobSource(opts));
  return { loaded, image, hasData };
}
