import { createRequire } from 'node:module';
import { gunzipSync, gzipSync } from 'node:zlib';
import type lz4Module from 'lz4-napi';
import type zstdModule from 'zstd-napi/binding.js';
import { errorText, NydusError } from '../errors/errors.js';
import type { Compressor } from './algorithms.js';
import { nativeLz4, nativeLz4Decoder, nativeZstd, nativeZstdDecoder, type NativeDecoder } from './native.js';

/**
 * The bundled codecs, loaded at their first use: where the system libraries are there, a build's
 * workers compress through those and never load these.
 */
const requireHere = createRequire(import.meta.url);
let lz4Loaded: typeof lz4Module | undefined;
let zstdLoaded: typeof zstdModule | undefined;
const lz4 = {
  get m(): typeof lz4Module {
    lz4Loaded ??= requireHere('lz4-napi') as typeof lz4Module;
    return lz4Loaded;
  },
};
const zstd = {
  get m(): typeof zstdModule {
    zstdLoaded ??= requireHere('zstd-napi/binding.js') as typeof zstdModule;
    return zstdLoaded;
  },
};

/**
 * Chunk compression as upstream frames it (rafs-format.md 5): lz4_block is a raw LZ4 block with
 * no size prefix, zstd one standard frame (level 3, content size, no checksum), gzip one member.
 * A chunk whose compressed form is not smaller is stored raw; that decision is the caller's.
 */

/** Upper bound on any decompressed unit: the largest chunk size (16 MiB). */
export const MAX_DECOMPRESSED_SIZE = 0x1000000;

export function decompress(algo: Compressor, src: Buffer, size: number): Buffer {
  if (size < 0 || size > MAX_DECOMPRESSED_SIZE * 64) {
    throw new NydusError('ERR_DECOMPRESS', `Cannot decompress to ${size} bytes: size out of range`);
  }
  let out: Buffer;
  try {
    switch (algo) {
      case 'none':
        out = src;
        break;
      case 'lz4_block': {
        // lz4-napi frames blocks with a 4-byte little-endian size prefix of its own.
        const framed = Buffer.allocUnsafe(src.length + 4);
        framed.writeUInt32LE(size, 0);
        src.copy(framed, 4);
        out = lz4.m.uncompressSync(framed);
        break;
      }
      case 'zstd': {
        out = Buffer.allocUnsafe(size);
        const n = zstd.m.decompress(out, src);
        if (n !== size) {
          throw new NydusError('ERR_DECOMPRESS', `zstd frame decompressed to ${n} bytes, expected ${size}`);
        }
        break;
      }
      case 'gzip':
        out = gunzipSync(src, { maxOutputLength: Math.max(size, 1) });
        break;
    }
  } catch (e) {
    if (e instanceof NydusError) throw e;
    throw new NydusError(
      'ERR_DECOMPRESS',
      `Cannot decompress ${algo} data of ${src.length} bytes: ${errorText(e)}`,
      {
        cause: e,
      },
    );
  }
  if (out.length !== size) {
    throw new NydusError(
      'ERR_DECOMPRESS',
      `${algo} data decompressed to ${out.length} bytes, expected ${size}`,
    );
  }
  return out;
}

/** Units at least this large are decoded on a worker thread when the system library is there. */
const WORKER_DECODE_MIN = 64 * 1024;

/** The system library's decoder for `algo`, when `size` bytes into `out` can use it. */
function nativeDecoderFor(
  algo: Compressor,
  size: number,
  out: Buffer | undefined,
): NativeDecoder | undefined {
  const native =
    algo === 'zstd' ? nativeZstdDecoder() : algo === 'lz4_block' ? nativeLz4Decoder() : undefined;
  if (native === undefined || size > MAX_DECOMPRESSED_SIZE * 64 || (out !== undefined && out.length < size))
    return undefined;
  return native;
}

/** `decompress` into `out` when it is big enough (its prefix is the result). */
function decompressCopy(algo: Compressor, src: Buffer, size: number, out: Buffer | undefined): Buffer {
  const data = decompress(algo, src, size);
  if (out === undefined || out.length < size) return data;
  data.copy(out, 0, 0, size);
  return out.subarray(0, size);
}

function decodeFailed(algo: Compressor, src: Buffer, e: unknown): NydusError {
  return new NydusError(
    'ERR_DECOMPRESS',
    `Cannot decompress ${algo} data of ${src.length} bytes: ${errorText(e)}`,
    {
      cause: e,
    },
  );
}

function checkDecoded(algo: Compressor, n: number, size: number): void {
  if (n !== size)
    throw new NydusError('ERR_DECOMPRESS', `${algo} data decompressed to ${n} bytes, expected ${size}`);
}

/**
 * Decompress one unit, as `decompress`, into `out` when given (a buffer of at least `size`
 * bytes; the result is its prefix) or else a new buffer. Large zstd and lz4_block units are
 * decoded by the system library on a worker thread, so the event loop goes on serving meanwhile;
 * `out` and `src` must stay untouched until the promise settles.
 */
