import { decompress } from '../../codec/compress.js';
import { sha256 } from '../../codec/digest.js';
import { errorText, FormatError, NydusError } from '../../errors/errors.js';
import { BlobFeature } from '../flags.js';
import type { BlobInfo } from '../model.js';
import {
  BLOB_META_HEADER_SIZE,
  CI_LAYOUT_FEATURES,
  decodeBlobMetaHeader,
  decodeCiTable,
  MAX_CI_UNCOMPRESSED_SIZE,
  type CiTable,
} from './blob-meta.js';
import {
  decodeTrailerHeader,
  TAR_BLOCK_SIZE,
  tryDecodeTrailerHeader,
  type TrailerHeader,
} from './tar-header.js';
import {
  findTocEntry,
  MAX_TOC_ENTRIES,
  parseToc,
  SectionName,
  TAR_SECTION_NAMES,
  TOC_ENTRY_SIZE,
  tocDigest,
  type TocEntry,
} from './toc.js';

/**
 * The structure of a whole data blob (rafs-format.md 4.3): the tar trailer sections at its end,
 * the ToC, the inline bootstrap and the blob meta. All reads go through an injected positional
 * reader so the same code serves local files, backends and in-memory buffers.
 *
 * A blob with tar trailers ends with `data | 512-byte header` pairs; each header names its
 * section and gives the size of the data right before it. The walk starts at the last 512
 * bytes and steps backwards until it has read the `image.blob` section (the chunk data, always
 * the first section) or reached offset 0.
 */

export type ReadAt = (offset: number, length: number) => Promise<Buffer>;

/** More sections than any layout has (five); bounds the backwards walk. */
export const MAX_TRAILER_SECTIONS = 16;
/** Largest inline bootstrap (or other ToC-described content) a reader decompresses. */
export const MAX_INLINE_BOOTSTRAP_SIZE = 0x2000_0000;

export interface BlobSection {
  readonly name: string;
  /** Absolute offset and size of the section data (the bytes before its tar header). */
  readonly offset: number;
  readonly size: number;
  readonly headerOffset: number;
}

export interface BlobToc {
  readonly entries: readonly TocEntry[];
  /** Offset of the first entry; `size` = entries + tar header = the bootstrap's blob_toc_size. */
  readonly offset: number;
  readonly size: number;
  /** sha256(entries ‖ tar header) = the bootstrap's blob_toc_digest. */
  readonly digest: Buffer;
}

export interface BlobTrailer {
  /** Sections by name. */
  readonly sections: ReadonlyMap<string, BlobSection>;
  /** Sections in file order. */
  readonly list: readonly BlobSection[];
  readonly toc: BlobToc | undefined;
}

// ---------------------------------------------------------------------------------------------
// Reading: the walks are generators that yield the reads they need, so one implementation runs
// over an async ReadAt and over a Buffer in memory.

interface ReadRequest {
  readonly offset: number;
  readonly length: number;
}
type Walk<T> = Generator<ReadRequest, T, Buffer>;

async function readExact(readAt: ReadAt, size: number, offset: number, length: number): Promise<Buffer> {
  if (
    !Number.isSafeInteger(offset) ||
    !Number.isSafeInteger(length) ||
    offset < 0 ||
    length < 0 ||
    offset + length > size
  ) {
    throw new FormatError(`Cannot read [${offset}, +${length}) from a blob of ${size} bytes`, offset);
  }
  let buf: unknown;
  try {
    buf = await readAt(offset, length);
  } catch (e) {
    if (e instanceof NydusError) throw e;
    throw new NydusError('ERR_IO', `Cannot read ${length} bytes of the blob at ${offset}: ${errorText(e)}`, {
      cause: e,
    });
  }
  if (!Buffer.isBuffer(buf) || buf.length !== length) {
    const got = Buffer.isBuffer(buf) ? buf.length : typeof buf;
    throw new NydusError('ERR_IO', `Short read of the blob at ${offset}: asked ${length} bytes, got ${got}`);
  }
  return buf;
}

