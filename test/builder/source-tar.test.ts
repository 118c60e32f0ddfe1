import { IS_ROOT, needRoot } from '../helpers/env.js';
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  createReadStream,
  linkSync,
  lchownSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { setAttributeSync } from '@napi-rs/xattr';
import { FormatError, NydusError } from '../../src/errors/errors.js';
import {
  isDir,
  isReg,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
} from '../../src/format/flags.js';
import { makedev, sourcePathOf, treeFromDirectory } from '../../src/builder/source-dir.js';
import { normalizeTarPath, treeFromTar } from '../../src/builder/source-tar.js';
import type { BuildInode, BuildTree } from '../../src/builder/tree.js';
import { TarType } from '../../src/tar/header.js';
import { TarReader } from '../../src/tar/reader.js';
import { TarWriter, type TarEntry } from '../../src/tar/writer.js';
import { FIXTURE, upstreamFixture } from '../helpers/fixtures.js';

function tmp(t: TestContext): string {
  const d = mkdtempSync(join(tmpdir(), 'nydus-srctar-'));
  t.after(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

interface Loaded {
  tree: BuildTree;
  data: Map<BuildInode, Buffer>;
  /** How many pieces each file's data came in. */
  pieces: Map<BuildInode, number>;
}

async function load(
  src: AsyncIterable<Buffer> | Buffer,
  spec: 'oci' | 'overlayfs' | 'none' = 'oci',
): Promise<Loaded> {
  const data = new Map<BuildInode, Buffer>();
  const pieces = new Map<BuildInode, number>();
  const reader = new TarReader(Buffer.isBuffer(src) ? Readable.from([src]) : src);
  const tree = await treeFromTar(reader, {
    whiteoutSpec: spec,
    onFileData: async (inode, it) => {
      assert.ok(!data.has(inode), 'each inode is handed over once');
      const parts: Buffer[] = [];
      for await (const p of it) parts.push(Buffer.from(p));
      data.set(inode, Buffer.concat(parts));
      pieces.set(inode, parts.length);
    },
  });
  return { tree, data, pieces };
}

type Item = TarEntry | [TarEntry, Buffer?];

async function tarBytes(entries: readonly Item[], finish = true): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const out = new Writable({
    write(c: Buffer, _enc, cb): void {
      chunks.push(Buffer.from(c));
      cb();
    },
  });
  const w = new TarWriter(out);
  for (const item of entries) {
    const [e, d] = Array.isArray(item) ? item : [item];
    await w.add(e, d === undefined ? undefined : [d]);
  }
  if (finish) await w.finish();
  return Buffer.concat(chunks);
}

function ent(path: string | Buffer, type: number, extra: Partial<TarEntry> = {}): TarEntry {
  return {
    path: Buffer.isBuffer(path) ? path : Buffer.from(path),
    type,
    mode: type === TarType.DIR ? 0o755 : 0o644,
    uid: 0,
    gid: 0,
    size: 0,
    mtime: 1_600_000_000,
    mtimeNsec: 0,
    ...extra,
  };
}

function file(path: string, content: string, extra: Partial<TarEntry> = {}): [TarEntry, Buffer] {
  const b = Buffer.from(content);
  return [ent(path, TarType.FILE, { size: b.length, ...extra }), b];
}

function flatten(tree: BuildTree): Map<string, BuildInode> {
  const out = new Map<string, BuildInode>([['', tree.root]]);
  const stack: [string, BuildInode][] = [['', tree.root]];
  while (stack.length > 0) {
    const [p, d] = stack.pop()!;
    const names = (d.children ?? []).map((e) => e.name);
    assert.deepEqual(
      names,
      [...names].sort((x, y) => Buffer.compare(x, y)),
      `children of "${p}" are sorted by bytes`,
    );
    for (const e of d.children ?? []) {
      const cp = p === '' ? e.name.toString('latin1') : `${p}/${e.name.toString('latin1')}`;
      out.set(cp, e.inode);
      if (isDir(e.inode.mode)) stack.push([cp, e.inode]);
    }
  }
  return out;
}

function node(m: Map<string, BuildInode>, p: string): BuildInode {
  const n = m.get(p);
  assert.ok(n !== undefined, `"${p}" is in the tree`);
  return n;
}

/**
 * Everything a tree says, by path: attributes, xattrs, targets, contents, and which paths share
 * an inode (named by the first path of the group in path order).
 */
function describe(tree: BuildTree, content: (n: BuildInode) => Buffer): Map<string, unknown> {
  const m = flatten(tree);
  const firstPath = new Map<BuildInode, string>();
  const out = new Map<string, unknown>();
  for (const p of [...m.keys()].sort()) {
    const n = m.get(p)!;
    if (!firstPath.has(n)) firstPath.set(n, p);
    out.set(p, {
      mode: n.mode.toString(8),
      uid: n.uid,
      gid: n.gid,
      mtime: p === '' ? 'root' : `${n.mtime}.${n.mtimeNsec}`,
      rdev: n.rdev,
      size: n.size,
      xattrs: n.xattrs.map((x) => `${x.name.toString('latin1')}=${x.value.toString('hex')}`),
      target: n.target?.toString('latin1'),
      content: isReg(n.mode) ? content(n).toString('latin1') : undefined,
      inode: isReg(n.mode) ? firstPath.get(n) : p,
    });
  }
  return out;
}

const NON_UTF8 = Buffer.from([0xff, 0xfe, 0x2d, 0x62, 0x69, 0x6e]);

/** A source tree with what a tar can carry (no sockets; no non-regular hardlinks). */
function makeTree(t: TestContext): string {
  const dir = tmp(t);
  const p = (...s: string[]): string => join(dir, ...s);
  writeFileSync(p('file'), 'hello\n');
  writeFileSync(p('empty'), '');
  let deep = p('deep');
  for (let i = 0; i < 200; i++) deep = join(deep, 'd');
  mkdirSync(deep, { recursive: true });
  writeFileSync(join(deep, 'bottom'), 'deep data');
  symlinkSync('nowhere/at/all', p('dangling'));
  symlinkSync('deep', p('todir'));
  mkdirSync(p('h1'));
  mkdirSync(p('h2'));
  writeFileSync(p('h1', 'a'), 'linked');
  linkSync(p('h1', 'a'), p('h2', 'b'));
  linkSync(p('h1', 'a'), p('h1', 'c'));
  execFileSync('mkfifo', [p('fifo')]);
  writeFileSync(p('xfile'), 'x');
  setAttributeSync(p('xfile'), 'user.x', Buffer.from([0, 1, 0xff, 0x80]));
  writeFileSync(p('tmp-bin'), 'binary name');
  renameSync(p('tmp-bin'), Buffer.concat([Buffer.from(dir + '/'), NON_UTF8]));
  writeFileSync(p('n'.repeat(255)), 'long');
  writeFileSync(p('.wh.kept-in-tar'), '');
  writeFileSync(p('big'), Buffer.alloc(3 << 20, 7));
  writeFileSync(p('ns'), 'ns');
  execFileSync('touch', ['-h', '-d', '2020-01-02 03:04:05.123456789', p('ns'), p('dangling')], {
    env: { ...process.env, TZ: 'UTC' },
  });
  if (IS_ROOT) {
    execFileSync('mknod', [p('null'), 'c', '1', '3']);
    execFileSync('mknod', [p('loop'), 'b', '7', '0']);
    execFileSync('mknod', [p('bigdev'), 'c', '300', '70000']);
    setAttributeSync(p('xfile'), 'trusted.t', 'trusted value');
    setAttributeSync(
      p('xfile'),
      'security.capability',
      Buffer.from('0100000200200000000000000000000000000000', 'hex'),
    );
    lchownSync(p('file'), 123456, 654321);
    lchownSync(p('dangling'), 4242, 4343);
  }
  return dir;
}

test('a GNU tar of a tree gives the same tree as the directory itself', async (t) => {
  const dir = makeTree(t);
  const out = join(tmp(t), 'src.tar');
  execFileSync('tar', [
    '--format=posix',
    '--xattrs',
    '--xattrs-include=*',
    '--numeric-owner',
    '-C',
    dir,
    '-cf',
    out,
    '.',
  ]);
  const fromDir = await treeFromDirectory(dir, { whiteoutSpec: 'none' });
  const fromTar = await load(createReadStream(out));
  const a = describe(fromDir, (n) => readFileSync(sourcePathOf(n)!));
  const b = describe(fromTar.tree, (n) => fromTar.data.get(n)!);
  assert.deepEqual([...b.keys()], [...a.keys()]);
  for (const [p, v] of a) assert.deepEqual(b.get(p), v, `"${p}"`);
  // The "./" entry set the root's attributes, mtime included.
  assert.ok(fromTar.tree.root.mtime > 0);
  assert.equal(fromTar.tree.root.mode, fromDir.root.mode);

  const m = flatten(fromTar.tree);
  assert.equal(node(m, 'h1/a'), node(m, 'h2/b'));
  assert.equal(node(m, 'h1/a'), node(m, 'h1/c'));
  assert.equal(fromTar.data.size, new Set([...m.values()].filter((n) => isReg(n.mode))).size);
  assert.equal(node(m, 'ns').mtimeNsec, 123456789);
  // Data is streamed in pieces, never as one buffer.
  assert.ok(fromTar.pieces.get(node(m, 'big'))! > 1);
  // Whiteout names are ordinary entries in a tar build.
  assert.ok(m.has('.wh.kept-in-tar'));

  if (!needRoot(t, 'devices, trusted.* xattrs and chown in tars')) return;
  assert.equal(node(m, 'null').rdev, makedev(1, 3));
  assert.equal(node(m, 'loop').mode & S_IFMT, S_IFBLK);
  assert.equal(node(m, 'bigdev').rdev, 286338160);
  assert.equal(node(m, 'file').uid, 123456);
  assert.deepEqual(
    node(m, 'xfile').xattrs.map((x) => x.name.toString()),
    ['security.capability', 'trusted.t', 'user.x'],
  );
});

test('upstream all-entry-type.tar: four names of one inode, a dangling symlink, a synthesized root', async (t) => {
  const p = upstreamFixture(t, FIXTURE.allEntryTar);
  if (p === undefined) return;
  const { tree, data } = await load(createReadStream(p));
  const m = flatten(tree);
  assert.equal(tree.root.mode, S_IFDIR | 0o755);
  assert.equal(tree.root.mtime, 0);
  const names = [
    'tar/dir1/dir3/hardlink1.txt',
    'tar/dir1/dir3/xfile.txt',
    'tar/dir1/hardlink2.txt',
    'tar/dir2/hardlink3.txt',
  ];
  const inode = node(m, names[0]!);
  for (const n of names) assert.equal(node(m, n), inode, n);
  assert.equal(inode.mode, S_IFREG | 0o644);
  assert.equal(inode.size, 15);
  assert.equal(data.size, 1);
  assert.equal(data.get(inode)!.length, 15);
  const link = node(m, 'tar/dir2/symlink1.txt');
  assert.equal(link.mode & S_IFMT, S_IFLNK);
  assert.deepEqual(link.target, Buffer.from('../dir1/dir3/file1.txt'));
  assert.equal(link.size, link.target?.length);
  assert.equal(node(m, 'tar/dir1/dir3').mode, S_IFDIR | 0o755);
  assert.deepEqual(
    [...m.keys()].sort(),
    ['', 'tar', 'tar/dir1', 'tar/dir1/dir3', ...names, 'tar/dir2', 'tar/dir2/symlink1.txt'].sort(),
  );
});

test('upstream empty.tar gives an empty synthesized root', async (t) => {
  const p = upstreamFixture(t, FIXTURE.emptyTar);
  if (p === undefined) return;
  const { tree } = await load(createReadStream(p));
  assert.deepEqual(tree.root.children, []);
  assert.equal(tree.root.mode, S_IFDIR | 0o755);
  assert.equal(tree.root.mtime, 0);
});

test('paths are normalized; parents are synthesized as 0755 directories with mtime 0', async () => {
  const { tree } = await load(
    await tarBytes([
      file('/abs/ok', 'a'),
      file('./x/./y//z', 'b'),
      file('///lead', 'c'),
      ent('dir/', TarType.DIR, { mode: 0o700, mtime: 5, uid: 9 }),
    ]),
  );
  const m = flatten(tree);
  assert.deepEqual([...m.keys()].sort(), ['', 'abs', 'abs/ok', 'dir', 'lead', 'x', 'x/y', 'x/y/z']);
  for (const p of ['abs', 'x', 'x/y']) {
    assert.equal(node(m, p).mode, S_IFDIR | 0o755);
    assert.equal(node(m, p).mtime, 0);
    assert.equal(node(m, p).uid, 0);
  }
  assert.equal(node(m, 'dir').mode, S_IFDIR | 0o700);
  assert.equal(node(m, 'dir').uid, 9);
  assert.deepEqual(normalizeTarPath(Buffer.from('./a/b/')), [Buffer.from('a'), Buffer.from('b')]);
  assert.deepEqual(normalizeTarPath(Buffer.from('./')), []);
});

test('a "./" entry sets the root attributes', async () => {
  const { tree } = await load(
    await tarBytes([
      ent('.', TarType.DIR, { mode: 0o750, uid: 3, gid: 4, mtime: 77, mtimeNsec: 5 }),
      file('f', 'x'),
    ]),
  );
  assert.equal(tree.root.mode, S_IFDIR | 0o750);
  assert.equal(tree.root.uid, 3);
  assert.equal(tree.root.gid, 4);
  assert.equal(tree.root.mtime, 77);
  assert.equal(tree.root.mtimeNsec, 5);
  assert.equal(tree.root.children!.length, 1);
  await assert.rejects(load(await tarBytes([file('./', '')])), FormatError);
});

function formatError(re: RegExp): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(e instanceof FormatError, `a FormatError, got ${String(e)}`);
    assert.match(e.message, re);
    return true;
  };
}

