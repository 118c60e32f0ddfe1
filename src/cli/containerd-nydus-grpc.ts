#!/usr/bin/env node
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Command } from 'commander';
import { createLogger, parseLogLevel } from '../log/logger.js';
import { loadSnapshotterConfig, type SnapshotterFlags } from '../snapshotter/config.js';
import { startSnapshotter } from '../snapshotter/service.js';
import { buildInfo, runCli } from './common.js';

/**
 * `containerd-nydus-grpc`: the Nydus remote snapshotter for containerd (upstream
 * nydus-snapshotter's binary, flags and TOML config; upstream-surface §7).
 */
export function snapshotterProgram(): Command {
  return new Command('containerd-nydus-grpc')
    .description('Nydus remote snapshotter for containerd')
    .version(buildInfo('containerd-nydus-grpc'), '-v, --version', 'Print version information')
    .option('--config <file>', 'Snapshotter TOML config (version = 1)')
    .option('--root <dir>', 'Directory for the snapshotter state')
    .option('--address <sock>', "Unix socket for containerd's Snapshots gRPC API")
    .option('--nydusd <path>', 'nydusd binary (default: found on PATH)')
    .option('--nydusd-path <path>', 'Alias of --nydusd')
    .option('--nydus-image <path>', 'nydus-image binary (default: found on PATH)')
    .option('--nydusd-config <file>', 'nydusd config template (default /etc/nydus/nydusd-config.json)')
    .option('--config-path <file>', 'Alias of --nydusd-config')
    .option('--nydus-overlayfs-path <path>', 'nydus-overlayfs binary')
    .option('--daemon-mode <mode>', 'dedicated, multiple (= dedicated), shared or none')
    .option('--fs-driver <driver>', 'fusedev (the only one supported here)')
    .option('--log-level <level>', 'trace, debug, info, warn or error')
    .option('--log-to-stdout', 'Log to standard output instead of the log file')
    .action(async (o: Record<string, string | boolean | undefined>) => {
      const s = (k: string): string | undefined => (typeof o[k] === 'string' ? o[k] : undefined);
      const flags: SnapshotterFlags = {};
      const set = <K extends keyof SnapshotterFlags>(k: K, v: SnapshotterFlags[K] | undefined): void => {
        if (v !== undefined) flags[k] = v;
      };
      set('config', s('config'));
      set('root', s('root'));
      set('address', s('address'));
      set('nydusdPath', s('nydusd') ?? s('nydusdPath'));
      set('nydusImagePath', s('nydusImage'));
      set('nydusdConfig', s('nydusdConfig') ?? s('configPath'));
      set('nydusOverlayfsPath', s('nydusOverlayfsPath'));
      set('daemonMode', s('daemonMode'));
      set('fsDriver', s('fsDriver'));
      set('logLevel', s('logLevel'));
      if (o['logToStdout'] === true) flags.logToStdout = true;
      const { config, warnings } = loadSnapshotterConfig(flags);
      const level = parseLogLevel(config.log.level);
      let log;
      if (config.log.logToStdout) {
        log = createLogger(level, undefined, (line) => process.stdout.write(line));
      } else {
        mkdirSync(config.log.dir, { recursive: true });
        log = createLogger(level, join(config.log.dir, 'nydus-snapshotter.log'));
      }
      for (const w of warnings) log.warn(`Config: ${w.key}: ${w.message}`);
      const running = await startSnapshotter(config, log, {
        nydusdConfigGiven: flags.nydusdConfig !== undefined,
      });
      await new Promise<void>((resolve) => {
        const stop = (sig: string): void => {
          log.info(`Received ${sig}: shutting down`);
          running.close().then(resolve, (e: unknown) => {
            log.error(`Shutdown failed: ${String(e)}`);
            resolve();
          });
        };
        process.once('SIGINT', () => stop('SIGINT'));
        process.once('SIGTERM', () => stop('SIGTERM'));
      });
    });
}

await runCli('containerd-nydus-grpc', snapshotterProgram(), process.argv);
