import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ossSchema, s3Schema } from '../../../src/daemon/config/schema.js';
import { ossObjectStore } from '../../../src/storage/remote/oss.js';
import { s3ObjectStore, type ObjectStore } from '../../../src/storage/remote/s3.js';
import { makeEveryEntryTree } from '../../helpers/fs-tree.js';
import {
  canFuse,
  cleanup,
  createImage,
  md5sUnder,
  startDaemon,
  stopDaemon,
  tmp,
  v1Config,
  type Daemon,
} from '../../helpers/nydusd.js';
import { prng } from '../../helpers/prng.js';
import { ossTable, s3Table, startS3, type TestS3 } from '../../helpers/s3.js';

/**
 * nydusd with the s3 and oss backends over a real S3 server (s3rver behind the verifying front):
 * a small image whose blob lives only in the bucket is mounted through FUSE, and every file's md5
 * equals the localfs mount's. A wrong secret mounts (the blob is only warned about) but every
 * data read fails with EIO and the daemon says why.
 */

interface Image {
  dir: string;
  boot: string;
  blobs: string;
  blobIds: string[];
}

async function buildImage(dir: string): Promise<Image> {
  const src = join(dir, 'src');
  const blobs = join(dir, 'blobs');
  mkdirSync(src);
  mkdirSync(blobs);
  await makeEveryEntryTree(src, { bigDir: 30 });
  const rnd = prng(7);
  for (const [name, size] of [
    ['big1', 2 * 1024 * 1024 + 17],
    ['big2', 1024 * 1024 + 3],
  ] as const) {
    const b = Buffer.alloc(size);
    for (let i = 0; i < b.length; i++) b[i] = Math.floor(rnd() * 256);
    writeFileSync(join(src, name), b);
  }
  writeFileSync(join(src, 'small.txt'), 'hello from the bucket\n');
  const boot = join(dir, 'image.boot');
  await createImage(src, boot, blobs, ['--chunk-size', '0x100000']);
  return { dir, boot, blobs, blobIds: readdirSync(blobs) };
}

async function upload(store: ObjectStore, img: Image): Promise<void> {
  try {
    for (const id of img.blobIds) await store.upload(id, join(img.blobs, id));
  } finally {
    await store.close();
  }
}

function v2Config(dir: string, name: string, type: 's3' | 'oss', table: Record<string, unknown>): string {
  const p = join(dir, `${name}.json`);
  writeFileSync(p, JSON.stringify({ version: 2, backend: { type, [type]: table } }));
  return p;
}

async function mountAndHash(img: Image, config: string): Promise<[string, string][]> {
  const { dir, mnt } = tmp();
  let d: Daemon | undefined;
  try {
    d = await startDaemon(mnt, ['--config', config, '--bootstrap', img.boot]);
    const sums = await md5sUnder(mnt);
    await stopDaemon(d);
    d = undefined;
    return sums;
  } finally {
    cleanup(d, mnt);
    rmSync(dir, { recursive: true, force: true });
  }
}

async function readErrno(path: string): Promise<string | undefined> {
  try {
    await readFile(path);
    return undefined;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code;
  }
}

let shared: { s3: TestS3; img: Image; reference: [string, string][] } | undefined;

async function setup(): Promise<NonNullable<typeof shared>> {
  if (shared !== undefined) return shared;
  const s3 = await startS3();
  const { dir } = tmp();
  const img = await buildImage(dir);
  await upload(s3ObjectStore(s3Schema.parse(s3Table(s3))), img);
  await upload(ossObjectStore(ossSchema.parse(ossTable(s3))), img);
  const reference = await mountAndHash(img, v1Config(dir, img.blobs));
  assert.ok(reference.length > 30, 'the reference mount lists the files');
  shared = { s3, img, reference };
  return shared;
}

test.after(async () => {
  if (shared !== undefined) {
    await shared.s3.stop();
    rmSync(shared.img.dir, { recursive: true, force: true });
  }
});

for (const type of ['s3', 'oss'] as const) {
  const table = type === 's3' ? s3Table : ossTable;

  test(`nydusd ${type} backend: every file of the mount equals the localfs mount's`, async (t) => {
    if (!canFuse(t)) return;
    const { s3, img, reference } = await setup();
    const before = s3.requests.length;
    const sums = await mountAndHash(img, v2Config(img.dir, `${type}-ok`, type, table(s3)));
    assert.deepEqual(sums, reference);
    const mine = s3.requests.slice(before);
    assert.ok(
      mine.some((r) => r.method === 'GET' && r.status === 206),
      'ranged GETs reached the bucket',
    );
    assert.ok(
      mine.every((r) => r.auth === type && r.status !== 403),
      JSON.stringify(mine.slice(0, 5)),
    );
  });

  test(`nydusd ${type} backend: a wrong secret is refused by the server; reads fail with EIO and a clear error`, async (t) => {
    if (!canFuse(t)) return;
    const { s3, img } = await setup();
    const { dir, mnt } = tmp();
    const rejectedBefore = s3.rejected().length;
    let d: Daemon | undefined;
    try {
      d = await startDaemon(mnt, [
        '--config',
        v2Config(img.dir, `${type}-bad`, type, table(s3, { access_key_secret: 'not-the-secret' })),
        '--bootstrap',
        img.boot,
      ]);
      assert.equal(await readErrno(join(mnt, 'big1')), 'EIO');
      assert.equal(await readErrno(join(mnt, 'small.txt')), 'EIO');
      assert.ok(s3.rejected().length > rejectedBefore, 'the front refused the signatures');
      assert.match(d.stderr(), /access denied|ERR_AUTH|HTTP 403/i, d.stderr());
      process.stderr.write(
        `${type} wrong secret, nydusd says: ${
          d
            .stderr()
            .split('\n')
            .find((l) => /403/.test(l)) ?? ''
        }\n`,
      );
      await stopDaemon(d);
      d = undefined;
    } finally {
      cleanup(d, mnt);
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
