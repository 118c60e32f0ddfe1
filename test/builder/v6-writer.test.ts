import { deepEqual, equal, notEqual, ok, throws } from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, ftruncateSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import type { BootstrapSpec } from '../../src/builder/bootstrap-spec.js';
import {
  countOccurrences,
  newDir,
  nlinkOf,
  type BuildEntry,
  type BuildInode,
  type BuildTree,
  treeFromBootstrap,
} from '../../src/builder/tree.js';
import { DEFAULT_MAPPED_BLKADDR_ALIGN, writeV6Bootstrap } from '../../src/builder/v6-writer.js';
import { NydusError } from '../../src/errors/errors.js';
import {
  BlobFeature,
  ChunkFlag,
  isDir,
  isReg,
  isSymlink,
  S_IFBLK,
  S_IFCHR,
  S_IFIFO,
  S_IFLNK,
  S_IFREG,
  S_IFSOCK,
  SuperFlag,
} from '../../src/format/flags.js';
import type { BlobInfo, ChunkInfo, XattrPair } from '../../src/format/model.js';
import { RafsV6Bootstrap } from '../../src/format/v6/bootstrap.js';
import { CHUNK_INDEX_SIZE } from '../../src/format/v6/chunk-index.js';
import { dirDataSize } from '../../src/format/v6/dirent.js';
import { DataLayout, inodeSize } from '../../src/format/v6/inode.js';
import { xattrIbodySize } from '../../src/format/v6/xattr.js';
import { FIXTURE, IN_CI, readUpstreamFixture } from '../helpers/fixtures.js';

/*
 * The v6 writer: byte identity with nydus-image on the upstream fixture (rafs-format.md 10.6,
 * which exercises the placement of 3.17), round trips of a synthetic tree with every entry kind
 * through the v6 reader, layout invariants checked from the outside (no overlaps, inline tails
 * inside their block), fsck.erofs on the output, determinism and argument errors.
 */

const CHUNK = 0x1_0000;
const BLOCK = 4096;

function sha256(b: Buffer | string): Buffer {
  return createHash('sha256').update(b).digest();
}

function alignUp(x: number, a: number): number {
  return Math.ceil(x / a) * a;
}

/** Chunks of one data blob, laid out like an ALIGNED blob: each at the next 4 KiB boundary. */
class BlobMaker {
  readonly chunks: ChunkInfo[] = [];
  #compressed = 0;
  #uncompressed = 0;

  constructor(
    readonly index: number,
    readonly features: number,
  ) {}

  chunk(seed: string, size: number, fileOffset: number, compressed = true): ChunkInfo {
    const c: ChunkInfo = {
      id: sha256(`chunk ${seed}`),
      blobIndex: this.index,
      flags: compressed ? ChunkFlag.COMPRESSED | ChunkFlag.HAS_CRC32 : ChunkFlag.HAS_CRC32,
      compressedOffset: this.#compressed,
      compressedSize: compressed ? Math.ceil(size / 3) : size,
      uncompressedOffset: this.#uncompressed,
      uncompressedSize: size,
      fileOffset,
      index: this.chunks.length,
      crc32: sha256(seed).readUInt32LE(0),
    };
    this.chunks.push(c);
    this.#compressed += c.compressedSize;
    this.#uncompressed = alignUp(this.#uncompressed + size, BLOCK);
    return c;
  }

  info(): BlobInfo {
    const n = this.chunks.length;
    return {
      index: this.index,
      blobId: sha256(`blob ${this.index}`).toString('hex'),
      chunkSize: CHUNK,
      chunkCount: n,
      compressor: 'zstd',
      digester: 'blake3',
      features: this.features,
      compressedSize: this.#compressed + 16 * n,
      uncompressedSize: this.#uncompressed,
      readaheadOffset: 0,
      readaheadSize: 0,
      ciCompressor: 'none',
      ciOffset: this.#compressed,
      ciCompressedSize: 16 * n,
      ciUncompressedSize: 16 * n,
      tocSize: 0,
      tocDigest: Buffer.alloc(32),
      metaDigest: Buffer.alloc(32),
      metaSize: 0,
      cipher: 0,
      deviceBlocks: this.#uncompressed / BLOCK,
      mappedBlkaddr: 0,
    };
  }
}

function entry(name: string | Buffer, inode: BuildInode): BuildEntry {
  return { name: typeof name === 'string' ? Buffer.from(name) : name, inode };
}

function sorted(entries: BuildEntry[]): BuildEntry[] {
  return entries.sort((a, b) => Buffer.compare(a.name, b.name));
}

function dir(entries: BuildEntry[], attrs: Partial<BuildInode> = {}): BuildInode {
  return newDir({
    mtime: 1_700_000_000,
    mtimeNsec: 5,
    uid: 10,
    gid: 20,
    ...attrs,
    children: sorted(entries),
  });
}

function node(type: number, attrs: Partial<BuildInode> = {}): BuildInode {
  return {
    mode: type | 0o644,
    uid: 1000,
    gid: 1001,
    mtime: 1_600_000_000,
    mtimeNsec: 123_456_789,
    rdev: 0,
    size: 0,
    xattrs: [],
    ...attrs,
  };
}

function file(chunks: ChunkInfo[], size: number, attrs: Partial<BuildInode> = {}): BuildInode {
  return node(S_IFREG, { size, chunks, ...attrs });
}

