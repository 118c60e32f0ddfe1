import { createRequire } from 'node:module';
import { extname } from 'node:path';
import { parseArgs } from 'node:util';
import type { Command } from 'commander';
import { errorText, isNydusError, NydusError } from '../errors/errors.js';
import { createLogger, LOG_LEVELS, parseLogLevel } from '../log/logger.js';
import { NydusDaemon, type FailoverPolicy } from '../daemon/daemon.js';
import { buildInfo, EXIT_FAILURE, EXIT_USAGE, packageVersion, runCli } from './common.js';

/**
 * `nydusd`: serve a RAFS image over FUSE (upstream-compatible flags; `nydusd fuse ...` and the
 * bare form are the same). Loaded by nydusd.ts once the libuv pool size is set.
 */

function threads(s: string): number {
  const n = /^\d+$/.test(s) ? Number(s) : NaN;
  if (!(n >= 1 && n <= 1024))
    throw new NydusError('ERR_INVALID_ARG', `Invalid --fuse-threads "${s}": 1..1024`);
  return n;
}

interface Opts {
  apisock?: string;
  config?: string;
  logLevel: string;
  logFile?: string;
  mountpoint?: string;
  fuseThreads?: number;
  threadNum?: number;
  bootstrap?: string;
  localfsDir?: string;
  writable?: boolean;
  sharedDir?: string;
  prefetchFiles?: string;
  virtualMountpoint: string;
  id?: string;
  supervisor?: string;
  upgrade?: boolean;
  failoverPolicy?: FailoverPolicy;
}

/**
 * The options every flag of nydusdProgram() names, for quickOptions(). Values are checked as
 * commander checks them (choices, threads()); anything else goes to commander.
 */
const FLAGS = {
  apisock: { type: 'string', short: 'A' },
  config: { type: 'string', short: 'C' },
  'log-level': { type: 'string', short: 'l' },
  'log-file': { type: 'string', short: 'L' },
  mountpoint: { type: 'string', short: 'M' },
  'fuse-threads': { type: 'string' },
  'thread-num': { type: 'string' },
  bootstrap: { type: 'string', short: 'B' },
  'localfs-dir': { type: 'string', short: 'D' },
  writable: { type: 'boolean' },
  'shared-dir': { type: 'string', short: 's' },
  'prefetch-files': { type: 'string' },
  'virtual-mountpoint': { type: 'string', short: 'm' },
  id: { type: 'string' },
  supervisor: { type: 'string' },
  upgrade: { type: 'boolean' },
  'failover-policy': { type: 'string' },
  'rlimit-nofile': { type: 'string' },
  'log-rotation-size': { type: 'string' },
} as const;

/**
 * The options of a plain, well-formed command line (every argument a known flag written as
 * `--flag value`, `--flag=value` or `-f value`, every value valid), as commander would give them;
 * undefined for anything else (help, version, an error, an unusual spelling), which commander
 * then handles with its own words. commander costs a daemon ~3 MiB of RSS for as long as it runs.
 */