async function runAsync<T>(walk: Walk<T>, readAt: ReadAt, size: number): Promise<T> {
  let step = walk.next();
  while (step.done !== true) {
    step = walk.next(await readExact(readAt, size, step.value.offset, step.value.length));
  }
  return step.value;
}

function runSync<T>(walk: Walk<T>, bytes: Buffer): T {
  let step = walk.next();
  while (step.done !== true) {
    const { offset, length } = step.value;
    if (offset < 0 || length < 0 || offset + length > bytes.length) {
      throw new FormatError(
        `Cannot read [${offset}, +${length}) from a blob of ${bytes.length} bytes`,
        offset,
      );
    }
    step = walk.next(bytes.subarray(offset, offset + length));
  }
  return step.value;
}

function checkBlobSize(size: number): void {
  if (!Number.isSafeInteger(size) || size < 0)
    throw new NydusError('ERR_INVALID_ARG', `Bad blob size ${size}`);
}

// ---------------------------------------------------------------------------------------------
// Tar trailer walk

function* walkTrailer(size: number): Walk<BlobTrailer | undefined> {
  if (size < TAR_BLOCK_SIZE) return undefined;
  const found: BlobSection[] = [];
  let pos = size;
  for (;;) {
    const headerOffset = pos - TAR_BLOCK_SIZE;
    const block = yield { offset: headerOffset, length: TAR_BLOCK_SIZE };
    let hdr: TrailerHeader;
    if (found.length === 0) {
      // The last block decides whether the blob has trailers at all.
      const h = tryDecodeTrailerHeader(block);
      if (h === undefined || !TAR_SECTION_NAMES.has(h.name)) return undefined;
      hdr = h;
    } else {
      hdr = decodeTrailerHeader(block, 0, headerOffset);
    }
    if (found.length >= MAX_TRAILER_SECTIONS) {
      throw new FormatError(`Bad blob trailer: more than ${MAX_TRAILER_SECTIONS} sections`, headerOffset);
    }
    if (hdr.size > headerOffset) {
      throw new FormatError(
        `Bad blob trailer: section "${hdr.name}" claims ${hdr.size} bytes, only ${headerOffset} precede its header`,
        headerOffset,
      );
    }
    if (found.some((s) => s.name === hdr.name)) {
      throw new FormatError(`Bad blob trailer: duplicate section "${hdr.name}"`, headerOffset);
    }
    const offset = headerOffset - hdr.size;
    found.push({ name: hdr.name, offset, size: hdr.size, headerOffset });
    pos = offset;
    if (hdr.name === SectionName.IMAGE_BLOB || pos === 0) break;
    if (pos < TAR_BLOCK_SIZE) {
      throw new FormatError(
        `Bad blob trailer: ${pos} bytes before section "${hdr.name}" cannot hold a tar header`,
        0,
      );
    }
  }
  const list = found.reverse();
  const sections = new Map(list.map((s) => [s.name, s]));
  let toc: BlobToc | undefined;
  const tocSection = sections.get(SectionName.BLOB_TOC);
  if (tocSection !== undefined) {
    if (tocSection !== list[list.length - 1]) {
      throw new FormatError('Bad blob trailer: the ToC is not the last section', tocSection.headerOffset);
    }
    if (tocSection.size > MAX_TOC_ENTRIES * TOC_ENTRY_SIZE) {
      throw new FormatError(
        `Bad blob ToC: ${tocSection.size} bytes, at most ${MAX_TOC_ENTRIES} entries`,
        tocSection.offset,
      );
    }
    const bytes = yield { offset: tocSection.offset, length: tocSection.size + TAR_BLOCK_SIZE };
    const entries = parseToc(bytes.subarray(0, tocSection.size), tocSection.offset);
    crossCheckToc(entries, sections, tocSection);
    toc = { entries, offset: tocSection.offset, size: bytes.length, digest: tocDigest(bytes) };
  }
  return { sections, list, toc };
}

