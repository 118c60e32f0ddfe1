import { FormatError, NydusError } from '../errors/errors.js';
import { Cursor } from '../util/cursor.js';
import { Errno, InitFlag, MODIFYING_OPCODES, Opcode, Size, opcodeName } from './abi.js';
import { FuseRequestError } from './errors.js';
import { putId, putU16, putU32, putU64 } from './wire.js';

/**
 * Requests the kernel writes to /dev/fuse: decoding for the daemon, encoding for tests and the
 * in-process harness. One read of /dev/fuse yields exactly one request, so a buffer holds one
 * message and its `len` must be the buffer's length.
 *
 * fuse_in_header, 40 bytes, starts every request:
 *
 * | off | type | field        | notes                                                    |
 * |-----|------|--------------|----------------------------------------------------------|
 * | 0   | u32  | len          | the whole request: header, op arguments, extensions      |
 * | 4   | u32  | opcode       | enum fuse_opcode                                         |
 * | 8   | u64  | unique       | echoed in the reply; bit 63 marks a resend (7.40)        |
 * | 16  | u64  | nodeid       | the inode the op is about (1 = root; 0 for INIT)         |
 * | 24  | u32  | uid          | caller's fsuid                                           |
 * | 28  | u32  | gid          | caller's fsgid                                           |
 * | 32  | u32  | pid          | caller's tgid                                            |
 * | 36  | u16  | total_extlen | 7.38: extensions after the op arguments, in 8-byte units |
 * | 38  | u16  | padding      |                                                          |
 *
 * The op arguments follow at byte 40; their layouts (offsets from the start of the request)
 * are next to each decoder below. Extensions (security contexts, supplementary groups) come
 * only with create-type ops and only when negotiated; they are cut off the arguments and kept
 * raw for the ops this layer does not decode.
 *
 * Decoded requests never alias the input buffer (names and raw bodies are copied), so the
 * daemon may reuse its read buffer at once.
 */

/** The fields of fuse_in_header every request carries. */
export interface RequestHeader {
  readonly opcode: number;
  readonly unique: bigint;
  readonly nodeid: bigint;
  readonly uid: number;
  readonly gid: number;
  readonly pid: number;
}

/** fuse_in_header as on the wire. */
export interface InHeader extends RequestHeader {
  readonly len: number;
  readonly totalExtlen: number;
}

interface Req<Op extends string, Code extends number> extends RequestHeader {
  readonly op: Op;
  readonly opcode: Code;
}

/**
 * fuse_init_in, 64 bytes (16 before 7.36):
 *
 * | off | type    | field         |
 * |-----|---------|---------------|
 * | 40  | u32     | major         |
 * | 44  | u32     | minor         |
 * | 48  | u32     | max_readahead |
 * | 52  | u32     | flags         |
 * | 56  | u32     | flags2        | (7.36) bits 32..63, valid when flags has FUSE_INIT_EXT
 * | 60  | u32[11] | unused        |
 *
 * Only major and minor are required: a kernel with another major version may send another
 * shape, and the answer to it needs nothing else.
 */
export interface InitIn {
  readonly major: number;
  readonly minor: number;
  readonly maxReadahead: number;
  /** flags | flags2 << 32 (flags2 only when FUSE_INIT_EXT is set). */
  readonly flags: bigint;
}
export interface InitRequest extends Req<'init', typeof Opcode.INIT>, InitIn {}

/** LOOKUP: the name, then a NUL (at 40). */
export interface LookupRequest extends Req<'lookup', typeof Opcode.LOOKUP> {
  /** Raw name bytes (not necessarily UTF-8), without the NUL. */
  readonly name: Buffer;
}

/** fuse_forget_in: | 40 | u64 | nlookup |. No reply. */
export interface ForgetRequest extends Req<'forget', typeof Opcode.FORGET> {
  readonly nlookup: number;
}

