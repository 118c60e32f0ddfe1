import { deepEqual, equal, fail, ok, throws } from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { NydusError } from '../../../src/errors/errors.js';
import { CHUNK_RECORD_SIZE, encodeChunkRecord } from '../../../src/format/chunk-record.js';
import {
  isDir,
  isReg,
  isSymlink,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFREG,
  SuperFlag,
} from '../../../src/format/flags.js';
import type { ChunkInfo, XattrPair } from '../../../src/format/model.js';
import { decodeBlobEntry, encodeBlobEntry, type BlobTableEntry } from '../../../src/format/v6/blob-table.js';
import { RafsV6Bootstrap } from '../../../src/format/v6/bootstrap.js';
import { chunkFormat, encodeChunkIndex } from '../../../src/format/v6/chunk-index.js';
import { decodeDeviceSlot, encodeDeviceSlot, type DeviceSlot } from '../../../src/format/v6/device-table.js';
import {
  dirDataSize,
  direntTypeOf,
  DirentType,
  encodeDirData,
  type Dirent,
} from '../../../src/format/v6/dirent.js';
import { DataLayout, encodeInode, type V6Inode } from '../../../src/format/v6/inode.js';
import { encodePrefetchTable } from '../../../src/format/v6/prefetch-table.js';
import {
  decodeErofsSuper,
  decodeRafsExtSuper,
  encodeErofsSuper,
  encodeRafsExtSuper,
  type ErofsSuperblock,
  type RafsExtSuperblock,
} from '../../../src/format/v6/superblock.js';
import { encodeXattrEntry, encodeXattrIbodyHeader, xattrEntrySize } from '../../../src/format/v6/xattr.js';

/*
 * A small v6 image writer made of the module's encoders, for trees the upstream fixture lacks:
 * multi-block directories (plain and inline), symlinks, xattrs (inline and shared), compact
 * inodes, devices, hardlinks, flat-layout files, prefetch tables, and deliberately broken trees.
 * Placement is simple (inodes in tree order, then directory blocks, then the chunk table); the
 * reader must not depend on the upstream builder's placement.
 */

interface Common {
  xattrs?: XattrPair[];
  /** Indices into BuildOptions.sharedXattrs. */
  shared?: number[];
  compact?: boolean;
  uid?: number;
  gid?: number;
  mtime?: number;
}
interface DirSpec extends Common {
  kind: 'dir';
  children: [string | Buffer, Spec][];
  plain?: boolean;
  /** Override the ".." entry (default: the parent). */
  dotdot?: number;
}
interface FileSpec extends Common {
  kind: 'file';
  size: number;
}
interface FlatSpec extends Common {
  kind: 'flat';
  data: Buffer;
  plain?: boolean;
}
interface LinkSpec extends Common {
  kind: 'symlink';
  target: Buffer;
  plain?: boolean;
}
interface DevSpec extends Common {
  kind: 'dev';
  mode: number;
  rdev: number;
}
/** A dirent written verbatim: `nid` of 'self' is the listing directory. */
interface RawSpec {
  kind: 'raw';
  nid: number | 'self';
  fileType: number;
}
type Spec = DirSpec | FileSpec | FlatSpec | LinkSpec | DevSpec | RawSpec;
type NodeSpec = Exclude<Spec, RawSpec>;

interface BuildOptions {
  chunkSize?: number;
  prefetch?: NodeSpec[];
  sharedXattrs?: XattrPair[];
  /** ci indices whose records are left out of the chunk table. */
  dropChunks?: number[];
  /** Tarfs mode: 512-byte EROFS blocks, TARFS_MODE flag, TARFS blob (rafs-format.md 3.20). */
  tarfs?: boolean;
}

interface Built {
  image: Buffer;
  nid: (s: NodeSpec) => number;
}

interface Placed {
  spec: NodeSpec;
  parent: NodeSpec;
  pos: number;
  index: number;
  nlink: number;
  dataSize: number;
  fullBlocks: number;
  tail: number;
  blkaddr: number;
  chunks: ChunkInfo[];
}

const PAGE = 4096;
const alignUp = (n: number, a: number): number => Math.ceil(n / a) * a;
const nameBuf = (n: string | Buffer): Buffer => (typeof n === 'string' ? Buffer.from(n) : n);

function sortedChildren(d: DirSpec): [Buffer, Spec][] {
  return d.children
    .map(([n, s]): [Buffer, Spec] => [nameBuf(n), s])
    .sort((a, b) => Buffer.compare(a[0], b[0]));
}

function modeOf(s: NodeSpec): number {
  switch (s.kind) {
    case 'dir':
      return S_IFDIR | 0o755;
    case 'file':
    case 'flat':
      return S_IFREG | 0o644;
    case 'symlink':
      return S_IFLNK | 0o777;
    case 'dev':
      return s.mode;
  }
}

