import { errorText, FormatError, NydusError } from '../errors/errors.js';
import { BLOCK, decodeHeader, isZeroBlock, TarType, type TarHeader } from './header.js';
import { decodePaxRecords, MAX_PAX_SIZE, PAX_XATTR_PREFIX } from './pax.js';

/** A tar entry with its extended headers (PAX, GNU long names) already applied. */
export interface TarReadEntry {
  path: Buffer;
  type: number;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  mtimeNsec: number;
  linkname: Buffer;
  devmajor: number;
  devminor: number;
  xattrs: { name: Buffer; value: Buffer }[];
  /** Offset of the entry's header in the stream, for error messages. */
  offset: number;
}

/**
 * An entry's path as a relative name (UTF-8): without leading "./" or "/" and without a
 * trailing "/", so "./a/b/", "/a/b" and "a/b" are all "a/b".
 */
export function relativeEntryName(path: Buffer): string {
  return path
    .toString('utf8')
    .replace(/^(\.\/|\/)+/, '')
    .replace(/\/+$/, '');
}

/** Longest GNU long name / link we accept. */
export const MAX_LONG_NAME = 64 * 1024;

/**
 * A tar archive in a file, read at positions: what the reader skips (entry data the caller
 * reads by itself, see `TarReader.dataOffset`) is never read.
 */
export interface TarFile {
  /** Bytes [pos, pos + n) of the file: fewer only at its end. */
  read(pos: number, n: number): Promise<Buffer>;
  /** The file's size. */
  readonly size: number;
  /** Bytes asked for per read. */
  readonly readSize: number;
}

/**
 * A stream of buffers that can also be read straight into a caller's buffer (a pipe): the data
 * of a large entry then goes from the source into the caller's buffer with no copy in between.
 * Both read the same stream in turn (the reader never has a read of either kind in flight when
 * it starts another).
 */
export interface TarDirectInput extends AsyncIterable<Buffer> {
  /** Up to `n` bytes of the stream into `buf` at `at` (0 at its end). */
  readInto(buf: Buffer, at: number, n: number): Promise<number>;
}

/** Input of a TarReader: a stream of buffers (that may read directly), or a file read at positions. */
export type TarInput = AsyncIterable<Buffer | Uint8Array | string> | TarDirectInput | TarFile;

function isTarFile(src: TarInput): src is TarFile {
  return typeof (src as Partial<TarFile>).read === 'function' && !(Symbol.asyncIterator in src);
}

/**
 * Pull-based byte reader over an async iterable of buffers: the tar reader asks for exact
 * amounts, so memory stays bounded by one source chunk plus what the caller asks for.
 */
class ByteSource {
  readonly #it: AsyncIterator<Buffer | Uint8Array | string> | undefined;
  /** The file read at positions, instead of `#it`. */
  readonly file: TarFile | undefined;
  /** Where the file's next read starts (the end of what `#buf` holds). */
  #filePos = 0;
  #buf: Buffer = Buffer.alloc(0);
  #pos = 0;
  #done = false;
  /** Bytes consumed so far. */
  offset = 0;

  /** Reads straight into a caller's buffer (a `TarDirectInput`). */
  readonly #into: TarDirectInput['readInto'] | undefined;

  constructor(src: TarInput) {
    if (isTarFile(src)) this.file = src;
    else {
      this.#it = src[Symbol.asyncIterator]();
      const into = (src as Partial<TarDirectInput>).readInto;
      if (typeof into === 'function') this.#into = into.bind(src);
    }
  }

  /** Whether `readInto` reads from the source itself once the buffered bytes are used. */
  get direct(): boolean {
    return this.#into !== undefined;
  }

  /**
   * Up to `n` bytes (n > 0) into `buf` at `at`: what is buffered first, then, with a direct
   * input, straight from the source. 0 only at the end of the stream.
   */
  async readInto(buf: Buffer, at: number, n: number): Promise<number> {
    if (this.#pos >= this.#buf.length && this.#into !== undefined && !this.#done) {
      let got: number;
      try {
        got = await this.#into(buf, at, n);
      } catch (e) {
        if (e instanceof NydusError) throw e;
        throw new FormatError(`Cannot read the tar stream: ${errorText(e)}`, this.offset, { cause: e });
      }
      if (got === 0) this.#done = true;
      this.offset += got;
      return got;
    }
    const p = await this.some(n);
    p.copy(buf, at);
    return p.length;
  }

