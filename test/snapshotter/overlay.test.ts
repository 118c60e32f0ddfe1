import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  chownSync,
  existsSync,
  linkSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  statSync,
  symlinkSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { NydusError, type ErrorCode } from '../../src/errors/errors.js';
import { createLogger, type Logger } from '../../src/log/logger.js';
import { MetaStore } from '../../src/snapshotter/metastore.js';
import {
  diskUsage,
  OverlaySnapshotter,
  VOLATILE_LABEL,
  type OverlayOptions,
} from '../../src/snapshotter/overlay.js';
import type { Mount, Usage } from '../../src/snapshotter/types.js';
import { mountPointsUnder } from '../../src/util/mounts.js';
import { needRoot } from '../helpers/env.js';

/**
 * The overlay snapshotter on real directories: the mounts containerd's overlay snapshotter
 * returns, usage measured like containerd's fs.DiskUsage (checked against find's st_blocks),
 * removal and Cleanup. As root, the returned mounts are mounted with mount(8).
 */

const INDEX_OFF = existsSync('/sys/module/overlay/parameters/index') ? ['index=off'] : [];

interface Env {
  root: string;
  sn: OverlaySnapshotter;
  ms: MetaStore;
  warnings: string[];
}

function setup(t: TestContext, opts: Partial<Pick<OverlayOptions, 'syncRemove' | 'volatile'>> = {}): Env {
  const dir = mkdtempSync(join(tmpdir(), 'overlay-sn-'));
  const root = join(dir, 'root');
  const ms = MetaStore.open(join(root, 'metadata.db'));
  const warnings: string[] = [];
  const base = createLogger('off');
  const log: Logger = { ...base, warn: (m) => warnings.push(m) };
  const sn = new OverlaySnapshotter({ root, ms, log, ...opts });
  t.after(async () => {
    await sn.close();
    // Whatever a failed test left mounted goes first, so that rm never reaches through a mount.
    for (const m of mountPointsUnder(realpathSync(dir)).reverse()) {
      try {
        execFileSync('umount', ['-l', m]);
      } catch {
        // already gone
      }
    }
    if (mountPointsUnder(realpathSync(dir)).length === 0) rmSync(dir, { recursive: true, force: true });
  });
  return { root, sn, ms, warnings };
}

async function codeOf(p: Promise<unknown>): Promise<ErrorCode> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof NydusError, `expected a NydusError, got ${String(e)}`);
    return e.code;
  }
  assert.fail('expected an error');
}

/** Committed layer `name` (parent '' for none) holding `files`. */
async function layer(
  sn: OverlaySnapshotter,
  ms: MetaStore,
  name: string,
  parent: string,
  files: Record<string, string>,
): Promise<string> {
  await sn.prepare(`${name}-active`, parent, {});
  const { id } = ms.getInfo(`${name}-active`);
  for (const [f, body] of Object.entries(files)) writeFileSync(join(sn.upperPath(id), f), body);
  await sn.commit(name, `${name}-active`, {});
  return id;
}

/** An independent reference for containerd's DiskUsage: find's %b is st_blocks (512-byte units). */
function findUsage(dir: string): Usage {
  const out = execFileSync('find', [dir, '-printf', '%D %i %b\n'], { encoding: 'utf8' });
  const seen = new Map<string, number>();
  for (const line of out.trim().split('\n')) {
    const [dev, ino, blocks] = line.split(' ');
    seen.set(`${dev}:${ino}`, Number(blocks) * 512);
  }
  return { size: [...seen.values()].reduce((a, b) => a + b, 0), inodes: seen.size };
}

function snapshotNames(root: string): string[] {
  return readdirSync(join(root, 'snapshots')).sort();
}