function symlink(target: Buffer | string, attrs: Partial<BuildInode> = {}): BuildInode {
  const t = typeof target === 'string' ? Buffer.from(target) : target;
  return node(S_IFLNK, { mode: S_IFLNK | 0o777, target: t, size: t.length, ...attrs });
}

function xattrs(pairs: [string, Buffer | string][]): XattrPair[] {
  return pairs
    .map(([n, v]) => ({ name: Buffer.from(n), value: typeof v === 'string' ? Buffer.from(v) : v }))
    .sort((a, b) => Buffer.compare(a.name, b.name));
}

/** Linux new_encode_dev. */
function makedev(major: number, minor: number): number {
  return ((minor & 0xff) | (major << 8) | ((minor & ~0xff) << 12)) >>> 0;
}

interface Synthetic {
  spec: BootstrapSpec;
  /** Inodes worth naming in assertions. */
  hardlinked: BuildInode;
  contiguous: BuildInode;
  bigDir: BuildInode;
  deepest: BuildInode;
}

const DEPTH = 1200;

/** A tree with every entry kind and the layout corner cases of rafs-format.md 3.10-3.17. */
function synthetic(): Synthetic {
  const b0 = new BlobMaker(
    0,
    BlobFeature.ALIGNED | BlobFeature.INLINED_CHUNK_DIGEST | BlobFeature.CAP_TAR_TOC,
  );
  const b1 = new BlobMaker(1, BlobFeature.ALIGNED | BlobFeature.CAP_TAR_TOC);

  // 2.5 chunks contiguous in blob 0: the page-cache trick applies (chunkbits of 4 chunks).
  const contSize = 2 * CHUNK + CHUNK / 2;
  const contiguous = file(
    [b0.chunk('c0', CHUNK, 0), b0.chunk('c1', CHUNK, CHUNK), b0.chunk('c2', CHUNK / 2, 2 * CHUNK, false)],
    contSize,
    { xattrs: xattrs([['user.kind', 'contiguous']]) },
  );
  // Three chunks split over two blobs: no trick.
  const mixedSize = 2 * CHUNK + 100;
  const mixed = file(
    [b1.chunk('m0', CHUNK, 0), b0.chunk('m1', CHUNK, CHUNK), b1.chunk('m2', 100, 2 * CHUNK)],
    mixedSize,
  );
  // Two chunks in one blob, not adjacent (a small chunk sits between them): no trick.
  const gapA = b0.chunk('g0', CHUNK, 0);
  b0.chunk('between', 5000, 0);
  const gapped = file([gapA, b0.chunk('g1', 7, CHUNK)], CHUNK + 7);
  // Dedup: reuses chunks of other files, one at a different file offset; and the same content
  // stored in both blobs (same id, two chunk-table records).
  const dupe = file(
    [
      { ...gapA, fileOffset: 0 },
      { ...contiguous.chunks![0]!, fileOffset: CHUNK },
      b1.chunk('c2', CHUNK / 2, 2 * CHUNK),
    ],
    2 * CHUNK + CHUNK / 2,
  );
  const small = file([b1.chunk('small', 3000, 0)], 3000, {
    xattrs: xattrs([
      ['security.capability', Buffer.from([1, 0, 0, 2, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])],
      ['user.empty', Buffer.alloc(0)],
      ['trusted.overlay.opaque', 'y'],
      ['system.posix_acl_access', Buffer.from([2, 0, 0, 0, 1, 0, 6, 0, 0xff, 0xff, 0xff, 0xff])],
      ['user.bin', Buffer.from([0, 0xff, 0x80, 0])],
    ]),
  });
  const hardlinked = file([b0.chunk('hl', 4097, 0)], 4097, { mode: S_IFREG | 0o755 });

  // 320 entries: dirents span several blocks; a mix of files, symlinks and subdirectories,
  // so many small inodes fill the partial blocks the directories leave.
  const bigEntries: BuildEntry[] = [];
  for (let i = 0; i < 320; i++) {
    const name = `entry-${String(i).padStart(4, '0')}-${'x'.repeat(i % 40)}`;
    const inode =
      i % 50 === 7
        ? dir([entry('inner', file([], 0))])
        : i % 3 === 0
          ? symlink(`../target/${'t'.repeat(i % 90)}`)
          : file([], 0, { mtime: i });
    bigEntries.push(entry(name, inode));
  }
  const bigDir = dir(bigEntries, { xattrs: xattrs([['user.big', 'dir']]) });

  // One directory block filled to exactly 4096 bytes: i_size 4096, no tail, FLAT_PLAIN.
  // "." and ".." cost 13 + 14; 16 names of 227 bytes and one of 233 cost 4069.
  const exactEntries: BuildEntry[] = [];
  for (let i = 0; i < 17; i++) {
    exactEntries.push(entry(String.fromCharCode(97 + i).repeat(i === 16 ? 233 : 227), file([], 0)));
  }
  const exact = dir(exactEntries);

  // 1200 nested directories, the hardlink at the bottom.
  // "leaf" reuses the second chunk of "contiguous" at another file offset. /deep/... is dumped
  // before /files (index order), so the chunk table keeps the record of /files/contiguous; a
  // level-order walk would keep this one.
  const deepest = dir([
    entry('hard-deep', hardlinked),
    entry('leaf', file([{ ...contiguous.chunks![1]!, fileOffset: 0 }], CHUNK)),
  ]);
  let deep = deepest;
  for (let i = DEPTH - 1; i >= 0; i--) deep = dir([entry(`d${i}`, deep)]);

  const longTarget = Buffer.alloc(4000, 'L');
  const root = dir(
    [
      entry('-dash', file([], 0)), // sorts before "."
      entry('+plus', symlink('-dash')), // sorts before "."
      entry('.-between', file([], 0)), // sorts between "." and ".."
      entry('.hidden', dir([])),
      entry('big', bigDir),
      entry('empty', dir([])),
      entry('exact', exact),
      entry('deep', deep),
      entry(
        'files',
        dir([
          entry('contiguous', contiguous),
          entry('mixed', mixed),
          entry('gapped', gapped),
          entry('dupe', dupe),
          entry('small', small),
          entry('empty-file', file([], 0, { uid: 0, gid: 0 })),
          entry('hard-2', hardlinked),
        ]),
      ),
      entry('hard-1', hardlinked),
      entry(
        'links',
        dir([
          entry('short', symlink('target')),
          entry('long', symlink(longTarget)), // 4000 bytes: inline after the inode
          entry('long-xattr', symlink(longTarget, { xattrs: xattrs([['user.pad', Buffer.alloc(100, 1)]]) })), // plain
          entry('max', symlink(Buffer.alloc(4096, 'M'))), // exactly one block, plain
        ]),
      ),
      entry(
        'dev',
        dir([
          entry('null', node(S_IFCHR, { rdev: makedev(1, 3) })),
          entry('sda1', node(S_IFBLK, { rdev: makedev(8, 1), mode: S_IFBLK | 0o660 })),
          entry('big-minor', node(S_IFCHR, { rdev: makedev(259, 0x12345) })),
          entry('fifo', node(S_IFIFO)),
          entry('sock', node(S_IFSOCK, { mode: S_IFSOCK | 0o777, xattrs: xattrs([['user.s', 'ock']]) })),
        ]),
      ),
      entry(Buffer.from([0xff, 0xfe, 0x41, 0x80]), file([], 0)), // not UTF-8
      entry('n'.repeat(255), file([], 0)),
    ],
    { mtime: 0, mtimeNsec: 0, uid: 0, gid: 0 },
  );
  const spec = specOf({ root }, [b0.info(), b1.info()], [bigDir, hardlinked]);
  return { spec, hardlinked, contiguous, bigDir, deepest };
}

