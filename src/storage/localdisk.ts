import { createHash } from 'node:crypto';
import { open, readFile, stat, type FileHandle } from 'node:fs/promises';
import { errorText, FormatError, NydusError } from '../errors/errors.js';
import type { BlobInfo } from '../format/model.js';
import type { Logger } from '../log/logger.js';
import { bufferFor, preadFull, pwriteFull } from '../util/file-io.js';
import type { BlobReader, BlobSource } from './blob-source.js';
import {
  encodeGpt,
  entryCountFor,
  entrySectors,
  readGpt,
  SECTOR_SIZE,
  TYPE_BASIC_DATA,
  TYPE_LINUX_FS,
  type GptTable,
} from './gpt.js';

/**
 * The localdisk storage backend (upstream storage/src/backend/localdisk.rs): the blobs of an
 * image are partitions of one disk (a block device or a disk image file), found through its GPT.
 *
 * Layout, as upstream reads it and the nydus-localdisk tool writes it:
 * - 512-byte sectors; one partition per blob.
 * - A 64-hex-digit blob id is stored in two halves: the partition name holds the first 32
 *   characters, the unique partition GUID the last 32 (its text form without hyphens, lower
 *   case). Partition type "Linux filesystem data".
 * - Old layout: a partition of type "Microsoft basic data" has the first 32 characters of the
 *   blob id as its name and nothing else; a disk with such a partition is in "legacy GPT mode",
 *   where a blob is found by the first 32 characters of its id.
 * - The blob's size is the partition's size (whole sectors): reads past the blob's own end
 *   return the partition's padding.
 * - `disable_gpt`: the table is not read at all; only blobs added with `addBlob` exist (upstream
 *   has the same API; nydusd's config cannot add any, so every blob is then missing).
 */

/** Characters of a blob id held in the partition name (the rest is in the GUID). */
export const NAME_ID_LEN = 32;
/** Partitions start on 1 MiB boundaries, as the nydus-localdisk tool lays them. */
export const PARTITION_ALIGN_SECTORS = 2048;

/** Where a blob is on the disk. */
export interface DiskBlob {
  /** The key it is found by: a full blob id, or 32 characters in legacy GPT mode. */
  readonly blobId: string;
  readonly offset: number;
  readonly size: number;
  /** The GPT partition number (1-based); undefined for a blob added with `addBlob`. */
  readonly partition?: number;
}

export interface LocalDiskOptions {
  /** Block device or disk image file (upstream `device_path`). */
  devicePath: string;
  /** Do not discover blobs from the GPT (upstream `disable_gpt`). */
  disableGpt?: boolean;
  log?: Logger;
}

const HEX64 = /^[0-9a-f]{64}$/;

/** The partition name and GUID text that hold a 64-hex-digit blob id. */
export function splitBlobId(blobId: string): { name: string; guid: string } {
  if (!HEX64.test(blobId))
    throw new NydusError(
      'ERR_INVALID_ARG',
      `Blob id "${blobId}" cannot be stored on a localdisk GPT: it must be 64 lower-case hex digits`,
    );
  const g = blobId.slice(NAME_ID_LEN);
  return {
    name: blobId.slice(0, NAME_ID_LEN),
    guid: `${g.slice(0, 8)}-${g.slice(8, 12)}-${g.slice(12, 16)}-${g.slice(16, 20)}-${g.slice(20)}`,
  };
}

/** The blob id a partition stands for, as upstream derives it. */
export function partitionBlobId(p: { typeGuid: string; name: string; guid: string }): string {
  return p.typeGuid === TYPE_BASIC_DATA ? p.name : p.name + p.guid.replace(/-/g, '');
}

/**
 * Size in bytes of an open disk: a regular file's length, or a block device's size from sysfs
 * (fstat reports 0 for block devices).
 */
async function deviceBytes(fh: FileHandle, path: string): Promise<number> {
  const st = await fh.stat({ bigint: true });
  if (st.isFile()) return Number(st.size);
  if (!st.isBlockDevice())
    throw new NydusError('ERR_INVALID_ARG', `Localdisk device "${path}" is not a block device or a file`);
  const dev = st.rdev;
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  const sys = `/sys/dev/block/${major}:${minor}/size`;
  try {
    return Number((await readFile(sys, 'utf8')).trim()) * 512;
  } catch (e) {
    throw new NydusError(
      'ERR_IO',
      `Cannot read the size of block device "${path}" (${sys}): ${errorText(e)}`,
      {
        cause: e,
      },
    );
  }
}