/** Every ToC entry must describe bytes before the ToC, and agree with the tar section of its name. */
function crossCheckToc(
  entries: readonly TocEntry[],
  sections: ReadonlyMap<string, BlobSection>,
  toc: BlobSection,
): void {
  entries.forEach((e, i) => {
    const at = toc.offset + i * TOC_ENTRY_SIZE;
    const mismatch = (what: string): never => {
      throw new FormatError(
        `Bad blob ToC: entry "${e.name}" [${e.compressedOffset}, +${e.compressedSize}) ${what}`,
        at,
      );
    };
    if (e.name === SectionName.IMAGE_BLOB) {
      // Early-2023 builders recorded the end of the chunk data as this entry's offset; only the
      // size is trustworthy (rafs-format.md 4.5).
      const s = sections.get(e.name);
      if (s !== undefined && e.compressedSize !== s.size)
        mismatch(`disagrees with the ${s.size}-byte section`);
      return;
    }
    if (e.compressedOffset + e.compressedSize > toc.offset)
      mismatch(`does not end before the ToC at ${toc.offset}`);
    const meta = sections.get(SectionName.BLOB_META);
    if (e.name === SectionName.BLOB_META) {
      // The tar section holds the ci array and its 4096-byte header; the entry only the array.
      if (
        meta !== undefined &&
        (e.compressedOffset !== meta.offset || e.compressedSize + BLOB_META_HEADER_SIZE !== meta.size)
      ) {
        mismatch(`disagrees with section [${meta.offset}, +${meta.size})`);
      }
      return;
    }
    if (e.name === SectionName.BLOB_META_HEADER) {
      if (
        meta !== undefined &&
        (e.compressedOffset !== meta.offset + meta.size - BLOB_META_HEADER_SIZE ||
          e.compressedSize !== BLOB_META_HEADER_SIZE)
      ) {
        mismatch(`is not the header at the end of section [${meta.offset}, +${meta.size})`);
      }
      return;
    }
    const s = sections.get(e.name);
    if (s !== undefined && (e.compressedOffset !== s.offset || e.compressedSize !== s.size)) {
      mismatch(`disagrees with section [${s.offset}, +${s.size})`);
    }
  });
}

/**
 * The tar trailer sections of a blob of `size` bytes, or undefined when its last 512 bytes are
 * not a trailer header with a known section name (a plain blob). With a `rafs.blob.toc` section
 * the ToC is parsed and cross-checked against the sections. Section contents are not read.
 */
export async function readBlobTrailer(readAt: ReadAt, size: number): Promise<BlobTrailer | undefined> {
  checkBlobSize(size);
  return runAsync(walkTrailer(size), readAt, size);
}

/** readBlobTrailer over a blob held in memory. */
export function readBlobTrailerFromBuffer(bytes: Buffer): BlobTrailer | undefined {
  return runSync(walkTrailer(bytes.length), bytes);
}

/** A ReadAt over a Buffer (tests, small blobs already in memory). */
export function bufferReadAt(bytes: Buffer): ReadAt {
  return (offset, length) => Promise.resolve(bytes.subarray(offset, offset + length));
}

/**
 * From the last 512 bytes of a file (or a longer buffer ending there): is it a blob with tar
 * trailers? True when they are a GNU header with a valid checksum and a known section name.
 */
export function isLikelyInlineMetaBlob(lastBlock: Buffer): boolean {
  if (lastBlock.length < TAR_BLOCK_SIZE) return false;
  const h = tryDecodeTrailerHeader(lastBlock, lastBlock.length - TAR_BLOCK_SIZE);
  return h !== undefined && TAR_SECTION_NAMES.has(h.name);
}