function buildImage(root: DirSpec, opts: BuildOptions = {}): Built {
  const chunkSize = opts.chunkSize ?? 4096;
  const tarfs = opts.tarfs === true;
  const BS = tarfs ? 512 : PAGE;
  const shared = opts.sharedXattrs ?? [];
  const placed = new Map<NodeSpec, Placed>();
  const order: Placed[] = [];
  let pos = 4096; // relative to the meta area: the first 4 KiB stay unused, so root nid is 128
  let ci = 0;
  let uoff = 0;
  let coff = 0;
  const xattrSize = (s: NodeSpec): number => {
    const inline = (s.xattrs ?? []).reduce((n, p) => n + xattrEntrySize(p), 0);
    const ids = s.shared?.length ?? 0;
    return inline + ids === 0 ? 0 : 12 + 4 * ids + inline;
  };
  const place = (spec: NodeSpec, parent: NodeSpec): void => {
    const prior = placed.get(spec);
    if (prior !== undefined) {
      prior.nlink++;
      return;
    }
    const isz = spec.compact === true ? 32 : 64;
    const xsz = xattrSize(spec);
    let dataSize = 0;
    let region = isz + xsz;
    let fullBlocks = 0;
    let tail = 0;
    const chunks: ChunkInfo[] = [];
    if (spec.kind === 'dir' || spec.kind === 'symlink' || spec.kind === 'flat') {
      dataSize =
        spec.kind === 'dir'
          ? dirDataSize(
              [Buffer.from('.'), Buffer.from('..'), ...spec.children.map(([n]) => nameBuf(n))].sort((a, b) =>
                Buffer.compare(a, b),
              ),
              BS,
            )
          : spec.kind === 'symlink'
            ? spec.target.length
            : spec.data.length;
      if (spec.plain !== true && dataSize % BS !== 0) {
        fullBlocks = Math.floor(dataSize / BS);
        tail = dataSize % BS;
      } else {
        fullBlocks = Math.ceil(dataSize / BS);
      }
      region += tail;
    } else if (spec.kind === 'file') {
      const count = Math.ceil(spec.size / chunkSize);
      region = alignUp(isz + xsz, 8) + 8 * count;
      for (let k = 0; k < count; k++) {
        const size = Math.min(chunkSize, spec.size - k * chunkSize);
        chunks.push({
          id: createHash('sha256').update(`chunk ${ci}`).digest(),
          blobIndex: 0,
          flags: 0,
          compressedSize: size,
          uncompressedSize: size,
          compressedOffset: coff,
          uncompressedOffset: uoff,
          fileOffset: k * chunkSize,
          index: ci++,
          crc32: 0,
        });
        coff += size;
        uoff += alignUp(size, BS);
      }
    }
    pos = alignUp(pos, 32);
    const p: Placed = {
      spec,
      parent,
      pos,
      index: order.length + 1,
      nlink: 1,
      dataSize,
      fullBlocks,
      tail,
      blkaddr: 0,
      chunks,
    };
    pos += region;
    placed.set(spec, p);
    order.push(p);
  };

  // Breadth-first: a directory's children are placed right after the directory is reached.
  place(root, root);
  const queue: DirSpec[] = [root];
  while (queue.length > 0) {
    const d = queue.shift()!;
    for (const [, s] of sortedChildren(d)) {
      if (s.kind === 'raw') continue;
      const fresh = !placed.has(s);
      place(s, d);
      if (s.kind === 'dir' && fresh) queue.push(s);
    }
  }

  const blobCount = ci > 0 ? 1 : 0;
  const prefetch = blobCount > 0 ? (opts.prefetch ?? []) : [];
  const prefetchSize = prefetch.length * 4;
  const metaBase = blobCount > 0 ? alignUp(4096 + 256 + prefetchSize, PAGE) : 0;
  let abs = alignUp(metaBase + pos, BS);
  for (const p of order) {
    if (p.fullBlocks === 0) continue;
    p.blkaddr = abs / BS;
    abs += p.fullBlocks * BS;
  }
  let xattrBlkaddr = 0;
  const sharedIds: number[] = [];
  if (shared.length > 0) {
    xattrBlkaddr = abs / BS;
    let off = 0;
    for (const x of shared) {
      sharedIds.push(off / 4);
      off += xattrEntrySize(x);
    }
    abs += alignUp(off, BS);
  }
  const drop = new Set(opts.dropChunks ?? []);
  const records = order
    .flatMap((p) => p.chunks)
    .filter((c) => !drop.has(c.index))
    .sort((a, b) => Buffer.compare(a.id, b.id));
  abs = alignUp(abs, PAGE);
  const chunkTableOffset = records.length > 0 ? abs : 0;
  const end = alignUp(abs + records.length * CHUNK_RECORD_SIZE, PAGE);
  const image = Buffer.alloc(end);

  const hasXattr = order.some((p) => xattrSize(p.spec) > 0);
  const nidOf = (s: NodeSpec): number => {
    const p = placed.get(s);
    if (p === undefined) throw new Error('spec not in the tree');
    return p.pos / 32;
  };
  encodeErofsSuper(
    {
      checksum: 0,
      featureCompat: 0x4000_0000,
      blkszbits: tarfs ? 9 : 12,
      extslots: 0,
      rootNid: nidOf(root),
      inos: order.length,
      buildTime: 0,
      buildTimeNsec: 0,
      blocks: Math.ceil(uoff / PAGE),
      metaBlkaddr: metaBase / BS,
      xattrBlkaddr,
      uuid: Buffer.alloc(16),
      volumeName: Buffer.alloc(16),
      featureIncompat: 0xc,
      u1: 0,
      extraDevices: blobCount,
      devtSlotoff: 11,
    },
    image,
  );
  encodeRafsExtSuper(
    {
      flags:
        SuperFlag.HASH_BLAKE3 |
        SuperFlag.COMPRESSION_NONE |
        (hasXattr ? SuperFlag.HAS_XATTR : 0) |
        (tarfs ? SuperFlag.TARFS_MODE : 0),
      blobTableOffset: blobCount > 0 ? 4096 : 0,
      blobTableSize: 256 * blobCount,
      chunkSize,
      chunkTableOffset,
      chunkTableSize: records.length * CHUNK_RECORD_SIZE,
      prefetchTableOffset: prefetch.length > 0 ? 4096 + 256 : 0,
      prefetchTableSize: prefetchSize,
    },
    image,
  );
  if (blobCount > 0) {
    encodeDeviceSlot({ blobId: 'ab'.repeat(32), blocks: uoff / BS, mappedBlkaddr: 0 }, image, 1408);
    encodeBlobEntry(
      {
        blobId: 'ab'.repeat(32),
        blobIndex: 0,
        chunkSize,
        chunkCount: ci,
        compressor: 'none',
        digester: 'blake3',
        features: tarfs ? 0x4000_0040 : 0x1,
        compressedSize: coff,
        uncompressedSize: uoff,
        tocSize: 0,
        ciCompressor: 'none',
        ciOffset: coff,
        ciCompressedSize: 16 * ci,
        ciUncompressedSize: 16 * ci,
        tocDigest: Buffer.alloc(32),
        metaDigest: Buffer.alloc(32),
        metaSize: 0n,
        cipherIv: Buffer.alloc(8),
        cipher: 0,
      },
      image,
      4096,
    );
    encodePrefetchTable(prefetch.map(nidOf)).copy(image, 4096 + 256);
  }

  for (const p of order) {
    const s = p.spec;
    const off = metaBase + p.pos;
    const isz = s.compact === true ? 32 : 64;
    const xsz = xattrSize(s);
    const layout =
      s.kind === 'file'
        ? DataLayout.CHUNK_BASED
        : p.tail > 0
          ? DataLayout.FLAT_INLINE
          : DataLayout.FLAT_PLAIN;
    let iu = p.blkaddr;
    if (s.kind === 'file') iu = chunkFormat(Math.log2(chunkSize), tarfs ? 9 : 12);
    if (s.kind === 'dev') iu = s.rdev;
    const subdirs = s.kind === 'dir' ? s.children.filter(([, c]) => c.kind === 'dir').length : 0;
    const inode: V6Inode = {
      extended: s.compact !== true,
      layout,
      xattrIcount: xsz === 0 ? 0 : (xsz - 12) / 4 + 1,
      mode: modeOf(s),
      size: s.kind === 'file' ? s.size : p.dataSize,
      iu,
      ino: p.index,
      uid: s.uid ?? 0,
      gid: s.gid ?? 0,
      mtime: s.mtime ?? 0,
      mtimeNsec: 0,
      nlink: s.kind === 'dir' ? 2 + subdirs : p.nlink,
    };
    encodeInode(inode, image, off);
    if (xsz > 0) {
      let x = off + isz;
      x += encodeXattrIbodyHeader(
        (s.shared ?? []).map((i) => sharedIds[i]!),
        image,
        x,
      );
      for (const pair of s.xattrs ?? []) x += encodeXattrEntry(pair, image, x);
    }
    let data: Buffer | undefined;
    if (s.kind === 'dir') {
      const self = nidOf(s);
      const entries: Dirent[] = [
        { name: Buffer.from('.'), nid: self, fileType: DirentType.DIR },
        { name: Buffer.from('..'), nid: s.dotdot ?? nidOf(p.parent), fileType: DirentType.DIR },
        ...sortedChildren(s).map(([name, c]): Dirent => {
          if (c.kind === 'raw') return { name, nid: c.nid === 'self' ? self : c.nid, fileType: c.fileType };
          return { name, nid: nidOf(c), fileType: direntTypeOf(modeOf(c)) };
        }),
      ].sort((a, b) => Buffer.compare(a.name, b.name));
      data = encodeDirData(entries, BS);
    } else if (s.kind === 'symlink') {
      data = s.target;
    } else if (s.kind === 'flat') {
      data = s.data;
    } else if (s.kind === 'file') {
      const at = off + alignUp(isz + xsz, 8);
      p.chunks.forEach((c, k) =>
        encodeChunkIndex(
          { blobIndex: 0, ciIndex: c.index, blkaddr: c.uncompressedOffset / BS },
          image,
          at + 8 * k,
        ),
      );
    }
    if (data !== undefined) {
      data.copy(image, p.blkaddr * BS, 0, p.fullBlocks * BS);
      if (p.tail > 0) data.copy(image, off + isz + xsz, p.fullBlocks * BS);
    }
  }
  let sx = xattrBlkaddr * BS;
  for (const x of shared) sx += encodeXattrEntry(x, image, sx);
  records.forEach((r, i) => encodeChunkRecord(r, image, chunkTableOffset + i * CHUNK_RECORD_SIZE));
  return { image, nid: nidOf };
}

