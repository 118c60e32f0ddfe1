import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { commonParent, compactData, mountFlags, parseMountArgs } from '../../src/cli/nydus-overlayfs.js';
import { needRoot } from '../helpers/env.js';
import { IN_CI } from '../helpers/fixtures.js';
import { binPath, runBin } from '../helpers/run-bin.js';

/**
 * nydus-overlayfs: argument checks and option handling as functions, usage and errors through
 * the binary, and real kernel overlay mounts made by the binary, directly and through
 * `mount -t fuse.nydus-overlayfs` (mount(8) -> mount.fuse -> nydus-overlayfs on PATH).
 */

const MS_RDONLY = 0x1;
const MS_NOSUID = 0x2;
const MS_NODEV = 0x4;
const MS_NOEXEC = 0x8;
const MS_NOATIME = 0x400;
const MS_BIND = 0x1000;
const MS_REC = 0x4000;
const MS_RELATIME = 0x200000;

const EXTRA = `extraoption=${Buffer.from(JSON.stringify({ source: '/x', config: '{}', snapshotdir: '/s', fs_version: 'v6' })).toString('base64')}`;
const KATA = `io.katacontainers.volume=${Buffer.from('{"volume_type":"image_guest_pull"}').toString('base64')}`;

interface MountEntry {
  /** Per-mount options (ro/rw, nosuid, nodev, noexec, atime flags). */
  opts: string[];
  fstype: string;
  source: string;
  /** Superblock options (overlay's lowerdir, upperdir, ...). */
  superOpts: string[];
}

function mountEntry(target: string): MountEntry | undefined {
  let found: MountEntry | undefined;
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const f = line.split(' ');
    if (f[4] !== target) continue;
    const dash = f.indexOf('-');
    found = {
      opts: f[5]!.split(','),
      fstype: f[dash + 1]!,
      source: f[dash + 2]!,
      superOpts: (f[dash + 3] ?? '').split(','),
    };
  }
  return found;
}

/** lower (a file), upper, work and a target under a temp dir; everything unmounted and removed after. */
function overlayDirs(
  t: TestContext,
  name = 'ovl',
): { dir: string; lower: string; upper: string; work: string; target: string } {
  const dir = mkdtempSync(join(tmpdir(), `nydus-${name}-`));
  const d = {
    dir,
    lower: join(dir, 'lower'),
    upper: join(dir, 'upper'),
    work: join(dir, 'work'),
    target: join(dir, 'target'),
  };
  for (const p of [d.lower, d.upper, d.work, d.target]) mkdirSync(p);
  writeFileSync(join(d.lower, 'from-lower'), 'lower data\n');
  t.after(() => {
    for (let i = 0; i < 5 && mountEntry(d.target) !== undefined; i++)
      spawnSync('umount', ['-l', d.target], { stdio: 'ignore' });
    rmSync(dir, { recursive: true, force: true });
  });
  return d;
}

// ---------------------------------------------------------------------------------------------
// Functions

test('parseMountArgs: four arguments, overlay, a target, -o, and options left after dropping Nydus and Kata ones', () => {
  assert.deepEqual(parseMountArgs(['overlay', '/t', '-o', `lowerdir=/a,${EXTRA},${KATA},ro`]), {
    fsType: 'overlay',
    target: '/t',
    options: ['lowerdir=/a', 'ro'],
  });
  const bad: [string[], RegExp][] = [
    [['overlay', '/t', '-o'], /Expected 4 arguments, got 3/],
    [['ext4', '/t', '-o', 'lowerdir=/a'], /Invalid filesystem type "ext4"/],
    [['overlay', '', '-o', 'lowerdir=/a'], /Empty mount target/],
    [['overlay', '/t', '-x', 'lowerdir=/a'], /Expected "-o" before the options, got "-x"/],
    [['overlay', '/t', '-o', ''], /No mount options left/],
    [['overlay', '/t', '-o', `${EXTRA},${KATA}`], /No mount options left/],
    [['overlay', '/t', '-o', ',,'], /No mount options left/],
  ];
  for (const [args, re] of bad) {
    assert.throws(
      () => parseMountArgs(args),
      (e: unknown) => (e as { code?: string }).code === 'ERR_INVALID_ARG' && re.test((e as Error).message),
      args.join(' '),
    );
  }
});

