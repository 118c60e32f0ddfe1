import { readFileSync } from 'node:fs';
import cliProgress from 'cli-progress';
import { Command, Option } from 'commander';
import {
  convertImage,
  parseChunkDictArg,
  type ConvertEvents,
  type ConvertOptions,
} from '../../converter/convert.js';
import { isObjectStoreType, objectStoreTable } from '../../converter/object-store.js';
import { parseRef } from '../../converter/repo.js';
import { NydusError } from '../../errors/errors.js';
import { hostPlatform, parsePlatform, type Platform } from '../../oci/manifest.js';
import { formatReference } from '../../oci/reference.js';
import { writeJsonFile } from '../common.js';
import { parseChunkSize } from '../image/create.js';
import { backendFromFlags, nydusifyLogger } from './common.js';

const invalid = (msg: string): never => {
  throw new NydusError('ERR_INVALID_ARG', msg);
};

/** Go-style duration ("5s", "1m30s", "500ms", "1h") in milliseconds. */
export function parseGoDuration(s: string, flag: string): number {
  const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/g;
  const unit: Record<string, number> = {
    ns: 1e-6,
    us: 1e-3,
    µs: 1e-3,
    ms: 1,
    s: 1000,
    m: 60_000,
    h: 3_600_000,
  };
  const t = s.trim();
  if (t === '0') return 0;
  let ms = 0;
  let consumed = 0;
  for (const m of t.matchAll(re)) {
    if (m.index !== consumed) break;
    ms += Number(m[1]) * unit[m[2]!]!;
    consumed += m[0].length;
  }
  if (consumed === 0 || consumed !== t.length)
    invalid(`Invalid ${flag} "${s}": expected a duration like 5s, 1m or 500ms`);
  return ms;
}

/** `--platform linux/amd64,linux/arm64`. */
export function parsePlatforms(s: string): Platform[] {
  return s
    .split(',')
    .map((p) => p.trim())
    .filter((p) => p !== '')
    .map((p) => parsePlatform(p));
}

/** Upstream's `--target-suffix`: appended to the source tag (digest sources refused). */
export function targetFromSuffix(source: string, suffix: string): string {
  const r = parseRef(source, '--source');
  if (r.digest !== undefined)
    invalid(`--target-suffix cannot be used with a digest source reference "${source}"`);
  return formatReference({ ...r, tag: `${r.tag ?? 'latest'}${suffix}`, digest: undefined });
}

/**
 * Layer progress bars on stderr when it is a terminal. The bars are drawn only while layers are
 * converting (the display stops, clearing them, when the last one is done), and log lines meanwhile
 * go above them: written straight, the next redraw would cover them.
 */
function progressEvents(): {
  events: ConvertEvents | undefined;
  stop(): void;
  write: ((line: string) => void) | undefined;
} {
  if (process.stderr.isTTY !== true) return { events: undefined, stop: () => undefined, write: undefined };
  let multi: cliProgress.MultiBar | undefined;
  const bars = new Map<string, cliProgress.SingleBar>();
  const kib = (n: number): number => Math.round(n / 1024);
  const stop = (): void => {
    multi?.stop();
    multi = undefined;
    bars.clear();
  };
  return {
    events: {
      layerStart(id, label, total) {
        multi ??= new cliProgress.MultiBar(
          {
            stream: process.stderr,
            format: '{label} [{bar}] {percentage}% | {value}/{total} KiB',
            hideCursor: true,
            clearOnComplete: true,
          },
          cliProgress.Presets.shades_classic,
        );
        bars.set(id, multi.create(kib(total), 0, { label }));
      },
      layerProgress(id, done) {
        bars.get(id)?.update(kib(done));
      },
      layerDone(id) {
        const b = bars.get(id);
        if (b === undefined) return;
        b.update(b.getTotal());
        multi?.remove(b);
        bars.delete(id);
        if (bars.size === 0) stop();
      },
    },
    stop,
    write: (line) => (multi !== undefined ? multi.log(line) : process.stderr.write(line)),
  };
}

function env(o: Option, name: string): Option {
  return o.env(name);
}

