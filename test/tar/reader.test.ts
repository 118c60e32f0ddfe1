import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  createReadStream,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
  linkSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { NydusError } from '../../src/errors/errors.js';
import { TarType } from '../../src/tar/header.js';
import { TarReader, type TarDirectInput, type TarFile, type TarReadEntry } from '../../src/tar/reader.js';
import { FIXTURE, upstreamFixture } from '../helpers/fixtures.js';

async function readAll(src: AsyncIterable<Buffer>): Promise<{ e: TarReadEntry; data: Buffer }[]> {
  const r = new TarReader(src);
  const out: { e: TarReadEntry; data: Buffer }[] = [];
  for (let e = await r.next(); e !== undefined; e = await r.next()) {
    const parts: Buffer[] = [];
    if (e.type === TarType.FILE) for await (const p of r.data(1000)) parts.push(Buffer.from(p));
    out.push({ e, data: Buffer.concat(parts) });
  }
  return out;
}

function* pieces(b: Buffer, size: number): Generator<Buffer> {
  for (let i = 0; i < b.length; i += size) yield b.subarray(i, i + size);
}

function asAsync(it: Iterable<Buffer>): AsyncIterable<Buffer> {
  return Readable.from(it);
}

test('reads the upstream all-entry-type tar', async (t) => {
  const p = upstreamFixture(t, FIXTURE.allEntryTar);
  if (p === undefined) return;
  const all = await readAll(createReadStream(p));
  const names = all.map(
    ({ e }) =>
      `${String.fromCharCode(e.type)} ${e.path.toString()}${e.linkname.length ? ` -> ${e.linkname.toString()}` : ''}`,
  );
  assert.ok(names.includes('5 tar/dir1/dir3/'));
  assert.ok(names.includes('1 tar/dir2/hardlink3.txt -> tar/dir1/dir3/hardlink1.txt'));
  assert.ok(names.includes('2 tar/dir2/symlink1.txt -> ../dir1/dir3/file1.txt'));
  const f = all.find(({ e }) => e.path.toString() === 'tar/dir1/dir3/hardlink1.txt');
  assert.equal(f?.data.length, 15);
});

test('empty.tar (0 bytes) has no entries', async (t) => {
  const p = upstreamFixture(t, FIXTURE.emptyTar);
  if (p === undefined) return;
  assert.deepEqual(await readAll(createReadStream(p)), []);
});

