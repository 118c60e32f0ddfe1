import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { Compressor } from '../../src/codec/algorithms.js';
import { build } from '../../src/builder/build.js';
import { isReg } from '../../src/format/flags.js';
import type { BlobInfo, Bootstrap } from '../../src/format/model.js';
import type { Logger, LogLevel } from '../../src/log/logger.js';
import type { BlobReader, BlobSource } from '../../src/storage/blob-source.js';
import type { RafsImage } from '../../src/rafs/image.js';
import { loadBootstrapFile } from '../../src/rafs/open.js';
import { LocalFsBlobSource } from '../../src/storage/localfs.js';
import { prng } from '../helpers/prng.js';

/** Deterministic pseudo-random bytes (incompressible, so chunk sizes are predictable). */
export function randomBytes(n: number, seed: number): Buffer {
  const rnd = prng(seed);
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(rnd() * 256);
  return b;
}

export interface BuiltImage {
  dir: string;
  boot: string;
  blobDir: string;
  bootstrap: Bootstrap;
  blob: BlobInfo;
  blobPath: string;
  /** File contents by absolute image path. */
  files: Map<string, Buffer>;
  cleanup(): void;
}

export interface BuildImageOptions {
  fsVersion?: 5 | 6;
  compressor?: Compressor;
  chunkSize?: number;
  prefetch?: string[];
}

/** Build an image of `files` (path relative to the root -> content) with the project's builder. */
export async function buildImage(
  files: Record<string, Buffer>,
  o: BuildImageOptions = {},
): Promise<BuiltImage> {
  const dir = mkdtempSync(join(tmpdir(), 'nydus-cache-'));
  const src = join(dir, 'src');
  const blobDir = join(dir, 'blobs');
  mkdirSync(src);
  mkdirSync(blobDir);
  const contents = new Map<string, Buffer>();
  for (const [rel, data] of Object.entries(files)) {
    const p = join(src, rel);
    mkdirSync(dirname(p), { recursive: true });
    writeFileSync(p, data);
    contents.set(`/${rel}`, data);
  }
  const boot = join(dir, 'image.boot');
  const r = await build({
    source: src,
    type: 'dir-rafs',
    fsVersion: o.fsVersion ?? 6,
    compressor: o.compressor ?? 'zstd',
    digester: 'blake3',
    chunkSize: o.chunkSize ?? 0x10000,
    alignedChunk: false,
    bootstrap: boot,
    blobDir,
    inlineMeta: false,
    blobToc: false,
    whiteoutSpec: 'oci',
    prefetchPatterns: o.prefetch ?? [],
    repeatable: true,
    log: memoryLogger().logger,
  });
  if (r.newBlob === undefined) throw new Error('the build made no blob');
  const { bootstrap } = await loadBootstrapFile(boot);
  const blob = bootstrap.blobs.find((b) => b.blobId === r.newBlob!.id)!;
  return {
    dir,
    boot,
    blobDir,
    bootstrap,
    blob,
    blobPath: r.newBlob.path,
    files: contents,
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** A localfs source that counts reads and bytes, and can delay or hold them. */
export class CountingSource implements BlobSource {
  reads = 0;
  bytes = 0;
  /** Delay each read by this many ms (so concurrent reads really overlap). */
  delayMs = 0;
  /** While set, reads wait for it (after being counted); only those `holdIf` accepts, when set. */
  hold: Promise<void> | undefined;
  holdIf: ((offset: number, length: number) => boolean) | undefined;
  readonly #inner: BlobSource;

  constructor(blobDir: string) {
    this.#inner = new LocalFsBlobSource({ dir: blobDir });
  }

  async open(blob: BlobInfo): Promise<BlobReader> {
    const r = await this.#inner.open(blob);
    return {
      size: r.size,
      read: async (offset: number, length: number, into?: Buffer): Promise<Buffer> => {
        this.reads++;
        this.bytes += length;
        const hold = this.hold;
        if (hold !== undefined && (this.holdIf === undefined || this.holdIf(offset, length))) await hold;
        if (this.delayMs > 0) await new Promise((res) => setTimeout(res, this.delayMs));
        return r.read(offset, length, into);
      },
      close: () => r.close(),
    };
  }
}

/** A logger keeping every line, for asserting on warnings. */
export function memoryLogger(): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  const at =
    (lvl: Exclude<LogLevel, 'off'>) =>
    (m: string): void => {
      lines.push(`${lvl.toUpperCase()} ${m}`);
    };
  const logger: Logger = {
    level: 'trace',
    trace: at('trace'),
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
  };
  return { logger, lines };
}

/** Whole content of every regular file of an image, by path. */
export async function readAllFiles(img: RafsImage): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const e of img.walk()) {
    if (!isReg(e.attr.mode)) continue;
    out.set(e.path.toString(), await img.readFile(e.ino, 0, e.attr.size));
  }
  return out;
}

export function md5(b: Buffer): string {
  return createHash('md5').update(b).digest('hex');
}

/** Resolves after `ms` milliseconds (lets background work reach its next wait). */
export async function settle(ms = 30): Promise<void> {
  await new Promise((res) => setTimeout(res, ms));
}
