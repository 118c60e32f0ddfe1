import { accessSync, constants, existsSync, mkdirSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NydusError } from '../errors/errors.js';
import type { Logger } from '../log/logger.js';
import type { SnapshotterConfig } from './config.js';
import { DaemonManager } from './daemons.js';
import { addSnapshotsService, createGrpcServer, listenUnix, type GrpcServer } from './grpc.js';
import { Keychain } from './keychain.js';
import { addCriImageProxy } from './cri-proxy.js';
import { MetaStore } from './metastore.js';
import { NydusSnapshotter } from './nydus.js';
import { loadTemplate } from './nydusd-config.js';
import { OverlaySnapshotter } from './overlay.js';
import { NydusStore } from './store.js';
import { SnapshotterMetrics } from './metrics.js';
import { SystemController } from './system.js';
import { CredentialRenewal } from './renewal.js';

/**
 * The snapshotter service: the stores under `root`, the daemons recovered, the Nydus
 * snapshotter and containerd's Snapshots gRPC API on the unix socket.
 */

export interface RunningSnapshotter {
  snapshotter: NydusSnapshotter;
  grpc: GrpcServer;
  close(): Promise<void>;
}

function executable(p: string): boolean {
  try {
    accessSync(p, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The nydusd command: the configured path, else `nydusd` on PATH, else this package's own. */
export function resolveNydusd(configured: string, env: NodeJS.ProcessEnv = process.env): string[] {
  if (configured !== '') {
    if (!existsSync(configured))
      throw new NydusError('ERR_INVALID_ARG', `nydusd binary "${configured}" does not exist`);
    if (configured.endsWith('.cjs') || configured.endsWith('.js')) return [process.execPath, configured];
    if (!executable(configured))
      throw new NydusError('ERR_INVALID_ARG', `nydusd binary "${configured}" is not executable`);
    return [configured];
  }
  for (const dir of (env['PATH'] ?? '').split(delimiter)) {
    if (dir === '') continue;
    const p = join(dir, 'nydusd');
    if (executable(p)) return [p];
  }
  const bundled = join(dirname(fileURLToPath(import.meta.url)), '..', 'cli', 'nydusd.cjs');
  if (existsSync(bundled)) return [process.execPath, bundled];
  throw new NydusError('ERR_INVALID_ARG', 'nydusd was not found on PATH; give its path with --nydusd');
}

export async function startSnapshotter(
  config: SnapshotterConfig,
  log: Logger,
  opts: { nydusdConfigGiven: boolean },
): Promise<RunningSnapshotter> {
  if (config.daemon.fsDriver !== 'fusedev') {
    throw new NydusError(
      'ERR_UNSUPPORTED',
      `fs_driver "${config.daemon.fsDriver}" is not supported (only fusedev)`,
    );
  }
  if (config.daemonMode === 'none') {
    throw new NydusError('ERR_UNSUPPORTED', 'daemon_mode "none" is not supported (use dedicated or shared)');
  }
  const nydusd = resolveNydusd(config.daemon.nydusdPath);
  const template = loadTemplate(config.daemon.nydusdConfig, opts.nydusdConfigGiven);
  const root = config.root;
  mkdirSync(join(root, 'snapshots'), { recursive: true, mode: 0o700 });
  const cacheDir = config.cacheManager.cacheDir;
  mkdirSync(cacheDir, { recursive: true, mode: 0o700 });

  const ms = MetaStore.open(join(root, 'metadata.db'));
  const store = NydusStore.open(join(root, 'nydus.db'));
  const overlay = new OverlaySnapshotter({
    root,
    ms,
    log,
    syncRemove: config.snapshot.syncRemove,
    volatile: config.snapshot.enableOverlayfsVolatile,
  });
  const prefetch = new Map<string, string>();
  const daemons = new DaemonManager({
    prefetch,
    root,
    mode: config.daemonMode,
    nydusd,
    store,
    recoverPolicy: config.daemon.recoverPolicy,
    failoverPolicy: config.daemon.failoverPolicy,
    threads: config.daemon.threadsNumber,
    logLevel: config.log.level,
    log,
  });
  await daemons.recover();
  const keychain = new Keychain();
  const snapshotter = new NydusSnapshotter({
    ms,
    overlay,
    daemons,
    keychain,
    template,
    cacheDir,
    cleanupOnClose: config.cleanupOnClose,
    mirrorsDir: config.remote.mirrorsConfig.dir,
    nydusOverlayfs: config.snapshot.enableNydusOverlayfs
      ? { path: config.snapshot.nydusOverlayfsPath }
      : undefined,
    log,
  });
  const metrics =
    config.metrics.address === ''
      ? undefined
      : new SnapshotterMetrics({
          address: config.metrics.address,
          collectIntervalMs: config.metrics.collectIntervalMs,
          hungIoIntervalMs: config.metrics.hungIoIntervalMs,
          daemons,
          cacheDir,
          log,
        });
  const server = createGrpcServer();
  addSnapshotsService(server, metrics === undefined ? snapshotter : metrics.timed(snapshotter), log);
  const renewal = new CredentialRenewal(daemons, keychain, log);
  if (config.remote.auth.credentialRenewalIntervalMs > 0)
    renewal.start(config.remote.auth.credentialRenewalIntervalMs);
  const criClient = config.remote.auth.enableCriKeychain
    ? addCriImageProxy(server, config.remote.auth.imageServiceAddress, keychain, log)
    : undefined;
  const g = await listenUnix(server, config.address, { uid: config.uid, gid: config.gid });
  await metrics?.start();
  const system = config.system.enable
    ? await SystemController.start({
        address: config.system.address,
        uid: config.system.uid,
        gid: config.system.gid,
        daemons,
        prefetch,
        upgrade: (path) => daemons.upgrade(resolveNydusd(path)),
        log,
      })
    : undefined;
  log.info(
    `containerd-nydus-grpc serving on ${config.address} (root ${root}, daemon mode ${config.daemonMode})`,
  );
  let closing: Promise<void> | undefined;
  return {
    snapshotter,
    grpc: g,
    close: () =>
      (closing ??= (async () => {
        await g.close();
        await system?.close();
        await metrics?.close();
        criClient?.close();
        await renewal.close();
        await snapshotter.close();
        store.close();
      })()),
  };
}
