import { readdir, stat as fsStat } from 'node:fs/promises';
import { extname, join, resolve } from 'node:path';
import { Command } from 'commander';
import { parseDigester } from '../../codec/algorithms.js';
import { errorText, NydusError } from '../../errors/errors.js';
import { isDir, isReg, isSymlink } from '../../format/flags.js';
import type { ChunkInfo } from '../../format/model.js';
import type { Logger } from '../../log/logger.js';
import { loggerFrom, writeJsonFile } from '../common.js';
import { openImage } from './source.js';

/** Per-image statistics, with upstream's field names (they are the JSON keys). */
interface ImageInfo {
  dirs: number;
  files: number;
  symlinks: number;
  chunks: number;
  file_size: number;
  comp_size: number;
  uncomp_size: number;
  padding_size: number;
  chunk_sizes: number[];
  file_sizes: number[];
  dedup_chunks: number;
  dedup_comp_size: number;
  dedup_uncomp_size: number;
  own_chunks: number;
  own_comp_size: number;
  own_uncomp_size: number;
  ref_chunks: number;
  ref_comp_size: number;
  ref_uncomp_size: number;
}

interface DedupInfo {
  raw_chunks: number;
  dedup_chunks: number;
  comp_content_size: number;
  comp_base_size: number;
  comp_image_size: number;
  uncomp_content_size: number;
  uncomp_base_size: number;
  uncomp_image_size: number;
}

const newInfo = (): ImageInfo => ({
  dirs: 0,
  files: 0,
  symlinks: 0,
  chunks: 0,
  file_size: 0,
  comp_size: 0,
  uncomp_size: 0,
  padding_size: 0,
  chunk_sizes: new Array<number>(9).fill(0),
  file_sizes: new Array<number>(45).fill(0),
  dedup_chunks: 0,
  dedup_comp_size: 0,
  dedup_uncomp_size: 0,
  own_chunks: 0,
  own_comp_size: 0,
  own_uncomp_size: 0,
  ref_chunks: 0,
  ref_comp_size: 0,
  ref_uncomp_size: 0,
});

const DEDUP_LEVELS = 20;

/** Image statistics and chunk dedup analysis over one or more bootstraps. */
export class ImageStat {
  dedupEnabled = false;
  targetEnabled = false;
  readonly base = newInfo();
  readonly target = newInfo();
  /** Global chunk dictionary: chunk key -> [chunk, number of images holding it]. */
  readonly #dict = new Map<string, [ChunkInfo, number]>();
  readonly #dedup: DedupInfo[] = Array.from({ length: DEDUP_LEVELS }, () => ({
    raw_chunks: 0,
    dedup_chunks: 0,
    comp_content_size: 0,
    comp_base_size: 0,
    comp_image_size: 0,
    uncomp_content_size: 0,
    uncomp_base_size: 0,
    uncomp_image_size: 0,
  }));

  async stat(path: string, isBase: boolean): Promise<void> {
    const o = await openImage(path, {});
    try {
      const img = o.image;
      const info = isBase ? this.base : this.target;
      const own = new Map<string, ChunkInfo>();
      const hardlinks = new Set<number>();
      for (const e of img.walk()) {
        const a = e.attr;
        if (isReg(a.mode)) {
          info.files++;
          if (a.nlink > 1) {
            if (hardlinks.has(a.ino)) continue;
            hardlinks.add(a.ino);
          }
          const bits = a.size === 0 ? 0 : Math.floor(Math.log2(a.size)) + 1;
          info.file_sizes[Math.min(bits, 44)]! += 1;
          info.file_size += a.size;
          info.padding_size += Math.ceil(a.size / 4096) * 4096 - a.size;
          const chunks = await img.chunks(e.ino);
          info.chunks += chunks.length;
          for (const c of chunks) {
            info.comp_size += c.compressedSize;
            info.uncomp_size += c.uncompressedSize;
            own.set(`${c.id.toString('hex')}:${c.uncompressedSize}`, c);
          }
          for (let sz = 12; sz <= 20; sz++) info.chunk_sizes[sz - 12]! += Math.ceil(a.size / 2 ** sz);
        } else if (isDir(a.mode)) {
          info.dirs++;
        } else if (isSymlink(a.mode)) {
          info.symlinks++;
        }
      }
      for (const [key, c] of own) {
        if (isBase) {
          info.own_chunks++;
          info.own_comp_size += c.compressedSize;
          info.own_uncomp_size += c.uncompressedSize;
          const d = this.#dict.get(key);
          if (d === undefined) this.#dict.set(key, [c, 1]);
          else d[1]++;
        } else if (this.#dict.has(key)) {
          info.ref_chunks++;
          info.ref_comp_size += c.compressedSize;
          info.ref_uncomp_size += c.uncompressedSize;
        } else {
          info.own_chunks++;
          info.own_comp_size += c.compressedSize;
          info.own_uncomp_size += c.uncompressedSize;
        }
      }
    } finally {
      await o.image.close();
    }
  }

  finalize(): void {
    this.base.uncomp_size += this.base.padding_size;
    if (this.targetEnabled) this.target.uncomp_size += this.target.padding_size;
    if (!this.dedupEnabled) return;
    for (const [c, count] of this.#dict.values()) {
      const thresh = Math.min(DEDUP_LEVELS, count);
      for (let i = 0; i < DEDUP_LEVELS; i++) {
        const d = this.#dedup[i]!;
        d.raw_chunks += count;
        d.uncomp_content_size += count * c.uncompressedSize;
        d.comp_content_size += count * c.compressedSize;
        if (i < thresh) {
          d.dedup_chunks += 1;
          d.uncomp_base_size += c.uncompressedSize;
          d.comp_base_size += c.compressedSize;
        } else {
          d.dedup_chunks += count;
          d.uncomp_image_size += count * c.uncompressedSize;
          d.comp_image_size += count * c.compressedSize;
        }
      }
      this.base.dedup_chunks++;
      this.base.dedup_comp_size += c.compressedSize;
      this.base.dedup_uncomp_size += c.uncompressedSize;
    }
  }

  toJSON(): unknown {
    return {
      dedup_enabled: this.dedupEnabled,
      target_enabled: this.targetEnabled,
      base_image: this.base,
      target_image: this.target,
    };
  }

  dump(): string {
    let s = '';
    if (this.targetEnabled) s += `Target Image Statistics:${dumpInfo(this.target)}`;
    s += `\n\nBase Image Statistics:${dumpInfo(this.base)}`;
    if (this.dedupEnabled) {
      s += '\n\nChunk Deduplication Statistics:\n';
      s +=
        'Global Dedup Thresh:\tRaw Chunks:\tDedup Chunks:\tComp Content Size:\tComp Base Size:\tComp Image Size:\tUncomp Content Size:\tUncomp Base Size\tUncomp Image Size\n';
      this.#dedup.forEach((d, i) => {
        if (d.dedup_chunks === 0) return;
        const h = (n: number): string => `0x${n.toString(16).padEnd(14)}`;
        s += `${String(i + 1).padEnd(24)}${h(d.raw_chunks)}${h(d.dedup_chunks)}${h(d.comp_content_size)}${h(d.comp_base_size)}${h(d.comp_image_size)}${h(d.uncomp_content_size)}${h(d.uncomp_base_size)}${h(d.uncomp_image_size)}\n`;
      });
    }
    return s;
  }
}