/** A spec of the test's chunk size and codecs, uid/gid recorded. */
function specOf(tree: BuildTree, blobs: BlobInfo[], prefetch: BuildInode[] = []): BootstrapSpec {
  return {
    tree,
    chunkSize: CHUNK,
    compressor: 'zstd',
    digester: 'blake3',
    explicitUidGid: true,
    blobs,
    prefetch,
  };
}

/** Expected on-disk i_ino of each inode: builder indexes (rafs-format.md 2.9), first name wins. */
function expectedIndexes(tree: BuildTree, rootIno: number): Map<BuildInode, number> {
  const out = new Map<BuildInode, number>([[tree.root, rootIno]]);
  let next = 2;
  const stack: BuildInode[] = [tree.root];
  while (stack.length > 0) {
    const d = stack.pop()!;
    const kids = d.children ?? [];
    for (const e of kids) {
      if (!out.has(e.inode)) out.set(e.inode, next);
      next++;
    }
    const dirs = kids.filter((e) => isDir(e.inode.mode));
    for (let i = dirs.length - 1; i >= 0; i--) stack.push(dirs[i]!.inode);
  }
  return out;
}

function totalEntries(tree: BuildTree): number {
  let n = 1;
  const stack = [tree.root];
  while (stack.length > 0) {
    for (const e of stack.pop()!.children ?? []) {
      n++;
      if (isDir(e.inode.mode)) stack.push(e.inode);
    }
  }
  return n;
}

/**
 * Walk the written image next to the tree it came from and compare everything the Bootstrap API
 * shows. Returns the nid of every inode.
 */
