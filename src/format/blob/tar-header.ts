import { FormatError, NydusError } from '../../errors/errors.js';

/**
 * The 512-byte GNU tar header that follows each section of a blob built with tar trailers
 * (rafs-format.md 4.4). A blob reader walks them backwards from the end of the file: each header
 * says how many bytes of section data precede it.
 *
 * | off | size | field    | value written                                         |
 * |-----|------|----------|-------------------------------------------------------|
 * | 0   | 100  | name     | section name, NUL padded                              |
 * | 100 | 24   | mode/uid/gid | all zero bytes (not ASCII)                        |
 * | 124 | 12   | size     | 11 octal digits + NUL                                 |
 * | 136 | 12   | mtime    | "00000000000\0"                                       |
 * | 148 | 8    | chksum   | 7 octal digits + NUL; sum of all bytes, this field as 8 spaces |
 * | 156 | 1    | typeflag | '0' (regular file)                                    |
 * | 257 | 6    | magic    | "ustar "                                              |
 * | 263 | 2    | version  | " \0"                                                 |
 *
 * Every other byte is zero.
 */

export const TAR_BLOCK_SIZE = 512;
/** Longest name the 100-byte name field holds (no terminating NUL needed at 100). */
export const TAR_NAME_MAX = 100;
/** Largest size 11 octal digits can express. */
export const TAR_SIZE_MAX = 0o77777777777;

const NAME_OFF = 0;
const SIZE_OFF = 124;
const SIZE_LEN = 12;
const MTIME_OFF = 136;
const MTIME_LEN = 12;
const CHKSUM_OFF = 148;
const CHKSUM_LEN = 8;
const TYPEFLAG_OFF = 156;
const MAGIC_OFF = 257;
/** GNU magic "ustar " followed by the GNU version " \0". */
const GNU_MAGIC = Buffer.from('ustar  \0', 'latin1');

const TYPE_REGULAR = 0x30; // '0'
const TYPE_REGULAR_OLD = 0x00; // pre-POSIX regular file
const SPACE = 0x20;

export interface TrailerHeader {
  readonly name: string;
  /** Bytes of section data that precede the header. */
  readonly size: number;
}

function octal(value: number, digits: number): string {
  return value.toString(8).padStart(digits, '0');
}

function headerChecksum(block: Buffer): number {
  let sum = 0;
  for (let i = 0; i < TAR_BLOCK_SIZE; i++) {
    sum += i >= CHKSUM_OFF && i < CHKSUM_OFF + CHKSUM_LEN ? SPACE : block[i]!;
  }
  return sum;
}

/** True for names the trailer walk accepts: 1..100 bytes of printable ASCII. */
function isPlainName(name: string): boolean {
  return name.length > 0 && name.length <= TAR_NAME_MAX && /^[\x21-\x7e]+$/.test(name);
}

/** The exact trailer header upstream writes after a section of `size` bytes named `name`. */
export function encodeTrailerHeader(name: string, size: number): Buffer {
  if (!isPlainName(name)) {
    throw new NydusError(
      'ERR_INVALID_ARG',
      `Cannot encode tar trailer header: name "${name}" is not 1..100 ASCII bytes`,
    );
  }
  if (!Number.isSafeInteger(size) || size < 0 || size > TAR_SIZE_MAX) {
    throw new NydusError(
      'ERR_INVALID_ARG',
      `Cannot encode tar trailer header "${name}": size ${size} out of range`,
    );
  }
  const block = Buffer.alloc(TAR_BLOCK_SIZE);
  block.write(name, NAME_OFF, 'latin1');
  block.write(`${octal(size, SIZE_LEN - 1)}\0`, SIZE_OFF, 'latin1');
  block.write(`${octal(0, MTIME_LEN - 1)}\0`, MTIME_OFF, 'latin1');
  block[TYPEFLAG_OFF] = TYPE_REGULAR;
  GNU_MAGIC.copy(block, MAGIC_OFF);
  block.write(`${octal(headerChecksum(block), CHKSUM_LEN - 1)}\0`, CHKSUM_OFF, 'latin1');
  return block;
}

/**
 * A numeric field: optional leading spaces, at least one octal digit, then NUL or space padding
 * to the end of the field. Returns undefined when the field does not have that shape.
 */
function parseOctalField(block: Buffer, off: number, len: number): number | undefined {
  let i = off;
  const end = off + len;
  while (i < end && block[i] === SPACE) i++;
  let value = 0;
  let digits = 0;
  for (; i < end; i++) {
    const c = block[i]!;
    if (c < 0x30 || c > 0x37) break;
    value = value * 8 + (c - 0x30);
    digits++;
  }
  if (digits === 0 || digits > len - 1) return undefined;
  for (; i < end; i++) {
    const c = block[i]!;
    if (c !== 0 && c !== SPACE) return undefined;
  }
  return value;
}

/**
 * Decode the trailer header in `buf[off, off + 512)`. `base` is the absolute offset of `buf[0]`
 * in the blob, for error messages. Checks, in order: length, GNU magic, checksum, typeflag,
 * size field, name.
 */
export function decodeTrailerHeader(buf: Buffer, off = 0, base = 0): TrailerHeader {
  const at = base + off;
  if (off < 0 || off + TAR_BLOCK_SIZE > buf.length) {
    throw new FormatError(`Truncated tar trailer header: ${Math.max(0, buf.length - off)} of 512 bytes`, at);
  }
  const block = buf.subarray(off, off + TAR_BLOCK_SIZE);
  if (!block.subarray(MAGIC_OFF, MAGIC_OFF + GNU_MAGIC.length).equals(GNU_MAGIC)) {
    throw new FormatError('Bad tar trailer header: no GNU "ustar " magic', at + MAGIC_OFF);
  }
  const stored = parseOctalField(block, CHKSUM_OFF, CHKSUM_LEN);
  if (stored === undefined)
    throw new FormatError('Bad tar trailer header: checksum field is not octal', at + CHKSUM_OFF);
  const computed = headerChecksum(block);
  if (stored !== computed) {
    throw new FormatError(
      `Bad tar trailer header: checksum ${stored} does not match computed ${computed}`,
      at,
    );
  }
  const type = block[TYPEFLAG_OFF]!;
  if (type !== TYPE_REGULAR && type !== TYPE_REGULAR_OLD) {
    throw new FormatError(
      `Bad tar trailer header: typeflag 0x${type.toString(16)} is not a regular file`,
      at + TYPEFLAG_OFF,
    );
  }
  const size = parseOctalField(block, SIZE_OFF, SIZE_LEN);
  if (size === undefined)
    throw new FormatError('Bad tar trailer header: size field is not octal', at + SIZE_OFF);
  const nameEnd = block.indexOf(0, NAME_OFF);
  const name = block.toString(
    'latin1',
    NAME_OFF,
    nameEnd < 0 || nameEnd > TAR_NAME_MAX ? TAR_NAME_MAX : nameEnd,
  );
  if (!isPlainName(name))
    throw new FormatError('Bad tar trailer header: name is empty or not printable ASCII', at);
  return { name, size };
}

/** Like decodeTrailerHeader, but answers undefined instead of throwing. */
export function tryDecodeTrailerHeader(buf: Buffer, off = 0): TrailerHeader | undefined {
  try {
    return decodeTrailerHeader(buf, off);
  } catch (e) {
    if (e instanceof NydusError) return undefined;
    throw e;
  }
}
