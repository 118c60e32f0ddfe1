import { deepEqual, equal, ok, throws } from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { decompress } from '../../../src/codec/compress.js';
import { digest } from '../../../src/codec/digest.js';
import { NydusError } from '../../../src/errors/errors.js';
import { CHUNK_RECORD_SIZE, encodeChunkRecord } from '../../../src/format/chunk-record.js';
import { ChunkFlag, S_IFDIR, S_IFREG } from '../../../src/format/flags.js';
import { encodeBlobEntry } from '../../../src/format/v6/blob-table.js';
import { EROFS_MAGIC, EROFS_SUPER_OFFSET, RafsV6Bootstrap } from '../../../src/format/v6/bootstrap.js';
import { CHUNK_INDEX_SIZE, encodeChunkIndex } from '../../../src/format/v6/chunk-index.js';
import { deviceSlotOffset, encodeDeviceSlot } from '../../../src/format/v6/device-table.js';
import { encodeDirData, decodeDirBlock } from '../../../src/format/v6/dirent.js';
import { DataLayout, encodeInode, inodeSize } from '../../../src/format/v6/inode.js';
import { encodeErofsSuper, encodeRafsExtSuper } from '../../../src/format/v6/superblock.js';
import { FIXTURE, readUpstreamFixture } from '../../helpers/fixtures.js';

const BLOB_ID = 'be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef';

const FILES = [
  { name: 'lib.rs', size: 16931, md5: '4709cf8873e419ecedc7d43fdee4a75f' },
  { name: 'sync_io.rs', size: 13400, md5: '5442bc7dc9dc5f985c7594e23866ae6f' },
];

function md5(b: Buffer): string {
  return createHash('md5').update(b).digest('hex');
}

