import { Command, Option } from 'commander';
import { copyImage, localPathOf } from '../../converter/copy.js';
import { isObjectStoreType, objectStoreTable, type ObjectStoreType } from '../../converter/object-store.js';
import { parseRef } from '../../converter/repo.js';
import { NydusError } from '../../errors/errors.js';
import { hostPlatform } from '../../oci/manifest.js';
import { parsePlatforms } from './convert.js';
import { backendFromFlags, nydusifyLogger } from './common.js';

/** Human sizes as upstream's `--push-chunk-size` takes them: "0", "1MB", "512KiB", "1048576". */
export function parseHumanSize(s: string, flag: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)(b?)\s*$/i.exec(s);
  if (m === null)
    throw new NydusError('ERR_INVALID_ARG', `Invalid ${flag} "${s}": expected a size like 0, 1MB or 512KiB`);
  const pow = ['', 'k', 'm', 'g', 't'].indexOf(m[2]!.toLowerCase());
  const base = m[3] !== '' ? 1024 : 1000;
  return Math.round(Number(m[1]) * base ** pow);
}

/** `nydusify copy`: copy an OCI or Nydus image between registries or to/from an OCI archive. */
export function copyCommand(): Command {
  return new Command('copy')
    .description('Copy an image from source to target (registry references or file://PATH OCI archives)')
    .addOption(
      new Option('--source <ref>', 'Source image reference, or file://PATH of an OCI archive')
        .makeOptionMandatory()
        .env('SOURCE'),
    )
    .addOption(
      new Option('--target <ref>', 'Target image reference, or file://PATH of an OCI archive')
        .makeOptionMandatory()
        .env('TARGET'),
    )
    .addOption(
      new Option('--source-insecure', 'Skip verifying server certs for HTTPS source registry').env(
        'SOURCE_INSECURE',
      ),
    )
    .addOption(
      new Option('--target-insecure', 'Skip verifying server certs for HTTPS target registry').env(
        'TARGET_INSECURE',
      ),
    )
    .addOption(
      new Option(
        '--source-backend-type <type>',
        "Type of storage backend of the source Nydus image's blobs, possible values: 'oss', 's3'",
      ).env('BACKEND_TYPE'),
    )
    .addOption(
      new Option('--source-backend-config <json>', 'Json configuration string for storage backend').env(
        'BACKEND_CONFIG',
      ),
    )
    .addOption(
      new Option('--source-backend-config-file <file>', 'Json configuration file for storage backend').env(
        'BACKEND_CONFIG_FILE',
      ),
    )
    .option('--plain-http', 'Use plain HTTP for the registries')
    .option('--all-platforms', 'Copy images for all platforms, conflicts with --platform')
    .option(
      '--platform <platforms>',
      "Copy images for specific platforms, for example: 'linux/amd64,linux/arm64'",
      `linux/${hostPlatform().architecture}`,
    )
    .addOption(
      new Option(
        '--push-chunk-size <size>',
        'Chunk size for pushing a blob layer in chunked (0 means the whole blob)',
      )
        .default('0MB')
        .env('PUSH_CHUNK_SIZE'),
    )
    .addOption(
      new Option('--work-dir <dir>', 'Working directory for image copy').default('./tmp').env('WORK_DIR'),
    )
    .addOption(
      new Option('--nydus-image <path>', 'Path to the nydus-image binary (ignored)')
        .default('nydus-image')
        .env('NYDUS_IMAGE'),
    )
    .action(async (opts: Record<string, string | boolean | undefined>, cmd: Command) => {
      const log = nydusifyLogger(cmd);
      const str = (k: string): string | undefined => (typeof opts[k] === 'string' ? opts[k] : undefined);
      const flag = (k: string): boolean => opts[k] === true || opts[k] === 'true';
      const source = str('source')!;
      const target = str('target')!;
      if (localPathOf(source) === undefined) parseRef(source, '--source');
      if (localPathOf(target) === undefined) parseRef(target, '--target');
      const all = flag('allPlatforms');
      if (all && cmd.getOptionValueSource('platform') === 'cli')
        throw new NydusError('ERR_INVALID_ARG', '--all-platforms conflicts with --platform');
      const plainHttp = flag('plainHttp');
      const given = await backendFromFlags(
        str('sourceBackendType'),
        str('sourceBackendConfig'),
        str('sourceBackendConfigFile'),
      );
      let sourceBackend: { type: ObjectStoreType; config: Record<string, unknown> } | undefined;
      if (given !== undefined) {
        if (!isObjectStoreType(given.type))
          throw new NydusError('ERR_INVALID_ARG', '--source-backend-type should be one of [oss s3]');
        objectStoreTable(given.type, given.config);
        sourceBackend = { type: given.type, config: given.config };
      }
      await copyImage({
        sourceBackend,
        source,
        target,
        sourceRemote: { insecure: flag('sourceInsecure'), plainHttp },
        targetRemote: { insecure: flag('targetInsecure'), plainHttp },
        allPlatforms: all,
        platforms: all ? [] : parsePlatforms(str('platform') ?? ''),
        pushChunkSize: parseHumanSize(str('pushChunkSize') ?? '0', '--push-chunk-size'),
        workDir: str('workDir') ?? './tmp',
        log,
      });
    });
}
