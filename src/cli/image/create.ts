import { fstatSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { Command, Option } from 'commander';
import { parseCompressor, parseDigester } from '../../codec/algorithms.js';
import { encoderInfo } from '../../codec/compress.js';
import { errorText, NydusError } from '../../errors/errors.js';
import { Limits } from '../../format/flags.js';
import { isPowerOfTwo } from '../../util/cursor.js';
import { build, type SourceType } from '../../builder/build.js';
import { tuneMalloc } from '../../daemon/malloc.js';
import { parseWhiteoutSpec } from '../../builder/whiteout.js';
import { loggerFrom, packageVersion, writeJsonFile } from '../common.js';
import type { Progress } from '../progress.js';

const TYPES: Record<string, SourceType | undefined> = {
  directory: 'dir-rafs',
  'dir-rafs': 'dir-rafs',
  'tar-rafs': 'tar-rafs',
  'targz-rafs': 'targz-rafs',
  'estargz-rafs': undefined,
  'targz-ref': undefined,
  'estargz-ref': undefined,
  'estargztoc-ref': undefined,
  stargz_index: undefined,
  'tar-tarfs': undefined,
};

function invalid(msg: string): never {
  throw new NydusError('ERR_INVALID_ARG', msg);
}

/** `--chunk-size`: decimal or 0x-hex, a power of two in [4 KiB, 16 MiB]. */
export function parseChunkSize(s: string): number {
  const v = /^0x[0-9a-f]+$/i.test(s) ? parseInt(s.slice(2), 16) : /^\d+$/.test(s) ? Number(s) : NaN;
  if (!isPowerOfTwo(v) || v < Limits.MIN_CHUNK_SIZE || v > Limits.MAX_CHUNK_SIZE) {
    invalid(`Invalid --chunk-size "${s}": must be a power of two between 0x1000 and 0x1000000`);
  }
  return v;
}

/**
 * Whether the data blob is written with O_DIRECT (util/direct-io.ts): NYDUS_DIRECT_IO=1 or 0
 * decides; by default a tar coming on a pipe gets it. Such a build reads nothing from the disk,
 * so its writes have the device to themselves, and they skip the page cache's fresh pages
 * (big-files from a stream, cold, interleaved: 2.37 s buffered, 2.08 s direct). A build from a
 * directory or a tar file waits on the device for its own reads: there direct writes compete
 * with them and cost more than they save (B1 big-files from the directory: ratio 1.06 buffered,
 * 0.77 direct), while buffered ones reach the device after the build.
 */
function directBlobWrites(type: SourceType, onPipe: boolean): boolean {
  const env = process.env['NYDUS_DIRECT_IO'];
  if (env === '1' || env === '0') return env === '1';
  return type !== 'dir-rafs' && onPipe;
}

async function readStdinLines(): Promise<string[]> {
  const parts: Buffer[] = [];
  for await (const c of process.stdin) parts.push(c as Buffer);
  return Buffer.concat(parts).toString('utf8').split('\n');
}

type Opts = Record<string, string | boolean | undefined>;

export function createCommand(): Command {
  return new Command('create')
    .description('Create RAFS filesystems from directories, tar files or tar.gz files')
    .argument(
      '<SOURCE>',
      'Source directory, tar file or tar.gz file (/dev/stdin or - for a stream) to build the image from',
    )
    .addOption(
      new Option('-t, --type <type>', 'Conversion type').choices(Object.keys(TYPES)).default('dir-rafs'),
    )
    .addOption(new Option('--source-type <type>', 'Alias of --type').choices(Object.keys(TYPES)).hideHelp())
    .option('-B, --bootstrap <file>', 'File path to save the generated RAFS metadata blob')
    .option(
      '-D, --blob-dir <dir>',
      'Directory path to save generated RAFS metadata and data blobs (named by their digests)',
    )
    .option('-b, --blob <file>', 'File path to save the generated RAFS data blob')
    .option('--blob-inline-meta', 'Inline RAFS metadata and blob metadata into the data blob', false)
    .addOption(new Option('--inline-bootstrap', 'Alias of --blob-inline-meta').hideHelp())
    .option('--blob-id <id>', 'Blob id (as object id in backend/oss) (not supported yet)')
    .option('--blob-offset <n>', 'File offset to store RAFS data (not supported yet)')
    .option(
      '--chunk-size <size>',
      'Set the size of data chunks, must be power of two and between 0x1000-0x1000000',
      '0x100000',
    )
    .option('--batch-size <size>', 'Set the batch size to merge small chunks (only 0 is supported yet)', '0')
    .addOption(
      new Option('--compressor <algo>', 'Algorithm to compress data chunks')
        .choices(['none', 'lz4_block', 'zstd'])
        .default('zstd'),
    )
    .addOption(
      new Option('--digester <algo>', 'Algorithm to digest data chunks')
        .choices(['blake3', 'sha256'])
        .default('blake3'),
    )
    .option('-C, --config <file>', 'Configuration file for storage backend, cache and RAFS FUSE filesystem')
    .addOption(
      new Option('-v, --fs-version <version>', 'Set RAFS format version number')
        .choices(['5', '6'])
        .default('6'),
    )
    .option('--features <list>', 'Enable/disable features: blob-toc')
    .option('--chunk-dict <path>', 'File path of chunk dictionary for data deduplication ([bootstrap=]PATH)')
    .option('--parent-bootstrap <file>', 'File path of the parent/referenced RAFS metadata blob')
    .option('--aligned-chunk', 'Align uncompressed data chunks to 4K, only for RAFS V5', false)
    .option('--repeatable', 'Generate reproducible RAFS metadata (no uid/gid recorded)', false)
    .option('--disable-check', 'Disable validation of metadata after building', false)
    .addOption(
      new Option('--whiteout-spec <spec>', 'Set the type of whiteout specification')
        .choices(['oci', 'overlayfs', 'none'])
        .default('oci'),
    )
    .addOption(
      new Option('--prefetch-policy <policy>', 'Set data prefetch policy (patterns read from stdin)')
        .choices(['fs', 'blob', 'none'])
        .default('none'),
    )
    .option('-J, --output-json <file>', 'File path to save operation result in JSON format')
    .option('-E, --encrypt', 'Encrypt the generated RAFS metadata and data blobs (not supported yet)', false)
    .option('--blob-cache-dir <dir>', 'Directory path to generate blob cache files (not supported yet)')
    .option('--attributes <file>', 'File path of the .nydusattributes file (not supported yet)')
    .option('--external-blob <file>', 'File path to save the external blob (not supported yet)')
    .action(async (source: string, opts: Opts, cmd: Command) => {
      const log = loggerFrom(cmd);
      const str = (k: string): string | undefined => (typeof opts[k] === 'string' ? opts[k] : undefined);
      const typeName = str('sourceType') ?? str('type') ?? 'dir-rafs';
      const type = TYPES[typeName];
      if (type === undefined)
        throw new NydusError(
          'ERR_UNSUPPORTED',
          `Conversion type "${typeName}" is not supported yet (dir-rafs, tar-rafs and targz-rafs are)`,
        );
      for (const k of ['blobId', 'blobOffset', 'blobCacheDir', 'attributes', 'externalBlob']) {
        if (str(k) !== undefined)
          throw new NydusError(
            'ERR_UNSUPPORTED',
            `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} is not supported yet`,
          );
      }
      if (opts['encrypt'] === true) throw new NydusError('ERR_UNSUPPORTED', '--encrypt is not supported yet');
      if (str('batchSize') !== '0' && str('batchSize') !== '0x0')
        throw new NydusError('ERR_UNSUPPORTED', '--batch-size other than 0 is not supported yet');
      const fsVersion = str('fsVersion') === '5' ? 5 : 6;
      const compressor = parseCompressor(str('compressor') ?? 'zstd');
      const digester = parseDigester(str('digester') ?? 'blake3');
      const chunkSize = parseChunkSize(str('chunkSize') ?? '0x100000');
      const inlineMeta = opts['blobInlineMeta'] === true || opts['inlineBootstrap'] === true;
      const features = (str('features') ?? '')
        .split(',')
        .map((f) => f.trim())
        .filter((f) => f !== '');
      for (const f of features)
        if (f !== 'blob-toc') invalid(`Unknown feature "${f}" in --features, the only one is blob-toc`);
      const blobToc = features.includes('blob-toc');
      if (blobToc && fsVersion === 5) invalid('--features blob-toc requires RAFS v6 (--fs-version 6)');
      if (opts['alignedChunk'] === true && fsVersion === 6) log.info('--aligned-chunk is implied by RAFS v6');
      const bootstrap = str('bootstrap');
      const blob = str('blob');
      const blobDir = str('blobDir');
      if (inlineMeta && bootstrap !== undefined) invalid('--bootstrap conflicts with --blob-inline-meta');
      if (bootstrap === undefined && blobDir === undefined && !inlineMeta)
        invalid('One of --bootstrap, --blob-dir or --blob-inline-meta is required');
      if (inlineMeta && blob === undefined && blobDir === undefined)
        invalid('--blob-inline-meta needs --blob or --blob-dir for the output blob');
      if (blobDir !== undefined) {
        const s = await stat(blobDir).catch(() => undefined);
        if (s === undefined || !s.isDirectory())
          invalid(`--blob-dir "${blobDir}" is not an existing directory`);
      }
      const fromStdin = source === '-' || source === '/dev/stdin';
      if (type === 'dir-rafs' && fromStdin)
        invalid('A directory source cannot be read from stdin; use --type tar-rafs or targz-rafs');
      let onPipe = false;
      if (fromStdin) {
        try {
          onPipe = fstatSync(0).isFIFO();
        } catch {
          // No stdin: reading the source reports it.
        }
      } else {
        const s = await stat(source).catch((e: unknown) =>
          invalid(`Cannot access source "${source}": ${errorText(e)}`),
        );
        onPipe = s.isFIFO();
        if (type === 'dir-rafs' && !s.isDirectory())
          invalid(`Source "${source}" is not a directory (use --type tar-rafs for tar files)`);
        if (type !== 'dir-rafs' && s.isDirectory())
          invalid(`Source "${source}" is a directory, not a ${type === 'tar-rafs' ? 'tar' : 'tar.gz'} file`);
      }
      const policy = str('prefetchPolicy') ?? 'none';
      if (policy === 'blob')
        throw new NydusError('ERR_UNSUPPORTED', '--prefetch-policy blob is not supported yet; use fs');
      let patterns: string[] = [];
      if (policy === 'fs') {
        if (fromStdin) invalid('--prefetch-policy reads patterns from stdin, which is taken by the source');
        patterns = await readStdinLines();
      }
      let chunkDict = str('chunkDict');
      if (chunkDict !== undefined) {
        const m = /^(?:([a-z]+)=)?(.+)$/.exec(chunkDict);
        if (m?.[1] !== undefined && m[1] !== 'bootstrap')
          invalid(`Unknown chunk dict type "${m[1]}", only bootstrap is supported`);
        chunkDict = m?.[2];
      }
      const total =
        fromStdin || type !== 'dir-rafs' ? (fromStdin ? undefined : (await stat(source)).size) : undefined;
      // The bar is drawn only on a terminal: elsewhere its module (and cli-progress) is not loaded.
      const bar: Progress | undefined =
        process.stderr.isTTY === true
          ? (await import('../progress.js')).byteProgress('Building', total)
          : undefined;
      const codecs = encoderInfo();
      // A build allocates and frees ~1 MiB chunk and tar buffers all the time (daemon/malloc.ts).
      tuneMalloc(log);
      log.info(
        `Compressing with ${compressor === 'zstd' ? codecs.zstd : compressor === 'lz4_block' ? codecs.lz4 : 'none'}`,
      );
      const t0 = Date.now();
      let result;
      try {
        result = await build({
          source: fromStdin ? '-' : source,
          type,
          fsVersion,
          compressor,
          digester,
          chunkSize,
          alignedChunk: opts['alignedChunk'] === true,
          ...(bootstrap !== undefined ? { bootstrap } : {}),
          ...(blob !== undefined ? { blob } : {}),
          ...(blobDir !== undefined ? { blobDir } : {}),
          inlineMeta,
          blobToc,
          ...(str('parentBootstrap') !== undefined ? { parentBootstrap: str('parentBootstrap')! } : {}),
          ...(chunkDict !== undefined ? { chunkDict } : {}),
          whiteoutSpec: parseWhiteoutSpec(str('whiteoutSpec') ?? 'oci'),
          prefetchPatterns: patterns,
          repeatable: opts['repeatable'] === true,
          disableCheck: opts['disableCheck'] === true,
          directIo: directBlobWrites(type, onPipe),
          log,
          ...(bar !== undefined ? { onProgress: (n: number) => bar.update(n) } : {}),
        });
      } finally {
        bar?.stop();
      }
      const s = result.stats;
      const secs = (Date.now() - t0) / 1000;
      if (result.bootstrapPath !== undefined)
        log.info(`Successfully built RAFS filesystem: meta blob path: ${result.bootstrapPath}`);
      if (result.newBlob !== undefined)
        log.info(`Data blob ${result.newBlob.id}: ${result.newBlob.size} bytes at ${result.newBlob.path}`);
      log.info(`Data blob ids: ${result.blobs.join(', ') || '(none)'}`);
      log.info(
        `${s.files} files, ${s.sourceBytes} bytes in ${s.chunks} chunks (${s.dedupChunks} deduplicated, ${s.dedupBytes} bytes saved), ${s.storedBytes} bytes stored, ${secs.toFixed(2)} s`,
      );
      const json = str('outputJson');
      if (json !== undefined) {
        await writeJsonFile(
          json,
          {
            version: packageVersion(),
            bootstrap: result.bootstrapPath ?? '',
            blobs: result.blobs,
            external_bootstrap: '',
            external_blobs: [],
            trace: {
              dedup_chunks: s.dedupChunks,
              dedup_bytes: s.dedupBytes,
              source_bytes: s.sourceBytes,
              stored_bytes: s.storedBytes,
              total_build_seconds: secs,
            },
            fs_version: String(fsVersion),
            compressor,
          },
          true,
        );
      }
    });
}