test('reads what GNU tar writes (gnu and posix formats), in any chunking', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'nydus-tarr-'));
  try {
    const src = join(dir, 'src');
    mkdirSync(join(src, 'd'), { recursive: true });
    const long = 'x'.repeat(180);
    writeFileSync(join(src, 'd', long), Buffer.alloc(70000, 3));
    writeFileSync(join(src, 'small'), 'hello');
    linkSync(join(src, 'small'), join(src, 'd', 'hl'));
    symlinkSync(`../${'t'.repeat(150)}`, join(src, 'sym'));
    for (const format of ['gnu', 'posix']) {
      const tarFile = join(dir, `${format}.tar`);
      execFileSync('tar', [`--format=${format}`, '-C', src, '-cf', tarFile, '.']);
      const bytes = readFileSync(tarFile);
      for (const size of [1, 511, 512, 4096, 1 << 20]) {
        const all = await readAll(asAsync(pieces(bytes, size)));
        const byName = new Map(all.map((x) => [x.e.path.toString(), x]));
        assert.equal(byName.get(`./d/${long}`)?.data.length, 70000, `${format}/${size}`);
        assert.equal(byName.get('./small')?.data.toString(), 'hello');
        assert.equal(byName.get('./d/hl')?.e.type, TarType.HARDLINK);
        assert.equal(byName.get('./sym')?.e.linkname.toString(), `../${'t'.repeat(150)}`);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('truncated and corrupt tars fail with a FormatError', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'nydus-tarr-'));
  try {
    writeFileSync(join(dir, 'f'), Buffer.alloc(3000, 1));
    const tarFile = join(dir, 'a.tar');
    execFileSync('tar', ['-C', dir, '-cf', tarFile, 'f']);
    const bytes = readFileSync(tarFile);
    for (const len of [100, 512, 700, 2000, 3500]) {
      await assert.rejects(
        readAll(asAsync([bytes.subarray(0, len)])),
        (e: unknown) => e instanceof NydusError && /Truncated tar/.test(e.message),
      );
    }
    const bad = Buffer.from(bytes);
    bad[10] = 0x41;
    await assert.rejects(readAll(asAsync([bad])), /checksum mismatch/);
    // A tar cut exactly at an entry boundary without end blocks is accepted (GNU tar does too).
    assert.equal((await readAll(asAsync([bytes.subarray(0, 512 + 3072)]))).length, 1);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** What GNU tar (in `format`) writes for these files, in this order, made under `dir`. */
function gnuTarOf(dir: string, format: string, files: [string, string | Buffer][]): Buffer {
  const src = join(dir, 'src');
  mkdirSync(src);
  for (const [name, data] of files) writeFileSync(join(src, name), data);
  const tarPath = join(dir, 'a.tar');
  execFileSync('tar', [`--format=${format}`, '-C', src, '-cf', tarPath, ...files.map(([name]) => name)]);
  return readFileSync(tarPath);
}

/** A TarFile over bytes in memory that records the ranges read. */
function tarFileOf(bytes: Buffer, readSize: number): TarFile & { reads: [number, number][] } {
  const reads: [number, number][] = [];
  return {
    size: bytes.length,
    readSize,
    reads,
    read(pos: number, n: number): Promise<Buffer> {
      reads.push([pos, n]);
      return Promise.resolve(Buffer.from(bytes.subarray(pos, pos + n)));
    },
  };
}

test('a tar file read at positions: same entries as the stream, and data handed off is never read', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'nydus-tarfile-'));
  try {
    const big = Buffer.alloc(300 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7919) >>> 3;
    const bytes = gnuTarOf(dir, 'gnu', [
      ['big', big],
      ['small', 'small file'],
      ['z-after', 'after the big one'],
    ]);
    const fromStream = await readAll(asAsync(pieces(bytes, 4096)));
    // Read in pieces of 8 KiB: "big" is not buffered, so it can be handed off.
    const f = tarFileOf(bytes, 8192);
    const r = new TarReader(f);
    const seen: { name: string; data: Buffer }[] = [];
    let bigAt: number | undefined;
    for (let e = await r.next(); e !== undefined; e = await r.next()) {
      const name = e.path.toString();
      const at = r.dataOffset(64 * 1024);
      if (name === 'big') {
        assert.notEqual(at, undefined);
        bigAt = at;
        seen.push({ name, data: bytes.subarray(at, at! + e.size) });
        continue;
      }
      assert.equal(at, undefined, `${name} is small: read with the archive`);
      const parts: Buffer[] = [];
      for await (const p of r.data()) parts.push(Buffer.from(p));
      seen.push({ name, data: Buffer.concat(parts) });
    }
    assert.deepEqual(
      seen.map((s) => [s.name, s.data]),
      fromStream.map(({ e, data }) => [e.path.toString(), data]),
    );
    assert.deepEqual(seen[0]!.data, big);
    // No read touched the part of big's data past the first read.
    const from = Math.max(bigAt!, 8192);
    const to = bigAt! + big.length;
    for (const [pos, n] of f.reads)
      assert.ok(pos + n <= from || pos >= to, `read [${pos}, ${pos + n}) is inside big's data`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a truncated tar file: no data handed off past its end, and the truncation is reported', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'nydus-tarfile-'));
  try {
    writeFileSync(join(dir, 'big'), Buffer.alloc(200 * 1024, 1));
    const tarPath = join(dir, 'a.tar');
    execFileSync('tar', ['--format=gnu', '-C', dir, '-cf', tarPath, 'big']);
    const bytes = readFileSync(tarPath).subarray(0, 100 * 1024);
    const r = new TarReader(tarFileOf(bytes, 8192));
    const e = await r.next();
    assert.equal(e?.path.toString(), 'big');
    assert.equal(r.dataOffset(), undefined);
    await assert.rejects(async () => {
      for await (const _ of r.data()) void _;
    }, /Truncated tar/);
    const r2 = new TarReader(tarFileOf(bytes, 8192));
    await r2.next();
    await assert.rejects(() => r2.next(), /Truncated tar/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/**
 * A direct input over bytes in memory: its pieces (at most `size` bytes) and its direct reads
 * share one position, as a pipe's reads do; `direct` counts the bytes read directly.
 */
function directOf(bytes: Buffer, size: number): TarDirectInput & { direct: number } {
  let pos = 0;
  const src = {
    direct: 0,
    async *[Symbol.asyncIterator](): AsyncGenerator<Buffer> {
      while (pos < bytes.length) {
        const n = Math.min(size, bytes.length - pos);
        pos += n;
        yield await Promise.resolve(Buffer.from(bytes.subarray(pos - n, pos)));
      }
    },
    readInto(buf: Buffer, at: number, n: number): Promise<number> {
      const k = Math.min(n, size, bytes.length - pos);
      bytes.copy(buf, at, pos, pos + k);
      pos += k;
      src.direct += k;
      return Promise.resolve(k);
    },
  };
  return src;
}

test('a direct input: entry data read straight into the caller buffer, the same bytes as the stream', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'nydus-tardirect-'));
  try {
    const big = Buffer.alloc(300000);
    for (let i = 0; i < big.length; i += 4) big.writeUInt32LE((i * 2654435761) >>> 0, i);
    const bytes = gnuTarOf(dir, 'posix', [
      ['big', big],
      ['empty', ''],
      ['small', 'hello'],
    ]);
    const want = await readAll(asAsync(pieces(bytes, 4096)));
    for (const size of [512, 4096, 65536, 1 << 20]) {
      const input = directOf(bytes, size);
      const r = new TarReader(input);
      assert.equal(r.direct, true);
      const got: { name: string; data: Buffer }[] = [];
      for (let e = await r.next(); e !== undefined; e = await r.next()) {
        const data = Buffer.alloc(e.size);
        // Odd-sized reads: a read never goes past the entry's data.
        for (let at = 0; at < e.size;) at += await r.dataInto(data, at, 7777);
        assert.equal(await r.dataInto(data, 0, 10), 0);
        assert.equal(r.pending, 0);
        got.push({ name: e.path.toString(), data });
      }
      assert.deepEqual(
        got,
        want.map((x) => ({ name: x.e.path.toString(), data: x.data })),
        `pieces of ${size}`,
      );
      if (size < big.length) assert.ok(input.direct > 0, `direct reads with pieces of ${size}`);
    }
    // Cut inside the big file's data: the truncation is reported, not a short file.
    const cut = new TarReader(directOf(bytes.subarray(0, 512 + 100000), 4096));
    const e = await cut.next();
    const data = Buffer.alloc(e!.size);
    await assert.rejects(
      (async () => {
        for (let at = 0; at < data.length;) at += await cut.dataInto(data, at, 65536);
      })(),
      (err: unknown) => err instanceof NydusError && /Truncated tar/.test(err.message),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