// ---------------------------------------------------------------------------------------------
// ToC-described content and the inline bootstrap

const ZSTD_MAGIC = 0xfd2fb528;

/** Frame_Content_Size from a zstd frame header, or undefined when absent or unreadable. */
function zstdFrameContentSize(b: Buffer): number | undefined {
  if (b.length < 5 || b.readUInt32LE(0) !== ZSTD_MAGIC) return undefined;
  const fhd = b[4]!;
  const fcsFlag = fhd >>> 6;
  const singleSegment = (fhd >>> 5) & 1;
  const dictIdSize = [0, 1, 2, 4][fhd & 3]!;
  const fcsSize = fcsFlag === 0 ? singleSegment : [0, 2, 4, 8][fcsFlag]!;
  const p = 5 + (singleSegment ? 0 : 1) + dictIdSize;
  if (fcsSize === 0 || p + fcsSize > b.length) return undefined;
  switch (fcsSize) {
    case 1:
      return b[p]!;
    case 2:
      return b.readUInt16LE(p) + 256;
    case 4:
      return b.readUInt32LE(p);
    default: {
      const v = b.readBigUInt64LE(p);
      return v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v);
    }
  }
}

/**
 * The uncompressed content a ToC entry describes, checked against the entry's sha256 (ERR_DIGEST
 * on mismatch). Not for `image.blob`, whose offset older builders recorded wrongly.
 */
export async function readTocEntry(readAt: ReadAt, size: number, entry: TocEntry): Promise<Buffer> {
  checkBlobSize(size);
  if (
    entry.uncompressedSize > MAX_INLINE_BOOTSTRAP_SIZE ||
    entry.compressedSize > MAX_INLINE_BOOTSTRAP_SIZE
  ) {
    throw new FormatError(
      `ToC entry "${entry.name}" is ${entry.uncompressedSize} bytes, at most ${MAX_INLINE_BOOTSTRAP_SIZE}`,
    );
  }
  if (entry.compressedOffset + entry.compressedSize > size) {
    throw new FormatError(
      `ToC entry "${entry.name}" [${entry.compressedOffset}, +${entry.compressedSize}) lies past the ${size}-byte blob`,
      entry.compressedOffset,
    );
  }
  const stored = await readExact(readAt, size, entry.compressedOffset, entry.compressedSize);
  if (entry.compressor === 'zstd') {
    const declared = zstdFrameContentSize(stored);
    if (declared !== undefined && declared !== entry.uncompressedSize) {
      throw new FormatError(
        `ToC entry "${entry.name}": zstd frame declares ${declared} bytes, ToC says ${entry.uncompressedSize}`,
        entry.compressedOffset,
      );
    }
  }
  const content = decompress(entry.compressor, stored, entry.uncompressedSize);
  if (!sha256(content).equals(entry.digest)) {
    throw new NydusError('ERR_DIGEST', `ToC entry "${entry.name}": content does not match its sha256`);
  }
  return content;
}

/**
 * The bootstrap embedded in an inline-meta blob (`image.boot` section), or undefined when the
 * blob has no trailers or no such section. With a ToC the section is decompressed as its entry
 * says and verified against the entry's sha256; without one it is the raw bootstrap.
 */
export async function extractInlineBootstrap(readAt: ReadAt, size: number): Promise<Buffer | undefined> {
  const trailer = await readBlobTrailer(readAt, size);
  const section = trailer?.sections.get(SectionName.IMAGE_BOOT);
  if (trailer === undefined || section === undefined) return undefined;
  if (trailer.toc !== undefined) {
    const entry = findTocEntry(trailer.toc.entries, SectionName.IMAGE_BOOT);
    if (entry === undefined) {
      throw new FormatError(
        'Bad blob ToC: no "image.boot" entry for the image.boot section',
        trailer.toc.offset,
      );
    }
    return readTocEntry(readAt, size, entry);
  }
  if (section.size > MAX_INLINE_BOOTSTRAP_SIZE) {
    throw new FormatError(
      `Inline bootstrap of ${section.size} bytes, at most ${MAX_INLINE_BOOTSTRAP_SIZE}`,
      section.offset,
    );
  }
  return readExact(readAt, size, section.offset, section.size);
}

