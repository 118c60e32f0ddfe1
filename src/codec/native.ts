import { createRequire } from 'node:module';

/** koffi, loaded on the first compression: readers (nydusd) never pay for it. */
let koffiModule: typeof import('koffi') | undefined;
function koffi(): typeof import('koffi') {
  koffiModule ??= createRequire(import.meta.url)('koffi') as typeof import('koffi');
  return koffiModule;
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
}

export interface NativeLz4 {
  version: string;
  /** A raw LZ4 block, or undefined when it would not be smaller than `src`. */
  compress(src: Buffer): Buffer | undefined;
}

let zstdLoaded: NativeZstd | null | undefined;
let lz4Loaded: NativeLz4 | null | undefined;

export function nativeZstd(): NativeZstd | undefined {
  if (zstdLoaded === undefined) {
    try {
      const lib = koffi().load('libzstd.so.1');
      const createCCtx = lib.func('void* ZSTD_createCCtx()');
      const setParameter = lib.func('size_t ZSTD_CCtx_setParameter(void*, int, int)');
      const compress2 = lib.func(
        'size_t ZSTD_compress2(void*, _Out_ uint8_t*, size_t, const uint8_t*, size_t)',
      );
      const compressBound = lib.func('size_t ZSTD_compressBound(size_t)');
      const isError = lib.func('unsigned int ZSTD_isError(size_t)');
      const getErrorName = lib.func('const char* ZSTD_getErrorName(size_t)');
      const versionString = lib.func('const char* ZSTD_versionString()');
      const cctx: unknown = createCCtx();
      setParameter(cctx, ZSTD_c_compressionLevel, 3);
      setParameter(cctx, ZSTD_c_contentSizeFlag, 1);
      setParameter(cctx, ZSTD_c_checksumFlag, 0);
      zstdLoaded = {
        version: versionString() as string,
        compress(src: Buffer): Buffer {
          const dst = Buffer.allocUnsafe(Number(compressBound(src.length)));
          const n = compress2(cctx, dst, dst.length, src, src.length) as number | bigint;
          if (isError(n) !== 0) throw new Error(`ZSTD_compress2 failed: ${getErrorName(n) as string}`);
          return dst.subarray(0, Number(n));
        },
      };
    } catch {
      zstdLoaded = null;
    }
  }
  return zstdLoaded ?? undefined;
}

export function nativeLz4(): NativeLz4 | undefined {
  if (lz4Loaded === undefined) {
    try {
      const lib = koffi().load('liblz4.so.1');
      const compressDefault = lib.func('int LZ4_compress_default(const uint8_t*, _Out_ uint8_t*, int, int)');
      const versionString = lib.func('const char* LZ4_versionString()');
      lz4Loaded = {
        version: versionString() as string,
        compress(src: Buffer): Buffer | undefined {
          // A destination one byte smaller than the input: LZ4 reports 0 when it does not fit,
          // which is exactly the "not smaller, store raw" case.
          if (src.length <= 1) return undefined;
          const dst = Buffer.allocUnsafe(src.length - 1);
          const n = compressDefault(src, dst, src.length, dst.length) as number;
          return n > 0 ? dst.subarray(0, n) : undefined;
        },
      };
    } catch {
      lz4Loaded = null;
    }
  }
  return lz4Loaded ?? undefined;
}
