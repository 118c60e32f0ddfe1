import type { Compressor } from '../../codec/algorithms.js';
import { sha256 } from '../../codec/digest.js';
import { FormatError, NydusError } from '../../errors/errors.js';
import { readU64 } from '../../util/cursor.js';
import { encodeTrailerHeader } from './tar-header.js';

/**
 * The blob ToC (`rafs.blob.toc`, rafs-format.md 4.5): an array of 128-byte entries, one per
 * blob section, followed by its tar trailer header. `blob_toc_size` in the bootstrap is the
 * size of both together and `blob_toc_digest` their sha256.
 *
 * | off | size | field                                               |
 * |-----|------|-----------------------------------------------------|
 * | 0   | u32  | flags: 0x1 none, 0x2 zstd, 0x4 lz4_block (mask 0xF) |
 * | 4   | 4    | reserved                                            |
 * | 8   | 16   | name, NUL padded (may fill all 16 bytes)            |
 * | 24  | 32   | sha256 of the uncompressed content                  |
 * | 56  | u64  | compressed_offset (absolute in the blob)            |
 * | 64  | u64  | compressed_size                                     |
 * | 72  | u64  | uncompressed_size                                   |
 * | 80  | 48   | reserved                                            |
 *
 * The reserved bytes are written as zero here; upstream blobs are known to carry garbage in
 * them (bytes 124..127 of the entries in blobs/be7d77ee…), so the decoder ignores them. The
 * sizes of an uncompressed entry may differ: `image.blob` records the chunk bytes as
 * compressed_size and the blob's uncompressed_size (4 KiB-aligned chunk space) as
 * uncompressed_size.
 */

export const TOC_ENTRY_SIZE = 128;
/** More entries than any builder writes (five); bounds what a reader accepts. */
export const MAX_TOC_ENTRIES = 256;
export const TOC_NAME_MAX = 16;

/** Section names: the tar trailer headers and the ToC entries use the same strings. */
export const SectionName = {
  /** Chunk data. */
  IMAGE_BLOB: 'image.blob',
  /** Compressed ci array (tar section: ci array and its 4096-byte header). */
  BLOB_META: 'blob.meta',
  /** The 4096-byte blob-meta header (a ToC entry only, no tar section of its own). */
  BLOB_META_HEADER: 'blob.meta.header',
  /** Chunk digest array. */
  BLOB_DIGEST: 'blob.digest',
  /** Inline bootstrap. */
  IMAGE_BOOT: 'image.boot',
  /** The ToC itself (a tar section only). */
  BLOB_TOC: 'rafs.blob.toc',
} as const;

/** Names that appear on tar trailer headers. */
export const TAR_SECTION_NAMES: ReadonlySet<string> = new Set([
  SectionName.IMAGE_BLOB,
  SectionName.BLOB_META,
  SectionName.BLOB_DIGEST,
  SectionName.IMAGE_BOOT,
  SectionName.BLOB_TOC,
]);

export const TocFlag = {
  COMPRESSION_NONE: 0x1,
  COMPRESSION_ZSTD: 0x2,
  COMPRESSION_LZ4_BLOCK: 0x4,
} as const;
const TOC_COMPRESSION_MASK = 0xf;

export interface TocEntry {
  /** The raw flags word (compression bits and any higher bits as stored). */
  readonly flags: number;
  readonly compressor: Compressor;
  readonly name: string;
  /** sha256 of the uncompressed content, 32 bytes. */
  readonly digest: Buffer;
  readonly compressedOffset: number;
  readonly compressedSize: number;
  readonly uncompressedSize: number;
}

export function tocCompressionFlag(c: Compressor): number {
  switch (c) {
    case 'none':
      return TocFlag.COMPRESSION_NONE;
    case 'zstd':
      return TocFlag.COMPRESSION_ZSTD;
    case 'lz4_block':
      return TocFlag.COMPRESSION_LZ4_BLOCK;
    case 'gzip':
      throw new NydusError('ERR_UNSUPPORTED', 'ToC entries cannot record gzip compression');
  }
}

function compressorOfTocFlags(flags: number, at: number): Compressor {
  switch (flags & TOC_COMPRESSION_MASK) {
    case TocFlag.COMPRESSION_NONE:
      return 'none';
    case TocFlag.COMPRESSION_ZSTD:
      return 'zstd';
    case TocFlag.COMPRESSION_LZ4_BLOCK:
      return 'lz4_block';
    default:
      throw new FormatError(
        `Bad ToC entry: compression flags 0x${(flags & TOC_COMPRESSION_MASK).toString(16)}`,
        at,
      );
  }
}