function dumpInfo(i: ImageInfo): string {
  let s = `
Directories:            ${i.dirs}
Files:                  ${i.files}
Symlinks:               ${i.symlinks}
Chunks:                 ${i.chunks}
File Size:              ${i.file_size}
Padding Size:           ${i.padding_size}
Uncompressed Size:      ${i.uncomp_size}
Compressed Size:        ${i.comp_size}
`;
  s += '\nFile Size Bits:\t\tFile Count:\n';
  for (let sz = 0; sz <= 44; sz++) s += `${sz}:\t\t\t${i.file_sizes[sz]}\n`;
  s += '\nChunk Size Bits:\tChunk Count:\n';
  for (let sz = 12; sz <= 20; sz++) s += `${sz}:\t\t\t${i.chunk_sizes[sz - 12]}\n`;
  s += `
Raw Content Size:\t${i.file_size}
Comp Content Size:\t${i.comp_size}
Raw Chunk Count:\t${i.chunks}
Dedup Comp Size:\t${i.dedup_comp_size}
Dedup Uncomp Size:\t${i.dedup_uncomp_size}
Dedup Chunk Count:\t${i.dedup_chunks}
Owned Comp Size:\t${i.own_comp_size}
Owned Uncomp Size:\t${i.own_uncomp_size}
Owned Chunk Count:\t${i.own_chunks}
Referenced Comp Size:\t${i.ref_comp_size}
Referenced Uncomp Size:\t${i.ref_uncomp_size}
Referenced Chunk Count:\t${i.ref_chunks}
`;
  return s;
}

async function statDir(st: ImageStat, dir: string, target: string | undefined, log: Logger): Promise<void> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (e) {
    throw new NydusError('ERR_IO', `Cannot read directory "${dir}": ${errorText(e)}`, { cause: e });
  }
  for (const name of names.sort()) {
    const p = join(dir, name);
    if (extname(name) !== '' || (target !== undefined && resolve(p) === resolve(target))) continue;
    const s = await fsStat(p).catch(() => undefined);
    if (s === undefined || !s.isFile()) continue;
    try {
      await st.stat(p, true);
    } catch (e) {
      log.debug(`failed to process ${p}, ${errorText(e)}`);
    }
  }
}

export function statCommand(): Command {
  return new Command('stat')
    .description('Generate statistics information for RAFS filesystems')
    .option('-B, --bootstrap <file>', 'Generate statistics information for the RAFS filesystem')
    .option(
      '-D, --blob-dir <dir>',
      'Generate statistics information for all RAFS filesystems in the directory',
    )
    .option(
      '-T, --target <file>',
      'Generate statistics information for the RAFS filesystem after applying chunk deduplication',
    )
    .option('-C, --config <file>', 'Configuration file for storage backend, cache and RAFS FUSE filesystem')
    .option('--digester <algo>', 'Algorithm to digest data chunks: blake3 or sha256', 'blake3')
    .option('-J, --output-json <file>', 'File path to save operation result in JSON format')
    .action(async (opts: Record<string, string | undefined>, cmd: Command) => {
      const log = loggerFrom(cmd);
      parseDigester(opts['digester'] ?? 'blake3');
      const st = new ImageStat();
      if (opts['bootstrap'] !== undefined) {
        await st.stat(opts['bootstrap'], true);
      } else if (opts['blobDir'] !== undefined) {
        st.dedupEnabled = true;
        await statDir(st, opts['blobDir'], opts['target'], log);
      } else {
        throw new NydusError('ERR_INVALID_ARG', 'One of --bootstrap and --blob-dir must be specified');
      }
      if (opts['target'] !== undefined) {
        st.targetEnabled = true;
        await st.stat(opts['target'], false);
      }
      st.finalize();
      if (opts['outputJson'] !== undefined) await writeJsonFile(opts['outputJson'], st.toJSON());
      else process.stdout.write(st.dump());
    });
}
