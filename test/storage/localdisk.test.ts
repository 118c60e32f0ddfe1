import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  closeSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { localDiskBackend } from '../../src/daemon/backend/localdisk.js';
import { parseDaemonConfig } from '../../src/daemon/config/index.js';
import { NydusError } from '../../src/errors/errors.js';
import type { BlobInfo } from '../../src/format/model.js';
import type { LoadedBootstrap } from '../../src/rafs/open.js';
import {
  encodeGpt,
  gptCrc32,
  guidFromBytes,
  guidToBytes,
  parseGptEntries,
  parseGptHeader,
  TYPE_BASIC_DATA,
  TYPE_LINUX_FS,
} from '../../src/storage/gpt.js';
import {
  diskGuidFrom,
  LocalDisk,
  planLocalDisk,
  sizedBlobs,
  splitBlobId,
  writeLocalDisk,
  type DiskPlan,
} from '../../src/storage/localdisk.js';
import { createLogger } from '../../src/log/logger.js';
import { IN_CI } from '../helpers/fixtures.js';
import { createImage } from '../helpers/nydusd.js';
import { prng } from '../helpers/prng.js';
import { runBin } from '../helpers/run-bin.js';

/**
 * The localdisk GPT reader and writer, checked against util-linux's sfdisk as the reference in
 * both directions: sfdisk reads the disks `nydus-image localdisk` writes, and the reader finds
 * blobs on disks sfdisk writes (both layouts upstream knows). Malformed tables are clear errors.
 */

