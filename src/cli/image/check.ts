import { Command } from 'commander';
import { errorText, NydusError } from '../../errors/errors.js';
import { blobFeatureNames, isReg, superFlagNames } from '../../format/flags.js';
import type { ChunkInfo } from '../../format/model.js';
import { loadBlobChunks } from '../../rafs/blob-chunks.js';
import { loggerFrom, packageVersion, writeJsonFile } from '../common.js';
import { bootstrapArg, openImage, type OpenedImage } from './source.js';

/** Blob feature names as upstream's `check` prints them. */
const FEATURE_LABELS: readonly [string, string][] = [
  ['ALIGNED', 'aligned'],
  ['BATCH', 'batch'],
  ['CAP_TAR_TOC', 'cap_toc'],
  ['INLINED_CHUNK_DIGEST', 'chunk-digest'],
  ['CHUNK_INFO_V2', 'chunk-v2'],
  ['INLINED_FS_META', 'fs-meta'],
  ['SEPARATE', 'separate'],
  ['HAS_TAR_HEADER', 'tar-header'],
  ['HAS_TOC', 'toc'],
  ['ZRAN', 'zran'],
  ['ENCRYPTED', 'encrypted'],
  ['IS_CHUNKDICT_GENERATED', 'is-chunkdict-generated'],
];

export function formatBlobFeatures(features: number): string {
  const names = new Set(blobFeatureNames(features));
  return FEATURE_LABELS.filter(([n]) => names.has(n))
    .map(([, label]) => label)
    .join(' ');
}

function chunkLine(c: ChunkInfo): string {
  return (
    `\t chunk: id ${c.id.toString('hex')}, blob ${c.blobIndex}, index ${c.index}, flags 0x${c.flags.toString(16)}, ` +
    `compressed ${c.compressedSize}@${c.compressedOffset}, uncompressed ${c.uncompressedSize}@${c.uncompressedOffset}, file offset ${c.fileOffset}`
  );
}

/** Verify that each v6 blob's own ci table agrees with the bootstrap's chunk table. */
async function checkBlobMeta(o: OpenedImage): Promise<void> {
  const b = o.image.bootstrap;
  if (b.superblock.version !== 6) return;
  const byBlob = new Map<number, ChunkInfo[]>();
  for (const c of b.allChunks()) {
    const l = byBlob.get(c.blobIndex) ?? [];
    l.push(c);
    byBlob.set(c.blobIndex, l);
  }
  for (const blob of b.blobs) {
    if (blob.ciCompressedSize === 0) continue;
    const reader = await o.image.blobReader(blob.index);
    const ci = await loadBlobChunks(reader, blob);
    for (const c of byBlob.get(blob.index) ?? []) {
      const e = ci[c.index];
      if (
        e === undefined ||
        e.compressedOffset !== c.compressedOffset ||
        e.compressedSize !== c.compressedSize ||
        e.uncompressedOffset !== c.uncompressedOffset ||
        e.uncompressedSize !== c.uncompressedSize ||
        (!e.id.every((x) => x === 0) && !e.id.equals(c.id))
      ) {
        throw new NydusError(
          'ERR_FORMAT',
          `Blob ${blob.blobId}: chunk ${c.index} differs between the chunk table and the blob's ci table`,
        );
      }
    }
  }
}

/** Read and verify every distinct chunk referenced by a file; returns the count per blob. */
async function checkData(o: OpenedImage): Promise<number[]> {
  const img = o.image;
  const seen = new Set<string>();
  const perBlob = img.bootstrap.blobs.map(() => 0);
  for (const e of img.walk()) {
    if (!isReg(e.attr.mode)) continue;
    const chunks = await img.chunks(e.ino);
    let covered = 0;
    for (const c of chunks) {
      covered += c.uncompressedSize;
      const key = `${c.blobIndex}:${c.compressedOffset}:${c.compressedSize}`;
      if (seen.has(key)) continue;
      seen.add(key);
      try {
        await img.readChunk(c, { verify: true });
      } catch (err) {
        throw new NydusError('ERR_DIGEST', `File "${e.path.toString()}": ${errorText(err)}`, { cause: err });
      }
      perBlob[c.blobIndex] = (perBlob[c.blobIndex] ?? 0) + 1;
    }
    if (chunks.length > 0 && covered < e.attr.size && img.bootstrap.superblock.version === 6) {
      throw new NydusError(
        'ERR_FORMAT',
        `File "${e.path.toString()}": chunks cover ${covered} of ${e.attr.size} bytes`,
      );
    }
  }
  await checkBlobMeta(o);
  return perBlob;
}

