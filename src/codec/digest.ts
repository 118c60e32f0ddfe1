import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import type * as blakeModule from '@napi-rs/blake-hash';
import type * as crc32Module from '@node-rs/crc32';
import type { Digester } from './algorithms.js';

/** @napi-rs/blake-hash, loaded at its first use: a daemon that never verifies a chunk never needs it. */
let blakeLoaded: typeof blakeModule | undefined;
function blake3(data: Uint8Array): Buffer {
  blakeLoaded ??= createRequire(import.meta.url)('@napi-rs/blake-hash') as typeof blakeModule;
  return blakeLoaded.blake3(data);
}

/** H(x): the filesystem digester, 32 bytes. */
export function digest(algo: Digester, ...parts: readonly Uint8Array[]): Buffer {
  if (algo === 'sha256') {
    const h = createHash('sha256');
    for (const p of parts) h.update(p);
    return h.digest();
  }
  if (parts.length === 1) return blake3(parts[0]!);
  return blake3(Buffer.concat(parts));
}

export function sha256(...parts: readonly Uint8Array[]): Buffer {
  return digest('sha256', ...parts);
}

export function sha256Hex(...parts: readonly Uint8Array[]): string {
  return sha256(...parts).toString('hex');
}

/** CRC-32C (Castagnoli) as recorded in chunk records with HAS_CRC32. */
let crc32Loaded: typeof crc32Module | undefined;

export function crc32cOf(data: Uint8Array): number {
  // Loaded at its first use: builds never need it.
  crc32Loaded ??= createRequire(import.meta.url)('@node-rs/crc32') as typeof crc32Module;
  return crc32Loaded.crc32c(Buffer.from(data.buffer, data.byteOffset, data.byteLength)) >>> 0;
}
