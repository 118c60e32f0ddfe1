import { createWriteStream } from 'node:fs';
import { finished } from 'node:stream/promises';
import { Command } from 'commander';
import { NydusError } from '../../errors/errors.js';
import {
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  S_IFSOCK,
} from '../../format/flags.js';
import type { RafsImage } from '../../rafs/image.js';
import { TarType } from '../../tar/header.js';
import { TarWriter } from '../../tar/writer.js';
import type { Logger } from '../../log/logger.js';
import { loggerFrom, writeAtomically } from '../common.js';
import { bootstrapArg, openImage } from './source.js';

/** Linux dev_t (as stored, 32 or 64 bits) to major/minor. */
export function devNumbers(rdev: number): { major: number; minor: number } {
  const dev = BigInt(rdev);
  const major = Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn));
  const minor = Number((dev & 0xffn) | ((dev >> 12n) & ~0xffn));
  return { major: major >>> 0, minor: minor >>> 0 };
}

const TYPE_OF: ReadonlyMap<number, number> = new Map([
  [S_IFREG, TarType.FILE],
  [S_IFDIR, TarType.DIR],
  [S_IFLNK, TarType.SYMLINK],
  [S_IFCHR, TarType.CHAR],
  [S_IFBLK, TarType.BLOCK],
  [S_IFIFO, TarType.FIFO],
]);

/**
 * Write the whole image as an OCI-style layer tar: every entry but the root, parents first,
 * paths relative to the root; hardlinks as tar links to their first occurrence; xattrs and
 * sub-second mtimes in PAX records. Sockets cannot live in a tar and are skipped with a warning.
 */
export async function unpackToTar(
  image: RafsImage,
  out: NodeJS.WritableStream,
  log: Logger,
): Promise<number> {
  const tar = new TarWriter(out as import('node:stream').Writable);
  const firstPath = new Map<number, Buffer>();
  let count = 0;
  for (const e of image.walk()) {
    if (e.ino === image.bootstrap.rootIno && e.path.length === 1) continue;
    const a = e.attr;
    const path = e.path.subarray(1);
    const fmt = a.mode & S_IFMT;
    if (fmt === S_IFSOCK) {
      log.warn(`Skipping socket "${e.path.toString()}": tar cannot hold sockets`);
      continue;
    }
    const type = TYPE_OF.get(fmt);
    if (type === undefined)
      throw new NydusError('ERR_FORMAT', `Inode ${a.ino} has an invalid file type 0o${a.mode.toString(8)}`);
    const base = {
      path,
      mode: a.mode,
      uid: a.uid,
      gid: a.gid,
      size: 0,
      mtime: a.mtime,
      mtimeNsec: a.mtimeNsec,
      xattrs: image.bootstrap.xattrs(e.ino),
    };
    if (fmt === S_IFREG) {
      const first = a.nlink > 1 ? firstPath.get(a.ino) : undefined;
      if (first !== undefined) {
        await tar.add({ ...base, type: TarType.HARDLINK, linkname: first });
      } else {
        if (a.nlink > 1) firstPath.set(a.ino, path);
        await tar.add({ ...base, type, size: a.size }, image.fileData(e.ino));
      }
    } else if (fmt === S_IFLNK) {
      await tar.add({ ...base, type, linkname: image.bootstrap.readlink(e.ino) });
    } else if (fmt === S_IFCHR || fmt === S_IFBLK) {
      const { major, minor } = devNumbers(a.rdev);
      await tar.add({ ...base, type, devmajor: major, devminor: minor });
    } else {
      await tar.add({ ...base, type });
    }
    count++;
  }
  await tar.finish();
  return count;
}

export function unpackCommand(): Command {
  return new Command('unpack')
    .description('Unpack a RAFS filesystem to a tar file')
    .argument('[BOOTSTRAP]', 'File path of RAFS metadata (or a data blob with inline metadata)')
    .option('-B, --bootstrap <file>', '[Deprecated] File path of RAFS meta blob/bootstrap')
    .option('-b, --blob <file>', 'Path to RAFS data blob file')
    .option(
      '-D, --blob-dir <dir>',
      'Directory for localfs storage backend, hosting data blobs and cache files',
    )
    .option('-C, --config <file>', 'Configuration file for storage backend (localfs)')
    .option('--backend-type <type>', 'Type of backend (only localfs through -b/-D is available yet)')
    .option('--backend-config <json>', 'Config string of backend')
    .option('--backend-config-file <file>', 'Config file of backend')
    .requiredOption('--output <file>', 'Path for output tar file')
    .action(
      async (positional: string | undefined, opts: Record<string, string | undefined>, cmd: Command) => {
        const log = loggerFrom(cmd);
        const path = bootstrapArg(positional, opts['bootstrap']);
        const output = opts['output'] ?? '';
        if (output === '') throw new NydusError('ERR_INVALID_ARG', 'Invalid empty --output option');
        const sources = ['blob', 'blobDir', 'backendType'].filter((k) => opts[k] !== undefined);
        if (sources.length > 1)
          throw new NydusError(
            'ERR_INVALID_ARG',
            '--blob, --blob-dir and --backend-type cannot be used together',
          );
        if (opts['backendType'] !== undefined) {
          if (opts['backendType'] === 'localfs')
            throw new NydusError(
              'ERR_INVALID_ARG',
              'Backend type localfs is not accepted here, use --blob-dir',
            );
          throw new NydusError(
            'ERR_UNSUPPORTED',
            `Backend type "${opts['backendType']}" is not supported by unpack yet; use --blob or --blob-dir`,
          );
        }
        const args: { blob?: string; blobDir?: string; config?: string } = {};
        if (opts['blob'] !== undefined) args.blob = opts['blob'];
        if (opts['blobDir'] !== undefined) args.blobDir = opts['blobDir'];
        if (opts['config'] !== undefined) args.config = opts['config'];
        const o = await openImage(path, args, log);
        try {
          const b = o.image.bootstrap;
          const hasChunks = b.blobs.some((x) => x.chunkCount > 0) || b.allChunks().length > 0;
          if (!o.hasData && hasChunks) {
            throw new NydusError(
              'ERR_INVALID_ARG',
              'No data source: --blob, --blob-dir or --backend-type must be specified',
            );
          }
          await writeAtomically(output, async (tmp) => {
            const out = createWriteStream(tmp);
            const done = finished(out);
            try {
              const n = await unpackToTar(o.image, out, log);
              out.end();
              await done;
              log.info(`Unpacked ${n} entries to ${output}`);
            } catch (e) {
              out.destroy();
              await done.catch(() => undefined);
              throw e;
            }
          });
        } finally {
          await o.image.close();
        }
      },
    );
}
