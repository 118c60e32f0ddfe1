import { readFileSync } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { errorText, isNydusError } from '../errors/errors.js';
import { createLogger, parseLogLevel, type Logger } from '../log/logger.js';

/** Exit codes: 0 ok, 1 operation failed, 2 bad usage (as upstream's clap). */
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

export function packageVersion(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  for (const up of ['../../..', '../..']) {
    try {
      const pkg = JSON.parse(readFileSync(join(here, up, 'package.json'), 'utf8')) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === 'nydus-ts' && pkg.version !== undefined) return pkg.version;
    } catch {
      // try the next candidate
    }
  }
  return '0.0.0';
}

export function buildInfo(binary: string): string {
  const v = packageVersion();
  return [
    `${binary} (nydus-ts)`,
    `Version: \t${v}`,
    `Node.js: \t${process.version}`,
    `Profile: \trelease`,
  ].join('\n');
}

/** Global -l/--log-level and -L/--log-file, shared by every subcommand. */
export function loggerFrom(cmd: Command): Logger {
  const opts = cmd.optsWithGlobals<{ logLevel?: string; logFile?: string }>();
  return createLogger(parseLogLevel(opts.logLevel ?? 'info'), opts.logFile);
}

/**
 * Run a CLI program: parse, execute, and turn any failure into one line on stderr and an exit
 * code. Never a stack trace (set NYDUS_DEBUG=1 to see one).
 */
export async function runCli(binary: string, program: Command, argv: readonly string[]): Promise<void> {
  // Settings are per command in commander; apply them to every subcommand too.
  const all = (c: Command): Command[] => [c, ...c.commands.flatMap(all)];
  for (const c of all(program)) {
    c.exitOverride();
    c.showHelpAfterError('(add --help for additional information)');
    c.configureOutput({ writeErr: (s) => process.stderr.write(s) });
  }
  try {
    await program.parseAsync(argv);
  } catch (e) {
    // commander's own errors (codes 'commander.*'; help and version displays end here too, with
    // exit code 0). By code, not instanceof: nydusd reads a plain command line without loading
    // commander, and this module must not load it either.
    const code = (e as { code?: unknown } | null)?.code;
    if (typeof code === 'string' && code.startsWith('commander.')) {
      process.exitCode = (e as { exitCode?: unknown }).exitCode === 0 ? 0 : EXIT_USAGE;
      return;
    }
    if (process.env['NYDUS_DEBUG'] === '1' && e instanceof Error) process.stderr.write(`${e.stack ?? ''}\n`);
    const msg = isNydusError(e) ? e.message : errorText(e);
    process.stderr.write(`${binary}: error: ${msg}\n`);
    process.exitCode = EXIT_FAILURE;
  }
}

/**
 * Write an output file through a temporary name in the same directory, renamed into place only
 * when `produce` succeeded, so a failed run never leaves a file that looks complete.
 */
export async function writeAtomically(path: string, produce: (tmp: string) => Promise<void>): Promise<void> {
  const tmp = join(dirname(path), `.${process.pid}.${Date.now()}.tmp-${pathBase(path)}`);
  try {
    await produce(tmp);
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

function pathBase(p: string): string {
  const i = p.lastIndexOf('/');
  return i < 0 ? p : p.slice(i + 1);
}

/** Write a JSON document to a file (the upstream `-J/--output-json` convention). */
export async function writeJsonFile(path: string, value: unknown, pretty = false): Promise<void> {
  const { writeFile } = await import('node:fs/promises');
  await writeAtomically(path, (tmp) => writeFile(tmp, JSON.stringify(value, null, pretty ? 2 : undefined)));
}