/**
 * fuse_batch_forget_in: | 40 | u32 | count | 44 | u32 | dummy |, then `count` fuse_forget_one
 * of 16 bytes: | +0 | u64 | nodeid | +8 | u64 | nlookup |. The request's own nodeid is 0. No
 * reply.
 */
export interface ForgetOne {
  readonly nodeid: bigint;
  readonly nlookup: number;
}
export interface BatchForgetRequest extends Req<'batch-forget', typeof Opcode.BATCH_FORGET> {
  readonly forgets: readonly ForgetOne[];
}

/** fuse_getattr_in: | 40 | u32 | getattr_flags | 44 | u32 | dummy | 48 | u64 | fh |. */
export interface GetattrRequest extends Req<'getattr', typeof Opcode.GETATTR> {
  readonly getattrFlags: number;
  /** Valid when getattrFlags has GETATTR_FH. */
  readonly fh: bigint;
}

export type ReadlinkRequest = Req<'readlink', typeof Opcode.READLINK>;

/** fuse_open_in: | 40 | u32 | flags (open(2) flags) | 44 | u32 | open_flags (FUSE_OPEN_*) |. */
export interface OpenIn {
  readonly flags: number;
  readonly openFlags: number;
}
export interface OpenRequest extends Req<'open', typeof Opcode.OPEN>, OpenIn {}
export interface OpendirRequest extends Req<'opendir', typeof Opcode.OPENDIR>, OpenIn {}

/**
 * fuse_read_in, 40 bytes, for READ, READDIR and READDIRPLUS:
 *
 * | off | type | field      |
 * |-----|------|------------|
 * | 40  | u64  | fh         |
 * | 48  | u64  | offset     | READDIR*: the `off` cookie of the last entry already returned
 * | 56  | u32  | size       | most bytes the reply may carry
 * | 60  | u32  | read_flags | READ_LOCKOWNER
 * | 64  | u64  | lock_owner |
 * | 72  | u32  | flags      | open(2) flags of the file
 * | 76  | u32  | padding    |
 */
export interface ReadIn {
  readonly fh: bigint;
  readonly offset: number;
  readonly size: number;
  readonly readFlags: number;
  readonly lockOwner: bigint;
  readonly flags: number;
}
export interface ReadRequest extends Req<'read', typeof Opcode.READ>, ReadIn {}
export interface ReaddirRequest extends Req<'readdir', typeof Opcode.READDIR>, ReadIn {}
export interface ReaddirplusRequest extends Req<'readdirplus', typeof Opcode.READDIRPLUS>, ReadIn {}

/**
 * fuse_release_in, 24 bytes, for RELEASE and RELEASEDIR:
 * | 40 | u64 | fh | 48 | u32 | flags | 52 | u32 | release_flags | 56 | u64 | lock_owner |
 */
export interface ReleaseIn {
  readonly fh: bigint;
  readonly flags: number;
  readonly releaseFlags: number;
  readonly lockOwner: bigint;
}
export interface ReleaseRequest extends Req<'release', typeof Opcode.RELEASE>, ReleaseIn {}
export interface ReleasedirRequest extends Req<'releasedir', typeof Opcode.RELEASEDIR>, ReleaseIn {}

export type StatfsRequest = Req<'statfs', typeof Opcode.STATFS>;

/**
 * GETXATTR: fuse_getxattr_in | 40 | u32 | size | 44 | u32 | padding |, then the name and a NUL
 * (at 48). size 0 asks for the value's length only.
 */
export interface GetxattrRequest extends Req<'getxattr', typeof Opcode.GETXATTR> {
  readonly size: number;
  readonly name: Buffer;
}

/** LISTXATTR: fuse_getxattr_in only. size 0 asks for the list's length only. */
export interface ListxattrRequest extends Req<'listxattr', typeof Opcode.LISTXATTR> {
  readonly size: number;
}

