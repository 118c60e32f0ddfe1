import { appendFileSync } from 'node:fs';

/**
 * Leveled logging shared by the CLIs and (later) the daemon. Library code takes a `Logger` and
 * never prints; the binaries decide the sink (stderr or `--log-file`) and the level. Lines look
 * like upstream's: `[2026-11-22 10:00:00.123 +00:00] INFO message`.
 */
export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'off';

const ORDER: Record<LogLevel, number> = { trace: 0, debug: 1, info: 2, warn: 3, error: 4, off: 5 };
export const LOG_LEVELS = Object.keys(ORDER) as LogLevel[];

export interface Logger {
  level: LogLevel;
  trace(msg: string): void;
  debug(msg: string): void;
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
}

export function parseLogLevel(s: string): LogLevel {
  const l = s.toLowerCase();
  if (l in ORDER) return l as LogLevel;
  throw new Error(`Unknown log level "${s}", expected one of ${LOG_LEVELS.join(', ')}`);
}

function stamp(): string {
  return new Date().toISOString().replace('T', ' ').replace('Z', ' +00:00');
}

/**
 * A logger writing to a file (appending) or to stderr; `sink` replaces stderr (a progress
 * display prints log lines above its bars).
 */
export function createLogger(level: LogLevel, file?: string, sink?: (line: string) => void): Logger {
  const write = (lvl: Exclude<LogLevel, 'off'>, msg: string): void => {
    if (ORDER[lvl] < ORDER[logger.level]) return;
    const line = `[${stamp()}] ${lvl.toUpperCase()} ${msg}\n`;
    if (file !== undefined) appendFileSync(file, line);
    else if (sink !== undefined) sink(line);
    else process.stderr.write(line);
  };
  const logger: Logger = {
    level,
    trace: (m) => write('trace', m),
    debug: (m) => write('debug', m),
    info: (m) => write('info', m),
    warn: (m) => write('warn', m),
    error: (m) => write('error', m),
  };
  return logger;
}

/** A logger that drops everything, for library callers that do not care. */
export const silentLogger: Logger = createLogger('off');
