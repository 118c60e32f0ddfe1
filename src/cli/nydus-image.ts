#!/usr/bin/env node
import { Command, Option } from 'commander';
import { LOG_LEVELS } from '../log/logger.js';
import { buildInfo, runCli } from './common.js';

/**
 * Subcommands, each loaded only when used: a `create` never loads the modules of `inspect`,
 * `check` or `unpack` (start-up is most of a small build's time).
 */
const SUBCOMMANDS: Record<string, () => Promise<Command>> = {
  create: async () => (await import('./image/create.js')).createCommand(),
  merge: async () => (await import('./image/merge.js')).mergeCommand(),
  check: async () => (await import('./image/check.js')).checkCommand(),
  inspect: async () => (await import('./image/inspect.js')).inspectCommand(),
  stat: async () => (await import('./image/stat.js')).statCommand(),
  unpack: async () => (await import('./image/unpack.js')).unpackCommand(),
  export: async () => (await import('./image/export.js')).exportCommand(),
  localdisk: async () => (await import('./image/localdisk.js')).localdiskCommand(),
};

/** Global options that take a value (the subcommand is the first word after them). */
const GLOBAL_WITH_VALUE = new Set(['-l', '--log-level', '-L', '--log-file']);

/** The subcommand `argv` (a full process.argv) runs, when it names a known one. */
function subcommandOf(argv: readonly string[]): string | undefined {
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i]!;
    if (GLOBAL_WITH_VALUE.has(a)) i++;
    else if (!a.startsWith('-')) return Object.hasOwn(SUBCOMMANDS, a) ? a : undefined;
  }
  return undefined;
}

/**
 * `nydus-image`: build, inspect, check and convert RAFS images (upstream-compatible flags).
 * With `argv`, only the subcommand it runs is loaded (all of them when it names none: help,
 * usage errors).
 */
export async function nydusImageProgram(argv?: readonly string[]): Promise<Command> {
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
  const only = argv === undefined ? undefined : subcommandOf(argv);
  const names = only === undefined ? Object.keys(SUBCOMMANDS) : [only];
  for (const c of await Promise.all(names.map((n) => SUBCOMMANDS[n]!()))) program.addCommand(c);
  return program;
}

await runCli('nydus-image', await nydusImageProgram(process.argv), process.argv);