function compareTree(b: RafsV6Bootstrap, spec: BootstrapSpec): Map<BuildInode, number> {
  const counts = countOccurrences(spec.tree);
  const indexes = expectedIndexes(spec.tree, spec.v6?.rootIno ?? 1);
  const nids = new Map<BuildInode, number>([[spec.tree.root, b.rootIno]]);
  const stack: [BuildInode, number][] = [[spec.tree.root, b.rootIno]];
  const check = (inode: BuildInode, nid: number, what: string): void => {
    const a = b.getAttr(nid);
    equal(a.mode, inode.mode, what);
    equal(a.uid, spec.explicitUidGid ? inode.uid : 0, what);
    equal(a.gid, spec.explicitUidGid ? inode.gid : 0, what);
    equal(a.mtime, inode.mtime, what);
    equal(a.mtimeNsec, inode.mtimeNsec, what);
    equal(a.nlink, nlinkOf(inode, counts.get(inode) ?? 0), what);
    equal(b.inode(nid).ino, indexes.get(inode), what);
    equal(b.inode(nid).extended, true, what);
    deepEqual(b.xattrs(nid), inode.xattrs, what);
    if (isDir(inode.mode)) {
      const names = [Buffer.from('.'), Buffer.from('..'), ...(inode.children ?? []).map((e) => e.name)];
      equal(a.size, dirDataSize(names.sort((x, y) => Buffer.compare(x, y))), what);
    } else if (isSymlink(inode.mode)) {
      equal(a.size, inode.target!.length, what);
      deepEqual(b.readlink(nid), inode.target, what);
    } else if (isReg(inode.mode)) {
      equal(a.size, inode.size, what);
      deepEqual(
        b.chunks(nid),
        (inode.chunks ?? []).map((c, k) => ({ ...c, fileOffset: k * CHUNK })),
        what,
      );
    } else {
      equal(a.size, 0, what);
      equal(b.inode(nid).layout, DataLayout.FLAT_PLAIN, what);
      equal(b.inode(nid).iu, inode.rdev, what);
    }
  };
  check(spec.tree.root, b.rootIno, '/');
  while (stack.length > 0) {
    const [inode, nid] = stack.pop()!;
    const kids = inode.children ?? [];
    const listed = b.readdir(nid);
    equal(b.childCount(nid), kids.length);
    deepEqual(
      listed.map((e) => e.name),
      kids.map((e) => e.name),
    );
    listed.forEach((got, i) => {
      const want = kids[i]!;
      const what = `entry ${JSON.stringify(want.name.toString())} of nid ${nid}`;
      equal(got.type, want.inode.mode & 0o170000, what);
      deepEqual(b.lookup(nid, want.name)?.ino, got.ino, what);
      const seen = nids.get(want.inode);
      if (seen !== undefined) {
        equal(got.ino, seen, `${what}: a shared inode keeps one nid`);
        return;
      }
      nids.set(want.inode, got.ino);
      check(want.inode, got.ino, what);
      if (isDir(want.inode.mode)) stack.push([want.inode, got.ino]);
    });
  }
  equal(new Set(nids.values()).size, nids.size, 'distinct inodes have distinct nids');
  return nids;
}

interface Extent {
  start: number;
  end: number;
  what: string;
}

/**
 * Every byte range the inodes of `nids` own (inode, xattrs, inline tail or chunk indexes; data
 * blocks), checked for overlaps and for staying inside the meta area; inline tails must stay
 * inside their inode's block (the kernel reads them from one block).
 */
function checkPlacement(b: RafsV6Bootstrap, nids: Iterable<number>): void {
  const metaStart = b.erofsSuper.metaBlkaddr * BLOCK;
  const extents: Extent[] = [];
  for (const nid of new Set(nids)) {
    const inode = b.inode(nid);
    const off = b.inodeOffset(nid);
    const head = inodeSize(inode) + xattrIbodySize(inode.xattrIcount);
    let end = off + head;
    if (inode.layout === DataLayout.CHUNK_BASED) {
      end = alignUp(end, 8) + CHUNK_INDEX_SIZE * Math.ceil(inode.size / CHUNK);
    } else if (isDir(inode.mode) || isSymlink(inode.mode)) {
      const inline = inode.layout === DataLayout.FLAT_INLINE;
      const tail = inline ? inode.size % BLOCK : 0;
      const blocks = inline ? Math.floor(inode.size / BLOCK) : Math.ceil(inode.size / BLOCK);
      if (inline) {
        ok(tail > 0, `nid ${nid}: inline layout without a tail`);
        ok((off % BLOCK) + head + tail <= BLOCK, `nid ${nid}: inline tail crosses a block boundary`);
        end += tail;
      }
      if (blocks > 0) {
        extents.push({ start: inode.iu * BLOCK, end: (inode.iu + blocks) * BLOCK, what: `data of ${nid}` });
      }
    }
    extents.push({ start: off, end, what: `inode ${nid}` });
  }
  extents.sort((x, y) => x.start - y.start);
  const limit = b.extSuper.chunkTableOffset;
  extents.forEach((e, i) => {
    ok(e.start >= metaStart + BLOCK, `${e.what} starts at ${e.start}, inside the reserved first block`);
    ok(e.end <= limit, `${e.what} ends at ${e.end}, past the meta area end ${limit}`);
    const prev = extents[i - 1];
    if (prev !== undefined) ok(prev.end <= e.start, `${prev.what} overlaps ${e.what}`);
  });
}

/**
 * Expected chunk table: distinct (id, blob), sorted, the record of the last occurrence in dump
 * order. That order is the index order (a directory's children, then its child directories
 * depth first), which nydus-image calls "BFS"; every name of a hardlinked file counts.
 */
function expectedChunkTable(tree: BuildTree): ChunkInfo[] {
  const last = new Map<string, ChunkInfo>();
  const stack: BuildInode[] = [tree.root];
  while (stack.length > 0) {
    const kids = stack.pop()!.children ?? [];
    for (const e of kids) {
      for (const c of e.inode.chunks ?? []) last.set(`${c.id.toString('hex')}/${c.blobIndex}`, c);
    }
    const dirs = kids.filter((e) => isDir(e.inode.mode));
    for (let i = dirs.length - 1; i >= 0; i--) stack.push(dirs[i]!.inode);
  }
  return [...last.values()].sort((x, y) => Buffer.compare(x.id, y.id) || x.blobIndex - y.blobIndex);
}

