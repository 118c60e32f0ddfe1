import { needRoot } from '../helpers/env.js';
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  linkSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
  chmodSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setAttributeSync } from '@napi-rs/xattr';
import { NydusError } from '../../src/errors/errors.js';
import { isDir, isReg, S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG } from '../../src/format/flags.js';
import { applyLayer, mergeTrees } from '../../src/builder/merge-tree.js';
import { scanDirectory, sourcePathOf, treeFromDirectory } from '../../src/builder/source-dir.js';
import { newDir, type BuildInode, type BuildTree } from '../../src/builder/tree.js';
import { markerOf, parseWhiteoutSpec, type WhiteoutSpec } from '../../src/builder/whiteout.js';

function tmp(t: TestContext): string {
  const d = mkdtempSync(join(tmpdir(), 'nydus-whiteout-'));
  t.after(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

// ---------------------------------------------------------------------------------------------
// Layers written once as a list of operations, then on disk in the OCI form and in the overlayfs
// form (what the kernel understands).

type Op =
  | { dir: string; mode?: number }
  | { file: string; data: string }
  | { link: string; target: string }
  | { hardlink: string; to: string }
  | { whiteout: string }
  | { opaque: string };

const LAYERS: Op[][] = [
  [
    { dir: 'a' },
    { file: 'a/f1', data: 'f1-L1' },
    { file: 'a/f2', data: 'f2-L1' },
    { dir: 'b' },
    { file: 'b/g', data: 'g-L1' },
    { dir: 'b/sub' },
    { file: 'b/sub/deep', data: 'deep-L1' },
    { dir: 'd' },
    { file: 'd/child', data: 'child-L1' },
    { dir: 'e' },
    { file: 'e/old', data: 'old-L1' },
    { dir: 'keep' },
    { file: 'keep/k', data: 'k-L1' },
    { link: 'keep/link', target: 'k' },
    { hardlink: 'keep/k2', to: 'keep/k' },
    { file: 'r', data: 'r-L1' },
    { dir: 'm' },
    { file: 'm/x', data: 'mx-L1' },
  ],
  [
    { dir: 'a' },
    { whiteout: 'a/f1' },
    { dir: 'b' },
    { opaque: 'b' },
    { file: 'b/new', data: 'new-L2' },
    { file: 'c', data: 'c-L2' },
    { file: 'd', data: 'd-file-L2' },
    { whiteout: 'e' },
    { dir: 'r' },
    { file: 'r/x', data: 'rx-L2' },
    { dir: 'm', mode: 0o700 },
    { file: 'm/y', data: 'my-L2' },
    { file: 'hl1', data: 'hard-L2' },
    { hardlink: 'hl2', to: 'hl1' },
    { whiteout: 'nonexistent' },
    { dir: 'keep' },
    { whiteout: 'keep/k' },
  ],
  [
    { dir: 'a' },
    { dir: 'a/f1' },
    { file: 'a/f1/inside', data: 'inside-L3' },
    { whiteout: 'c' },
    { dir: 'd' },
    { file: 'd/new', data: 'dnew-L3' },
    { dir: 'e' },
    { file: 'e/new', data: 'enew-L3' },
    { dir: 'keep' },
    { link: 'keep/link', target: 'elsewhere' },
  ],
];

/** What the merged image must contain (path → type and content / target). */
const EXPECTED: Record<string, string> = {
  a: 'dir',
  'a/f1': 'dir',
  'a/f1/inside': 'file inside-L3',
  'a/f2': 'file f2-L1',
  b: 'dir',
  'b/new': 'file new-L2',
  d: 'dir',
  'd/new': 'file dnew-L3',
  e: 'dir',
  'e/new': 'file enew-L3',
  hl1: 'file hard-L2',
  hl2: 'file hard-L2',
  keep: 'dir',
  'keep/k2': 'file k-L1',
  'keep/link': 'link elsewhere',
  m: 'dir',
  'm/x': 'file mx-L1',
  'm/y': 'file my-L2',
  r: 'dir',
  'r/x': 'file rx-L2',
};

function materialize(root: string, ops: readonly Op[], form: 'oci' | 'overlayfs'): void {
  mkdirSync(root);
  const p = (rel: string): string => join(root, rel);
  const split = (rel: string): [string, string] => {
    const i = rel.lastIndexOf('/');
    return i < 0 ? ['', rel] : [rel.slice(0, i), rel.slice(i + 1)];
  };
  for (const op of ops) {
    if ('dir' in op) {
      mkdirSync(p(op.dir));
      chmodSync(p(op.dir), op.mode ?? 0o755);
    } else if ('file' in op) writeFileSync(p(op.file), op.data);
    else if ('link' in op) symlinkSync(op.target, p(op.link));
    else if ('hardlink' in op) linkSync(p(op.to), p(op.hardlink));
    else if ('whiteout' in op) {
      const [parent, name] = split(op.whiteout);
      if (form === 'oci') writeFileSync(p(join(parent, `.wh.${name}`)), '');
      else execFileSync('mknod', [p(op.whiteout), 'c', '0', '0']);
    } else if (form === 'oci') writeFileSync(p(join(op.opaque, '.wh..wh..opq')), '');
    else setAttributeSync(p(op.opaque), 'trusted.overlay.opaque', 'y');
  }
  // Same times in both forms: creating markers must not make the forms differ.
  execFileSync('find', [root, '-exec', 'touch', '-h', '-d', '@1600000000', '{}', '+']);
}

function flatten(tree: BuildTree): Map<string, BuildInode> {
  const out = new Map<string, BuildInode>();
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

function kindOf(mode: number, content: () => string, target: () => string): string {
  switch (mode & S_IFMT) {
    case S_IFDIR:
      return 'dir';
    case S_IFREG:
      return `file ${content()}`;
    case S_IFLNK:
      return `link ${target()}`;
    default:
      return `other ${(mode & S_IFMT).toString(8)}`;
  }
}

/** Names, types, modes, targets and contents of a merged tree. */
function viewOfTree(tree: BuildTree): Map<string, string> {
  const out = new Map<string, string>([['', `mode ${tree.root.mode.toString(8)}`]]);
  for (const [p, n] of flatten(tree)) {
    const kind = kindOf(
      n.mode,
      () => readFileSync(sourcePathOf(n)!).toString(),
      () => n.target!.toString(),
    );
    out.set(p, `${kind} mode ${n.mode.toString(8)}`);
  }
  return out;
}

/** The same view of a mounted directory, read with plain fs calls. */
function viewOfMount(root: string): Map<string, string> {
  const out = new Map<string, string>([['', `mode ${lstatSync(root).mode.toString(8)}`]]);
  const stack = [''];
  while (stack.length > 0) {
    const rel = stack.pop()!;
    for (const name of readdirSync(join(root, rel))) {
      const cp = rel === '' ? name : `${rel}/${name}`;
      const full = join(root, cp);
      const st = lstatSync(full);
      const kind = kindOf(
        st.mode,
        () => readFileSync(full).toString(),
        () => readlinkSync(full),
      );
      out.set(cp, `${kind} mode ${st.mode.toString(8)}`);
      if (st.isDirectory()) stack.push(cp);
    }
  }
  return out;
}

/** Everything a merged tree says, for comparing two merges exactly. */
function fullView(tree: BuildTree): Map<string, unknown> {
  const firstPath = new Map<BuildInode, string>();
  const out = new Map<string, unknown>();
  const all = [['', tree.root] as const, ...flatten(tree)].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  for (const [p, n] of all) {
    if (!firstPath.has(n)) firstPath.set(n, p);
    out.set(p, {
      mode: n.mode,
      uid: n.uid,
      gid: n.gid,
      mtime: [n.mtime, n.mtimeNsec],
      rdev: n.rdev,
      size: n.size,
      xattrs: n.xattrs.map((x) => `${x.name.toString('latin1')}=${x.value.toString('hex')}`),
      target: n.target?.toString('latin1'),
      content: isReg(n.mode) ? readFileSync(sourcePathOf(n)!).toString() : undefined,
      inode: firstPath.get(n),
    });
  }
  return out;
}

function layersOnDisk(t: TestContext, form: 'oci' | 'overlayfs'): string[] {
  const base = tmp(t);
  return LAYERS.map((ops, i) => {
    const d = join(base, `L${i + 1}`);
    materialize(d, ops, form);
    return d;
  });
}

async function mergeBoth(
  dirs: readonly string[],
  spec: WhiteoutSpec,
): Promise<{ stepwise: BuildTree; merged: BuildTree }> {
  const scanned = await Promise.all(
    dirs.map((d) => scanDirectory(d, { whiteoutSpec: spec, whiteouts: 'keep' })),
  );
  let stepwise = await treeFromDirectory(dirs[0]!, { whiteoutSpec: spec });
  for (const upper of scanned.slice(1)) stepwise = applyLayer(stepwise, upper, spec);
  return { stepwise, merged: mergeTrees(scanned, spec) };
}

function expectedView(): Map<string, string> {
  return new Map(Object.entries(EXPECTED));
}

function withoutModes(v: Map<string, string>): Map<string, string> {
  return new Map([...v].filter(([p]) => p !== '').map(([p, s]) => [p, s.replace(/ mode \d+$/, '')]));
}

test('three OCI layers merge as the OCI spec says', async (t) => {
  const dirs = layersOnDisk(t, 'oci');
  const { stepwise, merged } = await mergeBoth(dirs, 'oci');
  assert.deepEqual(withoutModes(viewOfTree(stepwise)), expectedView());
  assert.deepEqual(fullView(merged), fullView(stepwise));
  const m = flatten(merged);
  // The upper directory's attributes win; hardlinks within a layer stay one inode.
  assert.equal(m.get('m')!.mode, S_IFDIR | 0o700);
  assert.equal(m.get('hl1'), m.get('hl2'));
  // A lower hardlink group loses one name but keeps its inode.
  const lower = flatten(await treeFromDirectory(dirs[0]!, { whiteoutSpec: 'oci' }));
  assert.equal(lower.get('keep/k'), lower.get('keep/k2'));
  assert.equal(m.get('keep/k2')!.size, 4);
});

test('the overlayfs form of the same layers merges to the same tree', async (t) => {
  if (!needRoot(t, 'overlayfs whiteouts (mknod 0/0, trusted.overlay.opaque)')) return;
  const oci = await mergeBoth(layersOnDisk(t, 'oci'), 'oci');
  const ovl = await mergeBoth(layersOnDisk(t, 'overlayfs'), 'overlayfs');
  assert.deepEqual(fullView(ovl.merged), fullView(oci.merged));
  assert.deepEqual(fullView(ovl.stepwise), fullView(oci.merged));
  // The opaque marker xattr never reaches the result.
  for (const n of flatten(ovl.merged).values()) assert.deepEqual(n.xattrs, []);
});

test('the merge matches what the kernel overlayfs mounts', async (t) => {
  if (!needRoot(t, 'mounting overlayfs')) return;
  const dirs = layersOnDisk(t, 'overlayfs');
  const mnt = join(tmp(t), 'mnt');
  mkdirSync(mnt);
  // lowerdir lists the top layer first.
  execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${[...dirs].reverse().join(':')}`, mnt]);
  let kernel: Map<string, string>;
  try {
    kernel = viewOfMount(mnt);
  } finally {
    execFileSync('umount', [mnt]);
  }
  const ovl = await mergeBoth(dirs, 'overlayfs');
  assert.deepEqual(viewOfTree(ovl.merged), kernel);
  const oci = await mergeBoth(layersOnDisk(t, 'oci'), 'oci');
  assert.deepEqual(viewOfTree(oci.merged), kernel);
  assert.deepEqual(withoutModes(kernel), expectedView());
});

test('spec none interprets nothing', async (t) => {
  const dirs = layersOnDisk(t, 'oci');
  const { stepwise, merged } = await mergeBoth(dirs, 'none');
  assert.deepEqual(fullView(merged), fullView(stepwise));
  const m = flatten(merged);
  for (const p of [
    'a/.wh.f1',
    'a/f1/inside',
    'b/.wh..wh..opq',
    'b/g',
    '.wh.c',
    'c',
    'e/old',
    'e/new',
    'keep/k',
  ]) {
    assert.ok(m.has(p), p);
  }
  // Still a layered merge: d was replaced by a file in L2, then by a directory in L3.
  assert.ok(!m.has('d/child'));
});

// ---------------------------------------------------------------------------------------------
// In-memory trees.

function reg(data = ''): BuildInode {
  return {
    mode: S_IFREG | 0o644,
    uid: 0,
    gid: 0,
    mtime: 1,
    mtimeNsec: 0,
    rdev: 0,
    size: data.length,
    xattrs: [],
  };
}

function dir(kids: Record<string, BuildInode>, attrs: Partial<BuildInode> = {}): BuildInode {
  return newDir({
    ...attrs,
    children: Object.entries(kids)
      .map(([name, inode]) => ({ name: Buffer.from(name), inode }))
      .sort((a, b) => Buffer.compare(a.name, b.name)),
  });
}

function names(tree: BuildTree): string[] {
  return [...flatten(tree).keys()].sort();
}

/** Structure and attributes, to check that inputs are not modified. */
function snapshot(tree: BuildTree): string {
  return JSON.stringify([...fullViewNoData(tree)]);
}

function fullViewNoData(tree: BuildTree): Map<string, unknown> {
  return new Map(
    [['', tree.root] as const, ...flatten(tree)].map(([p, n]) => [
      p,
      [n.mode, n.uid, n.mtime, n.xattrs.map((x) => x.name.toString()), (n.children ?? []).length],
    ]),
  );
}

test('a marker and an entry of the same name in one layer: the entry replaces the lower one', () => {
  const lower = { root: dir({ f: reg('low'), g: reg('g') }) };
  const newF = reg('upper');
  const upper = { root: dir({ '.wh.f': reg(), f: newF, '.wh.g': reg() }) };
  const out = applyLayer(lower, upper, 'oci');
  assert.deepEqual(names(out), ['f']);
  assert.equal(out.root.children![0]!.inode, newF);
});

test('applyLayer modifies neither input and shares untouched subtrees', () => {
  const shared = reg('shared');
  const untouched = dir({ x: reg('x') });
  const lower = { root: dir({ a: dir({ f1: shared, f2: reg() }), u: untouched, h1: shared }) };
  const upperLink = reg('hl');
  const upper = {
    root: dir(
      { a: dir({ '.wh.f1': reg(), n: reg() }, { mode: S_IFDIR | 0o700 }), hl1: upperLink, hl2: upperLink },
      { mode: S_IFDIR | 0o711, uid: 9 },
    ),
  };
  const before = [snapshot(lower), snapshot(upper)];
  const out = applyLayer(lower, upper, 'oci');
  assert.deepEqual([snapshot(lower), snapshot(upper)], before);
  const m = flatten(out);
  assert.deepEqual([...m.keys()].sort(), ['a', 'a/f2', 'a/n', 'h1', 'hl1', 'hl2', 'u', 'u/x']);
  assert.equal(m.get('u'), untouched);
  assert.equal(m.get('h1'), shared);
  assert.equal(m.get('hl1'), upperLink);
  assert.equal(m.get('hl2'), upperLink);
  assert.notEqual(m.get('a'), lower.root.children![0]!.inode);
  assert.equal(m.get('a')!.mode, S_IFDIR | 0o700);
  assert.equal(out.root.mode, S_IFDIR | 0o711);
  assert.equal(out.root.uid, 9);
});

test('overlayfs markers: char 0/0 removes, only opaque="y" makes a directory opaque', () => {
  const wh: BuildInode = { ...reg(), mode: S_IFCHR | 0o600, size: 0, rdev: 0 };
  const realDev: BuildInode = { ...reg(), mode: S_IFCHR | 0o600, size: 0, rdev: 0x103 };
  const lower = { root: dir({ gone: reg(), dev: reg(), o: dir({ old: reg() }), n: dir({ old: reg() }) }) };
  const opaque = (v: string): BuildInode =>
    dir(
      { fresh: reg() },
      {
        xattrs: [
          { name: Buffer.from('trusted.overlay.opaque'), value: Buffer.from(v) },
          { name: Buffer.from('user.z'), value: Buffer.from('z') },
        ],
      },
    );
  const upper = { root: dir({ gone: wh, dev: realDev, o: opaque('y'), n: opaque('n') }) };
  const out = flatten(applyLayer(lower, upper, 'overlayfs'));
  assert.deepEqual([...out.keys()].sort(), ['dev', 'n', 'n/fresh', 'n/old', 'o', 'o/fresh']);
  assert.equal(out.get('dev'), realDev);
  assert.deepEqual(
    out.get('o')!.xattrs.map((x) => x.name.toString()),
    ['user.z'],
  );
  assert.equal(out.get('n')!.xattrs.length, 2);
  // Under the oci spec the same entries are plain content.
  const asOci = flatten(applyLayer(lower, upper, 'oci'));
  assert.ok(asOci.has('gone') && asOci.get('gone') === wh);
  assert.ok(asOci.has('o/old'));
  assert.equal(markerOf({ name: Buffer.from('gone'), inode: wh }, 'oci'), undefined);
});

test('mergeTrees drops the bottom layer markers and refuses zero layers', () => {
  const bottom = { root: dir({ '.wh.x': reg(), f: reg(), d: dir({ '.wh..wh..opq': reg(), y: reg() }) }) };
  assert.deepEqual(names(mergeTrees([bottom], 'oci')), ['d', 'd/y', 'f']);
  assert.throws(
    () => mergeTrees([], 'oci'),
    (e: unknown) => e instanceof NydusError && e.code === 'ERR_INVALID_ARG',
  );
});

test('very deep trees merge without recursion limits', () => {
  const depth = 50_000;
  const build = (leaf: string): BuildInode => {
    let d = dir({ [leaf]: reg(leaf) });
    for (let i = 0; i < depth; i++) d = dir({ d });
    return d;
  };
  const out = applyLayer({ root: build('low') }, { root: build('up') }, 'oci');
  let n = out.root;
  for (let i = 0; i < depth; i++) n = n.children![0]!.inode;
  assert.deepEqual(
    n.children!.map((e) => e.name.toString()),
    ['low', 'up'],
  );
});

test('whiteout spec names parse case-insensitively and refuse others', () => {
  assert.equal(parseWhiteoutSpec('OCI'), 'oci');
  assert.equal(parseWhiteoutSpec('overlayfs'), 'overlayfs');
  assert.equal(parseWhiteoutSpec('none'), 'none');
  assert.throws(
    () => parseWhiteoutSpec('aufs'),
    (e: unknown) => e instanceof NydusError && e.code === 'ERR_INVALID_ARG',
  );
});
