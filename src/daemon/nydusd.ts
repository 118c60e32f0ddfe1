import { readFile, stat } from 'node:fs/promises';
import { errorText, NydusError } from '../errors/errors.js';
import { checkMountpoint, FuseSession } from '../fuse/session.js';
import type { Logger } from '../log/logger.js';
import { RafsImage } from '../rafs/image.js';
import { loadBootstrapFile } from '../rafs/open.js';
import { LocalFsBlobSource } from '../storage/localfs.js';
import { localfsShortcutConfig, parseDaemonConfig, type DaemonConfig } from './config/index.js';
import { RafsFs } from './rafs-fs.js';

/**
 * nydusd's FUSE service: one RAFS image from local blobs, mounted read-only at a mountpoint.
 * No API server, no pseudo-mounts, no cache yet: blobs are read straight from the localfs
 * backend.
 */

export interface NydusdOptions {
  readonly mountpoint: string;
  readonly bootstrap: string;
  /** A config file (v1 JSON, v2 JSON or v2 TOML). */
  readonly configFile?: string;
  /** `-D/--localfs-dir`: the shortcut config over this blob directory. */
  readonly localfsDir?: string;
  /** Reads kept outstanding on /dev/fuse. */
  readonly threads?: number;
  readonly logger: Logger;
}

export interface RunningNydusd {
  readonly session: FuseSession;
  readonly image: RafsImage;
  readonly config: DaemonConfig;
  /** Unmount, wait for the request loop and close the blobs. */
  stop(): Promise<void>;
}

function invalid(msg: string): never {
  throw new NydusError('ERR_INVALID_ARG', msg);
}

async function loadConfig(opts: NydusdOptions): Promise<DaemonConfig> {
  if (opts.configFile !== undefined && opts.localfsDir !== undefined)
    invalid('--config and --localfs-dir cannot be used together');
  if (opts.localfsDir !== undefined) return localfsShortcutConfig(opts.localfsDir);
  if (opts.configFile === undefined) invalid('Either --config or --localfs-dir is needed with --bootstrap');
  let text: Buffer;
  try {
    text = await readFile(opts.configFile);
  } catch (e) {
    throw new NydusError('ERR_IO', `Cannot read config "${opts.configFile}": ${errorText(e)}`);
  }
  const parsed = parseDaemonConfig(text, { source: `"${opts.configFile}"` });
  for (const w of parsed.warnings) opts.logger.warn(`config: ${w}`);
  return parsed.config;
}

async function isDirectory(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isDirectory();
  } catch {
    return false;
  }
}

async function isFile(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isFile();
  } catch {
    return false;
  }
}

/** Open the image named by the options and config, checking everything that can be checked early. */
export async function openImage(
  opts: NydusdOptions,
  config: DaemonConfig,
): Promise<{ image: RafsImage; source: LocalFsBlobSource }> {
  const backend = config.backend;
  if (backend.type !== 'localfs') invalid(`backend ${backend.type} is not supported yet (only localfs is)`);
  const lfs = backend.localfs;
  const blobFile = lfs?.blob_file ? lfs.blob_file : undefined;
  const dir = lfs?.dir ? lfs.dir : undefined;
  if (blobFile === undefined && dir === undefined) invalid('backend localfs needs "dir" or "blob_file"');
  if (blobFile !== undefined && !(await isFile(blobFile))) invalid(`Blob file "${blobFile}" does not exist`);
  if (blobFile === undefined && dir !== undefined && !(await isDirectory(dir)))
    invalid(`Blob directory "${dir}" does not exist or is not a directory`);
  if (!(await isFile(opts.bootstrap)))
    invalid(`Bootstrap "${opts.bootstrap}" does not exist or is not a file`);
  const loaded = await loadBootstrapFile(opts.bootstrap);
  const files = new Map<string, string>();
  if (loaded.inlineBlob !== undefined) files.set(loaded.inlineBlob.blobId, loaded.inlineBlob.path);
  const source = new LocalFsBlobSource({
    ...(dir !== undefined && { dir }),
    ...(blobFile !== undefined && { blobFile }),
    altDirs: lfs?.alt_dirs ?? [],
    files,
  });
  return { image: new RafsImage(loaded.bootstrap, source), source };
}

/** Start serving: parse the config, open the image, mount and serve until `stop()`. */
export async function startNydusd(opts: NydusdOptions): Promise<RunningNydusd> {
  const log = opts.logger;
  checkMountpoint(opts.mountpoint);
  const config = await loadConfig(opts);
  const { image } = await openImage(opts, config);
  // Missing blobs show up now as a warning, not at the first read as an EIO only.
  for (let i = 0; i < image.bootstrap.blobs.length; i++) {
    try {
      await image.blobReader(i);
    } catch (e) {
      log.warn(`blob ${image.bootstrap.blobs[i]!.blobId}: ${errorText(e)}`);
    }
  }
  const fs = new RafsFs(image, { validate: config.rafs.validate, enableXattr: config.rafs.enable_xattr });
  const session = await FuseSession.mount(opts.mountpoint, fs, {
    threads: opts.threads ?? 4,
    logger: log,
    source: 'nydusfs',
  });
  const sb = image.bootstrap.superblock;
  log.info(
    `RAFS v${sb.version} image "${opts.bootstrap}" mounted at ${session.mountpoint} (${image.bootstrap.blobs.length} blob(s), ${opts.threads ?? 4} fuse threads)`,
  );
  let stopping: Promise<void> | undefined;
  return {
    session,
    image,
    config,
    stop: () =>
      (stopping ??= (async () => {
        await session.stop();
        await image.close();
      })()),
  };
}