/** `nydusify convert`: OCI image in a registry to a Nydus image. */
export function convertCommand(): Command {
  const arch = hostPlatform();
  return new Command('convert')
    .description(
      'Generate a Nydus image from an OCI image (the builder runs in-process: --nydus-image is accepted and ignored)',
    )
    .addOption(
      env(new Option('--source <ref>', 'Source OCI image reference').makeOptionMandatory(), 'SOURCE'),
    )
    .addOption(env(new Option('--target <ref>', 'Target (Nydus) image reference'), 'TARGET'))
    .addOption(
      env(
        new Option(
          '--target-suffix <suffix>',
          'Generate the target image reference by adding a suffix to the source image reference, conflicts with --target',
        ),
        'TARGET_SUFFIX',
      ),
    )
    .addOption(
      env(
        new Option('--source-insecure', 'Skip verifying server certs for HTTPS source registry'),
        'SOURCE_INSECURE',
      ),
    )
    .addOption(
      env(
        new Option('--target-insecure', 'Skip verifying server certs for HTTPS target registry'),
        'TARGET_INSECURE',
      ),
    )
    .addOption(
      env(
        new Option(
          '--backend-type <type>',
          "Type of storage backend, possible values: 'oss', 's3', 'localfs'",
        ),
        'BACKEND_TYPE',
      ),
    )
    .addOption(
      env(
        new Option('--backend-config <json>', 'Json configuration string for storage backend'),
        'BACKEND_CONFIG',
      ),
    )
    .addOption(
      env(
        new Option('--backend-config-file <file>', 'Json configuration file for storage backend'),
        'BACKEND_CONFIG_FILE',
      ),
    )
    .addOption(
      env(
        new Option(
          '--backend-force-push',
          'Force to push Nydus blobs even if they already exist in storage backend',
        ),
        'BACKEND_FORCE_PUSH',
      ),
    )
    .addOption(
      env(
        new Option('--build-cache <ref>', 'Specify a cache image to accelerate nydus image conversion'),
        'BUILD_CACHE',
      ),
    )
    .addOption(
      env(
        new Option(
          '--build-cache-tag <tag>',
          'Use $target:$build-cache-tag as cache image, conflict with --build-cache',
        ),
        'BUILD_CACHE_TAG',
      ),
    )
    .addOption(
      env(
        new Option('--build-cache-version <v>', 'Version number to filter cache images').default('v1'),
        'BUILD_CACHE_VERSION',
      ),
    )
    .addOption(
      env(
        new Option('--build-cache-insecure', 'Skip verifying server certs for HTTPS cache registry'),
        'BUILD_CACHE_INSECURE',
      ),
    )
    .addOption(
      env(
        new Option('--build-cache-max-records <n>', 'Maximum cache records in a cache image').default('200'),
        'BUILD_CACHE_MAX_RECORDS',
      ),
    )
    .addOption(
      env(
        new Option(
          '--chunk-dict <expr>',
          'Specify a chunk dict expression for chunk deduplication, for examples: bootstrap:registry:localhost:5000/namespace/app:chunk_dict, bootstrap:local:/path/to/chunk_dict.boot',
        ),
        'CHUNK_DICT',
      ),
    )
    .addOption(
      env(
        new Option('--chunk-dict-insecure', 'Skip verifying server certs for HTTPS dict registry'),
        'CHUNK_DICT_INSECURE',
      ),
    )
    .addOption(
      env(
        new Option(
          '--merge-platform',
          'Generate an OCI image index with both OCI and Nydus manifests for the image',
        ),
        'MERGE_PLATFORM',
      ),
    )
    .addOption(new Option('--multi-platform', 'Alias of --merge-platform').hideHelp())
    .option('--all-platforms', 'Convert images for all platforms, conflicts with --platform')
    .option(
      '--platform <platforms>',
      "Convert images for specific platforms, for example: 'linux/amd64,linux/arm64'",
      `linux/${arch.architecture}`,
    )
    .addOption(
      env(new Option('--oci-ref', 'Convert to OCI-referenced nydus zran image (not supported)'), 'OCI_REF'),
    )
    .addOption(
      env(
        new Option('--with-referrer', 'Associate a reference to the source image (manifest subject)'),
        'WITH_REFERRER',
      ),
    )
    .addOption(env(new Option('--oci', 'Convert Docker media types to OCI media types'), 'OCI'))
    .addOption(
      env(new Option('--reverse', 'Perform reverse conversion from Nydus to OCI (not supported)'), 'REVERSE'),
    )
    .addOption(new Option('--docker-v2-format').hideHelp())
    .addOption(
      env(
        new Option('--fs-version <v>', 'Nydus image format version number, possible values: 5, 6')
          .choices(['5', '6'])
          .default('6'),
        'FS_VERSION',
      ),
    )
    .addOption(
      env(
        new Option('--fs-align-chunk', 'Enable chunk data alignment(4K) for Nydus image'),
        'FS_ALIGN_CHUNK',
      ),
    )
    .addOption(
      env(
        new Option('--backend-aligned-chunk', '[Deprecated] Enable chunk data alignment(4K)').hideHelp(),
        'BACKEND_ALIGNED_CHUNK',
      ),
    )
    .addOption(
      env(
        new Option('--prefetch-dir <dir>', 'Specify an absolute path within the image for prefetch'),
        'PREFETCH_DIR',
      ),
    )
    .addOption(
      env(
        new Option(
          '--prefetch-patterns',
          'Read prefetch list from STDIN, please input absolute paths line by line',
        ),
        'PREFETCH_PATTERNS',
      ),
    )
    .addOption(
      env(
        new Option(
          '--compressor <algo>',
          'Algorithm to compress image data blob, possible values: none, lz4_block, zstd',
        )
          .choices(['none', 'lz4_block', 'zstd'])
          .default('zstd'),
        'COMPRESSOR',
      ),
    )
    .addOption(
      env(
        new Option(
          '--fs-chunk-size <size>',
          'size of nydus image data chunk, must be power of two and between 0x1000-0x1000000',
        ).default('0x100000'),
        'FS_CHUNK_SIZE',
      ),
    )
    .addOption(new Option('--chunk-size <size>', 'Alias of --fs-chunk-size').hideHelp())
    .addOption(
      env(
        new Option('--batch-size <size>', 'size of batch data chunks (only 0 is supported)').default('0'),
        'BATCH_SIZE',
      ),
    )
    .addOption(
      env(
        new Option('--work-dir <dir>', 'Working directory for image conversion').default('./tmp'),
        'WORK_DIR',
      ),
    )
    .addOption(
      env(
        new Option(
          '--nydus-image <path>',
          'Path to the nydus-image binary (ignored: the builder runs in-process)',
        ).default('nydus-image'),
        'NYDUS_IMAGE',
      ),
    )
    .addOption(
      env(
        new Option(
          '--output-json <file>',
          'File path to save the metrics collected during conversion in JSON format',
        ),
        'OUTPUT_JSON',
      ),
    )
    .addOption(env(new Option('--plain-http', 'Enable plain http for Nydus image push'), 'PLAIN_HTTP'))
    .addOption(
      env(
        new Option('--push-retry-count <n>', 'Number of retries when pushing to registry fails').default('3'),
        'PUSH_RETRY_COUNT',
      ),
    )
    .addOption(
      env(
        new Option('--push-retry-delay <d>', 'Delay between push retries (e.g. 5s, 1m, 1h)').default('5s'),
        'PUSH_RETRY_DELAY',
      ),
    )
    .action(async (opts: Record<string, string | boolean | undefined>, cmd: Command) => {
      const progress = progressEvents();
      const log = nydusifyLogger(cmd, progress.write);
      const str = (k: string): string | undefined => (typeof opts[k] === 'string' ? opts[k] : undefined);
      const flag = (k: string): boolean => opts[k] === true || opts[k] === 'true';
      const source = str('source')!;
      parseRef(source, '--source');
      let target = str('target');
      const suffix = str('targetSuffix');
      if (target !== undefined && suffix !== undefined) invalid('--target conflicts with --target-suffix');
      if (target === undefined && suffix === undefined) invalid('--target or --target-suffix is required');
      if (suffix !== undefined) target = targetFromSuffix(source, suffix);
      const targetRef = parseRef(target!, '--target');
      if (targetRef.digest !== undefined) invalid(`--target "${target}" must name a tag, not a digest`);
      if (flag('ociRef'))
        throw new NydusError('ERR_UNSUPPORTED', '--oci-ref (zran images) is not supported yet');
      if (flag('reverse')) throw new NydusError('ERR_UNSUPPORTED', '--reverse is not supported yet');
      if (str('batchSize') !== undefined && !/^(0|0x0+)$/.test(str('batchSize')!))
        throw new NydusError(
          'ERR_UNSUPPORTED',
          `--batch-size ${str('batchSize')} is not supported yet (only 0)`,
        );
      if (flag('docker-v2-format') || flag('dockerV2Format'))
        log.warn('the option `--docker-v2-format` has been deprecated, use `--oci` instead');

      // Build cache.
      const cacheRefText = str('buildCache');
      const cacheTag = str('buildCacheTag');
      if (cacheRefText !== undefined && cacheTag !== undefined)
        invalid('--build-cache conflicts with --build-cache-tag');
      const maxRecords = Number(str('buildCacheMaxRecords') ?? '200');
      if (!Number.isInteger(maxRecords) || maxRecords < 1)
        invalid('--build-cache-max-records should be greater than 0');
      if (maxRecords > 200) invalid('--build-cache-max-records should not be greater than 200');
      const cacheRef =
        cacheTag !== undefined ? `${targetRef.host}/${targetRef.repository}:${cacheTag}` : cacheRefText;

      // Backend.
      const backendType = str('backendType');
      let backend: ConvertOptions['backend'];
      if (backendType !== undefined && backendType !== '') {
        if (backendType !== 'localfs' && !isObjectStoreType(backendType))
          invalid(`--backend-type should be one of [oss s3 localfs]`);
        const given = await backendFromFlags(backendType, str('backendConfig'), str('backendConfigFile'));
        const cfg = given!.config;
        const forcePush = flag('backendForcePush');
        if (isObjectStoreType(backendType)) {
          // Checked now: a bad config fails before anything is pulled.
          objectStoreTable(backendType, cfg);
          backend = { type: backendType, config: cfg, forcePush };
        } else {
          const dir = cfg['dir'];
          if (typeof dir !== 'string' || dir === '')
            invalid('no `dir` option is specified in the localfs backend config');
          backend = { type: 'localfs', dir: dir as string, forcePush };
        }
      }

      // Prefetch.
      const prefetchDir = str('prefetchDir');
      if (prefetchDir !== undefined && flag('prefetchPatterns'))
        invalid('--prefetch-dir conflicts with --prefetch-patterns');
      let patterns = '/';
      if (flag('prefetchPatterns')) patterns = readFileSync(0, 'utf8');
      if (prefetchDir !== undefined) patterns = prefetchDir;
      if (patterns.trim() === '') patterns = '/';

      const chunkSize = parseChunkSize(str('chunkSize') ?? str('fsChunkSize') ?? '0x100000');
      const plainHttp = flag('plainHttp');
      const sourceRemote = { insecure: flag('sourceInsecure'), plainHttp };
      const targetRemote = { insecure: flag('targetInsecure'), plainHttp };
      const retryCount = Number(str('pushRetryCount') ?? '3');
      if (!Number.isInteger(retryCount) || retryCount < 0)
        invalid(`Invalid --push-retry-count "${str('pushRetryCount')}"`);
      const allPlatforms = flag('allPlatforms');
      const platformText = str('platform') ?? '';
      if (allPlatforms && cmd.getOptionValueSource('platform') === 'cli')
        invalid('--all-platforms conflicts with --platform');
      const chunkDictText = str('chunkDict');
      let chunkDict = chunkDictText === undefined ? undefined : parseChunkDictArg(chunkDictText);
      if (chunkDict?.source === 'registry')
        chunkDict = { ...chunkDict, remote: { insecure: flag('chunkDictInsecure'), plainHttp } };

      const o: ConvertOptions = {
        source,
        target: target!,
        sourceRemote,
        targetRemote,
        platforms: parsePlatforms(platformText),
        allPlatforms,
        mergePlatform: flag('mergePlatform') || flag('multiPlatform'),
        oci: flag('oci'),
        withReferrer: flag('withReferrer'),
        fsVersion: str('fsVersion') === '5' ? 5 : 6,
        compressor: (str('compressor') ?? 'zstd') as ConvertOptions['compressor'],
        chunkSize,
        alignedChunk: flag('fsAlignChunk') || flag('backendAlignedChunk'),
        prefetchPatterns: patterns
          .split('\n')
          .map((p) => p.trim())
          .filter((p) => p !== ''),
        workDir: str('workDir') ?? './tmp',
        ...(chunkDict !== undefined ? { chunkDict } : {}),
        ...(cacheRef !== undefined
          ? {
              buildCache: {
                ref: cacheRef,
                version: str('buildCacheVersion') ?? 'v1',
                maxRecords,
                remote: { insecure: flag('buildCacheInsecure') || flag('targetInsecure'), plainHttp },
              },
            }
          : {}),
        ...(backend !== undefined ? { backend } : {}),
        pushRetryCount: retryCount,
        pushRetryDelayMs: parseGoDuration(str('pushRetryDelay') ?? '5s', '--push-retry-delay'),
        log,
        ...(progress.events !== undefined ? { events: progress.events } : {}),
      };
      const outputJson = str('outputJson');
      try {
        const r = await convertImage(o);
        if (outputJson !== undefined) await writeJsonFile(outputJson, r.metric);
      } finally {
        progress.stop();
      }
    });
}