export async function decompressTo(
  algo: Compressor,
  src: Buffer,
  size: number,
  out?: Buffer,
): Promise<Buffer> {
  const native = nativeDecoderFor(algo, size, out);
  if (native === undefined || size < WORKER_DECODE_MIN) return decompressNow(algo, src, size, out);
  const dst = out === undefined ? Buffer.allocUnsafe(size) : out.subarray(0, size);
  let n: number;
  try {
    n = await native.decodeAsync(src, dst);
  } catch (e) {
    throw decodeFailed(algo, src, e);
  }
  checkDecoded(algo, n, size);
  return dst;
}

/**
 * `decompressTo` on this thread whatever the size (no promise, no thread hop): for a caller
 * that serves the bytes at once.
 */
export function decompressNow(algo: Compressor, src: Buffer, size: number, out?: Buffer): Buffer {
  const native = nativeDecoderFor(algo, size, out);
  if (native === undefined) return decompressCopy(algo, src, size, out);
  const dst = out === undefined ? Buffer.allocUnsafe(size) : out.subarray(0, size);
  let n: number;
  try {
    n = native.decode(src, dst);
  } catch (e) {
    throw decodeFailed(algo, src, e);
  }
  checkDecoded(algo, n, size);
  return dst;
}

const ZSTD_LEVEL = 3;
let zstdCtx: InstanceType<typeof zstdModule.CCtx> | undefined;

/** Which encoder libraries are in use (system libraries reproduce upstream's bytes). */
export function encoderInfo(): { zstd: string; lz4: string } {
  const z = nativeZstd();
  const l = nativeLz4();
  return {
    zstd: z === undefined ? 'bundled (zstd-napi)' : `system libzstd ${z.version}`,
    lz4: l === undefined ? 'bundled (lz4-napi)' : `system liblz4 ${l.version}`,
  };
}

/**
 * Compress one unit; returns the compressed bytes, which may be as large as or larger than the
 * input (then the caller stores the input raw). Uses the system libzstd/liblz4 when present,
 * the bundled encoders otherwise.
 */
export function compress(algo: Compressor, src: Buffer): Buffer {
  switch (algo) {
    case 'none':
      return src;
    case 'lz4_block': {
      const native = nativeLz4();
      if (native !== undefined) return native.compress(src) ?? src;
      return lz4.m.compressSync(src).subarray(4);
    }
    case 'zstd': {
      const native = nativeZstd();
      if (native !== undefined) return native.compress(src);
      if (zstdCtx === undefined) {
        zstdCtx = new zstd.m.CCtx();
        zstdCtx.setParameter(zstd.m.CParameter.compressionLevel, ZSTD_LEVEL);
        zstdCtx.setParameter(zstd.m.CParameter.checksumFlag, 0);
        zstdCtx.setParameter(zstd.m.CParameter.contentSizeFlag, 1);
      }
      const dst = Buffer.allocUnsafe(zstd.m.compressBound(src.length));
      const n = zstdCtx.compress2(dst, src);
      return dst.subarray(0, n);
    }
    case 'gzip':
      return gzipSync(src);
  }
}

/** zstd's ZSTD_COMPRESSBOUND (zstd.h): room for the frame of any input of `n` bytes. */
export function zstdCompressBound(n: number): number {
  return n + (n >>> 8) + (n < 128 * 1024 ? (128 * 1024 - n) >>> 11 : 0);
}

/** Room `compressInto` needs for an input of `n` bytes. */
export function compressIntoBound(algo: Compressor, n: number): number {
  return algo === 'zstd' ? zstdCompressBound(n) : n;
}

/**
 * `compress` into a caller's buffer: writes the compressed form of `src` at the start of `dst`
 * (at least `compressIntoBound(algo, src.length)` bytes) and returns its length when it is
 * strictly smaller than `src`, else 0 (`dst` then holds nothing useful: store `src` raw). The
 * bytes are those `compress` gives.
 */
export function compressInto(algo: Compressor, src: Buffer, dst: Buffer): number {
  let n: number;
  switch (algo) {
    case 'none':
      return 0;
    case 'lz4_block': {
      const native = nativeLz4();
      if (native !== undefined) return native.compressInto(src, dst);
      const c = lz4.m.compressSync(src).subarray(4);
      if (c.length >= src.length) return 0;
      n = c.copy(dst);
      break;
    }
    case 'zstd': {
      const native = nativeZstd();
      if (native !== undefined) n = native.compressInto(src, dst);
      else {
        const c = compress('zstd', src);
        n = c.length < src.length ? c.copy(dst) : c.length;
      }
      break;
    }
    case 'gzip': {
      const c = gzipSync(src);
      n = c.length < src.length ? c.copy(dst) : c.length;
      break;
    }
  }
  return n < src.length ? n : 0;
}
