import { readFile } from 'node:fs/promises';
import { Command } from 'commander';
import { errorText, NydusError } from '../../errors/errors.js';
import { exportBlock } from '../../builder/export-block.js';
import { loggerFrom, writeAtomically } from '../common.js';
import { byteProgress } from '../progress.js';
import { openImage } from './source.js';

export function exportCommand(): Command {
  return new Command('export')
    .description('Export RAFS filesystems as raw block disk images or tar files')
    .option('--block', 'Export RAFS filesystems as a raw EROFS block disk image', false)
    .option('-B, --bootstrap <file>', 'File path of RAFS metadata (requires --localfs-dir)')
    .option('-D, --localfs-dir <dir>', 'Directory holding the data blobs (localfs backend)')
    .option('-C, --config <file>', 'Configuration file of the storage backend (localfs)')
    .option('-O, --output <file>', 'File path for the exported disk image (default: <bootstrap>.disk)')
    .option('--threads <n>', 'Number of worker threads (1-1024)', '4')
    .option('--verity', 'Generate dm-verity data for the block device (not supported yet)', false)
    .action(async (opts: Record<string, string | boolean | undefined>, cmd: Command) => {
      const log = loggerFrom(cmd);
      const s = (k: string): string | undefined => (typeof opts[k] === 'string' ? opts[k] : undefined);
      if (opts['block'] !== true)
        throw new NydusError('ERR_INVALID_ARG', 'Only --block export is available: add --block');
      if (opts['verity'] === true) throw new NydusError('ERR_UNSUPPORTED', '--verity is not supported yet');
      const threads = Number(s('threads'));
      if (!Number.isInteger(threads) || threads < 1 || threads > 1024)
        throw new NydusError('ERR_INVALID_ARG', `Invalid --threads "${s('threads')}": 1 to 1024`);
      const boot = s('bootstrap');
      if (boot === undefined) throw new NydusError('ERR_INVALID_ARG', '--bootstrap is required');
      if (s('localfsDir') === undefined && s('config') === undefined)
        throw new NydusError('ERR_INVALID_ARG', '--bootstrap requires --localfs-dir (or --config)');
      const output = s('output') ?? `${boot}.disk`;
      const args: { blobDir?: string; config?: string } = {};
      if (s('localfsDir') !== undefined) args.blobDir = s('localfsDir')!;
      if (s('config') !== undefined) args.config = s('config')!;
      const o = await openImage(boot, args, log);
      try {
        const bytes = o.loaded.inlineBlob === undefined ? await readFile(boot) : undefined;
        if (bytes === undefined)
          throw new NydusError(
            'ERR_UNSUPPORTED',
            'Export from a blob with inline metadata is not supported yet; give the bootstrap',
          );
        const total = o.image.bootstrap.blobs.reduce((n, b) => n + b.uncompressedSize, 0);
        const bar = byteProgress('Exporting', total);
        let size = 0;
        try {
          await writeAtomically(output, async (tmp) => {
            size = await exportBlock(o.image, bytes, tmp, (n) => bar.update(n));
          });
        } catch (e) {
          throw new NydusError('ERR_IO', `Failed to export "${boot}": ${errorText(e)}`, { cause: e });
        } finally {
          bar.stop();
        }
        log.info(`Exported EROFS block image ${output} (${size} bytes)`);
      } finally {
        await o.image.close();
      }
    });
}
