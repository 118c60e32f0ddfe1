import { FormatError, NydusError } from '../../errors/errors.js';
import { readU64 } from '../../util/cursor.js';
import { Limits, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK } from '../flags.js';
import { putU16, putU64, putU8 } from './bytes.js';

/**
 * EROFS directories (rafs-format.md 3.10). A directory's data is a run of blocks; each block is a
 * standalone byte-sorted run of dirents followed by their names (no NULs), unused bytes zero:
 *
 * | off | type | field                                              |
 * |-----|------|----------------------------------------------------|
 * | 0   | u64  | nid                                                |
 * | 8   | u16  | nameoff (offset of the name within the block)      |
 * | 10  | u8   | file_type (0 unknown, 1 reg, 2 dir, 3 chr, 4 blk, 5 fifo, 6 sock, 7 symlink) |
 * | 11  | u8   | reserved                                           |
 *
 * Entry count of a block = nameoff of its first dirent / 12. A name ends where the next name
 * starts; the last one at the block's used end (i_size for the final block) or at the first NUL.
 * The entries are the children plus "." and "..", all sorted together by raw bytes. The writer
 * closes a block when the next entry (12 bytes + name) would not fit, and i_size counts the full
 * blocks plus the used bytes of the last one.
 */

export const DIRENT_SIZE = 12;

export const DirentType = {
  UNKNOWN: 0,
  REG: 1,
  DIR: 2,
  CHR: 3,
  BLK: 4,
  FIFO: 5,
  SOCK: 6,
  LNK: 7,
} as const;

const MODE_OF_TYPE: readonly number[] = [0, S_IFREG, S_IFDIR, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK, S_IFLNK];

/** S_IFMT bits of a dirent file_type (0 for unknown); undefined for values above 7. */
export function modeOfDirentType(fileType: number): number | undefined {
  return MODE_OF_TYPE[fileType];
}

/** The dirent file_type of a mode (0 when the mode has no file type). */
export function direntTypeOf(mode: number): number {
  const t = MODE_OF_TYPE.indexOf(mode & S_IFMT);
  return t < 0 ? DirentType.UNKNOWN : t;
}

export const DOT = Buffer.from('.');
export const DOTDOT = Buffer.from('..');

export interface Dirent {
  readonly name: Buffer;
  readonly nid: number;
  readonly fileType: number;
}

/**
 * One directory block. Construction checks the entry count only, so a binary search touches
 * O(log n) names; each name is checked when read. `block` holds the block's used bytes; `base`
 * is its absolute offset, for errors.
 */
export class DirBlock {
  readonly count: number;
  readonly #buf: Buffer;
  readonly #base: number;

  constructor(block: Buffer, base = 0) {
    this.#buf = block;
    this.#base = base;
    this.count = dirBlockCount(block, base);
  }

  nameoff(i: number): number {
    return this.#buf.readUInt16LE(this.#at(i) + 8);
  }

  /**
   * Name `i`, checked on access: it starts after the dirents, ends where the next name starts
   * (the last one at the block end or the first NUL), and has 1..255 bytes. Checking every name
   * therefore checks that the nameoffs are strictly increasing and in range.
   */
  name(i: number): Buffer {
    const start = this.nameoff(i);
    const len = this.#buf.length;
    let end: number;
    if (i + 1 < this.count) {
      end = this.nameoff(i + 1);
    } else {
      const nul = start < len ? this.#buf.indexOf(0, start) : -1;
      end = nul < 0 ? len : nul;
    }
    if (start < this.count * DIRENT_SIZE || end > len || end <= start || end - start > Limits.MAX_NAME) {
      throw new FormatError(
        `Directory block: name ${i} of ${this.count} spans [${start}, ${end}), not 1..${Limits.MAX_NAME} bytes in [${this.count * DIRENT_SIZE}, ${len})`,
        this.#base + i * DIRENT_SIZE + 8,
      );
    }
    return this.#buf.subarray(start, end);
  }