test('mountFlags: words that ask for a flag set it, words that ask for the default set nothing, the rest is data', () => {
  assert.deepEqual(mountFlags(['lowerdir=/a:/b', 'upperdir=/u', 'workdir=/w', 'index=off']), {
    flags: 0,
    data: 'lowerdir=/a:/b,upperdir=/u,workdir=/w,index=off',
  });
  assert.deepEqual(mountFlags(['ro', 'nosuid', 'nodev', 'noexec', 'noatime', 'relatime', 'lowerdir=/a']), {
    flags: MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_RELATIME,
    data: 'lowerdir=/a',
  });
  assert.equal(mountFlags(['rbind']).flags, MS_BIND | MS_REC);
  // Not upstream's quirk: rw, dev and suid (mount.fuse appends dev,suid) leave the mount writable,
  // with devices and setuid.
  const defaults = ['rw', 'dev', 'suid', 'exec', 'async', 'atime', 'diratime', 'nomand', 'norelatime'];
  assert.deepEqual(mountFlags([...defaults, 'nostrictatime', 'defaults', 'lowerdir=/a']), {
    flags: 0,
    data: 'lowerdir=/a',
  });
  assert.equal(mountFlags(['rw', 'ro']).flags, MS_RDONLY);
});

test('compactData: long data is rewritten relative to the common parent of lowerdir, upperdir and workdir', () => {
  assert.equal(
    commonParent(['/s/snapshots/1/fs', '/s/snapshots/2/fs', '/s/snapshots/3/work']),
    '/s/snapshots',
  );
  assert.equal(commonParent(['/s/a/fs', '/s/a']), '/s');
  assert.equal(commonParent(['/a/x', '/b/y']), '/');

  const root = '/var/lib/containerd/io.containerd.snapshotter.v1.nydus/snapshots';
  const lowers = Array.from({ length: 60 }, (_, i) => `${root}/${1000 + i}/fs`);
  const data = `lowerdir=${lowers.join(':')},upperdir=${root}/2000/fs,workdir=${root}/2000/work,index=off`;
  assert.ok(data.length >= 4096 - 512);
  assert.equal(compactData(data.slice(0, 100), 4096), undefined, 'short data stays as it is');
  const c = compactData(data, 4096);
  assert.ok(c !== undefined);
  assert.equal(c.cwd, root);
  assert.equal(
    c.data,
    `lowerdir=${lowers.map((_, i) => `${1000 + i}/fs`).join(':')},upperdir=2000/fs,workdir=2000/work,index=off`,
  );
  assert.ok(c.data.length < 4096 - 512);
  // Nothing shared but '/': nothing to gain.
  assert.equal(compactData(`lowerdir=/a/${'x'.repeat(3700)},upperdir=/b/u,workdir=/b/w`, 4096), undefined);
});

// ---------------------------------------------------------------------------------------------
// The binary: usage and errors

