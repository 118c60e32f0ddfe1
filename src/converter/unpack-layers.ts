import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { lstat, mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createReadStream } from 'node:fs';
import { errorText, NydusError } from '../errors/errors.js';
import type { Logger } from '../log/logger.js';
import type { Descriptor } from '../oci/manifest.js';
import type { Repository } from '../registry/client.js';
import { TarType } from '../tar/header.js';
import { relativeEntryName, TarReader } from '../tar/reader.js';
import { decompressLayer } from './layer.js';

/**
 * Apply the layers of an OCI image, in order, to a directory, as a container runtime does:
 * for each layer, first its whiteouts (`.wh.NAME` removes NAME of the layers below, and
 * `.wh..wh..opq` empties its directory of what the layers below put there), then its entries,
 * extracted by GNU tar (owners, modes, xattrs, hardlinks, devices). This is `nydusify check`'s
 * view of the source image, made independently of the RAFS builder.
 */

const WH = '.wh.';
const OPAQUE = '.wh..wh..opq';

function safeJoin(root: string, rel: string): string {
  if (rel.split('/').some((p) => p === '..'))
    throw new NydusError('ERR_FORMAT', `Layer entry "${rel}" leaves the root with ".."`);
  return rel === '' ? root : join(root, rel);
}

async function exists(p: string): Promise<boolean> {
  try {
    await lstat(p);
    return true;
  } catch {
    return false;
  }
}

/**
 * What one layer tar changes besides its entries: paths removed, directories made opaque, and
 * paths it makes non-directories (a directory of the layers below there goes away whole).
 */
async function whiteoutsOf(
  tarFile: string,
): Promise<{ removed: string[]; opaque: string[]; nonDirs: string[] }> {
  const removed: string[] = [];
  const opaque: string[] = [];
  const nonDirs: string[] = [];
  const tar = new TarReader(createReadStream(tarFile, { highWaterMark: 1 << 20 }));
  for (;;) {
    const e = await tar.next();
    if (e === undefined) break;
    const rel = relativeEntryName(e.path);
    const slash = rel.lastIndexOf('/');
    const dir = slash < 0 ? '' : rel.slice(0, slash);
    const base = slash < 0 ? rel : rel.slice(slash + 1);
    if (base === OPAQUE) opaque.push(dir);
    else if (base.startsWith(WH))
      removed.push(dir === '' ? base.slice(WH.length) : `${dir}/${base.slice(WH.length)}`);
    else if (e.type !== TarType.DIR && rel !== '' && rel !== '.') nonDirs.push(rel);
  }
  return { removed, opaque, nonDirs };
}

function runTar(args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('tar', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err = (err + d).slice(-4096)));
    child.on('error', (e) => reject(new NydusError('ERR_IO', `Cannot run tar: ${e.message}`)));
    child.on('exit', (code) =>
      code === 0
        ? resolve()
        : reject(new NydusError('ERR_IO', `tar ${args.join(' ')} failed: ${err.trim()}`)),
    );
  });
}

/** Apply one uncompressed layer tar file to `root`. */
export async function applyLayerTar(tarFile: string, root: string): Promise<void> {
  const { removed, opaque, nonDirs } = await whiteoutsOf(tarFile);
  for (const d of opaque) {
    const dir = safeJoin(root, d);
    if (!(await exists(dir))) continue;
    for (const name of await readdir(dir)) await rm(join(dir, name), { recursive: true, force: true });
  }
  for (const r of removed) await rm(safeJoin(root, r), { recursive: true, force: true });
  for (const n of nonDirs) {
    const p = safeJoin(root, n);
    let isDir = false;
    try {
      isDir = (await lstat(p)).isDirectory();
    } catch {
      // nothing there yet
    }
    if (isDir) await rm(p, { recursive: true, force: true });
  }
  await runTar([
    '--xattrs',
    '--xattrs-include=*',
    '--numeric-owner',
    '--same-owner',
    '--same-permissions',
    '--exclude=.wh.*',
    '-xf',
    tarFile,
    '-C',
    root,
  ]);
}

/** Fetch (digest-verified), decompress and apply the layers of an image to `root`. */
export async function unpackLayers(
  repo: Repository,
  layers: readonly Descriptor[],
  root: string,
  tmpDir: string,
  log: Logger,
): Promise<void> {
  await mkdir(root, { recursive: true });
  await mkdir(tmpDir, { recursive: true });
  for (const [i, layer] of layers.entries()) {
    const tarFile = join(tmpDir, `layer-${i}.tar`);
    log.info(`Unpacking layer ${layer.digest}`);
    try {
      const blob = await repo.openBlob(layer.digest);
      const { stream } = await decompressLayer(blob, {
        mediaType: layer.mediaType,
        what: `Layer ${layer.digest}`,
        log,
      });
      await pipeline(stream, createWriteStream(tarFile));
      await applyLayerTar(tarFile, root);
    } catch (e) {
      throw new NydusError(
        e instanceof NydusError ? e.code : 'ERR_IO',
        `Cannot unpack layer ${layer.digest}: ${errorText(e)}`,
        { cause: e },
      );
    } finally {
      await rm(tarFile, { force: true });
    }
  }
}
