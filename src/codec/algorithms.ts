import { NydusError } from '../errors/errors.js';

/**
 * Algorithm names as the upstream CLI and config spell them, and their on-disk enum values
 * (u32 in the v6 blob table and the blob-meta header; rafs-format.md 1.2).
 */
export type Compressor = 'none' | 'lz4_block' | 'gzip' | 'zstd';
export type Digester = 'blake3' | 'sha256';

const COMPRESSORS: readonly Compressor[] = ['none', 'lz4_block', 'gzip', 'zstd'];
const DIGESTERS: readonly Digester[] = ['blake3', 'sha256'];

export function compressorFromEnum(v: number): Compressor {
  const c = COMPRESSORS[v];
  if (c === undefined) throw new NydusError('ERR_FORMAT', `Unknown compression algorithm ${v}`);
  return c;
}

export function compressorToEnum(c: Compressor): number {
  return COMPRESSORS.indexOf(c);
}

export function digesterFromEnum(v: number): Digester {
  const d = DIGESTERS[v];
  if (d === undefined) throw new NydusError('ERR_FORMAT', `Unknown digest algorithm ${v}`);
  return d;
}

export function digesterToEnum(d: Digester): number {
  return DIGESTERS.indexOf(d);
}

export function parseCompressor(s: string): Compressor {
  if ((COMPRESSORS as readonly string[]).includes(s)) return s as Compressor;
  throw new NydusError(
    'ERR_INVALID_ARG',
    `Unknown compressor "${s}", expected one of ${COMPRESSORS.join(', ')}`,
  );
}

export function parseDigester(s: string): Digester {
  if ((DIGESTERS as readonly string[]).includes(s)) return s as Digester;
  throw new NydusError('ERR_INVALID_ARG', `Unknown digester "${s}", expected one of ${DIGESTERS.join(', ')}`);
}