/** fuse_access_in: | 40 | u32 | mask (R_OK 4, W_OK 2, X_OK 1; 0 = F_OK) | 44 | u32 | padding |. */
export interface AccessRequest extends Req<'access', typeof Opcode.ACCESS> {
  readonly mask: number;
}

/** fuse_flush_in: | 40 | u64 | fh | 48 | u32 | unused | 52 | u32 | padding | 56 | u64 | lock_owner |. */
export interface FlushRequest extends Req<'flush', typeof Opcode.FLUSH> {
  readonly fh: bigint;
  readonly lockOwner: bigint;
}

/**
 * fuse_interrupt_in: | 40 | u64 | unique | of the request to interrupt. The INTERRUPT's own
 * unique has FUSE_INT_REQ_BIT set; it needs no reply.
 */
export interface InterruptRequest extends Req<'interrupt', typeof Opcode.INTERRUPT> {
  readonly target: bigint;
}

export type DestroyRequest = Req<'destroy', typeof Opcode.DESTROY>;

/** An op that would change the file system (MODIFYING_OPCODES): answered EROFS. */
export interface ModifyRequest extends RequestHeader {
  readonly op: 'modify';
  /** The op arguments, undecoded. */
  readonly body: Buffer;
  /** Extension bytes (a multiple of 8), empty when none. */
  readonly ext: Buffer;
}

/** Any other opcode, known to fuse.h or not: answered ENOSYS. */
export interface UnsupportedRequest extends RequestHeader {
  readonly op: 'unsupported';
  readonly body: Buffer;
  readonly ext: Buffer;
}

export type FuseRequest =
  | InitRequest
  | LookupRequest
  | ForgetRequest
  | BatchForgetRequest
  | GetattrRequest
  | ReadlinkRequest
  | OpenRequest
  | ReadRequest
  | ReleaseRequest
  | OpendirRequest
  | ReaddirRequest
  | ReaddirplusRequest
  | ReleasedirRequest
  | StatfsRequest
  | GetxattrRequest
  | ListxattrRequest
  | AccessRequest
  | FlushRequest
  | InterruptRequest
  | DestroyRequest
  | ModifyRequest
  | UnsupportedRequest;

type TypedRequest = Exclude<FuseRequest, ModifyRequest | UnsupportedRequest>;

/** The opcode of every op this layer decodes. */
export const OPCODE_OF_OP: {
  readonly [K in TypedRequest['op']]: Extract<TypedRequest, { op: K }>['opcode'];
} = {
  init: Opcode.INIT,
  lookup: Opcode.LOOKUP,
  forget: Opcode.FORGET,
  'batch-forget': Opcode.BATCH_FORGET,
  getattr: Opcode.GETATTR,
  readlink: Opcode.READLINK,
  open: Opcode.OPEN,
  read: Opcode.READ,
  release: Opcode.RELEASE,
  opendir: Opcode.OPENDIR,
  readdir: Opcode.READDIR,
  readdirplus: Opcode.READDIRPLUS,
  releasedir: Opcode.RELEASEDIR,
  statfs: Opcode.STATFS,
  getxattr: Opcode.GETXATTR,
  listxattr: Opcode.LISTXATTR,
  access: Opcode.ACCESS,
  flush: Opcode.FLUSH,
  interrupt: Opcode.INTERRUPT,
  destroy: Opcode.DESTROY,
};

const DECODED_OPCODES: ReadonlySet<number> = new Set(Object.values(OPCODE_OF_OP));

/**
 * A u64 quantity above 2^53 - 1. The kernel only sends such values when user space asks for
 * them (a directory or direct-I/O file seeked past any real size), so the daemon answers
 * EINVAL instead of EIO.
 */
class ValueRangeError extends FormatError {}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

function quantity(c: Cursor, what: string): number {
  const at = c.base + c.pos;
  const v = c.big64(what);
  if (v > MAX_SAFE) throw new ValueRangeError(`Value of ${what} is too large: ${v}`, at);
  return Number(v);
}