test('mounts: bind for a single layer, overlay with containerd 1.6 option order, bind of the parent for a one-parent view', async (t) => {
  const { sn, ms } = setup(t);
  const p1 = await layer(sn, ms, 'l1', '', {});
  const p2 = await layer(sn, ms, 'l2', 'l1', {});

  // No parent: a bind of the snapshot's own fs, rw for an active, ro for a view.
  const active0 = await sn.prepare('a0', '', {});
  const a0 = ms.getInfo('a0').id;
  assert.deepEqual(active0, [{ type: 'bind', source: sn.upperPath(a0), options: ['rw', 'rbind'] }]);
  const view0 = await sn.view('v0', '', {});
  const v0 = ms.getInfo('v0').id;
  assert.deepEqual(view0, [{ type: 'bind', source: sn.upperPath(v0), options: ['ro', 'rbind'] }]);

  // Active with parents: overlay, upper and work dirs, lower dirs nearest first.
  const active2 = await sn.prepare('a2', 'l2', {});
  const a2 = ms.getInfo('a2').id;
  assert.deepEqual(active2, [
    {
      type: 'overlay',
      source: 'overlay',
      options: [
        ...INDEX_OFF,
        `workdir=${sn.workPath(a2)}`,
        `upperdir=${sn.upperPath(a2)}`,
        `lowerdir=${sn.upperPath(p2)}:${sn.upperPath(p1)}`,
      ],
    },
  ]);
  const active1 = await sn.prepare('a1', 'l1', {});
  const a1 = ms.getInfo('a1').id;
  assert.deepEqual(active1[0]?.options, [
    ...INDEX_OFF,
    `workdir=${sn.workPath(a1)}`,
    `upperdir=${sn.upperPath(a1)}`,
    `lowerdir=${sn.upperPath(p1)}`,
  ]);

  // View of one parent: a read-only bind of that parent's fs.
  assert.deepEqual(await sn.view('v1', 'l1', {}), [
    { type: 'bind', source: sn.upperPath(p1), options: ['ro', 'rbind'] },
  ]);
  // View of several: an overlay with only lower dirs.
  assert.deepEqual(await sn.view('v2', 'l2', {}), [
    {
      type: 'overlay',
      source: 'overlay',
      options: [...INDEX_OFF, `lowerdir=${sn.upperPath(p2)}:${sn.upperPath(p1)}`],
    },
  ]);

  // Mounts() gives the same again; a committed snapshot has none.
  assert.deepEqual(await sn.mounts('a2'), active2);
  assert.deepEqual(await sn.mounts('v0'), view0);
  assert.equal(await codeOf(sn.mounts('l1')), 'ERR_FAILED_PRECONDITION');
  assert.equal(await codeOf(sn.mounts('nope')), 'ERR_NOT_FOUND');

  // Layout: fs for all, work only for actives; no temp directories left.
  assert.ok(statSync(sn.workPath(a2)).isDirectory());
  assert.equal((statSync(sn.workPath(a2)).mode & 0o777).toString(8), (0o711 & ~process.umask()).toString(8));
  assert.equal(existsSync(sn.workPath(v0)), false);
  assert.ok(statSync(sn.upperPath(v0)).isDirectory());
  assert.equal(sn.snapshotDir(a2), join(sn.root, 'snapshots', a2));
  assert.deepEqual(
    snapshotNames(sn.root).filter((n) => !/^\d+$/.test(n)),
    [],
  );
});

test('mounts: "volatile" after upperdir, from the snapshot label or the volatile option; never on views', async (t) => {
  const { sn, ms } = setup(t);
  const p1 = await layer(sn, ms, 'l1', '', {});
  const m = await sn.prepare('a', 'l1', { [VOLATILE_LABEL]: 'true' });
  const a = ms.getInfo('a').id;
  assert.deepEqual(m[0]?.options, [
    ...INDEX_OFF,
    `workdir=${sn.workPath(a)}`,
    `upperdir=${sn.upperPath(a)}`,
    'volatile',
    `lowerdir=${sn.upperPath(p1)}`,
  ]);
  assert.deepEqual(await sn.mounts('a'), m);
  assert.ok(!(await sn.prepare('b', 'l1', {}))[0]?.options.includes('volatile'));
  // A single-layer active is a bind: no overlay options at all.
  assert.deepEqual((await sn.prepare('c', '', { [VOLATILE_LABEL]: 'true' }))[0]?.options, ['rw', 'rbind']);

  const v = setup(t, { volatile: true });
  await layer(v.sn, v.ms, 'l1', '', {});
  await layer(v.sn, v.ms, 'l2', 'l1', {});
  assert.ok((await v.sn.prepare('a', 'l1', {}))[0]?.options.includes('volatile'));
  assert.ok(!(await v.sn.view('v', 'l2', {}))[0]?.options.includes('volatile'));
});

