import { FormatError } from '../errors/errors.js';

/**
 * POSIX ustar header (512 bytes), the base record of every tar entry we read or write.
 *
 * | off | size | field    | encoding                                   |
 * |-----|------|----------|--------------------------------------------|
 * | 0   | 100  | name     | bytes, NUL padded                          |
 * | 100 | 8    | mode     | octal, NUL terminated                      |
 * | 108 | 8    | uid      | octal                                      |
 * | 116 | 8    | gid      | octal                                      |
 * | 124 | 12   | size     | octal (or GNU base-256 when the top bit set)|
 * | 136 | 12   | mtime    | octal (or base-256)                        |
 * | 148 | 8    | chksum   | octal sum of all header bytes, field as spaces |
 * | 156 | 1    | typeflag | '0' file, '1' hardlink, '2' symlink, '3' char, '4' block, '5' dir, '6' fifo, 'x' pax, 'g' global pax, 'L'/'K' GNU long name/link |
 * | 157 | 100  | linkname | bytes                                      |
 * | 257 | 6    | magic    | "ustar\0" (POSIX) or "ustar " (GNU)        |
 * | 263 | 2    | version  | "00" (POSIX) or " \0" (GNU)                |
 * | 265 | 32   | uname    |                                            |
 * | 297 | 32   | gname    |                                            |
 * | 329 | 8    | devmajor | octal                                      |
 * | 337 | 8    | devminor | octal                                      |
 * | 345 | 155  | prefix   | bytes; path = prefix + "/" + name          |
 *
 * Names are raw bytes end to end: Linux file names need not be UTF-8.
 */
export const BLOCK = 512;

export const TarType = {
  FILE: 0x30,
  HARDLINK: 0x31,
  SYMLINK: 0x32,
  CHAR: 0x33,
  BLOCK: 0x34,
  DIR: 0x35,
  FIFO: 0x36,
  CONTIGUOUS: 0x37,
  PAX: 0x78,
  PAX_GLOBAL: 0x67,
  GNU_LONGNAME: 0x4c,
  GNU_LONGLINK: 0x4b,
  GNU_SPARSE: 0x53,
  OLD_FILE: 0x00,
} as const;

export interface TarHeader {
  name: Buffer;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  type: number;
  linkname: Buffer;
  uname: Buffer;
  gname: Buffer;
  devmajor: number;
  devminor: number;
}

/** Largest value an octal field of `width` bytes holds (width - 1 digits). */
export function octalMax(width: number): number {
  return 8 ** (width - 1) - 1;
}

function writeOctal(buf: Buffer, off: number, width: number, value: number): void {
  const digits = value.toString(8).padStart(width - 1, '0');
  if (digits.length > width - 1)
    throw new FormatError(`Value ${value} does not fit a ${width}-byte tar field`);
  buf.write(digits, off, 'ascii');
  buf[off + width - 1] = 0;
}

function readNumber(buf: Buffer, off: number, width: number, what: string): number {
  const first = buf[off]!;
  if (first & 0x80) {
    // GNU base-256: big-endian two's complement in the remaining bits; we accept positives only.
    if (first & 0x40) throw new FormatError(`Negative ${what} in tar header`, off);
    let v = first & 0x3f;
    for (let i = 1; i < width; i++) {
      v = v * 256 + buf[off + i]!;
      if (v > Number.MAX_SAFE_INTEGER) throw new FormatError(`Tar ${what} is too large`, off);
    }
    return v;
  }
  let v = 0;
  let i = off;
  const end = off + width;
  while (i < end && (buf[i] === 0x20 || buf[i] === 0)) {
    if (buf[i] === 0) return 0;
    i++;
  }
  for (; i < end; i++) {
    const c = buf[i]!;
    if (c === 0 || c === 0x20) break;
    if (c < 0x30 || c > 0x37) throw new FormatError(`Bad octal digit in tar ${what}`, i);
    v = v * 8 + (c - 0x30);
  }
  return v;
}

/** Shared by all empty fields (nothing can be written to it). */
const EMPTY = Buffer.alloc(0);

function field(buf: Buffer, off: number, width: number): Buffer {
  if (buf[off] === 0) return EMPTY;
  const f = buf.subarray(off, off + width);
  const z = f.indexOf(0);
  return Buffer.from(z < 0 ? f : f.subarray(0, z));
}

export function checksumOf(block: Buffer): number {
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : block[i]!;
  return sum;
}

