import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  closeSync,
  readFileSync,
  readSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { gunzipSync } from 'node:zlib';
import { IN_CI } from '../helpers/fixtures.js';
import { makeEveryEntryTree } from '../helpers/fs-tree.js';
import {
  canFuse,
  cleanup,
  createImage,
  md5sUnder,
  mounted,
  startDaemon,
  stopDaemon,
  v1Config,
  type Daemon,
} from '../helpers/nydusd.js';
import { prng } from '../helpers/prng.js';
import { runBin } from '../helpers/run-bin.js';

/**
 * nydusd's localdisk backend on real FUSE mounts: a two-layer image laid into a GPT disk by
 * `nydus-image localdisk`, mounted from the disk file and from a loop device of it, every file's
 * md5 equal to the localfs mount of the same image; the kernel's view of the loop device's
 * partitions holds the blobs' bytes; malformed disks and a missing blob are clear errors.
 */

interface Layout {
  size: number;
  partitions: { number: number; blob_id: string; offset: number; size: number; blob_size: number }[];
}

interface Img {
  dir: string;
  boot: string;
  /** Bootstrap of the lower layer alone (its disk lacks the upper blob). */
  lowerBoot: string;
  blobs: string;
  disk: string;
  layout: Layout;
  /** md5 of every file under the localfs mount, the reference. */
  reference: [string, string][];
}

let built: Promise<Img> | undefined;
const dirs: string[] = [];
test.after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tmpDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'localdisk-d-'));
  dirs.push(d);
  return d;
}

function localdiskConfig(dir: string, device: string, name: string): string {
  const p = join(dir, `${name}.json`);
  writeFileSync(
    p,
    JSON.stringify({
      device: { backend: { type: 'localdisk', config: { device_path: device } } },
      mode: 'direct',
    }),
  );
  return p;
}

/** Mount `boot` with `config` at a new mountpoint, run `body`, always unmount. */
async function withMount(
  dir: string,
  config: string,
  boot: string,
  body: (mnt: string, d: Daemon) => Promise<void>,
): Promise<void> {
  const mnt = mkdtempSync(join(dir, 'mnt-'));
  let d: Daemon | undefined;
  try {
    d = await startDaemon(mnt, ['--config', config, '--bootstrap', boot]);
    await body(mnt, d);
    await stopDaemon(d);
    d = undefined;
  } finally {
    cleanup(d, mnt);
  }
}

/** Build the image (two layers, two blobs), its disk, and the localfs reference md5s, once. */
function image(): Promise<Img> {
  built ??= (async () => {
    const dir = tmpDir();
    const lower = join(dir, 'lower');
    const upper = join(dir, 'upper');
    const blobs = join(dir, 'blobs');
    mkdirSync(lower);
    mkdirSync(upper);
    mkdirSync(blobs);
    await makeEveryEntryTree(lower);
    const rnd = prng(7);
    for (let i = 0; i < 20; i++) {
      const b = Buffer.alloc(Math.floor(rnd() * 200_000) + 1);
      for (let j = 0; j < b.length; j++) b[j] = Math.floor(rnd() * 256);
      writeFileSync(join(upper, `f${i}`), b);
    }
    writeFileSync(join(upper, 'upper.txt'), 'from the upper layer\n');
    const lowerBoot = join(dir, 'lower.boot');
    const boot = join(dir, 'image.boot');
    await createImage(lower, lowerBoot, blobs);
    await createImage(upper, boot, blobs, ['--parent-bootstrap', lowerBoot]);
    const disk = join(dir, 'image.disk');
    const json = join(dir, 'layout.json');
    const r = await runBin('nydus-image', ['localdisk', '-B', boot, '-D', blobs, '-O', disk, '-J', json]);
    assert.equal(r.code, 0, r.stderr);
    const layout = JSON.parse(readFileSync(json, 'utf8')) as Layout;
    assert.equal(layout.partitions.length, 2);
    let reference: [string, string][] = [];
    await withMount(dir, v1Config(dir, blobs), boot, async (mnt) => {
      reference = await md5sUnder(mnt);
    });
    assert.ok(reference.length > 20, `the image has files: ${reference.length}`);
    return { dir, boot, lowerBoot, blobs, disk, layout, reference };
  })();
  return built;
}

