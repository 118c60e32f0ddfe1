import { mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Command, Option } from 'commander';
import { NydusError } from '../../errors/errors.js';
import type { Logger } from '../../log/logger.js';
import { hostPlatform, parsePlatform, type Platform } from '../../oci/manifest.js';
import { referenceTagOrDigest } from '../../oci/reference.js';
import { daemonConfig, NydusdProcess, registryBackendConfig } from '../../converter/nydusd-runner.js';
import { findBootstrapLayer } from '../../converter/bootstrap-layer.js';
import { isNydusEntry, pullBootstrap } from '../../converter/pull-bootstrap.js';
import { nydusdBackend } from '../../converter/object-store.js';
import { parseRef, Remotes } from '../../converter/repo.js';
import { backendFromFlags, nydusifyLogger } from './common.js';

export interface PreparedMount {
  bootstrap: string;
  configFile: string;
}

/**
 * Fetch the bootstrap of a Nydus image into `workDir` and write a nydusd config that reads its
 * blobs from the registry (or the given backend).
 */
export async function prepareMount(o: {
  target: string;
  insecure: boolean;
  platform: Platform;
  workDir: string;
  backend?: { type: string; config: Record<string, unknown> } | undefined;
  prefetch: boolean;
  log: Logger;
}): Promise<PreparedMount> {
  const remotes = new Remotes(o.log);
  try {
    const ref = parseRef(o.target, '--target');
    const client = remotes.client(ref.host, { insecure: o.insecure });
    const repo = client.repository(ref.repository);
    const m = await repo.resolveImage(referenceTagOrDigest(ref), o.platform, isNydusEntry);
    const layer = findBootstrapLayer(m.manifest);
    if (layer === undefined)
      throw new NydusError(
        'ERR_FORMAT',
        `${o.target} is not a Nydus image: its last layer is not a bootstrap layer`,
      );
    await mkdir(o.workDir, { recursive: true });
    const bootstrap = join(o.workDir, 'bootstrap');
    o.log.info(`Pulling bootstrap layer ${layer.digest} of ${o.target}`);
    await pullBootstrap(repo, layer, bootstrap);
    const backend = (o.backend !== undefined ? nydusdBackend(o.backend, o.log) : undefined) ?? {
      type: 'registry',
      config: await registryBackendConfig({ ref, plainHttp: client.scheme === 'http', insecure: o.insecure }),
    };
    const configFile = join(o.workDir, 'nydusd-config.json');
    const cfg = daemonConfig(backend, join(o.workDir, 'cache'), o.prefetch);
    await writeFile(configFile, `${JSON.stringify(cfg, null, 2)}\n`, { mode: 0o600 });
    return { bootstrap, configFile };
  } finally {
    await remotes.close();
  }
}

/** `nydusify mount` (alias `view`): serve a Nydus image from a registry until SIGINT/SIGTERM. */
export function mountCommand(): Command {
  return new Command('mount')
    .alias('view')
    .description('Mount the nydus image as a filesystem')
    .requiredOption('--target <ref>', 'Target (Nydus) image reference')
    .option('--target-insecure', 'Skip verifying server certs for HTTPS target registry', false)
    .option('--backend-type <type>', 'Type of storage backend (default: the registry of the target)')
    .option('--backend-config <json>', 'Config of storage backend in JSON')
    .option('--backend-config-file <file>', 'Config file of storage backend in JSON')
    .option('--prefetch', 'Prefetch all data of the image in the background', false)
    .option('--mount-path <dir>', 'The mountpoint of nydus image', './image-fs')
    .addOption(
      new Option(
        '--platform <platform>',
        'Choose a platform of the image to mount (os/arch[/variant])',
      ).default(undefined, 'linux/<host arch>'),
    )
    .option('--work-dir <dir>', 'The work directory for mounting the image', './tmp')
    .option('--nydusd <path>', 'The nydusd binary path (default: the one of this package)')
    .action(async (opts: Record<string, string | boolean | undefined>, cmd: Command) => {
      const log = nydusifyLogger(cmd);
      const workDir = resolve(String(opts['workDir']));
      const mountPath = resolve(String(opts['mountPath']));
      const backend = await backendFromFlags(
        opts['backendType'] as string | undefined,
        opts['backendConfig'] as string | undefined,
        opts['backendConfigFile'] as string | undefined,
      );
      const platform =
        opts['platform'] === undefined ? hostPlatform() : parsePlatform(String(opts['platform']));
      const prep = await prepareMount({
        target: String(opts['target']),
        insecure: opts['targetInsecure'] === true,
        platform,
        workDir,
        backend,
        prefetch: opts['prefetch'] === true,
        log,
      });
      await mkdir(mountPath, { recursive: true });
      const nydusdPath = opts['nydusd'] as string | undefined;
      const d = await NydusdProcess.start({
        ...(nydusdPath !== undefined ? { nydusd: nydusdPath } : {}),
        configFile: prep.configFile,
        bootstrap: prep.bootstrap,
        mountpoint: mountPath,
        apisock: join(workDir, 'nydusd.sock'),
        logFile: join(workDir, 'nydusd.log'),
        log,
      });
      log.info(
        `Mounted ${String(opts['target'])} at ${mountPath}; press Ctrl+C (SIGINT) or send SIGTERM to unmount`,
      );
      const signal = await new Promise<string>((res) => {
        const on = (s: string): void => res(s);
        process.once('SIGINT', on);
        process.once('SIGTERM', on);
        void d.exited.then(() => res('exit'));
      });
      if (signal === 'exit') {
        await d.stop();
        throw new NydusError(
          'ERR_IO',
          `nydusd exited unexpectedly: ${d.stderr.trim().split('\n').pop() ?? ''}`,
        );
      }
      log.info(`Received ${signal}, unmounting ${mountPath}`);
      await d.stop();
      log.info('Unmounted');
    });
}
