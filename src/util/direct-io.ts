import { closeSync, constants, openSync, writeSync } from 'node:fs';
import { createRequire } from 'node:module';

/**
 * Writing a large output file with O_DIRECT: the data goes from the process's memory to the
 * device, never through the page cache.
 *
 * Why: on the machines this project runs on (a hypervisor with shadowed page tables), every page
 * the kernel takes fresh costs about 10 µs, the page cache's as much as a process's own. A
 * buffered write of a 300 MB blob makes the kernel take 75,000 fresh page-cache pages: about
 * 0.45 s of system time in the writing thread, while an O_DIRECT write of the same bytes costs
 * 0.05 s (`dd bs=4M` of 256 MiB: 0.41-0.48 s of system time buffered, 0.04-0.05 s direct, and
 * less wall time too). The data must then move in whole blocks: offsets, lengths and memory
 * aligned to DIRECT_ALIGN; the writer stages its bytes in aligned buffers, pads the last one, and
 * cuts the file to its size at the end.
 *
 * A file system that refuses O_DIRECT (tmpfs refuses it at open, some refuse the first write) is
 * written the usual way: `openForWrite` tells which one it got.
 */

/** Offsets, lengths and memory of direct writes are multiples of this (the largest logical block size in use). */
export const DIRECT_ALIGN = 4096;

/** How a file system refuses O_DIRECT, at open or at the first write. */
const REFUSALS = new Set(['EINVAL', 'EOPNOTSUPP', 'ENOTSUP']);

let addressOf: ((b: Buffer) => bigint) | null | undefined;

/** koffi's address of a buffer's first byte, or null when koffi cannot be loaded. */
function addresses(): ((b: Buffer) => bigint) | null {
  if (addressOf !== undefined) return addressOf;
  addressOf = null;
  try {
    const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
    if (typeof koffi.address === 'function') addressOf = (b) => koffi.address(b);
  } catch {
    // no koffi: addresses stay unknown
  }
  return addressOf;
}

/**
 * A buffer of `size` bytes whose memory starts on a DIRECT_ALIGN boundary (a view into a slightly
 * larger allocation), or undefined when the address cannot be known (no koffi).
 */
export function alignedBuffer(size: number): Buffer | undefined {
  const address = addresses();
  if (address === null) return undefined;
  const raw = Buffer.allocUnsafeSlow(size + DIRECT_ALIGN);
  const skip = (DIRECT_ALIGN - Number(address(raw) % BigInt(DIRECT_ALIGN))) % DIRECT_ALIGN;
  return raw.subarray(skip, skip + size);
}

/**
 * Open `path` for writing, created or truncated. With `direct`, O_DIRECT is asked for and tried
 * with one aligned block written at offset 0 (the caller writes its data over it and sets the
 * file's size at the end); a file system that refuses either gets the file opened the usual way.
 * Errors other than that refusal (no such directory, no permission) are thrown.
 */
export function openForWrite(path: string, direct: boolean): { fd: number; direct: boolean } {
  const O_DIRECT = constants.O_DIRECT;
  if (direct && process.platform === 'linux' && typeof O_DIRECT === 'number') {
    const probe = alignedBuffer(DIRECT_ALIGN);
    if (probe !== undefined) {
      let fd: number | undefined;
      try {
        fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | O_DIRECT, 0o666);
        writeSync(fd, probe.fill(0), 0, DIRECT_ALIGN, 0);
        return { fd, direct: true };
      } catch (e) {
        if (fd !== undefined) closeSync(fd);
        // Only a refusal of direct I/O falls back; anything else is the caller's to report.
        if (!REFUSALS.has((e as NodeJS.ErrnoException).code ?? '')) throw e;
      }
    }
  }
  return { fd: openSync(path, 'w'), direct: false };
}