export function isZeroBlock(block: Buffer): boolean {
  for (let i = 0; i < BLOCK; i++) if (block[i] !== 0) return false;
  return true;
}

/**
 * Split a path into ustar prefix and name, or undefined when it does not fit (then the caller
 * adds a PAX `path` record and stores a truncated name).
 */
function splitPath(path: Buffer): { prefix: Buffer; name: Buffer } | undefined {
  if (path.length <= 100) return { prefix: Buffer.alloc(0), name: path };
  if (path.length > 256) return undefined;
  // The name part must be <= 100 bytes and the prefix <= 155, split at a '/'.
  for (let i = path.length - 101; i < path.length; i++) {
    if (i < 0) continue;
    if (path[i] === 0x2f && i <= 155 && path.length - i - 1 <= 100 && i > 0) {
      return { prefix: path.subarray(0, i), name: path.subarray(i + 1) };
    }
  }
  return undefined;
}

export interface EncodeResult {
  block: Buffer;
  /** Fields that did not fit the ustar header and need PAX records. */
  overflow: { path: boolean; linkpath: boolean; size: boolean; uid: boolean; gid: boolean; mtime: boolean };
}

/** Encode a POSIX ustar header; fields that do not fit are flagged for PAX records. */
export function encodeHeader(h: TarHeader): EncodeResult {
  const block = Buffer.alloc(BLOCK);
  const overflow = { path: false, linkpath: false, size: false, uid: false, gid: false, mtime: false };
  const split = splitPath(h.name);
  if (split === undefined) {
    overflow.path = true;
    h.name.copy(block, 0, 0, 100);
  } else {
    split.name.copy(block, 0);
    split.prefix.copy(block, 345);
  }
  if (h.linkname.length > 100) {
    overflow.linkpath = true;
    h.linkname.copy(block, 157, 0, 100);
  } else {
    h.linkname.copy(block, 157);
  }
  writeOctal(block, 100, 8, h.mode & 0o7777);
  const fit = (v: number, w: number): number => (v >= 0 && v <= octalMax(w) ? v : -1);
  const uid = fit(h.uid, 8);
  const gid = fit(h.gid, 8);
  const size = fit(h.size, 12);
  const mtime = fit(h.mtime, 12);
  overflow.uid = uid < 0;
  overflow.gid = gid < 0;
  overflow.size = size < 0;
  overflow.mtime = mtime < 0;
  writeOctal(block, 108, 8, Math.max(uid, 0));
  writeOctal(block, 116, 8, Math.max(gid, 0));
  writeOctal(block, 124, 12, Math.max(size, 0));
  writeOctal(block, 136, 12, Math.max(mtime, 0));
  block[156] = h.type;
  block.write('ustar\u000000', 257, 'latin1');
  h.uname.copy(block, 265, 0, 32);
  h.gname.copy(block, 297, 0, 32);
  writeOctal(block, 329, 8, h.devmajor);
  writeOctal(block, 337, 8, h.devminor);
  writeOctal(block, 148, 7, checksumOf(block));
  block[155] = 0x20;
  return { block, overflow };
}

/** Decode one 512-byte header; `at` is its offset in the stream, for errors. */
export function decodeHeader(block: Buffer, at = 0): TarHeader {
  if (block.length < BLOCK) throw new FormatError('Truncated tar header', at);
  const stored = readNumber(block, 148, 8, 'checksum');
  if (stored !== checksumOf(block)) throw new FormatError('Tar header checksum mismatch', at);
  const magic = block.toString('latin1', 257, 263);
  let name = field(block, 0, 100);
  if (magic === 'ustar\u0000' || magic === 'ustar ') {
    const prefix = field(block, 345, 155);
    if (magic === 'ustar\u0000' && prefix.length > 0) name = Buffer.concat([prefix, Buffer.from('/'), name]);
  }
  return {
    name,
    mode: readNumber(block, 100, 8, 'mode'),
    uid: readNumber(block, 108, 8, 'uid'),
    gid: readNumber(block, 116, 8, 'gid'),
    size: readNumber(block, 124, 12, 'size'),
    mtime: readNumber(block, 136, 12, 'mtime'),
    type: block[156]!,
    linkname: field(block, 157, 100),
    uname: field(block, 265, 32),
    gname: field(block, 297, 32),
    devmajor: readNumber(block, 329, 8, 'devmajor'),
    devminor: readNumber(block, 337, 8, 'devminor'),
  };
}
