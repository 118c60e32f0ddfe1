import type { Command } from 'commander';
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
