import { test } from 'node:test';
import assert from 'node:assert/strict';
import { constants } from 'node:os';
import { NydusError } from '../../src/errors/errors.js';
import {
  Errno,
  FUSE_KERNEL_MINOR_VERSION,
  InitFlag,
  MODIFYING_OPCODES,
  Opcode,
  Size,
  expectsReply,
  initFlagNames,
  minReadBufferSize,
  opcodeName,
} from '../../src/fuse/abi.js';
import { FuseError, FuseRequestError, errnoOf } from '../../src/fuse/errors.js';
import { negotiateInit } from '../../src/fuse/init.js';
import { FormatError } from '../../src/errors/errors.js';

const KERNEL_645 = {
  major: 7,
  minor: 45,
  maxReadahead: 128 * 1024,
  flags: 0x73ff_fffbn | (0x5fdn << 32n),
};

test('negotiation: minor is the smaller one, flags the granted subset, defaults for the rest', () => {
  const n = negotiateInit(KERNEL_645, {
    want: InitFlag.DO_READDIRPLUS | InitFlag.MAP_ALIGNMENT | InitFlag.MAX_PAGES,
  });
  assert.equal(n.kind, 'accept');
  if (n.kind !== 'accept') return;
  assert.equal(n.minor, 45);
  // MAP_ALIGNMENT (DAX) is not offered by this kernel; no high bit, so no INIT_EXT either.
  assert.equal(n.flags, InitFlag.DO_READDIRPLUS | InitFlag.MAX_PAGES);
  assert.deepEqual(n.reply, {
    major: 7,
    minor: 45,
    maxReadahead: 128 * 1024,
    flags: n.flags,
    maxBackground: 0,
    congestionThreshold: 0,
    maxWrite: 1 << 20,
    timeGran: 1,
    maxPages: 256,
    mapAlignment: 0,
    maxStackDepth: 0,
    requestTimeout: 0,
  });
  const older = negotiateInit(
    { ...KERNEL_645, minor: 31, flags: 0x2000n },
    { want: -1n & ((1n << 64n) - 1n), maxReadahead: 4096, maxPages: 32 },
  );
  assert.equal(older.kind === 'accept' && older.minor, 31);
  assert.equal(older.reply.maxReadahead, 4096);
  assert.equal(older.reply.maxWrite, 32 * 4096);
  assert.equal(older.kind === 'accept' && older.flags, InitFlag.DO_READDIRPLUS);
  const newer = negotiateInit({ ...KERNEL_645, minor: 99 }, { want: 0n });
  assert.equal(newer.kind === 'accept' && newer.minor, FUSE_KERNEL_MINOR_VERSION);
});

test('negotiation: a newer major gets ours back, an older one or a minor below 23 cannot be served', () => {
  const retry = negotiateInit({ ...KERNEL_645, major: 8 }, { want: InitFlag.ASYNC_READ });
  assert.equal(retry.kind, 'retry');
  assert.equal(retry.reply.major, 7);
  assert.equal(retry.reply.minor, FUSE_KERNEL_MINOR_VERSION);
  assert.equal(retry.reply.flags, 0n);
  for (const v of [
    { major: 6, minor: 45 },
    { major: 7, minor: 22 },
  ]) {
    assert.throws(
      () => negotiateInit({ ...KERNEL_645, ...v }, { want: 0n }),
      (e: unknown) => e instanceof FuseError && e.errno === Errno.EPROTO && /7\.23 or newer/.test(e.message),
    );
  }
});

test('errno values are Linux errno values', () => {
  for (const [name, value] of Object.entries(Errno)) {
    const os = (constants.errno as Record<string, number | undefined>)[name];
    if (os !== undefined) assert.equal(value, os, name);
  }
});

test('errnoOf: own errno first, then project error codes, else EIO', () => {
  assert.equal(errnoOf(new FuseRequestError('x', 0, { errno: Errno.EINVAL })), Errno.EINVAL);
  assert.equal(errnoOf(new FuseRequestError('x', 0, {})), Errno.EIO);
  assert.equal(errnoOf(new FuseError('ERR_UNSUPPORTED', 'x', Errno.EPROTO)), Errno.EPROTO);
  assert.equal(errnoOf(new FuseError('ERR_UNSUPPORTED', 'x', 5000)), Errno.EIO);
  assert.equal(errnoOf(new NydusError('ERR_NOT_FOUND', 'x')), Errno.ENOENT);
  assert.equal(errnoOf(new NydusError('ERR_UNSUPPORTED', 'x')), Errno.ENOTSUP);
  assert.equal(errnoOf(new NydusError('ERR_INVALID_ARG', 'x')), Errno.EINVAL);
  assert.equal(errnoOf(new FormatError('x')), Errno.EIO);
  assert.equal(errnoOf(new NydusError('ERR_DIGEST', 'x')), Errno.EIO);
  assert.equal(errnoOf(new RangeError('x')), Errno.EIO);
  assert.equal(errnoOf('boom'), Errno.EIO);
});

test('ABI tables: sizes add up, names, replies, read buffer', () => {
  assert.equal(Size.ENTRY_OUT, 40 + Size.ATTR);
  assert.equal(Size.ATTR_OUT, 16 + Size.ATTR);
  assert.equal(Size.DIRENTPLUS, Size.ENTRY_OUT + Size.DIRENT);
  assert.equal(opcodeName(Opcode.READDIRPLUS), 'READDIRPLUS');
  assert.equal(opcodeName(12345), 'OPCODE_12345');
  assert.equal(expectsReply(Opcode.FORGET), false);
  assert.equal(expectsReply(Opcode.BATCH_FORGET), false);
  assert.equal(expectsReply(Opcode.INTERRUPT), false);
  assert.equal(expectsReply(Opcode.READ), true);
  assert.equal(MODIFYING_OPCODES.has(Opcode.WRITE), true);
  assert.equal(MODIFYING_OPCODES.has(Opcode.READ), false);
  assert.deepEqual(initFlagNames(InitFlag.ASYNC_READ | InitFlag.REQUEST_TIMEOUT | (1n << 50n)), [
    'ASYNC_READ',
    'REQUEST_TIMEOUT',
    'BIT_50',
  ]);
  assert.equal(minReadBufferSize(4096), 8192);
  assert.equal(minReadBufferSize(1 << 20), 80 + (1 << 20));
});