test('nydus-overlayfs: a wrong argument count prints the usage and exits 1', async () => {
  for (const args of [
    [],
    ['overlay'],
    ['overlay', '/t', '-o'],
    ['overlay', '/t', '-o', 'lowerdir=/a', 'extra'],
  ]) {
    const r = await runBin('nydus-overlayfs', args);
    assert.equal(r.code, 1, args.join(' '));
    assert.match(r.stderr, /^Usage: nydus-overlayfs overlay <target> -o <options>/);
    assert.equal(r.stdout, '');
  }
  const help = await runBin('nydus-overlayfs', ['--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^Usage: nydus-overlayfs/);
  assert.ok(readFileSync(binPath('nydus-overlayfs'), 'utf8').startsWith('#!/usr/bin/env node\n'));
});

test('nydus-overlayfs: bad arguments fail with one error line and exit 1', async () => {
  const cases: [string[], RegExp][] = [
    [
      ['ext4', '/t', '-o', 'lowerdir=/a'],
      /^nydus-overlayfs: error: Invalid filesystem type "ext4", only "overlay" is supported\n$/,
    ],
    [['overlay', '', '-o', 'lowerdir=/a'], /^nydus-overlayfs: error: Empty mount target\n$/],
    [
      ['overlay', '/t', '-o', `${EXTRA},${KATA}`],
      /^nydus-overlayfs: error: No mount options left after dropping/,
    ],
  ];
  for (const [args, re] of cases) {
    const r = await runBin('nydus-overlayfs', args);
    assert.equal(r.code, 1, args.join(' '));
    assert.match(r.stderr, re);
    assert.equal(r.stderr.split('\n').length, 2, 'exactly one line');
  }
});

// ---------------------------------------------------------------------------------------------
// Real mounts

test('nydus-overlayfs mounts a writable overlay without the Nydus and Kata options; dev,suid add no flag', async (t) => {
  if (!needRoot(t, 'mounting an overlay')) return;
  const d = overlayDirs(t);
  const r = await runBin('nydus-overlayfs', [
    'overlay',
    d.target,
    '-o',
    `lowerdir=${d.lower},upperdir=${d.upper},workdir=${d.work},${EXTRA},${KATA},dev,suid`,
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr, '');
  const m = mountEntry(d.target);
  assert.ok(m !== undefined, 'mounted');
  assert.equal(m.fstype, 'overlay');
  assert.equal(m.source, 'overlay');
  assert.ok(m.opts.includes('rw'), m.opts.join(','));
  assert.ok(!m.opts.includes('nosuid') && !m.opts.includes('nodev'), m.opts.join(','));
  assert.ok(m.superOpts.includes(`lowerdir=${d.lower}`), m.superOpts.join(','));
  assert.ok(m.superOpts.includes(`upperdir=${d.upper}`), m.superOpts.join(','));
  assert.ok(!m.superOpts.some((o) => o.startsWith('extraoption') || o.startsWith('io.katacontainers')));
  assert.equal(readFileSync(join(d.target, 'from-lower'), 'utf8'), 'lower data\n');
  writeFileSync(join(d.target, 'written'), 'upper data\n');
  assert.equal(readFileSync(join(d.upper, 'written'), 'utf8'), 'upper data\n');
});

test('nydus-overlayfs mounts a read-only overlay of two lower dirs with ro,nosuid,nodev,noexec', async (t) => {
  if (!needRoot(t, 'mounting an overlay')) return;
  const d = overlayDirs(t);
  const lower2 = join(d.dir, 'lower2');
  mkdirSync(lower2);
  writeFileSync(join(lower2, 'from-lower'), 'shadowing data\n');
  writeFileSync(join(lower2, 'only-in-lower2'), 'two\n');
  const r = await runBin('nydus-overlayfs', [
    'overlay',
    d.target,
    '-o',
    `${EXTRA},lowerdir=${lower2}:${d.lower},ro,nosuid,nodev,noexec`,
  ]);
  assert.equal(r.code, 0, r.stderr);
  const m = mountEntry(d.target);
  assert.ok(m !== undefined, 'mounted');
  for (const o of ['ro', 'nosuid', 'nodev', 'noexec'])
    assert.ok(m.opts.includes(o), `${o} in ${m.opts.join(',')}`);
  assert.ok(m.superOpts.includes(`lowerdir=${lower2}:${d.lower}`), m.superOpts.join(','));
  assert.equal(readFileSync(join(d.target, 'from-lower'), 'utf8'), 'shadowing data\n');
  assert.equal(readFileSync(join(d.target, 'only-in-lower2'), 'utf8'), 'two\n');
  assert.throws(() => writeFileSync(join(d.target, 'x'), 'x'), /EROFS/);
});

test('nydus-overlayfs: a mount the kernel refuses fails with one error line naming the errno', async (t) => {
  if (!needRoot(t, 'mounting an overlay')) return;
  const d = overlayDirs(t);
  const r = await runBin('nydus-overlayfs', [
    'overlay',
    d.target,
    '-o',
    `lowerdir=${join(d.dir, 'missing')}`,
  ]);
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /^nydus-overlayfs: error: Mounting overlay on ".*" failed: ENOENT \(No such file or directory\)\n$/,
  );
  assert.equal(mountEntry(d.target), undefined);
});

test('nydus-overlayfs: with many long lower dirs the data goes relative to their common parent and the mount works', async (t) => {
  if (!needRoot(t, 'mounting an overlay')) return;
  const d = overlayDirs(t, 'ovl-long');
  const snapshots = join(d.dir, 'io.containerd.snapshotter.v1.nydus', 'snapshots');
  const lowers: string[] = [];
  for (let i = 0; i < 40; i++) {
    const fs = join(snapshots, `${100000 + i}`, 'fs', 'some-longer-directory-name');
    mkdirSync(fs, { recursive: true });
    writeFileSync(join(fs, `layer-${i}`), `${i}\n`);
    lowers.unshift(fs);
  }
  const upper = join(snapshots, '200000', 'fs');
  const work = join(snapshots, '200000', 'work');
  mkdirSync(upper, { recursive: true });
  mkdirSync(work, { recursive: true });
  const data = `lowerdir=${lowers.join(':')},upperdir=${upper},workdir=${work}`;
  assert.ok(data.length >= 4096, `absolute data (${data.length} bytes) does not fit a page`);
  const r = await runBin('nydus-overlayfs', ['overlay', d.target, '-o', `${data},${EXTRA}`]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(mountEntry(d.target)?.fstype, 'overlay');
  assert.equal(readFileSync(join(d.target, 'layer-0'), 'utf8'), '0\n');
  assert.equal(readFileSync(join(d.target, 'layer-39'), 'utf8'), '39\n');
  writeFileSync(join(d.target, 'new'), 'n\n');
  assert.ok(existsSync(join(upper, 'new')));
});

/**
 * How the helper is reached. containerd (1.6, mount/mount_linux.go) runs
 * `mount.fuse <source> <target> -o <opt1> -o <opt2> ... -t nydus-overlayfs` for a mount of type
 * `fuse.nydus-overlayfs`, found on its own PATH; mount.fuse joins the options, appends
 * `dev,suid` (unless nodev/nosuid were given) and runs
 * `/bin/sh -c "'nydus-overlayfs' '<source>' '<target>' '-o' '<options>'"`, so the shell finds
 * nydus-overlayfs on the PATH containerd's shim has. mount(8) (util-linux 2.38) looks for
 * /sbin/mount.fuse.nydus-overlayfs, then /sbin/mount.fuse (its search path is fixed:
 * /sbin:/sbin/fs.d:/sbin/fs), and removes PATH from the helper's environment, so under mount(8)
 * the shell uses its default path (dash: /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:
 * /sbin:/bin) and the helper has to be installed in one of those directories.
 */
function mountFuse(t: TestContext): string | undefined {
  for (const d of ['/sbin', '/sbin/fs.d', '/sbin/fs']) {
    if (existsSync(join(d, 'mount.fuse'))) return join(d, 'mount.fuse');
  }
  const why = 'mount.fuse is not installed in /sbin (apt-get install fuse3)';
  if (IN_CI) throw new Error(`${why}; under CI=true this is a failure`);
  process.stderr.write(`\n*** SKIPPED: ${why} ***\n`);
  t.skip(why);
  return undefined;
}

/** A `nydus-overlayfs` wrapper at `path` that records its arguments in `argsFile` and runs our binary. */
function writeWrapper(path: string, argsFile: string, flag: 'w' | 'wx' = 'w'): void {
  writeFileSync(
    path,
    `#!/bin/sh\nprintf '%s\\n' "$@" > '${argsFile}'\nexec '${process.execPath}' '${binPath('nydus-overlayfs')}' "$@"\n`,
    { flag, mode: 0o755 },
  );
  chmodSync(path, 0o755);
}

function readArgs(argsFile: string): string[] {
  return readFileSync(argsFile, 'utf8').trimEnd().split('\n');
}

test('mount.fuse -t fuse.nydus-overlayfs (as containerd runs it) finds nydus-overlayfs on PATH; its dev,suid add no flag', (t) => {
  if (!needRoot(t, 'mounting an overlay')) return;
  const helper = mountFuse(t);
  if (helper === undefined) return;
  const d = overlayDirs(t, 'ovl-fuse');
  const bin = join(d.dir, 'bin');
  mkdirSync(bin);
  const argsFile = join(d.dir, 'args');
  writeWrapper(join(bin, 'nydus-overlayfs'), argsFile);
  const env = { ...process.env, PATH: `${bin}:${process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin'}` };
  const optList = [`lowerdir=${d.lower}`, `upperdir=${d.upper}`, `workdir=${d.work}`, EXTRA];
  const opts = optList.join(',');
  // Each option in its own -o, the type without its fuse. prefix: as containerd calls it.
  const r = spawnSync(
    helper,
    ['overlay', d.target, ...optList.flatMap((o) => ['-o', o]), '-t', 'nydus-overlayfs'],
    { encoding: 'utf8', env, timeout: 20_000 },
  );
  assert.equal(r.status, 0, `${r.stderr}${r.stdout}`);
  const passed = readArgs(argsFile);
  assert.deepEqual(passed, ['overlay', d.target, '-o', `${opts},dev,suid`]);
  const m = mountEntry(d.target);
  assert.ok(m !== undefined, 'mounted');
  assert.equal(m.fstype, 'overlay');
  // Upstream's quirk would make this nodev,nosuid.
  assert.ok(
    m.opts.includes('rw') && !m.opts.includes('nosuid') && !m.opts.includes('nodev'),
    m.opts.join(','),
  );
  assert.equal(readFileSync(join(d.target, 'from-lower'), 'utf8'), 'lower data\n');
  execFileSync('umount', [d.target]);

  // With nodev,nosuid asked for, mount.fuse appends nothing and the mount has both (a single
  // -o and the full type name work too).
  const r2 = spawnSync(
    helper,
    ['overlay', d.target, '-o', `${opts},nodev,nosuid`, '-t', 'fuse.nydus-overlayfs'],
    {
      encoding: 'utf8',
      env,
      timeout: 20_000,
    },
  );
  assert.equal(r2.status, 0, r2.stderr);
  assert.deepEqual(readArgs(argsFile), ['overlay', d.target, '-o', `${opts},nodev,nosuid`]);
  const m2 = mountEntry(d.target);
  assert.ok(m2?.opts.includes('nodev') && m2.opts.includes('nosuid'), m2?.opts.join(','));
});

test('mount -t fuse.nydus-overlayfs: mount(8) runs mount.fuse without PATH; the helper is found in the shell default path', (t) => {
  if (!needRoot(t, 'mount(8) of an overlay')) return;
  if (mountFuse(t) === undefined) return;
  const d = overlayDirs(t, 'ovl-mount8');
  const argsFile = join(d.dir, 'args');
  const opts = `lowerdir=${d.lower},upperdir=${d.upper},workdir=${d.work},${EXTRA}`;
  const mount = (): ReturnType<typeof spawnSync> =>
    spawnSync('mount', ['-t', 'fuse.nydus-overlayfs', 'overlay', d.target, '-o', opts], {
      encoding: 'utf8',
      timeout: 20_000,
    });

  // On PATH only: mount(8) drops PATH, so the shell does not find it there.
  const bin = join(d.dir, 'bin');
  mkdirSync(bin);
  writeWrapper(join(bin, 'nydus-overlayfs'), argsFile);
  const installed = '/usr/local/sbin/nydus-overlayfs';
  const preinstalled = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'].some(
    (dir) => existsSync(join(dir, 'nydus-overlayfs')),
  );
  if (!preinstalled) {
    const r0 = spawnSync('mount', ['-t', 'fuse.nydus-overlayfs', 'overlay', d.target, '-o', opts], {
      encoding: 'utf8',
      env: { ...process.env, PATH: `${bin}:${process.env['PATH'] ?? ''}` },
      timeout: 20_000,
    });
    assert.notEqual(r0.status, 0);
    assert.match(r0.stderr, /nydus-overlayfs: not found/);
    assert.equal(mountEntry(d.target), undefined);
  }

  // In /usr/local/sbin (first in the shell's default path) for the length of this test only.
  if (existsSync(installed)) {
    const why = `${installed} exists already; mount(8) would run it instead of this build`;
    process.stderr.write(`\n*** SKIPPED: ${why} ***\n`);
    t.skip(why);
    return;
  }
  mkdirSync('/usr/local/sbin', { recursive: true });
  writeWrapper(installed, argsFile, 'wx');
  t.after(() => rmSync(installed, { force: true }));
  const r = mount();
  rmSync(installed, { force: true });
  assert.equal(r.status, 0, `${String(r.stderr)}${String(r.stdout)}`);
  // mount(8) adds rw first, mount.fuse adds dev,suid last.
  assert.deepEqual(readArgs(argsFile), ['overlay', d.target, '-o', `rw,${opts},dev,suid`]);
  const m = mountEntry(d.target);
  assert.ok(m !== undefined, 'mounted');
  assert.equal(m.fstype, 'overlay');
  assert.ok(
    m.opts.includes('rw') && !m.opts.includes('nosuid') && !m.opts.includes('nodev'),
    m.opts.join(','),
  );
  assert.equal(readFileSync(join(d.target, 'from-lower'), 'utf8'), 'lower data\n');
});