/** A NUL-terminated name that fills the rest of the arguments. */
function cName(c: Cursor, what: string): Buffer {
  const at = c.base + c.pos;
  const rest = c.bytes(c.remaining, what);
  const nul = rest.indexOf(0);
  if (nul < 0) throw new FormatError(`The ${what} (${rest.length} bytes) is not NUL-terminated`, at);
  if (nul === 0) throw new FormatError(`The ${what} is empty`, at);
  if (nul !== rest.length - 1)
    throw new FormatError(`The ${what} has ${rest.length - 1 - nul} bytes after its NUL`, at + nul);
  return Buffer.from(rest.subarray(0, nul));
}

/**
 * Decode fuse_in_header. Fails when the buffer is shorter than the header, when `len` is not the
 * buffer's length, or when the extensions claim more bytes than follow the header.
 */
export function decodeInHeader(buf: Buffer): InHeader {
  const n = buf.length;
  if (n < Size.IN_HEADER)
    throw new FuseRequestError(
      `Truncated FUSE request: ${n} bytes, the header alone needs ${Size.IN_HEADER}`,
      0,
      headerContext(buf),
    );
  const len = buf.readUInt32LE(0);
  if (len !== n)
    throw new FuseRequestError(
      `FUSE request length ${len} does not match the ${n} bytes read`,
      0,
      headerContext(buf),
    );
  const totalExtlen = buf.readUInt16LE(36);
  if (totalExtlen * 8 > len - Size.IN_HEADER)
    throw new FuseRequestError(
      `FUSE request extensions of ${totalExtlen * 8} bytes exceed the ${len - Size.IN_HEADER} after the header`,
      36,
      headerContext(buf),
    );
  return {
    len,
    opcode: buf.readUInt32LE(4),
    unique: buf.readBigUInt64LE(8),
    nodeid: buf.readBigUInt64LE(16),
    uid: buf.readUInt32LE(24),
    gid: buf.readUInt32LE(28),
    pid: buf.readUInt32LE(32),
    totalExtlen,
  };
}

/** What of the header a short or inconsistent request still tells (for its error answer). */
function headerContext(buf: Buffer): { opcode?: number; unique?: bigint } {
  return {
    ...(buf.length >= 8 ? { opcode: buf.readUInt32LE(4) } : {}),
    ...(buf.length >= 16 ? { unique: buf.readBigUInt64LE(8) } : {}),
  };
}

/** u64 at `off` as a number when it is a safe integer, else -1. */
function safeU64(buf: Buffer, off: number): number {
  const hi = buf.readUInt32LE(off + 4);
  return hi > 0x1f_ffff ? -1 : hi * 0x1_0000_0000 + buf.readUInt32LE(off);
}

/**
 * The ops a daemon serves most (READ, READDIR*, LOOKUP, GETATTR, READLINK, STATFS), decoded straight
 * from the buffer into one object literal each; undefined when the arguments are short or a
 * value out of range, for `decodeArgs` to decode (and to fail) the general way.
 */
