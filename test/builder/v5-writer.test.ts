import { deepEqual, equal, ok, throws } from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import type { BootstrapSpec } from '../../src/builder/bootstrap-spec.js';
import {
  countOccurrences,
  newDir,
  sortEntries,
  treeFromBootstrap,
  type BuildEntry,
  type BuildInode,
} from '../../src/builder/tree.js';
import { writeV5Bootstrap } from '../../src/builder/v5-writer.js';
import { sha256 } from '../../src/codec/digest.js';
import { NydusError } from '../../src/errors/errors.js';
import {
  BlobFeature,
  ChunkFlag,
  InodeFlag,
  isDir,
  isReg,
  isSymlink,
  S_IFBLK,
  S_IFCHR,
  S_IFIFO,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  S_IFSOCK,
  SuperFlag,
} from '../../src/format/flags.js';
import type { BlobInfo, ChunkInfo, XattrPair } from '../../src/format/model.js';
import { RafsV5Bootstrap } from '../../src/format/v5/bootstrap.js';
import { FIXTURE, readUpstreamFixture } from '../helpers/fixtures.js';
import { blobInfo } from '../helpers/memory-blobs.js';

// Golden and synthetic tests of the RAFS v5 writer: byte identity with the upstream repeatable
// fixtures (rafs-format.md 10.3), and a synthetic tree read back through the Bootstrap API.

/** u64 inodes_count in the superblock: the one field the fixtures' builder counted differently. */
const INODES_COUNT_OFFSET = 24;
const CHUNK = 0x1000;

function isInvalidArg(e: unknown): boolean {
  return e instanceof NydusError && e.code === 'ERR_INVALID_ARG';
}

function fixtureSpec(b: RafsV5Bootstrap, recordOrder: 'dfs' | 'index'): BootstrapSpec {
  return {
    tree: treeFromBootstrap(b),
    chunkSize: b.superblock.chunkSize,
    compressor: b.superblock.compressor,
    digester: b.superblock.digester,
    explicitUidGid: b.superblock.explicitUidGid,
    blobs: b.blobs,
    prefetch: [],
    v5: { recordOrder },
  };
}

/** Every (path, ino) of a bootstrap, walked from the root with an explicit stack. */
function paths(b: RafsV5Bootstrap): [string, number][] {
  const out: [string, number][] = [];
  const stack: [string, number][] = [['/', b.rootIno]];
  for (let top = stack.pop(); top !== undefined; top = stack.pop()) {
    out.push(top);
    const [path, ino] = top;
    if (!isDir(b.getAttr(ino).mode)) continue;
    for (const e of b.readdir(ino))
      stack.push([`${path === '/' ? '' : path}/${e.name.toString('latin1')}`, e.ino]);
  }
  return out;
}

function lookupPath(b: RafsV5Bootstrap, path: string): number {
  let ino = b.rootIno;
  for (const part of path.split('/').filter((p) => p !== '')) {
    const e = b.lookup(ino, Buffer.from(part, 'latin1'));
    ok(e !== undefined, `${path}: ${part} not found`);
    ino = e.ino;
  }
  return ino;
}

/** Record indexes in DFS pre-order, read from the bootstrap's own directory structure. */
function preOrder(b: RafsV5Bootstrap): number[] {
  const out: number[] = [];
  const stack = [b.rootIno];
  for (let i = stack.pop(); i !== undefined; i = stack.pop()) {
    out.push(i);
    const r = b.record(i).inode;
    if (isDir(r.mode)) for (let k = r.childCount - 1; k >= 0; k--) stack.push(r.childIndex + k);
  }
  return out;
}

/** Records sit back to back in `order`, starting right after the extended blob table. */
function assertPhysicalOrder(b: RafsV5Bootstrap, order: readonly number[]): void {
  const sb = b.rawSuperblock;
  let pos = sb.extendedBlobTableOffset + 64 * sb.extendedBlobTableEntries;
  for (const index of order) {
    const rec = b.record(index);
    equal(rec.offset, pos, `record of index ${index}`);
    pos = rec.end;
  }
  equal(order.length, b.indexCount);
}