  nid(i: number): number {
    const at = this.#at(i);
    return readU64(this.#buf, at, 'dirent nid', this.#base);
  }

  fileType(i: number): number {
    return this.#buf.readUInt8(this.#at(i) + 10);
  }

  entry(i: number): Dirent {
    return { name: this.name(i), nid: this.nid(i), fileType: this.fileType(i) };
  }

  entries(): Dirent[] {
    const out: Dirent[] = [];
    for (let i = 0; i < this.count; i++) out.push(this.entry(i));
    return out;
  }

  /** Binary search by raw bytes: the index of `name`, or `-(insertion point) - 1`. */
  search(name: Buffer): number {
    let lo = 0;
    let hi = this.count - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const c = Buffer.compare(this.name(mid), name);
      if (c === 0) return mid;
      if (c < 0) lo = mid + 1;
      else hi = mid - 1;
    }
    return -lo - 1;
  }

  #at(i: number): number {
    if (!Number.isInteger(i) || i < 0 || i >= this.count) {
      throw new FormatError(`Dirent ${i} is outside a block of ${this.count}`, this.#base);
    }
    return i * DIRENT_SIZE;
  }
}

/**
 * Entry count of a directory block (`block` = its used bytes) from its first nameoff alone, which
 * must be a dirent boundary leaving room for at least one name byte.
 */
export function dirBlockCount(block: Buffer, base = 0): number {
  if (block.length < DIRENT_SIZE) {
    throw new FormatError(`Directory block of ${block.length} bytes holds no dirent`, base);
  }
  const first = block.readUInt16LE(8);
  if (first % DIRENT_SIZE !== 0 || first < DIRENT_SIZE || first >= block.length) {
    throw new FormatError(
      `Directory block: first nameoff ${first} is not a dirent boundary below ${block.length}`,
      base + 8,
    );
  }
  return first / DIRENT_SIZE;
}

/** Decode every dirent of one block (`block` = its used bytes). */
export function decodeDirBlock(block: Buffer, base = 0): Dirent[] {
  return new DirBlock(block, base).entries();
}

/** Start index of each block when names of these lengths are packed in order. */
function blockStarts(nameLengths: readonly number[], blockSize: number): number[] {
  const starts: number[] = [];
  let used = blockSize; // forces a first block
  nameLengths.forEach((len, i) => {
    const cost = DIRENT_SIZE + len;
    if (used + cost > blockSize) {
      starts.push(i);
      used = 0;
    }
    used += cost;
  });
  return starts;
}

/** i_size of a directory whose sorted entries (with "." and "..") have these names. */
export function dirDataSize(names: readonly Buffer[], blockSize = 4096): number {
  const lengths = names.map((n) => n.length);
  const starts = blockStarts(lengths, blockSize);
  const last = starts.at(-1);
  if (last === undefined) return 0;
  const tail = lengths.slice(last).reduce((n, len) => n + DIRENT_SIZE + len, 0);
  return (starts.length - 1) * blockSize + tail;
}

/**
 * Pack `entries` (strictly byte-sorted, "." and ".." included) into directory blocks. Returns the
 * directory data: i_size bytes, block k at `k * blockSize`, each full block zero-padded.
 */
export function encodeDirData(entries: readonly Dirent[], blockSize = 4096): Buffer {
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i]!;
    if (e.name.length === 0 || e.name.length > Limits.MAX_NAME || e.name.includes(0)) {
      throw new NydusError('ERR_INVALID_ARG', `Cannot encode dirent name "${e.name.toString()}"`);
    }
    if (i > 0 && Buffer.compare(entries[i - 1]!.name, e.name) >= 0) {
      throw new NydusError('ERR_INVALID_ARG', `Dirents are not strictly sorted at "${e.name.toString()}"`);
    }
  }
  const out = Buffer.alloc(
    dirDataSize(
      entries.map((e) => e.name),
      blockSize,
    ),
  );
  const starts = blockStarts(
    entries.map((e) => e.name.length),
    blockSize,
  );
  starts.forEach((start, b) => {
    const end = starts[b + 1] ?? entries.length;
    const base = b * blockSize;
    let nameoff = (end - start) * DIRENT_SIZE;
    for (let i = start; i < end; i++) {
      const e = entries[i]!;
      const at = base + (i - start) * DIRENT_SIZE;
      putU64(out, at, e.nid, 'dirent nid');
      putU16(out, at + 8, nameoff, 'dirent nameoff');
      putU8(out, at + 10, e.fileType, 'dirent file_type');
      e.name.copy(out, base + nameoff);
      nameoff += e.name.length;
    }
  });
  return out;
}
