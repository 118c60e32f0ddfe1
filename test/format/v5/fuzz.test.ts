import { equal, ok } from 'node:assert/strict';
import { describe, it } from 'node:test';
import { NydusError } from '../../../src/errors/errors.js';
import { isDir, isSymlink } from '../../../src/format/flags.js';
import { RafsV5Bootstrap } from '../../../src/format/v5/bootstrap.js';
import { FIXTURE, readUpstreamFixture } from '../../helpers/fixtures.js';
import { prng } from '../../helpers/prng.js';

/** Run `fn`; a NydusError counts as a clean rejection, any other error fails the test. */
function guard<T>(fn: () => T): T | undefined {
  try {
    return fn();
  } catch (e) {
    if (e instanceof NydusError) return undefined;
    throw e;
  }
}

/** Upper bound on the indexes the API walk touches, to keep a mutated image's walk short. */
const MAX_EXERCISED = 128;

/** Call every reader entry point on every (bounded) index; only NydusErrors may come out. */
function exercise(bs: RafsV5Bootstrap): void {
  guard(() => bs.prefetchInos());
  guard(() => bs.allChunks());
  const n = Math.min(bs.indexCount, MAX_EXERCISED);
  for (let ino = 1; ino <= n; ino++) {
    const attr = guard(() => bs.getAttr(ino));
    // The other calls load the same record; when getAttr cannot, they would fail the same way.
    if (attr === undefined) continue;
    guard(() => bs.chunks(ino));
    guard(() => bs.xattrs(ino));
    if (isSymlink(attr.mode)) guard(() => bs.readlink(ino));
    if (isDir(attr.mode)) {
      const entries = guard(() => bs.readdir(ino, 0, MAX_EXERCISED)) ?? [];
      guard(() => bs.childCount(ino));
      for (const e of entries) guard(() => bs.lookup(ino, e.name));
      guard(() => bs.lookup(ino, Buffer.from('no such name')));
    }
  }
}

/** parse, exercise, validate: true when the image is accepted, false when cleanly rejected. */
function accepted(buf: Buffer): boolean {
  const bs = guard(() => RafsV5Bootstrap.parse(buf));
  if (bs === undefined) return false;
  exercise(bs);
  return guard(() => (bs.validate(), true)) ?? false;
}

const FLIPS = 2000;
/** Superblock bytes past this are reserved and never read; flips there would test nothing. */
const SUPERBLOCK_FIELDS_END = 80;

for (const [name, rel, seed] of [
  ['sha256', FIXTURE.v5Sha256, 0x5eed_0001],
  ['blake3', FIXTURE.v5Blake3, 0x5eed_0002],
] as const) {
  void describe(`fuzzing the upstream ${name} v5 fixture`, () => {
    void it('rejects every truncation cleanly', (t) => {
      const buf = readUpstreamFixture(t, rel);
      if (buf === undefined) return;
      ok(accepted(buf));
      // Every record is reachable and the last one ends at the end of the file, so no proper
      // prefix is a valid image.
      const wronglyAccepted: number[] = [];
      for (let len = 0; len < buf.length; len++) {
        if (accepted(buf.subarray(0, len))) wronglyAccepted.push(len);
      }
      equal(wronglyAccepted.length, 0, `accepted truncations: ${wronglyAccepted.join(', ')}`);
    });

    void it(`survives ${FLIPS} random single-byte flips`, (t) => {
      const buf = readUpstreamFixture(t, rel);
      if (buf === undefined) return;
      const random = prng(seed);
      const tail = buf.length - 8192;
      let accepts = 0;
      for (let k = 0; k < FLIPS; k++) {
        const r = Math.floor(random() * (SUPERBLOCK_FIELDS_END + tail));
        const at = r < SUPERBLOCK_FIELDS_END ? r : 8192 + r - SUPERBLOCK_FIELDS_END;
        const mask = 1 + Math.floor(random() * 255);
        const copy = Buffer.from(buf);
        copy.writeUInt8(copy.readUInt8(at) ^ mask, at);
        if (accepted(copy)) accepts++;
      }
      // Fields outside the digests (mtime, uid, permission bits, names that stay sorted...) may
      // change without making the image invalid; most flips must still be caught.
      t.diagnostic(`${accepts} of ${FLIPS} flipped images were accepted`);
      ok(accepts < FLIPS / 2);
    });
  });
}