function decodeHot(buf: Buffer, opcode: number, argsEnd: number): FuseRequest | undefined {
  const H = Size.IN_HEADER;
  switch (opcode) {
    case Opcode.READ:
    case Opcode.READDIR:
    case Opcode.READDIRPLUS: {
      if (argsEnd - H < Size.READ_IN) return undefined;
      const offset = safeU64(buf, H + 8);
      if (offset < 0) return undefined;
      const unique = buf.readBigUInt64LE(8);
      const nodeid = buf.readBigUInt64LE(16);
      const uid = buf.readUInt32LE(24);
      const gid = buf.readUInt32LE(28);
      const pid = buf.readUInt32LE(32);
      const fh = buf.readBigUInt64LE(H);
      const size = buf.readUInt32LE(H + 16);
      const readFlags = buf.readUInt32LE(H + 20);
      const lockOwner = buf.readBigUInt64LE(H + 24);
      const flags = buf.readUInt32LE(H + 32);
      if (opcode === Opcode.READ)
        return {
          opcode,
          unique,
          nodeid,
          uid,
          gid,
          pid,
          op: 'read',
          fh,
          offset,
          size,
          readFlags,
          lockOwner,
          flags,
        };
      if (opcode === Opcode.READDIR)
        return {
          opcode,
          unique,
          nodeid,
          uid,
          gid,
          pid,
          op: 'readdir',
          fh,
          offset,
          size,
          readFlags,
          lockOwner,
          flags,
        };
      return {
        opcode,
        unique,
        nodeid,
        uid,
        gid,
        pid,
        op: 'readdirplus',
        fh,
        offset,
        size,
        readFlags,
        lockOwner,
        flags,
      };
    }
    case Opcode.LOOKUP: {
      // One NUL, last, after a non-empty name.
      const nul = buf.indexOf(0, H);
      if (nul !== argsEnd - 1 || nul === H) return undefined;
      return {
        opcode,
        unique: buf.readBigUInt64LE(8),
        nodeid: buf.readBigUInt64LE(16),
        uid: buf.readUInt32LE(24),
        gid: buf.readUInt32LE(28),
        pid: buf.readUInt32LE(32),
        op: 'lookup',
        name: Buffer.from(buf.subarray(H, nul)),
      };
    }
    case Opcode.GETATTR: {
      if (argsEnd - H < Size.GETATTR_IN) return undefined;
      return {
        opcode,
        unique: buf.readBigUInt64LE(8),
        nodeid: buf.readBigUInt64LE(16),
        uid: buf.readUInt32LE(24),
        gid: buf.readUInt32LE(28),
        pid: buf.readUInt32LE(32),
        op: 'getattr',
        getattrFlags: buf.readUInt32LE(H),
        fh: buf.readBigUInt64LE(H + 8),
      };
    }
    case Opcode.READLINK:
    case Opcode.STATFS: {
      const unique = buf.readBigUInt64LE(8);
      const nodeid = buf.readBigUInt64LE(16);
      const uid = buf.readUInt32LE(24);
      const gid = buf.readUInt32LE(28);
      const pid = buf.readUInt32LE(32);
      return opcode === Opcode.READLINK
        ? { opcode, unique, nodeid, uid, gid, pid, op: 'readlink' }
        : { opcode, unique, nodeid, uid, gid, pid, op: 'statfs' };
    }
    default:
      return undefined;
  }
}

/**
 * Decode one request. Throws FuseRequestError (a FormatError) when it does not decode; its
 * `unique`, `opcode` and `errno` say how to answer when the header was readable.
 */
export function decodeRequest(buf: Buffer): FuseRequest {
  const h = decodeInHeader(buf);
  const argsEnd = h.len - h.totalExtlen * 8;
  const hot = decodeHot(buf, h.opcode, argsEnd);
  if (hot !== undefined) return hot;
  const c = new Cursor(buf.subarray(Size.IN_HEADER, argsEnd), 0, Size.IN_HEADER);
  const hdr: RequestHeader = {
    opcode: h.opcode,
    unique: h.unique,
    nodeid: h.nodeid,
    uid: h.uid,
    gid: h.gid,
    pid: h.pid,
  };
  try {
    return decodeArgs(hdr, c, buf.subarray(argsEnd));
  } catch (e) {
    if (!(e instanceof FormatError)) throw e;
    throw new FuseRequestError(
      `Cannot decode FUSE ${opcodeName(h.opcode)} request ${h.unique}: ${e.message}`,
      undefined,
      { unique: h.unique, opcode: h.opcode, errno: e instanceof ValueRangeError ? Errno.EINVAL : Errno.EIO },
      { cause: e },
    );
  }
}

