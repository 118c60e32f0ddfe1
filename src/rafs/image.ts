import { NydusError, FormatError } from '../errors/errors.js';
import { decompress } from '../codec/compress.js';
import { crc32cOf, digest } from '../codec/digest.js';
import { ChunkFlag, isDir, isReg, Limits } from '../format/flags.js';
import type { Bootstrap, ChunkInfo, DirEntry, InodeAttr } from '../format/model.js';
import type { BlobReader, BlobSource } from './blob-source.js';
import { loadBlobChunks } from './blob-chunks.js';

export interface ReadOptions {
  /** Verify every chunk's digest (and CRC-32C when recorded) before using it. */
  verify?: boolean;
}

/** Hooks a bootstrap may offer beyond `Bootstrap` (v6): raw chunk refs and plain inline data. */
interface V6Extras {
  chunkRefs(ino: number): { blobIndex: number; ciIndex: number; blkaddr: number }[];
  inlineData(ino: number): Buffer | undefined;
}

function hasV6Extras(b: Bootstrap): b is Bootstrap & V6Extras {
  return typeof (b as Partial<V6Extras>).chunkRefs === 'function';
}

/** Resolves chunks a bootstrap cannot describe by itself (v6 without a chunk table entry). */
export type ChunkResolver = (blobIndex: number, ciIndex: number) => Promise<ChunkInfo>;

export interface WalkEntry {
  /** Absolute path inside the image, raw bytes; "/" for the root. */
  path: Buffer;
  name: Buffer;
  ino: number;
  parent: number;
  attr: InodeAttr;
}

/** Largest stored size accepted for one chunk: compressed data can exceed raw size slightly. */
const MAX_STORED_CHUNK = Limits.MAX_CHUNK_SIZE + (Limits.MAX_CHUNK_SIZE >> 4) + 1024;
/** Gaps between chunks that still merge into one backend read. */
const MERGE_GAP = 0;
/** Upper bound on one merged backend read. */
const MAX_MERGED_READ = 4 * 1024 * 1024;

/**
 * An opened RAFS image: a bootstrap plus a source of blob bytes. File ranges are assembled
 * from chunks fetched (merged when contiguous), decompressed and optionally verified.
 */
export class RafsImage {
  readonly bootstrap: Bootstrap;
  readonly #source: BlobSource;
  readonly #readers = new Map<number, Promise<BlobReader>>();
  readonly #resolver: ChunkResolver;

  readonly #blobChunks = new Map<number, Promise<ChunkInfo[]>>();

  /**
   * `resolver` describes chunks the bootstrap's own tables lack; by default they come from the
   * data blob's blob meta (ci table) and chunk digest array.
   */
  constructor(bootstrap: Bootstrap, source: BlobSource, resolver?: ChunkResolver) {
    this.bootstrap = bootstrap;
    this.#source = source;
    this.#resolver = resolver ?? ((blobIndex, ciIndex) => this.#fromBlobMeta(blobIndex, ciIndex));
  }

  async #fromBlobMeta(blobIndex: number, ciIndex: number): Promise<ChunkInfo> {
    let table = this.#blobChunks.get(blobIndex);
    if (table === undefined) {
      const blob = this.bootstrap.blobs[blobIndex];
      if (blob === undefined)
        throw new FormatError(`Chunk refers to blob index ${blobIndex}, which does not exist`);
      table = this.blobReader(blobIndex).then((r) => loadBlobChunks(r, blob));
      table.catch(() => this.#blobChunks.delete(blobIndex));
      this.#blobChunks.set(blobIndex, table);
    }
    const c = (await table)[ciIndex];
    if (c === undefined)
      throw new FormatError(`Chunk ${ciIndex} is not in the blob meta of blob index ${blobIndex}`);
    return c;
  }

