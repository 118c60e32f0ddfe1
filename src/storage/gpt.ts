import { createRequire } from 'node:module';
import { FormatError, NydusError } from '../errors/errors.js';

/**
 * The GUID partition table (UEFI spec, chapter 5) with 512-byte logical sectors: what the
 * localdisk backend reads and `nydus-image localdisk` writes. Only the parts this project needs:
 * the protective MBR, the primary and backup headers and their partition entry arrays, both
 * protected by CRC32 (IEEE, as zlib computes it).
 */

/** Upstream's localdisk reads every disk with 512-byte sectors (the gpt crate's default). */
export const SECTOR_SIZE = 512;
/** Size of the header fields this implementation knows (UEFI revision 1.0). */
export const HEADER_SIZE = 92;
export const ENTRY_SIZE = 128;
/** The minimum entry array the spec asks for: 128 entries of 128 bytes (32 sectors). */
export const MIN_ENTRIES = 128;
/** Entry arrays larger than this are refused rather than read into memory. */
const MAX_ENTRY_ARRAY = 4 << 20;
const SIGNATURE = 'EFI PART';
const REVISION_1_0 = 0x00010000;

/** "Linux filesystem data": the type nydus-localdisk gives a blob partition. */
export const TYPE_LINUX_FS = '0fc63daf-8483-4772-8e79-3d69d8477de4';
/** "Microsoft basic data": marks the old localdisk layout (the partition name is the blob id). */
export const TYPE_BASIC_DATA = 'ebd0a0a2-b9e5-4433-87c0-68b6b72699c7';
export const TYPE_UNUSED = '00000000-0000-0000-0000-000000000000';

export interface GptHeader {
  revision: number;
  headerSize: number;
  currentLba: number;
  backupLba: number;
  firstUsableLba: number;
  lastUsableLba: number;
  /** Disk GUID, lower-case hyphenated text. */
  diskGuid: string;
  entriesLba: number;
  entryCount: number;
  entrySize: number;
  entriesCrc: number;
}

export interface GptPartition {
  /** 1-based index in the entry array (the kernel's partition number). */
  number: number;
  /** Lower-case hyphenated text of the partition type GUID. */
  typeGuid: string;
  /** Lower-case hyphenated text of the unique partition GUID. */
  guid: string;
  firstLba: number;
  /** Inclusive. */
  lastLba: number;
  attributes: bigint;
  name: string;
  /** Byte offset of the partition on the disk. */
  offset: number;
  /** Byte length of the partition. */
  size: number;
}

export interface GptTable {
  header: GptHeader;
  backup: GptHeader;
  partitions: GptPartition[];
}

const GUID_TEXT = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;

/**
 * The 16 on-disk bytes of a GUID given as text (hyphens optional). GPT stores the first three
 * fields little-endian and the last eight bytes as they are.
 */
export function guidToBytes(text: string): Buffer {
  if (!GUID_TEXT.test(text)) throw new NydusError('ERR_INVALID_ARG', `Invalid GUID "${text}"`);
  const hex = text.replace(/-/g, '');
  const b = Buffer.from(hex, 'hex');
  b.subarray(0, 4).reverse();
  b.subarray(4, 6).reverse();
  b.subarray(6, 8).reverse();
  return b;
}