/** Decode the entry at `buf[off, off + 128)`; `base` is the absolute offset of `buf[0]`. */
export function decodeTocEntry(buf: Buffer, off = 0, base = 0): TocEntry {
  const at = base + off;
  if (off < 0 || off + TOC_ENTRY_SIZE > buf.length) {
    throw new FormatError(
      `Truncated ToC entry: ${Math.max(0, buf.length - off)} of ${TOC_ENTRY_SIZE} bytes`,
      at,
    );
  }
  const flags = buf.readUInt32LE(off);
  const compressor = compressorOfTocFlags(flags, at);
  const rawName = buf.subarray(off + 8, off + 8 + TOC_NAME_MAX);
  const nul = rawName.indexOf(0);
  const name = rawName.toString('latin1', 0, nul < 0 ? TOC_NAME_MAX : nul);
  if (!/^[\x21-\x7e]+$/.test(name))
    throw new FormatError('Bad ToC entry: name is empty or not printable ASCII', at + 8);
  const compressedOffset = readU64(buf, off + 56, 'ToC compressed_offset', base);
  const compressedSize = readU64(buf, off + 64, 'ToC compressed_size', base);
  const uncompressedSize = readU64(buf, off + 72, 'ToC uncompressed_size', base);
  return {
    flags,
    compressor,
    name,
    digest: Buffer.from(buf.subarray(off + 24, off + 56)),
    compressedOffset,
    compressedSize,
    uncompressedSize,
  };
}

export function encodeTocEntry(e: TocEntry): Buffer {
  const nameBytes = Buffer.from(e.name, 'latin1');
  if (!/^[\x21-\x7e]+$/.test(e.name) || nameBytes.length > TOC_NAME_MAX) {
    throw new NydusError(
      'ERR_INVALID_ARG',
      `Cannot encode ToC entry: name "${e.name}" is not 1..16 ASCII bytes`,
    );
  }
  if (e.digest.length !== 32) {
    throw new NydusError(
      'ERR_INVALID_ARG',
      `Cannot encode ToC entry "${e.name}": digest is ${e.digest.length} bytes`,
    );
  }
  for (const [what, v] of [
    ['compressed_offset', e.compressedOffset],
    ['compressed_size', e.compressedSize],
    ['uncompressed_size', e.uncompressedSize],
  ] as const) {
    if (!Number.isSafeInteger(v) || v < 0) {
      throw new NydusError(
        'ERR_INVALID_ARG',
        `Cannot encode ToC entry "${e.name}": ${what} ${v} out of range`,
      );
    }
  }
  if ((e.flags & TOC_COMPRESSION_MASK) !== tocCompressionFlag(e.compressor) || e.flags >>> 0 !== e.flags) {
    throw new NydusError(
      'ERR_INVALID_ARG',
      `Cannot encode ToC entry "${e.name}": flags 0x${e.flags.toString(16)} disagree with ${e.compressor}`,
    );
  }
  const buf = Buffer.alloc(TOC_ENTRY_SIZE);
  buf.writeUInt32LE(e.flags, 0);
  nameBytes.copy(buf, 8);
  e.digest.copy(buf, 24);
  buf.writeBigUInt64LE(BigInt(e.compressedOffset), 56);
  buf.writeBigUInt64LE(BigInt(e.compressedSize), 64);
  buf.writeBigUInt64LE(BigInt(e.uncompressedSize), 72);
  return buf;
}

/** A ToC entry for `content` stored at `offset`, compressed as `compressor` into `storedSize` bytes. */
export function makeTocEntry(
  name: string,
  compressor: Compressor,
  offset: number,
  content: Buffer,
  storedSize = content.length,
): TocEntry {
  return {
    flags: tocCompressionFlag(compressor),
    compressor,
    name,
    digest: sha256(content),
    compressedOffset: offset,
    compressedSize: storedSize,
    uncompressedSize: content.length,
  };
}

/**
 * Decode the ToC entry array (the bytes of the `rafs.blob.toc` section before its tar header).
 * `base` is the absolute offset of `entries[0]`. Names must be unique.
 */
export function parseToc(entries: Buffer, base = 0): TocEntry[] {
  if (entries.length === 0 || entries.length % TOC_ENTRY_SIZE !== 0) {
    throw new FormatError(
      `Bad ToC: size ${entries.length} is not a positive multiple of ${TOC_ENTRY_SIZE}`,
      base,
    );
  }
  const count = entries.length / TOC_ENTRY_SIZE;
  if (count > MAX_TOC_ENTRIES)
    throw new FormatError(`Bad ToC: ${count} entries, at most ${MAX_TOC_ENTRIES}`, base);
  const out: TocEntry[] = [];
  const seen = new Set<string>();
  for (let i = 0; i < count; i++) {
    const e = decodeTocEntry(entries, i * TOC_ENTRY_SIZE, base);
    if (seen.has(e.name))
      throw new FormatError(`Bad ToC: duplicate entry "${e.name}"`, base + i * TOC_ENTRY_SIZE);
    seen.add(e.name);
    out.push(e);
  }
  return out;
}

/** The whole `rafs.blob.toc` section as written: entries ‖ tar trailer header (128·n + 512 bytes). */
export function encodeToc(entries: readonly TocEntry[]): Buffer {
  if (entries.length === 0 || entries.length > MAX_TOC_ENTRIES) {
    throw new NydusError('ERR_INVALID_ARG', `Cannot encode a ToC of ${entries.length} entries`);
  }
  const body = Buffer.concat(entries.map(encodeTocEntry));
  return Buffer.concat([body, encodeTrailerHeader(SectionName.BLOB_TOC, body.length)]);
}

/** `blob_toc_digest`: sha256 of the ToC entries followed by the ToC's tar header. */
export function tocDigest(entriesAndHeader: Buffer): Buffer {
  return sha256(entriesAndHeader);
}

export function findTocEntry(entries: readonly TocEntry[], name: string): TocEntry | undefined {
  return entries.find((e) => e.name === name);
}
