import { createHash } from 'node:crypto';
import { deepEqual, equal, ok } from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { digest } from '../../../src/codec/digest.js';
import { CHUNK_RECORD_SIZE, decodeChunkRecord, encodeChunkRecord } from '../../../src/format/chunk-record.js';
import { isDir, isReg, isSymlink, S_IFDIR, S_IFREG } from '../../../src/format/flags.js';
import type { DirEntry } from '../../../src/format/model.js';
import {
  decodeV5BlobTable,
  decodeV5ExtBlobTable,
  encodeV5BlobTable,
  encodeV5ExtBlobTable,
} from '../../../src/format/v5/blob-table.js';
import { RafsV5Bootstrap } from '../../../src/format/v5/bootstrap.js';
import {
  decodeV5InodeFixed,
  encodeV5InodeFixed,
  encodeV5InodeRecord,
  V5_INODE_SIZE,
} from '../../../src/format/v5/inode.js';
import {
  decodeV5Superblock,
  encodeV5Superblock,
  RAFS_V5_SUPERBLOCK_SIZE,
} from '../../../src/format/v5/superblock.js';
import { FIXTURE, readUpstreamFixture } from '../../helpers/fixtures.js';

const BLOB_ID = '7334a2594e133cf8ae364189c2276b090fc490c627bcc3fb1077f0419a538e00';

const IMAGES = [
  { name: 'sha256-nocompress-repeatable', rel: FIXTURE.v5Sha256, flags: 0x9, digester: 'sha256' },
  { name: 'blake3-lz4_block-non_repeatable', rel: FIXTURE.v5Blake3, flags: 0x5, digester: 'blake3' },
] as const;

function load(t: TestContext, rel: string): { buf: Buffer; bs: RafsV5Bootstrap } | undefined {
  const buf = readUpstreamFixture(t, rel);
  return buf === undefined ? undefined : { buf, bs: RafsV5Bootstrap.parse(buf) };
}

/** Resolve a slash-separated path from the root by successive lookups. */
function resolvePath(bs: RafsV5Bootstrap, path: string): DirEntry | undefined {
  let entry: DirEntry | undefined = { name: Buffer.from('/'), ino: bs.rootIno, type: S_IFDIR };
  for (const part of path.split('/').filter((p) => p !== '')) {
    if (entry === undefined) return undefined;
    entry = bs.lookup(entry.ino, Buffer.from(part));
  }
  return entry;
}

/**
 * The `tree -a -J -v` rendering: one entry per line, two spaces of indentation per level, a
 * directory opens `"contents":[` on its own line and closes with `]}`; siblings are separated by
 * a comma at the end of the previous sibling's last line.
 */
function treeLines(bs: RafsV5Bootstrap, ino: number, name: string, indent: number): string[] {
  const pad = ' '.repeat(indent);
  const attr = bs.getAttr(ino);
  const shown = JSON.stringify(name);
  if (isDir(attr.mode)) {
    const lines = [`${pad}{"type":"directory","name":${shown},"contents":[`];
    const children = bs.readdir(ino);
    children.forEach((c, k) => {
      const sub = treeLines(bs, c.ino, c.name.toString('utf8'), indent + 2);
      if (k < children.length - 1) sub[sub.length - 1] += ',';
      lines.push(...sub);
    });
    lines.push(`${pad}]}`);
    return lines;
  }
  if (isSymlink(attr.mode)) {
    const target = JSON.stringify(bs.readlink(ino).toString('utf8'));
    return [`${pad}{"type":"link","name":${shown},"target":${target},"contents":[]}`];
  }
  if (isReg(attr.mode)) return [`${pad}{"type":"file","name":${shown}}`];
  throw new Error(`Unexpected file type 0o${attr.mode.toString(8)} for ${name}`);
}

/** Every regular file by absolute path, in tree order. */
function regularFiles(bs: RafsV5Bootstrap, ino = bs.rootIno, prefix = ''): [string, number][] {
  const out: [string, number][] = [];
  for (const c of bs.readdir(ino)) {
    const path = `${prefix}/${c.name.toString('utf8')}`;
    if (c.type === S_IFDIR) out.push(...regularFiles(bs, c.ino, path));
    else if (c.type === S_IFREG) out.push([path, c.ino]);
  }
  return out;
}

