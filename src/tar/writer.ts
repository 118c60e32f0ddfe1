import type { Writable } from 'node:stream';
import { once } from 'node:events';
import { NydusError } from '../errors/errors.js';
import { BLOCK, encodeHeader, TarType, type TarHeader } from './header.js';
import { encodePaxRecords, PAX_XATTR_PREFIX, type PaxRecord } from './pax.js';

export interface TarEntry {
  /** Path inside the archive, raw bytes, no leading "/"; directories without a trailing "/". */
  path: Buffer;
  type: number;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  mtimeNsec: number;
  linkname?: Buffer;
  devmajor?: number;
  devminor?: number;
  xattrs?: readonly { name: Buffer; value: Buffer }[];
}

const ZERO = Buffer.alloc(BLOCK);

/**
 * Writes a POSIX (pax) tar stream with backpressure. Anything the ustar header cannot carry
 * exactly (long or non-fitting paths and link targets, big sizes or ids, sub-second mtimes,
 * xattrs) goes into a PAX extended header in front of the entry, with raw-byte values.
 */
export class TarWriter {
  readonly #out: Writable;
  #written = 0;

  constructor(out: Writable) {
    this.#out = out;
  }

  get bytesWritten(): number {
    return this.#written;
  }

  async #write(buf: Buffer): Promise<void> {
    this.#written += buf.length;
    if (!this.#out.write(buf)) await once(this.#out, 'drain');
  }

  /** Add an entry; for regular files `data` yields exactly `size` bytes. */
  async add(entry: TarEntry, data?: AsyncIterable<Buffer> | Iterable<Buffer>): Promise<void> {
    const isDir = entry.type === TarType.DIR;
    const path =
      isDir && entry.path[entry.path.length - 1] !== 0x2f
        ? Buffer.concat([entry.path, Buffer.from('/')])
        : entry.path;
    const linkname = entry.linkname ?? Buffer.alloc(0);
    const header: TarHeader = {
      name: path,
      mode: entry.mode,
      uid: entry.uid,
      gid: entry.gid,
      size: entry.type === TarType.FILE ? entry.size : 0,
      mtime: entry.mtime,
      type: entry.type,
      linkname,
      uname: Buffer.alloc(0),
      gname: Buffer.alloc(0),
      devmajor: entry.devmajor ?? 0,
      devminor: entry.devminor ?? 0,
    };
    const { block, overflow } = encodeHeader(header);
    const pax: PaxRecord[] = [];
    if (overflow.path) pax.push({ key: 'path', value: path });
    if (overflow.linkpath) pax.push({ key: 'linkpath', value: linkname });
    if (overflow.size) pax.push({ key: 'size', value: Buffer.from(String(header.size)) });
    if (overflow.uid) pax.push({ key: 'uid', value: Buffer.from(String(entry.uid)) });
    if (overflow.gid) pax.push({ key: 'gid', value: Buffer.from(String(entry.gid)) });
    if (overflow.mtime || entry.mtimeNsec !== 0) {
      const frac = entry.mtimeNsec === 0 ? '' : `.${String(entry.mtimeNsec).padStart(9, '0')}`;
      pax.push({ key: 'mtime', value: Buffer.from(`${entry.mtime}${frac}`) });
    }
    for (const x of entry.xattrs ?? []) {
      pax.push({ key: PAX_XATTR_PREFIX + x.name.toString('latin1'), value: x.value });
    }
    if (pax.length > 0) {
      const body = encodePaxRecords(pax);
      const paxName = Buffer.concat([
        Buffer.from('PaxHeaders/'),
        path.subarray(Math.max(0, path.length - 80)),
      ]);
      const { block: ph } = encodeHeader({
        ...header,
        name: paxName.subarray(0, 100),
        type: TarType.PAX,
        size: body.length,
        linkname: Buffer.alloc(0),
        mtime: Math.min(entry.mtime, 0o77777777777),
        uid: 0,
        gid: 0,
        devmajor: 0,
        devminor: 0,
      });
      await this.#write(ph);
      await this.#write(body);
      await this.#pad(body.length);
    }
    await this.#write(block);
    if (header.size > 0) {
      let n = 0;
      for await (const chunk of data ?? []) {
        n += chunk.length;
        if (n > header.size) break;
        await this.#write(chunk);
      }
      if (n !== header.size) {
        throw new NydusError(
          'ERR_IO',
          `Tar entry "${path.toString()}" produced ${n} bytes, expected ${header.size}`,
        );
      }
      await this.#pad(header.size);
    }
  }

  async #pad(size: number): Promise<void> {
    const r = size % BLOCK;
    if (r !== 0) await this.#write(ZERO.subarray(0, BLOCK - r));
  }

  /** Write the two zero blocks that end an archive. */
  async finish(): Promise<void> {
    await this.#write(ZERO);
    await this.#write(ZERO);
  }
}