export function quickOptions(args: readonly string[]): Opts | undefined {
  // Only the spellings both parsers read alike: no `--`, no grouped short flags, no value that
  // looks like a flag.
  for (const a of args) {
    if (a === '--' || a === '-') return undefined;
    if (a.startsWith('-') && !a.startsWith('--') && a.length !== 2) return undefined;
  }
  let parsed;
  try {
    parsed = parseArgs({
      args: [...args],
      options: FLAGS,
      strict: true,
      allowPositionals: false,
      tokens: true,
    });
  } catch {
    return undefined;
  }
  for (const t of parsed.tokens) {
    if (t.kind !== 'option') return undefined;
    if (t.value !== undefined && t.inlineValue !== true && t.value.startsWith('-')) return undefined;
  }
  const v = parsed.values as Partial<Record<keyof typeof FLAGS, string | boolean>>;
  const str = (k: keyof typeof FLAGS): string | undefined => v[k] as string | undefined;
  const num = (k: keyof typeof FLAGS): number | undefined | null => {
    const s = str(k);
    if (s === undefined) return undefined;
    const n = /^\d+$/.test(s) ? Number(s) : NaN;
    return n >= 1 && n <= 1024 ? n : null;
  };
  const logLevel = str('log-level') ?? 'info';
  if (logLevel === 'off' || !(LOG_LEVELS as string[]).includes(logLevel)) return undefined;
  const policy = str('failover-policy') ?? 'resend';
  if (!['none', 'resend', 'flush'].includes(policy)) return undefined;
  const fuseThreads = num('fuse-threads');
  const threadNum = num('thread-num');
  if (fuseThreads === null || threadNum === null) return undefined;
  const o: Opts = {
    logLevel,
    virtualMountpoint: str('virtual-mountpoint') ?? '/',
    failoverPolicy: policy as FailoverPolicy,
  };
  const set = <K extends keyof Opts>(k: K, x: Opts[K] | undefined): void => {
    if (x !== undefined) o[k] = x;
  };
  set('apisock', str('apisock'));
  set('config', str('config'));
  set('logFile', str('log-file'));
  set('mountpoint', str('mountpoint'));
  set('fuseThreads', fuseThreads);
  set('threadNum', threadNum);
  set('bootstrap', str('bootstrap'));
  set('localfsDir', str('localfs-dir'));
  if (v.writable === true) o.writable = true;
  set('sharedDir', str('shared-dir'));
  set('prefetchFiles', str('prefetch-files'));
  set('id', str('id'));
  set('supervisor', str('supervisor'));
  if (v.upgrade === true) o.upgrade = true;
  return o;
}

export async function nydusdProgram(): Promise<Command> {
  const { Command, Option } = await import('commander');
  return new Command('nydusd')
    .description('Nydus image service: serve a RAFS image as a FUSE filesystem')
    .version(buildInfo('nydusd'), '-V, --version', 'Print version information')
    .option('-A, --apisock <path>', 'HTTP API unix socket')
    .option('-C, --config <file>', 'Daemon config file (v1 JSON, v2 JSON or v2 TOML)')
    .addOption(
      new Option('-l, --log-level <level>', 'Log level')
        .choices(LOG_LEVELS.filter((l) => l !== 'off'))
        .default('info'),
    )
    .option('-L, --log-file <file>', 'Log file path (".log" is appended when it has no extension)')
    .option('-M, --mountpoint <dir>', 'Where to mount the FUSE filesystem')
    .addOption(new Option('--fuse-threads <n>', 'FUSE request threads (1-1024)').argParser(threads))
    .addOption(new Option('--thread-num <n>', 'Alias of --fuse-threads').argParser(threads))
    .option('-B, --bootstrap <file>', 'RAFS bootstrap (or a data blob with inline metadata)')
    .option('-D, --localfs-dir <dir>', 'Blob directory: localfs backend shortcut config')
    .option('--writable', 'Read-write FUSE (not supported)')
    .option('-s, --shared-dir <dir>', 'Passthrough share (not supported)')
    .option(
      '--prefetch-files <file>',
      'File listing paths to prefetch at mount, one per line (needs --bootstrap)',
    )
    .option('-m, --virtual-mountpoint <path>', 'Where the image sits inside the FUSE filesystem', '/')
    .option('--id <id>', 'Daemon id (needs --supervisor)')
    .option('--supervisor <sock>', 'Supervisor socket for failover and hot upgrade (needs --id)')
    .option('--upgrade', 'Start in upgrade mode: no mount, wait in INIT for a takeover through the API')
    .addOption(
      new Option(
        '--failover-policy <policy>',
        'What to do with the requests a crashed predecessor left (after a takeover)',
      )
        .choices(['none', 'resend', 'flush'])
        .default('resend'),
    )
    .option('--rlimit-nofile <n>', 'Open file limit (accepted, unchanged)')
    .option('--log-rotation-size <mb>', 'Log rotation size (accepted, ignored)')
    .action(run);
}

