#!/usr/bin/env node
import { Command, Option } from 'commander';
import { LOG_LEVELS } from '../log/logger.js';
import { buildInfo, runCli } from './common.js';
import { checkCommand } from './image/check.js';
import { createCommand } from './image/create.js';
import { mergeCommand } from './image/merge.js';
import { exportCommand } from './image/export.js';
import { inspectCommand } from './image/inspect.js';
import { localdiskCommand } from './image/localdisk.js';
import { statCommand } from './image/stat.js';
import { unpackCommand } from './image/unpack.js';

/** `nydus-image`: build, inspect, check and convert RAFS images (upstream-compatible flags). */
export function nydusImageProgram(): Command {
  const program = new Command('nydus-image')
    .description('Build, analyze, inspect or validate RAFS filesystems/Nydus accelerated container images')
    .version(buildInfo('nydus-image'), '-V, --version', 'Print version information')
    .addOption(
      new Option('-l, --log-level <level>', 'Log level')
        .choices(LOG_LEVELS.filter((l) => l !== 'off'))
        .default('info'),
    )
    .option('-L, --log-file <file>', 'Log file path')
    .enablePositionalOptions(false);
  program.addCommand(createCommand());
  program.addCommand(mergeCommand());
  program.addCommand(checkCommand());
  program.addCommand(inspectCommand());
  program.addCommand(statCommand());
  program.addCommand(unpackCommand());
  program.addCommand(exportCommand());
  program.addCommand(localdiskCommand());
  return program;
}

await runCli('nydus-image', nydusImageProgram(), process.argv);
