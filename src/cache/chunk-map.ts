import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { errorText, NydusError } from '../errors/errors.js';
import type { Logger } from '../log/logger.js';
import { preadFull, pwriteFull } from '../util/file-io.js';

/**
 * The persisted chunk-ready map of one cached blob, in upstream's "indexed chunk map" layout so a
 * cache directory can be shared with upstream nydusd:
 *
 *   file   `<work_dir>/<blob_id>.blob.data.chunk_map`, exactly 4096 + ceil(chunk_count / 8) bytes
 *   header 4096 bytes, little-endian u32s: magic 0x424D4150 at 0, version (1) at 4,
 *          magic2 0x434D4150 at 8, all_ready at 12 (0x4D4D4150 when every chunk is ready),
 *          the rest zero
 *   bitmap one bit per chunk index i: byte 4096 + (i >> 3), mask 0x80 >> (i & 7) (most
 *          significant bit first); a set bit means the chunk's data is in the data file
 *
 * A file of the wrong size or with a bad header is started afresh (everything not ready) with a
 * warning, where upstream refuses the blob. The bitmap is read once at open and kept in memory;
 * each change is written back as the one changed byte (and the header when all chunks become
 * ready), one write at a time so a later write never carries an older byte. Nothing is fsynced:
 * a power loss may leave bits set for data that never reached the disk (cache.validate catches
 * those).
 */

export const CHUNK_MAP_SUFFIX = '.chunk_map';
export const CHUNK_MAP_HEADER_SIZE = 4096;
export const CHUNK_MAP_MAGIC = 0x424d4150;
export const CHUNK_MAP_MAGIC2 = 0x434d4150;
export const CHUNK_MAP_ALL_READY = 0x4d4d4150;
export const CHUNK_MAP_VERSION = 1;

function mask(index: number): number {
  return 0x80 >> (index & 7);
}

function header(allReady: boolean): Buffer {
  const h = Buffer.alloc(CHUNK_MAP_HEADER_SIZE);
  h.writeUInt32LE(CHUNK_MAP_MAGIC, 0);
  h.writeUInt32LE(CHUNK_MAP_VERSION, 4);
  h.writeUInt32LE(CHUNK_MAP_MAGIC2, 8);
  h.writeUInt32LE(allReady ? CHUNK_MAP_ALL_READY : 0, 12);
  return h;
}

/** The first `length` bytes of the file; undefined when it is shorter. */
async function readAll(fh: FileHandle, length: number): Promise<Buffer | undefined> {
  const buf = Buffer.alloc(length);
  return (await preadFull(fh.fd, buf, 0)) === length ? buf : undefined;
}

export class ChunkMapFile {
  readonly path: string;
  readonly count: number;
  readonly #fh: FileHandle;
  readonly #bits: Buffer;
  #ready: number;
  /** Whether the header on disk says all ready. */
  #headerAllReady: boolean;
  #chain: Promise<void> = Promise.resolve();

  private constructor(path: string, count: number, fh: FileHandle, bits: Buffer, allReady: boolean) {
    this.path = path;
    this.count = count;
    this.#fh = fh;
    this.#bits = bits;
    this.#headerAllReady = allReady;
    let ready = 0;
    for (let i = 0; i < count; i++) if ((bits[i >> 3]! & mask(i)) !== 0) ready++;
    this.#ready = ready;
  }

