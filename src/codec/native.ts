import { createRequire } from 'node:module';

/** koffi, loaded at its first use: tools that never call a system library never pay for it. */
let koffiModule: typeof import('koffi') | undefined;
function koffi(): typeof import('koffi') {
  koffiModule ??= createRequire(import.meta.url)('koffi') as typeof import('koffi');
  return koffiModule;
}

/**
 * `load()` run at the first call; its result, or its failure as undefined (no library, no
 * koffi), is kept for every later call.
 */
function loadOnce<T>(load: () => T): () => T | undefined {
  let loaded: { value: T | undefined } | undefined;
  return () => {
    if (loaded === undefined) {
      try {
        loaded = { value: load() };
      } catch {
        loaded = { value: undefined };
      }
    }
    return loaded.value;
  };
}

/**
 * The compressors upstream Nydus links, called in the system's shared libraries (Debian's
 * libzstd1 and liblz4-1) through FFI. Upstream's chunks are exactly what libzstd's
 * ZSTD_compress2 (level 3, content size, no checksum) and liblz4's LZ4_compress_default
 * produce, so using the same libraries makes our blobs byte-identical to upstream's for the
 * same input. When a library cannot be loaded, `undefined` is returned and the caller falls
 * back to the bundled encoders (valid output, different bytes).
 */

// ZSTD_cParameter values from zstd.h (stable API).
const ZSTD_c_compressionLevel = 100;
const ZSTD_c_contentSizeFlag = 200;
const ZSTD_c_checksumFlag = 201;

export interface NativeZstd {
  version: string;
  /** One zstd frame of `src` (level 3, content size, no checksum). */
  compress(src: Buffer): Buffer;
  /**
   * The same frame written into `dst`, which must hold `zstdCompressBound(src.length)` bytes
   * (the output does not depend on it then); returns the frame's length.
   */
  compressInto(src: Uint8Array, dst: Uint8Array): number;
}

export interface NativeLz4 {
  version: string;
  /** A raw LZ4 block, or undefined when it would not be smaller than `src`. */
  compress(src: Buffer): Buffer | undefined;
  /** The same block written into `dst` (at least `src.length - 1` bytes): its length, or 0 when not smaller. */
  compressInto(src: Uint8Array, dst: Uint8Array): number;
}

export const nativeZstd = loadOnce((): NativeZstd => {
  const lib = koffi().load('libzstd.so.1');
  const createCCtx = lib.func('void* ZSTD_createCCtx()');
  const setParameter = lib.func('size_t ZSTD_CCtx_setParameter(void*, int, int)');
  // void* for the buffers: koffi passes a typed array's own memory (no copy in or out).
  const compress2 = lib.func('size_t ZSTD_compress2(void*, void*, size_t, const void*, size_t)');
  const compressBound = lib.func('size_t ZSTD_compressBound(size_t)');
  const isError = lib.func('unsigned int ZSTD_isError(size_t)');
  const getErrorName = lib.func('const char* ZSTD_getErrorName(size_t)');
  const versionString = lib.func('const char* ZSTD_versionString()');
  const cctx: unknown = createCCtx();
  setParameter(cctx, ZSTD_c_compressionLevel, 3);
  setParameter(cctx, ZSTD_c_contentSizeFlag, 1);
  setParameter(cctx, ZSTD_c_checksumFlag, 0);
  return {
    version: versionString() as string,
    compress(src: Buffer): Buffer {
      const dst = Buffer.allocUnsafe(Number(compressBound(src.length)));
      return dst.subarray(0, this.compressInto(src, dst));
    },
    compressInto(src: Uint8Array, dst: Uint8Array): number {
      const n = compress2(cctx, dst, dst.length, src, src.length) as number | bigint;
      if (isError(n) !== 0) throw new Error(`ZSTD_compress2 failed: ${getErrorName(n) as string}`);
      return Number(n);
    },
  };
});

export const nativeLz4 = loadOnce((): NativeLz4 => {
  const lib = koffi().load('liblz4.so.1');
  const compressDefault = lib.func('int LZ4_compress_default(const void*, void*, int, int)');
  const versionString = lib.func('const char* LZ4_versionString()');
  return {
    version: versionString() as string,
    compress(src: Buffer): Buffer | undefined {
      // A destination one byte smaller than the input: LZ4 reports 0 when it does not fit,
      // which is exactly the "not smaller, store raw" case.
      if (src.length <= 1) return undefined;
      const dst = Buffer.allocUnsafe(src.length - 1);
      const n = this.compressInto(src, dst);
      return n > 0 ? dst.subarray(0, n) : undefined;
    },
    compressInto(src: Uint8Array, dst: Uint8Array): number {
      if (src.length <= 1) return 0;
      const n = compressDefault(src, dst, src.length, Math.min(dst.length, src.length - 1)) as number;
      return n > 0 ? n : 0;
    },
  };
});