export function checkCommand(): Command {
  return new Command('check')
    .description('Validate RAFS filesystem metadata, and the data when blobs are given')
    .argument('[BOOTSTRAP]', 'File path of RAFS metadata (or a data blob with inline metadata)')
    .option('-B, --bootstrap <file>', '[Deprecated] File path of RAFS meta blob/bootstrap')
    .option(
      '-D, --blob-dir <dir>',
      'Directory for localfs storage backend, hosting data blobs and cache files',
    )
    .option('-C, --config <file>', 'Configuration file for storage backend, cache and RAFS FUSE filesystem')
    .option('-v, --verbose', 'Output message in verbose mode', false)
    .option('-J, --output-json <file>', 'File path to save operation result in JSON format')
    .action(
      async (
        positional: string | undefined,
        opts: Record<string, string | boolean | undefined>,
        cmd: Command,
      ) => {
        const log = loggerFrom(cmd);
        const path = bootstrapArg(positional, opts['bootstrap'] as string | undefined);
        const blobArgs: { blobDir?: string; config?: string } = {};
        if (typeof opts['blobDir'] === 'string') blobArgs.blobDir = opts['blobDir'];
        if (typeof opts['config'] === 'string') blobArgs.config = opts['config'];
        const o = await openImage(path, blobArgs, log);
        try {
          const b = o.image.bootstrap;
          const sb = b.superblock;
          try {
            b.validate();
            if (opts['verbose'] === true) {
              for (const e of o.image.walk()) {
                const a = e.attr;
                process.stdout.write(
                  `inode: ${e.path.toString()}, ino ${a.ino}, mode 0o${a.mode.toString(8)}, uid ${a.uid}, gid ${a.gid}, size ${a.size}, nlink ${a.nlink}, mtime ${a.mtime}.${a.mtimeNsec}\n`,
                );
                if (isReg(a.mode))
                  for (const c of await o.image.chunks(e.ino)) process.stdout.write(`${chunkLine(c)}\n`);
              }
            }
          } catch (e) {
            throw new NydusError('ERR_FORMAT', `Failed to check bootstrap "${path}": ${errorText(e)}`, {
              cause: e,
            });
          }
          log.info(`RAFS features: ${superFlagNames(sb.flags).join(' | ')}`);
          process.stdout.write('RAFS filesystem metadata is valid, referenced data blobs: \n');
          for (const blob of b.blobs) {
            process.stdout.write(
              `\t ${blob.index}: ${blob.blobId}, compressed size ${blob.compressedSize}, uncompressed size ${blob.uncompressedSize}, ` +
                `chunk size: ${blob.chunkSize}, chunk count: ${blob.chunkCount}, features: ${formatBlobFeatures(blob.features)}\n`,
            );
          }
          if (o.hasData) {
            let counts: number[];
            try {
              counts = await checkData(o);
            } catch (e) {
              throw new NydusError('ERR_FORMAT', `Failed to check data of "${path}": ${errorText(e)}`, {
                cause: e,
              });
            }
            const total = counts.reduce((s, n) => s + n, 0);
            process.stdout.write(
              `RAFS filesystem data is valid: ${total} chunks in ${b.blobs.length} blobs verified\n`,
            );
          }
          if (typeof opts['outputJson'] === 'string') {
            await writeJsonFile(opts['outputJson'], {
              version: packageVersion(),
              bootstrap: path,
              blobs: b.blobs.map((x) => x.blobId),
              external_bootstrap: '',
              external_blobs: [],
              trace: {},
              fs_version: String(sb.version),
              compressor: sb.compressor,
            });
          }
        } finally {
          await o.image.close();
        }
      },
    );
}
