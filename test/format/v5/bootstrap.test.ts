import { deepEqual, equal, ok, throws } from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Digester } from '../../../src/codec/algorithms.js';
import { digest, sha256Hex } from '../../../src/codec/digest.js';
import { NydusError } from '../../../src/errors/errors.js';
import { CHUNK_RECORD_SIZE, encodeChunkRecord } from '../../../src/format/chunk-record.js';
import {
  InodeFlag,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  SuperFlag,
} from '../../../src/format/flags.js';
import type { ChunkInfo, XattrPair } from '../../../src/format/model.js';
import { encodeV5BlobTable, encodeV5ExtBlobTable } from '../../../src/format/v5/blob-table.js';
import { RAFS_V5_MAGIC, RafsV5Bootstrap } from '../../../src/format/v5/bootstrap.js';
import {
  decodeV5InodeFixed,
  encodeV5InodeFixed,
  encodeV5InodeRecord,
  V5_INODE_SIZE,
  type V5InodeFixed,
} from '../../../src/format/v5/inode.js';
import { v5InodeDigest } from '../../../src/format/v5/inode-digest.js';
import { encodeV5Superblock, RAFS_V5_SUPERBLOCK_SIZE } from '../../../src/format/v5/superblock.js';
import { v5XattrPayloadSize } from '../../../src/format/v5/xattr.js';

// ---------------------------------------------------------------------------------------------
// A minimal v5 image writer for hand-made test images: index assignment of rafs-format.md 2.9,
// hardlinks of 2.10, derived values of 2.13, digests of 6.2, layout of 2.1. Not a builder: just
// enough to make valid images and then break them one field at a time.
// ---------------------------------------------------------------------------------------------

interface TNode {
  readonly name: string;
  readonly mode: number;
  readonly children?: readonly TNode[];
  readonly data?: Buffer;
  readonly target?: string;
  readonly xattrs?: readonly XattrPair[];
  /** Regular files with the same key are one hardlinked inode. */
  readonly link?: string;
  readonly rdev?: number;
  /** Store the chunk records in reverse order and set HAS_HOLE. */
  readonly reversedChunks?: boolean;
}

interface BuildOptions {
  readonly digester?: Digester;
  readonly chunkSize?: number;
  readonly prefetch?: readonly number[];
  /** Keep children in the given order instead of sorting them by bytes. */
  readonly unsorted?: boolean;
}

interface Entry {
  readonly node: TNode;
  readonly parent: number;
  childIndex: number;
  childCount: number;
  ino: number;
  nlink: number;
  chunks: ChunkInfo[];
  digest: Buffer;
}

const CHUNK = 4096;

function sortedChildren(node: TNode, unsorted: boolean): TNode[] {
  const children = [...(node.children ?? [])];
  if (!unsorted) children.sort((a, b) => Buffer.compare(Buffer.from(a.name), Buffer.from(b.name)));
  return children;
}