function decodeArgs(hdr: RequestHeader, c: Cursor, ext: Buffer): FuseRequest {
  switch (hdr.opcode) {
    case Opcode.INIT: {
      const major = c.u32('init major');
      const minor = c.u32('init minor');
      const maxReadahead = c.remaining >= 4 ? c.u32('max_readahead') : 0;
      const lo = c.remaining >= 4 ? c.u32('init flags') : 0;
      const hi = c.remaining >= 4 ? c.u32('init flags2') : 0;
      let flags = BigInt(lo);
      if ((flags & InitFlag.INIT_EXT) !== 0n) flags |= BigInt(hi) << 32n;
      return { ...hdr, op: 'init', opcode: Opcode.INIT, major, minor, maxReadahead, flags };
    }
    case Opcode.LOOKUP:
      return { ...hdr, op: 'lookup', opcode: Opcode.LOOKUP, name: cName(c, 'lookup name') };
    case Opcode.FORGET:
      return { ...hdr, op: 'forget', opcode: Opcode.FORGET, nlookup: quantity(c, 'nlookup') };
    case Opcode.BATCH_FORGET: {
      const count = c.u32('forget count');
      c.bytes(4, 'batch_forget dummy');
      if (count * Size.FORGET_ONE > c.remaining)
        throw new FormatError(
          `Batch forget count ${count} needs ${count * Size.FORGET_ONE} bytes, ${c.remaining} left`,
          Size.IN_HEADER,
        );
      const forgets: ForgetOne[] = [];
      for (let i = 0; i < count; i++) {
        forgets.push({ nodeid: c.big64('forget nodeid'), nlookup: quantity(c, 'forget nlookup') });
      }
      return { ...hdr, op: 'batch-forget', opcode: Opcode.BATCH_FORGET, forgets };
    }
    case Opcode.GETATTR: {
      const getattrFlags = c.u32('getattr_flags');
      c.bytes(4, 'getattr dummy');
      return { ...hdr, op: 'getattr', opcode: Opcode.GETATTR, getattrFlags, fh: c.big64('fh') };
    }
    case Opcode.READLINK:
      return { ...hdr, op: 'readlink', opcode: Opcode.READLINK };
    case Opcode.OPEN:
      return { ...hdr, op: 'open', opcode: Opcode.OPEN, ...openIn(c) };
    case Opcode.OPENDIR:
      return { ...hdr, op: 'opendir', opcode: Opcode.OPENDIR, ...openIn(c) };
    case Opcode.READ:
      return { ...hdr, op: 'read', opcode: Opcode.READ, ...readIn(c) };
    case Opcode.READDIR:
      return { ...hdr, op: 'readdir', opcode: Opcode.READDIR, ...readIn(c) };
    case Opcode.READDIRPLUS:
      return { ...hdr, op: 'readdirplus', opcode: Opcode.READDIRPLUS, ...readIn(c) };
    case Opcode.RELEASE:
      return { ...hdr, op: 'release', opcode: Opcode.RELEASE, ...releaseIn(c) };
    case Opcode.RELEASEDIR:
      return { ...hdr, op: 'releasedir', opcode: Opcode.RELEASEDIR, ...releaseIn(c) };
    case Opcode.STATFS:
      return { ...hdr, op: 'statfs', opcode: Opcode.STATFS };
    case Opcode.GETXATTR: {
      const size = c.u32('getxattr size');
      c.bytes(4, 'getxattr padding');
      return { ...hdr, op: 'getxattr', opcode: Opcode.GETXATTR, size, name: cName(c, 'xattr name') };
    }
    case Opcode.LISTXATTR: {
      const size = c.u32('listxattr size');
      c.bytes(4, 'listxattr padding');
      return { ...hdr, op: 'listxattr', opcode: Opcode.LISTXATTR, size };
    }
    case Opcode.ACCESS: {
      const mask = c.u32('access mask');
      c.bytes(4, 'access padding');
      return { ...hdr, op: 'access', opcode: Opcode.ACCESS, mask };
    }
    case Opcode.FLUSH: {
      const fh = c.big64('fh');
      c.bytes(8, 'flush unused and padding');
      return { ...hdr, op: 'flush', opcode: Opcode.FLUSH, fh, lockOwner: c.big64('lock_owner') };
    }
    case Opcode.INTERRUPT:
      return { ...hdr, op: 'interrupt', opcode: Opcode.INTERRUPT, target: c.big64('interrupted unique') };
    case Opcode.DESTROY:
      return { ...hdr, op: 'destroy', opcode: Opcode.DESTROY };
    default: {
      const body = Buffer.from(c.bytes(c.remaining));
      const op = MODIFYING_OPCODES.has(hdr.opcode) ? 'modify' : 'unsupported';
      return { ...hdr, op, body, ext: Buffer.from(ext) };
    }
  }
}