/**
 * A decoder in a system library: decompresses into a caller's buffer, either here or on one of
 * koffi's worker threads, so that a big chunk does not stall the event loop.
 */
export interface NativeDecoder {
  /** Decompress `src` into `dst`: the decompressed size; throws an Error with the library's reason. */
  decode(src: Buffer, dst: Buffer): number;
  /**
   * The same on a worker thread. Both buffers must stay untouched until it settles; the
   * callback holds them, so they cannot be collected meanwhile.
   */
  decodeAsync(src: Buffer, dst: Buffer): Promise<number>;
}

/**
 * Call a library function on a koffi worker thread. The callback refers to `args`, so the
 * buffers among them stay alive (unmoved and uncollected) until the worker is done with them.
 */
function onWorker(fn: { async(...a: unknown[]): void }, args: unknown[]): Promise<unknown> {
  return new Promise((resolve, reject) => {
    fn.async(...args, (err: unknown, res: unknown) => {
      args.length = 0;
      if (err === null || err === undefined) resolve(res);
      else reject(err instanceof Error ? err : new Error(`koffi call failed: ${JSON.stringify(err)}`));
    });
  });
}

/** libzstd's ZSTD_decompressDCtx, with decompression contexts reused (one per concurrent call). */
export const nativeZstdDecoder = loadOnce((): NativeDecoder => {
  const lib = koffi().load('libzstd.so.1');
  const createDCtx = lib.func('void* ZSTD_createDCtx()');
  const decompressDCtx = lib.func('size_t ZSTD_decompressDCtx(void*, void*, size_t, const void*, size_t)');
  const isError = lib.func('unsigned int ZSTD_isError(size_t)');
  const getErrorName = lib.func('const char* ZSTD_getErrorName(size_t)');
  const idle: unknown[] = [];
  const result = (n: unknown): number => {
    if (isError(n) !== 0) throw new Error(`ZSTD_decompressDCtx failed: ${getErrorName(n) as string}`);
    return Number(n);
  };
  return {
    decode(src, dst) {
      const ctx: unknown = idle.pop() ?? createDCtx();
      try {
        return result(decompressDCtx(ctx, dst, dst.length, src, src.length));
      } finally {
        idle.push(ctx);
      }
    },
    async decodeAsync(src, dst) {
      const ctx: unknown = idle.pop() ?? createDCtx();
      try {
        return result(await onWorker(decompressDCtx, [ctx, dst, dst.length, src, src.length]));
      } finally {
        idle.push(ctx);
      }
    },
  };
});

/** liblz4's LZ4_decompress_safe (stateless). */
export const nativeLz4Decoder = loadOnce((): NativeDecoder => {
  const lib = koffi().load('liblz4.so.1');
  const decompressSafe = lib.func('int LZ4_decompress_safe(const void*, void*, int, int)');
  const result = (n: unknown): number => {
    if (typeof n !== 'number' || n < 0)
      throw new Error(`LZ4_decompress_safe failed: the block is malformed (${String(n)})`);
    return n;
  };
  return {
    decode(src, dst) {
      return result(decompressSafe(src, dst, src.length, dst.length));
    },
    async decodeAsync(src, dst) {
      return result(await onWorker(decompressSafe, [src, dst, src.length, dst.length]));
    },
  };
});

const POSIX_FADV_WILLNEED = 3;

/**
 * libc's posix_fadvise(fd, offset, len, POSIX_FADV_WILLNEED): starts reading a file range into
 * the page cache without waiting for it, so that many small files read one after the other
 * have their reads in flight together.
 */
export const nativeWillNeed = loadOnce((): ((fd: number, offset: number, len: number) => void) => {
  const fadvise = koffi().load('libc.so.6').func('int posix_fadvise(int, int64_t, int64_t, int)');
  return (fd, offset, len) => {
    fadvise(fd, offset, len, POSIX_FADV_WILLNEED);
  };
});