test('usage: containerd DiskUsage (unique inodes, st_blocks * 512) equals the find reference; commit stores it', async (t) => {
  const { sn, ms } = setup(t);
  await sn.prepare('a', '', {});
  const id = ms.getInfo('a').id;
  const fs = sn.upperPath(id);
  assert.deepEqual(await sn.usage('a'), findUsage(fs));
  mkdirSync(join(fs, 'd/e'), { recursive: true });
  writeFileSync(join(fs, 'd/small'), 'x');
  writeFileSync(join(fs, 'd/e/big'), Buffer.alloc(300_000, 7));
  linkSync(join(fs, 'd/e/big'), join(fs, 'hardlink')); // counted once
  symlinkSync('d/e/big', join(fs, 'link'));
  symlinkSync('/etc', join(fs, 'outside')); // not followed
  writeFileSync(join(fs, 'sparse'), '');
  truncateSync(join(fs, 'sparse'), 50 * 1024 * 1024); // no blocks
  const want = findUsage(fs);
  assert.equal(want.inodes, 8);
  assert.ok(want.size >= 300_000 && want.size < 1024 * 1024, String(want.size));
  assert.deepEqual(await sn.usage('a'), want);
  assert.deepEqual(await diskUsage(fs), want);

  await sn.commit('c', 'a', { k: 'v' });
  assert.deepEqual(await sn.usage('c'), want);
  assert.deepEqual(ms.getInfo('c').usage, want);
  // The stored number does not follow later changes of the directory.
  writeFileSync(join(fs, 'later'), Buffer.alloc(100_000, 1));
  assert.deepEqual(await sn.usage('c'), want);
  // A view's usage is what the store has: nothing.
  await sn.view('v', 'c', {});
  assert.deepEqual(await sn.usage('v'), { size: 0, inodes: 0 });
  assert.equal(await codeOf(sn.usage('nope')), 'ERR_NOT_FOUND');
});

test('snapshotter errors keep containerd codes and leave no directories behind', async (t) => {
  const { sn, ms, root } = setup(t);
  await layer(sn, ms, 'l1', '', {});
  await sn.prepare('a', 'l1', {});
  const before = snapshotNames(root);
  assert.equal(await codeOf(sn.prepare('a', '', {})), 'ERR_ALREADY_EXISTS');
  assert.equal(await codeOf(sn.prepare('x', 'missing', {})), 'ERR_NOT_FOUND');
  assert.equal(await codeOf(sn.prepare('x', 'a', {})), 'ERR_INVALID_ARG');
  assert.equal(await codeOf(sn.prepare('', '', {})), 'ERR_INVALID_ARG');
  assert.equal(await codeOf(sn.view('x', '', { k: 'v'.repeat(5000) })), 'ERR_INVALID_ARG');
  assert.deepEqual(snapshotNames(root), before);
  await sn.view('v', 'l1', {});
  assert.equal(await codeOf(sn.commit('c', 'v', {})), 'ERR_FAILED_PRECONDITION');
  assert.equal(await codeOf(sn.commit('c', 'nope', {})), 'ERR_NOT_FOUND');
  assert.equal(await codeOf(sn.commit('l1', 'a', {})), 'ERR_ALREADY_EXISTS');
  assert.equal(await codeOf(sn.remove('l1')), 'ERR_FAILED_PRECONDITION');
  assert.equal(await codeOf(sn.remove('nope')), 'ERR_NOT_FOUND');
  assert.equal(await codeOf(sn.update({ ...(await sn.stat('a')), name: 'nope' }, [])), 'ERR_NOT_FOUND');
  assert.equal(await codeOf(sn.update(await sn.stat('a'), ['kind'])), 'ERR_INVALID_ARG');
  assert.equal(await codeOf(sn.walk(() => undefined, ['name=='])), 'ERR_INVALID_ARG');
  assert.equal(await codeOf(sn.stat('nope')), 'ERR_NOT_FOUND');
});

