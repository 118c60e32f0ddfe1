import { InitFlag, MODIFYING_OPCODES, Opcode } from '../../src/fuse/abi.js';
import type { FuseRequest, RequestHeader } from '../../src/fuse/messages.js';
import type { EntryOut, FuseAttr } from '../../src/fuse/replies.js';
import { prng } from '../helpers/prng.js';

/** Random but valid field values and requests for round-trip and fuzz tests (seeded, reproducible). */

export function gen(seed: number) {
  const r = prng(seed);
  const int = (n: number) => Math.floor(r() * n);
  const u32 = () => int(2 ** 32);
  const u16 = () => int(2 ** 16);
  const qty = () => (r() < 0.2 ? [0, 1, Number.MAX_SAFE_INTEGER][int(3)]! : int(2 ** 53));
  const id = (): bigint => (BigInt(u32()) << 32n) | BigInt(u32());
  const name = (noSlash = false): Buffer => {
    const b = Buffer.alloc(1 + int(255));
    for (let i = 0; i < b.length; i++) {
      let c = 1 + int(255);
      if (noSlash && c === 0x2f) c = 0x2e;
      b[i] = c;
    }
    return b;
  };
  const hdr = (opcode: number): RequestHeader => ({
    opcode,
    unique: id(),
    nodeid: id(),
    uid: u32(),
    gid: u32(),
    pid: u32(),
  });
  const time = () => int(2 ** 40) - 2 ** 39;
  const nsec = () => int(1e9);
  const attr = (): FuseAttr => ({
    ino: id(),
    size: qty(),
    blocks: qty(),
    atime: time(),
    mtime: time(),
    ctime: time(),
    atimeNsec: nsec(),
    mtimeNsec: nsec(),
    ctimeNsec: nsec(),
    mode: [0o140000, 0o120000, 0o100000, 0o060000, 0o040000, 0o020000, 0o010000][int(7)]! | int(0o10000),
    nlink: u32(),
    uid: u32(),
    gid: u32(),
    rdev: u32(),
    blksize: u32(),
    flags: u32(),
  });
  const entry = (): EntryOut => ({
    nodeid: id() | 1n,
    generation: id(),
    entryValid: qty(),
    entryValidNsec: nsec(),
    attrValid: qty(),
    attrValidNsec: nsec(),
    attr: attr(),
  });
  return { r, int, u32, u16, qty, id, name, hdr, attr, entry, nsec };
}

/** One request of every kind this layer decodes, plus modify and unsupported ones. */
export function requests(seed: number): FuseRequest[] {
  const g = gen(seed);
  const readIn = () => ({
    fh: g.id(),
    offset: g.qty(),
    size: g.u32(),
    readFlags: g.u32(),
    lockOwner: g.id(),
    flags: g.u32(),
  });
  const releaseIn = () => ({ fh: g.id(), flags: g.u32(), releaseFlags: g.u32(), lockOwner: g.id() });
  const flags = g.r() < 0.5 ? BigInt(g.u32()) & ~InitFlag.INIT_EXT : g.id() | InitFlag.INIT_EXT;
  const modifying = [...MODIFYING_OPCODES];
  const unsupported = [Opcode.FSYNC, Opcode.GETLK, Opcode.LSEEK, Opcode.STATX, Opcode.IOCTL, 7, 100_000];
  const body = () => Buffer.from(Array.from({ length: g.int(64) }, () => g.int(256)));
  const ext = () => Buffer.from(Array.from({ length: 8 * g.int(4) }, () => g.int(256)));
  return [
    {
      ...g.hdr(Opcode.INIT),
      op: 'init',
      opcode: Opcode.INIT,
      major: g.u32(),
      minor: g.u32(),
      maxReadahead: g.u32(),
      flags,
    },
    { ...g.hdr(Opcode.LOOKUP), op: 'lookup', opcode: Opcode.LOOKUP, name: g.name() },
    { ...g.hdr(Opcode.FORGET), op: 'forget', opcode: Opcode.FORGET, nlookup: g.qty() },
    {
      ...g.hdr(Opcode.BATCH_FORGET),
      op: 'batch-forget',
      opcode: Opcode.BATCH_FORGET,
      forgets: Array.from({ length: g.int(5) }, () => ({ nodeid: g.id(), nlookup: g.qty() })),
    },
    { ...g.hdr(Opcode.GETATTR), op: 'getattr', opcode: Opcode.GETATTR, getattrFlags: g.u32(), fh: g.id() },
    { ...g.hdr(Opcode.READLINK), op: 'readlink', opcode: Opcode.READLINK },
    { ...g.hdr(Opcode.OPEN), op: 'open', opcode: Opcode.OPEN, flags: g.u32(), openFlags: g.u32() },
    { ...g.hdr(Opcode.READ), op: 'read', opcode: Opcode.READ, ...readIn() },
    { ...g.hdr(Opcode.RELEASE), op: 'release', opcode: Opcode.RELEASE, ...releaseIn() },
    { ...g.hdr(Opcode.OPENDIR), op: 'opendir', opcode: Opcode.OPENDIR, flags: g.u32(), openFlags: g.u32() },
    { ...g.hdr(Opcode.READDIR), op: 'readdir', opcode: Opcode.READDIR, ...readIn() },
    { ...g.hdr(Opcode.READDIRPLUS), op: 'readdirplus', opcode: Opcode.READDIRPLUS, ...readIn() },
    { ...g.hdr(Opcode.RELEASEDIR), op: 'releasedir', opcode: Opcode.RELEASEDIR, ...releaseIn() },
    { ...g.hdr(Opcode.STATFS), op: 'statfs', opcode: Opcode.STATFS },
    { ...g.hdr(Opcode.GETXATTR), op: 'getxattr', opcode: Opcode.GETXATTR, size: g.u32(), name: g.name() },
    { ...g.hdr(Opcode.LISTXATTR), op: 'listxattr', opcode: Opcode.LISTXATTR, size: g.u32() },
    { ...g.hdr(Opcode.ACCESS), op: 'access', opcode: Opcode.ACCESS, mask: g.u32() },
    { ...g.hdr(Opcode.FLUSH), op: 'flush', opcode: Opcode.FLUSH, fh: g.id(), lockOwner: g.id() },
    { ...g.hdr(Opcode.INTERRUPT), op: 'interrupt', opcode: Opcode.INTERRUPT, target: g.id() },
    { ...g.hdr(Opcode.DESTROY), op: 'destroy', opcode: Opcode.DESTROY },
    { ...g.hdr(modifying[g.int(modifying.length)]!), op: 'modify', body: body(), ext: ext() },
    { ...g.hdr(unsupported[g.int(unsupported.length)]!), op: 'unsupported', body: body(), ext: ext() },
  ];
}