  /** The reader of blob `index`, opened once. */
  blobReader(index: number): Promise<BlobReader> {
    let r = this.#readers.get(index);
    if (r === undefined) {
      const blob = this.bootstrap.blobs[index];
      if (blob === undefined)
        return Promise.reject(new FormatError(`Chunk refers to blob index ${index}, which does not exist`));
      r = this.#source.open(blob);
      // A failed open is not cached: the blob may appear later.
      r.catch(() => this.#readers.delete(index));
      this.#readers.set(index, r);
    }
    return r;
  }

  async close(): Promise<void> {
    const readers = [...this.#readers.values()];
    this.#readers.clear();
    await Promise.allSettled(readers.map(async (r) => (await r).close()));
  }

  /** Resolve a path like "/a/b" (raw bytes or string) to its entry; undefined when absent. */
  lookupPath(path: string | Buffer): DirEntry | undefined {
    const p = typeof path === 'string' ? Buffer.from(path) : path;
    const b = this.bootstrap;
    let cur: DirEntry = { name: Buffer.from('/'), ino: b.rootIno, type: 0o040000 };
    for (const part of splitPath(p)) {
      if (!isDir(cur.type)) return undefined;
      const next = b.lookup(cur.ino, part);
      if (next === undefined) return undefined;
      cur = next;
    }
    return cur;
  }

  /**
   * Every entry in depth-first pre-order (a directory, then its children in byte order), each
   * hardlink occurrence included. Directories reached twice mean a cycle and are refused.
   */
  *walk(): Generator<WalkEntry> {
    const b = this.bootstrap;
    const root = b.getAttr(b.rootIno);
    if (!isDir(root.mode)) throw new FormatError(`Root inode ${b.rootIno} is not a directory`);
    const seenDirs = new Set<number>([b.rootIno]);
    yield { path: Buffer.from('/'), name: Buffer.from('/'), ino: b.rootIno, parent: b.rootIno, attr: root };
    type Frame = { ino: number; path: Buffer; pos: number; count: number; batch: DirEntry[]; bi: number };
    const frame = (ino: number, path: Buffer): Frame => ({
      ino,
      path,
      pos: 0,
      count: b.childCount(ino),
      batch: [],
      bi: 0,
    });
    const stack: Frame[] = [frame(b.rootIno, Buffer.alloc(0))];
    const BATCH = 256;
    while (stack.length > 0) {
      const top = stack[stack.length - 1]!;
      if (top.pos >= top.count) {
        stack.pop();
        continue;
      }
      if (top.bi >= top.batch.length) {
        top.batch = b.readdir(top.ino, top.pos, BATCH);
        top.bi = 0;
        if (top.batch.length === 0) {
          throw new FormatError(
            `Directory inode ${top.ino} lists ${top.count} children but returned none at ${top.pos}`,
          );
        }
      }
      const e = top.batch[top.bi++]!;
      top.pos++;
      const attr = b.getAttr(e.ino);
      const path = Buffer.concat([top.path, Buffer.from('/'), e.name]);
      yield { path, name: e.name, ino: e.ino, parent: top.ino, attr };
      if (isDir(attr.mode)) {
        if (seenDirs.has(e.ino))
          throw new FormatError(`Directory inode ${e.ino} is reachable twice (a cycle in the tree)`);
        seenDirs.add(e.ino);
        stack.push(frame(e.ino, path));
      }
    }
  }

  /** Chunks of a regular file in file order, resolved through the blob's ci table if needed. */
  async chunks(ino: number): Promise<ChunkInfo[]> {
    const b = this.bootstrap;
    try {
      return b.chunks(ino);
    } catch (e) {
      if (!(e instanceof NydusError && e.code === 'ERR_NOT_FOUND' && hasV6Extras(b))) throw e;
    }
    const resolver = this.#resolver;
    const chunkSize = b.superblock.chunkSize;
    const out: ChunkInfo[] = [];
    const refs = b.chunkRefs(ino);
    for (let k = 0; k < refs.length; k++) {
      const r = refs[k]!;
      const c = await resolver(r.blobIndex, r.ciIndex);
      if (c.uncompressedOffset !== r.blkaddr * 4096) {
        throw new FormatError(
          `Inode ${ino} chunk ${k}: block address ${r.blkaddr} disagrees with the blob's chunk info`,
        );
      }
      out.push({ ...c, fileOffset: k * chunkSize });
    }
    return out;
  }

  /** Bytes of one chunk, decompressed, verified when asked. */
  async readChunk(c: ChunkInfo, opts: ReadOptions = {}): Promise<Buffer> {
    const [data] = await this.#readRun([c], opts);
    return data!;
  }

  #checkChunk(c: ChunkInfo, reader: BlobReader): void {
    const b = this.bootstrap;
    const where = `Chunk ${c.index} of blob ${c.blobIndex}`;
    if (c.uncompressedSize > Limits.MAX_CHUNK_SIZE)
      throw new FormatError(`${where}: uncompressed size ${c.uncompressedSize} is too large`);
    if (c.compressedSize > MAX_STORED_CHUNK)
      throw new FormatError(`${where}: compressed size ${c.compressedSize} is too large`);
    if (c.compressedOffset + c.compressedSize > reader.size) {
      throw new FormatError(
        `${where} (${c.compressedSize} bytes at ${c.compressedOffset}) points past the end of blob ${b.blobs[c.blobIndex]?.blobId ?? '?'} (${reader.size} bytes)`,
      );
    }
    if ((c.flags & ChunkFlag.COMPRESSED) === 0 && c.compressedSize !== c.uncompressedSize) {
      throw new FormatError(
        `${where}: stored uncompressed but sizes differ (${c.compressedSize} vs ${c.uncompressedSize})`,
      );
    }
    if (c.flags & (ChunkFlag.ENCRYPTED | ChunkFlag.BATCH)) {
      throw new NydusError('ERR_UNSUPPORTED', `${where}: encrypted and batch chunks are not supported yet`);
    }
  }

  /** Fetch a run of chunks of one blob, merging contiguous ranges into single reads. */
  async #readRun(run: readonly ChunkInfo[], opts: ReadOptions): Promise<Buffer[]> {
    const first = run[0]!;
    const reader = await this.blobReader(first.blobIndex);
    for (const c of run) this.#checkChunk(c, reader);
    const out: Buffer[] = [];
    let i = 0;
    while (i < run.length) {
      let j = i + 1;
      let end = run[i]!.compressedOffset + run[i]!.compressedSize;
      while (
        j < run.length &&
        run[j]!.compressedOffset >= end &&
        run[j]!.compressedOffset - end <= MERGE_GAP &&
        run[j]!.compressedOffset + run[j]!.compressedSize - run[i]!.compressedOffset <= MAX_MERGED_READ
      ) {
        end = run[j]!.compressedOffset + run[j]!.compressedSize;
        j++;
      }
      const start = run[i]!.compressedOffset;
      const raw = await reader.read(start, end - start);
      for (let k = i; k < j; k++) {
        const c = run[k]!;
        const stored = raw.subarray(
          c.compressedOffset - start,
          c.compressedOffset - start + c.compressedSize,
        );
        out.push(this.#decode(c, stored, opts));
      }
      i = j;
    }
    return out;
  }

  #decode(c: ChunkInfo, stored: Buffer, opts: ReadOptions): Buffer {
    const blob = this.bootstrap.blobs[c.blobIndex]!;
    const data =
      c.flags & ChunkFlag.COMPRESSED ? decompress(blob.compressor, stored, c.uncompressedSize) : stored;
    if (opts.verify === true) {
      if (c.id.every((x) => x === 0)) {
        throw new NydusError(
          'ERR_DIGEST',
          `Chunk ${c.index} of blob ${blob.blobId} has no recorded digest to verify against`,
        );
      }
      const h = digest(blob.digester, data);
      if (!h.equals(c.id)) {
        throw new NydusError(
          'ERR_DIGEST',
          `Chunk ${c.index} of blob ${blob.blobId} has digest ${h.toString('hex')}, expected ${c.id.toString('hex')}`,
        );
      }
      if (c.flags & ChunkFlag.HAS_CRC32 && crc32cOf(data) !== c.crc32) {
        throw new NydusError('ERR_DIGEST', `Chunk ${c.index} of blob ${blob.blobId} fails its CRC-32C check`);
      }
    }
    return data;
  }

