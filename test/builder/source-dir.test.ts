import { IS_ROOT, needRoot } from '../helpers/env.js';
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
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
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setAttributeSync } from '@napi-rs/xattr';
import { NydusError } from '../../src/errors/errors.js';
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
  S_IFSOCK,
} from '../../src/format/flags.js';
import {
  filterXattrs,
  makedev,
  scanDirectory,
  sourcePathOf,
  treeFromDirectory,
} from '../../src/builder/source-dir.js';
import type { BuildInode, BuildTree } from '../../src/builder/tree.js';

function tmp(t: TestContext): string {
  const d = mkdtempSync(join(tmpdir(), 'nydus-srcdir-'));
  t.after(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

/** Every entry of a tree by path (latin1, so any byte survives), the root as "". */
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

function xattr(n: BuildInode, name: string): Buffer | undefined {
  return n.xattrs.find((x) => x.name.equals(Buffer.from(name)))?.value;
}

/** Attributes as GNU find reports them: an independent reading of the same tree. */
function findAttrs(
  root: string,
): Map<
  string,
  { mode: number; uid: number; gid: number; size: number; mtime: number; nsec: number; target: Buffer }
> {
  const raw = execFileSync(
    'find',
    [root, '-mindepth', '1', '-printf', '%P\\0%#m\\0%y\\0%U\\0%G\\0%s\\0%T@\\0%l\\0'],
    {
      maxBuffer: 1 << 26,
    },
  );
  const fields: Buffer[] = [];
  for (let at = 0; at < raw.length;) {
    const z = raw.indexOf(0, at);
    fields.push(raw.subarray(at, z));
    at = z + 1;
  }
  const typeBits: Record<string, number> = {
    f: S_IFREG,
    d: S_IFDIR,
    l: S_IFLNK,
    p: S_IFIFO,
    s: S_IFSOCK,
    c: S_IFCHR,
    b: S_IFBLK,
  };
  const out = new Map<
    string,
    { mode: number; uid: number; gid: number; size: number; mtime: number; nsec: number; target: Buffer }
  >();
  for (let k = 0; k + 8 <= fields.length; k += 8) {
    const [p, m, y, u, g, s, tm, l] = fields.slice(k, k + 8).map((b) => b) as [
      Buffer,
      Buffer,
      Buffer,
      Buffer,
      Buffer,
      Buffer,
      Buffer,
      Buffer,
    ];
    const [sec, frac = ''] = tm.toString().split('.');
    out.set(p.toString('latin1'), {
      mode: typeBits[y.toString()]! | parseInt(m.toString(), 8),
      uid: Number(u.toString()),
      gid: Number(g.toString()),
      size: Number(s.toString()),
      mtime: Number(sec),
      nsec: Number(frac.slice(0, 9).padEnd(9, '0')),
      target: Buffer.from(l),
    });
  }
  return out;
}

const NS_DATE = '2020-01-02 03:04:05.123456789';
const NS_SEC = Date.UTC(2020, 0, 2, 3, 4, 5) / 1000;
const NS_NSEC = 123456789;
const NON_UTF8 = Buffer.from([0xff, 0xfe, 0x2d, 0x62, 0x69, 0x6e]); // "\xff\xfe-bin"
const LONG_NAME = 'n'.repeat(255);
const DEPTH = 200;
const CAP = Buffer.from('0100000200200000000000000000000000000000', 'hex');

function touchNs(p: string): void {
  execFileSync('touch', ['-h', '-d', NS_DATE, p], { env: { ...process.env, TZ: 'UTC' } });
}

interface Fixture {
  dir: string;
  server: Server;
}

/** The generated source tree; root-only parts only as root. */
async function makeTree(t: TestContext): Promise<Fixture> {
  const dir = tmp(t);
  const p = (...s: string[]): string => join(dir, ...s);
  writeFileSync(p('file'), 'hello\n');
  writeFileSync(p('empty'), '');
  mkdirSync(p('sticky'));
  chmodSync(p('sticky'), 0o1777);
  let deep = p('deep');
  for (let i = 0; i < DEPTH; i++) deep = join(deep, 'd');
  mkdirSync(deep, { recursive: true });
  writeFileSync(join(deep, 'bottom'), 'deep data');
  symlinkSync('nowhere/at/all', p('dangling'));
  symlinkSync('deep', p('todir'));
  symlinkSync('/etc/hostname', p('absolute'));
  mkdirSync(p('h1'));
  mkdirSync(p('h2'));
  writeFileSync(p('h1', 'a'), 'linked');
  linkSync(p('h1', 'a'), p('h2', 'b'));
  linkSync(p('h1', 'a'), p('h1', 'c'));
  execFileSync('mkfifo', [p('fifo')]);
  linkSync(p('fifo'), p('fifo2'));
  // xattrs: binary user.* values (security.capability and trusted.* below, as root).
  writeFileSync(p('xfile'), 'x');
  setAttributeSync(p('xfile'), 'user.x', Buffer.from([0, 1, 0xff, 0x80]));
  setAttributeSync(p('xfile'), 'user.a', 'first by name');
  // Non-UTF-8 names (a file with an xattr, and a directory with a file in it): made under a
  // UTF-8 name, then renamed through Buffer paths.
  writeFileSync(p('tmp-bin'), 'binary name');
  setAttributeSync(p('tmp-bin'), 'user.bin', 'v');
  renameSync(p('tmp-bin'), Buffer.concat([Buffer.from(dir + '/'), NON_UTF8]));
  mkdirSync(p('tmp-bindir'));
  writeFileSync(p('tmp-bindir', 'inside'), 'in a binary dir');
  renameSync(p('tmp-bindir'), Buffer.concat([Buffer.from(dir + '/'), NON_UTF8, Buffer.from('-dir')]));
  writeFileSync(p(LONG_NAME), 'long');
  writeFileSync(p('ns'), 'ns');
  touchNs(p('ns'));
  touchNs(p('dangling'));
  if (IS_ROOT) {
    execFileSync('mknod', [p('null'), 'c', '1', '3']);
    execFileSync('mknod', [p('loop'), 'b', '7', '0']);
    execFileSync('mknod', [p('bigdev'), 'c', '300', '70000']);
    setAttributeSync(p('xfile'), 'trusted.t', 'trusted value');
    setAttributeSync(p('xfile'), 'security.capability', CAP);
    lchownSync(p('file'), 123456, 654321);
    lchownSync(p('dangling'), 4242, 4343);
    lchownSync(p('sticky'), 7, 8);
  }
  // After chown, which clears set-id bits.
  chmodSync(p('file'), 0o4751);
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(p('socket'), resolve));
  t.after(() => server.close());
  // Last, so that creating entries does not move it.
  touchNs(p('sticky'));
  return { dir, server };
}

test('directory source reflects every attribute of a generated tree', async (t) => {
  const { dir } = await makeTree(t);
  const seen: [BuildInode, Buffer][] = [];
  const tree = await treeFromDirectory(dir, {
    whiteoutSpec: 'oci',
    onFile: (inode, path) => {
      seen.push([inode, path]);
    },
  });
  const m = flatten(tree);

  // Root: mode/owner from the directory, mtime forced to 0.
  assert.equal(tree.root.mode & S_IFMT, S_IFDIR);
  assert.equal(tree.root.mtime, 0);
  assert.equal(tree.root.mtimeNsec, 0);

  // Every path and attribute agrees with find(1).
  const ref = findAttrs(dir);
  assert.deepEqual([...m.keys()].filter((k) => k !== '').sort(), [...ref.keys()].sort());
  for (const [p, r] of ref) {
    const n = node(m, p);
    assert.equal(n.mode, r.mode, `mode of ${p}`);
    assert.equal(n.uid, r.uid, `uid of ${p}`);
    assert.equal(n.gid, r.gid, `gid of ${p}`);
    assert.equal(n.mtime, r.mtime, `mtime of ${p}`);
    assert.equal(n.mtimeNsec, r.nsec, `mtime nsec of ${p}`);
    if (isReg(n.mode)) assert.equal(n.size, r.size, `size of ${p}`);
    else if ((n.mode & S_IFMT) === S_IFLNK) {
      assert.deepEqual(n.target, r.target, `target of ${p}`);
      assert.equal(n.size, r.target.length);
    } else assert.equal(n.size, 0, `size of ${p}`);
    if (isDir(n.mode)) assert.ok(Array.isArray(n.children));
    else assert.equal(n.children, undefined);
  }

  // Specific facts.
  assert.equal(node(m, 'file').mode, S_IFREG | 0o4751);
  assert.equal(node(m, 'sticky').mode, S_IFDIR | 0o1777);
  assert.equal(node(m, 'empty').size, 0);
  assert.equal(node(m, 'ns').mtime, NS_SEC);
  assert.equal(node(m, 'ns').mtimeNsec, NS_NSEC);
  assert.equal(node(m, 'sticky').mtimeNsec, NS_NSEC);
  assert.equal(node(m, 'dangling').mtimeNsec, NS_NSEC);
  assert.deepEqual(node(m, 'dangling').target, Buffer.from('nowhere/at/all'));
  assert.deepEqual(node(m, 'todir').target, Buffer.from('deep'));
  assert.deepEqual(node(m, 'absolute').target, Buffer.from('/etc/hostname'));
  assert.equal(node(m, 'socket').mode & S_IFMT, S_IFSOCK);
  assert.equal(node(m, 'fifo').mode & S_IFMT, S_IFIFO);
  assert.equal(node(m, `deep${'/d'.repeat(DEPTH)}/bottom`).size, 9);
  assert.equal(node(m, LONG_NAME).size, 4);

  // Regular-file hardlinks are one inode; other types that share an inode are not.
  assert.equal(node(m, 'h1/a'), node(m, 'h2/b'));
  assert.equal(node(m, 'h1/a'), node(m, 'h1/c'));
  assert.notEqual(node(m, 'fifo'), node(m, 'fifo2'));
  assert.deepEqual(node(m, 'fifo'), node(m, 'fifo2'));

  // xattrs: kept namespaces, sorted by name, binary values exact.
  const x = node(m, 'xfile');
  assert.deepEqual(
    x.xattrs.map((a) => a.name.toString()),
    IS_ROOT ? ['security.capability', 'trusted.t', 'user.a', 'user.x'] : ['user.a', 'user.x'],
  );
  assert.deepEqual(xattr(x, 'user.x'), Buffer.from([0, 1, 0xff, 0x80]));
  assert.deepEqual(node(m, 'file').xattrs, []);

  // Non-UTF-8 names survive as bytes, xattrs included; data is reachable through sourcePathOf.
  const bin = node(m, NON_UTF8.toString('latin1'));
  assert.deepEqual(xattr(bin, 'user.bin'), Buffer.from('v'));
  assert.equal(bin.sourcePath, undefined);
  const binPath = sourcePathOf(bin);
  assert.ok(Buffer.isBuffer(binPath));
  assert.equal(readFileSync(binPath).toString(), 'binary name');
  const inside = node(m, `${NON_UTF8.toString('latin1')}-dir/inside`);
  assert.equal(readFileSync(sourcePathOf(inside)!).toString(), 'in a binary dir');
  assert.equal(node(m, 'file').sourcePath, join(dir, 'file'));
  assert.equal(sourcePathOf(node(m, 'file')), join(dir, 'file'));

  // onFile: once per regular-file inode, with the byte path.
  const regular = new Set([...m.values()].filter((n) => isReg(n.mode)));
  assert.equal(seen.length, regular.size);
  assert.deepEqual(new Set(seen.map(([n]) => n)), regular);
  for (const [n, path] of seen) assert.equal(readFileSync(path).length, n.size);

  // Devices and root-only attributes.
  if (!needRoot(t, 'devices, trusted.* xattrs and chown')) return;
  assert.equal(node(m, 'null').mode & S_IFMT, S_IFCHR);
  assert.equal(node(m, 'null').rdev, makedev(1, 3));
  assert.equal(node(m, 'loop').mode & S_IFMT, S_IFBLK);
  assert.equal(node(m, 'loop').rdev, makedev(7, 0));
  assert.equal(node(m, 'bigdev').rdev, 286338160); // glibc makedev(300, 70000)
  assert.equal(node(m, 'file').rdev, 0);
  assert.deepEqual(xattr(x, 'trusted.t'), Buffer.from('trusted value'));
  assert.deepEqual(xattr(x, 'security.capability'), CAP);
  assert.equal(node(m, 'file').uid, 123456);
  assert.equal(node(m, 'file').gid, 654321);
  assert.equal(node(m, 'dangling').uid, 4242);
  assert.equal(node(m, 'sticky').gid, 8);
});

test('makedev matches the Linux encoding', () => {
  assert.equal(makedev(0, 0), 0);
  assert.equal(makedev(1, 3), 0x103);
  assert.equal(makedev(8, 17), 0x811);
  assert.equal(makedev(300, 70000), 286338160);
  assert.equal(makedev(0xfff, 0xff), 0xfffff);
  assert.equal(makedev(0x1000, 0), 0x1000 * 2 ** 32);
  assert.throws(
    () => makedev(0xffffffff, 0),
    (e: unknown) => e instanceof NydusError && e.code === 'ERR_UNSUPPORTED',
  );
});

test('only the kept xattr namespaces pass, sorted by name bytes', () => {
  const x = (n: string): { name: Buffer; value: Buffer } => ({ name: Buffer.from(n), value: Buffer.from(n) });
  const kept = filterXattrs(
    [
      'user.b',
      'system.posix_acl_default',
      'trusted.t',
      'system.nfs4_acl',
      'user.a',
      'security.selinux',
      'system.posix_acl_access',
      'other.x',
      'user',
      'system.posix_acl_accessX',
    ].map(x),
  );
  assert.deepEqual(
    kept.map((a) => a.name.toString()),
    [
      'security.selinux',
      'system.posix_acl_access',
      'system.posix_acl_default',
      'trusted.t',
      'user.a',
      'user.b',
    ],
  );
});

test('whiteouts in a directory build follow the spec', async (t) => {
  const dir = tmp(t);
  const p = (...s: string[]): string => join(dir, ...s);
  writeFileSync(p('.wh.gone'), '');
  writeFileSync(p('kept'), 'k');
  mkdirSync(p('.wh.dir'));
  writeFileSync(p('.wh.dir', 'inner'), '');
  mkdirSync(p('opq'));
  writeFileSync(p('opq', '.wh..wh..opq'), '');
  writeFileSync(p('opq', 'keep'), '');
  const root = IS_ROOT;
  if (root) {
    execFileSync('mknod', [p('wh0'), 'c', '0', '0']);
    execFileSync('mknod', [p('null'), 'c', '1', '3']);
    mkdirSync(p('ovopq'));
    writeFileSync(p('ovopq', 'x'), '');
    setAttributeSync(p('ovopq'), 'trusted.overlay.opaque', 'y');
    setAttributeSync(p('ovopq'), 'user.other', 'o');
    mkdirSync(p('ovnot'));
    setAttributeSync(p('ovnot'), 'trusted.overlay.opaque', 'n');
  }
  const names = (tree: BuildTree): string[] => [...flatten(tree).keys()].filter((k) => k !== '').sort();
  const base = ['kept', 'opq', 'opq/keep'];
  const rootOnly = root ? ['null', 'ovnot', 'ovopq', 'ovopq/x'] : [];
  const ociMarkers = ['.wh.dir', '.wh.dir/inner', '.wh.gone', 'opq/.wh..wh..opq'];

  // oci: every ".wh." name is dropped, with whatever is below it.
  assert.deepEqual(
    names(await treeFromDirectory(dir, { whiteoutSpec: 'oci' })),
    [...base, ...rootOnly, ...(root ? ['wh0'] : [])].sort(),
  );
  // none: nothing is a marker.
  assert.deepEqual(
    names(await treeFromDirectory(dir, { whiteoutSpec: 'none' })),
    [...base, ...rootOnly, ...ociMarkers, ...(root ? ['wh0'] : [])].sort(),
  );
  // 'keep' (an upper layer for applyLayer): the markers stay.
  assert.deepEqual(
    names(await scanDirectory(dir, { whiteoutSpec: 'oci', whiteouts: 'keep' })),
    [...base, ...rootOnly, ...ociMarkers, ...(root ? ['wh0'] : [])].sort(),
  );

  if (!needRoot(t, 'overlayfs whiteouts (mknod, trusted.* xattrs)')) return;
  // overlayfs: char 0/0 dropped, opaque directory kept with the marker xattr stripped.
  const ov = await treeFromDirectory(dir, { whiteoutSpec: 'overlayfs' });
  assert.deepEqual(names(ov), [...base, ...rootOnly, ...ociMarkers].sort());
  const m = flatten(ov);
  assert.deepEqual(
    node(m, 'ovopq').xattrs.map((a) => a.name.toString()),
    ['user.other'],
  );
  assert.deepEqual(xattr(node(m, 'ovnot'), 'trusted.overlay.opaque'), Buffer.from('n'));
  const kept = flatten(await scanDirectory(dir, { whiteoutSpec: 'overlayfs', whiteouts: 'keep' }));
  assert.ok(kept.has('wh0'));
  assert.deepEqual(xattr(node(kept, 'ovopq'), 'trusted.overlay.opaque'), Buffer.from('y'));
});

test('unreadable sources fail with ERR_IO naming the path', async (t) => {
  const dir = tmp(t);
  const missing = join(dir, 'missing');
  await assert.rejects(treeFromDirectory(missing, { whiteoutSpec: 'oci' }), (e: unknown) => {
    assert.ok(e instanceof NydusError);
    assert.equal(e.code, 'ERR_IO');
    assert.match(e.message, new RegExp(`^Cannot read "${missing}": `));
    return true;
  });
  writeFileSync(join(dir, 'f'), '');
  await assert.rejects(
    treeFromDirectory(join(dir, 'f'), { whiteoutSpec: 'oci' }),
    (e: unknown) => e instanceof NydusError && e.code === 'ERR_INVALID_ARG',
  );
  const ac = new AbortController();
  ac.abort();
  await assert.rejects(treeFromDirectory(dir, { whiteoutSpec: 'oci', signal: ac.signal }), {
    name: 'AbortError',
  });
});

test('a symlinked root is followed; entries below are not', async (t) => {
  const dir = tmp(t);
  mkdirSync(join(dir, 'real'));
  writeFileSync(join(dir, 'real', 'f'), 'x');
  symlinkSync('real', join(dir, 'link'));
  symlinkSync('../real', join(dir, 'real', 'up'));
  setAttributeSync(join(dir, 'real'), 'user.root', 'r');
  const tree = await treeFromDirectory(join(dir, 'link'), { whiteoutSpec: 'oci' });
  assert.deepEqual(xattr(tree.root, 'user.root'), Buffer.from('r'));
  const m = flatten(tree);
  assert.deepEqual([...m.keys()].sort(), ['', 'f', 'up']);
  assert.equal(node(m, 'up').mode & S_IFMT, S_IFLNK);
});

test('layer numbers are recorded when asked', async (t) => {
  const dir = tmp(t);
  writeFileSync(join(dir, 'f'), 'x');
  const tree = await treeFromDirectory(dir, { whiteoutSpec: 'oci', layer: 3 });
  assert.equal(tree.root.layer, 3);
  assert.equal(tree.root.children![0]!.inode.layer, 3);
});
