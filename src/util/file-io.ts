import { read, write } from 'node:fs';

/**
 * Positional file I/O that loops until done, through the callback API (one libuv request per
 * call, lighter than FileHandle's promises on the daemon's hot paths).
 */

/** pread(2) until `buf` is full or the file ends: the bytes read (fewer only at the end of the file). */
export async function preadFull(fd: number, buf: Buffer, position: number): Promise<number> {
  let done = 0;
  while (done < buf.length) {
    const n = await new Promise<number>((resolve, reject) => {
      read(fd, buf, done, buf.length - done, position + done, (err, bytes) =>
        err === null ? resolve(bytes) : reject(err),
      );
    });
    if (n === 0) break;
    done += n;
  }
  return done;
}

/** pwrite(2) all of `data` at `position`; a write that makes no progress is an error. */
export async function pwriteFull(fd: number, data: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const n = await new Promise<number>((resolve, reject) => {
      write(fd, data, done, data.length - done, position + done, (err, bytes) =>
        err === null ? resolve(bytes) : reject(err),
      );
    });
    if (n === 0) throw new Error(`short write at ${position + done}`);
    done += n;
  }
}

/** The first `size` bytes of `into` when it is large enough, else a new buffer of `size` bytes. */
export function bufferFor(size: number, into?: Buffer): Buffer {
  return into !== undefined && into.length >= size ? into.subarray(0, size) : Buffer.allocUnsafe(size);
}