for (const image of IMAGES) {
  void describe(`upstream v5 fixture ${image.name}`, () => {
    void it('parses the superblock values of rafs-format.md 9', (t) => {
      const l = load(t, image.rel);
      if (l === undefined) return;
      const { bs } = l;
      const sb = bs.superblock;
      equal(sb.version, 5);
      equal(sb.flags, image.flags);
      equal(sb.compressor, 'none');
      equal(sb.digester, image.digester);
      equal(sb.explicitUidGid, false);
      equal(sb.hasXattr, false);
      equal(sb.chunkSize, 0x100000);
      equal(sb.inodesCount, 51);
      equal(bs.indexCount, 54);
      equal(bs.rootIno, 1);
      deepEqual(sb.fields, {
        magic: 0x52414653,
        fs_version: 0x500,
        sb_size: 8192,
        block_size: 0x100000,
        flags: image.flags,
        inodes_count: 51,
        inode_table_offset: 8192,
        prefetch_table_offset: 8192 + 216,
        blob_table_offset: 8192 + 216,
        inode_table_entries: 54,
        prefetch_table_entries: 0,
        blob_table_size: 72,
        extended_blob_table_entries: 1,
        extended_blob_table_offset: 8192 + 216 + 72,
      });
      deepEqual(bs.prefetchInos(), []);
    });

    void it('has one blob with its extended entry and every BlobInfo field filled', (t) => {
      const l = load(t, image.rel);
      if (l === undefined) return;
      deepEqual(l.bs.blobs, [
        {
          index: 0,
          blobId: BLOB_ID,
          chunkSize: 0x100000,
          chunkCount: 23,
          compressor: 'none',
          digester: image.digester,
          features: 0,
          compressedSize: 3508766,
          uncompressedSize: 3508766,
          readaheadOffset: 0,
          readaheadSize: 0,
          ciCompressor: 'none',
          ciOffset: 0,
          ciCompressedSize: 0,
          ciUncompressedSize: 0,
          tocSize: 0,
          tocDigest: Buffer.alloc(32),
          metaDigest: Buffer.alloc(32),
          metaSize: 0,
          cipher: 0,
          deviceBlocks: 0,
          mappedBlkaddr: 0,
        },
      ]);
    });

    void it('validates, recomputing every inode digest', (t) => {
      const l = load(t, image.rel);
      if (l === undefined) return;
      l.bs.validate();
    });

    void it('resolves the three hardlink occurrences to ino 5 with nlink 3', (t) => {
      const l = load(t, image.rel);
      if (l === undefined) return;
      const { bs } = l;
      for (const path of ['hardlink-test/foo', 'hardlink-test/test.sh', 'normal-file-test/test.sh']) {
        const e = resolvePath(bs, path);
        ok(e, path);
        equal(e.ino, 5, path);
        equal(e.type, S_IFREG);
        const attr = bs.getAttr(e.ino);
        equal(attr.nlink, 3);
        equal(attr.size, 944);
      }
      equal(resolvePath(bs, 'hardlink-test/nope'), undefined);
      equal(
        resolvePath(
          bs,
          'normal-file-test/busybox/1f777dbdd68d1c4d554bc0d20e027bfef9ed2dfe2d8d5f029e958552a0e12475/etc/passwd',
        )?.ino,
        28,
      );
    });

    void it('reproduces the tree -a -J -v part of the .result file', (t) => {
      const l = load(t, image.rel);
      const result = readUpstreamFixture(t, `${image.rel}.result`);
      if (l === undefined || result === undefined) return;
      const lines = result.toString('utf8').split('\n');
      const report = lines.findIndex((s) => s.startsWith('  {"type":"report"'));
      ok(report > 0);
      const ours = ['[', ...treeLines(l.bs, l.bs.rootIno, '', 2)];
      ours[ours.length - 1] += ',';
      equal(ours.join('\n'), lines.slice(0, report).join('\n'));
    });

    void it('reads every file from the blob: chunk ids and md5 sums match', (t) => {
      const l = load(t, image.rel);
      const result = readUpstreamFixture(t, `${image.rel}.result`);
      const blob = readUpstreamFixture(t, FIXTURE.v5Blob);
      if (l === undefined || result === undefined || blob === undefined) return;
      const { bs } = l;
      const expected = new Map<string, string>();
      for (const line of result.toString('utf8').split('\n')) {
        const m = /^([0-9a-f]{32}) {2}(\/.*)$/.exec(line);
        if (m) expected.set(m[2]!, m[1]!);
      }
      const files = regularFiles(bs);
      equal(files.length, expected.size);
      for (const [path, ino] of files) {
        const parts = bs.chunks(ino).map((c) => {
          equal(c.blobIndex, 0);
          equal(c.compressedSize, c.uncompressedSize);
          const data = blob.subarray(c.compressedOffset, c.compressedOffset + c.compressedSize);
          equal(data.length, c.uncompressedSize);
          ok(digest(bs.superblock.digester, data).equals(c.id), `${path}: chunk id at ${c.fileOffset}`);
          return data;
        });
        const data = Buffer.concat(parts);
        equal(data.length, bs.getAttr(ino).size, path);
        equal(createHash('md5').update(data).digest('hex'), expected.get(path), path);
      }
    });

    void it('re-encodes superblock, blob tables and every inode record to identical bytes', (t) => {
      const l = load(t, image.rel);
      if (l === undefined) return;
      const { buf, bs } = l;
      const sb = decodeV5Superblock(buf);
      deepEqual(encodeV5Superblock(sb), buf.subarray(0, RAFS_V5_SUPERBLOCK_SIZE));
      const blobTable = buf.subarray(sb.blobTableOffset, sb.blobTableOffset + sb.blobTableSize);
      deepEqual(encodeV5BlobTable(decodeV5BlobTable(buf, sb.blobTableOffset, sb.blobTableSize)), blobTable);
      const extEnd = sb.extendedBlobTableOffset + 64 * sb.extendedBlobTableEntries;
      deepEqual(
        encodeV5ExtBlobTable(
          decodeV5ExtBlobTable(buf, sb.extendedBlobTableOffset, sb.extendedBlobTableEntries),
        ),
        buf.subarray(sb.extendedBlobTableOffset, extEnd),
      );
      let records = 0;
      for (let index = 1; index <= bs.indexCount; index++) {
        const rec = bs.record(index);
        const fixed = buf.subarray(rec.offset, rec.offset + V5_INODE_SIZE);
        deepEqual(encodeV5InodeFixed(decodeV5InodeFixed(buf, rec.offset)), fixed, `index ${index}`);
        const chunks = [];
        for (let k = 0; k < rec.chunkCount; k++) {
          const at = rec.chunksOffset + k * CHUNK_RECORD_SIZE;
          const c = decodeChunkRecord(buf, at);
          const again = Buffer.alloc(CHUNK_RECORD_SIZE);
          encodeChunkRecord(c, again, 0);
          deepEqual(again, buf.subarray(at, at + CHUNK_RECORD_SIZE));
          chunks.push(c);
        }
        const whole = encodeV5InodeRecord({
          inode: rec.inode,
          name: rec.name,
          ...(rec.symlink === undefined ? {} : { symlink: rec.symlink }),
          chunks,
        });
        deepEqual(whole, buf.subarray(rec.offset, rec.end), `index ${index}`);
        records += rec.end - rec.offset;
      }
      // Records follow the extended blob table back to back up to the end of the file.
      equal(extEnd + records, buf.length);
    });

    void it('lists all chunks in index order, hardlink copies included', (t) => {
      const l = load(t, image.rel);
      if (l === undefined) return;
      const all = l.bs.allChunks();
      equal(new Set(all.map((c) => c.index)).size, 23);
      // 23 unique chunks in 29 records: the hardlinked file's chunk appears once per occurrence
      // (3), and the all-zero 1 MiB chunk of the hole files is shared (5 references).
      equal(all.length, 29);
      deepEqual(
        all.map((c) => c.index),
        [
          0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 13, 14, 13, 15, 13, 13, 16, 17, 18, 19, 20, 21,
          22,
        ],
      );
    });
  });
}