describe('writeV5Bootstrap on the upstream repeatable fixtures', () => {
  for (const [label, rel] of [
    ['sha256', FIXTURE.v5Sha256],
    ['blake3', FIXTURE.v5Blake3],
  ] as const) {
    it(`re-emits the ${label} fixture byte for byte in index order, except inodes_count`, (t: TestContext) => {
      const fixture = readUpstreamFixture(t, rel);
      if (fixture === undefined) return;
      const b = RafsV5Bootstrap.parse(fixture);
      deepEqual(b.prefetchInos(), []);
      const out = writeV5Bootstrap(fixtureSpec(b, 'index'));
      equal(out.length, fixture.length);
      // The fixtures' v2.1 builder counted 51 inodes; the current rule (root + non-hardlinks +
      // one per hardlink group) gives 52. That u64 is the only difference.
      equal(fixture.readBigUInt64LE(INODES_COUNT_OFFSET), 51n);
      equal(out.readBigUInt64LE(INODES_COUNT_OFFSET), 52n);
      const a = Buffer.from(fixture);
      const c = Buffer.from(out);
      a.fill(0, INODES_COUNT_OFFSET, INODES_COUNT_OFFSET + 8);
      c.fill(0, INODES_COUNT_OFFSET, INODES_COUNT_OFFSET + 8);
      ok(a.equals(c), 'bytes differ outside inodes_count');

      const w = RafsV5Bootstrap.parse(out);
      w.validate();
      // An empty directory points at the next free index when it is processed (2.9).
      const layer = listNames(w, lookupPath(w, '/normal-file-test/busybox'))[0]!;
      const bin = w.record(lookupPath(w, `/normal-file-test/busybox/${layer}/bin`));
      deepEqual(
        [bin.offset === 0, bin.inode.ino, bin.inode.childIndex, bin.inode.childCount],
        [false, 15, 25, 0],
      );
      assertPhysicalOrder(
        w,
        Array.from({ length: w.indexCount }, (_, k) => k + 1),
      );
    });

    it(`writes the ${label} fixture tree in DFS order with the same records`, (t: TestContext) => {
      const fixture = readUpstreamFixture(t, rel);
      if (fixture === undefined) return;
      const b = RafsV5Bootstrap.parse(fixture);
      const out = writeV5Bootstrap(fixtureSpec(b, 'dfs'));
      const w = RafsV5Bootstrap.parse(out);
      w.validate();
      assertPhysicalOrder(w, preOrder(w));
      equal(w.superblock.flags, b.superblock.flags);
      deepEqual(w.blobs, b.blobs);
      const want = paths(b);
      deepEqual(paths(w), want);
      for (const [path, ino] of want) {
        const got = lookupPath(w, path);
        equal(got, ino, path);
        deepEqual(w.getAttr(got), b.getAttr(ino), path);
        deepEqual(w.xattrs(got), b.xattrs(ino), path);
        deepEqual(w.record(got).inode.digest, b.record(ino).inode.digest, path);
        const mode = b.getAttr(ino).mode;
        if (isSymlink(mode)) deepEqual(w.readlink(got), b.readlink(ino), path);
        if (isReg(mode)) deepEqual(w.chunks(got), b.chunks(ino), path);
      }
      // Same index assignment, so every record (hardlink occurrences included) is the same bytes,
      // only at another offset.
      for (let index = 1; index <= b.indexCount; index++) {
        const x = b.record(index);
        const y = w.record(index);
        ok(fixture.subarray(x.offset, x.end).equals(out.subarray(y.offset, y.end)), `record ${index}`);
      }
    });
  }
});

function listNames(b: RafsV5Bootstrap, ino: number): string[] {
  return b.readdir(ino).map((e) => e.name.toString('latin1'));
}

// ---------------------------------------------------------------------------------------------
// A synthetic tree covering every entry type and the format's edges.
// ---------------------------------------------------------------------------------------------

const MTIME = 1_700_000_000;

/** Hands out chunk records in two blobs, tracking what the blob table must say. */
class Chunker {
  readonly #compress: boolean;
  readonly #count = [0, 0];
  readonly #compressed = [0, 0];
  readonly #uncompressed = [0, 0];

  /** `compress` false: chunks stored as is (for images with compressor none). */
  constructor(compress = true) {
    this.#compress = compress;
  }

