import { writeFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Command, Option } from 'commander';
import { sha256Hex } from '../../codec/digest.js';
import { errorText, NydusError } from '../../errors/errors.js';
import { parseBootstrap } from '../../format/bootstrap.js';
import type { Bootstrap } from '../../format/model.js';
import { InconsistentFilesystemError, mergeBootstraps } from '../../builder/merge.js';
import { loadBootstrapFile } from '../../rafs/open.js';
import { EXIT_USAGE, loggerFrom, packageVersion, writeJsonFile } from '../common.js';

function list(s: string | undefined): string[] | undefined {
  return s === undefined ? undefined : s.split(',').map((x) => x.trim());
}

function numbers(s: string | undefined, what: string): number[] | undefined {
  return list(s)?.map((x) => {
    if (!/^\d+$/.test(x)) throw new NydusError('ERR_INVALID_ARG', `Invalid number "${x}" in ${what}`);
    return Number(x);
  });
}

export function mergeCommand(): Command {
  return new Command('merge')
    .description('Merge multiple bootstraps into an overlaid bootstrap')
    .argument('<SOURCE...>', 'bootstrap paths (allow one or more), bottom layer first')
    .option(
      '--parent-bootstrap <file>',
      'File path of the parent/referenced RAFS metadata blob (put below all sources)',
    )
    .option('-B, --bootstrap <file>', 'Output path of nydus overlaid bootstrap')
    .option('-D, --blob-dir <dir>', 'Directory path to save the merged bootstrap (named by its digest)')
    .option('--chunk-dict <path>', 'File path of chunk dictionary (accepted; merging does not re-chunk data)')
    .addOption(
      new Option('--prefetch-policy <policy>', 'Set data prefetch policy (patterns read from stdin)')
        .choices(['fs', 'blob', 'none'])
        .default('none'),
    )
    .option('-J, --output-json <file>', 'File path to save operation result in JSON format')
    .option('--blob-digests <list>', 'RAFS blob digest list separated by comma')
    .option('--original-blob-ids <list>', 'RAFS blob id list separated by comma (zran; not supported yet)')
    .option('--blob-sizes <list>', 'RAFS blob size list separated by comma')
    .option('--blob-toc-digests <list>', 'RAFS blob toc digest list separated by comma')
    .option('--blob-toc-sizes <list>', 'RAFS blob toc size list separated by comma')
    .option('-C, --config <file>', 'Configuration file for storage backend, cache and RAFS FUSE filesystem')
    .action(async (sources: string[], opts: Record<string, string | undefined>, cmd: Command) => {
      const log = loggerFrom(cmd);
      if (opts['bootstrap'] === undefined && opts['blobDir'] === undefined) {
        throw new NydusError('ERR_INVALID_ARG', 'One of --bootstrap and --blob-dir is required');
      }
      if (opts['originalBlobIds'] !== undefined)
        throw new NydusError('ERR_UNSUPPORTED', '--original-blob-ids (zran) is not supported yet');
      if (opts['prefetchPolicy'] === 'blob')
        throw new NydusError('ERR_UNSUPPORTED', '--prefetch-policy blob is not supported yet; use fs');
      const paths = [...(opts['parentBootstrap'] !== undefined ? [opts['parentBootstrap']] : []), ...sources];
      const layers: Bootstrap[] = [];
      for (const p of paths) {
        try {
          layers.push((await loadBootstrapFile(p)).bootstrap);
        } catch (e) {
          throw new NydusError('ERR_INVALID_ARG', `Cannot load bootstrap "${p}": ${errorText(e)}`, {
            cause: e,
          });
        }
      }
      const shift = (l: string[] | number[] | undefined): typeof l =>
        l === undefined || opts['parentBootstrap'] === undefined ? l : ([undefined, ...l] as typeof l);
      const digests = list(opts['blobDigests']);
      for (const [k, v] of [
        ['--blob-digests', digests],
        ['--blob-sizes', list(opts['blobSizes'])],
        ['--blob-toc-digests', list(opts['blobTocDigests'])],
        ['--blob-toc-sizes', list(opts['blobTocSizes'])],
      ] as const) {
        if (v !== undefined && v.length !== sources.length)
          throw new NydusError(
            'ERR_INVALID_ARG',
            `${k} lists ${v.length} values for ${sources.length} sources`,
          );
      }
      let patterns: string[] = [];
      if (opts['prefetchPolicy'] === 'fs') {
        const parts: Buffer[] = [];
        for await (const c of process.stdin) parts.push(c as Buffer);
        patterns = Buffer.concat(parts).toString('utf8').split('\n');
      }
      let boot: Buffer;
      try {
        const mo: Parameters<typeof mergeBootstraps>[1] = { prefetchPatterns: patterns, log };
        const d = shift(digests) as string[] | undefined;
        if (d !== undefined) mo.blobDigests = d;
        const s = shift(numbers(opts['blobSizes'], '--blob-sizes')) as number[] | undefined;
        if (s !== undefined) mo.blobSizes = s;
        const td = shift(list(opts['blobTocDigests'])) as string[] | undefined;
        if (td !== undefined) mo.blobTocDigests = td;
        const ts = shift(numbers(opts['blobTocSizes'], '--blob-toc-sizes')) as number[] | undefined;
        if (ts !== undefined) mo.blobTocSizes = ts;
        boot = mergeBootstraps(layers, mo);
        parseBootstrap(boot).validate();
      } catch (e) {
        if (e instanceof InconsistentFilesystemError) {
          process.stderr.write(`nydus-image: error: ${e.message}\n`);
          process.exitCode = EXIT_USAGE;
          return;
        }
        throw e;
      }
      const dest = opts['bootstrap'] ?? join(opts['blobDir']!, sha256Hex(boot));
      const tmp = `${dest}.${process.pid}.tmp`;
      try {
        await writeFile(tmp, boot);
        await rename(tmp, dest);
      } catch (e) {
        await rm(tmp, { force: true });
        throw new NydusError('ERR_IO', `Cannot write "${dest}": ${errorText(e)}`, { cause: e });
      }
      const parsed = parseBootstrap(boot);
      log.info(`Merged ${layers.length} layers into ${dest}`);
      if (opts['outputJson'] !== undefined) {
        await writeJsonFile(
          opts['outputJson'],
          {
            version: packageVersion(),
            bootstrap: dest,
            blobs: parsed.blobs.map((b) => b.blobId),
            external_bootstrap: '',
            external_blobs: [],
            trace: {},
            fs_version: String(parsed.superblock.version),
            compressor: parsed.superblock.compressor,
          },
          true,
        );
      }
    });
}