/** Run fsck.erofs on an image with sparse stand-ins for its blob devices, when available. */
function fsckErofs(t: TestContext, image: Buffer, blobs: readonly BlobInfo[]): void {
  const which = spawnSync('which', ['fsck.erofs'], { encoding: 'utf8' });
  if (which.status !== 0) {
    const why = 'fsck.erofs is not installed (Debian package erofs-utils)';
    if (IN_CI) throw new Error(`${why}; under CI=true this is a failure`);
    process.stderr.write(`\n*** SKIPPED: ${why} ***\n`);
    t.skip(why);
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'v6-writer-'));
  try {
    const img = join(dir, 'bootstrap');
    writeFileSync(img, image);
    const devices = blobs.map((blob, i) => {
      const p = join(dir, `blob${i}`);
      const fd = openSync(p, 'w');
      ftruncateSync(fd, blob.uncompressedSize);
      closeSync(fd);
      return `--device=${p}`;
    });
    // fsck.erofs descends directories recursively with block-sized frames: the 1200-level tree
    // needs more than the default 8 MiB stack, so raise the soft limit to the hard one.
    const r = spawnSync(
      'sh',
      ['-c', 'ulimit -s "$(ulimit -H -s)" 2>/dev/null; exec fsck.erofs "$@"', 'sh', ...devices, img],
      { encoding: 'utf8' },
    );
    equal(r.status, 0, `fsck.erofs failed (${r.signal ?? 'no signal'}):\n${r.stdout}\n${r.stderr}`);
  } finally {
    if (process.env['KEEP_FSCK'] === undefined) rmSync(dir, { recursive: true, force: true });
  }
}

function reemitFixture(buf: Buffer): Buffer {
  const b = RafsV6Bootstrap.parse(buf);
  return writeV6Bootstrap({
    tree: treeFromBootstrap(b),
    chunkSize: b.superblock.chunkSize,
    compressor: b.superblock.compressor,
    digester: b.superblock.digester,
    explicitUidGid: b.superblock.explicitUidGid,
    blobs: b.blobs,
    prefetch: [],
    v6: { rootIno: 0, mappedBlkaddrAlign: 2 << 20, encryptionNoneFlag: false },
  });
}

function invalidArg(e: unknown): boolean {
  return e instanceof NydusError && e.code === 'ERR_INVALID_ARG';
}

describe('v6 writer: byte identity with nydus-image (rafs-format.md 3.17, 10.6)', () => {
  it('re-emits bootstrap/rafs-v6-2.2.boot byte for byte with the early-2023 knobs', (t) => {
    const buf = readUpstreamFixture(t, FIXTURE.v6Boot);
    if (buf === undefined) return;
    const out = reemitFixture(buf);
    equal(out.length, 20480);
    equal(
      createHash('sha256').update(out).digest('hex'),
      '6a1ab377a31df3b1dfe6d3f09b4168f1db66207f77012206ac7b98cb5a42186d',
    );
    ok(out.equals(buf));
  });

  it('differs from the fixture exactly in the era bytes with the current defaults', (t) => {
    const buf = readUpstreamFixture(t, FIXTURE.v6Boot);
    if (buf === undefined) return;
    const b = RafsV6Bootstrap.parse(buf);
    const out = writeV6Bootstrap({
      tree: treeFromBootstrap(b),
      chunkSize: b.superblock.chunkSize,
      compressor: b.superblock.compressor,
      digester: b.superblock.digester,
      explicitUidGid: true,
      blobs: b.blobs,
      prefetch: [],
    });
    const diff: number[] = [];
    for (let i = 0; i < out.length; i++) if (out[i] !== buf[i]) diff.push(i);
    // Ext-sb flags byte 3 (ENCRYPTION_NONE), device slot mapped_blkaddr (512 KiB: 20 KiB -> 128),
    // root i_ino (nid 128 at meta_blkaddr 2: 8192 + 4096 + 20).
    deepEqual(diff, [1155, 1476, 1477, 12308]);
    const o = RafsV6Bootstrap.parse(out);
    equal(o.superblock.flags, 0x0100_0194);
    equal(o.deviceSlots[0]!.mappedBlkaddr, DEFAULT_MAPPED_BLKADDR_ALIGN / BLOCK);
    equal(o.inode(o.rootIno).ino, 1);
  });
});

