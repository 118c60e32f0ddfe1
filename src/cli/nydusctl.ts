#!/usr/bin/env node
import { readFile } from 'node:fs/promises';
import { Argument, Command, Option } from 'commander';
import { NydusError, errorText } from '../errors/errors.js';
import { ApiClient } from '../daemon/api/client.js';
import {
  jsonDisplay,
  renderBackendDelta,
  renderBackendMetrics,
  renderCacheMetrics,
  renderDaemonInfo,
  renderFsStats,
} from '../daemon/api/render.js';
import { buildInfo, runCli } from './common.js';

/**
 * `nydusctl`: query and configure a running nydusd through its HTTP API socket. Output follows
 * upstream's nydusctl; `--raw` prints the JSON answer instead.
 */

interface Globals {
  sock: string;
  raw?: boolean;
}

function out(text: string): void {
  process.stdout.write(text);
}

/** Run `work` with a client of the socket given by -S, closing the client afterwards. */
async function withClient(
  cmd: Command,
  work: (client: ApiClient, raw: boolean) => Promise<void>,
): Promise<void> {
  const g = cmd.optsWithGlobals<Globals>();
  const client = new ApiClient(g.sock);
  try {
    await work(client, g.raw === true);
  } finally {
    await client.close();
  }
}

/** Parse an interval the way upstream does (a u32 number of seconds). */
function parseInterval(s: string): number {
  let why: string | undefined;
  if (s === '' || s === '+') why = 'cannot parse integer from empty string';
  else if (!/^\+?\d+$/.test(s)) why = 'invalid digit found in string';
  else if (Number(s) > 0xffffffff) why = 'number too large to fit in target type';
  if (why !== undefined) throw new NydusError('ERR_INVALID_ARG', `Invalid interval input. ${why}`);
  return Number(s);
}

/**
 * Call `step` every `secs` seconds until SIGINT (Ctrl-C), which ends the loop and the program
 * normally.
 */
async function everyInterval(secs: number, step: () => Promise<void>): Promise<void> {
  let stopped = false;
  let wake: (() => void) | undefined;
  const onSignal = (): void => {
    stopped = true;
    wake?.();
  };
  process.on('SIGINT', onSignal);
  try {
    while (!stopped) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, secs * 1000);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      wake = undefined;
      if (stopped) break;
      await step();
    }
  } finally {
    process.off('SIGINT', onSignal);
  }
}

async function readMountConfig(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    throw new NydusError('ERR_INVALID_ARG', `Failed to read mount config ${path}: ${errorText(e)}`);
  }
}

export function nydusctlProgram(): Command {
  const program = new Command('nydusctl')
    .description('A client to query and configure the nydusd daemon')
    .version(buildInfo('nydusctl'), '-V, --version', 'Print version information')
    .requiredOption('-S, --sock <sock>', 'Sets file path for the nydusd API socket')
    .option('-r, --raw', 'Outputs messages in plain json mode');

  program
    .command('info')
    .description('Gets information about the nydusd daemon')
    .action((_o: unknown, cmd: Command) =>
      withClient(cmd, async (client, raw) => {
        const info = await client.get('/api/v1/daemon');
        out(raw ? `${jsonDisplay(info)}\n` : renderDaemonInfo(info));
      }),
    );

  program
    .command('set')
    .description('Configures parameters for the nydusd daemon')
    .addArgument(new Argument('<kind>', 'the parameter to configure').choices(['log-level']))
    .addArgument(
      new Argument('<value>', 'the configuration value (log-level: trace, debug, info, warn, error)'),
    )
    .action((_kind: string, value: string, _o: unknown, cmd: Command) =>
      withClient(cmd, async (client) => {
        await client.put('/api/v1/daemon', { log_level: value });
      }),
    );

  program
    .command('metrics')
    .description('Gets runtime metrics about backend, cache and filesystems')
    .addArgument(
      new Argument('<category>', 'the metrics category to fetch').choices(['backend', 'cache', 'fsstats']),
    )
    .addOption(new Option('-I, --interval <secs>', 'interval to refresh the metrics (until Ctrl-C)'))
    .action((category: string, o: { interval?: string }, cmd: Command) =>
      withClient(cmd, async (client, raw) => {
        const interval = o.interval === undefined ? undefined : parseInterval(o.interval);
        const path =
          category === 'backend'
            ? '/api/v1/metrics/backend'
            : category === 'cache'
              ? '/api/v1/metrics/blobcache'
              : '/api/v1/metrics';
        const render =
          category === 'backend'
            ? renderBackendMetrics
            : category === 'cache'
              ? renderCacheMetrics
              : renderFsStats;
        const first = await client.get(path);
        if (interval === undefined) {
          out(raw ? `${jsonDisplay(first)}\n` : render(first));
          return;
        }
        if (raw) out(`${jsonDisplay(first)}\n`);
        else if (category !== 'backend') out(render(first));
        let last = first;
        await everyInterval(interval, async () => {
          const current = await client.get(path);
          if (raw) out(`${jsonDisplay(current)}\n`);
          else if (category === 'backend') out(renderBackendDelta(last, current, interval));
          else out(render(current));
          last = current;
        });
      }),
    );

  program
    .command('mount')
    .description('Mounts a new filesystem instance')
    .requiredOption('-s, --source <source>', 'Storage backend for the filesystem instance (bootstrap)')
    .requiredOption('-c, --config <file>', 'Configuration file for the new filesystem instance')
    .requiredOption('-m, --mountpoint <path>', 'Mountpoint for the new filesystem instance')
    .addOption(
      new Option('-t, --type <type>', 'Type of the new filesystem instance')
        .choices(['rafs', 'passthrough_fs'])
        .default('rafs'),
    )
    .action((o: { source: string; config: string; mountpoint: string; type: string }, cmd: Command) =>
      withClient(cmd, async (client) => {
        const config = await readMountConfig(o.config);
        await client.post(
          '/api/v1/mount',
          { source: o.source, fs_type: o.type, config },
          { mountpoint: o.mountpoint },
        );
      }),
    );

  program
    .command('umount')
    .description('Umounts a filesystem instance')
    .requiredOption('-m, --mountpoint <path>', 'Mountpoint of the filesystem instance')
    .action((o: { mountpoint: string }, cmd: Command) =>
      withClient(cmd, async (client) => {
        await client.delete('/api/v1/mount', { mountpoint: o.mountpoint });
      }),
    );

  return program;
}

// A closed pipe on stdout (`nydusctl ... | head`) ends the program quietly.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(0);
  throw e;
});

await runCli('nydusctl', nydusctlProgram(), process.argv);