function guard<T>(f: () => T): T | undefined {
  try {
    return f();
  } catch (e) {
    if (e instanceof NydusError) return undefined;
    throw e;
  }
}

function matches(re: RegExp, c?: string): (e: unknown) => boolean {
  return (e) => e instanceof NydusError && re.test(e.message) && (c === undefined || e.code === c);
}

const file = (size: number, extra: Partial<FileSpec> = {}): FileSpec => ({ kind: 'file', size, ...extra });
const dir = (children: [string | Buffer, Spec][], extra: Partial<DirSpec> = {}): DirSpec => ({
  kind: 'dir',
  children,
  ...extra,
});

/** A tree that exercises every reader path. */
function richTree() {
  const bigNames: Buffer[] = [];
  for (let i = 0; i < 300; i++) bigNames.push(Buffer.from(`-${i}`)); // sort before "." and ".."
  for (let i = 0; i < 300; i++) bigNames.push(Buffer.from(`f${i}${'x'.repeat(i % 200)}`));
  bigNames.push(Buffer.from([0xff, 0xfe]), Buffer.from('+plus'), Buffer.from('a.b'), Buffer.from('...'));
  const big = dir(bigNames.map((n) => [n, file(0)]));
  const plain = dir(
    Array.from({ length: 100 }, (_, i): [string, Spec] => [`p${i}${'y'.repeat(100)}`, file(0)]),
    { plain: true },
  );
  const inl = dir(Array.from({ length: 300 }, (_, i): [string, Spec] => [`i${i}`, file(0)]));
  const shared = file(100, {
    shared: [1, 0],
    xattrs: [{ name: Buffer.from('user.inline'), value: Buffer.from('v') }],
  });
  const hard = file(5000);
  const data = file(10000, { uid: 1000, gid: 100, mtime: 1_700_000_000 });
  const flat: FlatSpec = { kind: 'flat', data: Buffer.from('hello world') };
  const flatPlain: FlatSpec = { kind: 'flat', data: Buffer.alloc(5000, 7), plain: true };
  const flatEmpty: FlatSpec = { kind: 'flat', data: Buffer.alloc(0), plain: true };
  const link: LinkSpec = { kind: 'symlink', target: Buffer.from('big/f1x') };
  const linkPlain: LinkSpec = { kind: 'symlink', target: Buffer.alloc(100, 0x61), plain: true };
  const linkMax: LinkSpec = { kind: 'symlink', target: Buffer.alloc(4096, 0x62) };
  const chr: DevSpec = { kind: 'dev', mode: S_IFCHR | 0o600, rdev: 0x0501 };
  const blkCompact: DevSpec = { kind: 'dev', mode: S_IFBLK | 0o600, rdev: 7, compact: true };
  const fifo: DevSpec = { kind: 'dev', mode: S_IFIFO | 0o600, rdev: 0 };
  const compactDir = dir([['c', file(3000, { compact: true, uid: 7 })]], {
    compact: true,
    xattrs: [{ name: Buffer.from('trusted.overlay.opaque'), value: Buffer.from('y') }],
  });
  const root = dir([
    ['big', big],
    ['plain', plain],
    ['inl', inl],
    ['shared', shared],
    ['hard1', hard],
    ['hard2', hard],
    ['data', data],
    ['flat', flat],
    ['flatplain', flatPlain],
    ['flatempty', flatEmpty],
    ['link', link],
    ['linkplain', linkPlain],
    ['linkmax', linkMax],
    ['chr', chr],
    ['blk', blkCompact],
    ['fifo', fifo],
    ['compact', compactDir],
  ]);
  const sharedXattrs = [
    { name: Buffer.from('security.selinux'), value: Buffer.from('system_u:object_r:x') },
    { name: Buffer.from('user.shared'), value: Buffer.from('s') },
  ];
  const built = buildImage(root, { sharedXattrs, prefetch: [data, hard] });
  return {
    ...built,
    specs: {
      root,
      big,
      bigNames,
      plain,
      inl,
      shared,
      hard,
      data,
      flat,
      flatPlain,
      flatEmpty,
      link,
      linkPlain,
      linkMax,
    },
    more: { chr, blkCompact, fifo, compactDir, sharedXattrs },
  };
}

