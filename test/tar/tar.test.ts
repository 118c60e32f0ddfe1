import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BLOCK, decodeHeader, encodeHeader, TarType } from '../../src/tar/header.js';
import { decodePaxRecords, encodePaxRecords } from '../../src/tar/pax.js';
import { TarWriter } from '../../src/tar/writer.js';
import { FormatError } from '../../src/errors/errors.js';

const hdr = (name: string) => ({
  name: Buffer.from(name),
  mode: 0o644,
  uid: 1000,
  gid: 1000,
  size: 5,
  mtime: 1700000000,
  type: TarType.FILE,
  linkname: Buffer.alloc(0),
  uname: Buffer.alloc(0),
  gname: Buffer.alloc(0),
  devmajor: 0,
  devminor: 0,
});

test('ustar header golden bytes', () => {
  const { block, overflow } = encodeHeader(hdr('a.txt'));
  assert.equal(block.length, BLOCK);
  assert.deepEqual(overflow, {
    path: false,
    linkpath: false,
    size: false,
    uid: false,
    gid: false,
    mtime: false,
  });
  assert.equal(block.toString('latin1', 0, 6), 'a.txt\0');
  assert.equal(block.toString('latin1', 100, 108), '0000644\0');
  assert.equal(block.toString('latin1', 108, 116), '0001750\0');
  assert.equal(block.toString('latin1', 124, 136), '00000000005\0');
  assert.equal(block.toString('latin1', 136, 148), '14524770400\0');
  assert.equal(block.toString('latin1', 257, 265), 'ustar\u000000');
  assert.equal(block[156], 0x30);
  // checksum: 6 octal digits, NUL, space
  assert.match(block.toString('latin1', 148, 156), /^[0-7]{6}\0 $/);
  const d = decodeHeader(block);
  assert.equal(d.name.toString(), 'a.txt');
  assert.equal(d.uid, 1000);
  assert.equal(d.mtime, 1700000000);
});

test('long paths split into prefix and name, or overflow to PAX', () => {
  const mid = `${'d'.repeat(120)}/${'f'.repeat(90)}`;
  const r = encodeHeader(hdr(mid));
  assert.equal(r.overflow.path, false);
  assert.equal(decodeHeader(r.block).name.toString(), mid);
  const long = `${'d'.repeat(200)}/${'f'.repeat(200)}`;
  assert.equal(encodeHeader(hdr(long)).overflow.path, true);
});

test('header checksum and octal errors are FormatErrors', () => {
  const { block } = encodeHeader(hdr('x'));
  block[0] = 0x79;
  assert.throws(() => decodeHeader(block), FormatError);
  assert.throws(() => decodeHeader(Buffer.alloc(10)), FormatError);
});

test('PAX records: length counts itself, binary values survive', () => {
  const value = Buffer.from([0x01, 0x00, 0x00, 0x02, 0xff, 0x0a, 0x3d]);
  const enc = encodePaxRecords([
    { key: 'path', value: Buffer.from('abc') },
    { key: 'SCHILY.xattr.security.capability', value },
  ]);
  assert.equal(enc.subarray(0, 12).toString(), '12 path=abc\n');
  const dec = decodePaxRecords(enc);
  assert.equal(dec.length, 2);
  assert.equal(dec[1]!.key, 'SCHILY.xattr.security.capability');
  assert.deepEqual(dec[1]!.value, value);
  // lengths around the one-to-two digit boundary: 8 + 1 = 9, then 9 + 2 = 11 (10 cannot occur)
  assert.equal(encodePaxRecords([{ key: 'k', value: Buffer.from('1234') }]).toString(), '9 k=1234\n');
  assert.equal(encodePaxRecords([{ key: 'k', value: Buffer.from('12345') }]).toString(), '11 k=12345\n');
  assert.throws(() => decodePaxRecords(Buffer.from('99 path=x\n')), FormatError);
  assert.throws(() => decodePaxRecords(Buffer.from('xx path=x\n')), FormatError);
});

async function archive(fn: (w: TarWriter) => Promise<void>): Promise<Buffer> {
  const out = new PassThrough();
  const parts: Buffer[] = [];
  out.on('data', (c: Buffer) => parts.push(c));
  const w = new TarWriter(out);
  await fn(w);
  out.end();
  return Buffer.concat(parts);
}