describe('v6 writer: chunk table order', () => {
  it('sorts ids that share their first bytes by all of their bytes, then by blob', () => {
    // The table is ordered by a numeric key of each id's first four bytes, and runs that share
    // them by the whole id: many ids here share one of three prefixes, some differ only in their
    // last byte, and some chunks are the same id in both blobs.
    const b0 = new BlobMaker(0, BlobFeature.ALIGNED | BlobFeature.CAP_TAR_TOC);
    const b1 = new BlobMaker(1, BlobFeature.ALIGNED | BlobFeature.CAP_TAR_TOC);
    const prefixes = [
      Buffer.from([0, 0, 0, 0]),
      Buffer.from([0x7f, 1, 2, 3]),
      Buffer.from([0xff, 0xff, 0xff, 0xff]),
    ];
    const entries: BuildEntry[] = [];
    for (let i = 0; i < 240; i++) {
      const maker = i % 5 === 0 ? b1 : b0;
      const c = maker.chunk(`tie ${i}`, CHUNK, 0);
      if (i % 4 !== 3) prefixes[i % 3]!.copy(c.id, 0);
      if (i % 8 === 1) c.id.fill(0x42, 4, 31); // these differ only in the last byte
      const chunks = [c];
      if (i % 10 === 0) {
        // The same id in the other blob: two records, blob 0 first.
        const twin = b0.chunk(`twin ${i}`, CHUNK, CHUNK);
        c.id.copy(twin.id);
        chunks.push(twin);
      }
      entries.push(entry(`f${String(i).padStart(3, '0')}`, file(chunks, CHUNK * chunks.length)));
    }
    const tree: BuildTree = { root: dir(entries, { mtime: 0, mtimeNsec: 0, uid: 0, gid: 0 }) };
    const b = RafsV6Bootstrap.parse(writeV6Bootstrap(specOf(tree, [b0.info(), b1.info()])));
    b.validate();
    const table = b.allChunks();
    deepEqual(table, expectedChunkTable(tree));
    // The runs that share a prefix are there (the test exercises them).
    ok(table.filter((r) => r.id.subarray(0, 4).equals(prefixes[1]!)).length > 20);
  });
});