function buildImage(root: TNode, opts: BuildOptions = {}): { image: Buffer; blob: Buffer } {
  const algo = opts.digester ?? 'sha256';
  const chunkSize = opts.chunkSize ?? CHUNK;
  const unsorted = opts.unsorted ?? false;
  // entries[i - 1] is index i.
  const entries: Entry[] = [];
  const add = (node: TNode, parent: number): Entry => {
    const e: Entry = {
      node,
      parent,
      childIndex: 0,
      childCount: 0,
      ino: 0,
      nlink: 1,
      chunks: [],
      digest: Buffer.alloc(32),
    };
    entries.push(e);
    e.ino = entries.length;
    return e;
  };
  const assign = (e: Entry): void => {
    const children = sortedChildren(e.node, unsorted);
    e.childIndex = entries.length + 1;
    e.childCount = children.length;
    const added = children.map((c) => add(c, e.ino));
    for (const c of added) if (c.node.children !== undefined) assign(c);
  };
  assign(add(root, 0));

  const groups = new Map<string, Entry[]>();
  for (const e of entries) {
    if (e.node.link === undefined) continue;
    const g = groups.get(e.node.link) ?? [];
    g.push(e);
    groups.set(e.node.link, g);
  }
  for (const g of groups.values()) {
    for (const e of g) {
      e.ino = g[0]!.ino;
      e.nlink = g.length;
    }
  }

  const blobParts: Buffer[] = [];
  let blobSize = 0;
  let chunkCount = 0;
  for (const e of entries) {
    if ((e.node.mode & S_IFMT) !== S_IFREG) continue;
    const first = entries[e.ino - 1]!;
    if (first !== e) {
      e.chunks = first.chunks;
      continue;
    }
    const data = e.node.data ?? Buffer.alloc(0);
    for (let off = 0; off < data.length; off += chunkSize) {
      const piece = data.subarray(off, off + chunkSize);
      e.chunks.push({
        id: digest(algo, piece),
        blobIndex: 0,
        flags: 0,
        compressedOffset: blobSize,
        compressedSize: piece.length,
        uncompressedOffset: blobSize,
        uncompressedSize: piece.length,
        fileOffset: off,
        index: chunkCount++,
        crc32: 0,
      });
      blobParts.push(piece);
      blobSize += piece.length;
    }
  }
  const blob = Buffer.concat(blobParts);

  // Children have larger indexes than their directory, so walking down computes them first.
  for (let i = entries.length - 1; i >= 0; i--) {
    const e = entries[i]!;
    const type = e.node.mode & S_IFMT;
    let parts: Buffer[] = [];
    if (type === S_IFDIR) {
      parts = entries.slice(e.childIndex - 1, e.childIndex - 1 + e.childCount).map((c) => c.digest);
    } else if (type === S_IFREG) {
      parts = e.chunks.map((c) => c.id);
    } else if (type === S_IFLNK) {
      parts = [Buffer.from(e.node.target ?? '')];
    }
    e.digest = v5InodeDigest(algo, e.node.mode, parts);
  }

  const records = entries.map((e, i) => {
    const type = e.node.mode & S_IFMT;
    const name = Buffer.from(i === 0 ? '/' : e.node.name);
    const target = e.node.target === undefined ? undefined : Buffer.from(e.node.target);
    const children = type === S_IFDIR ? entries.slice(e.childIndex - 1, e.childIndex - 1 + e.childCount) : [];
    const pseudo = children.reduce((n, c) => n + Buffer.byteLength(c.node.name) + 8, 0);
    const size =
      type === S_IFDIR
        ? Math.max(4096, Math.ceil(pseudo / 4096) * 4096)
        : type === S_IFLNK
          ? target!.length
          : (e.node.data?.length ?? 0);
    const xattrBytes = e.node.xattrs === undefined ? 0 : Math.ceil(v5XattrPayloadSize(e.node.xattrs) / 8) * 8;
    let flags = 0;
    if (type === S_IFLNK) flags |= InodeFlag.SYMLINK;
    if (e.node.xattrs !== undefined) flags |= InodeFlag.XATTR;
    if (e.node.reversedChunks === true) flags |= InodeFlag.HAS_HOLE;
    const inode: V5InodeFixed = {
      digest: e.digest,
      parent: e.parent,
      ino: e.ino,
      uid: 0,
      gid: 0,
      projid: 0,
      mode: e.node.mode,
      size,
      blocks: Math.ceil((size + xattrBytes) / 512),
      flags,
      nlink: type === S_IFDIR ? 2 + children.filter((c) => c.node.children !== undefined).length : e.nlink,
      childIndex: type === S_IFDIR ? e.childIndex : 0,
      childCount: type === S_IFDIR ? e.childCount : type === S_IFREG ? e.chunks.length : 0,
      nameSize: name.length,
      symlinkSize: target?.length ?? 0,
      rdev: e.node.rdev ?? 0,
      mtimeNsec: 0,
      mtime: 1_700_000_000 + i,
    };
    const chunks = e.node.reversedChunks === true ? [...e.chunks].reverse() : e.chunks;
    return encodeV5InodeRecord({
      inode,
      name,
      ...(target === undefined ? {} : { symlink: target }),
      ...(e.node.xattrs === undefined ? {} : { xattrs: e.node.xattrs }),
      chunks,
    });
  });

  const n = entries.length;
  const prefetch = opts.prefetch ?? [];
  const blobTable = encodeV5BlobTable([{ readaheadOffset: 0, readaheadSize: 0, blobId: sha256Hex(blob) }]);
  const extTable = encodeV5ExtBlobTable([
    { chunkCount, features: 0x4000_0000, uncompressedSize: blobSize, compressedSize: blobSize },
  ]);
  const inodeTableOffset = RAFS_V5_SUPERBLOCK_SIZE;
  const prefetchTableOffset = inodeTableOffset + Math.ceil((4 * n) / 8) * 8;
  const blobTableOffset = prefetchTableOffset + Math.ceil((4 * prefetch.length) / 8) * 8;
  const extOffset = blobTableOffset + blobTable.length;
  let recordOffset = extOffset + extTable.length;
  const inodeTable = Buffer.alloc(prefetchTableOffset - inodeTableOffset);
  records.forEach((r, i) => {
    inodeTable.writeUInt32LE(recordOffset / 8, i * 4);
    recordOffset += r.length;
  });
  const prefetchTable = Buffer.alloc(blobTableOffset - prefetchTableOffset);
  prefetch.forEach((ino, i) => prefetchTable.writeUInt32LE(ino, i * 4));
  const sb = encodeV5Superblock({
    magic: RAFS_V5_MAGIC,
    fsVersion: 0x500,
    sbSize: RAFS_V5_SUPERBLOCK_SIZE,
    blockSize: chunkSize,
    flags:
      SuperFlag.COMPRESSION_NONE |
      (algo === 'sha256' ? SuperFlag.HASH_SHA256 : SuperFlag.HASH_BLAKE3) |
      (entries.some((e) => e.node.xattrs !== undefined) ? SuperFlag.HAS_XATTR : 0),
    inodesCount: new Set(entries.map((e) => e.ino)).size,
    inodeTableOffset,
    prefetchTableOffset,
    blobTableOffset,
    inodeTableEntries: n,
    prefetchTableEntries: prefetch.length,
    blobTableSize: blobTable.length,
    extendedBlobTableEntries: 1,
    extendedBlobTableOffset: extOffset,
  });
  return { image: Buffer.concat([sb, inodeTable, prefetchTable, blobTable, extTable, ...records]), blob };
}