/** Whether the running kernel can read a GPT itself (`losetup -P` then makes partitions). */
function kernelHasGptParser(): boolean | undefined {
  try {
    const cfg = gunzipSync(readFileSync('/proc/config.gz')).toString('utf8');
    return /^CONFIG_EFI_PARTITION=y$/m.test(cfg);
  } catch {
    return undefined;
  }
}

function needLosetup(t: import('node:test').TestContext): boolean {
  const ok =
    spawnSync('losetup', ['--version']).status === 0 && spawnSync('partx', ['--version']).status === 0;
  if (ok && existsSync('/dev/loop-control')) return true;
  const why = 'losetup/partx (util-linux) or /dev/loop-control is missing';
  if (IN_CI) throw new Error(`${why}; under CI=true this is a failure`);
  process.stderr.write(`\n*** SKIPPED: ${why} ***\n`);
  t.skip(why);
  return false;
}

/** Wait (bounded) for a block device node to appear. */
async function waitFor(path: string, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!existsSync(path)) {
    if (Date.now() > deadline) return false;
    await sleep(20);
  }
  return true;
}

function readRange(path: string, offset: number, length: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const b = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const n = readSync(fd, b, done, length - done, offset + done);
      if (n === 0) break;
      done += n;
    }
    return b.subarray(0, done);
  } finally {
    closeSync(fd);
  }
}

test('localdisk from the disk image file: every file md5 equals the localfs mount', async (t) => {
  if (!canFuse(t)) return;
  const img = await image();
  const dir = tmpDir();
  await withMount(dir, localdiskConfig(dir, img.disk, 'file'), img.boot, async (mnt) => {
    assert.equal(readFileSync(join(mnt, 'upper.txt'), 'utf8'), 'from the upper layer\n');
    assert.deepEqual(await md5sUnder(mnt), img.reference);
  });
});

test('localdisk from a loop device: its partitions hold the blobs byte for byte, and nydusd on /dev/loopN (v2 TOML config) matches the localfs mount', async (t) => {
  if (!canFuse(t) || !needLosetup(t)) return;
  const img = await image();
  const dir = tmpDir();
  const loop = execFileSync('losetup', ['-r', '-P', '--show', '-f', img.disk], { encoding: 'utf8' }).trim();
  t.after(() => {
    spawnSync('partx', ['-d', loop], { timeout: 10_000 });
    const r = spawnSync('losetup', ['-d', loop], { timeout: 10_000, encoding: 'utf8' });
    assert.equal(r.status, 0, `losetup -d ${loop}: ${r.stderr}`);
  });
  assert.match(loop, /^\/dev\/loop\d+$/);
  const name = basename(loop);
  const n = img.layout.partitions.length;
  if (!(await waitFor(`${loop}p${n}`, 2000))) {
    // losetup -P asks the kernel to read the table; a kernel built without a GPT parser cannot.
    // Then libblkid reads it (partx) and the kernel adds the partitions it reports (BLKPG).
    const gpt = kernelHasGptParser();
    assert.notEqual(gpt, true, `the kernel reads GPTs, yet ${loop}p${n} did not appear`);
    process.stderr.write(
      `\n*** NOTE: this kernel has no GPT parser (CONFIG_EFI_PARTITION unset): partitions added with partx -a ***\n`,
    );
    execFileSync('partx', ['-a', loop], { timeout: 10_000 });
    assert.ok(await waitFor(`${loop}p${n}`, 2000), `${loop}p${n} appears after partx -a`);
  }
  for (const p of img.layout.partitions) {
    const sys = `/sys/block/${name}/${name}p${p.number}`;
    assert.equal(Number(readFileSync(`${sys}/start`, 'utf8')) * 512, p.offset, `partition ${p.number} start`);
    assert.equal(Number(readFileSync(`${sys}/size`, 'utf8')) * 512, p.size, `partition ${p.number} size`);
    const part = readRange(`${loop}p${p.number}`, 0, p.size);
    const blob = readFileSync(join(img.blobs, p.blob_id));
    assert.equal(part.length, p.size);
    assert.ok(part.subarray(0, blob.length).equals(blob), `${loop}p${p.number} holds blob ${p.blob_id}`);
    assert.ok(
      part.subarray(blob.length).every((x) => x === 0),
      'the rest of the partition is zero',
    );
  }

  const toml = join(dir, 'loop.toml');
  writeFileSync(
    toml,
    [
      'version = 2',
      '',
      '[backend]',
      'type = "localdisk"',
      '',
      '[backend.localdisk]',
      `device_path = "${loop}"`,
      '',
    ].join('\n'),
  );
  await withMount(dir, toml, img.boot, async (mnt) => {
    assert.deepEqual(await md5sUnder(mnt), img.reference);
  });
});

