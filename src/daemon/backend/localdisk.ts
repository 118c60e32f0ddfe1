import { stat } from 'node:fs/promises';
import type { BlobInfo } from '../../format/model.js';
import type { Logger } from '../../log/logger.js';
import type { BlobReader, BlobSource } from '../../storage/blob-source.js';
import { LocalDisk, type LocalDiskOptions } from '../../storage/localdisk.js';
import type { DaemonConfig } from '../config/schema.js';
import { backendTable, invalid, type BackendKind } from './kind.js';

/** The localdisk options of a config (`device_path`, `disable_gpt`). */
function diskOptions(config: DaemonConfig, log?: Logger): LocalDiskOptions {
  const t = backendTable(config, 'localdisk');
  if (t.device_path === '') invalid('backend localdisk needs "device_path"');
  return { devicePath: t.device_path, disableGpt: t.disable_gpt, ...(log !== undefined ? { log } : {}) };
}

/** The disk, opened (and its GPT read) at the first blob open; closed with the backend. */
class LazyLocalDisk implements BlobSource {
  readonly #opts: LocalDiskOptions;
  #disk: Promise<LocalDisk> | undefined;
  #closed = false;

  constructor(opts: LocalDiskOptions) {
    this.#opts = opts;
  }

  #get(): Promise<LocalDisk> {
    if (this.#disk === undefined) {
      const p = LocalDisk.open(this.#opts);
      // A disk that failed to open is tried again at the next blob open.
      p.catch(() => {
        if (this.#disk === p) this.#disk = undefined;
      });
      this.#disk = p;
    }
    return this.#disk;
  }

  async open(blob: BlobInfo): Promise<BlobReader> {
    return (await this.#get()).open(blob);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const d = this.#disk;
    this.#disk = undefined;
    if (d !== undefined) await (await d.catch(() => undefined))?.close();
  }
}

/**
 * `localdisk` (upstream storage/src/backend/localdisk.rs): blobs are GPT partitions of a block
 * device or a disk image file, matched to blob ids by partition name and GUID. The check opens
 * the device and reads its GPT, so a missing device or a bad table refuses the mount, as
 * upstream's backend constructor does.
 */
export const localDiskBackend: BackendKind = {
  async check(config) {
    const opts = diskOptions(config);
    const st = await stat(opts.devicePath).catch(() => undefined);
    if (st === undefined) invalid(`Localdisk device "${opts.devicePath}" does not exist`);
    if (!st.isFile() && !st.isBlockDevice())
      invalid(`Localdisk device "${opts.devicePath}" is not a block device or a disk image file`);
    const disk = await LocalDisk.open(opts);
    await disk.close();
  },
  create({ config, log }) {
    const opts = diskOptions(config, log);
    if (opts.disableGpt === true)
      log.warn(
        `localdisk: disable_gpt is set, so no blob is discovered on "${opts.devicePath}" and reads of blobs fail (as upstream)`,
      );
    const source = new LazyLocalDisk(opts);
    return { type: 'localdisk', source, local: true, close: () => source.close() };
  },
};