  /**
   * Read `length` bytes at `offset` of regular file `ino` (fewer at the end of the file).
   * Holes not covered by any chunk read as zeros.
   */
  async readFile(ino: number, offset: number, length: number, opts: ReadOptions = {}): Promise<Buffer> {
    const attr = this.bootstrap.getAttr(ino);
    if (!isReg(attr.mode)) throw new NydusError('ERR_INODE_TYPE', `Inode ${ino} is not a regular file`);
    if (offset >= attr.size || length <= 0) return Buffer.alloc(0);
    const end = Math.min(attr.size, offset + length);
    const out = Buffer.alloc(end - offset);
    const b = this.bootstrap;
    if (hasV6Extras(b)) {
      const inline = b.inlineData(ino);
      if (inline !== undefined) {
        inline.copy(out, 0, offset, end);
        return out;
      }
    }
    const chunks = await this.chunks(ino);
    const wanted = chunks.filter((c) => c.fileOffset < end && c.fileOffset + c.uncompressedSize > offset);
    // Group by blob, preserving order, so contiguous chunks of one blob merge into one read.
    const runs: ChunkInfo[][] = [];
    for (const c of wanted) {
      const last = runs[runs.length - 1];
      if (last !== undefined && last[0]!.blobIndex === c.blobIndex) last.push(c);
      else runs.push([c]);
    }
    const results = await Promise.all(runs.map((r) => this.#readRun(r, opts)));
    for (let r = 0; r < runs.length; r++) {
      const run = runs[r]!;
      const datas = results[r]!;
      for (let k = 0; k < run.length; k++) {
        const c = run[k]!;
        const data = datas[k]!;
        const from = Math.max(offset, c.fileOffset);
        const to = Math.min(end, c.fileOffset + data.length);
        if (to > from) data.copy(out, from - offset, from - c.fileOffset, to - c.fileOffset);
      }
    }
    return out;
  }

  /** The whole content of a regular file as a stream of chunk-sized buffers. */
  async *fileData(ino: number, opts: ReadOptions = {}): AsyncGenerator<Buffer> {
    const size = this.bootstrap.getAttr(ino).size;
    const step = Math.max(this.bootstrap.superblock.chunkSize, 1 << 20);
    for (let off = 0; off < size; off += step) yield await this.readFile(ino, off, step, opts);
  }
}

/** Components of an absolute or relative path, "." and empty parts dropped; ".." refused. */
export function splitPath(p: Buffer): Buffer[] {
  const parts: Buffer[] = [];
  let start = 0;
  for (let i = 0; i <= p.length; i++) {
    if (i === p.length || p[i] === 0x2f) {
      if (i > start) {
        const part = p.subarray(start, i);
        if (part.length === 2 && part[0] === 0x2e && part[1] === 0x2e) {
          throw new NydusError('ERR_INVALID_ARG', `Path "${p.toString()}" must not contain ".."`);
        }
        if (!(part.length === 1 && part[0] === 0x2e)) parts.push(part);
      }
      start = i + 1;
    }
  }
  return parts;
}
