import { createRequire } from 'node:module';

/**
 * A file mapped into memory (mmap(2) through koffi), seen as a Buffer. Only the pages a reader
 * touches are in memory, and they are the page cache's (file-backed, reclaimable) rather than
 * the process's own heap: a daemon that mounts a 10 MiB bootstrap and reads a few inodes of it
 * holds a few pages, not 10 MiB.
 *
 * The mapping is private and writable (MAP_PRIVATE, PROT_READ | PROT_WRITE): a write through the
 * Buffer changes a private copy of that page, never the file, and never faults. It is unmapped
 * only once the garbage collector has collected its ArrayBuffer (a FinalizationRegistry on it):
 * every Buffer or view over the mapping holds that ArrayBuffer, so none can outlive the mapping.
 *
 * If the file shrinks while mapped, touching a page past its new end raises SIGBUS, which kills
 * the process (any program that maps a file has that exposure; upstream nydusd maps v6
 * bootstraps too). `nydus-image create` and `merge` write a new file and rename it into place,
 * which leaves a mapped old one whole; copying over a mounted bootstrap in place would not.
 *
 * Unavailable (null) off Linux, without koffi, or with NYDUS_MMAP=0 in the environment: callers
 * then read the file into memory.
 */

type Ptr = unknown;
interface Mm {
  koffi: typeof import('koffi');
  mmap: (addr: null, len: number, prot: number, flags: number, fd: number, off: number) => Ptr;
  munmap: (addr: Ptr, len: number) => number;
  registry: FinalizationRegistry<{ ptr: Ptr; len: number }>;
}

const PROT_READ = 1;
const PROT_WRITE = 2;
const MAP_PRIVATE = 2;
const MAP_FAILED = (1n << 64n) - 1n;

let mm: Mm | null | undefined;

function load(): Mm | null {
  mm = null;
  if (process.platform !== 'linux' || process.env['NYDUS_MMAP'] === '0') return null;
  try {
    const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
    if (typeof koffi.view !== 'function') return null;
    const libc = koffi.load('libc.so.6');
    const mmap = libc.func(
      'void *mmap(void *addr, size_t len, int prot, int flags, int fd, int64_t off)',
    ) as Mm['mmap'];
    const munmap = libc.func('int munmap(void *addr, size_t len)') as Mm['munmap'];
    const registry = new FinalizationRegistry<{ ptr: Ptr; len: number }>((m) => {
      munmap(m.ptr, m.len);
    });
    mm = { koffi, mmap, munmap, registry };
  } catch {
    mm = null;
  }
  return mm;
}

/** Whether `mapFile` can map files here. */
export function canMap(): boolean {
  return (mm === undefined ? load() : mm) !== null;
}

/**
 * The first `size` bytes of the open file `fd` (size > 0) mapped as a Buffer; null when mapping
 * is unavailable or refused. The fd may be closed afterwards: the mapping stays.
 */
export function mapFile(fd: number, size: number): Buffer | null {
  const m = mm === undefined ? load() : mm;
  if (m === null || !(size > 0) || !Number.isSafeInteger(size)) return null;
  try {
    const ptr = m.mmap(null, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    const addr = BigInt(m.koffi.address(ptr));
    if (addr === MAP_FAILED || addr === 0n) return null;
    let ab: ArrayBuffer;
    try {
      ab = m.koffi.view(ptr, size);
    } catch {
      m.munmap(ptr, size);
      return null;
    }
    m.registry.register(ab, { ptr, len: size });
    return Buffer.from(ab, 0, size);
  } catch {
    return null;
  }
}