/** The lower-case hyphenated text of the GUID stored at `buf[off..off+16]`. */
export function guidFromBytes(buf: Buffer, off = 0): string {
  const b = Buffer.from(buf.subarray(off, off + 16));
  b.subarray(0, 4).reverse();
  b.subarray(4, 6).reverse();
  b.subarray(6, 8).reverse();
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** @node-rs/crc32, loaded at the first GPT checksum (a daemon without localdisk never needs it). */
let crc32Module: typeof import('@node-rs/crc32') | undefined;

export function gptCrc32(data: Uint8Array): number {
  crc32Module ??= createRequire(import.meta.url)('@node-rs/crc32') as typeof import('@node-rs/crc32');
  return crc32Module.crc32(Buffer.from(data.buffer, data.byteOffset, data.byteLength)) >>> 0;
}

const hex32 = (n: number): string => `0x${n.toString(16).padStart(8, '0')}`;

function u64(buf: Buffer, off: number, what: string, where: number): number {
  const v = buf.readBigUInt64LE(off);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new FormatError(`${what} ${v} is out of range`, where);
  return Number(v);
}

/**
 * Decode and verify the GPT header in `sector` (read from LBA `lba`): signature, header size
 * and the header CRC32. `what` names the disk and header in messages.
 */
export function parseGptHeader(sector: Buffer, lba: number, what: string): GptHeader {
  const at = lba * SECTOR_SIZE;
  if (sector.length < HEADER_SIZE) throw new FormatError(`${what}: short read of the GPT header`, at);
  const sig = sector.subarray(0, 8).toString('latin1');
  if (sig !== SIGNATURE)
    throw new FormatError(`${what}: no GPT header (signature "${printable(sig)}", want "${SIGNATURE}")`, at);
  const headerSize = sector.readUInt32LE(12);
  if (headerSize < HEADER_SIZE || headerSize > Math.min(sector.length, SECTOR_SIZE))
    throw new FormatError(
      `${what}: GPT header size ${headerSize} is not in ${HEADER_SIZE}-${SECTOR_SIZE}`,
      at,
    );
  const stored = sector.readUInt32LE(16);
  const copy = Buffer.from(sector.subarray(0, headerSize));
  copy.writeUInt32LE(0, 16);
  const computed = gptCrc32(copy);
  if (stored !== computed)
    throw new FormatError(
      `${what}: GPT header checksum mismatch (stored ${hex32(stored)}, computed ${hex32(computed)})`,
      at,
    );
  const h: GptHeader = {
    revision: sector.readUInt32LE(8),
    headerSize,
    currentLba: u64(sector, 24, 'current LBA', at),
    backupLba: u64(sector, 32, 'backup LBA', at),
    firstUsableLba: u64(sector, 40, 'first usable LBA', at),
    lastUsableLba: u64(sector, 48, 'last usable LBA', at),
    diskGuid: guidFromBytes(sector, 56),
    entriesLba: u64(sector, 72, 'partition entries LBA', at),
    entryCount: sector.readUInt32LE(80),
    entrySize: sector.readUInt32LE(84),
    entriesCrc: sector.readUInt32LE(88),
  };
  if (h.entrySize < ENTRY_SIZE || h.entrySize % ENTRY_SIZE !== 0)
    throw new FormatError(`${what}: GPT partition entry size ${h.entrySize} is not a multiple of 128`, at);
  if (h.entryCount * h.entrySize > MAX_ENTRY_ARRAY)
    throw new FormatError(
      `${what}: GPT partition entry array of ${h.entryCount} x ${h.entrySize} bytes is too large`,
      at,
    );
  return h;
}

function printable(s: string): string {
  return s.replace(/[^\x20-\x7e]/g, '.');
}

/** UTF-16LE name of up to 36 code units, up to the first NUL. */
function entryName(entry: Buffer): string {
  const units: number[] = [];
  for (let i = 56; i + 2 <= 128; i += 2) {
    const u = entry.readUInt16LE(i);
    if (u === 0) break;
    units.push(u);
  }
  return String.fromCharCode(...units);
}

/**
 * Decode the entry array of `header` (CRC32 verified) into its used partitions: entries whose
 * type GUID is not all zero.
 */
export function parseGptEntries(
  entries: Buffer,
  header: GptHeader,
  diskBytes: number,
  what: string,
): GptPartition[] {
  const at = header.entriesLba * SECTOR_SIZE;
  const length = header.entryCount * header.entrySize;
  if (entries.length < length) throw new FormatError(`${what}: short read of the GPT partition entries`, at);
  const computed = gptCrc32(entries.subarray(0, length));
  if (computed !== header.entriesCrc)
    throw new FormatError(
      `${what}: GPT partition entries checksum mismatch (stored ${hex32(header.entriesCrc)}, computed ${hex32(computed)})`,
      at,
    );
  const parts: GptPartition[] = [];
  for (let i = 0; i < header.entryCount; i++) {
    const e = entries.subarray(i * header.entrySize, i * header.entrySize + ENTRY_SIZE);
    const typeGuid = guidFromBytes(e, 0);
    if (typeGuid === TYPE_UNUSED) continue;
    const where = at + i * header.entrySize;
    const firstLba = u64(e, 32, 'first LBA', where);
    const lastLba = u64(e, 40, 'last LBA', where);
    const number = i + 1;
    if (lastLba < firstLba)
      throw new FormatError(
        `${what}: GPT partition ${number} ends (LBA ${lastLba}) before it starts (LBA ${firstLba})`,
        where,
      );
    const offset = firstLba * SECTOR_SIZE;
    const size = (lastLba - firstLba + 1) * SECTOR_SIZE;
    if (!Number.isSafeInteger(offset + size) || offset + size > diskBytes)
      throw new FormatError(
        `${what}: GPT partition ${number} (bytes ${offset}-${offset + size}) is past the end of the disk (${diskBytes} bytes)`,
        where,
      );
    parts.push({
      number,
      typeGuid,
      guid: guidFromBytes(e, 16),
      firstLba,
      lastLba,
      attributes: e.readBigUInt64LE(48),
      name: entryName(e),
      offset,
      size,
    });
  }
  return parts;
}

export type ReadAt = (offset: number, length: number) => Promise<Buffer>;

/**
 * Read and verify the GPT of a disk of `diskBytes` bytes, as upstream's localdisk backend does
 * (gpt crate 3.1): the primary header at LBA 1 and its entry array must be valid, and so must
 * the backup header in the disk's last sector. Partitions come from the primary table. Any
 * problem is an ERR_FORMAT naming the disk (`what`) and the structure.
 */
export async function readGpt(readAt: ReadAt, diskBytes: number, what: string): Promise<GptTable> {
  const sectors = Math.floor(diskBytes / SECTOR_SIZE);
  if (sectors < 3) throw new FormatError(`${what}: a disk of ${diskBytes} bytes is too small to hold a GPT`);
  const header = parseGptHeader(await readAt(SECTOR_SIZE, SECTOR_SIZE), 1, `${what} (primary)`);
  const backupLba = sectors - 1;
  const backup = parseGptHeader(
    await readAt(backupLba * SECTOR_SIZE, SECTOR_SIZE),
    backupLba,
    `${what} (backup at the last sector, LBA ${backupLba})`,
  );
  const length = header.entryCount * header.entrySize;
  const entriesAt = header.entriesLba * SECTOR_SIZE;
  if (entriesAt + length > diskBytes)
    throw new FormatError(
      `${what} (primary): GPT partition entries are past the end of the disk`,
      SECTOR_SIZE,
    );
  const entries = length === 0 ? Buffer.alloc(0) : await readAt(entriesAt, length);
  const partitions = parseGptEntries(entries, header, diskBytes, `${what} (primary)`);
  return { header, backup, partitions };
}

export interface GptPartitionSpec {
  typeGuid: string;
  guid: string;
  name: string;
  firstLba: number;
  lastLba: number;
}

export interface GptLayout {
  /** Disk size in sectors. */
  sectors: number;
  diskGuid: string;
  partitions: readonly GptPartitionSpec[];
  /** Entries in the array (at least 128, the spec's minimum). */
  entryCount?: number;
}

/** The structures of a GPT disk: bytes for LBA 0 up to the primary entries' end, and for the backup's. */
export interface EncodedGpt {
  head: Buffer;
  tail: Buffer;
  /** Byte offset of `tail` on the disk. */
  tailOffset: number;
  firstUsableLba: number;
  lastUsableLba: number;
}

/** Sectors of an entry array of `count` entries. */
export function entrySectors(count: number): number {
  return Math.ceil((count * ENTRY_SIZE) / SECTOR_SIZE);
}

/** The number of entries an array for `partitions` partitions gets (128 or more, a sector multiple). */
export function entryCountFor(partitions: number): number {
  const perSector = SECTOR_SIZE / ENTRY_SIZE;
  return Math.max(MIN_ENTRIES, Math.ceil(partitions / perSector) * perSector);
}

function encodeName(name: string, into: Buffer): void {
  if (name.length > 36)
    throw new NydusError('ERR_INVALID_ARG', `GPT partition name "${name}" is longer than 36`);
  for (let i = 0; i < name.length; i++) into.writeUInt16LE(name.charCodeAt(i), 56 + i * 2);
}

function encodeHeader(
  l: GptLayout,
  current: number,
  backup: number,
  entriesLba: number,
  entryCount: number,
  entriesCrc: number,
  firstUsable: number,
  lastUsable: number,
): Buffer {
  const h = Buffer.alloc(SECTOR_SIZE);
  h.write(SIGNATURE, 0, 'latin1');
  h.writeUInt32LE(REVISION_1_0, 8);
  h.writeUInt32LE(HEADER_SIZE, 12);
  h.writeBigUInt64LE(BigInt(current), 24);
  h.writeBigUInt64LE(BigInt(backup), 32);
  h.writeBigUInt64LE(BigInt(firstUsable), 40);
  h.writeBigUInt64LE(BigInt(lastUsable), 48);
  guidToBytes(l.diskGuid).copy(h, 56);
  h.writeBigUInt64LE(BigInt(entriesLba), 72);
  h.writeUInt32LE(entryCount, 80);
  h.writeUInt32LE(ENTRY_SIZE, 84);
  h.writeUInt32LE(entriesCrc, 88);
  h.writeUInt32LE(gptCrc32(h.subarray(0, HEADER_SIZE)), 16);
  return h;
}

/**
 * Encode a protective MBR, the primary header and entries (`head`, from byte 0), and the backup
 * entries and header (`tail`, ending at the disk's last byte). Partitions must lie within the
 * usable LBAs and not overlap.
 */
export function encodeGpt(l: GptLayout): EncodedGpt {
  const count = l.entryCount ?? entryCountFor(l.partitions.length);
  if (l.partitions.length > count)
    throw new NydusError(
      'ERR_INVALID_ARG',
      `${l.partitions.length} partitions do not fit ${count} GPT entries`,
    );
  const esec = entrySectors(count);
  const firstUsable = 2 + esec;
  const lastLba = l.sectors - 1;
  const lastUsable = lastLba - esec - 1;
  if (lastUsable < firstUsable)
    throw new NydusError('ERR_INVALID_ARG', `A disk of ${l.sectors} sectors is too small for a GPT`);
  const entries = Buffer.alloc(esec * SECTOR_SIZE);
  const sorted = [...l.partitions].sort((a, b) => a.firstLba - b.firstLba);
  sorted.forEach((p, i) => {
    if (p.firstLba < firstUsable || p.lastLba > lastUsable || p.lastLba < p.firstLba)
      throw new NydusError(
        'ERR_INVALID_ARG',
        `GPT partition "${p.name}" (LBA ${p.firstLba}-${p.lastLba}) is outside the usable LBAs ${firstUsable}-${lastUsable}`,
      );
    const prev = sorted[i - 1];
    if (prev !== undefined && p.firstLba <= prev.lastLba)
      throw new NydusError('ERR_INVALID_ARG', `GPT partitions "${prev.name}" and "${p.name}" overlap`);
  });
  l.partitions.forEach((p, i) => {
    const e = entries.subarray(i * ENTRY_SIZE, (i + 1) * ENTRY_SIZE);
    guidToBytes(p.typeGuid).copy(e, 0);
    guidToBytes(p.guid).copy(e, 16);
    e.writeBigUInt64LE(BigInt(p.firstLba), 32);
    e.writeBigUInt64LE(BigInt(p.lastLba), 40);
    encodeName(p.name, e);
  });
  const crc = gptCrc32(entries.subarray(0, count * ENTRY_SIZE));

  const head = Buffer.alloc((2 + esec) * SECTOR_SIZE);
  // Protective MBR: one partition of type 0xEE covering the disk (capped at 2^32-1 sectors).
  const mbr = head.subarray(0, SECTOR_SIZE);
  const pe = mbr.subarray(446, 462);
  pe[0] = 0x00;
  pe.writeUIntLE(0x000200, 1, 3); // CHS of LBA 1
  pe[4] = 0xee;
  pe.writeUIntLE(0xffffff, 5, 3);
  pe.writeUInt32LE(1, 8);
  pe.writeUInt32LE(Math.min(l.sectors - 1, 0xffffffff), 12);
  mbr.writeUInt16LE(0xaa55, 510);
  encodeHeader(l, 1, lastLba, 2, count, crc, firstUsable, lastUsable).copy(head, SECTOR_SIZE);
  entries.copy(head, 2 * SECTOR_SIZE);

  const backupEntriesLba = lastLba - esec;
  const tail = Buffer.alloc((esec + 1) * SECTOR_SIZE);
  entries.copy(tail, 0);
  encodeHeader(l, lastLba, 1, backupEntriesLba, count, crc, firstUsable, lastUsable).copy(
    tail,
    esec * SECTOR_SIZE,
  );
  return {
    head,
    tail,
    tailOffset: backupEntriesLba * SECTOR_SIZE,
    firstUsableLba: firstUsable,
    lastUsableLba: lastUsable,
  };
}
