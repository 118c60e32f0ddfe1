#!/usr/bin/env node
import { Command, Option } from 'commander';
import { buildInfo, runCli } from './common.js';
import { checkCommand } from './nydusify/check.js';
import { convertCommand } from './nydusify/convert.js';
import { copyCommand } from './nydusify/copy.js';
import { mountCommand } from './nydusify/mount.js';

/** Log levels nydusify accepts (upstream's logrus names). */
export const NYDUSIFY_LOG_LEVELS = ['panic', 'fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const;

/** `nydusify`: convert OCI images in a registry to Nydus images, check, mount and copy them. */
export function nydusifyProgram(): Command {
  const program = new Command('nydusify')
    .description('Nydusify converts and checks Nydus images in registries')
    .version(buildInfo('nydusify'), '-v, --version', 'Print version information')
    .option('-D, --debug', 'Enable debug log level, overwrites the --log-level option')
    .addOption(
      new Option('-l, --log-level <level>', 'Set log level').choices(NYDUSIFY_LOG_LEVELS).default('info'),
    )
    .option('--log-file <file>', 'Write logs to a file')
    .enablePositionalOptions(false);
  program.addCommand(convertCommand());
  program.addCommand(checkCommand());
  program.addCommand(mountCommand());
  program.addCommand(copyCommand());
  return program;
}

await runCli('nydusify', nydusifyProgram(), process.argv);