describe('v6 reader on hand-built images', () => {
  it('reads a rich tree and validates it', () => {
    const { image, nid, specs, more } = richTree();
    const b = RafsV6Bootstrap.parse(image);
    b.validate();
    equal(b.rootIno, 128);
    equal(b.superblock.hasXattr, true);
    deepEqual(b.prefetchInos(), [nid(specs.data), nid(specs.hard)]);

    const root = b.readdir(b.rootIno).map((e) => e.name.toString());
    deepEqual(root, [...root].sort());
    equal(b.childCount(b.rootIno), 17);
    const hard1 = b.lookup(b.rootIno, Buffer.from('hard1'));
    const hard2 = b.lookup(b.rootIno, Buffer.from('hard2'));
    ok(hard1 !== undefined && hard2 !== undefined);
    equal(hard1.ino, hard2.ino);
    equal(b.getAttr(hard1.ino).nlink, 2);

    const data = b.getAttr(nid(specs.data));
    deepEqual(data, {
      ino: nid(specs.data),
      mode: S_IFREG | 0o644,
      uid: 1000,
      gid: 100,
      size: 10000,
      blocks: 20,
      nlink: 1,
      rdev: 0,
      mtime: 1_700_000_000,
      mtimeNsec: 0,
    });
    const chunks = b.chunks(nid(specs.data));
    deepEqual(
      chunks.map((c) => [c.fileOffset, c.uncompressedSize, c.uncompressedOffset]),
      [
        [0, 4096, chunks[0]!.uncompressedOffset],
        [4096, 4096, chunks[0]!.uncompressedOffset + 4096],
        [8192, 1808, chunks[0]!.uncompressedOffset + 8192],
      ],
    );
    deepEqual(
      b.chunkRefs(nid(specs.data)).map((r) => r.blkaddr * 4096),
      chunks.map((c) => c.uncompressedOffset),
    );
    equal(b.allChunks().length, 1 + 2 + 3 + 1); // shared, hard (once), data, compact/c

    deepEqual(b.readlink(nid(specs.link)), Buffer.from('big/f1x'));
    deepEqual(b.readlink(nid(specs.linkPlain)), Buffer.alloc(100, 0x61));
    deepEqual(b.readlink(nid(specs.linkMax)), Buffer.alloc(4096, 0x62));
    equal(b.inode(nid(specs.linkMax)).layout, DataLayout.FLAT_PLAIN);

    deepEqual(b.inlineData(nid(specs.flat)), Buffer.from('hello world'));
    deepEqual(b.inlineData(nid(specs.flatPlain)), Buffer.alloc(5000, 7));
    deepEqual(b.inlineData(nid(specs.flatEmpty)), Buffer.alloc(0));
    deepEqual(b.chunks(nid(specs.flatEmpty)), []);
    throws(
      () => b.chunks(nid(specs.flat)),
      matches(/keeps its 11 bytes in the bootstrap/, 'ERR_UNSUPPORTED'),
    );
    equal(b.inlineData(nid(specs.data)), undefined);

    deepEqual(b.xattrs(nid(specs.shared)), [
      { name: Buffer.from('user.inline'), value: Buffer.from('v') },
      more.sharedXattrs[1],
      more.sharedXattrs[0],
    ]);
    deepEqual(b.xattrs(nid(more.compactDir)), [
      { name: Buffer.from('trusted.overlay.opaque'), value: Buffer.from('y') },
    ]);

    const chr = b.lookup(b.rootIno, Buffer.from('chr'));
    equal(chr?.type, S_IFCHR);
    equal(b.getAttr(chr.ino).rdev, 0x0501);
    const blk = b.getAttr(nid(more.blkCompact));
    equal(blk.rdev, 0); // compact inodes carry no rdev
    equal(blk.mode, S_IFBLK | 0o600);
    equal(b.getAttr(nid(more.fifo)).rdev, 0);

    const compactDir = b.getAttr(nid(more.compactDir));
    equal(compactDir.mtime, 0);
    equal(compactDir.nlink, 2);
    const c = b.lookup(nid(more.compactDir), Buffer.from('c'));
    ok(c !== undefined);
    equal(b.getAttr(c.ino).uid, 7);
    equal(b.inode(c.ino).extended, false);
    equal(b.chunks(c.ino).length, 1);
  });

  it('walks multi-block directories by position and by name', () => {
    const { image, nid, specs } = richTree();
    const b = RafsV6Bootstrap.parse(image);
    for (const [spec, names] of [
      [specs.big, specs.bigNames],
      [specs.plain, specs.plain.children.map(([n]) => nameBuf(n))],
      [specs.inl, specs.inl.children.map(([n]) => nameBuf(n))],
    ] as const) {
      const d = nid(spec);
      const sorted = [...names].sort((a, b) => Buffer.compare(a, b));
      const inode = b.inode(d);
      ok(inode.size > 4096, `directory ${d} spans several blocks`);
      equal(b.childCount(d), sorted.length);
      const all = b.readdir(d);
      deepEqual(
        all.map((e) => e.name),
        sorted,
      );
      for (const [start, limit] of [
        [0, 1],
        [1, 7],
        [250, 100],
        [299, 3],
        [sorted.length - 1, 10],
        [sorted.length, 1],
        [5, 0],
      ] as const) {
        deepEqual(
          b.readdir(d, start, limit),
          all.slice(start, start + limit),
          `readdir(${d}, ${start}, ${limit})`,
        );
      }
      for (const e of all) deepEqual(b.lookup(d, e.name), e);
      for (const miss of ['', '.', '..', '-', 'zzz', 'f1xx0', '\u00ff'])
        equal(b.lookup(d, Buffer.from(miss)), undefined);
    }
    equal(b.inode(nid(specs.plain)).layout, DataLayout.FLAT_PLAIN);
    equal(b.inode(nid(specs.inl)).layout, DataLayout.FLAT_INLINE);
    equal(b.inode(nid(specs.big)).layout, DataLayout.FLAT_INLINE);
    // "." and ".." sit after the 300 "-N" names, inside the big directory's blocks.
    deepEqual(
      b.readdir(nid(specs.big), 300, 2).map((e) => e.name.toString()),
      ['-99', '...'],
    );
  });

  it('works on an image without blobs', () => {
    const root = dir([
      ['empty', dir([])],
      ['l', { kind: 'symlink', target: Buffer.from('/x') }],
      ['e', file(0)],
    ]);
    const b = RafsV6Bootstrap.parse(buildImage(root).image);
    b.validate();
    equal(b.blobs.length, 0);
    equal(b.erofsSuper.metaBlkaddr, 0);
    deepEqual(b.allChunks(), []);
    deepEqual(b.prefetchInos(), []);
    equal(b.childCount(b.rootIno), 3);
    const e = b.lookup(b.rootIno, Buffer.from('e'));
    ok(e !== undefined);
    deepEqual(b.chunks(e.ino), []);
  });

  it('reads a tarfs-mode image with 512-byte blocks', () => {
    const names = Array.from({ length: 60 }, (_, i) => `entry-${i}`);
    const big = dir(names.map((n): [string, Spec] => [n, file(0)]));
    const data = file(10000);
    const link: LinkSpec = { kind: 'symlink', target: Buffer.alloc(700, 0x63) };
    const { image, nid } = buildImage(
      dir([
        ['big', big],
        ['data', data],
        ['link', link],
      ]),
      { tarfs: true },
    );
    const b = RafsV6Bootstrap.parse(image);
    b.validate();
    equal(b.blockSize, 512);
    ok(b.inode(nid(big)).size > 1024, 'directory spans several 512-byte blocks');
    deepEqual(
      b.readdir(nid(big)).map((e) => e.name.toString()),
      [...names].sort(),
    );
    deepEqual(b.readdir(nid(big), 40, 3), b.readdir(nid(big)).slice(40, 43));
    equal(b.lookup(nid(big), Buffer.from('entry-59'))?.type, S_IFREG);
    deepEqual(b.readlink(nid(link)), Buffer.alloc(700, 0x63));
    deepEqual(
      b.chunkRefs(nid(data)).map((r) => r.blkaddr),
      [0, 8, 16],
    );
    throws(() => b.chunks(nid(data)), matches(/tarfs chunks/, 'ERR_UNSUPPORTED'));
    // blkszbits 9 without the TARFS_MODE flag is refused
    encodeRafsExtSuper({ ...decodeRafsExtSuper(image), flags: 0x5 }, image);
    throws(() => RafsV6Bootstrap.parse(image), matches(/blkszbits 9 is not supported/));
  });

  it('reports chunks missing from the chunk table as ERR_NOT_FOUND', () => {
    const data = file(10000);
    const { image, nid } = buildImage(dir([['data', data]]), { dropChunks: [1] });
    const b = RafsV6Bootstrap.parse(image);
    b.validate(); // a later layer can still find the chunk in the blob's ci table
    equal(b.chunkRefs(nid(data)).length, 3);
    throws(
      () => b.chunks(nid(data)),
      matches(/Chunk 1 of inode \d+ \(blob index 0, ci index 1\) is not in the chunk table/, 'ERR_NOT_FOUND'),
    );
  });

  it('rejects a chunk whose block address disagrees with the chunk table', () => {
    const data = file(10000);
    const { image, nid } = buildImage(dir([['data', data]]));
    const b0 = RafsV6Bootstrap.parse(image);
    image.writeUInt32LE(7, b0.inodeOffset(nid(data)) + 64 + 8 + 4); // chunk 1 blkaddr
    const b = RafsV6Bootstrap.parse(image);
    throws(
      () => b.chunks(nid(data)),
      matches(/chunk 1 has block address 7, the chunk table says uncompressed_offset 4096/),
    );
    throws(() => b.validate(), matches(/^Inode \d+ \(\/data\): chunk 1 has block address 7/, 'ERR_FORMAT'));
  });
});