test('entries that escape the root are refused (CVE-style path traversal)', async () => {
  for (const bad of ['../evil', 'a/../../x', 'a/..', '..', 'ok/../b']) {
    await assert.rejects(load(await tarBytes([file(bad, 'x')])), formatError(/escapes the root/), bad);
  }
  await assert.rejects(load(await tarBytes([ent('../d', TarType.DIR)])), formatError(/escapes the root/));
  await assert.rejects(
    load(
      await tarBytes([
        ent('s', TarType.SYMLINK, { linkname: Buffer.from('x') }),
        ent('../s2', TarType.SYMLINK, { linkname: Buffer.from('/etc') }),
      ]),
    ),
    formatError(/escapes the root/),
  );
  // A NUL can only come through a PAX path (the ustar field ends at the first NUL).
  const nul = Buffer.concat([Buffer.from('a'.repeat(120)), Buffer.from([0]), Buffer.from('b')]);
  await assert.rejects(
    load(await tarBytes([[ent(nul, TarType.FILE, { size: 1 }), Buffer.from('x')]])),
    formatError(/NUL/),
  );
});

test('symlink targets are kept verbatim, absolute and dangling included', async () => {
  const { tree } = await load(
    await tarBytes([
      ent('abs', TarType.SYMLINK, { linkname: Buffer.from('/etc/passwd'), mode: 0o777 }),
      ent('up', TarType.SYMLINK, { linkname: Buffer.from('../../outside') }),
      ent('bin', TarType.SYMLINK, { linkname: Buffer.from([0xff, 0x2f, 0x2e, 0x2e]) }),
    ]),
  );
  const m = flatten(tree);
  assert.deepEqual(node(m, 'abs').target, Buffer.from('/etc/passwd'));
  assert.equal(node(m, 'abs').mode, S_IFLNK | 0o777);
  assert.deepEqual(node(m, 'up').target, Buffer.from('../../outside'));
  assert.deepEqual(node(m, 'bin').target, Buffer.from([0xff, 0x2f, 0x2e, 0x2e]));
  await assert.rejects(load(await tarBytes([ent('empty', TarType.SYMLINK)])), formatError(/empty target/));
});