describe('v6 writer: synthetic tree with every entry kind', () => {
  it('writes an image the reader validates and reads back exactly', () => {
    const { spec, hardlinked, contiguous, bigDir, deepest } = synthetic();
    const buf = writeV6Bootstrap(spec);
    equal(buf.length % BLOCK, 0);
    const b = RafsV6Bootstrap.parse(buf);
    b.validate();

    // Superblocks and tables.
    equal(b.rootIno, 128);
    equal(b.erofsSuper.inos, totalEntries(spec.tree));
    equal(b.erofsSuper.extraDevices, 2);
    equal(b.erofsSuper.metaBlkaddr, 2);
    equal(
      b.erofsSuper.blocks,
      spec.blobs.reduce((n, x) => n + x.uncompressedSize / BLOCK, 0),
    );
    // Blob 1 lacks INLINED_CHUNK_DIGEST, so the filesystem flag is off.
    equal(
      b.superblock.flags,
      SuperFlag.COMPRESSION_ZSTD |
        SuperFlag.HASH_BLAKE3 |
        SuperFlag.EXPLICIT_UID_GID |
        SuperFlag.HAS_XATTR |
        SuperFlag.ENCRYPTION_NONE,
    );
    equal(b.extSuper.blobTableOffset, BLOCK);
    equal(b.extSuper.prefetchTableOffset, BLOCK + 2 * 256);
    equal(b.extSuper.prefetchTableSize, 8);
    equal(b.extSuper.chunkTableOffset % BLOCK, 0);
    deepEqual(
      b.blobs.map((x) => ({ ...x, mappedBlkaddr: 0 })),
      spec.blobs,
    );
    const m0 = alignUp(buf.length, DEFAULT_MAPPED_BLKADDR_ALIGN) / BLOCK;
    const m1 =
      alignUp((m0 + spec.blobs[0]!.uncompressedSize / BLOCK) * BLOCK, DEFAULT_MAPPED_BLKADDR_ALIGN) / BLOCK;
    deepEqual(
      b.deviceSlots.map((s) => [s.blobId, s.blocks, s.mappedBlkaddr]),
      [
        [spec.blobs[0]!.blobId, spec.blobs[0]!.uncompressedSize / BLOCK, m0],
        [spec.blobs[1]!.blobId, spec.blobs[1]!.uncompressedSize / BLOCK, m1],
      ],
    );

    // Every attribute, name, order, target, xattr and chunk.
    const nids = compareTree(b, spec);
    deepEqual(b.prefetchInos(), [nids.get(bigDir), nids.get(hardlinked)]);
    deepEqual(b.allChunks(), expectedChunkTable(spec.tree));
    const c1 = contiguous.chunks![1]!;
    const c1Record = b.allChunks().find((r) => r.id.equals(c1.id) && r.blobIndex === c1.blobIndex);
    equal(c1Record?.fileOffset, CHUNK, 'last occurrence in index order: /files/contiguous');
    checkPlacement(b, nids.values());

    // Hardlinks: one inode under three names, nlink 3, i_ino of the first name.
    const root = b.rootIno;
    const h1 = b.lookup(root, Buffer.from('hard-1'))!.ino;
    const files = b.lookup(root, Buffer.from('files'))!.ino;
    equal(b.lookup(files, Buffer.from('hard-2'))!.ino, h1);
    equal(nids.get(deepest) !== undefined, true);
    equal(b.lookup(nids.get(deepest)!, Buffer.from('hard-deep'))!.ino, h1);
    equal(b.getAttr(h1).nlink, 3);

    // Chunk format words: the contiguous 2.5-chunk file claims one 4-chunk (256 KiB) chunk.
    equal(b.inode(nids.get(contiguous)!).iu, 0x20 | (18 - 12));
    const mixed = b.lookup(files, Buffer.from('mixed'))!.ino;
    equal(b.inode(mixed).iu, 0x20 | (16 - 12));
    equal(b.inode(b.lookup(files, Buffer.from('gapped'))!.ino).iu, 0x20 | (16 - 12));
    deepEqual(
      b.chunkRefs(mixed).map((r) => r.blobIndex),
      [1, 0, 1],
    );

    // Directory and symlink layouts.
    const big = b.inode(nids.get(bigDir)!);
    ok(big.size > 3 * BLOCK, `big directory of ${big.size} bytes spans several blocks`);
    equal(big.layout, DataLayout.FLAT_INLINE);
    const exact = b.inode(b.lookup(root, Buffer.from('exact'))!.ino);
    equal(exact.size, BLOCK);
    equal(exact.layout, DataLayout.FLAT_PLAIN);
    const links = b.lookup(root, Buffer.from('links'))!.ino;
    const layoutOf = (name: string): number => b.inode(b.lookup(links, Buffer.from(name))!.ino).layout;
    equal(layoutOf('short'), DataLayout.FLAT_INLINE);
    equal(layoutOf('long'), DataLayout.FLAT_INLINE);
    equal(layoutOf('long-xattr'), DataLayout.FLAT_PLAIN);
    equal(layoutOf('max'), DataLayout.FLAT_PLAIN);
    equal(b.readdir(root)[0]!.name.toString(), '+plus');
  });

  it('assigns builder indexes to i_ino: siblings together, directories depth first', () => {
    const x = file([], 0);
    const tree: BuildTree = {
      root: dir([
        entry('a', dir([entry('a1', file([], 0)), entry('a2', dir([entry('a21', file([], 0))]))])),
        entry('b', x),
        entry('c', dir([entry('c1', x)])),
        entry('d', symlink('a')),
      ]),
    };
    const spec: BootstrapSpec = {
      tree,
      chunkSize: CHUNK,
      compressor: 'none',
      digester: 'sha256',
      explicitUidGid: false,
      blobs: [],
      prefetch: [],
    };
    const b = RafsV6Bootstrap.parse(writeV6Bootstrap(spec));
    b.validate();
    const ino = (...path: string[]): number => {
      let nid = b.rootIno;
      for (const p of path) nid = b.lookup(nid, Buffer.from(p))!.ino;
      return b.inode(nid).ino;
    };
    // root 1; a b c d = 2..5; then a: a1 a2 = 6, 7; then a2: a21 = 8; then c: c1 = 9 (shares b's).
    deepEqual(
      [ino(), ino('a'), ino('b'), ino('c'), ino('d'), ino('a', 'a1'), ino('a', 'a2'), ino('a', 'a2', 'a21')],
      [1, 2, 3, 4, 5, 6, 7, 8],
    );
    equal(ino('c', 'c1'), 3);
    equal(b.erofsSuper.inos, 9);
    compareTree(b, spec);
  });

  it('writes an image without blobs: meta area at 0, no prefetch table, vacuous chunk digest flag', () => {
    const link = symlink('nowhere');
    const spec: BootstrapSpec = {
      tree: { root: dir([entry('e', file([], 0)), entry('l', link), entry('p', node(S_IFIFO))]) },
      chunkSize: 0x10_0000,
      compressor: 'lz4_block',
      digester: 'sha256',
      explicitUidGid: false,
      blobs: [],
      prefetch: [link],
    };
    const buf = writeV6Bootstrap(spec);
    const b = RafsV6Bootstrap.parse(buf);
    b.validate();
    equal(buf.length, 2 * BLOCK);
    equal(b.erofsSuper.metaBlkaddr, 0);
    equal(b.inodeOffset(b.rootIno), BLOCK);
    equal(b.extSuper.prefetchTableSize, 0);
    equal(b.extSuper.prefetchTableOffset, 0);
    equal(b.extSuper.chunkTableSize, 0);
    equal(
      b.superblock.flags,
      SuperFlag.COMPRESSION_LZ4 |
        SuperFlag.HASH_SHA256 |
        SuperFlag.INLINED_CHUNK_DIGEST |
        SuperFlag.ENCRYPTION_NONE,
    );
    compareTree(b, spec);
  });

  it('honours the era knobs: mapped_blkaddr 0, no ENCRYPTION_NONE, root i_ino 0', () => {
    const { spec } = synthetic();
    const b = RafsV6Bootstrap.parse(
      writeV6Bootstrap({ ...spec, v6: { rootIno: 0, mappedBlkaddrAlign: 0, encryptionNoneFlag: false } }),
    );
    deepEqual(
      b.deviceSlots.map((s) => s.mappedBlkaddr),
      [0, 0],
    );
    equal(b.superblock.flags & SuperFlag.ENCRYPTION_NONE, 0);
    equal(b.inode(b.rootIno).ino, 0);
  });

  it('writes uid and gid only with explicitUidGid', () => {
    const { spec } = synthetic();
    const b = RafsV6Bootstrap.parse(writeV6Bootstrap({ ...spec, explicitUidGid: false }));
    equal(b.superblock.explicitUidGid, false);
    compareTree(b, { ...spec, explicitUidGid: false });
  });
});

describe('v6 writer: fsck.erofs accepts the output', () => {
  it('on the synthetic tree', (t) => {
    const { spec } = synthetic();
    fsckErofs(t, writeV6Bootstrap(spec), spec.blobs);
  });

  it('on the re-emitted upstream fixture', (t) => {
    const buf = readUpstreamFixture(t, FIXTURE.v6Boot);
    if (buf === undefined) return;
    fsckErofs(t, reemitFixture(buf), RafsV6Bootstrap.parse(buf).blobs);
  });
});