describe('v6 validate() rejects broken trees with one clear line', () => {
  it('rejects a directory that lists itself as a child', () => {
    const { image } = buildImage(dir([['loop', { kind: 'raw', nid: 'self', fileType: DirentType.DIR }]]));
    const b = RafsV6Bootstrap.parse(image);
    equal(b.readdir(b.rootIno)[0]?.ino, 128); // reading is fine; the walk is what must refuse
    throws(
      () => b.validate(),
      matches(
        /^Inode 128 \(\/loop\): directory is reachable twice, also as \/ \(a directory cycle/,
        'ERR_FORMAT',
      ),
    );
  });

  it('rejects a subdirectory pointing back at the root', () => {
    const { image } = buildImage(
      dir([['a', dir([['up', { kind: 'raw', nid: 128, fileType: DirentType.DIR }]])]]),
    );
    throws(
      () => RafsV6Bootstrap.parse(image).validate(),
      matches(/^Inode 128 \(\/a\/up\): directory is reachable twice/),
    );
  });

  it('rejects a hard-linked directory but accepts hard-linked files', () => {
    const shared = dir([]);
    const { image } = buildImage(
      dir([
        ['a', dir([['s', shared]])],
        ['b', dir([['s', shared]])],
      ]),
    );
    throws(
      () => RafsV6Bootstrap.parse(image).validate(),
      matches(/\/b\/s\): directory is reachable twice, also as \/a\/s/),
    );
  });

  it('rejects wrong "." and ".." entries', () => {
    const sub = dir([], { dotdot: 200 });
    const { image, nid } = buildImage(dir([['sub', sub]]));
    throws(
      () => RafsV6Bootstrap.parse(image).validate(),
      matches(new RegExp(`^Directory ${nid(sub)} \\(/sub\\): "\\.\\." points to 200, not to the parent 128`)),
    );
  });

  it('rejects a dirent whose file type disagrees with the inode', () => {
    const f = file(0);
    const { image, nid } = buildImage(
      dir([
        ['f', f],
        ['liar', { kind: 'raw', nid: 0, fileType: DirentType.DIR }],
      ]),
    );
    // Point "liar" at the regular file while claiming a directory.
    const at = findDirent(image, RafsV6Bootstrap.parse(image).inodeOffset(128) + 64, 'liar');
    image.writeBigUInt64LE(BigInt(nid(f)), at);
    throws(
      () => RafsV6Bootstrap.parse(image).validate(),
      matches(/\(\/liar\): dirent file_type 2 does not match mode 0o100644/),
    );
  });

  it('rejects chunk references beyond the blob', () => {
    const data = file(5000);
    const { image, nid } = buildImage(dir([['data', data]]));
    const idx = RafsV6Bootstrap.parse(image).inodeOffset(nid(data)) + 64;
    const ci = Buffer.from(image);
    ci.writeUInt16LE(9, idx + 8); // chunk 1: ci index 9 of a 2-chunk blob
    throws(
      () => RafsV6Bootstrap.parse(ci).validate(),
      matches(/chunk 1 has ci index 9, blob 0 has 2 chunks/),
    );
    const dev = Buffer.from(image);
    dev.writeUInt8(2, idx + 2); // chunk 0: device 2 of a 1-blob image
    throws(
      () => RafsV6Bootstrap.parse(dev).validate(),
      matches(/chunk 0 names device 2, the image has 1 blobs/),
    );
  });

  it('rejects shared xattrs when xattr_blkaddr is 0', () => {
    const f = file(0, { shared: [0] });
    const { image, nid } = buildImage(dir([['f', f]]), {
      sharedXattrs: [{ name: Buffer.from('user.a'), value: Buffer.from('b') }],
    });
    deepEqual(RafsV6Bootstrap.parse(image).xattrs(nid(f)), [
      { name: Buffer.from('user.a'), value: Buffer.from('b') },
    ]);
    encodeErofsSuper({ ...decodeErofsSuper(image), xattrBlkaddr: 0 }, image);
    const b = RafsV6Bootstrap.parse(image);
    throws(() => b.xattrs(nid(f)), matches(/lists 1 shared xattrs but xattr_blkaddr is 0/, 'ERR_FORMAT'));
    throws(() => b.validate(), matches(/^Inode \d+ \(\/f\) lists 1 shared xattrs but xattr_blkaddr is 0$/));
  });
});