test('hardlinks must name an earlier regular file', async () => {
  const hl = (path: string, target: string): TarEntry =>
    ent(path, TarType.HARDLINK, { linkname: Buffer.from(target) });
  const ok = await load(await tarBytes([file('a/f', 'data'), hl('b/g', './a/f'), hl('/c', '/a//f')]));
  const m = flatten(ok.tree);
  assert.equal(node(m, 'b/g'), node(m, 'a/f'));
  assert.equal(node(m, 'c'), node(m, 'a/f'));
  assert.equal(ok.data.size, 1);

  await assert.rejects(
    load(await tarBytes([file('x', 'x'), hl('l', '../x')])),
    formatError(/escapes the root/),
  );
  await assert.rejects(
    load(await tarBytes([hl('l', 'later'), file('later', 'x')])),
    formatError(/not an earlier regular file/),
  );
  await assert.rejects(
    load(await tarBytes([ent('d', TarType.DIR), hl('l', 'd')])),
    formatError(/not an earlier regular file/),
  );
  await assert.rejects(
    load(await tarBytes([ent('s', TarType.SYMLINK, { linkname: Buffer.from('x') }), hl('l', 's')])),
    formatError(/not an earlier regular file/),
  );
  await assert.rejects(
    load(await tarBytes([ent('p', TarType.FIFO), hl('l', 'p')])),
    formatError(/not an earlier regular file/),
  );
  await assert.rejects(
    load(await tarBytes([file('x', 'x'), hl('l', 'x/y')])),
    formatError(/not an earlier regular file/),
  );
});