test('stat, update and walk (with an async callback) go through the metastore', async (t) => {
  const { sn, ms } = setup(t);
  await layer(sn, ms, 'l1', '', {});
  await sn.prepare('a', 'l1', { x: '1' });
  const info = await sn.stat('a');
  assert.equal(info.parent, 'l1');
  assert.equal(info.kind, 'active');
  assert.deepEqual(info.labels, { x: '1' });
  assert.deepEqual((await sn.update({ ...info, labels: { y: '2' } }, ['labels.y'])).labels, {
    x: '1',
    y: '2',
  });
  const seen: string[] = [];
  await sn.walk(async (i) => {
    await new Promise((r) => setImmediate(r));
    seen.push(`${i.name}:${i.kind}`);
  }, []);
  assert.deepEqual(seen, ['a:active', 'l1:committed']);
  seen.length = 0;
  await sn.walk((i) => void seen.push(i.name), ['labels.y==2', 'kind==committed']);
  assert.deepEqual(seen, ['a', 'l1']);
});

test('a new child fs gets the owner of its parent fs (containerd chowns it)', async (t) => {
  if (!needRoot(t, 'chown of a snapshot directory')) return;
  const { sn, ms } = setup(t);
  const p = await layer(sn, ms, 'l1', '', {});
  chownSync(sn.upperPath(p), 1234, 5678);
  await sn.prepare('a', 'l1', {});
  const st = statSync(sn.upperPath(ms.getInfo('a').id));
  assert.deepEqual([st.uid, st.gid], [1234, 5678]);
  await sn.prepare('b', '', {});
  assert.equal(statSync(sn.upperPath(ms.getInfo('b').id)).uid, process.getuid?.());
});

test('remove: asynchronous by default (Cleanup deletes the directory), synchronous with syncRemove', async (t) => {
  const a = setup(t);
  await a.sn.prepare('k', '', {});
  const id = a.ms.getInfo('k').id;
  writeFileSync(join(a.sn.upperPath(id), 'f'), 'data');
  await a.sn.remove('k');
  assert.equal(await codeOf(a.sn.stat('k')), 'ERR_NOT_FOUND');
  assert.ok(existsSync(a.sn.snapshotDir(id)));
  await a.sn.cleanup();
  assert.deepEqual(snapshotNames(a.root), []);
  // The key can be used again at once, with a new id.
  await a.sn.prepare('k', '', {});
  assert.ok(Number(a.ms.getInfo('k').id) > Number(id));

  const s = setup(t, { syncRemove: true });
  await layer(s.sn, s.ms, 'l1', '', { f: 'x' });
  await s.sn.prepare('k', 'l1', {});
  const sid = s.ms.getInfo('k').id;
  mkdirSync(join(s.sn.upperPath(sid), 'deep/er'), { recursive: true });
  writeFileSync(join(s.sn.upperPath(sid), 'deep/er/f'), 'x');
  await s.sn.remove('k');
  assert.equal(existsSync(s.sn.snapshotDir(sid)), false);
  assert.deepEqual(snapshotNames(s.root), [s.ms.getInfo('l1').id]);
  await s.sn.remove('l1');
  assert.deepEqual(snapshotNames(s.root), []);
  assert.deepEqual(s.warnings, []);
});

test('cleanup removes every directory no snapshot owns, keeps live ones, and never follows symlinks out of root', async (t) => {
  const { sn, ms, root, warnings } = setup(t);
  const outside = mkdtempSync(join(tmpdir(), 'overlay-outside-'));
  t.after(() => rmSync(outside, { recursive: true, force: true }));
  writeFileSync(join(outside, 'precious'), 'keep me');

  const live = await layer(sn, ms, 'l1', '', { f: 'x' });
  await sn.prepare('a', 'l1', {});
  const snaps = join(root, 'snapshots');
  // Leftovers of every kind: an old id, a crashed create, a crashed removal, junk, links.
  mkdirSync(join(snaps, '999/fs/sub'), { recursive: true });
  symlinkSync(outside, join(snaps, '999/fs/sub/escape'));
  symlinkSync(join(outside, 'precious'), join(snaps, '999/fs/file-link'));
  mkdirSync(join(snaps, 'new-abc123/fs'), { recursive: true });
  mkdirSync(join(snaps, 'rm-5.aaaaaa/fs'), { recursive: true });
  writeFileSync(join(snaps, 'junk-file'), 'x');
  symlinkSync(outside, join(snaps, 'evil'));
  // A read-only directory inside (a non-root owner could not delete its entries otherwise).
  mkdirSync(join(snaps, '998/fs/ro'), { recursive: true });
  writeFileSync(join(snaps, '998/fs/ro/f'), 'x');
  execFileSync('chmod', ['0555', join(snaps, '998/fs/ro')]);

  await sn.cleanup();
  assert.deepEqual(warnings, []);
  assert.deepEqual(snapshotNames(root), [live, ms.getInfo('a').id].sort());
  assert.equal(readFileSync(join(outside, 'precious'), 'utf8'), 'keep me');
  assert.equal(readFileSync(join(sn.upperPath(live), 'f'), 'utf8'), 'x');
  assert.ok(statSync(sn.workPath(ms.getInfo('a').id)).isDirectory());
});

