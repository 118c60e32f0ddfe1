import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Errno, InitFlag, S_IFDIR, S_IFREG } from '../../src/fuse/abi.js';
import { toFuseAttr, type AttrSource } from '../../src/fuse/attr.js';
import { FuseError } from '../../src/fuse/errors.js';
import { FuseSession, isMountPoint, type FuseHandler } from '../../src/fuse/session.js';
import type { EntryOut } from '../../src/fuse/replies.js';
import { IN_CI } from '../helpers/fixtures.js';
import { needRoot } from '../helpers/env.js';

/**
 * The session against the real kernel, in process: every command on the mount runs as a child
 * process (this thread serves the mount and must never touch it itself).
 */

const WAIT_MS = 15_000;

function attr(ino: number, mode: number, size: number): AttrSource {
  return {
    ino,
    mode,
    uid: 0,
    gid: 0,
    size,
    blocks: 0,
    nlink: 1,
    rdev: 0,
    mtime: 1_700_000_000,
    mtimeNsec: 0,
  };
}

const DATA = Buffer.from('slow but fine\n');
const NODES = new Map<bigint, { name: string; attr: AttrSource }>([
  [1n, { name: '', attr: attr(1, S_IFDIR | 0o755, 0) }],
  [2n, { name: 'ok', attr: attr(2, S_IFREG | 0o644, DATA.length) }],
  [3n, { name: 'boom', attr: attr(3, S_IFREG | 0o644, 10) }],
  [4n, { name: 'slow', attr: attr(4, S_IFREG | 0o644, DATA.length) }],
]);

function entry(id: bigint): EntryOut {
  const n = NODES.get(id)!;
  return {
    nodeid: id,
    generation: 0n,
    entryValid: 60,
    entryValidNsec: 0,
    attrValid: 60,
    attrValidNsec: 0,
    attr: toFuseAttr(n.attr),
  };
}

const handler: FuseHandler = {
  init: () => ({ want: InitFlag.ASYNC_READ | InitFlag.MAX_PAGES | InitFlag.NO_OPENDIR_SUPPORT }),
  lookup: (req) => {
    const id = [...NODES].find(([, n]) => n.name === req.name.toString())?.[0];
    if (id === undefined || id === 1n) throw new FuseError('ERR_NOT_FOUND', 'no', Errno.ENOENT);
    return entry(id);
  },
  getattr: (req) => ({ attrValid: 60, attrValidNsec: 0, attr: entry(req.nodeid).attr }),
  open: () => ({ fh: 0n, openFlags: 0, backingId: 0 }),
  read: async (req) => {
    if (req.nodeid === 3n) throw new Error('handler bug');
    if (req.nodeid === 4n) await new Promise((r) => setTimeout(r, 1500));
    return DATA.subarray(req.offset, req.offset + req.size);
  },
};

function run(cmd: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: WAIT_MS }, (err, stdout, stderr) =>
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr }),
    );
  });
}

test(
  'FuseSession: a failing handler answers EIO for its request only, a slow one blocks nobody, writes are EROFS, stop unmounts',
  { timeout: 4 * WAIT_MS },
  async (t) => {
    if (!needRoot(t, 'mounting a FUSE file system')) return;
    if (!existsSync('/dev/fuse')) {
      if (IN_CI) throw new Error('/dev/fuse is missing; under CI=true this is a failure');
      t.skip('/dev/fuse is missing');
      return;
    }
    const dir = mkdtempSync(join(tmpdir(), 'nydus-session-'));
    const mnt = join(dir, 'mnt');
    mkdirSync(mnt);
    let s: FuseSession | undefined;
    try {
      s = await FuseSession.mount(mnt, handler, { threads: 3, subtype: 'nydustest' });
      await assert.rejects(FuseSession.mount(mnt, handler), /busy/);
      const slow = run('cat', [join(mnt, 'slow')]);
      const started = Date.now();
      const ok = await run('cat', [join(mnt, 'ok')]);
      assert.equal(ok.stdout, DATA.toString());
      assert.ok(Date.now() - started < 1200, 'a fast read does not wait for a slow one');
      const boom = await run('cat', [join(mnt, 'boom')]);
      assert.match(boom.stderr, /Input\/output error/);
      assert.equal((await slow).stdout, DATA.toString());
      const touch = await run('touch', [join(mnt, 'new')]);
      assert.match(touch.stderr, /Read-only file system/);
      await s.stop();
      assert.equal(isMountPoint(mnt), false);
      await s.done;
    } finally {
      if (isMountPoint(mnt)) spawnSync('umount', ['-l', mnt], { timeout: WAIT_MS });
      rmSync(dir, { recursive: true, force: true });
    }
  },
);

test('FuseSession.mount refuses a missing mountpoint and a file with one clear message', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'nydus-session-'));
  try {
    await assert.rejects(FuseSession.mount(join(dir, 'nope'), handler), /Mountpoint ".*nope" does not exist/);
    await assert.rejects(
      FuseSession.mount(dir + '/../' + dir.split('/').pop() + '/x', handler),
      /does not exist/,
    );
    const file = join(dir, 'file');
    writeFileSync(file, 'x');
    await assert.rejects(FuseSession.mount(file, handler), /Mountpoint ".*file" is not a directory/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