const base = { uid: 0, gid: 0, size: 0, mtime: 1600000000, mtimeNsec: 0 };

test('GNU tar reads what TarWriter writes', async () => {
  const weird = Buffer.from([0x66, 0xff, 0xfe, 0x2e, 0x62, 0x69, 0x6e]); // not UTF-8
  const longName = Buffer.from(`deep/${'n'.repeat(250)}`);
  const tarBytes = await archive(async (w) => {
    await w.add({ ...base, path: Buffer.from('deep'), type: TarType.DIR, mode: 0o40755 });
    await w.add(
      {
        ...base,
        path: Buffer.from('deep/file'),
        type: TarType.FILE,
        mode: 0o100600,
        size: 11,
        mtimeNsec: 123456789,
        uid: 70000,
        gid: 5,
      },
      [Buffer.from('hello '), Buffer.from('world')],
    );
    await w.add({
      ...base,
      path: Buffer.from('deep/link'),
      type: TarType.HARDLINK,
      mode: 0o100600,
      linkname: Buffer.from('deep/file'),
    });
    await w.add({
      ...base,
      path: Buffer.from('deep/sym'),
      type: TarType.SYMLINK,
      mode: 0o120777,
      linkname: Buffer.from('../x'.repeat(40)),
    });
    await w.add({
      ...base,
      path: Buffer.from('deep/null'),
      type: TarType.CHAR,
      mode: 0o20666,
      devmajor: 1,
      devminor: 3,
    });
    await w.add({ ...base, path: Buffer.from('deep/fifo'), type: TarType.FIFO, mode: 0o10644 });
    await w.add({ ...base, path: weird, type: TarType.FILE, mode: 0o100644, size: 0 });
    await w.add(
      {
        ...base,
        path: longName,
        type: TarType.FILE,
        mode: 0o104755,
        size: 1,
        xattrs: [
          { name: Buffer.from('security.capability'), value: Buffer.from([1, 0, 0, 2, 0, 0x20, 0, 0]) },
        ],
      },
      [Buffer.from('z')],
    );
    await w.finish();
  });
  assert.equal(tarBytes.length % BLOCK, 0);
  const dir = mkdtempSync(join(tmpdir(), 'nydus-tar-'));
  try {
    const f = join(dir, 'a.tar');
    writeFileSync(f, tarBytes);
    const list = execFileSync('tar', ['--numeric-owner', '--quoting-style=literal', '-tvf', f], {
      encoding: 'latin1',
    });
    assert.match(list, /-rw------- 70000\/5\s+11 .* deep\/file/);
    assert.match(list, /hrw------- .* deep\/link link to deep\/file/);
    assert.match(list, /crw-rw-rw- .* 1,\s*3 .* deep\/null/);
    assert.match(list, /prw-r--r-- .* deep\/fifo/);
    assert.ok(list.includes(`deep/sym -> ${'../x'.repeat(40)}`), 'long symlink target via PAX linkpath');
    assert.ok(list.includes(longName.toString()), 'long name via PAX path');
    assert.ok(list.includes(weird.toString('latin1')), 'non-UTF-8 name kept as raw bytes');
    const out = join(dir, 'x');
    execFileSync('mkdir', [out]);
    execFileSync('tar', ['-xf', f, '-C', out, 'deep/file']);
    assert.equal(execFileSync('cat', [join(out, 'deep/file')], { encoding: 'utf8' }), 'hello world');
    const full = execFileSync('tar', ['--full-time', '-tvf', f, 'deep/file'], { encoding: 'utf8' });
    assert.match(full, /\.123456789/, 'nanosecond mtime via PAX');
    const xl = execFileSync('tar', ['--xattrs', '--xattrs-include=*', '-tvvf', f, longName.toString()], {
      encoding: 'latin1',
    });
    assert.match(xl, /security\.capability/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('TarWriter refuses data of the wrong length', async () => {
  await assert.rejects(
    archive(async (w) => {
      await w.add({ ...base, path: Buffer.from('f'), type: TarType.FILE, mode: 0o644, size: 4 }, [
        Buffer.from('ab'),
      ]);
    }),
    /produced 2 bytes, expected 4/,
  );
});
