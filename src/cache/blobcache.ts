import { accessSync, constants, mkdirSync, statSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { errorText, NydusError } from '../errors/errors.js';
import type { BlobInfo, ChunkInfo } from '../format/model.js';
import type { Logger } from '../log/logger.js';
import type { CachedBlob, ChunkCache } from '../storage/chunk-cache.js';
import { ChunkMapFile, CHUNK_MAP_SUFFIX } from './chunk-map.js';
import { newBlobCacheStats, noteRequest, type BlobCacheStats } from './stats.js';
import { bufferFor, preadFull, pwriteFull } from '../util/file-io.js';

/** Suffix of a blob's cache data file, as upstream names it. */
export const BLOB_DATA_SUFFIX = '.blob.data';

const BLOB_ID = /^[0-9a-zA-Z._-]+$/;

/** One blob's cache files: decompressed data at each chunk's uncompressed offset, and its chunk map. */
class FileCachedBlob implements CachedBlob {
  readonly blob: BlobInfo;
  readonly dataPath: string;
  readonly map: ChunkMapFile;
  /** Size the data file is kept at (the blob's uncompressed size); 0 when the blob does not say. */
  readonly #size: number;
  readonly #fh: FileHandle;
  readonly #owner: BlobCache;
  readonly #pending = new Set<Promise<void>>();
  #closed = false;

  constructor(
    blob: BlobInfo,
    dataPath: string,
    fh: FileHandle,
    size: number,
    map: ChunkMapFile,
    owner: BlobCache,
  ) {
    this.blob = blob;
    this.dataPath = dataPath;
    this.#fh = fh;
    this.#size = size;
    this.map = map;
    this.#owner = owner;
  }

  isReady(index: number): boolean {
    return !this.#closed && this.map.isReady(index);
  }

  canStore(c: ChunkInfo): boolean {
    return (
      c.index >= 0 &&
      c.index < this.map.count &&
      (this.#size === 0 || c.uncompressedOffset + c.uncompressedSize <= this.#size)
    );
  }

  async read(c: ChunkInfo, into?: Buffer): Promise<Buffer | undefined> {
    if (this.#closed) return undefined;
    const buf = bufferFor(c.uncompressedSize, into);
    try {
      if ((await preadFull(this.#fh.fd, buf, c.uncompressedOffset)) < buf.length) {
        this.#owner.log.warn(
          `Blob cache file "${this.dataPath}" ends before chunk ${c.index} (${c.uncompressedSize} bytes at ${c.uncompressedOffset}); refetching it`,
        );
        return undefined;
      }
      return buf;
    } catch (e) {
      this.#owner.log.warn(
        `Cannot read chunk ${c.index} from blob cache file "${this.dataPath}": ${errorText(e)}`,
      );
      return undefined;
    }
  }

  write(c: ChunkInfo, data: Buffer): Promise<void> {
    const p = this.#write(c, data);
    this.#pending.add(p);
    void p.finally(() => this.#pending.delete(p));
    return p;
  }

  async #write(c: ChunkInfo, data: Buffer): Promise<void> {
    if (this.#closed || this.map.isReady(c.index) || !this.canStore(c) || data.length !== c.uncompressedSize)
      return;
    const stats = this.#owner.stats;
    stats.bufferedBackendSize += data.length;
    try {
      await pwriteFull(this.#fh.fd, data, c.uncompressedOffset);
      // Ready only once the data is in the file.
      if (await this.map.setReady(c.index)) {
        stats.entriesCount++;
        if (this.map.allReady) this.#owner.updateAllReady();
      }
    } catch (e) {
      this.#owner.log.warn(
        `Cannot store chunk ${c.index} of blob ${this.blob.blobId} in blob cache file "${this.dataPath}": ${errorText(e)}`,
      );
    } finally {
      stats.bufferedBackendSize -= data.length;
    }
  }

  async invalidate(c: ChunkInfo, why: string): Promise<void> {
    this.#owner.corruptChunks++;
    this.#owner.log.warn(
      `Chunk ${c.index} of blob ${this.blob.blobId} in blob cache file "${this.dataPath}" ${why}; refetching it from the backend`,
    );
    try {
      if (await this.map.clear(c.index)) {
        this.#owner.stats.entriesCount--;
        this.#owner.updateAllReady();
      }
    } catch (e) {
      this.#owner.log.warn(`Cannot update blob cache chunk map "${this.map.path}": ${errorText(e)}`);
    }
  }

  /** Wait for chunks being stored, then close both files. */
  async close(): Promise<void> {
    while (this.#pending.size > 0) await Promise.allSettled([...this.#pending]);
    this.#closed = true;
    await Promise.allSettled([this.#fh.close(), this.map.close()]);
  }
}

/**
 * Upstream `blobcache` / `filecache`: decompressed chunks in sparse per-blob files under a work
 * directory, with a persisted chunk-ready map each (see index.ts and chunk-map.ts).
 */
export class BlobCache implements ChunkCache {
  readonly type = 'blobcache';
  readonly storesData = true;
  readonly validate: boolean;
  readonly workDir: string;
  readonly stats: BlobCacheStats;
  readonly log: Logger;
  /** Reads issued to the backend by images using this cache, and their bytes. */
  backendReads = 0;
  backendBytes = 0;
  /** Cached chunks found wrong (digest mismatch) and refetched. */
  corruptChunks = 0;
  readonly #blobs = new Map<string, Promise<FileCachedBlob | undefined>>();
  /** Blobs opened, for dataAllReady. */
  readonly #opened: FileCachedBlob[] = [];
  #closed = false;

  /** Creates `workDir` when missing; throws ERR_IO when it cannot be created or written. */
  constructor(workDir: string, validate: boolean, log: Logger) {
    const dir = resolve(workDir);
    try {
      mkdirSync(dir, { recursive: true });
    } catch (e) {
      throw new NydusError('ERR_IO', `Cannot create blob cache work_dir "${dir}": ${errorText(e)}`, {
        cause: e,
      });
    }
    let isDir: boolean;
    try {
      isDir = statSync(dir).isDirectory();
      accessSync(dir, constants.W_OK | constants.X_OK);
    } catch (e) {
      throw new NydusError('ERR_IO', `Blob cache work_dir "${dir}" is not usable: ${errorText(e)}`, {
        cause: e,
      });
    }
    if (!isDir) throw new NydusError('ERR_IO', `Blob cache work_dir "${dir}" is not a directory`);
    this.workDir = dir;
    this.validate = validate;
    this.log = log;
    this.stats = newBlobCacheStats(dir);
  }

  /** Path of a blob's cache data file (its chunk map is this plus ".chunk_map"). */
  dataPath(blobId: string): string {
    return join(this.workDir, `${blobId}${BLOB_DATA_SUFFIX}`);
  }

  openBlob(blob: BlobInfo): Promise<CachedBlob | undefined> {
    if (this.#closed) return Promise.resolve(undefined);
    let p = this.#blobs.get(blob.blobId);
    if (p === undefined) {
      p = this.#open(blob);
      p.catch(() => this.#blobs.delete(blob.blobId));
      this.#blobs.set(blob.blobId, p);
    }
    return p;
  }

  async #open(blob: BlobInfo): Promise<FileCachedBlob | undefined> {
    const id = blob.blobId;
    if (!BLOB_ID.test(id) || id === '.' || id === '..')
      throw new NydusError('ERR_FORMAT', `Blob id "${id}" is not a valid cache file name`);
    if (blob.chunkCount <= 0) {
      this.log.warn(`Blob ${id} records no chunk count; its chunks are not cached`);
      return undefined;
    }
    const dataPath = this.dataPath(id);
    let fh: FileHandle;
    try {
      fh = await open(dataPath, constants.O_RDWR | constants.O_CREAT, 0o644);
    } catch (e) {
      throw new NydusError('ERR_IO', `Cannot open blob cache file "${dataPath}": ${errorText(e)}`, {
        cause: e,
      });
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw new NydusError('ERR_IO', `Blob cache file "${dataPath}" is not a regular file`);
      const want = blob.uncompressedSize;
      let reset = false;
      if (want > 0 && st.size > want) {
        this.log.warn(
          `Blob cache file "${dataPath}" has ${st.size} bytes, more than blob ${id}'s ${want}; starting it afresh`,
        );
        await fh.truncate(0);
        reset = true;
      }
      if (want > 0 && (reset || st.size < want)) await fh.truncate(want);
      const map = await ChunkMapFile.open(dataPath + CHUNK_MAP_SUFFIX, blob.chunkCount, reset, this.log);
      const entry = new FileCachedBlob(blob, dataPath, fh, want, map, this);
      this.stats.underlyingFiles.add(dataPath);
      this.stats.entriesCount += map.readyCount;
      if (this.#closed) {
        await entry.close();
        return undefined;
      }
      this.#opened.push(entry);
      this.updateAllReady();
      return entry;
    } catch (e) {
      await fh.close().catch(() => undefined);
      if (e instanceof NydusError) throw e;
      throw new NydusError('ERR_IO', `Cannot prepare blob cache file "${dataPath}": ${errorText(e)}`, {
        cause: e,
      });
    }
  }

  noteRequest(chunks: number, hits: number): void {
    noteRequest(this.stats, chunks, hits);
  }

  noteBackendRead(bytes: number): void {
    this.backendReads++;
    this.backendBytes += bytes;
  }

  /** Recompute `dataAllReady`: there are opened blobs and each has all its chunks ready. */
  updateAllReady(): void {
    this.stats.dataAllReady = this.#opened.length > 0 && this.#opened.every((e) => e.map.allReady);
  }

  /** Wait for chunks being stored, then close every cache file. Later opens store nothing. */
  async close(): Promise<void> {
    this.#closed = true;
    const entries = await Promise.allSettled([...this.#blobs.values()]);
    this.#blobs.clear();
    const open = entries.flatMap((r) => (r.status === 'fulfilled' && r.value !== undefined ? [r.value] : []));
    await Promise.all(open.map((e) => e.close()));
  }
}
