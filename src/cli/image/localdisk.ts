import { createReadStream } from 'node:fs';
import { createHash } from 'node:crypto';
import { Command } from 'commander';
import { errorText, NydusError } from '../../errors/errors.js';
import { FileBlobReader } from '../../storage/localfs.js';
import {
  planLocalDisk,
  sizedBlobs,
  writeLocalDisk,
  type DiskBlobInput,
  type DiskPlan,
} from '../../storage/localdisk.js';
import { loggerFrom, writeAtomically, writeJsonFile } from '../common.js';
import { byteProgress } from '../progress.js';
import { bootstrapArg, openImage } from './source.js';

/** The disk GUID of an image's disk: the first 16 bytes of the bootstrap file's sha256. */
async function bootstrapGuid(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  const x = h.digest('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20, 32)}`;
}

/** The `-J` document: the disk and where each blob is. */
function planJson(output: string, plan: DiskPlan): unknown {
  return {
    disk: output,
    size: plan.size,
    sector_size: 512,
    disk_guid: plan.diskGuid,
    partitions: plan.partitions.map((p) => ({
      number: p.number,
      blob_id: p.blobId,
      name: p.name,
      guid: p.guid,
      offset: p.offset,
      size: p.size,
      blob_size: p.blobSize,
    })),
  };
}

/**
 * `nydus-image localdisk`: write the data blobs of an image into a GPT disk image for nydusd's
 * localdisk backend (what upstream's separate nydus-localdisk tool does from a registry image;
 * here from a bootstrap and its local blobs, like `export --block`).
 */
export function localdiskCommand(): Command {
  return new Command('localdisk')
    .description(
      "Write an image's data blobs into a GPT disk image for the localdisk storage backend (one partition per blob)",
    )
    .argument('[BOOTSTRAP]', 'File path of RAFS metadata (or a data blob with inline metadata)')
    .option('-B, --bootstrap <file>', 'File path of RAFS metadata (same as BOOTSTRAP)')
    .option('-D, --blob-dir <dir>', 'Directory holding the data blobs, named by blob id (localfs backend)')
    .option('-C, --config <file>', 'nydusd configuration file whose localfs backend holds the data blobs')
    .option('-O, --output <file>', 'File path of the disk image to write (required)')
    .option('-J, --output-json <file>', 'File path to save the partition layout in JSON format')
    .action(
      async (positional: string | undefined, opts: Record<string, string | undefined>, cmd: Command) => {
        const log = loggerFrom(cmd);
        const boot = bootstrapArg(positional, opts['bootstrap']);
        const output = opts['output'];
        if (output === undefined || output === '')
          throw new NydusError('ERR_INVALID_ARG', '-O/--output (the disk image to write) is required');
        if (opts['blobDir'] === undefined && opts['config'] === undefined)
          throw new NydusError('ERR_INVALID_ARG', 'Give the data blobs with -D/--blob-dir or -C/--config');
        const args: { blobDir?: string; config?: string } = {};
        if (opts['blobDir'] !== undefined) args.blobDir = opts['blobDir'];
        if (opts['config'] !== undefined) args.config = opts['config'];
        const o = await openImage(boot, args, log);
        let inputs: DiskBlobInput[];
        try {
          inputs = [];
          for (const blob of o.image.bootstrap.blobs) {
            const r = await o.image.blobReader(blob.index);
            if (!(r instanceof FileBlobReader))
              throw new NydusError('ERR_UNSUPPORTED', `Blob ${blob.blobId} is not a local file`);
            inputs.push({ blobId: blob.blobId, path: r.path });
          }
        } finally {
          await o.image.close();
        }
        if (inputs.length === 0) throw new NydusError('ERR_INVALID_ARG', `Image "${boot}" has no data blob`);
        const plan = planLocalDisk(await sizedBlobs(inputs), await bootstrapGuid(boot));
        const total = plan.partitions.reduce((n, p) => n + p.blobSize, 0);
        const bar = byteProgress('Writing', total);
        try {
          await writeAtomically(output, (tmp) => writeLocalDisk(tmp, plan, (n) => bar.update(n)));
        } catch (e) {
          if (e instanceof NydusError) throw e;
          throw new NydusError('ERR_IO', `Failed to write disk "${output}": ${errorText(e)}`, { cause: e });
        } finally {
          bar.stop();
        }
        for (const p of plan.partitions)
          log.info(`partition ${p.number}: blob ${p.blobId} at ${p.offset} (${p.blobSize} bytes)`);
        log.info(
          `Wrote localdisk image ${output} (${plan.size} bytes, ${plan.partitions.length} partitions, GUID ${plan.diskGuid})`,
        );
        if (opts['outputJson'] !== undefined) await writeJsonFile(opts['outputJson'], planJson(output, plan));
      },
    );
}