test('a stale snapshots/<id> left by a crash between rename and commit is moved aside, not reused', async (t) => {
  const { sn, ms, root } = setup(t);
  await sn.prepare('a', '', {});
  const next = String(Number(ms.getInfo('a').id) + 1);
  mkdirSync(join(root, 'snapshots', next, 'fs', 'junk'), { recursive: true });
  await sn.prepare('b', '', {});
  assert.equal(ms.getInfo('b').id, next);
  assert.deepEqual(readdirSync(sn.upperPath(next)), []);
  assert.ok(existsSync(sn.workPath(next)));
  assert.equal(snapshotNames(root).filter((n) => n.startsWith(`rm-${next}.`)).length, 1);
  await sn.cleanup();
  assert.deepEqual(snapshotNames(root), [ms.getInfo('a').id, next].sort());
});

// ---- real mounts (root) ----

/** Mount what the snapshotter returned at target with mount(8), as containerd would. */
function mountAll(mounts: Mount[], target: string): void {
  for (const m of mounts) {
    const args = m.type === 'bind' ? [] : ['-t', m.type];
    execFileSync('mount', [...args, '-o', m.options.join(','), m.source, target]);
  }
}

function isMounted(target: string): boolean {
  return mountPointsUnder(target).includes(target);
}

function umountAll(target: string): void {
  for (let i = 0; i < 8 && isMounted(target); i++) execFileSync('umount', [target]);
}

/** A mount point that is always unmounted when the test ends. */
function mountPoint(t: TestContext, base: string, name: string): string {
  const p = join(base, name);
  mkdirSync(p, { recursive: true });
  t.after(() => {
    for (let i = 0; i < 8 && isMounted(p); i++) {
      try {
        execFileSync('umount', ['-l', p]);
      } catch {
        break;
      }
    }
  });
  return p;
}

function writeFails(path: string): boolean {
  try {
    writeFileSync(path, 'x');
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EROFS';
  }
}