const dir = mkdtempSync(join(tmpdir(), 'localdisk-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

const blobInfo = (blobId: string): BlobInfo => ({ blobId, index: 0 }) as unknown as BlobInfo;

/** Random blobs named by their sha256, as the builder names them. */
function makeBlobs(sizes: number[], seed: number): { blobId: string; path: string; data: Buffer }[] {
  const rnd = prng(seed);
  const bdir = join(dir, `blobs-${seed}`);
  mkdirSync(bdir, { recursive: true });
  return sizes.map((n) => {
    const data = Buffer.alloc(n);
    for (let i = 0; i < n; i++) data[i] = Math.floor(rnd() * 256);
    const blobId = createHash('sha256').update(data).digest('hex');
    const path = join(bdir, blobId);
    writeFileSync(path, data);
    return { blobId, path, data };
  });
}

function haveSfdisk(t: import('node:test').TestContext): boolean {
  if (spawnSync('sfdisk', ['--version']).status === 0) return true;
  const why = 'sfdisk (Debian package fdisk) is not installed';
  if (IN_CI) throw new Error(`${why}; under CI=true this is a failure`);
  process.stderr.write(`\n*** SKIPPED: ${why} ***\n`);
  t.skip(why);
  return false;
}

interface SfdiskJson {
  partitiontable: {
    label: string;
    id: string;
    sectorsize: number;
    firstlba: number;
    lastlba: number;
    partitions?: { node: string; start: number; size: number; type: string; uuid: string; name: string }[];
  };
}

const sfdiskJson = (disk: string): SfdiskJson =>
  JSON.parse(execFileSync('sfdisk', ['--json', disk], { encoding: 'utf8' })) as SfdiskJson;

async function writeDisk(
  name: string,
  blobs: { blobId: string; path: string }[],
): Promise<{ disk: string; plan: DiskPlan }> {
  const plan = planLocalDisk(await sizedBlobs(blobs), diskGuidFrom(name));
  const disk = join(dir, name);
  await writeLocalDisk(disk, plan);
  return { disk, plan };
}

async function rejectsWith(p: Promise<unknown>, code: string, re: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof NydusError, `a NydusError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    assert.match(e.message, re);
    return true;
  });
}

/** Overwrite bytes of a file in place. */
function patch(file: string, offset: number, bytes: Buffer): void {
  const fd = openSync(file, 'r+');
  try {
    writeSync(fd, bytes, 0, bytes.length, offset);
  } finally {
    closeSync(fd);
  }
}

/** A new sparse file of `size` bytes. */
function sparse(file: string, size: number): void {
  writeFileSync(file, '');
  truncateSync(file, size);
}

function copy(from: string, name: string): string {
  const to = join(dir, name);
  writeFileSync(to, readFileSync(from));
  return to;
}

test('GUIDs are stored mixed-endian and the CRC is CRC32/IEEE, as the UEFI spec gives them', () => {
  // The Linux filesystem type GUID's on-disk bytes (UEFI spec / util-linux table).
  assert.equal(guidToBytes(TYPE_LINUX_FS).toString('hex'), 'af3dc60f838472478e793d69d8477de4');
  assert.equal(guidFromBytes(Buffer.from('af3dc60f838472478e793d69d8477de4', 'hex')), TYPE_LINUX_FS);
  assert.equal(
    guidToBytes('6A390C2179FE80F4A971824C63F2CECE').toString('hex'),
    '210c396afe79f480a971824c63f2cece',
  );
  assert.equal(gptCrc32(Buffer.from('123456789')), 0xcbf43926);
  const id = '24aca8ba007e3efed3631aa05f8dc5f76a390c2179fe80f4a971824c63f2cece';
  assert.deepEqual(splitBlobId(id), {
    name: '24aca8ba007e3efed3631aa05f8dc5f7',
    guid: '6a390c21-79fe-80f4-a971-824c63f2cece',
  });
  assert.throws(() => splitBlobId('abc'), /64 lower-case hex digits/);
});

test('a written disk: sfdisk lists one Linux partition per blob, named by the first half of the id with the second half as its UUID, 1 MiB aligned; the reader gets every blob back', async (t) => {
  if (!haveSfdisk(t)) return;
  const blobs = makeBlobs([1000, 3 * 512, 1536 * 1024 + 7, 1], 1);
  const { disk, plan } = await writeDisk('good.img', blobs);
  assert.equal(statSync(disk).size, plan.size);
  assert.equal(plan.size % (1 << 20), 0);

  const verify = spawnSync('sfdisk', ['--verify', disk], { encoding: 'utf8' });
  assert.equal(verify.status, 0, verify.stderr);
  assert.match(verify.stdout, /No errors detected/);
  const pt = sfdiskJson(disk).partitiontable;
  assert.equal(pt.label, 'gpt');
  assert.equal(pt.sectorsize, 512);
  assert.equal(pt.id.toLowerCase(), plan.diskGuid);
  const parts = pt.partitions ?? [];
  assert.equal(parts.length, blobs.length);
  blobs.forEach((b, i) => {
    const p = parts[i]!;
    assert.equal(p.name, b.blobId.slice(0, 32));
    assert.equal(p.uuid.toLowerCase().replace(/-/g, ''), b.blobId.slice(32));
    assert.equal(p.type.toLowerCase(), TYPE_LINUX_FS);
    assert.equal(p.start % 2048, 0, 'partitions start on 1 MiB boundaries');
    assert.equal(p.size, Math.ceil(b.data.length / 512));
    assert.equal(p.start * 512, plan.partitions[i]!.offset);
  });

  const ld = await LocalDisk.open({ devicePath: disk });
  try {
    assert.equal(ld.legacyGpt, false);
    assert.equal(ld.capacity, plan.size);
    for (const b of blobs) {
      const r = await ld.open(blobInfo(b.blobId));
      assert.equal(r.size, Math.ceil(b.data.length / 512) * 512, 'the blob size is the partition size');
      assert.deepEqual(await r.read(0, b.data.length), b.data);
      const pad = await r.read(b.data.length, r.size - b.data.length);
      assert.ok(
        pad.every((x) => x === 0),
        'the padding to the sector is zero',
      );
      if (b.data.length > 100)
        assert.deepEqual(await r.read(37, 50, Buffer.alloc(64)), b.data.subarray(37, 87));
      await rejectsWith(r.read(r.size - 1, 2), 'ERR_FORMAT', /past the end of blob/);
    }
    const other = 'ab'.repeat(32);
    await rejectsWith(
      ld.open(blobInfo(other)),
      'ERR_NOT_FOUND',
      /is not on disk .*no GPT partition is named "abababababababababababababababab" with GUID abababab-abab-abab-abab-abababababab/,
    );
  } finally {
    await ld.close();
  }
});

test('the reader finds blobs on disks sfdisk writes: the current layout (name + GUID) and the legacy one (Microsoft basic data, name = 32 characters of the id)', async (t) => {
  if (!haveSfdisk(t)) return;
  const blobs = makeBlobs([5000, 70000], 2);
  const disk = join(dir, 'by-sfdisk.img');
  sparse(disk, 8 << 20);
  const [a, b] = blobs as [(typeof blobs)[0], (typeof blobs)[0]];
  const line = (start: number, x: typeof a, type: string, withGuid: boolean): string =>
    `start=${start}, size=${Math.ceil(x.data.length / 512)}, type=${type.toUpperCase()}, name="${x.blobId.slice(0, 32)}"` +
    (withGuid ? `, uuid=${splitBlobId(x.blobId).guid}` : '');
  const script = [
    'label: gpt',
    line(2048, a, TYPE_LINUX_FS, true),
    line(6144, b, TYPE_BASIC_DATA, false),
    '',
  ];
  execFileSync('sfdisk', ['-q', disk], { input: script.join('\n') });
  patch(disk, 2048 * 512, a.data);
  patch(disk, 6144 * 512, b.data);

  const ld = await LocalDisk.open({ devicePath: disk });
  try {
    assert.equal(ld.legacyGpt, true, 'a basic-data partition puts the disk in legacy GPT mode');
    for (const x of blobs) {
      const r = await ld.open(blobInfo(x.blobId));
      assert.deepEqual(await r.read(0, x.data.length), x.data);
    }
    assert.deepEqual(
      ld.blobs().map((x) => [x.blobId, x.offset, x.partition]),
      [
        [a.blobId, 2048 * 512, 1],
        [b.blobId.slice(0, 32), 6144 * 512, 2],
      ],
    );
    assert.throws(() => ld.addBlob('cd'.repeat(32), 0, 512), /legacy GPT mode/);
  } finally {
    await ld.close();
  }
});

test('malformed disks are clear ERR_FORMAT errors: no GPT, bad header CRC, bad entries CRC, bad or missing backup header, a partition past the end', async () => {
  const blobs = makeBlobs([4096], 3);
  const { disk, plan } = await writeDisk('base.img', blobs);
  const open = (p: string): Promise<LocalDisk> => LocalDisk.open({ devicePath: p });

  const zeros = join(dir, 'zeros.img');
  sparse(zeros, 4 << 20);
  await rejectsWith(open(zeros), 'ERR_FORMAT', /zeros\.img" \(primary\): no GPT header \(signature/);

  const tiny = join(dir, 'tiny.img');
  writeFileSync(tiny, Buffer.alloc(1000));
  await rejectsWith(open(tiny), 'ERR_FORMAT', /too small to hold a GPT/);

  const hdr = copy(disk, 'bad-header.img');
  patch(hdr, 512 + 60, Buffer.from([0x5a])); // inside the disk GUID
  await rejectsWith(
    open(hdr),
    'ERR_FORMAT',
    /\(primary\): GPT header checksum mismatch \(stored 0x[0-9a-f]{8}, computed/,
  );

  const ent = copy(disk, 'bad-entries.img');
  patch(ent, 1024 + 60, Buffer.from([0x5a])); // inside the first entry's name
  await rejectsWith(open(ent), 'ERR_FORMAT', /\(primary\): GPT partition entries checksum mismatch/);

  const bak = copy(disk, 'bad-backup.img');
  patch(bak, plan.size - 512 + 60, Buffer.from([0x5a]));
  await rejectsWith(open(bak), 'ERR_FORMAT', /backup at the last sector.*checksum mismatch/);

  const cut = copy(disk, 'truncated.img');
  truncateSync(cut, plan.size - (1 << 20) + 512 * 4);
  await rejectsWith(open(cut), 'ERR_FORMAT', /backup at the last sector.*no GPT header/);

  // A table whose partition ends past the disk (CRCs correct).
  const enc = encodeGpt({
    sectors: 4096,
    diskGuid: diskGuidFrom('x'),
    partitions: [
      { typeGuid: TYPE_LINUX_FS, guid: diskGuidFrom('y'), name: 'n', firstLba: 2048, lastLba: 4000 },
    ],
  });
  const h = parseGptHeader(enc.head.subarray(512, 1024), 1, 'Disk "d"');
  assert.throws(
    () => parseGptEntries(enc.head.subarray(1024), h, 2048 * 512, 'Disk "d"'),
    /GPT partition 1 \(bytes 1048576-2048512\) is past the end of the disk \(1048576 bytes\)/,
  );

  // Two partitions holding one blob.
  const dup = join(dir, 'dup.img');
  const { name, guid } = splitBlobId(blobs[0]!.blobId);
  const d2 = encodeGpt({
    sectors: 8192,
    diskGuid: diskGuidFrom('dup'),
    partitions: [
      { typeGuid: TYPE_LINUX_FS, guid, name, firstLba: 2048, lastLba: 2055 },
      { typeGuid: TYPE_LINUX_FS, guid, name, firstLba: 4096, lastLba: 4103 },
    ],
  });
  sparse(dup, 8192 * 512);
  patch(dup, 0, d2.head);
  patch(dup, d2.tailOffset, d2.tail);
  await rejectsWith(open(dup), 'ERR_INVALID_ARG', /GPT partitions 1 and 2 hold the same blob/);
  await rejectsWith(
    open(join(dir, 'nope.img')),
    'ERR_NOT_FOUND',
    /Cannot open localdisk device ".*nope\.img"/,
  );
});

test('disable_gpt: the table is not read, so no blob is found until one is added (upstream add_blob)', async () => {
  const rnd = Buffer.alloc(64 * 1024);
  for (let i = 0; i < rnd.length; i++) rnd[i] = (i * 7919) & 0xff;
  const raw = join(dir, 'raw.img');
  writeFileSync(raw, rnd);
  const id = 'ef'.repeat(32);
  const ld = await LocalDisk.open({ devicePath: raw, disableGpt: true });
  try {
    assert.equal(ld.gpt, undefined);
    await rejectsWith(ld.open(blobInfo(id)), 'ERR_NOT_FOUND', /disable_gpt is set and it was not added/);
    ld.addBlob(id, 4096, 1000);
    const r = await ld.open(blobInfo(id));
    assert.equal(r.size, 1000);
    assert.deepEqual(await r.read(10, 100), rnd.subarray(4106, 4206));
    assert.throws(() => ld.addBlob(id, 0, 10), /already on disk/);
    assert.throws(() => ld.addBlob('01'.repeat(32), 60 * 1024, 8192), /is outside disk/);
  } finally {
    await ld.close();
  }
});

test('backend check: a missing device and a bad table refuse the mount; a good disk passes; disable_gpt skips the table', async () => {
  const blobs = makeBlobs([2048], 4);
  const { disk } = await writeDisk('backend.img', blobs);
  const cfg = (device: string, disableGpt = false): ReturnType<typeof parseDaemonConfig>['config'] =>
    parseDaemonConfig(
      JSON.stringify({
        version: 2,
        backend: { type: 'localdisk', localdisk: { device_path: device, disable_gpt: disableGpt } },
      }),
    ).config;
  await localDiskBackend.check(cfg(disk));
  await rejectsWith(
    localDiskBackend.check(cfg(join(dir, 'missing.img'))),
    'ERR_INVALID_ARG',
    /Localdisk device ".*missing\.img" does not exist/,
  );
  await rejectsWith(
    localDiskBackend.check(cfg(dir)),
    'ERR_INVALID_ARG',
    /is not a block device or a disk image file/,
  );
  const zeros = join(dir, 'zeros2.img');
  sparse(zeros, 1 << 20);
  await rejectsWith(localDiskBackend.check(cfg(zeros)), 'ERR_FORMAT', /no GPT header/);
  await localDiskBackend.check(cfg(zeros, true));

  const log = createLogger('off');
  const be = localDiskBackend.create({ config: cfg(disk), loaded: {} as LoadedBootstrap, log });
  try {
    assert.equal(be.type, 'localdisk');
    assert.equal(be.local, true);
    const r = await be.source.open(blobInfo(blobs[0]!.blobId));
    assert.deepEqual(await r.read(0, 2048), blobs[0]!.data);
  } finally {
    await be.close();
  }
});

test('nydus-image localdisk: writes every blob of a two-layer image; sfdisk agrees with -J; missing flags and blobs are one-line errors', async (t) => {
  if (!haveSfdisk(t)) return;
  const src1 = join(dir, 'l1');
  const src2 = join(dir, 'l2');
  const bd = join(dir, 'img-blobs');
  mkdirSync(src1);
  mkdirSync(src2);
  mkdirSync(bd);
  writeFileSync(join(src1, 'one'), makeBlobs([300_000], 5)[0]!.data);
  writeFileSync(join(src2, 'two'), 'layer two\n');
  const b1 = join(dir, 'l1.boot');
  const b2 = join(dir, 'l2.boot');
  await createImage(src1, b1, bd);
  await createImage(src2, b2, bd, ['--parent-bootstrap', b1]);
  const ids = readdirSync(bd);
  assert.equal(ids.length, 2);

  const disk = join(dir, 'cli.img');
  const json = join(dir, 'cli.json');
  const r = await runBin('nydus-image', ['localdisk', '-B', b2, '-D', bd, '-O', disk, '-J', json]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /Wrote localdisk image .*cli\.img \(\d+ bytes, 2 partitions/);
  const layout = JSON.parse(readFileSync(json, 'utf8')) as {
    size: number;
    partitions: {
      blob_id: string;
      offset: number;
      size: number;
      blob_size: number;
      name: string;
      guid: string;
    }[];
  };
  assert.equal(layout.size, statSync(disk).size);
  assert.deepEqual(layout.partitions.map((p) => p.blob_id).sort(), [...ids].sort());
  const parts = sfdiskJson(disk).partitiontable.partitions ?? [];
  assert.equal(parts.length, 2);
  const data = readFileSync(disk);
  layout.partitions.forEach((p, i) => {
    const s = parts[i]!;
    assert.equal(s.name + s.uuid.toLowerCase().replace(/-/g, ''), p.blob_id);
    assert.equal(s.start * 512, p.offset);
    assert.equal(s.size * 512, p.size);
    const blob = readFileSync(join(bd, p.blob_id));
    assert.equal(p.blob_size, blob.length);
    assert.ok(
      data.subarray(p.offset, p.offset + blob.length).equals(blob),
      `partition ${i + 1} holds the blob`,
    );
  });

  // Positional BOOTSTRAP works like -B.
  const again = await runBin('nydus-image', ['localdisk', b2, '-D', bd, '-O', join(dir, 'cli2.img')]);
  assert.equal(again.code, 0, again.stderr);
  assert.ok(readFileSync(join(dir, 'cli2.img')).equals(data), 'the same image gives the same disk');

  const noOut = await runBin('nydus-image', ['localdisk', '-B', b2, '-D', bd]);
  assert.equal(noOut.code, 1);
  assert.equal(noOut.stderr, 'nydus-image: error: -O/--output (the disk image to write) is required\n');
  const noBlobs = await runBin('nydus-image', ['localdisk', '-B', b2, '-O', join(dir, 'x.img')]);
  assert.equal(noBlobs.code, 1);
  assert.match(
    noBlobs.stderr,
    /^nydus-image: error: Give the data blobs with -D\/--blob-dir or -C\/--config\n$/,
  );
  const partial = join(dir, 'partial-blobs');
  mkdirSync(partial);
  writeFileSync(join(partial, ids[0]!), readFileSync(join(bd, ids[0]!)));
  const missing = await runBin('nydus-image', [
    'localdisk',
    '-B',
    b2,
    '-D',
    partial,
    '-O',
    join(dir, 'y.img'),
  ]);
  assert.equal(missing.code, 1);
  assert.match(
    missing.stderr,
    new RegExp(`^nydus-image: error: Blob ${ids[1]!} not found in ".*partial-blobs"\\n$`),
  );
  assert.equal(
    readdirSync(dir).some((n) => /(^|tmp-)y\.img$/.test(n)),
    false,
    'no disk file is left behind',
  );
});