describe('v6 reader on bootstrap/rafs-v6-2.2.boot (rafs-format.md 9, 10.5)', () => {
  it('parses the superblocks and tables to the documented values', (t) => {
    const buf = readUpstreamFixture(t, FIXTURE.v6Boot);
    if (buf === undefined) return;
    equal(buf.readUInt32LE(EROFS_SUPER_OFFSET), EROFS_MAGIC);
    const b = RafsV6Bootstrap.parse(buf);
    const sb = b.superblock;
    equal(sb.version, 6);
    equal(sb.flags, 0x194);
    equal(sb.compressor, 'zstd');
    equal(sb.digester, 'blake3');
    equal(sb.explicitUidGid, true);
    equal(sb.hasXattr, false);
    equal(sb.chunkSize, 0x10_0000);
    equal(sb.inodesCount, 3);
    equal(b.rootIno, 128);
    equal(b.blockSize, 4096);
    deepEqual(sb.fields, {
      magic: EROFS_MAGIC,
      checksum: 0,
      feature_compat: 0x4000_0000,
      blkszbits: 12,
      extslots: 0,
      root_nid: 128,
      inos: 3,
      build_time: 0,
      build_time_nsec: 0,
      blocks: 9,
      meta_blkaddr: 2,
      xattr_blkaddr: 0,
      feature_incompat: 0xc,
      extra_devices: 1,
      devt_slotoff: 11,
      flags: 0x194,
      blob_table_offset: 4096,
      blob_table_size: 256,
      chunk_size: 0x10_0000,
      chunk_table_offset: 0x4000,
      chunk_table_size: 160,
      prefetch_table_offset: 0,
      prefetch_table_size: 0,
    });
    equal(b.blobs.length, 1);
    const blob = b.blobs[0]!;
    equal(blob.blobId, BLOB_ID);
    equal(blob.index, 0);
    equal(blob.features, 0x7000_0021);
    equal(blob.chunkCount, 2);
    equal(blob.compressor, 'zstd');
    equal(blob.digester, 'blake3');
    equal(blob.compressedSize, 14554);
    equal(blob.uncompressedSize, 0x9000);
    equal(blob.ciCompressor, 'none');
    equal(blob.ciOffset, 8314);
    equal(blob.ciCompressedSize, 32);
    equal(blob.ciUncompressedSize, 32);
    equal(blob.tocSize, 1024);
    equal(blob.deviceBlocks, 9);
    equal(blob.mappedBlkaddr, 512);
    equal(blob.cipher, 0);
    equal(b.allChunks().length, 2);
    deepEqual(b.prefetchInos(), []);
  });

  it('validates and lists the root', (t) => {
    const buf = readUpstreamFixture(t, FIXTURE.v6Boot);
    if (buf === undefined) return;
    const b = RafsV6Bootstrap.parse(buf);
    b.validate();
    const root = b.getAttr(b.rootIno);
    equal(root.mode, S_IFDIR | 0o755);
    equal(root.size, 67);
    equal(root.nlink, 2);
    equal(root.ino, 128);
    const rootInode = b.inode(128);
    equal(rootInode.extended, true);
    equal(rootInode.ino, 0);
    equal(rootInode.layout, DataLayout.FLAT_INLINE);
    equal(b.childCount(b.rootIno), 2);
    const kids = b.readdir(b.rootIno);
    deepEqual(
      kids.map((k) => k.name.toString()),
      FILES.map((f) => f.name),
    );
    for (const [i, f] of FILES.entries()) {
      const k = kids[i]!;
      equal(k.type, S_IFREG);
      const attr = b.getAttr(k.ino);
      equal(attr.size, f.size);
      equal(attr.mode, S_IFREG | 0o644);
      equal(attr.blocks, Math.ceil(f.size / 512));
      equal(b.inode(k.ino).extended, true);
      deepEqual(b.lookup(b.rootIno, Buffer.from(f.name)), k);
      deepEqual(b.xattrs(k.ino), []);
      equal(b.inlineData(k.ino), undefined);
    }
    deepEqual(
      kids.map((k) => k.ino),
      [133, 136],
    );
    deepEqual(b.readdir(b.rootIno, 1), [kids[1]]);
    deepEqual(b.readdir(b.rootIno, 0, 1), [kids[0]]);
    deepEqual(b.readdir(b.rootIno, 2), []);
    equal(b.lookup(b.rootIno, Buffer.from('.')), undefined);
    equal(b.lookup(b.rootIno, Buffer.from('main.rs')), undefined);
    throws(
      () => b.readdir(133),
      (e) => e instanceof NydusError && e.code === 'ERR_INODE_TYPE',
    );
    throws(
      () => b.readlink(133),
      (e) => e instanceof NydusError && e.code === 'ERR_INODE_TYPE',
    );
    throws(
      () => b.getAttr(1e9),
      (e) => e instanceof NydusError && e.code === 'ERR_NOT_FOUND',
    );
  });

  it('resolves each file chunk through the chunk table', (t) => {
    const buf = readUpstreamFixture(t, FIXTURE.v6Boot);
    if (buf === undefined) return;
    const b = RafsV6Bootstrap.parse(buf);
    deepEqual(b.chunkRefs(133), [{ blobIndex: 0, ciIndex: 0, blkaddr: 0 }]);
    deepEqual(b.chunkRefs(136), [{ blobIndex: 0, ciIndex: 1, blkaddr: 5 }]);
    const [lib] = b.chunks(133);
    const [sync] = b.chunks(136);
    ok(lib !== undefined && sync !== undefined);
    deepEqual(
      { ...lib, id: lib.id.toString('hex') },
      {
        id: 'f7e2735f1c6ae9cde91e537416b09d8bb71b306a421d19cc1012a51f93a7fe69',
        blobIndex: 0,
        flags: ChunkFlag.COMPRESSED,
        compressedSize: 4828,
        uncompressedSize: 16931,
        compressedOffset: 0,
        uncompressedOffset: 0,
        fileOffset: 0,
        index: 0,
        crc32: 0,
      },
    );
    equal(sync.index, 1);
    equal(sync.compressedOffset, 4828);
    equal(sync.compressedSize, 2974);
    equal(sync.uncompressedOffset, 20480);
    equal(sync.uncompressedSize, 13400);
    equal(sync.fileOffset, 0);
  });

  it('reads both files from the blob: md5 and chunk digests match', (t) => {
    const buf = readUpstreamFixture(t, FIXTURE.v6Boot);
    const blobBytes = readUpstreamFixture(t, FIXTURE.v6Blob);
    if (buf === undefined || blobBytes === undefined) return;
    const b = RafsV6Bootstrap.parse(buf);
    const blob = b.blobs[0]!;
    for (const f of FILES) {
      const entry = b.lookup(b.rootIno, Buffer.from(f.name));
      ok(entry !== undefined);
      const parts = b.chunks(entry.ino).map((c) => {
        const src = blobBytes.subarray(c.compressedOffset, c.compressedOffset + c.compressedSize);
        const data =
          (c.flags & ChunkFlag.COMPRESSED) !== 0 ? decompress(blob.compressor, src, c.uncompressedSize) : src;
        deepEqual(digest(b.superblock.digester, data), c.id);
        return data;
      });
      const data = Buffer.concat(parts);
      equal(data.length, f.size);
      equal(md5(data), f.md5);
    }
  });

  it('re-encodes every decoded structure to the fixture bytes exactly', (t) => {
    const buf = readUpstreamFixture(t, FIXTURE.v6Boot);
    if (buf === undefined) return;
    const b = RafsV6Bootstrap.parse(buf);
    const out = Buffer.alloc(buf.length);
    encodeErofsSuper(b.erofsSuper, out);
    encodeRafsExtSuper(b.extSuper, out);
    b.deviceSlots.forEach((slot, i) => encodeDeviceSlot(slot, out, deviceSlotOffset(i)));
    b.blobEntries.forEach((e, i) => encodeBlobEntry(e, out, b.extSuper.blobTableOffset + 256 * i));
    const root = b.inode(b.rootIno);
    const encodedInodes = [b.rootIno];
    const rootOff = b.inodeOffset(b.rootIno);
    encodeInode(root, out, rootOff);
    // The root's dirents are inline, right after the inode (no xattrs).
    const rootData = encodeDirData(decodeDirBlock(buf.subarray(rootOff + 64, rootOff + 64 + root.size)));
    equal(rootData.length, root.size);
    rootData.copy(out, rootOff + inodeSize(root));
    for (const kid of b.readdir(b.rootIno)) {
      const off = b.inodeOffset(kid.ino);
      encodeInode(b.inode(kid.ino), out, off);
      b.chunkRefs(kid.ino).forEach((ref, k) => encodeChunkIndex(ref, out, off + 64 + k * CHUNK_INDEX_SIZE));
      encodedInodes.push(kid.ino);
    }
    b.allChunks().forEach((c, i) =>
      encodeChunkRecord(c, out, b.extSuper.chunkTableOffset + i * CHUNK_RECORD_SIZE),
    );
    equal(encodedInodes.length, 3);
    deepEqual(out, buf);
  });

  it('lets a blob id be replaced', (t) => {
    const buf = readUpstreamFixture(t, FIXTURE.v6Boot);
    if (buf === undefined) return;
    const b = RafsV6Bootstrap.parse(buf);
    b.setBlobId(0, 'x'.repeat(64));
    equal(b.blobs[0]!.blobId, 'x'.repeat(64));
    equal(b.blobEntries[0]!.blobId, 'x'.repeat(64));
    throws(
      () => b.setBlobId(1, 'y'),
      (e) => e instanceof NydusError && e.code === 'ERR_NOT_FOUND',
    );
  });
});