  /** Bytes buffered and not consumed yet. */
  get buffered(): number {
    return this.#buf.length - this.#pos;
  }

  async #next(): Promise<IteratorResult<Buffer | Uint8Array | string>> {
    if (this.#it !== undefined) return this.#it.next();
    const f = this.file!;
    if (this.#filePos >= f.size) return { done: true, value: undefined };
    const b = await f.read(this.#filePos, Math.min(f.readSize, f.size - this.#filePos));
    // A file that got shorter ends here; the reader reports what it misses.
    if (b.length === 0) return { done: true, value: undefined };
    this.#filePos += b.length;
    return { done: false, value: b };
  }

  async #fill(): Promise<boolean> {
    if (this.#done) return false;
    let r: IteratorResult<Buffer | Uint8Array | string>;
    try {
      r = await this.#next();
    } catch (e) {
      if (e instanceof NydusError) throw e;
      throw new FormatError(`Cannot read the tar stream: ${errorText(e)}`, this.offset, { cause: e });
    }
    if (r.done === true) {
      this.#done = true;
      return false;
    }
    const chunk =
      typeof r.value === 'string'
        ? Buffer.from(r.value)
        : Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength);
    this.#buf = this.#pos < this.#buf.length ? Buffer.concat([this.#buf.subarray(this.#pos), chunk]) : chunk;
    this.#pos = 0;
    return true;
  }

  /** Up to `max` bytes (at least 1) or an empty buffer at the end of the stream. */
  async some(max: number): Promise<Buffer> {
    while (this.#pos >= this.#buf.length) if (!(await this.#fill())) return Buffer.alloc(0);
    const n = Math.min(max, this.#buf.length - this.#pos);
    const out = this.#buf.subarray(this.#pos, this.#pos + n);
    this.#pos += n;
    this.offset += n;
    return out;
  }

  /** Exactly `n` bytes, or fewer only at the end of the stream. */
  async exact(n: number): Promise<Buffer> {
    const first = await this.some(n);
    if (first.length === n || first.length === 0) return Buffer.from(first);
    const parts = [Buffer.from(first)];
    let got = first.length;
    while (got < n) {
      const p = await this.some(n - got);
      if (p.length === 0) break;
      parts.push(Buffer.from(p));
      got += p.length;
    }
    return Buffer.concat(parts);
  }

  /**
   * `n` bytes as a view of the buffered input, consumed, when they are all buffered already;
   * undefined (nothing consumed) otherwise. The view is not copied: the input's buffers are
   * never written again, but a caller that keeps the bytes keeps the whole input buffer.
   */
  takeIfBuffered(n: number): Buffer | undefined {
    if (this.#buf.length - this.#pos < n) return undefined;
    const out = this.#buf.subarray(this.#pos, this.#pos + n);
    this.#pos += n;
    this.offset += n;
    return out;
  }

  async skip(n: number): Promise<number> {
    let left = n;
    const f = this.file;
    if (f !== undefined && left > this.buffered) {
      // A file: what is not buffered is passed over, not read (as far as the file goes).
      left -= this.buffered;
      this.offset += this.buffered;
      this.#buf = Buffer.alloc(0);
      this.#pos = 0;
      const over = Math.min(left, Math.max(0, f.size - this.#filePos));
      this.#filePos += over;
      this.offset += over;
      return n - left + over;
    }
    while (left > 0) {
      const p = await this.some(left);
      if (p.length === 0) break;
      left -= p.length;
    }
    return n - left;
  }
}

function parseTime(v: Buffer, at: number): { sec: number; nsec: number } {
  const m = /^(-?\d+)(?:\.(\d+))?$/.exec(v.toString('ascii'));
  if (m === null) throw new FormatError(`Bad PAX mtime "${v.toString('ascii')}"`, at);
  const sec = Number(m[1]);
  const nsec = m[2] === undefined ? 0 : Number(m[2].slice(0, 9).padEnd(9, '0'));
  return { sec: sec < 0 ? 0 : sec, nsec };
}

function parseNum(v: Buffer, what: string, at: number): number {
  const s = v.toString('ascii');
  if (!/^\d+$/.test(s) || Number(s) > Number.MAX_SAFE_INTEGER)
    throw new FormatError(`Bad PAX ${what} "${s}"`, at);
  return Number(s);
}

/**
 * Read a tar stream entry by entry. The caller must consume each entry's data (through
 * `data()`) before asking for the next entry; unconsumed data is skipped.
 */
export class TarReader {
  readonly #src: ByteSource;
  #pending = 0;
  #padding = 0;
  /** Data bytes of the current entry (what `#pending` starts at). */
  #entrySize = 0;

  constructor(src: TarInput) {
    this.#src = new ByteSource(src);
  }

  get offset(): number {
    return this.#src.offset;
  }

  /**
   * For a tar file (a `TarFile` input), the offset in it of the current entry's data when none
   * of it has been consumed and at least `min` bytes of it are not buffered: the caller may
   * read it from the file itself, and the reader passes over it without reading it. Undefined
   * otherwise (a stream, data already consumed or buffered, or a file too short to hold it).
   */
  dataOffset(min = 0): number | undefined {
    const f = this.#src.file;
    const n = this.#pending;
    if (f === undefined || n === 0 || n !== this.#entrySize) return undefined;
    if (n - this.#src.buffered < min) return undefined;
    const at = this.#src.offset;
    return at + n <= f.size ? at : undefined;
  }

  async #block(what: string): Promise<Buffer | undefined> {
    const b = await this.#src.exact(BLOCK);
    if (b.length === 0) return undefined;
    if (b.length < BLOCK)
      throw new FormatError(
        `Truncated tar: ${what} ends after ${b.length} of 512 bytes`,
        this.#src.offset - b.length,
      );
    return b;
  }

  async #body(size: number, max: number, what: string, at: number): Promise<Buffer> {
    if (size > max) throw new FormatError(`Tar ${what} of ${size} bytes is larger than ${max}`, at);
    const b = await this.#src.exact(size);
    if (b.length < size) throw new FormatError(`Truncated tar: ${what} needs ${size} bytes`, at);
    const pad = (BLOCK - (size % BLOCK)) % BLOCK;
    if ((await this.#src.skip(pad)) < pad) throw new FormatError(`Truncated tar: ${what} padding`, at);
    return b;
  }

  /** The next entry, or undefined at the end of the archive. */
  async next(): Promise<TarReadEntry | undefined> {
    const left = this.#pending + this.#padding;
    if (left > 0 && this.#src.takeIfBuffered(left) !== undefined) {
      this.#pending = 0;
      this.#padding = 0;
    } else await this.#finishData();
    let pax: Map<string, Buffer> | undefined;
    let globals: Map<string, Buffer> | undefined;
    let longName: Buffer | undefined;
    let longLink: Buffer | undefined;
    for (;;) {
      const at = this.#src.offset;
      // decodeHeader copies what it keeps: a view of the buffered input does.
      const block = this.#src.takeIfBuffered(BLOCK) ?? (await this.#block('header'));
      if (block === undefined) {
        if (pax !== undefined || longName !== undefined || longLink !== undefined) {
          throw new FormatError('Truncated tar: extended header without its entry', at);
        }
        return undefined;
      }
      if (isZeroBlock(block)) {
        // End of archive: a second zero block normally follows; whatever comes after is ignored.
        return undefined;
      }
      const h: TarHeader = decodeHeader(block, at);
      switch (h.type) {
        case TarType.PAX:
        case TarType.PAX_GLOBAL: {
          const body = await this.#body(h.size, MAX_PAX_SIZE, 'PAX header', at);
          const target = h.type === TarType.PAX ? (pax ??= new Map()) : (globals ??= new Map());
          for (const r of decodePaxRecords(body, at + BLOCK)) target.set(r.key, r.value);
          continue;
        }
        case TarType.GNU_LONGNAME:
          longName = cut(await this.#body(h.size, MAX_LONG_NAME, 'GNU long name', at));
          continue;
        case TarType.GNU_LONGLINK:
          longLink = cut(await this.#body(h.size, MAX_LONG_NAME, 'GNU long link', at));
          continue;
        case TarType.GNU_SPARSE:
          throw new NydusError(
            'ERR_UNSUPPORTED',
            `Tar entry "${(longName ?? h.name).toString()}" is a GNU sparse file, which is not supported`,
          );
        default:
          break;
      }
      // Most entries have no extended records: no merged map for them.
      const merged =
        globals === undefined ? pax : pax === undefined ? globals : new Map([...globals, ...pax]);
      const entry: TarReadEntry = {
        path: merged?.get('path') ?? longName ?? h.name,
        type: h.type === TarType.OLD_FILE || h.type === TarType.CONTIGUOUS ? TarType.FILE : h.type,
        mode: h.mode,
        uid: h.uid,
        gid: h.gid,
        size: h.size,
        mtime: h.mtime,
        mtimeNsec: 0,
        linkname: merged?.get('linkpath') ?? longLink ?? h.linkname,
        devmajor: h.devmajor,
        devminor: h.devminor,
        xattrs: [],
        offset: at,
      };
      // Old-style archives mark directories only by a trailing slash.
      if (h.type === TarType.OLD_FILE && entry.path[entry.path.length - 1] === 0x2f) entry.type = TarType.DIR;
      if (merged !== undefined)
        for (const [k, v] of merged) {
          if (k === 'size') entry.size = parseNum(v, 'size', at);
          else if (k === 'uid') entry.uid = parseNum(v, 'uid', at);
          else if (k === 'gid') entry.gid = parseNum(v, 'gid', at);
          else if (k === 'mtime') {
            const t = parseTime(v, at);
            entry.mtime = t.sec;
            entry.mtimeNsec = t.nsec;
          } else if (k.startsWith(PAX_XATTR_PREFIX)) {
            entry.xattrs.push({ name: Buffer.from(k.slice(PAX_XATTR_PREFIX.length), 'latin1'), value: v });
          } else if (k.startsWith('GNU.sparse')) {
            throw new NydusError(
              'ERR_UNSUPPORTED',
              `Tar entry "${entry.path.toString()}" is a sparse file, which is not supported`,
            );
          }
        }
      // The header's size says how many data bytes follow, whatever the type; only regular
      // files expose them as content.
      this.#pending = entry.size;
      this.#entrySize = entry.size;
      this.#padding = (BLOCK - (this.#pending % BLOCK)) % BLOCK;
      if (entry.type !== TarType.FILE) entry.size = 0;
      return entry;
    }
  }

  /**
   * The current entry's whole data when the input has it buffered already, consumed (a view of
   * the input: copy what you keep); undefined otherwise, and then `data()` reads it.
   */
  takeData(): Buffer | undefined {
    const d = this.#src.takeIfBuffered(this.#pending);
    if (d === undefined) return undefined;
    this.#pending = 0;
    if (this.#src.takeIfBuffered(this.#padding) !== undefined) this.#padding = 0;
    return d;
  }

  /** Whether `dataInto` reads an entry's data straight from the input (see `TarDirectInput`). */
  get direct(): boolean {
    return this.#src.direct;
  }

  /** Bytes of the current entry's data not consumed yet. */
  get pending(): number {
    return this.#pending;
  }

  /**
   * Up to `n` bytes of the current entry's data into `buf` at `at` (0 once it is all consumed):
   * with a direct input, what is not buffered comes straight from it, with no copy.
   */
  async dataInto(buf: Buffer, at: number, n: number): Promise<number> {
    const want = Math.min(n, this.#pending);
    if (want <= 0) return 0;
    const got = await this.#src.readInto(buf, at, want);
    if (got === 0)
      throw new FormatError(`Truncated tar: entry data ends ${this.#pending} bytes early`, this.#src.offset);
    this.#pending -= got;
    return got;
  }

  /** The current entry's data, in pieces of at most `max` bytes. */
  async *data(max = 1 << 20): AsyncGenerator<Buffer> {
    while (this.#pending > 0) {
      const p = await this.#src.some(Math.min(max, this.#pending));
      if (p.length === 0)
        throw new FormatError(
          `Truncated tar: entry data ends ${this.#pending} bytes early`,
          this.#src.offset,
        );
      this.#pending -= p.length;
      yield p;
    }
    await this.#finishData();
  }

  async #finishData(): Promise<void> {
    const n = this.#pending + this.#padding;
    if (n === 0) return;
    const skipped = await this.#src.skip(n);
    this.#pending = 0;
    this.#padding = 0;
    if (skipped < n) throw new FormatError('Truncated tar: entry data ends early', this.#src.offset);
  }
}

/** GNU long names are NUL terminated inside their data. */
function cut(b: Buffer): Buffer {
  const z = b.indexOf(0);
  return z < 0 ? b : b.subarray(0, z);
}