/** Offset of the record at `index` in an image made by buildImage. */
function recordAt(image: Buffer, index: number): number {
  return image.readUInt32LE(RAFS_V5_SUPERBLOCK_SIZE + (index - 1) * 4) * 8;
}

/** Rewrite fields of the fixed part of the record at `index`, in a copy of the image. */
function patchInode(image: Buffer, index: number, change: Partial<V5InodeFixed>): Buffer {
  const copy = Buffer.from(image);
  const off = recordAt(copy, index);
  encodeV5InodeFixed({ ...decodeV5InodeFixed(copy, off), ...change }, copy, off);
  return copy;
}

const file = (name: string, data: string | Buffer, extra: Partial<TNode> = {}): TNode => ({
  name,
  mode: S_IFREG | 0o644,
  data: typeof data === 'string' ? Buffer.from(data) : data,
  ...extra,
});
const dir = (name: string, children: TNode[], extra: Partial<TNode> = {}): TNode => ({
  name,
  mode: S_IFDIR | 0o755,
  children,
  ...extra,
});
const link = (name: string, target: string): TNode => ({ name, mode: S_IFLNK | 0o777, target });

const BIG = Buffer.alloc(3 * CHUNK + 100);
for (let i = 0; i < BIG.length; i++) BIG[i] = (i * 7 + (i >> 12)) & 0xff;

/**
 * Index assignment (siblings together, then directories depth-first):
 * 1 /, 2 a, 3 big, 4 dev, 5 fifo, 6 link, 7 sub, 8 zeta, 9 a/x, 10 a/y, 11 sub/deep, 12 sub/hl,
 * 13 sub/deep/z. Hardlink group "h": a/x (index 9, first) and sub/hl (index 12).
 */