/** A blob: a byte range of the disk, read with pread on the disk's descriptor. */
class DiskBlobReader implements BlobReader {
  readonly size: number;
  readonly #disk: LocalDisk;
  readonly #blob: DiskBlob;

  constructor(disk: LocalDisk, blob: DiskBlob) {
    this.#disk = disk;
    this.#blob = blob;
    this.size = blob.size;
  }

  async read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    const b = this.#blob;
    if (offset < 0 || length < 0 || offset + length > b.size)
      throw new NydusError(
        'ERR_FORMAT',
        `Read of ${length} bytes at ${offset} is past the end of blob ${b.blobId} on disk "${this.#disk.devicePath}" (${b.size} bytes)`,
      );
    const buf = bufferFor(length, into);
    let got: number;
    try {
      got = await preadFull(this.#disk.fd, buf, b.offset + offset);
    } catch (e) {
      throw new NydusError(
        'ERR_IO',
        `Failed to read blob ${b.blobId} from disk "${this.#disk.devicePath}" at ${b.offset + offset}: ${errorText(e)}`,
        { cause: e },
      );
    }
    if (got < length)
      throw new NydusError(
        'ERR_IO',
        `Disk "${this.#disk.devicePath}" ended at ${b.offset + offset + got} while reading blob ${b.blobId}`,
      );
    return buf;
  }

  close(): Promise<void> {
    // The descriptor is the disk's.
    return Promise.resolve();
  }
}

/** An open localdisk: the blob table of one disk and the blob source over it. */
export class LocalDisk implements BlobSource {
  readonly devicePath: string;
  /** Disk size in bytes. */
  readonly capacity: number;
  /** The GPT read at open; undefined with `disableGpt`. */
  readonly gpt: GptTable | undefined;
  readonly #fh: FileHandle;
  readonly #blobs = new Map<string, DiskBlob>();
  #legacy = false;

  private constructor(fh: FileHandle, path: string, capacity: number, gpt: GptTable | undefined) {
    this.#fh = fh;
    this.devicePath = path;
    this.capacity = capacity;
    this.gpt = gpt;
  }

  /**
   * Open the disk read-only and, unless `disableGpt`, read its GPT (ERR_FORMAT on a bad table,
   * ERR_INVALID_ARG on a partition that names no blob or one named twice).
   */
  static async open(opts: LocalDiskOptions): Promise<LocalDisk> {
    const path = opts.devicePath;
    if (path === '') throw new NydusError('ERR_INVALID_ARG', 'Localdisk needs a device path');
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'ERR_NOT_FOUND' : 'ERR_IO';
      throw new NydusError(code, `Cannot open localdisk device "${path}": ${errorText(e)}`, { cause: e });
    }
    try {
      const capacity = await deviceBytes(fh, path);
      let gpt: GptTable | undefined;
      if (opts.disableGpt !== true) {
        const readAt = async (offset: number, length: number): Promise<Buffer> => {
          const buf = Buffer.alloc(length);
          const n = await preadFull(fh.fd, buf, offset);
          if (n < length) throw new FormatError(`Disk "${path}" is shorter than its GPT says`, offset + n);
          return buf;
        };
        gpt = await readGpt(readAt, capacity, `Disk "${path}"`);
      }
      const disk = new LocalDisk(fh, path, capacity, gpt);
      if (gpt !== undefined) disk.#scan(gpt);
      opts.log?.info(
        gpt === undefined
          ? `localdisk: opened "${path}" (${capacity} bytes) with disable_gpt: blobs are not discovered`
          : `localdisk: opened "${path}" (${capacity} bytes), GPT GUID ${gpt.header.diskGuid}, ${disk.#blobs.size} partitions${disk.#legacy ? ' (legacy GPT mode)' : ''}`,
      );
      return disk;
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  #scan(gpt: GptTable): void {
    for (const p of gpt.partitions) {
      const id = partitionBlobId(p);
      if (id === '')
        throw new NydusError(
          'ERR_INVALID_ARG',
          `Disk "${this.devicePath}": GPT partition ${p.number} (GUID ${p.guid}) has an empty blob id`,
        );
      const had = this.#blobs.get(id);
      if (had !== undefined)
        throw new NydusError(
          'ERR_INVALID_ARG',
          `Disk "${this.devicePath}": GPT partitions ${had.partition} and ${p.number} hold the same blob ${id}`,
        );
      this.#blobs.set(id, { blobId: id, offset: p.offset, size: p.size, partition: p.number });
      if (p.typeGuid === TYPE_BASIC_DATA) this.#legacy = true;
    }
  }

