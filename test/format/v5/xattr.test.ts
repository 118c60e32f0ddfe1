import { deepEqual, equal, throws } from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { XattrPair } from '../../../src/format/model.js';
import {
  decodeV5Xattrs,
  encodeV5Xattrs,
  v5XattrPayloadSize,
  v5XattrTableEnd,
  v5XattrTableSize,
} from '../../../src/format/v5/xattr.js';

function pair(name: string, value: string | Buffer): XattrPair {
  return { name: Buffer.from(name), value: typeof value === 'string' ? Buffer.from(value) : value };
}

// rafs-format.md 2.8: u64 payload_size, then u32 pair_size, name, NUL, value; pad to 8.
const ONE = [pair('user.a', 'xyz')];
const ONE_HEX = [
  '0e00000000000000', // payload_size 14 = 4 + 10
  '0a000000', // pair_size 10 = 6 + 1 + 3
  '757365722e61', // "user.a"
  '00',
  '78797a', // "xyz"
  '0000', // padding 14 -> 16
].join('');

const TWO = [pair('security.capability', Buffer.from([1, 0, 2])), pair('trusted.overlay.opaque', 'y')];
const TWO_HEX = [
  '3700000000000000', // payload_size 55 = 27 + 28
  '17000000', // pair_size 23 = 19 + 1 + 3
  Buffer.from('security.capability').toString('hex'),
  '00',
  '010002',
  '18000000', // pair_size 24 = 22 + 1 + 1
  Buffer.from('trusted.overlay.opaque').toString('hex'),
  '00',
  '79', // "y"
  '00', // padding 55 -> 56
].join('');

void describe('v5 xattr table (golden)', () => {
  void it('encodes one pair with padding', () => {
    equal(encodeV5Xattrs(ONE).toString('hex'), ONE_HEX);
    equal(v5XattrPayloadSize(ONE), 14);
    equal(v5XattrTableSize(ONE), 24);
  });

  void it('decodes the golden bytes back and reports where the record continues', () => {
    const buf = Buffer.concat([Buffer.from(ONE_HEX, 'hex'), Buffer.alloc(8, 0xee)]);
    const t = decodeV5Xattrs(buf, 0);
    deepEqual(t.pairs, ONE);
    equal(t.payloadSize, 14);
    equal(t.end, 24);
    equal(v5XattrTableEnd(buf, 0), 24);
  });

  void it('encodes pairs back to back without alignment between them', () => {
    const buf = encodeV5Xattrs(TWO);
    equal(buf.toString('hex'), TWO_HEX);
    equal(v5XattrPayloadSize(TWO), 55);
    equal(v5XattrTableSize(TWO), 64);
    deepEqual(decodeV5Xattrs(buf, 0).pairs, TWO);
  });

  void it('encodes an empty table as a zero payload', () => {
    equal(encodeV5Xattrs([]).toString('hex'), '0000000000000000');
    deepEqual(decodeV5Xattrs(Buffer.alloc(8), 0).pairs, []);
  });

  void it('accepts every allowed namespace and empty values', () => {
    const pairs = [
      pair('user.x', ''),
      pair('security.selinux', 'a'),
      pair('trusted.t', 'b'),
      pair('system.posix_acl_access', Buffer.from([2, 0, 0, 0])),
      pair('system.posix_acl_default', Buffer.from([2, 0, 0, 0])),
    ];
    deepEqual(decodeV5Xattrs(encodeV5Xattrs(pairs), 0).pairs, pairs);
  });
});

void describe('v5 xattr table checks', () => {
  void it('rejects names outside the allowed namespaces', () => {
    throws(() => encodeV5Xattrs([pair('system.foo', 'x')]), /not in an allowed namespace/);
    const buf = encodeV5Xattrs([pair('user.x', 'v')]);
    buf.write('nope.', 12);
    throws(
      () => decodeV5Xattrs(buf, 0, buf.length, 'Inode 9'),
      /Inode 9: xattr name "nope\.x" is not in an allowed namespace/,
    );
  });

  void it('bounds name and value sizes', () => {
    throws(
      () => encodeV5Xattrs([pair(`user.${'n'.repeat(251)}`, '')]),
      /xattr name size 256 is out of range 1..255/,
    );
    throws(() => encodeV5Xattrs([pair('user.big', Buffer.alloc(0x10001))]), /exceeds 65536/);
    encodeV5Xattrs([pair(`user.${'n'.repeat(250)}`, Buffer.alloc(0x10000))]);
  });

  void it('rejects a payload past the end, a pair past the payload and a name without NUL', () => {
    const buf = encodeV5Xattrs(ONE);
    throws(() => decodeV5Xattrs(buf.subarray(0, 16), 0), /runs past the end/);
    throws(() => decodeV5Xattrs(buf.subarray(0, 4), 0), /truncated xattr table header/);
    const long = Buffer.from(buf);
    long.writeUInt32LE(11, 8);
    throws(() => decodeV5Xattrs(long, 0), /pair size 11 does not fit/);
    const zero = Buffer.from(buf);
    zero.writeUInt32LE(0, 8);
    throws(() => decodeV5Xattrs(zero, 0), /pair size 0/);
    const noNul = Buffer.from(buf);
    noNul[18] = 0x41;
    throws(() => decodeV5Xattrs(noNul, 0), /no NUL terminator/);
    const shortTail = Buffer.from(buf);
    shortTail.writeBigUInt64LE(16n, 0);
    throws(() => decodeV5Xattrs(shortTail, 0), /truncated xattr pair size/);
  });
});