  file(size: number, attrs: Partial<BuildInode> = {}, blobIndex = 0): BuildInode {
    const chunks: ChunkInfo[] = [];
    for (let off = 0; off < size; off += CHUNK) {
      const u = Math.min(CHUNK, size - off);
      const c = this.#compress ? Math.max(1, u >> 1) : u;
      const index = this.#count[blobIndex]!;
      chunks.push({
        id: sha256(Buffer.from(`chunk ${blobIndex} ${index}`)),
        blobIndex,
        flags: (this.#compress ? ChunkFlag.COMPRESSED : 0) | (blobIndex === 1 ? ChunkFlag.HAS_CRC32 : 0),
        compressedOffset: this.#compressed[blobIndex]!,
        compressedSize: c,
        uncompressedOffset: this.#uncompressed[blobIndex]!,
        uncompressedSize: u,
        fileOffset: off,
        index,
        crc32: blobIndex === 1 ? (0x9000_0000 + index) >>> 0 : 0,
      });
      this.#count[blobIndex]! += 1;
      this.#compressed[blobIndex]! += c;
      this.#uncompressed[blobIndex]! += u;
    }
    return {
      mode: S_IFREG | 0o644,
      uid: 1000,
      gid: 100,
      mtime: MTIME,
      mtimeNsec: 5,
      rdev: 0,
      size,
      xattrs: [],
      chunks,
      ...attrs,
    };
  }

  blobs(): BlobInfo[] {
    return [0, 1].map((i) =>
      blobInfo(i, i === 0 ? 'a'.repeat(64) : 'b'.repeat(64), {
        chunkSize: CHUNK,
        chunkCount: this.#count[i]!,
        compressedSize: this.#compressed[i]! + 4096,
        uncompressedSize: this.#uncompressed[i]!,
        features: i === 1 ? BlobFeature.CAP_TAR_TOC : 0,
        readaheadSize: i === 1 ? 8192 : 0,
      }),
    );
  }
}

function dir(entries: [string | Buffer, BuildInode][], attrs: Partial<BuildInode> = {}): BuildInode {
  const children: BuildEntry[] = entries.map(([n, inode]) => ({
    name: typeof n === 'string' ? Buffer.from(n) : n,
    inode,
  }));
  return newDir({
    uid: 1000,
    gid: 100,
    mtime: MTIME,
    mtimeNsec: 7,
    ...attrs,
    children: sortEntries(children),
  });
}

function special(type: number, rdev = 0, attrs: Partial<BuildInode> = {}): BuildInode {
  return {
    mode: type | 0o644,
    uid: 0,
    gid: 0,
    mtime: MTIME,
    mtimeNsec: 0,
    rdev,
    size: 0,
    xattrs: [],
    ...attrs,
  };
}

function symlink(target: string | Buffer, attrs: Partial<BuildInode> = {}): BuildInode {
  const t = typeof target === 'string' ? Buffer.from(target) : target;
  return special(S_IFLNK, 0, { mode: S_IFLNK | 0o777, target: t, size: t.length, ...attrs });
}

/** glibc makedev encoding of st_rdev. */
function makedev(major: number, minor: number): number {
  return (
    Number((BigInt(major) & 0xfffff000n) << 32n) +
    (major & 0xfff) * 0x100 +
    Number((BigInt(minor) & 0xffffff00n) << 12n) +
    (minor & 0xff)
  );
}

function xattrs(...pairs: [string, Buffer | string][]): XattrPair[] {
  return pairs
    .map(([n, v]) => ({ name: Buffer.from(n), value: typeof v === 'string' ? Buffer.from(v) : v }))
    .sort((a, b) => Buffer.compare(a.name, b.name));
}

const DEEP_LEVELS = 500;
const BIG_RDEV = makedev(0x12345, 0x678); // needs more than 32 bits

interface Synthetic {
  spec: BootstrapSpec;
  shared: BuildInode;
  many: BuildInode;
}

function synthetic(explicitUidGid = true): Synthetic {
  const ch = new Chunker();
  const shared = ch.file(3 * CHUNK + 100, {
    mode: S_IFREG | 0o755,
    mtime: MTIME + 1,
    mtimeNsec: 123_456_789,
  });
  let deep = dir([
    ['bottom-link', shared],
    ['leaf', ch.file(10)],
  ]);
  for (let k = 1; k < DEEP_LEVELS; k++) deep = dir([['d', deep]], { mtime: MTIME + k });
  const many = dir(
    Array.from({ length: 300 }, (_, k): [string, BuildInode] => [
      `entry-with-a-longer-name-${String(k).padStart(3, '0')}`,
      k % 3 === 0 ? ch.file(0) : ch.file(k * 7 + 1, { mtimeNsec: k }),
    ]),
  );
  const binary = Buffer.from(Array.from({ length: 256 }, (_, k) => k));
  const capability = Buffer.from('0000000201000000000000000000000000000000', 'hex');
  const root = dir(
    [
      [
        'a',
        dir([
          ['link1', shared],
          ['x', ch.file(5)],
        ]),
      ],
      ['b', dir([['link2', shared]])],
      ['deep', deep],
      [
        'dev',
        dir([
          ['big', special(S_IFCHR, BIG_RDEV)],
          ['fifo', special(S_IFIFO)],
          ['null', special(S_IFCHR, makedev(1, 3), { xattrs: xattrs(['user.dev', 'x']) })],
          ['sda', special(S_IFBLK, makedev(8, 0))],
          ['sock', special(S_IFSOCK, 0, { mode: S_IFSOCK | 0o755 })],
          ['wide', special(S_IFBLK, makedev(259, 0x10000))],
        ]),
      ],
      [
        'empties',
        dir([
          ['e1', dir([])],
          ['e2', dir([['e3', dir([])]])],
        ]),
      ],
      ['empty', dir([])],
      ['ids', ch.file(1, { uid: 0xffff_fffe, gid: 0xffff_ffff, mtime: 2 ** 40, mtimeNsec: 999_999_999 })],
      [
        'links',
        dir([
          ['abs', symlink('/etc/passwd')],
          ['long', symlink('x'.repeat(1000))],
          ['max', symlink('y'.repeat(4096))],
          ['odd', symlink(Buffer.from([0xff, 0x00, 0x41]), { xattrs: xattrs(['trusted.sym', 'y']) })],
          ['rel', symlink('../many/entry-with-a-longer-name-001')],
        ]),
      ],
      ['many', many],
      ['multi', ch.file(4 * CHUNK + 1, {}, 1)],
      [
        'names',
        dir([
          [Buffer.from([0xff, 0xfe, 0x80]), ch.file(2)],
          [Buffer.from('é'), ch.file(3)],
          ['n'.repeat(255), ch.file(4)],
          [Buffer.from([0x01]), special(S_IFIFO)],
          ['\u{1F600}', dir([])],
        ]),
      ],
      [
        'xattrs',
        dir(
          [
            [
              'file',
              ch.file(CHUNK, {
                xattrs: xattrs(
                  ['security.capability', capability],
                  ['user.a', ''],
                  ['user.binary', binary],
                  ['trusted.t', Buffer.from([0, 0, 0])],
                ),
              }),
            ],
          ],
          { xattrs: xattrs(['user.dir', 'v'], ['user.other', 'w']) },
        ),
      ],
    ],
    { mtime: 0, mtimeNsec: 0 },
  );
  const spec: BootstrapSpec = {
    tree: { root },
    chunkSize: CHUNK,
    compressor: 'zstd',
    digester: 'blake3',
    explicitUidGid,
    blobs: ch.blobs(),
    prefetch: [many, shared],
    v5: { recordOrder: 'dfs' },
  };
  return { spec, shared, many };
}

function expectedSize(inode: BuildInode): number {
  if (isDir(inode.mode)) {
    const s = (inode.children ?? []).reduce((n, c) => n + c.name.length + 8, 0);
    return s === 0 ? 4096 : Math.ceil(s / 4096) * 4096;
  }
  return inode.size;
}

function expectedBlocks(inode: BuildInode): number {
  const payload = inode.xattrs.reduce((n, x) => n + 4 + x.name.length + 1 + x.value.length, 0);
  return Math.ceil((expectedSize(inode) + Math.ceil(payload / 8) * 8) / 512);
}

interface ReadBack {
  /** Inode number of each BuildInode. */
  inoOf: Map<BuildInode, number>;
  /** Number of tree entries (root included). */
  entries: number;
}

/** Walk the input tree and the bootstrap side by side; everything must read back as given. */
function checkReadBack(b: RafsV5Bootstrap, spec: BootstrapSpec): ReadBack {
  const counts = countOccurrences(spec.tree);
  const inoOf = new Map<BuildInode, number>();
  const root = spec.tree.root;
  inoOf.set(root, b.rootIno);
  let entries = 1;
  const stack: [BuildInode, number, string][] = [[root, b.rootIno, '/']];
  for (let top = stack.pop(); top !== undefined; top = stack.pop()) {
    const [inode, ino, path] = top;
    const a = b.getAttr(ino);
    const occurrences = counts.get(inode) ?? 1;
    equal(a.ino, ino, path);
    equal(a.mode, inode.mode, path);
    equal(a.uid, spec.explicitUidGid ? inode.uid : 0, path);
    equal(a.gid, spec.explicitUidGid ? inode.gid : 0, path);
    equal(a.mtime, inode.mtime, path);
    equal(a.mtimeNsec, inode.mtimeNsec, path);
    equal(a.rdev, inode.rdev % 2 ** 32, path);
    equal(a.size, expectedSize(inode), path);
    equal(a.blocks, expectedBlocks(inode), path);
    deepEqual(b.xattrs(ino), inode.xattrs, path);
    const subdirs = (inode.children ?? []).filter((c) => isDir(c.inode.mode)).length;
    equal(a.nlink, isDir(inode.mode) ? 2 + subdirs : isReg(inode.mode) ? occurrences : 1, path);
    if (isSymlink(inode.mode)) deepEqual(b.readlink(ino), inode.target, path);
    if (isReg(inode.mode)) deepEqual(b.chunks(ino), inode.chunks, path);
    if (!isDir(inode.mode)) continue;

    const children = inode.children ?? [];
    equal(b.childCount(ino), children.length, path);
    const listed = b.readdir(ino);
    deepEqual(
      listed.map((e) => e.name),
      children.map((c) => c.name),
      path,
    );
    const rec = b.record(ino).inode;
    children.forEach((c, k) => {
      entries += 1;
      const where = `${path}${c.name.toString('latin1')}`;
      const e = b.lookup(ino, c.name);
      ok(e !== undefined, where);
      deepEqual(e, listed[k], where);
      equal(e.type, c.inode.mode & S_IFMT, where);
      const seen = inoOf.get(c.inode);
      if (seen !== undefined) {
        ok(isReg(c.inode.mode), `${where}: only regular files share an ino`);
        equal(e.ino, seen, `${where}: hardlink occurrences share the first's ino`);
      } else {
        inoOf.set(c.inode, e.ino);
        stack.push([c.inode, e.ino, `${where}/`]);
      }
      // Each occurrence has its own record: own name and parent, the shared ino.
      const own = b.record(rec.childIndex + k);
      deepEqual(own.name, c.name, where);
      equal(own.inode.parent, ino, where);
      equal(own.inode.ino, e.ino, where);
    });
  }
  return { inoOf, entries };
}

describe('writeV5Bootstrap on a synthetic tree', () => {
  it('writes a bootstrap that reads back exactly as the input', () => {
    const { spec, shared, many } = synthetic();
    const out = writeV5Bootstrap(spec);
    const b = RafsV5Bootstrap.parse(out);
    b.validate();
    const { inoOf, entries } = checkReadBack(b, spec);

    const sb = b.superblock;
    equal(
      sb.flags,
      SuperFlag.COMPRESSION_ZSTD | SuperFlag.HASH_BLAKE3 | SuperFlag.EXPLICIT_UID_GID | SuperFlag.HAS_XATTR,
    );
    equal(sb.chunkSize, CHUNK);
    equal(b.indexCount, entries);
    // Every entry but the two later occurrences of the hardlinked file is its own inode.
    equal(sb.inodesCount, entries - 2);
    equal(new Set(inoOf.values()).size, entries - 2);
    deepEqual(b.prefetchInos(), [inoOf.get(many)!, inoOf.get(shared)!]);
    deepEqual(
      b.blobs.map((x) => [
        x.blobId,
        x.chunkCount,
        x.features,
        x.compressedSize,
        x.uncompressedSize,
        x.readaheadSize,
      ]),
      spec.blobs.map((x) => [
        x.blobId,
        x.chunkCount,
        x.features,
        x.compressedSize,
        x.uncompressedSize,
        x.readaheadSize,
      ]),
    );
    assertPhysicalOrder(b, preOrder(b));

    // The hardlinked file: three occurrences in three directories, one ino (the first
    // occurrence's index, /a/link1), nlink 3, no HARDLINK flag by default.
    const a = lookupPath(b, '/a');
    const ino = lookupPath(b, '/a/link1');
    equal(ino, b.record(a).inode.childIndex);
    const deepPath = `/deep${'/d'.repeat(DEEP_LEVELS - 1)}/bottom-link`;
    deepEqual([lookupPath(b, '/b/link2'), lookupPath(b, deepPath)], [ino, ino]);
    equal(b.getAttr(ino).nlink, 3);
    for (let index = 1; index <= b.indexCount; index++) {
      equal(b.record(index).inode.flags & InodeFlag.HARDLINK, 0);
    }
    // A device number wider than 32 bits keeps its low 32 bits.
    ok(BIG_RDEV > 2 ** 32);
    equal(b.getAttr(lookupPath(b, '/dev/big')).rdev, BIG_RDEV % 2 ** 32);
    equal(b.getAttr(lookupPath(b, '/dev/wide')).rdev, 0x1001_0300);
    equal(b.getAttr(lookupPath(b, '/many')).size, 12288);
    equal(b.getAttr(b.rootIno).mtime, 0);
  });

  it('writes uid and gid 0 and no EXPLICIT_UID_GID when uid/gid are not explicit', () => {
    const { spec } = synthetic(false);
    const b = RafsV5Bootstrap.parse(writeV5Bootstrap(spec));
    b.validate();
    equal(b.superblock.flags & SuperFlag.EXPLICIT_UID_GID, 0);
    equal(b.superblock.explicitUidGid, false);
    checkReadBack(b, spec);
    for (let index = 1; index <= b.indexCount; index++) {
      const r = b.record(index).inode;
      deepEqual([r.uid, r.gid], [0, 0], `index ${index}`);
    }
  });

  it('writes records in index order when asked', () => {
    const { spec } = synthetic();
    const b = RafsV5Bootstrap.parse(writeV5Bootstrap({ ...spec, v5: { recordOrder: 'index' } }));
    b.validate();
    checkReadBack(b, spec);
    assertPhysicalOrder(
      b,
      Array.from({ length: b.indexCount }, (_, k) => k + 1),
    );
  });

  it('sets HARDLINK on every occurrence of a shared regular file when asked', () => {
    const { spec } = synthetic();
    const b = RafsV5Bootstrap.parse(writeV5Bootstrap(spec, { hardlinkFlag: true }));
    b.validate();
    checkReadBack(b, spec);
    const ino = lookupPath(b, '/a/link1');
    let flagged = 0;
    for (let index = 1; index <= b.indexCount; index++) {
      const r = b.record(index).inode;
      const hard = (r.flags & InodeFlag.HARDLINK) !== 0;
      equal(hard, r.ino === ino, `index ${index}`);
      if (hard) flagged += 1;
    }
    equal(flagged, 3);
  });

  it('writes HAS_XATTR only when some inode has xattrs', () => {
    const ch = new Chunker(false);
    const spec: BootstrapSpec = {
      tree: { root: dir([['f', ch.file(CHUNK + 1)]]) },
      chunkSize: CHUNK,
      compressor: 'none',
      digester: 'sha256',
      explicitUidGid: false,
      blobs: ch.blobs(),
      prefetch: [],
    };
    const b = RafsV5Bootstrap.parse(writeV5Bootstrap(spec));
    b.validate();
    equal(b.superblock.flags, SuperFlag.COMPRESSION_NONE | SuperFlag.HASH_SHA256);
    equal(b.superblock.inodesCount, 2);
  });

  it('is deterministic', () => {
    const { spec } = synthetic();
    const first = writeV5Bootstrap(spec);
    ok(first.equals(writeV5Bootstrap(spec)));
    ok(first.equals(writeV5Bootstrap(synthetic().spec)));
  });

  it('re-emits its own output identically from the tree read back', () => {
    const { spec } = synthetic();
    const out = writeV5Bootstrap({ ...spec, prefetch: [] });
    const b = RafsV5Bootstrap.parse(out);
    const again = writeV5Bootstrap({ ...spec, tree: treeFromBootstrap(b), blobs: b.blobs, prefetch: [] });
    ok(out.equals(again));
  });

  it('writes a bootstrap with no blobs and an empty root', () => {
    const spec: BootstrapSpec = {
      tree: { root: newDir() },
      chunkSize: 0x100000,
      compressor: 'zstd',
      digester: 'blake3',
      explicitUidGid: true,
      blobs: [],
      prefetch: [],
    };
    const out = writeV5Bootstrap(spec);
    const b = RafsV5Bootstrap.parse(out);
    b.validate();
    equal(b.indexCount, 1);
    equal(b.superblock.inodesCount, 1);
    const root = b.record(1).inode;
    deepEqual([root.childIndex, root.childCount, root.size, root.blocks, root.nlink], [2, 0, 4096, 8, 2]);
    deepEqual(b.record(1).name, Buffer.from('/'));
    equal(out.length, 8192 + 8 + 128 + 8);
  });
});

describe('writeV5Bootstrap refuses what the format cannot hold', () => {
  const base = (root: BuildInode, over: Partial<BootstrapSpec> = {}): BootstrapSpec => ({
    tree: { root },
    chunkSize: CHUNK,
    compressor: 'zstd',
    digester: 'blake3',
    explicitUidGid: true,
    blobs: new Chunker().blobs(),
    prefetch: [],
    ...over,
  });

  it('rejects unsorted or duplicate children', () => {
    const root = newDir({
      children: [
        { name: Buffer.from('b'), inode: newDir() },
        { name: Buffer.from('a'), inode: newDir() },
      ],
    });
    throws(() => writeV5Bootstrap(base(root)), isInvalidArg);
    const dup = newDir({
      children: [
        { name: Buffer.from('a'), inode: special(S_IFIFO) },
        { name: Buffer.from('a'), inode: special(S_IFIFO) },
      ],
    });
    throws(() => writeV5Bootstrap(base(dup)), isInvalidArg);
  });

  it('rejects invalid names', () => {
    for (const name of ['a/b', '.', '..', '', 'x'.repeat(256), 'a\0b']) {
      const root = newDir({ children: [{ name: Buffer.from(name), inode: special(S_IFIFO) }] });
      throws(() => writeV5Bootstrap(base(root)), isInvalidArg, JSON.stringify(name));
    }
  });

  it('rejects a directory reachable twice, and cycles', () => {
    const d = newDir();
    throws(
      () =>
        writeV5Bootstrap(
          base(
            dir([
              ['x', d],
              ['y', d],
            ]),
          ),
        ),
      isInvalidArg,
    );
    const root = newDir();
    root.children = [{ name: Buffer.from('loop'), inode: root }];
    throws(() => writeV5Bootstrap(base(root)), isInvalidArg);
  });

  it('rejects files whose chunks do not match their size, or name a missing blob', () => {
    const ch = new Chunker();
    const f = ch.file(CHUNK + 1);
    throws(() => writeV5Bootstrap(base(dir([['f', { ...f, size: 3 * CHUNK }]]))), isInvalidArg);
    // A file still to be read from its source has no chunk records yet.
    const unchunked: BuildInode = { ...f, sourcePath: '/src/f' };
    delete unchunked.chunks;
    throws(() => writeV5Bootstrap(base(dir([['f', unchunked]]))), isInvalidArg);
    const g = ch.file(1, {}, 1);
    throws(() => writeV5Bootstrap(base(dir([['g', g]]), { blobs: ch.blobs().slice(0, 1) })), isInvalidArg);
  });

  it('rejects bad symlinks, prefetch inodes outside the tree and bad chunk sizes', () => {
    throws(() => writeV5Bootstrap(base(dir([['l', symlink('')]]))), isInvalidArg);
    throws(() => writeV5Bootstrap(base(dir([['l', symlink('z'.repeat(4097))]]))), isInvalidArg);
    throws(() => writeV5Bootstrap(base(dir([]), { prefetch: [newDir()] })), isInvalidArg);
    throws(() => writeV5Bootstrap(base(dir([]), { chunkSize: 3000 })), isInvalidArg);
  });

  it('rejects out-of-range attributes and xattrs', () => {
    throws(() => writeV5Bootstrap(base(dir([['f', special(S_IFIFO, 0, { uid: 2 ** 32 })]]))), isInvalidArg);
    throws(() => writeV5Bootstrap(base(dir([['f', special(S_IFIFO, 0, { mtime: -1 })]]))), isInvalidArg);
    throws(
      () => writeV5Bootstrap(base(dir([['f', special(S_IFIFO, 0, { xattrs: xattrs(['bogus.x', 'v']) })]]))),
      isInvalidArg,
    );
    const twice = [...xattrs(['user.a', '1']), ...xattrs(['user.a', '2'])];
    throws(() => writeV5Bootstrap(base(dir([['f', special(S_IFIFO, 0, { xattrs: twice })]]))), isInvalidArg);
  });
});