  /**
   * Open or create the map of a blob of `count` chunks; `reset` starts it afresh (the data file
   * was reset). Rejects with ERR_IO when the file cannot be opened, read or written.
   */
  static async open(path: string, count: number, reset: boolean, log: Logger): Promise<ChunkMapFile> {
    if (!Number.isSafeInteger(count) || count <= 0)
      throw new NydusError(
        'ERR_INVALID_ARG',
        `Chunk map "${path}" needs a chunk count above 0, got ${count}`,
      );
    let fh: FileHandle;
    try {
      fh = await open(path, constants.O_RDWR | constants.O_CREAT, 0o644);
    } catch (e) {
      throw new NydusError('ERR_IO', `Cannot open blob cache chunk map "${path}": ${errorText(e)}`, {
        cause: e,
      });
    }
    try {
      const expected = CHUNK_MAP_HEADER_SIZE + Math.ceil(count / 8);
      const size = (await fh.stat()).size;
      let content: Buffer | undefined;
      let problem: string | undefined;
      if (!reset && size !== 0) {
        if (size !== expected) {
          problem = `it has ${size} bytes, expected ${expected} for ${count} chunks`;
        } else {
          content = await readAll(fh, expected);
          if (content === undefined) problem = 'it shrank while being read';
          else if (content.readUInt32LE(0) !== CHUNK_MAP_MAGIC) {
            // All zeros: a creator stopped between sizing the file and writing its header.
            if (content.some((x) => x !== 0)) problem = 'its header magic is wrong';
            content = undefined;
          } else if (content.readUInt32LE(4) >= 1 && content.readUInt32LE(8) !== CHUNK_MAP_MAGIC2) {
            problem = 'its second header magic is wrong';
            content = undefined;
          }
        }
      }
      if (problem !== undefined)
        log.warn(`Blob cache chunk map "${path}" is invalid (${problem}), starting it afresh`);
      if (content === undefined) {
        await fh.truncate(0);
        await fh.truncate(expected);
        await pwriteFull(fh.fd, header(false), 0);
        return new ChunkMapFile(path, count, fh, Buffer.alloc(expected - CHUNK_MAP_HEADER_SIZE), false);
      }
      const bits = Buffer.from(content.subarray(CHUNK_MAP_HEADER_SIZE));
      const allReady = content.readUInt32LE(4) >= 1 && content.readUInt32LE(12) === CHUNK_MAP_ALL_READY;
      if (allReady) for (let i = 0; i < count; i++) bits[i >> 3]! |= mask(i);
      const map = new ChunkMapFile(path, count, fh, bits, allReady);
      if (map.allReady && !allReady) await map.#enqueue(() => map.#writeHeader(true));
      return map;
    } catch (e) {
      await fh.close().catch(() => undefined);
      if (e instanceof NydusError) throw e;
      throw new NydusError('ERR_IO', `Cannot initialise blob cache chunk map "${path}": ${errorText(e)}`, {
        cause: e,
      });
    }
  }

  /** Chunks marked ready. */
  get readyCount(): number {
    return this.#ready;
  }

  get allReady(): boolean {
    return this.#ready >= this.count;
  }

  isReady(index: number): boolean {
    return index >= 0 && index < this.count && (this.#bits[index >> 3]! & mask(index)) !== 0;
  }

  /** Mark chunk `index` ready and persist it; resolves true when it was not ready before. */
  async setReady(index: number): Promise<boolean> {
    if (index < 0 || index >= this.count || this.isReady(index)) return false;
    this.#bits[index >> 3]! |= mask(index);
    this.#ready++;
    await this.#enqueue(async () => {
      await this.#writeByte(index >> 3);
      if (this.allReady && !this.#headerAllReady) await this.#writeHeader(true);
    });
    return true;
  }

  /** Mark chunk `index` not ready and persist it; resolves true when it was ready before. */
  async clear(index: number): Promise<boolean> {
    if (!this.isReady(index)) return false;
    this.#bits[index >> 3]! &= ~mask(index);
    this.#ready--;
    await this.#enqueue(async () => {
      // The header first: with all_ready still set every bit would be taken as set.
      if (this.#headerAllReady) await this.#writeHeader(false);
      await this.#writeByte(index >> 3);
    });
    return true;
  }

  /** Wait for pending writes, then close the file. */
  async close(): Promise<void> {
    await this.#chain;
    await this.#fh.close();
  }

  #enqueue(task: () => Promise<void>): Promise<void> {
    const p = this.#chain.then(task);
    this.#chain = p.catch(() => undefined);
    return p;
  }

  async #writeByte(byteIndex: number): Promise<void> {
    await pwriteFull(
      this.#fh.fd,
      this.#bits.subarray(byteIndex, byteIndex + 1),
      CHUNK_MAP_HEADER_SIZE + byteIndex,
    );
  }

  async #writeHeader(allReady: boolean): Promise<void> {
    // Only the first 16 bytes carry anything; the reserved rest stays zero.
    await pwriteFull(this.#fh.fd, header(allReady).subarray(0, 16), 0);
    this.#headerAllReady = allReady;
  }
}