test('a later entry replaces an earlier one; a directory over a directory updates attributes only', async () => {
  const { tree, data } = await load(
    await tarBytes([
      file('f', 'old'),
      file('f', 'new!'),
      ent('d', TarType.DIR, { mode: 0o700 }),
      file('d/inner', 'i'),
      ent('d', TarType.DIR, { mode: 0o711, mtime: 42 }),
      ent('gone', TarType.DIR),
      file('gone/x', 'x'),
      file('gone', 'now a file'),
      file('todir', 'was a file'),
      ent('todir', TarType.DIR),
      file('keep', 'k'),
      ent('keeplink', TarType.HARDLINK, { linkname: Buffer.from('keep') }),
      file('keep', 'replaced'),
    ]),
  );
  const m = flatten(tree);
  assert.deepEqual([...m.keys()].sort(), ['', 'd', 'd/inner', 'f', 'gone', 'keep', 'keeplink', 'todir']);
  assert.equal(data.get(node(m, 'f'))!.toString(), 'new!');
  assert.equal(node(m, 'f').size, 4);
  assert.equal(node(m, 'd').mode, S_IFDIR | 0o711);
  assert.equal(node(m, 'd').mtime, 42);
  assert.equal(data.get(node(m, 'gone'))!.toString(), 'now a file');
  assert.ok(isDir(node(m, 'todir').mode));
  assert.deepEqual(node(m, 'todir').children, []);
  // The hardlink keeps the inode it was made to; the new "keep" is another file.
  assert.equal(data.get(node(m, 'keeplink'))!.toString(), 'k');
  assert.equal(data.get(node(m, 'keep'))!.toString(), 'replaced');
  // A path through a non-directory is refused.
  await assert.rejects(
    load(await tarBytes([file('f', 'x'), file('f/g', 'y')])),
    formatError(/to be a directory/),
  );
});