const TREE = dir('', [
  dir('sub', [dir('deep', [file('z', 'zz')]), file('hl', 'shared', { link: 'h' })]),
  file('big', BIG, { reversedChunks: true }),
  dir('a', [
    file('x', 'shared', { link: 'h', xattrs: [{ name: Buffer.from('user.k'), value: Buffer.from('v1') }] }),
    file('y', '', { xattrs: [] }),
  ]),
  link('link', '../a/x'),
  { name: 'dev', mode: S_IFCHR | 0o600, rdev: 0x0501 },
  { name: 'fifo', mode: S_IFIFO | 0o644 },
  dir('zeta', [], { xattrs: [{ name: Buffer.from('trusted.overlay.opaque'), value: Buffer.from('y') }] }),
]);

function names(entries: readonly { name: Buffer }[]): string[] {
  return entries.map((e) => e.name.toString());
}

function isCode(code: string): (e: unknown) => boolean {
  return (e: unknown) => e instanceof NydusError && e.code === code;
}

void describe('RafsV5Bootstrap on a hand-made image', () => {
  const { image, blob } = buildImage(TREE, { prefetch: [7, 3, 0, 9] });
  const bs = RafsV5Bootstrap.parse(image);

  void it('validates', () => {
    bs.validate();
    equal(bs.superblock.inodesCount, 12);
    equal(bs.indexCount, 13);
    equal(bs.superblock.hasXattr, true);
  });

  void it('reads directories in byte order with start and limit', () => {
    equal(bs.childCount(1), 7);
    deepEqual(names(bs.readdir(1)), ['a', 'big', 'dev', 'fifo', 'link', 'sub', 'zeta']);
    deepEqual(names(bs.readdir(1, 2, 3)), ['dev', 'fifo', 'link']);
    deepEqual(names(bs.readdir(1, 6, 10)), ['zeta']);
    deepEqual(bs.readdir(1, 7), []);
    deepEqual(bs.readdir(8), []);
    const dev = bs.readdir(1, 2, 1)[0];
    equal(dev?.type, S_IFCHR);
    throws(() => bs.readdir(1, -1), isCode('ERR_INVALID_ARG'));
  });

  void it('looks up names by binary search, hardlinks resolving to the first occurrence', () => {
    for (const [i, name] of ['a', 'big', 'dev', 'fifo', 'link', 'sub', 'zeta'].entries()) {
      equal(bs.lookup(1, Buffer.from(name))?.ino, i + 2, name);
    }
    for (const name of ['', '0', 'b', 'zz', 'subx']) equal(bs.lookup(1, Buffer.from(name)), undefined);
    equal(bs.lookup(7, Buffer.from('hl'))?.ino, 9);
    equal(bs.lookup(2, Buffer.from('x'))?.ino, 9);
    equal(bs.getAttr(9).nlink, 2);
    equal(bs.lookup(11, Buffer.from('z'))?.ino, 13);
  });

  void it('returns attributes as stored', () => {
    const dev = bs.getAttr(4);
    equal(dev.mode, S_IFCHR | 0o600);
    equal(dev.rdev, 0x0501);
    equal(dev.nlink, 1);
    const root = bs.getAttr(1);
    equal(root.nlink, 2 + 3);
    equal(root.size, 4096);
    equal(bs.getAttr(3).size, BIG.length);
    equal(bs.getAttr(3).blocks, Math.ceil(BIG.length / 512));
  });

  void it('reads symlinks, xattrs and prefetch entries', () => {
    equal(bs.readlink(6).toString(), '../a/x');
    deepEqual(bs.xattrs(9), [{ name: Buffer.from('user.k'), value: Buffer.from('v1') }]);
    deepEqual(bs.xattrs(10), []);
    deepEqual(bs.xattrs(8), [{ name: Buffer.from('trusted.overlay.opaque'), value: Buffer.from('y') }]);
    deepEqual(bs.xattrs(3), []);
    deepEqual(bs.prefetchInos(), [7, 3]);
  });

  void it('returns chunks in file order, sorting HAS_HOLE files by file offset', () => {
    const chunks = bs.chunks(3);
    deepEqual(
      chunks.map((c) => c.fileOffset),
      [0, 1, 2, 3].map((k) => k * CHUNK),
    );
    const data = Buffer.concat(
      chunks.map((c) => blob.subarray(c.compressedOffset, c.compressedOffset + c.compressedSize)),
    );
    deepEqual(data, BIG);
    deepEqual(bs.chunks(2), []);
    deepEqual(bs.chunks(6), []);
    equal(bs.chunks(10).length, 0);
    equal(bs.allChunks().length, 4 + 1 + 1 + 1);
  });

  void it('reports wrong inode types and unknown inodes with their codes', () => {
    throws(() => bs.lookup(3, Buffer.from('x')), isCode('ERR_INODE_TYPE'));
    throws(() => bs.readdir(6), isCode('ERR_INODE_TYPE'));
    throws(() => bs.childCount(4), isCode('ERR_INODE_TYPE'));
    throws(() => bs.readlink(3), isCode('ERR_INODE_TYPE'));
    for (const ino of [0, -1, 14, 1.5, Number.NaN, 2 ** 40]) {
      throws(() => bs.getAttr(ino), isCode('ERR_NOT_FOUND'), String(ino));
    }
    // Index 12 is the second occurrence of inode 9: no inode 12 exists.
    throws(() => bs.getAttr(12), /Inode 12 not found: index 12 is a hardlink of inode 9/);
  });

  void it('replaces a blob id', () => {
    const other = RafsV5Bootstrap.parse(image);
    other.setBlobId(0, 'f'.repeat(64));
    equal(other.blobs[0]?.blobId, 'f'.repeat(64));
    equal(bs.blobs[0]?.blobId, sha256Hex(blob));
    throws(() => other.setBlobId(1, 'x'), isCode('ERR_NOT_FOUND'));
    throws(() => other.setBlobId(0, ''), isCode('ERR_INVALID_ARG'));
  });

  void it('builds blake3 images too', () => {
    RafsV5Bootstrap.parse(buildImage(TREE, { digester: 'blake3' }).image).validate();
  });
});

