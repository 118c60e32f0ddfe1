import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { mountAt } from '../../src/fuse/session.js';
import { localfsConfigText } from './api.js';
import { IN_CI } from './fixtures.js';
import { needRoot } from './env.js';
import { binPath, runBin } from './run-bin.js';

/**
 * Running the real nydusd in tests: start it, wait for its mount, stop it, and clean up so no
 * mount or daemon is ever left behind. Every wait is bounded.
 */

export const WAIT_MS = 15_000;
const execFileP = promisify(execFile);

export function mounted(mnt: string): boolean {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[4] === mnt);
}

export function canFuse(t: TestContext): boolean {
  if (!needRoot(t, 'mounting a FUSE file system')) return false;
  if (existsSync('/dev/fuse')) return true;
  const why = '/dev/fuse is missing';
  if (IN_CI) throw new Error(`${why}; under CI=true this is a failure`);
  process.stderr.write(`\n*** SKIPPED: ${why} ***\n`);
  t.skip(why);
  return false;
}

export interface Daemon {
  child: ChildProcess;
  mnt: string;
  stderr: () => string;
  exited: Promise<number | null>;
}

/** Start nydusd and wait until its mount appears (or it exits, or the wait runs out). */
export async function startDaemon(mnt: string, args: string[]): Promise<Daemon> {
  const child = spawn(process.execPath, [binPath('nydusd'), ...args, '--mountpoint', mnt], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  let code: number | null | undefined;
  const exited = new Promise<number | null>((resolve) =>
    child.on('exit', (c) => {
      code = c;
      resolve(c);
    }),
  );
  const d: Daemon = { child, mnt, stderr: () => stderr, exited };
  const deadline = Date.now() + WAIT_MS;
  while (!mounted(mnt)) {
    if (code !== undefined) throw new Error(`nydusd exited with ${code} before mounting: ${stderr}`);
    if (Date.now() > deadline) throw new Error(`nydusd did not mount within ${WAIT_MS} ms: ${stderr}`);
    await sleep(20);
  }
  return d;
}

/** SIGTERM, then the daemon must exit 0 with the mount gone. */
export async function stopDaemon(d: Daemon): Promise<void> {
  d.child.kill('SIGTERM');
  const code = await Promise.race([d.exited, sleep(WAIT_MS).then(() => 'hung' as const)]);
  assert.equal(code, 0, `nydusd after SIGTERM: ${String(code)}: ${d.stderr()}`);
  assert.equal(mounted(d.mnt), false, 'the mount is gone after SIGTERM');
}

/** Last resort in `finally`: never leave a mount or a daemon behind. */
export function cleanup(d: Daemon | undefined, mnt: string): void {
  if (mounted(mnt)) spawnSync('umount', ['-l', mnt], { timeout: WAIT_MS });
  if (d !== undefined && d.child.exitCode === null && d.child.signalCode === null) d.child.kill('SIGKILL');
}

export async function sh(cmd: string, args: string[], cwd?: string): Promise<string> {
  const r = await execFileP(cmd, args, { timeout: WAIT_MS * 4, maxBuffer: 64 << 20, ...(cwd && { cwd }) });
  return r.stdout;
}

/** `find M -type f -exec md5sum {} + | sort`, with the mount path stripped. */
export async function md5sUnder(mnt: string): Promise<[string, string][]> {
  const out = await sh('find', ['.', '-type', 'f', '-exec', 'md5sum', '{}', '+'], mnt);
  return out
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => [l.slice(0, 32), l.slice(34).replace(/^\./, '')] as [string, string])
    .sort((a, b) => (a[0] + a[1] < b[0] + b[1] ? -1 : 1));
}

export function tmp(): { dir: string; mnt: string } {
  const dir = mkdtempSync(join(tmpdir(), 'nydusd-'));
  const mnt = join(dir, 'mnt');
  mkdirSync(mnt);
  return { dir, mnt };
}

/** A localfs v1 config file in `dir` (the text `localfsConfigText` makes). */
export function v1Config(dir: string, blobDir: string, extra: Record<string, unknown> = {}): string {
  const p = join(dir, 'config.json');
  writeFileSync(p, localfsConfigText(blobDir, extra));
  return p;
}

/** `nydus-image create -B boot -D blobDir [extra] src`, which must succeed. */
export async function createImage(
  src: string,
  boot: string,
  blobDir: string,
  extra: string[] = [],
): Promise<void> {
  const r = await runBin(
    'nydus-image',
    ['create', '--log-level', 'warn', '-B', boot, '-D', blobDir, ...extra, src],
    {
      timeoutMs: 180_000,
    },
  );
  assert.equal(r.code, 0, r.stderr);
}

/** `find . -type f | sort | xargs md5sum` under `dir` (one reader). */
export function md5All(dir: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = spawn('sh', ['-c', 'find . -type f -print0 | sort -z | xargs -0 md5sum'], { cwd: dir });
    let out = '';
    let err = '';
    c.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    c.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    const timer = setTimeout(() => c.kill('SIGKILL'), WAIT_MS * 8);
    c.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`md5sum in ${dir} exited ${code}: ${err}`));
    });
  });
}

/** The kernel read-ahead of the mount at `mnt` in KiB: its bdi's read_ahead_kb. */
export function mountReadAheadKb(mnt: string): number {
  const at = mountAt(realpathSync(mnt));
  assert.ok(at !== undefined, `no mount at ${mnt}`);
  return Number(readFileSync(`/sys/class/bdi/${at.major}:${at.minor}/read_ahead_kb`, 'utf8').trim());
}