describe('v6 writer: determinism and scale', () => {
  it('writes the same bytes for the same spec, and for an equal spec built again', () => {
    const s = synthetic();
    const a = writeV6Bootstrap(s.spec);
    ok(a.equals(writeV6Bootstrap(s.spec)));
    ok(a.equals(writeV6Bootstrap(synthetic().spec)));
  });

  it('handles 100k entries in one directory and 5000 levels of nesting', () => {
    const wide: BuildEntry[] = [];
    for (let i = 0; i < 100_000; i++) wide.push(entry(`f${String(i).padStart(6, '0')}`, file([], 0)));
    let deep = dir([]);
    for (let i = 0; i < 5000; i++) deep = dir([entry('d', deep)]);
    const spec: BootstrapSpec = {
      tree: { root: dir([entry('deep', deep), entry('wide', dir(wide))]) },
      chunkSize: CHUNK,
      compressor: 'none',
      digester: 'blake3',
      explicitUidGid: false,
      blobs: [],
      prefetch: [],
    };
    const started = Date.now();
    const buf = writeV6Bootstrap(spec);
    ok(Date.now() - started < 20_000, 'writing took too long');
    const b = RafsV6Bootstrap.parse(buf);
    equal(b.erofsSuper.inos, 1 + 2 + 100_000 + 5000);
    const w = b.lookup(b.rootIno, Buffer.from('wide'))!.ino;
    equal(b.childCount(w), 100_000);
    const last = b.lookup(w, Buffer.from('f099999'));
    ok(last !== undefined);
    // deep (2) and wide (3), then the 5000 levels under deep, then the entries of wide.
    equal(b.inode(last.ino).ino, 3 + 5000 + 100_000);
    let nid = b.lookup(b.rootIno, Buffer.from('deep'))!.ino;
    for (let i = 0; i < 5000; i++) nid = b.lookup(nid, Buffer.from('d'))!.ino;
    equal(b.childCount(nid), 0);
  });
});

describe('v6 writer: specs the format cannot hold', () => {
  const base = (root: BuildInode, extra: Partial<BootstrapSpec> = {}): BootstrapSpec => ({
    tree: { root },
    chunkSize: CHUNK,
    compressor: 'none',
    digester: 'blake3',
    explicitUidGid: false,
    blobs: [],
    prefetch: [],
    ...extra,
  });

  it('rejects unsorted, duplicate and dot names', () => {
    const unsorted = newDir({ children: [entry('b', file([], 0)), entry('a', file([], 0))] });
    throws(() => writeV6Bootstrap(base(unsorted)), invalidArg);
    const dup = newDir({ children: [entry('a', file([], 0)), entry('a', file([], 0))] });
    throws(() => writeV6Bootstrap(base(dup)), invalidArg);
    throws(() => writeV6Bootstrap(base(newDir({ children: [entry('.', file([], 0))] }))), invalidArg);
    throws(() => writeV6Bootstrap(base(newDir({ children: [entry('a/b', file([], 0))] }))), invalidArg);
    throws(
      () => writeV6Bootstrap(base(newDir({ children: [entry('n'.repeat(256), file([], 0))] }))),
      invalidArg,
    );
  });

  it('rejects a directory reachable twice and a root that is not a directory', () => {
    const sub = dir([]);
    throws(() => writeV6Bootstrap(base(dir([entry('a', sub), entry('b', sub)]))), invalidArg);
    throws(() => writeV6Bootstrap(base(file([], 0))), invalidArg);
  });

  it('rejects files whose chunks do not match their size or the blob table', () => {
    const blob = new BlobMaker(0, BlobFeature.ALIGNED);
    const c = blob.chunk('x', 10, 0);
    throws(
      () => writeV6Bootstrap(base(dir([entry('f', file([c], CHUNK + 1))]), { blobs: [blob.info()] })),
      invalidArg,
    );
    throws(() => writeV6Bootstrap(base(dir([entry('f', file([c], 10))]))), invalidArg);
    throws(() => writeV6Bootstrap(base(dir([entry('f', file([], 10, { sourcePath: '/x' }))]))), invalidArg);
  });

  it('rejects oversized symlinks, foreign prefetch inodes, bad chunk sizes and encrypted blobs', () => {
    throws(() => writeV6Bootstrap(base(dir([entry('l', symlink(Buffer.alloc(4097, 'x')))]))), invalidArg);
    const blob = new BlobMaker(0, BlobFeature.ALIGNED);
    blob.chunk('x', 10, 0);
    throws(
      () => writeV6Bootstrap(base(dir([]), { blobs: [blob.info()], prefetch: [file([], 0)] })),
      invalidArg,
    );
    throws(() => writeV6Bootstrap(base(dir([]), { chunkSize: 3000 })), invalidArg);
    const encrypted = { ...blob.info(), cipher: 1 };
    throws(
      () => writeV6Bootstrap(base(dir([]), { blobs: [encrypted] })),
      (e: unknown) => e instanceof NydusError && e.code === 'ERR_UNSUPPORTED',
    );
    notEqual(writeV6Bootstrap(base(dir([]))).length, 0);
  });
});