void describe('RafsV5Bootstrap rejects malformed hand-made images', () => {
  const { image } = buildImage(TREE);

  /** The record at `index` of `img` must fail validate() with `message`. */
  function rejects(img: Buffer, message: RegExp): void {
    throws(
      () => RafsV5Bootstrap.parse(img).validate(),
      (e: unknown) => {
        ok(e instanceof NydusError, String(e));
        ok(message.test(e.message), `${e.message} does not match ${message}`);
        return true;
      },
    );
  }

  void it('a directory whose child range includes itself', () => {
    // Directory "sub" (index 7) lists indexes 6..8: "link", itself and "zeta".
    rejects(
      patchInode(image, 7, { childIndex: 6, childCount: 3 }),
      /^Inode 7: directory lists itself as a child \(children are indexes 6\.\.8\)/,
    );
  });

  void it('a directory that lists an ancestor', () => {
    // "deep" (index 11) lists the root.
    rejects(
      patchInode(image, 11, { childIndex: 1, childCount: 1 }),
      /^Inode 11: child_index 1 is not greater than its index 11/,
    );
  });

  void it('two directories sharing children', () => {
    // "zeta" (index 8, empty) claims "a/x" and "a/y" (indexes 9, 10) as well.
    rejects(
      patchInode(image, 8, { childIndex: 9, childCount: 2, nlink: 2 }),
      /also listed by another directory|names parent/,
    );
  });

  void it('children out of byte order', () => {
    rejects(buildImage(TREE, { unsorted: true }).image, /child names are not strictly ascending/);
  });

  void it('field checks of rafs-format.md 2.14', () => {
    rejects(patchInode(image, 5, { nameSize: 0 }), /^Inode 5: name_size 0 is out of range 1\.\.255/);
    rejects(patchInode(image, 5, { nameSize: 256 }), /^Inode 5: name_size 256 is out of range 1\.\.255/);
    rejects(patchInode(image, 5, { ino: 0 }), /^Inode 5: ino is 0/);
    rejects(patchInode(image, 5, { ino: 99 }), /^Inode 5: ino 99 is outside the inode table 1\.\.13/);
    rejects(patchInode(image, 5, { nlink: 0 }), /^Inode 5: nlink is 0/);
    rejects(patchInode(image, 5, { parent: 0 }), /^Inode 5: parent is 0 for a non-root inode/);
    rejects(patchInode(image, 5, { parent: 5 }), /^Inode 5: parent 5 is not smaller than ino 5/);
    rejects(patchInode(image, 5, { mode: 0o644 }), /^Inode 5: mode 0o644 is not a file type/);
    rejects(patchInode(image, 6, { symlinkSize: 0 }), /^Inode 6: symlink_size 0 is out of range 1\.\.4096/);
    rejects(
      patchInode(image, 4, { symlinkSize: 8 }),
      /^Inode 4: symlink_size 8 on an inode that is not a symlink/,
    );
    rejects(patchInode(image, 1, { parent: 3 }), /^Inode 1: root has parent 3/);
    rejects(
      patchInode(image, 1, { mode: S_IFREG | 0o644, childCount: 0 }),
      /^Inode 1: root mode 0o100644 is not a directory/,
    );
    rejects(
      patchInode(image, 7, { childCount: 9 }),
      /^Inode 7: children 11\.\.19 run past the inode table 1\.\.13/,
    );
    rejects(patchInode(image, 4, { ino: 2 }), /^Inode 4: ino 2 differs from its index/);
    rejects(
      patchInode(image, 13, { size: 5000 }),
      /^Inode 13: child_count 1 does not fit 2 chunks of a 5000-byte file/,
    );
    rejects(patchInode(image, 13, { parent: 7 }), /^Inode 11: child 13 "z" names parent 7 instead of 11/);
    rejects(patchInode(image, 5, { flags: 0x10 }), /^Inode 5: flags 0x10 have unknown bits/);
    rejects(patchInode(image, 5, { flags: 2 ** 40 }), /^Inode 5: flags 0x10000000000 have unknown bits/);
    rejects(
      patchInode(image, 6, { size: 5 }),
      /^Inode 6: size 5 of a symlink differs from its symlink_size 6/,
    );
  });

  void it('hardlink occurrences that are not the same inode', () => {
    // "z" (index 13) claims to be inode 9 ("a/x"), but its data differs.
    rejects(patchInode(image, 13, { ino: 9, parent: 11 }), /^Inode 13: hardlink of inode 9 differs from it/);
    // "sub/hl" (index 12) claims to be inode 3 ("big"), which is not hardlinked.
    rejects(patchInode(image, 12, { ino: 3 }), /^Inode 12: hardlink of inode 3 differs from it/);
    // The second occurrence of inode 9 claims a directory as its first occurrence.
    rejects(
      patchInode(image, 12, { ino: 2 }),
      /^Inode 12: hardlink of inode 2, but the record at index 2 is not that regular file/,
    );
    rejects(patchInode(image, 9, { ino: 12 }), /^Inode 9: hardlink ino 12 is not an earlier index/);
  });

  void it('an entry name that is not a plain name', () => {
    const slash = Buffer.from(image);
    const off = recordAt(slash, 13);
    slash[off + V5_INODE_SIZE] = 0x2f;
    rejects(slash, /^Inode 11: child 13 has an invalid name "\/"/);
    const dots = buildImage(dir('', [file('..', 'x')])).image;
    rejects(dots, /^Inode 1: child 2 has an invalid name "\.\."/);
  });

  void it('a wrong digest, naming both values', () => {
    rejects(
      patchInode(image, 3, { digest: Buffer.alloc(32) }),
      /^Inode 1: digest [0-9a-f]{64} does not match the computed/,
    );
    rejects(
      patchInode(image, 1, { digest: Buffer.alloc(32) }),
      /^Inode 1: digest 0{64} does not match the computed [0-9a-f]{64}/,
    );
    // A directory is checked against its children's stored digests, so a changed child digest
    // shows at the parent; a changed chunk id shows at the file.
    const chunkId = Buffer.from(image);
    const idAt = recordAt(chunkId, 13) + V5_INODE_SIZE + 8;
    chunkId.writeUInt8(chunkId.readUInt8(idAt) ^ 1, idAt);
    rejects(chunkId, /^Inode 13: digest [0-9a-f]{64} does not match/);
  });

  void it('a chunk in a blob that does not exist, or outside its blob', () => {
    const at = recordAt(image, 13) + V5_INODE_SIZE + 8;
    const badBlob = Buffer.from(image);
    badBlob.writeUInt32LE(1, at + 32);
    rejects(badBlob, /^Inode 13: chunk 0: blob_index 1 is out of range \(1 blobs\)/);
    const past = Buffer.from(image);
    past.writeBigUInt64LE(1n << 40n, at + 48);
    rejects(past, /^Inode 13: chunk 0: compressed range ends at/);
    const offset = Buffer.from(image);
    offset.writeBigUInt64LE(4096n, at + 64);
    rejects(offset, /^Inode 13: chunk 0: file_offset 4096 is not 0/);
    const size = Buffer.from(image);
    size.writeUInt32LE(3, at + 44);
    rejects(size, /^Inode 13: chunk 0: uncompressed_size 3 is not 2/);
    const encrypted = Buffer.from(image);
    encrypted.writeUInt32LE(0x4, at + 36);
    rejects(encrypted, /^Inode 13: chunk 0: flags 0x4 are not valid in a RAFS v5 chunk/);
    const compressed = Buffer.from(image);
    compressed.writeUInt32LE(0x1, at + 36);
    rejects(compressed, /^Inode 13: chunk 0: chunk is marked compressed but the image compressor is none/);
    const unequal = Buffer.from(image);
    unequal.writeUInt32LE(1, at + 40);
    rejects(unequal, /^Inode 13: chunk 0: uncompressed chunk has compressed_size 1 and uncompressed_size 2/);
  });

  void it('an xattr outside the allowed namespaces', () => {
    const bad = buildImage(
      dir('', [file('f', 'x', { xattrs: [{ name: Buffer.from('user.ok'), value: Buffer.from('') }] })]),
    ).image;
    const at = bad.indexOf(Buffer.from('user.ok'));
    bad.write('abcd.', at);
    rejects(bad, /^Inode 2: xattr name "abcd\.ok" is not in an allowed namespace/);
  });

  void it('a record that runs past the end of the file', () => {
    const copy = Buffer.from(image);
    copy.writeUInt32LE((copy.length - 64) / 8, RAFS_V5_SUPERBLOCK_SIZE + 12 * 4);
    rejects(copy, /^Inode 13: record at offset \d+ is outside the bootstrap/);
    const inSuper = Buffer.from(image);
    inSuper.writeUInt32LE(1, RAFS_V5_SUPERBLOCK_SIZE + 12 * 4);
    rejects(inSuper, /^Inode 13: inode table slot 1 points into the superblock/);
  });

  void it('inode table slots that share one record', () => {
    // Indexes 4..13 all point at the record of "big" (index 3); allChunks walks it once.
    const shared = Buffer.from(image);
    const big = shared.readUInt32LE(RAFS_V5_SUPERBLOCK_SIZE + 2 * 4);
    for (let index = 4; index <= 13; index++)
      shared.writeUInt32LE(big, RAFS_V5_SUPERBLOCK_SIZE + (index - 1) * 4);
    const bs = RafsV5Bootstrap.parse(shared);
    equal(bs.allChunks().length, 4);
    rejects(shared, /^Inode 1: child names are not strictly ascending: "big" before "big"/);
  });

  void it('a regular file with more chunks than fit in the file', () => {
    rejects(
      patchInode(image, 13, { childCount: 0xffff_ffff }),
      /^Inode 13: 4294967295 chunk records run past the end/,
    );
  });
});

