import { open, type FileHandle } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { errorText, NydusError } from '../errors/errors.js';
import type { BlobInfo } from '../format/model.js';
import type { BlobReader, BlobSource } from './blob-source.js';
import { bufferFor, preadFull } from '../util/file-io.js';

/** A blob that is one local file, read with positional reads. */
export class FileBlobReader implements BlobReader {
  readonly size: number;
  readonly path: string;
  readonly #fh: FileHandle;

  private constructor(fh: FileHandle, size: number, path: string) {
    this.#fh = fh;
    this.size = size;
    this.path = path;
  }

  /** The open file's descriptor (valid until `close`). */
  get fd(): number {
    return this.#fh.fd;
  }

  static async open(path: string): Promise<FileBlobReader> {
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'ERR_NOT_FOUND' : 'ERR_IO';
      throw new NydusError(code, `Cannot open blob file "${path}": ${errorText(e)}`, { cause: e });
    }
    const st = await fh.stat();
    if (!st.isFile()) {
      await fh.close();
      throw new NydusError('ERR_IO', `Blob "${path}" is not a regular file`);
    }
    return new FileBlobReader(fh, st.size, path);
  }

  async read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    if (offset < 0 || length < 0 || offset + length > this.size) {
      throw new NydusError(
        'ERR_FORMAT',
        `Read of ${length} bytes at ${offset} is past the end of blob "${this.path}" (${this.size} bytes)`,
      );
    }
    const buf = bufferFor(length, into);
    const fd = this.#fh.fd;
    // What the page cache holds is read at once; the rest (if any) on the libuv pool.
    const cached = length === 0 ? 0 : readCached(fd, buf, offset, length);
    const got =
      cached >= length
        ? cached
        : cached + (await preadFull(fd, buf.subarray(cached, length), offset + cached));
    if (got < length)
      throw new NydusError('ERR_IO', `Blob "${this.path}" shrank while reading at ${offset + got}`);
    return buf;
  }

  readNow(offset: number, length: number, into?: Buffer): Buffer | undefined {
    if (offset < 0 || length <= 0 || offset + length > this.size) return undefined;
    const buf = bufferFor(length, into);
    return readCached(this.#fh.fd, buf, offset, length) >= length ? buf : undefined;
  }

  async close(): Promise<void> {
    await this.#fh.close();
  }
}

/**
 * preadv2(2) with RWF_NOWAIT through koffi: reads only what is in the page cache, without
 * waiting for the disk. A blob read on the libuv pool costs a thread hop (submit, a pool thread
 * wakes, the loop wakes again) that costs more than copying cached pages, which is the usual
 * case for a local blob; data not cached is left to the pool, so the loop never waits for the
 * disk. Null when koffi or the call is unavailable; NYDUS_NOWAIT_READ=0 turns it off.
 */
type PreadNowait = (
  fd: number,
  iov: { base: Buffer; len: number },
  n: number,
  off: number,
  flags: number,
) => number;
let preadNowait: PreadNowait | null | undefined;
const RWF_NOWAIT = 8;

function loadPreadNowait(): PreadNowait | null {
  preadNowait = null;
  if (process.platform !== 'linux' || process.env['NYDUS_NOWAIT_READ'] === '0') return null;
  try {
    const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
    const libc = koffi.load('libc.so.6');
    koffi.struct('nydus_iovec', { base: 'void *', len: 'size_t' });
    const fn = libc.func(
      'intptr_t preadv2(int fd, const nydus_iovec *iov, int iovcnt, int64_t offset, int flags)',
    ) as PreadNowait;
    preadNowait = fn;
  } catch {
    preadNowait = null;
  }
  return preadNowait;
}

/** Bytes at `offset` read into `buf` from the page cache alone (0 when none, or unavailable). */
function readCached(fd: number, buf: Buffer, offset: number, length: number): number {
  const fn = preadNowait === undefined ? loadPreadNowait() : preadNowait;
  if (fn === null) return 0;
  let done = 0;
  while (done < length) {
    const n = Number(
      fn(fd, { base: buf.subarray(done, length), len: length - done }, 1, offset + done, RWF_NOWAIT),
    );
    if (!(n > 0)) break;
    done += n;
  }
  return done;
}

export interface LocalFsOptions {
  /** Directory holding blobs named by their id. */
  dir?: string;
  /** Extra directories searched after `dir`. */
  altDirs?: readonly string[];
  /** A single blob file used for every blob (upstream `blob_file`, `nydus-image unpack --blob`). */
  blobFile?: string;
  /** Blob ids served from specific files (e.g. the inline-meta blob given as the bootstrap). */
  files?: ReadonlyMap<string, string>;
}

/** The localfs backend: blobs are files named by blob id in a directory. */
export class LocalFsBlobSource implements BlobSource {
  readonly #opts: LocalFsOptions;

  constructor(opts: LocalFsOptions) {
    this.#opts = opts;
  }

  async open(blob: BlobInfo): Promise<BlobReader> {
    const mapped = this.#opts.files?.get(blob.blobId);
    if (mapped !== undefined) return FileBlobReader.open(mapped);
    if (this.#opts.blobFile !== undefined) return FileBlobReader.open(this.#opts.blobFile);
    const dirs = [this.#opts.dir, ...(this.#opts.altDirs ?? [])].filter((d): d is string => d !== undefined);
    if (!/^[0-9a-zA-Z._-]+$/.test(blob.blobId)) {
      throw new NydusError('ERR_FORMAT', `Blob id "${blob.blobId}" is not a valid file name`);
    }
    for (const dir of dirs) {
      try {
        return await FileBlobReader.open(join(dir, blob.blobId));
      } catch (e) {
        if (!(e instanceof NydusError && e.code === 'ERR_NOT_FOUND')) throw e;
      }
    }
    if (dirs.length === 0)
      throw new NydusError('ERR_INVALID_ARG', `No blob directory or blob file to find blob ${blob.blobId}`);
    throw new NydusError(
      'ERR_NOT_FOUND',
      `Blob ${blob.blobId} not found in ${dirs.map((d) => `"${d}"`).join(', ')}`,
    );
  }
}
