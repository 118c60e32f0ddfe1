import { closeSync, createReadStream, fstatSync, openSync } from 'node:fs';
import { rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import type { Compressor, Digester } from '../codec/algorithms.js';
import { sha256Hex } from '../codec/digest.js';
import { errorText, NydusError } from '../errors/errors.js';
import { isDir, isReg } from '../format/flags.js';
import type { BlobInfo, Bootstrap, ChunkInfo } from '../format/model.js';
import type { Logger } from '../log/logger.js';
import { BlobWriter, type FinishedBlob } from './blob-writer.js';
import type { BootstrapSpec } from './bootstrap-spec.js';
import { ChunkPool, type FileStamp } from './chunk-pool.js';
import { ChunkDict, ChunkSink } from './chunk-sink.js';
import { scanDirectory, sourcePathOf, sourceStampOf } from './source-dir.js';
import { findEntry, treeFromBootstrap, type BuildInode, type BuildTree } from './tree.js';
import type { WhiteoutSpec } from './whiteout.js';
import { fdChunks, growPipe, readFd } from '../util/fd-stream.js';
import type { TarFile } from '../tar/reader.js';

export type SourceType = 'dir-rafs' | 'tar-rafs' | 'targz-rafs';

/**
 * Output buffer of a tar.gz source's inflater. zlib's default (16 KiB) makes one thread-pool
 * round trip per 16 KiB of tar; 256 KiB pieces cut that 16-fold (a 430 MB layer: 26,000 trips).
 */
export const GUNZIP_CHUNK = 256 * 1024;
/** Reads of a tar file: small entries are then mostly whole in the reader's buffer. */
const TAR_READ = 1024 * 1024;

export interface BuildOptions {
  source: string;
  type: SourceType;
  /**
   * Tar types: read the (already decompressed for tar-rafs) tar from this stream instead of
   * opening `source`, which then only names the input in messages.
   */
  input?: Readable;
  /**
   * Write the data blob even when the build stores no chunk data (inline-meta builds of a
   * metadata-only layer: the blob is the layer, so it must exist).
   */
  alwaysWriteBlob?: boolean;
  /**
   * Write the data blob with O_DIRECT where the file system takes it (util/direct-io.ts): far
   * less system time, but the blob is not left in the page cache. For a command whose blob is
   * read again later, not for one that reads it back at once (the converter hashes and pushes it).
   */
  directIo?: boolean;
  fsVersion: 5 | 6;
  compressor: Compressor;
  digester: Digester;
  chunkSize: number;
  alignedChunk: boolean;
  /** Output bootstrap file (not with inlineMeta). */
  bootstrap?: string;
  /** Output blob file. */
  blob?: string;
  /** Output directory: files named by digest. */
  blobDir?: string;
  inlineMeta: boolean;
  blobToc: boolean;
  parentBootstrap?: string;
  chunkDict?: string;
  whiteoutSpec: WhiteoutSpec;
  /** Absolute paths whose inodes go into the prefetch table (policy fs). */
  prefetchPatterns: readonly string[];
  repeatable: boolean;
  threads?: number;
  disableCheck?: boolean;
  log: Logger;
  /** Progress callback: bytes of file data processed. */
  onProgress?: (bytes: number) => void;
}

export interface BuildResult {
  bootstrapPath: string | undefined;
  /** Blob ids in blob-table order that this build references (parent, dict and new). */
  blobs: string[];
  newBlob: { id: string; path: string; size: number } | undefined;
  stats: {
    files: number;
    sourceBytes: number;
    chunks: number;
    dedupChunks: number;
    dedupBytes: number;
    storedBytes: number;
  };
}

/** Regular-file inodes in build-index order (rafs-format.md 2.9): siblings together, then subdirectories. */
function filesInIndexOrder(tree: BuildTree): BuildInode[] {
  const out: BuildInode[] = [];
  const seen = new Set<BuildInode>();
  // For each directory (depth-first, in sorted order) its children; hardlinks once.
  const stack: BuildInode[] = [tree.root];
  while (stack.length > 0) {
    const d = stack.pop()!;
    const kids = d.children ?? [];
    for (const e of kids) {
      if (isReg(e.inode.mode) && !seen.has(e.inode)) {
        seen.add(e.inode);
        out.push(e.inode);
      }
    }
    for (let i = kids.length - 1; i >= 0; i--) if (isDir(kids[i]!.inode.mode)) stack.push(kids[i]!.inode);
  }
  return out;
}

/** The inode at an absolute path of the tree, or undefined. */
function lookupTree(tree: BuildTree, path: string): BuildInode | undefined {
  let cur = tree.root;
  for (const part of path.split('/').filter((p) => p !== '' && p !== '.')) {
    if (!isDir(cur.mode)) return undefined;
    const i = findEntry(cur.children ?? [], Buffer.from(part));
    if (i < 0) return undefined;
    cur = cur.children![i]!.inode;
  }
  return cur;
}

/**
 * Prefetch patterns (absolute paths, one per line on stdin upstream): relative ones are
 * skipped, ones under an earlier pattern dropped, unmatched ones ignored (rafs-format.md 2.4).
 */
export function resolvePrefetch(tree: BuildTree, patterns: readonly string[], log: Logger): BuildInode[] {
  const kept: string[] = [];
  const out: BuildInode[] = [];
  for (const raw of patterns) {
    const p = raw.trim();
    if (p === '') continue;
    if (!p.startsWith('/')) {
      log.warn(`Prefetch pattern "${p}" is not an absolute path, skipped`);
      continue;
    }
    const norm = `/${p
      .split('/')
      .filter((x) => x !== '')
      .join('/')}`;
    if (kept.some((k) => k === '/' || norm === k || norm.startsWith(`${k}/`))) continue;
    const inode = lookupTree(tree, norm);
    if (inode === undefined) {
      log.warn(`Prefetch pattern "${norm}" matches nothing, skipped`);
      continue;
    }
    kept.push(norm);
    out.push(inode);
  }
  return out;
}

async function loadBootstrapArg(path: string, what: string): Promise<Bootstrap> {
  try {
    // Loaded here: only builds on a parent or a chunk dict need the image reader.
    const { loadBootstrapFile } = await import('../rafs/open.js');
    return (await loadBootstrapFile(path)).bootstrap;
  } catch (e) {
    throw new NydusError('ERR_INVALID_ARG', `Cannot load ${what} "${path}": ${errorText(e)}`, { cause: e });
  }
}

/** Chunks of every regular file of a tree, once per inode. */
function* treeChunks(tree: BuildTree): Generator<ChunkInfo> {
  for (const f of filesInIndexOrder(tree)) yield* f.chunks ?? [];
}

/** A layer's tree put on its parent's (merge-tree.js, loaded only by builds on a parent). */
async function onParent(parent: BuildTree, upper: BuildTree, spec: WhiteoutSpec): Promise<BuildTree> {
  const { applyLayer } = await import('./merge-tree.js');
  return applyLayer(parent, upper, spec);
}

/** What a build needs only once its data is chunked: the bootstrap writer and its check. */
interface Finishers {
  writeBootstrap: (s: BootstrapSpec) => Buffer;
  parseBootstrap: ((bytes: Buffer) => { validate(): void }) | undefined;
}

/**
 * The modules of the last steps. They are loaded while the first chunks are on the workers (see
 * `build`), when the main thread waits for them anyway: start-up then loads only what the walk
 * needs, and the workers start earlier.
 */
async function loadFinishers(v6: boolean, check: boolean): Promise<Finishers> {
  const [writer, parse] = await Promise.all([
    v6
      ? import('./v6-writer.js').then((m) => m.writeV6Bootstrap)
      : import('./v5-writer.js').then((m) => m.writeV5Bootstrap),
    check ? import('../format/bootstrap.js').then((m) => m.parseBootstrap) : undefined,
  ]);
  return { writeBootstrap: writer, parseBootstrap: parse };
}

/** A tar file read at positions (`TarFile`), with what it looked like when opened. */
interface OpenTarFile extends TarFile {
  stamp: FileStamp;
}

/** The tar source, opened once (a FIFO must not be opened twice: its writer would see no reader). */
interface TarSource {
  /** A regular file, read at positions. */
  file?: OpenTarFile;
  /** A pipe (stdin, a FIFO, `/dev/stdin` on a pipe), read with `fdChunks`. */
  pipe?: number;
  close(): void;
}

/**
 * Open a tar source to read it as a file at positions (`positions`: an uncompressed tar named
 * by a path) or as a pipe; undefined when it is neither, or cannot be opened (then a stream
 * opens it and reports any failure in its own words).
 */
function openTarSource(path: string, positions: boolean): TarSource | undefined {
  let fd = 0;
  if (path !== '-') {
    try {
      fd = openSync(path, 'r');
    } catch {
      return undefined;
    }
  }
  const close = (): void => {
    if (path !== '-') closeSync(fd);
  };
  let st;
  try {
    st = fstatSync(fd, { bigint: true });
  } catch {
    close();
    return undefined;
  }
  if (st.isFIFO() || st.isCharacterDevice()) {
    if (st.isFIFO()) growPipe(fd);
    return { pipe: fd, close };
  }
  if (!positions || path === '-' || !st.isFile()) {
    close();
    return undefined;
  }
  const size = Number(st.size);
  const file: OpenTarFile = {
    size,
    readSize: TAR_READ,
    stamp: { size, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs },
    async read(pos: number, n: number): Promise<Buffer> {
      const buf = Buffer.allocUnsafeSlow(n);
      let got = 0;
      while (got < n) {
        const k = await readFd(fd, buf, got, pos + got);
        if (k === 0) break;
        got += k;
      }
      return got === n ? buf : buf.subarray(0, got);
    },
  };
  return { file, close };
}

/** Tells apart the temporary blobs of builds started in the same millisecond. */
let tmpSerial = 0;

/**
 * `nydus-image create`: build a RAFS image (bootstrap + data blob) from a directory or a tar
 * stream, optionally on top of a parent bootstrap and deduplicated against a chunk dictionary.
 * Outputs are written under temporary names and renamed into place only at the end.
 */
export async function build(o: BuildOptions): Promise<BuildResult> {
  const v6 = o.fsVersion === 6;
  const log = o.log;
  // Blob table: the parent's blobs, then chunk-dict blobs (dropped at the end unless referenced),
  // then this build's blob.
  const blobs: BlobInfo[] = [];
  const dict = new ChunkDict();
  let parent: BuildTree | undefined;
  if (o.parentBootstrap !== undefined) {
    const pb = await loadBootstrapArg(o.parentBootstrap, 'parent bootstrap');
    if (pb.superblock.version !== o.fsVersion) {
      throw new NydusError(
        'ERR_INVALID_ARG',
        `Parent bootstrap is RAFS v${pb.superblock.version}, this build is v${o.fsVersion}`,
      );
    }
    if (pb.superblock.chunkSize !== o.chunkSize) {
      throw new NydusError(
        'ERR_INVALID_ARG',
        `Parent bootstrap chunk size 0x${pb.superblock.chunkSize.toString(16)} differs from --chunk-size 0x${o.chunkSize.toString(16)}`,
      );
    }
    parent = treeFromBootstrap(pb, 0);
    blobs.push(...pb.blobs.map((b, i) => ({ ...b, index: i })));
    for (const c of treeChunks(parent)) dict.add(c);
  }
  const parentBlobCount = blobs.length;
  // Chunk-dict blobs get provisional indexes after the parent's; unreferenced ones are dropped at the end.
  if (o.chunkDict !== undefined) {
    const db = await loadBootstrapArg(o.chunkDict, 'chunk dict');
    const byId = new Map(blobs.map((b) => [b.blobId, b.index]));
    const remap = db.blobs.map((b) => {
      const existing = byId.get(b.blobId);
      if (existing !== undefined) return existing;
      blobs.push({ ...b, index: blobs.length });
      return blobs.length - 1;
    });
    for (const c of db.allChunks()) {
      const bi = remap[c.blobIndex];
      // v5 images have one compressor for all blobs: dict chunks compressed otherwise cannot be used.
      if (bi === undefined || (!v6 && db.blobs[c.blobIndex]?.compressor !== o.compressor)) continue;
      dict.add({ ...c, blobIndex: bi });
    }
    log.info(`Chunk dict "${o.chunkDict}": ${dict.size} chunks`);
  }
  const newIndex = blobs.length;
  const tmpDir = o.blobDir ?? dirname(o.blob ?? o.bootstrap ?? o.source);
  // Unique within the process too: the converter builds several layers at once.
  const tmpBlob = join(tmpDir, `.nydus-blob-${process.pid}-${Date.now()}-${++tmpSerial}.tmp`);
  let writer: BlobWriter | undefined;
  let finishers: Promise<Finishers> | undefined;
  const finishersNow = (): Promise<Finishers> => {
    if (finishers === undefined) {
      finishers = loadFinishers(v6, o.disableCheck !== true);
      // A failure is thrown where they are awaited.
      finishers.catch(() => undefined);
    }
    return finishers;
  };
  const store = async (): Promise<BlobWriter> => {
    // The first chunks are back from the workers: load the last steps' modules meanwhile.
    void finishersNow();
    writer ??= await BlobWriter.create({
      path: tmpBlob,
      version: o.fsVersion,
      compressor: o.compressor,
      digester: o.digester,
      chunkSize: o.chunkSize,
      alignedChunk: v6 || o.alignedChunk,
      blobIndex: newIndex,
      blobToc: o.blobToc,
      inlineMeta: o.inlineMeta,
      directIo: o.directIo === true,
    });
    return writer;
  };
  const pool = new ChunkPool(o.compressor, o.digester, o.threads);
  const sink = new ChunkSink(pool, dict, store, o.chunkSize);
  if (o.onProgress !== undefined) sink.onProgress = o.onProgress;
  const temps: string[] = [tmpBlob];
  let opened: TarSource | undefined;
  try {
    let tree: BuildTree;
    let files = 0;
    if (o.type === 'dir-rafs') {
      // Data order: prefetch files first (pattern order), then build-index order (rafs-format.md
      // 4.1). Build-index order is the order of the walk: without prefetch patterns the files
      // are chunked while the walk goes on, so reading and compressing overlap the walk.
      const streaming = !o.prefetchPatterns.some((p) => p.trim() !== '');
      const upper = await scanDirectory(o.source, {
        whiteoutSpec: o.whiteoutSpec,
        whiteouts: parent === undefined ? 'drop' : 'keep',
        layer: 1,
        ...(streaming
          ? {
              onFile: (f: BuildInode, path: Buffer, stamp: FileStamp) => {
                files++;
                if (f.size === 0) f.chunks = [];
                else return sink.pushFile(f, f.sourcePath ?? path, stamp);
                return undefined;
              },
            }
          : {}),
      });
      tree = parent === undefined ? upper : await onParent(parent, upper, o.whiteoutSpec);
      if (!streaming) {
        const order = filesInIndexOrder(upper);
        const first = new Set<BuildInode>();
        for (const p of resolvePrefetch(upper, o.prefetchPatterns, log)) {
          const stack = [p];
          while (stack.length > 0) {
            const n = stack.pop()!;
            if (isReg(n.mode)) first.add(n);
            for (const e of [...(n.children ?? [])].reverse()) stack.push(e.inode);
          }
        }
        for (const f of [...first, ...order.filter((f) => !first.has(f))]) {
          const path = sourcePathOf(f);
          if (path === undefined) continue;
          files++;
          if (f.size === 0) f.chunks = [];
          else await sink.pushFile(f, path, sourceStampOf(f));
        }
      }
    } else {
      // Loaded first: once the streams are made, their errors need the reader's listeners.
      const [{ TarReader }, { treeFromTar }] = await Promise.all([
        import('../tar/reader.js'),
        import('./source-tar.js'),
      ]);
      // An uncompressed tar in a file is read at positions: the workers read the larger files
      // straight from it, and this thread reads only headers and small files. A pipe (stdin, a
      // FIFO) is read with fewer allocations and copies than a ReadStream's.
      opened = o.input === undefined ? openTarSource(o.source, o.type === 'tar-rafs') : undefined;
      const inFile = opened?.file;
      let reader: InstanceType<typeof TarReader>;
      if (inFile !== undefined) reader = new TarReader(inFile);
      else if (opened?.pipe !== undefined && o.type === 'tar-rafs' && o.input === undefined) {
        // The file data of larger entries is read from the pipe straight into chunk buffers.
        const fd = opened.pipe;
        reader = new TarReader({
          [Symbol.asyncIterator]: () => fdChunks(fd),
          readInto: (buf: Buffer, at: number, n: number) => readFd(fd, buf.subarray(0, at + n), at, null),
        });
      } else {
        const input: Readable =
          o.input ??
          (opened?.pipe !== undefined
            ? Readable.from(fdChunks(opened.pipe), { objectMode: false })
            : o.source === '-'
              ? process.stdin
              : createReadStream(o.source, { highWaterMark: TAR_READ }));
        const stream =
          o.type === 'targz-rafs' ? input.pipe(createGunzip({ chunkSize: GUNZIP_CHUNK })) : input;
        input.on('error', (e: Error) => stream.destroy(e));
        reader = new TarReader(stream);
      }
      const upper = await treeFromTar(reader, {
        whiteoutSpec: o.whiteoutSpec,
        onFileData: async (inode, data) => {
          files++;
          await sink.pushStream(inode, data, 'Tar entry');
        },
        onFileBytes: (inode, data) => {
          files++;
          return sink.pushBytes(inode, data, 'Tar entry');
        },
        onFileInto: async (inode, read) => {
          files++;
          await sink.pushInto(inode, read, 'Tar entry');
        },
        ...(inFile !== undefined
          ? {
              onFileAt: (inode: BuildInode, at: number) => {
                files++;
                return sink.pushRange(inode, o.source, at, inFile.size, inFile.stamp);
              },
            }
          : {}),
      });
      tree = parent === undefined ? upper : await onParent(parent, upper, o.whiteoutSpec);
    }
    await sink.drain();
    // Every chunk is in: the workers' isolates are torn down on their threads (the other core
    // is idle now) while this one writes the bootstrap; `finally` waits for them.
    void pool.close().catch(() => undefined);
    if (o.alwaysWriteBlob === true) await store();
    const prefetch = resolvePrefetch(tree, o.prefetchPatterns, log);
    // Keep only blobs some chunk references (the parent's always stay), in their order.
    const used = new Set<number>();
    // Only blobs before the new one can go unused (a build on nothing has none).
    if (newIndex > parentBlobCount) for (const c of treeChunks(tree)) used.add(c.blobIndex);
    const finalIndex = new Map<number, number>();
    const table: BlobInfo[] = [];
    for (const b of blobs) {
      if (b.index < parentBlobCount || used.has(b.index))
        finalIndex.set(b.index, table.push({ ...b, index: table.length }) - 1);
    }
    const remapTree = (): void => {
      let moved = false;
      for (const [from, to] of finalIndex) if (from !== to) moved = true;
      // Nothing to renumber: the tree stays as it is (the writers take a file without chunk
      // records as one with none), with no pass over every file at the end of the build.
      if (!moved) return;
      for (const f of filesInIndexOrder(tree)) {
        f.chunks = (f.chunks ?? []).map((c) =>
          finalIndex.get(c.blobIndex) === c.blobIndex ? c : { ...c, blobIndex: finalIndex.get(c.blobIndex)! },
        );
      }
    };
    const spec = (tableNow: readonly BlobInfo[]): BootstrapSpec => ({
      tree,
      chunkSize: o.chunkSize,
      compressor: o.compressor,
      digester: o.digester,
      explicitUidGid: !o.repeatable,
      blobs: tableNow,
      prefetch,
    });
    const { writeBootstrap: writeBoot, parseBootstrap } = await finishersNow();
    let finished: FinishedBlob | undefined;
    let bootstrap: Buffer;
    const w = writer;
    if (w !== undefined && w.chunkCount === 0 && o.alwaysWriteBlob === true) {
      // A blob that stores no chunk (metadata-only layer, or every chunk deduplicated): it is
      // written (the layer needs it) but stays out of the blob table, as nothing references it.
      remapTree();
      finished = await w.finish(() => writeBoot(spec(table)));
      bootstrap = finished.bootstrap ?? writeBoot(spec(table));
    } else if (w !== undefined) {
      const newPos = table.length;
      finalIndex.set(newIndex, newPos);
      remapTree();
      finished = await w.finish((placeholder) =>
        writeBoot(spec([...table, { ...placeholder, index: newPos }])),
      );
      table.push({ ...finished.blob, index: newPos });
      bootstrap = finished.bootstrap ?? writeBoot(spec(table));
    } else {
      remapTree();
      bootstrap = writeBoot(spec(table));
      if (o.inlineMeta) log.warn('The build stored no new chunk data: the bootstrap is written on its own');
    }
    if (parseBootstrap !== undefined) {
      try {
        parseBootstrap(bootstrap).validate();
      } catch (e) {
        throw new NydusError(
          'ERR_FORMAT',
          `The built bootstrap fails validation (a builder bug): ${errorText(e)}`,
          { cause: e },
        );
      }
    }
    // Place outputs.
    let newBlob: BuildResult['newBlob'];
    if (finished !== undefined) {
      const id = finished.blob.blobId;
      const dest = o.blob ?? (o.blobDir !== undefined ? join(o.blobDir, id) : undefined);
      if (dest !== undefined) {
        await rename(tmpBlob, dest);
        newBlob = { id, path: dest, size: finished.size };
      } else {
        log.warn('No --blob or --blob-dir given: the data blob is discarded');
      }
    }
    let bootstrapPath: string | undefined;
    const bootDest =
      o.bootstrap ??
      (o.blobDir !== undefined && !(o.inlineMeta && finished !== undefined)
        ? join(o.blobDir, sha256Hex(bootstrap))
        : undefined);
    if (bootDest !== undefined && !(o.inlineMeta && finished !== undefined)) {
      const tmpBoot = `${bootDest}.${process.pid}.tmp`;
      temps.push(tmpBoot);
      await writeFile(tmpBoot, bootstrap);
      await rename(tmpBoot, bootDest);
      bootstrapPath = bootDest;
    }
    return {
      bootstrapPath,
      blobs: table.map((b) => b.blobId),
      newBlob,
      stats: { files, ...sink.stats },
    };
  } catch (e) {
    await writer?.abort();
    throw e;
  } finally {
    opened?.close();
    await pool.close();
    for (const t of temps) await rm(t, { force: true });
  }
}
