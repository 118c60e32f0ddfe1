import { fail, ok } from 'node:assert/strict';
import { describe, it } from 'node:test';
import { NydusError } from '../../../src/errors/errors.js';
import { isDir, isReg, isSymlink } from '../../../src/format/flags.js';
import { RafsV6Bootstrap } from '../../../src/format/v6/bootstrap.js';
import { FIXTURE, readUpstreamFixture } from '../../helpers/fixtures.js';
import { prng } from '../../helpers/prng.js';

/**
 * Fuzz: whatever the bytes, the v6 reader either works or throws a NydusError. Never a RangeError,
 * a TypeError or a hang. Every mutation is replayable from the seed in the failure message.
 */

/** Run `f`; a NydusError counts as a clean refusal, anything else is a bug. */
function guard<T>(f: () => T): T | undefined {
  try {
    return f();
  } catch (e) {
    if (e instanceof NydusError) return undefined;
    throw e;
  }
}

/** Parse, validate, then touch every inode, directory, symlink and chunk reachable (bounded). */
function exercise(buf: Buffer): 'parsed' | 'rejected' {
  const b = guard(() => RafsV6Bootstrap.parse(buf));
  if (b === undefined) return 'rejected';
  guard(() => b.validate());
  guard(() => b.allChunks());
  guard(() => b.prefetchInos());
  const seen = new Set<number>();
  const queue = [b.rootIno, 0, 1, 129, 133, 136, 0xffff_ffff, -1, 0.5];
  for (let budget = 500; queue.length > 0 && budget > 0; budget--) {
    const nid = queue.shift()!;
    if (seen.has(nid)) continue;
    seen.add(nid);
    const attr = guard(() => b.getAttr(nid));
    guard(() => b.xattrs(nid));
    guard(() => b.inlineData(nid));
    guard(() => b.chunkRefs(nid));
    guard(() => b.chunks(nid));
    guard(() => b.readlink(nid));
    guard(() => b.childCount(nid));
    guard(() => b.readdir(nid, 1, 2));
    if (attr === undefined) continue;
    if (isDir(attr.mode)) {
      for (const e of guard(() => b.readdir(nid)) ?? []) {
        guard(() => b.lookup(nid, e.name));
        queue.push(e.ino);
      }
      guard(() => b.lookup(nid, Buffer.from('lib.rs')));
    } else if (isReg(attr.mode) || isSymlink(attr.mode)) {
      guard(() => b.getAttr(nid));
    }
  }
  return 'parsed';
}

function check(buf: Buffer, what: string): 'parsed' | 'rejected' {
  try {
    return exercise(buf);
  } catch (e) {
    fail(`${what}: non-NydusError escaped: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
  }
}

/** Offsets where a table or structure of the fixture starts or ends. */
const BOUNDARIES = [
  1024, 1152, 1408, 1536, 4096, 4352, 8192, 0x3000, 0x3040, 0x3083, 0x30a0, 0x30e0, 0x30e8, 0x3100, 0x3140,
  0x3148, 0x4000, 0x4050, 0x40a0, 0x5000,
];

/** Regions holding structures (the rest of the fixture is zero padding). */
const HOT: [number, number][] = [
  [1024, 1536],
  [4096, 4352],
  [0x3000, 0x3150],
  [0x4000, 0x40a0],
];

describe('v6 reader on malformed input (never a non-NydusError)', () => {
  it('survives every truncation of the fixture', (t) => {
    const img = readUpstreamFixture(t, FIXTURE.v6Boot);
    if (img === undefined) return;
    const lengths = new Set<number>();
    for (let n = 0; n <= img.length; n += 64) lengths.add(n);
    for (let n = 0; n <= 2048; n++) lengths.add(n);
    for (const at of BOUNDARIES) for (let d = -100; d <= 100; d++) lengths.add(at + d);
    for (const n of lengths) {
      if (n < 0 || n > img.length) continue;
      check(img.subarray(0, n), `truncated to ${n}`);
    }
    // Cut data but keep the size: the tail is zeroed, so the size check passes.
    for (let n = 0; n < img.length; n += 64) {
      const z = Buffer.from(img);
      z.fill(0, n);
      check(z, `zeroed from ${n}`);
    }
    ok(check(img, 'intact') === 'parsed');
  });

  it('survives 3000 seeded random byte flips', (t) => {
    const img = readUpstreamFixture(t, FIXTURE.v6Boot);
    if (img === undefined) return;
    const rand = prng(0x6e796475);
    let parsed = 0;
    for (let iter = 0; iter < 3000; iter++) {
      const m = Buffer.from(img);
      const flips: string[] = [];
      const n = 1 + Math.floor(rand() * 4);
      for (let k = 0; k < n; k++) {
        let off: number;
        if (rand() < 0.8) {
          const [lo, hi] = HOT[Math.floor(rand() * HOT.length)]!;
          off = lo + Math.floor(rand() * (hi - lo));
        } else {
          off = Math.floor(rand() * m.length);
        }
        const v = rand() < 0.5 ? m[off]! ^ (1 << Math.floor(rand() * 8)) : Math.floor(rand() * 256);
        m[off] = v;
        flips.push(`${off}=${v}`);
      }
      if (check(m, `iteration ${iter}, flips ${flips.join(',')}`) === 'parsed') parsed++;
    }
    // Most flips land in fields the open does not check (inodes, dirents, chunks).
    ok(parsed > 1000, `only ${parsed} of 3000 mutants parsed`);
  });

  it('rejects zero-filled and random files cleanly', (t) => {
    for (const size of [0, 1, 1024, 4096, 8192, 20480]) {
      ok(check(Buffer.alloc(size), `zero file of ${size}`) === 'rejected');
    }
    const rand = prng(42);
    const bytes = (n: number): Buffer =>
      Buffer.from(Array.from({ length: n }, () => Math.floor(rand() * 256)));
    for (let i = 0; i < 40; i++) check(bytes(4096 * (1 + (i % 5))), `random file ${i}`);
    const img = readUpstreamFixture(t, FIXTURE.v6Boot);
    if (img === undefined) return;
    // Valid superblocks and tables, random meta area and chunk table.
    for (let i = 0; i < 100; i++) {
      const m = Buffer.concat([img.subarray(0, 8192), bytes(img.length - 8192)]);
      ok(check(m, `random meta area ${i}`) === 'parsed');
    }
  });
});