test('malformed disks: a bad entries CRC, a missing device, a disk without a GPT refuse the mount with one clear line; disable_gpt mounts but every read is EIO', async (t) => {
  if (!canFuse(t)) return;
  const img = await image();
  const dir = tmpDir();
  const bad = join(dir, 'bad.disk');
  writeFileSync(bad, readFileSync(img.disk));
  const fd = openSync(bad, 'r+');
  writeSync(fd, Buffer.from([0x41]), 0, 1, 1024 + 56); // first entry's name
  closeSync(fd);
  const zeros = join(dir, 'zeros.disk');
  writeFileSync(zeros, Buffer.alloc(1 << 20));
  const cases: [string, RegExp][] = [
    [
      bad,
      /bad\.disk" \(primary\): GPT partition entries checksum mismatch \(stored 0x[0-9a-f]{8}, computed 0x[0-9a-f]{8}\)/,
    ],
    [join(dir, 'absent.disk'), /Localdisk device ".*absent\.disk" does not exist/],
    [zeros, /zeros\.disk" \(primary\): no GPT header/],
  ];
  for (const [device, re] of cases) {
    const mnt = mkdtempSync(join(dir, 'mnt-'));
    try {
      const r = await runBin(
        'nydusd',
        ['--config', localdiskConfig(dir, device, 'bad'), '--bootstrap', img.boot, '--mountpoint', mnt],
        { timeoutMs: 20_000 },
      );
      assert.notEqual(r.code, 0, `nydusd refuses ${device}`);
      assert.match(r.stderr, re);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
      assert.equal(mounted(mnt), false);
    } finally {
      if (mounted(mnt)) spawnSync('umount', ['-l', mnt]);
    }
  }

  const cfg = join(dir, 'nogpt.json');
  writeFileSync(
    cfg,
    JSON.stringify({
      device: { backend: { type: 'localdisk', config: { device_path: zeros, disable_gpt: true } } },
      mode: 'direct',
    }),
  );
  await withMount(dir, cfg, img.boot, async (mnt, d) => {
    await assert.rejects(readFile(join(mnt, 'upper.txt')), { code: 'EIO' });
    assert.match(d.stderr(), /disable_gpt is set/);
  });
});

test('a blob without a partition: files of the blob on the disk read, files of the missing one are EIO and the log names the blob', async (t) => {
  if (!canFuse(t)) return;
  const img = await image();
  const dir = tmpDir();
  const lowerDisk = join(dir, 'lower.disk');
  const r = await runBin('nydus-image', ['localdisk', img.lowerBoot, '-D', img.blobs, '-O', lowerDisk]);
  assert.equal(r.code, 0, r.stderr);
  const upperBlob = img.layout.partitions.map((p) => p.blob_id).find((id) => !r.stderr.includes(id));
  assert.ok(upperBlob !== undefined, 'the upper blob is not on the lower disk');
  await withMount(dir, localdiskConfig(dir, lowerDisk, 'lower'), img.boot, async (mnt, d) => {
    assert.equal(readFileSync(join(mnt, 'a', 'text'), 'utf8'), 'hello nydus\n'.repeat(5000));
    await assert.rejects(readFile(join(mnt, 'upper.txt')), { code: 'EIO' });
    assert.match(d.stderr(), new RegExp(`Blob ${upperBlob} is not on disk ".*lower\\.disk"`));
  });
});