void describe('RafsV5Bootstrap.parse rejects bad superblocks', () => {
  const { image } = buildImage(TREE);
  const withU32 = (off: number, v: number): Buffer => {
    const copy = Buffer.from(image);
    copy.writeUInt32LE(v, off);
    return copy;
  };

  void it('absurd counts', () => {
    throws(
      () => RafsV5Bootstrap.parse(withU32(56, 0xffff_ffff)),
      /inode table \[8192, 17179877372\) is not inside/,
    );
    throws(() => RafsV5Bootstrap.parse(withU32(60, 0xffff_ffff)), /prefetch table/);
    throws(() => RafsV5Bootstrap.parse(withU32(64, 0xffff_ffff)), /blob table/);
    throws(() => RafsV5Bootstrap.parse(withU32(68, 0xffff_ffff)), /extended blob table/);
  });

  void it('an extended blob table that does not match the blob table', () => {
    // No blobs (blob_table_size 0) but one extended entry.
    throws(
      () => RafsV5Bootstrap.parse(withU32(64, 0)),
      /Extended blob table has 1 entries but the blob table has 0 blobs/,
    );
  });

  void it('an image without an extended blob table', () => {
    const copy = Buffer.from(image);
    copy.writeUInt32LE(0, 68);
    copy.writeBigUInt64LE(0n, 72);
    const bs = RafsV5Bootstrap.parse(copy);
    equal(bs.blobs[0]?.chunkCount, 0);
    equal(bs.blobs[0]?.compressedSize, 0);
    bs.validate();
  });

  void it('writes chunk records that re-encode identically', () => {
    const c = Buffer.alloc(CHUNK_RECORD_SIZE);
    encodeChunkRecord(RafsV5Bootstrap.parse(image).chunks(13)[0]!, c, 0);
    const at = recordAt(image, 13) + V5_INODE_SIZE + 8;
    deepEqual(c, image.subarray(at, at + CHUNK_RECORD_SIZE));
  });
});

