import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NydusError } from '../../src/errors/errors.js';
import { Opcode } from '../../src/fuse/abi.js';
import { FuseRequestError } from '../../src/fuse/errors.js';
import { decodeRequest, encodeRequest } from '../../src/fuse/messages.js';
import {
  decodeAttrOut,
  decodeDirents,
  decodeDirentsPlus,
  decodeEntryOut,
  decodeInitOut,
  decodeKstatfs,
  decodeOpenOut,
  decodeReply,
  packDirentsPlus,
  type DirentPlus,
} from '../../src/fuse/replies.js';
import { prng } from '../helpers/prng.js';
import { gen, requests } from './samples.js';

/**
 * Whatever arrives on /dev/fuse, decodeRequest returns a request or throws a FuseRequestError;
 * never a RangeError, never a hang. Same for the reply decoders. Seeds make failures reproduce.
 */

const N = 5000;
const BUDGET_MS = 10_000;

const OPCODES = [...Object.values(Opcode), 0, 7, 19, 54, 0xffff_ffff];

/** 'ok', or the error code; anything that is not a NydusError fails the test. */
function tryDecode(buf: Buffer): string {
  try {
    const r = decodeRequest(buf);
    assert.ok(typeof r.op === 'string');
    return 'ok';
  } catch (e) {
    if (!(e instanceof FuseRequestError)) throw e;
    return e.code;
  }
}

function randomBytes(r: () => number, n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(r() * 256);
  return b;
}

test(`${N} random buffers decode to a request or a FuseRequestError`, () => {
  const r = prng(0xf05e);
  const start = Date.now();
  const seen = { ok: 0, err: 0 };
  for (let i = 0; i < N; i++) {
    const b = randomBytes(r, Math.floor(r() * 160));
    // Most random buffers fail at the length check; give half of them a consistent header.
    if (i % 2 === 0 && b.length >= 40) {
      b.writeUInt32LE(b.length, 0);
      b.writeUInt32LE(OPCODES[Math.floor(r() * OPCODES.length)]!, 4);
      b.writeUInt16LE(r() < 0.8 ? 0 : Math.floor(r() * 4), 36);
    }
    if (tryDecode(b) === 'ok') seen.ok++;
    else seen.err++;
  }
  assert.ok(seen.ok > 0 && seen.err > 0, JSON.stringify(seen));
  assert.ok(Date.now() - start < BUDGET_MS, `took ${Date.now() - start} ms`);
});

test('every truncation and byte flip of valid requests fails cleanly or decodes', () => {
  const r = prng(0xc0de);
  const start = Date.now();
  let cases = 0;
  for (let seed = 1; seed <= 20; seed++) {
    for (const req of requests(seed)) {
      const full = encodeRequest(req);
      for (let len = 0; len < full.length; len++) {
        // A truncated read: the header still claims the full length.
        assert.equal(tryDecode(full.subarray(0, len)), 'ERR_FORMAT', `${req.op} cut to ${len}`);
        // A header rewritten to the shorter length: the arguments are what is short.
        if (len >= 40) {
          const cut = Buffer.from(full.subarray(0, len));
          cut.writeUInt32LE(len, 0);
          tryDecode(cut);
        }
        cases += 2;
      }
      for (let k = 0; k < 50; k++) {
        const m = Buffer.from(full);
        const flips = 1 + Math.floor(r() * 3);
        for (let f = 0; f < flips; f++) m[Math.floor(r() * m.length)] = Math.floor(r() * 256);
        tryDecode(m);
        cases++;
      }
    }
  }
  assert.ok(cases > N);
  assert.ok(Date.now() - start < BUDGET_MS, `took ${Date.now() - start} ms`);
});

function tryReply(f: () => unknown): void {
  try {
    f();
  } catch (e) {
    if (!(e instanceof NydusError)) throw e;
  }
}

test('reply decoders fail cleanly on random and mutated bodies', () => {
  const r = prng(0xbeef);
  const g = gen(7);
  const plus: DirentPlus[] = Array.from({ length: 6 }, (_, i) => ({
    entry: g.entry(),
    dirent: { ino: BigInt(i), off: i + 1, type: 8, name: Buffer.from(`name-${i}`) },
  }));
  const packed = packDirentsPlus(plus, 4096).buf;
  const decoders = [
    decodeReply,
    decodeInitOut,
    decodeEntryOut,
    decodeAttrOut,
    decodeOpenOut,
    decodeKstatfs,
    decodeDirents,
    decodeDirentsPlus,
  ];
  const start = Date.now();
  for (let i = 0; i < N; i++) {
    const b =
      i % 2 === 0
        ? randomBytes(r, Math.floor(r() * 200))
        : (() => {
            const m = Buffer.from(packed.subarray(0, Math.floor(r() * packed.length)));
            if (m.length > 0) m[Math.floor(r() * m.length)] = Math.floor(r() * 256);
            return m;
          })();
    for (const d of decoders) tryReply(() => d(b));
  }
  assert.ok(Date.now() - start < BUDGET_MS, `took ${Date.now() - start} ms`);
});