// ---------------------------------------------------------------------------------------------
// Blob meta

/**
 * Load and decode the blob meta of a v6 blob: the compressed ci array at `blob.ciOffset` and
 * the 4096-byte header after it. The header must agree with the blob table entry. `size` (the
 * blob file size), when known, bounds the read. Chunk ids in the result are zero.
 */
export async function readBlobMeta(readAt: ReadAt, blob: BlobInfo, size?: number): Promise<CiTable> {
  if (blob.features & BlobFeature.ENCRYPTED) {
    throw new NydusError('ERR_UNSUPPORTED', `Blob ${blob.blobId}: encrypted blob meta is not supported`);
  }
  if (
    blob.chunkCount > 0 &&
    blob.ciOffset === 0 &&
    blob.ciCompressedSize === 0 &&
    blob.ciUncompressedSize === 0
  ) {
    throw new NydusError('ERR_NOT_FOUND', `Blob ${blob.blobId} has no blob meta`);
  }
  if (
    blob.ciCompressedSize > MAX_CI_UNCOMPRESSED_SIZE ||
    blob.ciUncompressedSize > MAX_CI_UNCOMPRESSED_SIZE
  ) {
    throw new FormatError(
      `Blob ${blob.blobId}: ci of ${blob.ciUncompressedSize} bytes, at most ${MAX_CI_UNCOMPRESSED_SIZE}`,
    );
  }
  const length = blob.ciCompressedSize + BLOB_META_HEADER_SIZE;
  const limit = size ?? Number.MAX_SAFE_INTEGER;
  if (size !== undefined) checkBlobSize(size);
  if (!Number.isSafeInteger(blob.ciOffset) || blob.ciOffset < 0 || blob.ciOffset + length > limit) {
    throw new FormatError(
      `Blob ${blob.blobId}: blob meta [${blob.ciOffset}, +${length}) lies past the blob`,
      blob.ciOffset,
    );
  }
  const bytes = await readExact(readAt, limit, blob.ciOffset, length);
  const header = decodeBlobMetaHeader(bytes, blob.ciCompressedSize, blob.ciOffset);
  const disagree = (what: string, h: number | string, b: number | string): never => {
    throw new FormatError(
      `Blob ${blob.blobId}: blob meta header ${what} ${h} disagrees with blob table ${b}`,
      blob.ciOffset,
    );
  };
  if (header.ciOffset !== blob.ciOffset) disagree('ci_offset', header.ciOffset, blob.ciOffset);
  if (header.ciCompressedSize !== blob.ciCompressedSize) {
    disagree('ci_compressed_size', header.ciCompressedSize, blob.ciCompressedSize);
  }
  if (header.ciUncompressedSize !== blob.ciUncompressedSize) {
    disagree('ci_uncompressed_size', header.ciUncompressedSize, blob.ciUncompressedSize);
  }
  if (header.ciCompressor !== blob.ciCompressor)
    disagree('ci_compressor', header.ciCompressor, blob.ciCompressor);
  if (header.ciEntries !== blob.chunkCount) disagree('ci_entries', header.ciEntries, blob.chunkCount);
  if ((header.features & CI_LAYOUT_FEATURES) !== (blob.features & CI_LAYOUT_FEATURES)) {
    disagree('features', `0x${header.features.toString(16)}`, `0x${blob.features.toString(16)}`);
  }
  const ci = decompress(
    header.ciCompressor,
    bytes.subarray(0, blob.ciCompressedSize),
    header.ciUncompressedSize,
  );
  return decodeCiTable(header, ci, blob.index);
}