function openIn(c: Cursor): OpenIn {
  return { flags: c.u32('open flags'), openFlags: c.u32('open_flags') };
}

function readIn(c: Cursor): ReadIn {
  const fh = c.big64('fh');
  const offset = quantity(c, 'offset');
  const size = c.u32('size');
  const readFlags = c.u32('read_flags');
  const lockOwner = c.big64('lock_owner');
  const flags = c.u32('flags');
  c.bytes(4, 'read padding');
  return { fh, offset, size, readFlags, lockOwner, flags };
}

function releaseIn(c: Cursor): ReleaseIn {
  return {
    fh: c.big64('fh'),
    flags: c.u32('flags'),
    releaseFlags: c.u32('release_flags'),
    lockOwner: c.big64('lock_owner'),
  };
}

// ---------------------------------------------------------------------------------------------
// Encoding, as the kernel would (tests and the in-process harness).

function invalid(message: string): NydusError {
  return new NydusError('ERR_INVALID_ARG', message);
}

function nameArg(name: Buffer, what: string): Buffer {
  if (name.length === 0 || name.includes(0)) throw invalid(`Cannot encode ${what}: empty or holds a NUL`);
  return Buffer.concat([name, Buffer.alloc(1)]);
}

function encodeReadIn(r: ReadIn): Buffer {
  const b = Buffer.alloc(Size.READ_IN);
  putId(b, 0, r.fh, 'fh');
  putU64(b, 8, r.offset, 'offset');
  putU32(b, 16, r.size, 'size');
  putU32(b, 20, r.readFlags, 'read_flags');
  putId(b, 24, r.lockOwner, 'lock_owner');
  putU32(b, 32, r.flags, 'flags');
  return b;
}

function encodeReleaseIn(r: ReleaseIn): Buffer {
  const b = Buffer.alloc(Size.RELEASE_IN);
  putId(b, 0, r.fh, 'fh');
  putU32(b, 8, r.flags, 'flags');
  putU32(b, 12, r.releaseFlags, 'release_flags');
  putId(b, 16, r.lockOwner, 'lock_owner');
  return b;
}

function encodeOpenIn(r: OpenIn): Buffer {
  const b = Buffer.alloc(Size.OPEN_IN);
  putU32(b, 0, r.flags, 'flags');
  putU32(b, 4, r.openFlags, 'open_flags');
  return b;
}

function u32Pair(a: number, what: string): Buffer {
  const b = Buffer.alloc(8);
  putU32(b, 0, a, what);
  return b;
}