test('the returned mounts work: lower layers visible, writes land in the upper dir, views are read-only', async (t) => {
  if (!needRoot(t, 'mounting overlay and bind mounts')) return;
  const { sn, ms, root } = setup(t, { syncRemove: true });
  const mnts = join(root, '..', 'mnt');
  const m1 = mountPoint(t, mnts, 'm1');

  // Layer 1 written through its rw bind mount, layer 2 through a one-lower overlay.
  mountAll(await sn.prepare('l1-active', '', {}), m1);
  writeFileSync(join(m1, 'a.txt'), 'from l1');
  writeFileSync(join(m1, 'shadowed'), 'l1');
  umountAll(m1);
  await sn.commit('l1', 'l1-active', {});
  const l1 = ms.getInfo('l1').id;
  assert.equal(readFileSync(join(sn.upperPath(l1), 'a.txt'), 'utf8'), 'from l1');

  mountAll(await sn.prepare('l2-active', 'l1', {}), m1);
  assert.equal(readFileSync(join(m1, 'a.txt'), 'utf8'), 'from l1');
  writeFileSync(join(m1, 'b.txt'), 'from l2');
  writeFileSync(join(m1, 'shadowed'), 'l2');
  umountAll(m1);
  await sn.commit('l2', 'l2-active', {});
  const l2 = ms.getInfo('l2').id;
  assert.deepEqual(readdirSync(sn.upperPath(l2)).sort(), ['b.txt', 'shadowed']);

  // A container on top: both layers visible, nearest wins, writes and copy-ups go to its upper.
  const top = mountPoint(t, mnts, 'top');
  mountAll(await sn.prepare('top', 'l2', {}), top);
  const topId = ms.getInfo('top').id;
  assert.equal(readFileSync(join(top, 'a.txt'), 'utf8'), 'from l1');
  assert.equal(readFileSync(join(top, 'b.txt'), 'utf8'), 'from l2');
  assert.equal(readFileSync(join(top, 'shadowed'), 'utf8'), 'l2');
  writeFileSync(join(top, 'c.txt'), 'from top');
  writeFileSync(join(top, 'a.txt'), 'changed');
  assert.equal(readFileSync(join(sn.upperPath(topId), 'c.txt'), 'utf8'), 'from top');
  assert.equal(readFileSync(join(sn.upperPath(topId), 'a.txt'), 'utf8'), 'changed');
  assert.equal(readFileSync(join(sn.upperPath(l1), 'a.txt'), 'utf8'), 'from l1');
  // Usage of the active counts its upper dir only, like the reference.
  assert.deepEqual(await sn.usage('top'), findUsage(sn.upperPath(topId)));
  umountAll(top);

  // A view of two layers: read-only overlay; a view of one: read-only bind.
  const v2 = mountPoint(t, mnts, 'v2');
  mountAll(await sn.view('v2', 'l2', {}), v2);
  assert.equal(readFileSync(join(v2, 'a.txt'), 'utf8'), 'from l1');
  assert.equal(readFileSync(join(v2, 'b.txt'), 'utf8'), 'from l2');
  assert.ok(writeFails(join(v2, 'new')), 'the multi-layer view is read-only');
  umountAll(v2);
  const v1 = mountPoint(t, mnts, 'v1');
  mountAll(await sn.view('v1', 'l1', {}), v1);
  assert.equal(readFileSync(join(v1, 'a.txt'), 'utf8'), 'from l1');
  assert.ok(writeFails(join(v1, 'new')), 'the single-layer view is read-only');
  umountAll(v1);

  // Volatile is accepted by the kernel and shows in the mount's options.
  const vol = mountPoint(t, mnts, 'vol');
  mountAll(await sn.prepare('vol', 'l2', { [VOLATILE_LABEL]: 'true' }), vol);
  const line = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .find((l) => l.split(' ')[4] === vol);
  assert.match(line ?? '', /\bvolatile\b/);
  writeFileSync(join(vol, 'v.txt'), 'v');
  umountAll(vol);

  for (const k of ['vol', 'v1', 'v2', 'top', 'l2', 'l1']) await sn.remove(k);
  assert.deepEqual(snapshotNames(root), []);
});

test('directories with something mounted below them are never deleted; after the unmount they are', async (t) => {
  if (!needRoot(t, 'bind mounts inside snapshot directories')) return;
  const { sn, ms, root, warnings } = setup(t, { syncRemove: true });
  const precious = mkdtempSync(join(tmpdir(), 'overlay-precious-'));
  t.after(() => rmSync(precious, { recursive: true, force: true }));
  writeFileSync(join(precious, 'data'), 'keep');

  await sn.prepare('a', '', {});
  const id = ms.getInfo('a').id;
  const mnt = mountPoint(t, sn.snapshotDir(id), 'mnt');
  execFileSync('mount', ['--bind', precious, mnt]);

  // Remove succeeds (the metadata is gone), the directory stays and a warning says why.
  await sn.remove('a');
  assert.equal(await codeOf(sn.stat('a')), 'ERR_NOT_FOUND');
  assert.equal(readFileSync(join(precious, 'data'), 'utf8'), 'keep');
  assert.ok(existsSync(join(sn.snapshotDir(id), 'mnt', 'data')));
  assert.match(warnings.join('\n'), /has mounts at or below it/);
  await sn.cleanup();
  assert.equal(readFileSync(join(precious, 'data'), 'utf8'), 'keep');
  assert.deepEqual(snapshotNames(root), [id]);

  umountAll(mnt);
  await sn.cleanup();
  assert.deepEqual(snapshotNames(root), []);
  assert.equal(readFileSync(join(precious, 'data'), 'utf8'), 'keep');
  assert.ok(lstatSync(precious).isDirectory());
});