void describe('fuzzing a hand-made image with xattrs, holes, devices and hardlinks', () => {
  const { image } = buildImage(TREE, { prefetch: [7, 3] });

  /** parse, call every reader, validate: only NydusErrors may escape; true when accepted. */
  function accepted(buf: Buffer): boolean {
    const clean = <T>(fn: () => T): T | undefined => {
      try {
        return fn();
      } catch (e) {
        if (e instanceof NydusError) return undefined;
        throw e;
      }
    };
    const bs = clean(() => RafsV5Bootstrap.parse(buf));
    if (bs === undefined) return false;
    clean(() => bs.prefetchInos());
    clean(() => bs.allChunks());
    for (let ino = 1; ino <= Math.min(bs.indexCount, 64); ino++) {
      clean(() => bs.getAttr(ino));
      clean(() => bs.chunks(ino));
      clean(() => bs.xattrs(ino));
      clean(() => bs.readlink(ino));
      for (const e of clean(() => bs.readdir(ino, 0, 64)) ?? []) clean(() => bs.lookup(ino, e.name));
    }
    return clean(() => (bs.validate(), true)) ?? false;
  }

  void it('rejects every truncation cleanly', () => {
    ok(accepted(image));
    for (let len = 0; len < image.length; len++)
      equal(accepted(image.subarray(0, len)), false, `length ${len}`);
  });

  void it('survives 1000 seeded single-byte flips past the superblock', () => {
    let s = 0x1234_5678;
    const random = (): number => {
      // xorshift32
      s ^= s << 13;
      s ^= s >>> 17;
      s ^= s << 5;
      return (s >>> 0) / 2 ** 32;
    };
    for (let k = 0; k < 1000; k++) {
      const at = RAFS_V5_SUPERBLOCK_SIZE + Math.floor(random() * (image.length - RAFS_V5_SUPERBLOCK_SIZE));
      const copy = Buffer.from(image);
      copy.writeUInt8(copy.readUInt8(at) ^ (1 + Math.floor(random() * 255)), at);
      accepted(copy);
    }
  });
});