function encodeArgs(req: FuseRequest): Buffer {
  switch (req.op) {
    case 'init': {
      const b = Buffer.alloc(Size.INIT_IN);
      putU32(b, 0, req.major, 'major');
      putU32(b, 4, req.minor, 'minor');
      putU32(b, 8, req.maxReadahead, 'max_readahead');
      if (req.flags < 0n || req.flags >= 1n << 64n) throw invalid(`Cannot encode init flags ${req.flags}`);
      if (req.flags >> 32n !== 0n && (req.flags & InitFlag.INIT_EXT) === 0n)
        throw invalid('Cannot encode init flags: bits above 31 need FUSE_INIT_EXT');
      b.writeUInt32LE(Number(req.flags & 0xffff_ffffn), 12);
      b.writeUInt32LE(Number(req.flags >> 32n), 16);
      return b;
    }
    case 'lookup':
      return nameArg(req.name, 'lookup name');
    case 'forget': {
      const b = Buffer.alloc(Size.FORGET_IN);
      putU64(b, 0, req.nlookup, 'nlookup');
      return b;
    }
    case 'batch-forget': {
      const b = Buffer.alloc(Size.BATCH_FORGET_IN + req.forgets.length * Size.FORGET_ONE);
      putU32(b, 0, req.forgets.length, 'count');
      req.forgets.forEach((f, i) => {
        putId(b, 8 + i * 16, f.nodeid, 'nodeid');
        putU64(b, 16 + i * 16, f.nlookup, 'nlookup');
      });
      return b;
    }
    case 'getattr': {
      const b = Buffer.alloc(Size.GETATTR_IN);
      putU32(b, 0, req.getattrFlags, 'getattr_flags');
      putId(b, 8, req.fh, 'fh');
      return b;
    }
    case 'open':
    case 'opendir':
      return encodeOpenIn(req);
    case 'read':
    case 'readdir':
    case 'readdirplus':
      return encodeReadIn(req);
    case 'release':
    case 'releasedir':
      return encodeReleaseIn(req);
    case 'getxattr':
      return Buffer.concat([u32Pair(req.size, 'size'), nameArg(req.name, 'xattr name')]);
    case 'listxattr':
      return u32Pair(req.size, 'size');
    case 'access':
      return u32Pair(req.mask, 'mask');
    case 'flush': {
      const b = Buffer.alloc(Size.FLUSH_IN);
      putId(b, 0, req.fh, 'fh');
      putId(b, 16, req.lockOwner, 'lock_owner');
      return b;
    }
    case 'interrupt': {
      const b = Buffer.alloc(Size.INTERRUPT_IN);
      putId(b, 0, req.target, 'interrupted unique');
      return b;
    }
    case 'readlink':
    case 'statfs':
    case 'destroy':
      return Buffer.alloc(0);
    case 'modify':
    case 'unsupported':
      return req.body;
  }
}

/** Encode a request as the kernel writes it; `decodeRequest` gives it back. */
export function encodeRequest(req: FuseRequest): Buffer {
  let ext: Buffer = Buffer.alloc(0);
  if (req.op === 'modify' || req.op === 'unsupported') {
    const modifying = MODIFYING_OPCODES.has(req.opcode);
    if (DECODED_OPCODES.has(req.opcode) || modifying !== (req.op === 'modify'))
      throw invalid(`Cannot encode opcode ${req.opcode} as a "${req.op}" request`);
    if (req.ext.length % 8 !== 0 || req.ext.length > 0xffff * 8)
      throw invalid(`Cannot encode ${req.ext.length} extension bytes: not a multiple of 8 up to 524280`);
    ext = req.ext;
  } else if (req.opcode !== OPCODE_OF_OP[req.op]) {
    throw invalid(`Cannot encode a "${req.op}" request with opcode ${req.opcode}`);
  }
  const args = encodeArgs(req);
  const len = Size.IN_HEADER + args.length + ext.length;
  if (len > 0xffff_ffff) throw invalid(`Cannot encode a request of ${len} bytes`);
  const out = Buffer.alloc(len);
  putU32(out, 0, len, 'len');
  putU32(out, 4, req.opcode, 'opcode');
  putId(out, 8, req.unique, 'unique');
  putId(out, 16, req.nodeid, 'nodeid');
  putU32(out, 24, req.uid, 'uid');
  putU32(out, 28, req.gid, 'gid');
  putU32(out, 32, req.pid, 'pid');
  putU16(out, 36, ext.length / 8, 'total_extlen');
  args.copy(out, Size.IN_HEADER);
  ext.copy(out, Size.IN_HEADER + args.length);
  return out;
}
