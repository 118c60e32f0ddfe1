import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NydusError } from '../../src/errors/errors.js';
import { InitFlag, Opcode } from '../../src/fuse/abi.js';
import { decodeRequest, encodeRequest, type FuseRequest } from '../../src/fuse/messages.js';
import {
  attrReply,
  dataReply,
  decodeAttrOut,
  decodeDirents,
  decodeDirentsPlus,
  decodeEntryOut,
  decodeInitOut,
  decodeKstatfs,
  decodeOpenOut,
  decodeReply,
  decodeXattrSize,
  entryReply,
  errorReply,
  initReply,
  openReply,
  packDirents,
  packDirentsPlus,
  statfsReply,
  xattrSizeReply,
  type Dirent,
  type DirentPlus,
  type InitOut,
} from '../../src/fuse/replies.js';
import { gen, requests } from './samples.js';

/** Round trips with random field values: request encode -> decode and reply encode -> decode. */

const ROUNDS = 300;

test('every request kind: encode then decode gives it back', () => {
  const kinds = new Set<string>();
  for (let seed = 1; seed <= ROUNDS; seed++) {
    for (const req of requests(seed)) {
      kinds.add(req.op);
      assert.deepEqual(decodeRequest(encodeRequest(req)), req, `${req.op} seed ${seed}`);
    }
  }
  assert.equal(kinds.size, 22);
});

test('encodeRequest refuses requests the kernel could not send', () => {
  const hdr = { unique: 1n, nodeid: 1n, uid: 0, gid: 0, pid: 0 };
  const bad: [FuseRequest, RegExp][] = [
    [{ ...hdr, op: 'statfs', opcode: 3 as typeof Opcode.STATFS }, /"statfs" request with opcode 3/],
    [
      { ...hdr, opcode: Opcode.READ, op: 'modify', body: Buffer.alloc(0), ext: Buffer.alloc(0) },
      /opcode 15 as a "modify"/,
    ],
    [
      { ...hdr, opcode: Opcode.WRITE, op: 'unsupported', body: Buffer.alloc(0), ext: Buffer.alloc(0) },
      /opcode 16 as a "unsupported"/,
    ],
    [
      { ...hdr, opcode: Opcode.WRITE, op: 'modify', body: Buffer.alloc(0), ext: Buffer.alloc(3) },
      /3 extension bytes/,
    ],
    [
      {
        ...hdr,
        op: 'init',
        opcode: Opcode.INIT,
        major: 7,
        minor: 45,
        maxReadahead: 0,
        flags: InitFlag.PASSTHROUGH,
      },
      /bits above 31 need FUSE_INIT_EXT/,
    ],
    [
      { ...hdr, op: 'lookup', opcode: Opcode.LOOKUP, name: Buffer.from('a\0b') },
      /lookup name: empty or holds a NUL/,
    ],
    [{ ...hdr, op: 'forget', opcode: Opcode.FORGET, nlookup: -1 }, /nlookup: -1/],
  ];
  for (const [req, re] of bad) {
    assert.throws(
      () => encodeRequest(req),
      (e: unknown) => e instanceof NydusError && e.code === 'ERR_INVALID_ARG' && re.test(e.message),
      re.source,
    );
  }
});

function body(reply: Buffer, unique: bigint): Buffer {
  const d = decodeReply(reply);
  assert.equal(d.header.error, 0);
  assert.equal(d.header.unique, unique);
  assert.equal(d.header.len, reply.length);
  return d.body;
}

test('every reply body: encode then decode gives it back', () => {
  for (let seed = 1; seed <= ROUNDS; seed++) {
    const g = gen(seed);
    const u = g.id();
    const init: InitOut = {
      major: g.u32(),
      minor: g.u32(),
      maxReadahead: g.u32(),
      flags: g.id(),
      maxBackground: g.u16(),
      congestionThreshold: g.u16(),
      maxWrite: g.u32(),
      timeGran: g.u32(),
      maxPages: g.u16(),
      mapAlignment: g.u16(),
      maxStackDepth: g.u32(),
      requestTimeout: g.u16(),
    };
    assert.deepEqual(decodeInitOut(body(initReply(u, init), u)), init);
    const e = g.entry();
    assert.deepEqual(decodeEntryOut(body(entryReply(u, e), u)), e);
    const a = { attrValid: g.qty(), attrValidNsec: g.nsec(), attr: g.attr() };
    assert.deepEqual(decodeAttrOut(body(attrReply(u, a), u)), a);
    const o = { fh: g.id(), openFlags: g.u32(), backingId: g.u32() - 2 ** 31 };
    assert.deepEqual(decodeOpenOut(body(openReply(u, o), u)), o);
    const s = {
      blocks: g.qty(),
      bfree: g.qty(),
      bavail: g.qty(),
      files: g.qty(),
      ffree: g.qty(),
      bsize: g.u32(),
      namelen: g.u32(),
      frsize: g.u32(),
    };
    assert.deepEqual(decodeKstatfs(body(statfsReply(u, s), u)), s);
    const n = g.u32();
    assert.equal(decodeXattrSize(body(xattrSizeReply(u, n), u)), n);
    const errno = 1 + g.int(999);
    assert.deepEqual(decodeReply(errorReply(u, errno)).header, { len: 16, error: -errno, unique: u });

    const dirents: Dirent[] = Array.from({ length: g.int(40) }, () => ({
      ino: g.id(),
      off: g.qty(),
      type: g.u32(),
      name: g.name(true),
    }));
    const size = g.int(8192);
    const p = packDirents(dirents, size);
    assert.ok(p.buf.length <= size);
    assert.deepEqual(decodeDirents(body(dataReply(u, p.buf), u)), dirents.slice(0, p.count));
    const plus: DirentPlus[] = dirents.map((d) => ({ entry: g.entry(), dirent: d }));
    const pp = packDirentsPlus(plus, size);
    assert.ok(pp.buf.length <= size);
    assert.deepEqual(decodeDirentsPlus(body(dataReply(u, pp.buf), u)), plus.slice(0, pp.count));
  }
});
