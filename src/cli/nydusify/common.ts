import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { errorText, NydusError } from '../../errors/errors.js';
import { createLogger, type Logger, type LogLevel } from '../../log/logger.js';

/**
 * The logger of a nydusify subcommand: `-D/--debug` wins over `-l/--log-level`; upstream's
 * logrus levels panic and fatal map to error. `LOG_LEVEL`, `DEBUG_LOG_LEVEL` and `LOG_FILE` are
 * read from the environment as upstream does when the flags are not given.
 */
export function nydusifyLogger(cmd: Command, sink?: (line: string) => void): Logger {
  const o = cmd.optsWithGlobals<{ debug?: boolean; logLevel?: string; logFile?: string }>();
  const env = process.env;
  let level = o.logLevel ?? 'info';
  if (cmd.getOptionValueSourceWithGlobals('logLevel') === 'default' && env['LOG_LEVEL'] !== undefined)
    level = env['LOG_LEVEL'];
  if (o.debug === true || env['DEBUG_LOG_LEVEL'] === 'true') level = 'debug';
  const map: Record<string, LogLevel> = {
    panic: 'error',
    fatal: 'error',
    error: 'error',
    warn: 'warn',
    warning: 'warn',
    info: 'info',
    debug: 'debug',
    trace: 'trace',
  };
  return createLogger(map[level.toLowerCase()] ?? 'info', o.logFile ?? env['LOG_FILE'], sink);
}

/**
 * A storage backend given as `--backend-type` with `--backend-config JSON` or
 * `--backend-config-file FILE` (convert, mount, check): undefined without a type.
 */
export async function backendFromFlags(
  type: string | undefined,
  config: string | undefined,
  configFile: string | undefined,
): Promise<{ type: string; config: Record<string, unknown> } | undefined> {
  if (type === undefined) {
    if (config !== undefined || configFile !== undefined)
      throw new NydusError('ERR_INVALID_ARG', '--backend-config needs --backend-type');
    return undefined;
  }
  if (config !== undefined && configFile !== undefined)
    throw new NydusError('ERR_INVALID_ARG', '--backend-config conflicts with --backend-config-file');
  let text = config;
  if (configFile !== undefined) {
    try {
      text = await readFile(configFile, 'utf8');
    } catch (e) {
      throw new NydusError('ERR_IO', `Cannot read --backend-config-file "${configFile}": ${errorText(e)}`);
    }
  }
  if (text === undefined || text.trim() === '')
    throw new NydusError(
      'ERR_INVALID_ARG',
      "backend configuration is empty, please specify option '--backend-config'",
    );
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new NydusError('ERR_INVALID_ARG', `--backend-config is not valid JSON: ${errorText(e)}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
    throw new NydusError('ERR_INVALID_ARG', '--backend-config must be a JSON object');
  return { type, config: parsed as Record<string, unknown> };
}