test('devices, fifos, xattrs and attributes come from the headers', async () => {
  const cap = Buffer.from('0100000200200000000000000000000000000000', 'hex');
  const { tree } = await load(
    await tarBytes([
      ent('c', TarType.CHAR, { devmajor: 300, devminor: 70000, mode: 0o620, uid: 5, gid: 6 }),
      ent('b', TarType.BLOCK, { devmajor: 8, devminor: 1 }),
      ent('p', TarType.FIFO, { mode: 0o600 }),
      [
        ent('x', TarType.FILE, {
          size: 1,
          mode: 0o6755,
          uid: 3_000_000,
          gid: 4_000_000,
          mtime: 1_577_934_245,
          mtimeNsec: 123_456_789,
          xattrs: [
            { name: Buffer.from('user.z'), value: Buffer.from('z') },
            { name: Buffer.from('security.capability'), value: cap },
            { name: Buffer.from('system.nfs4_acl'), value: Buffer.from('dropped') },
            { name: Buffer.from('user.a'), value: Buffer.from([0, 0xff]) },
            { name: Buffer.from('system.posix_acl_access'), value: Buffer.from([2, 0, 0, 0]) },
          ],
        }),
        Buffer.from('x'),
      ],
    ]),
  );
  const m = flatten(tree);
  assert.equal(node(m, 'c').mode, S_IFCHR | 0o620);
  assert.equal(node(m, 'c').rdev, 286338160);
  assert.equal(node(m, 'c').uid, 5);
  assert.equal(node(m, 'b').mode & S_IFMT, S_IFBLK);
  assert.equal(node(m, 'b').rdev, 0x801);
  assert.equal(node(m, 'p').mode, S_IFIFO | 0o600);
  assert.equal(node(m, 'p').rdev, 0);
  const x = node(m, 'x');
  assert.equal(x.mode, S_IFREG | 0o6755);
  assert.equal(x.uid, 3_000_000);
  assert.equal(x.gid, 4_000_000);
  assert.equal(x.mtime, 1_577_934_245);
  assert.equal(x.mtimeNsec, 123_456_789);
  assert.deepEqual(
    x.xattrs.map((a) => a.name.toString()),
    ['security.capability', 'system.posix_acl_access', 'user.a', 'user.z'],
  );
  assert.deepEqual(x.xattrs[0]!.value, cap);
  assert.deepEqual(x.xattrs[2]!.value, Buffer.from([0, 0xff]));
});