async function run(o: Opts): Promise<void> {
  let file = o.logFile;
  if (file !== undefined && extname(file) === '') file = `${file}.log`;
  const log = createLogger(parseLogLevel(o.logLevel), file);
  const unsupported = (flag: string, what: string): never => {
    throw new NydusError('ERR_UNSUPPORTED', `${flag}: ${what} is not supported yet`);
  };
  if (o.writable === true) unsupported('--writable', 'a writable FUSE filesystem');
  if (o.sharedDir !== undefined) unsupported('--shared-dir', 'passthroughfs');
  if ((o.id === undefined) !== (o.supervisor === undefined)) {
    // clap's "requires": a usage error naming both.
    process.stderr.write('nydusd: error: --id and --supervisor must be given together\n');
    process.exitCode = EXIT_USAGE;
    return;
  }
  if (o.mountpoint === undefined) throw new NydusError('ERR_INVALID_ARG', '--mountpoint is required');
  if (
    o.bootstrap === undefined &&
    (o.config !== undefined || o.localfsDir !== undefined) &&
    o.apisock === undefined
  )
    log.warn('no --bootstrap and no --apisock: the mount stays an empty directory');
  let exited: () => void = () => undefined;
  const apiExit = new Promise<void>((resolve) => (exited = resolve));
  const daemon = await NydusDaemon.start({
    mountpoint: o.mountpoint,
    ...(o.bootstrap !== undefined && { bootstrap: o.bootstrap }),
    ...(o.config !== undefined && { configFile: o.config }),
    ...(o.localfsDir !== undefined && { localfsDir: o.localfsDir }),
    ...(o.prefetchFiles !== undefined && { prefetchFilesList: o.prefetchFiles }),
    ...(o.apisock !== undefined && { apisock: o.apisock }),
    ...(o.id !== undefined && { id: o.id }),
    ...(o.supervisor !== undefined && { supervisor: o.supervisor }),
    ...(o.upgrade === true && { upgrade: true }),
    ...(o.failoverPolicy !== undefined && { failoverPolicy: o.failoverPolicy }),
    virtualMountpoint: o.virtualMountpoint,
    threads: o.fuseThreads ?? o.threadNum ?? 4,
    version: packageVersion(),
    logger: log,
    onExit: () => exited(),
  });
  await new Promise<void>((resolve) => {
    let stopping = false;
    const onSignal = (sig: NodeJS.Signals): void => {
      if (stopping) return;
      stopping = true;
      log.info(`${sig} received, unmounting ${o.mountpoint}`);
      daemon.stop().then(
        () => resolve(),
        (e: unknown) => {
          log.error(`Shutdown failed: ${String(e)}`);
          process.exitCode = EXIT_FAILURE;
          resolve();
        },
      );
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    void apiExit.then(() => {
      log.info('exit requested through the API');
      stopping = true;
      resolve();
    });
    // The kernel may end the mount by itself (umount from outside).
    void daemon.ended.then(
      () => {
        if (!stopping) log.info('The mount went away; exiting');
        stopping = true;
        void daemon.stop().finally(resolve);
      },
      (e: unknown) => {
        log.error(String(e));
        process.exitCode = EXIT_FAILURE;
        void daemon.stop().finally(resolve);
      },
    );
  });
  log.info('nydusd exits');
  if (daemon.leftConnection) leftConnection = true;
}

/** Set when the daemon handed its FUSE connection on without unmounting (hot upgrade). */
let leftConnection = false;

/**
 * Exit without running exit handlers: libuv's own joins its pool threads, and the reads they
 * still block in on a /dev/fuse that stays mounted (its new holder serves it) never return.
 */
function exitNow(code: number): never {
  try {
    const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
    const exit = koffi.load('libc.so.6').func('void _exit(int)') as (c: number) => void;
    exit(code);
  } catch {
    // no koffi: SIGKILL is the only other way past the blocked threads
  }
  process.kill(process.pid, 'SIGKILL');
  throw new Error('unreachable');
}

// `nydusd fuse ...` is the bare form with a subcommand word.
const argv = [...process.argv];
if (argv[2] === 'fuse') argv.splice(2, 1);
const quick = quickOptions(argv.slice(2));
if (quick === undefined) await runCli('nydusd', await nydusdProgram(), argv);
else {
  // What runCli does with a failure, for the command line commander did not need to read.
  try {
    await run(quick);
  } catch (e) {
    if (process.env['NYDUS_DEBUG'] === '1' && e instanceof Error) process.stderr.write(`${e.stack ?? ''}\n`);
    process.stderr.write(`nydusd: error: ${isNydusError(e) ? e.message : errorText(e)}\n`);
    process.exitCode = EXIT_FAILURE;
  }
}
// Reader threads blocked on /dev/fuse must not keep a failed or finished daemon alive.
if (leftConnection) exitNow(Number(process.exitCode ?? 0));
process.exit(process.exitCode ?? 0);