/** Absolute offset of the dirent named `name` in an inline single-block directory at `blockOff`. */
function findDirent(image: Buffer, blockOff: number, name: string): number {
  const count = image.readUInt16LE(blockOff + 8) / 12;
  for (let i = 0; i < count; i++) {
    const at = blockOff + 12 * i;
    const start = image.readUInt16LE(at + 8);
    if (image.subarray(blockOff + start, blockOff + start + name.length).toString() === name) return at;
  }
  throw new Error(`no dirent ${name}`);
}

describe('v6 parse() checks the superblocks and tables (rafs-format.md 3.16)', () => {
  const base = (): Buffer => buildImage(dir([['data', file(5000)]])).image;

  it('opens the valid image', () => {
    RafsV6Bootstrap.parse(base()).validate();
  });

  const SB_CASES: [Partial<ErofsSuperblock>, RegExp][] = [
    [{ checksum: 1 }, /checksum must be 0/],
    [{ featureCompat: 0 }, /lacks the RAFS v6 bit/],
    [{ blkszbits: 9 }, /blkszbits 9 is not supported/],
    [{ extslots: 1 }, /extslots must be 0/],
    [{ inos: 0 }, /inos is 0/],
    [{ featureIncompat: 0x4 }, /feature_incompat 0x4 is not 0xc/],
    [{ u1: 1 }, /u1 must be 0/],
    [{ devtSlotoff: 12 }, /devt_slotoff 12 is not 11/],
    [{ metaBlkaddr: 99 }, /meta_blkaddr 99 is beyond the bootstrap end/],
    [{ rootNid: 0xffff }, /root_nid 65535 is beyond/],
    [{ xattrBlkaddr: 99 }, /xattr_blkaddr 99 is beyond/],
    [{ extraDevices: 2 }, /extra_devices 2 does not match 1 blob table entries/],
  ];
  for (const [patch, re] of SB_CASES) {
    it(`rejects EROFS superblock ${JSON.stringify(patch)}`, () => {
      const img = base();
      encodeErofsSuper({ ...decodeErofsSuper(img), ...patch }, img);
      throws(() => RafsV6Bootstrap.parse(img), matches(re, 'ERR_FORMAT'));
    });
  }

  const EXT_CASES: [Partial<RafsExtSuperblock>, RegExp][] = [
    [{ flags: 0x405 }, /flags 0x405 contain unknown bits/],
    [{ flags: 0x1_0000_0005 }, /flags 0x100000005 contain unknown bits/],
    [{ flags: 0x7 }, /must name exactly one compressor/],
    [{ flags: 0x4 }, /must name exactly one compressor/],
    [{ flags: 0xd }, /must name exactly one digester/],
    [{ flags: 0x1 }, /must name exactly one digester/],
    [{ chunkSize: 0x800 }, /chunk_size 0x800 is not a power of two in 4 KiB..16 MiB/],
    [{ chunkSize: 0x3000 }, /chunk_size 0x3000/],
    [{ chunkSize: 0x200_0000 }, /chunk_size 0x2000000/],
    [{ blobTableSize: 300 }, /Blob table size 300 is not a multiple of 256/],
    [{ blobTableOffset: 4100 }, /Blob table offset 4100 is not 4 KiB aligned/],
    [{ blobTableOffset: 0 }, /Blob table \[0, \+256\) is outside \[1536, /],
    [{ chunkTableSize: 81 }, /Chunk table size 81 is not a multiple of 80/],
    [{ chunkTableOffset: 4096 }, /Chunk table \[4096, \+160\) overlaps the blob table \[4096, \+256\)/],
    [{ chunkTableOffset: 0x10_0000 }, /Chunk table \[1048576, \+160\) is outside/],
    [{ chunkTableOffset: 0x10_0001 }, /Chunk table offset 1048577 is not 4 KiB aligned/],
    [
      { prefetchTableOffset: 4100, prefetchTableSize: 8 },
      /Prefetch table \[4100, \+8\) overlaps the blob table/,
    ],
    [{ prefetchTableOffset: 1000, prefetchTableSize: 8 }, /Prefetch table \[1000, \+8\) is outside/],
  ];
  for (const [patch, re] of EXT_CASES) {
    it(`rejects ext superblock ${JSON.stringify(patch)}`, () => {
      const img = base();
      encodeRafsExtSuper({ ...decodeRafsExtSuper(img), ...patch }, img);
      throws(() => RafsV6Bootstrap.parse(img), matches(re, 'ERR_FORMAT'));
    });
  }

  it('rejects a size that is not a multiple of 4096', () => {
    throws(
      () => RafsV6Bootstrap.parse(Buffer.concat([base(), Buffer.alloc(1)])),
      matches(/not a multiple of 4096/),
    );
  });

  const BLOB_CASES: [Partial<BlobTableEntry>, RegExp][] = [
    [{ blobIndex: 3 }, /Blob table entry 0: blob_index 3 does not match its position \(at offset 4160\)/],
    [{ chunkSize: 0x10_0000 }, /chunk_size 0x100000 differs from the filesystem's 0x1000/],
    [{ features: 0x1001 }, /unknown incompatible bits/],
    [{ features: 0 }, /lack ALIGNED/],
    [{ ciUncompressedSize: 0 }, /ci_compressed_size 32 exceeds ci_uncompressed_size 0/],
  ];
  for (const [patch, re] of BLOB_CASES) {
    it(`rejects blob entry ${JSON.stringify(patch)}`, () => {
      const img = base();
      encodeBlobEntry({ ...decodeBlobEntry(img, 4096), ...patch }, img, 4096);
      throws(() => RafsV6Bootstrap.parse(img), matches(re, 'ERR_FORMAT'));
    });
  }

  const SLOT_CASES: [Partial<DeviceSlot>, RegExp][] = [
    [{ blobId: 'ab' }, /Device slot 0: blob id "ab" has 2 chars, expected 64/],
    [{ blocks: 0 }, /Device slot 0: blocks is 0/],
  ];
  for (const [patch, re] of SLOT_CASES) {
    it(`rejects device slot ${JSON.stringify(patch)}`, () => {
      const img = base();
      encodeDeviceSlot({ ...decodeDeviceSlot(img, 1408), ...patch }, img, 1408);
      throws(() => RafsV6Bootstrap.parse(img), matches(re, 'ERR_FORMAT'));
    });
  }
});

describe('v6 reader on mutated hand-built images', () => {
  it('only ever throws NydusError (600 seeded mutants of the rich tree)', () => {
    const { image } = richTree();
    let seed = 0x5eed;
    const rand = (): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed / 4294967296;
    };
    const meta = RafsV6Bootstrap.parse(image).inodeOffset(128) - 4096;
    for (let iter = 0; iter < 600; iter++) {
      const m = Buffer.from(image);
      const flips: number[] = [];
      for (let k = 0; k < 1 + Math.floor(rand() * 3); k++) {
        const off =
          rand() < 0.9 ? meta + Math.floor(rand() * (m.length - meta)) : Math.floor(rand() * 4096 * 2);
        m[off] = Math.floor(rand() * 256);
        flips.push(off);
      }
      try {
        const b = guard(() => RafsV6Bootstrap.parse(m));
        if (b === undefined) continue;
        guard(() => b.validate());
        const queue = [b.rootIno];
        const seen = new Set<number>();
        for (let budget = 300; queue.length > 0 && budget > 0; budget--) {
          const nid = queue.shift()!;
          if (seen.has(nid)) continue;
          seen.add(nid);
          const attr = guard(() => b.getAttr(nid));
          guard(() => b.xattrs(nid));
          if (attr === undefined) continue;
          if (isDir(attr.mode)) {
            guard(() => b.childCount(nid));
            guard(() => b.readdir(nid, 250, 60));
            for (const [i, e] of (guard(() => b.readdir(nid)) ?? []).entries()) {
              if (queue.length < 100) queue.push(e.ino);
              if (i % 16 === 0) guard(() => b.lookup(nid, e.name));
            }
          } else if (isSymlink(attr.mode)) {
            guard(() => b.readlink(nid));
          } else if (isReg(attr.mode)) {
            guard(() => b.chunks(nid));
            guard(() => b.inlineData(nid));
          }
        }
      } catch (e) {
        fail(
          `mutant ${iter} (offsets ${flips.join(',')}): ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`,
        );
      }
    }
  });
});