test('whiteout entries are ordinary entries in a tar build, whatever the spec', async () => {
  for (const spec of ['oci', 'overlayfs', 'none'] as const) {
    const { tree } = await load(
      await tarBytes([
        file('.wh.gone', ''),
        ent('d', TarType.DIR, {
          xattrs: [{ name: Buffer.from('trusted.overlay.opaque'), value: Buffer.from('y') }],
        }),
        file('d/.wh..wh..opq', ''),
        ent('d/wh', TarType.CHAR),
      ]),
      spec,
    );
    const m = flatten(tree);
    assert.deepEqual([...m.keys()].sort(), ['', '.wh.gone', 'd', 'd/.wh..wh..opq', 'd/wh'], spec);
    assert.equal(node(m, 'd').xattrs.length, 1);
  }
  await assert.rejects(
    load(await tarBytes([]), 'bogus' as 'oci'),
    (e: unknown) => e instanceof NydusError && e.code === 'ERR_INVALID_ARG',
  );
});

test('truncated and corrupt tars fail with FormatError', async () => {
  const good = await tarBytes([file('a', 'x'.repeat(3000)), file('b', 'y')]);
  // Cut inside the data of "a", inside the header of "b", and inside the first header.
  for (const cut of [512 + 1000, 512 * 8 + 100, 100]) {
    await assert.rejects(load(good.subarray(0, cut)), FormatError, `cut at ${cut}`);
  }
  const bad = Buffer.from(good);
  bad[0] = bad[0]! ^ 0xff; // breaks the header checksum
  await assert.rejects(load(bad), FormatError);
  // Missing end-of-archive blocks are tolerated, as tar does.
  const unfinished = await tarBytes([file('a', 'x')], false);
  assert.equal(flatten((await load(unfinished)).tree).size, 2);
});

test('unsupported entry types are refused', async () => {
  await assert.rejects(
    load(await tarBytes([ent('v', 0x56 /* 'V' volume label */)])),
    (e: unknown) => e instanceof NydusError && e.code === 'ERR_UNSUPPORTED' && /type "V"/.test(e.message),
  );
});

test('non-UTF-8 and long names survive as bytes', async () => {
  const bin = Buffer.concat([Buffer.from('dir/'), NON_UTF8]);
  const long = `${'p/'.repeat(150)}${'n'.repeat(255)}`;
  const { tree } = await load(
    await tarBytes([[ent(bin, TarType.FILE, { size: 1 }), Buffer.from('b')], file(long, 'l')]),
  );
  const m = flatten(tree);
  assert.ok(m.has(`dir/${NON_UTF8.toString('latin1')}`));
  assert.equal(node(m, long).size, 1);
  assert.ok(isDir(node(m, 'p/p').mode));
});

test('a file consumer that ignores the data does not break the stream', async () => {
  const buf = await tarBytes([file('a', 'x'.repeat(5000)), file('b', 'y')]);
  const sizes: number[] = [];
  const tree = await treeFromTar(new TarReader(Readable.from([buf])), {
    whiteoutSpec: 'oci',
    onFileData: (inode) => {
      sizes.push(inode.size);
      return Promise.resolve();
    },
  });
  assert.deepEqual(sizes, [5000, 1]);
  assert.equal(tree.root.children!.length, 2);
});