  /** The disk's file descriptor (for readers). */
  get fd(): number {
    return this.#fh.fd;
  }

  /** Whether the disk uses the old layout (blob found by the first 32 characters of its id). */
  get legacyGpt(): boolean {
    return this.#legacy;
  }

  /** Every blob known, by the key it is found by. */
  blobs(): DiskBlob[] {
    return [...this.#blobs.values()];
  }

  /**
   * Register a blob at a byte range of the disk (upstream `add_blob`): refused in legacy GPT
   * mode, past the disk's end, or when the id is known already.
   */
  addBlob(blobId: string, offset: number, size: number): void {
    if (this.#legacy)
      throw new NydusError(
        'ERR_FAILED_PRECONDITION',
        `Disk "${this.devicePath}" is in legacy GPT mode: blobs cannot be added`,
      );
    if (
      !Number.isSafeInteger(offset) ||
      !Number.isSafeInteger(size) ||
      offset < 0 ||
      size < 0 ||
      offset + size > this.capacity
    )
      throw new NydusError(
        'ERR_INVALID_ARG',
        `Blob ${blobId} at ${offset} (${size} bytes) is outside disk "${this.devicePath}" (${this.capacity} bytes)`,
      );
    if (this.#blobs.has(blobId))
      throw new NydusError('ERR_ALREADY_EXISTS', `Blob ${blobId} is already on disk "${this.devicePath}"`);
    this.#blobs.set(blobId, { blobId, offset, size });
  }

  /** Where blob `blobId` is, or undefined. */
  find(blobId: string): DiskBlob | undefined {
    const b = this.#blobs.get(blobId);
    if (b !== undefined) return b;
    if (this.#legacy && blobId.length >= NAME_ID_LEN) return this.#blobs.get(blobId.slice(0, NAME_ID_LEN));
    return undefined;
  }

  open(blob: BlobInfo): Promise<BlobReader> {
    const b = this.find(blob.blobId);
    if (b === undefined) {
      const why =
        this.gpt === undefined
          ? 'disable_gpt is set and it was not added'
          : HEX64.test(blob.blobId)
            ? `no GPT partition is named "${blob.blobId.slice(0, NAME_ID_LEN)}" with GUID ${splitBlobId(blob.blobId).guid}`
            : 'no GPT partition holds it';
      return Promise.reject(
        new NydusError('ERR_NOT_FOUND', `Blob ${blob.blobId} is not on disk "${this.devicePath}": ${why}`),
      );
    }
    return Promise.resolve(new DiskBlobReader(this, b));
  }

  async close(): Promise<void> {
    await this.#fh.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Writing a disk

/** One blob to put on a disk. */
export interface DiskBlobInput {
  blobId: string;
  /** File holding the blob's bytes. */
  path: string;
}

export interface PlannedPartition {
  number: number;
  blobId: string;
  /** Partition name: the first 32 characters of the blob id. */
  name: string;
  /** Partition GUID text: the last 32 characters of the blob id. */
  guid: string;
  path: string;
  /** Blob file size. */
  blobSize: number;
  firstLba: number;
  lastLba: number;
  offset: number;
  /** Partition size (the blob rounded up to whole sectors). */
  size: number;
}

export interface DiskPlan {
  /** Disk size in bytes. */
  size: number;
  diskGuid: string;
  partitions: PlannedPartition[];
}

const alignUp = (n: number, a: number): number => Math.ceil(n / a) * a;

/**
 * Lay blobs out as upstream's localdisk reads them: in the given order, one "Linux filesystem
 * data" partition each, named by the first half of the blob id with the second half as its
 * GUID, starting at 1 MiB boundaries and just long enough for the blob (whole sectors); the
 * disk ends 1 MiB-aligned after the last partition and the backup table.
 */
export function planLocalDisk(
  blobs: readonly (DiskBlobInput & { size: number })[],
  diskGuid: string,
): DiskPlan {
  const seen = new Set<string>();
  const count = entryCountFor(blobs.length);
  let next = alignUp(2 + entrySectors(count), PARTITION_ALIGN_SECTORS);
  const partitions = blobs.map((b, i): PlannedPartition => {
    if (seen.has(b.blobId)) throw new NydusError('ERR_INVALID_ARG', `Blob ${b.blobId} is given twice`);
    seen.add(b.blobId);
    const { name, guid } = splitBlobId(b.blobId);
    const sectors = Math.max(1, Math.ceil(b.size / SECTOR_SIZE));
    const firstLba = next;
    const lastLba = firstLba + sectors - 1;
    next = alignUp(lastLba + 1, PARTITION_ALIGN_SECTORS);
    return {
      number: i + 1,
      blobId: b.blobId,
      name,
      guid,
      path: b.path,
      blobSize: b.size,
      firstLba,
      lastLba,
      offset: firstLba * SECTOR_SIZE,
      size: sectors * SECTOR_SIZE,
    };
  });
  const lastUsed = partitions.at(-1)?.lastLba ?? next - 1;
  // The backup entries and header follow the last usable sector.
  const sectors = alignUp(lastUsed + 1 + entrySectors(count) + 1, PARTITION_ALIGN_SECTORS);
  return { size: sectors * SECTOR_SIZE, diskGuid, partitions };
}

/** A disk GUID derived from `seed` (the first 16 bytes of its sha256, as text). */
export function diskGuidFrom(seed: Buffer | string): string {
  const h = createHash('sha256').update(seed).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

const COPY_BUF = 1 << 20;

/**
 * Write the disk image `plan` describes to `output` (created or truncated; a sparse file): the
 * protective MBR, both GPTs and every blob's bytes at its partition. `progress` gets the blob
 * bytes copied so far.
 */
export async function writeLocalDisk(
  output: string,
  plan: DiskPlan,
  progress?: (bytes: number) => void,
): Promise<void> {
  const sectors = plan.size / SECTOR_SIZE;
  const gpt = encodeGpt({
    sectors,
    diskGuid: plan.diskGuid,
    entryCount: entryCountFor(plan.partitions.length),
    partitions: plan.partitions.map((p) => ({
      typeGuid: TYPE_LINUX_FS,
      guid: p.guid,
      name: p.name,
      firstLba: p.firstLba,
      lastLba: p.lastLba,
    })),
  });
  const out = await open(output, 'w');
  try {
    await out.truncate(plan.size);
    await pwriteFull(out.fd, gpt.head, 0);
    const buf = Buffer.allocUnsafe(COPY_BUF);
    let copied = 0;
    for (const p of plan.partitions) {
      let src: FileHandle;
      try {
        src = await open(p.path, 'r');
      } catch (e) {
        throw new NydusError('ERR_NOT_FOUND', `Cannot open blob file "${p.path}": ${errorText(e)}`, {
          cause: e,
        });
      }
      try {
        let done = 0;
        while (done < p.blobSize) {
          const n = await preadFull(src.fd, buf.subarray(0, Math.min(COPY_BUF, p.blobSize - done)), done);
          if (n === 0)
            throw new NydusError('ERR_IO', `Blob file "${p.path}" shrank while copying at ${done}`);
          await pwriteFull(out.fd, buf.subarray(0, n), p.offset + done);
          done += n;
          copied += n;
          progress?.(copied);
        }
      } finally {
        await src.close();
      }
    }
    await pwriteFull(out.fd, gpt.tail, gpt.tailOffset);
    await out.sync();
  } finally {
    await out.close();
  }
}

/** Sizes of blob files, for `planLocalDisk`. */
export async function sizedBlobs(
  blobs: readonly DiskBlobInput[],
): Promise<(DiskBlobInput & { size: number })[]> {
  return Promise.all(
    blobs.map(async (b) => {
      try {
        const st = await stat(b.path);
        if (!st.isFile()) throw new Error('not a regular file');
        return { ...b, size: st.size };
      } catch (e) {
        throw new NydusError(
          'ERR_NOT_FOUND',
          `Blob ${b.blobId}: cannot use file "${b.path}": ${errorText(e)}`,
          {
            cause: e,
          },
        );
      }
    }),
  );
}
