#!/usr/bin/env node
import { realpathSync } from 'node:fs';
import { createRequire } from 'node:module';
import { constants as osConstants } from 'node:os';
import { isAbsolute, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NydusError, errorText, isNydusError } from '../errors/errors.js';
import { buildInfo } from './common.js';

/**
 * `nydus-overlayfs`: the mount helper containerd reaches through mount.fuse when the
 * snapshotter hands out a mount of type `fuse.nydus-overlayfs` (mount.fuse runs
 * `nydus-overlayfs overlay <target> -o <options>`, found on PATH). It drops the options that
 * carry Nydus or Kata payloads (`extraoption=...`, `io.katacontainers.volume=...`), which only
 * a Kata runtime reads and the kernel would refuse, and mounts a plain kernel overlay with the
 * rest: known flag words become mount(2) flags, everything else is overlay data.
 *
 * Flag words. Upstream maps each positive word to the same flag as its negative form (`rw`
 * sets MS_RDONLY, `dev` MS_NODEV, `suid` MS_NOSUID, `exec` MS_NOEXEC, `atime` MS_NOATIME, ...),
 * and since mount.fuse appends `dev,suid` unless `nodev`/`nosuid` were given, every upstream
 * mount through mount.fuse ends up nodev,nosuid, and `rw` makes it read-only. We do not copy
 * that: a word that asks for a flag sets it (ro, nosuid, nodev, noexec, sync, mand, dirsync,
 * noatime, nodiratime, relatime, strictatime, bind, rbind, remount), and a word that asks for
 * the kernel's default (rw, suid, dev, exec, async, nomand, atime, diratime, norelatime,
 * nostrictatime, defaults) sets nothing and clears nothing. So `ro` and `rw` together mean
 * read-only in either order, where mount(8) lets the last word win; containerd sends one.
 *
 * Long data. The kernel copies at most one page of mount data. When the data is at least
 * page size - 512 bytes (many layers), the helper changes into the longest common parent
 * directory of lowerdir, upperdir and workdir and passes those paths relative to it (the
 * kernel resolves them against the caller's working directory), as containerd does itself.
 *
 * Failures print one line, `nydus-overlayfs: error: <message>`, on stderr and exit 1; a wrong
 * argument count prints the usage and exits 1.
 */

const BINARY = 'nydus-overlayfs';
const USAGE = `Usage: ${BINARY} overlay <target> -o <options>

Mount helper for containerd: mounts a kernel overlay at <target> with <options> (comma
separated), without the Nydus and Kata options (extraoption=..., io.katacontainers.volume=...).
containerd runs it through mount.fuse for mounts of type fuse.${BINARY}.
`;

/** Options carrying payloads for Kata runtimes, never for the kernel. */
const DROPPED_PREFIXES = ['extraoption=', 'io.katacontainers.volume='] as const;

// mount(2) flags (linux/mount.h).
const MS_RDONLY = 0x1;
const MS_NOSUID = 0x2;
const MS_NODEV = 0x4;
const MS_NOEXEC = 0x8;
const MS_SYNCHRONOUS = 0x10;
const MS_REMOUNT = 0x20;
const MS_MANDLOCK = 0x40;
const MS_DIRSYNC = 0x80;
const MS_NOATIME = 0x400;
const MS_NODIRATIME = 0x800;
const MS_BIND = 0x1000;
const MS_REC = 0x4000;
const MS_RELATIME = 0x200000;
const MS_STRICTATIME = 0x1000000;

/** Words that ask for a mount flag. */
const FLAG_WORDS: ReadonlyMap<string, number> = new Map([
  ['ro', MS_RDONLY],
  ['nosuid', MS_NOSUID],
  ['nodev', MS_NODEV],
  ['noexec', MS_NOEXEC],
  ['sync', MS_SYNCHRONOUS],
  ['remount', MS_REMOUNT],
  ['mand', MS_MANDLOCK],
  ['dirsync', MS_DIRSYNC],
  ['noatime', MS_NOATIME],
  ['nodiratime', MS_NODIRATIME],
  ['bind', MS_BIND],
  ['rbind', MS_BIND | MS_REC],
  ['relatime', MS_RELATIME],
  ['strictatime', MS_STRICTATIME],
]);

/** Words that ask for the default: recognized (so never passed as overlay data), no flag. */
const DEFAULT_WORDS: ReadonlySet<string> = new Set([
  'rw',
  'suid',
  'dev',
  'exec',
  'async',
  'nomand',
  'atime',
  'diratime',
  'norelatime',
  'nostrictatime',
  'defaults',
]);

/** Bytes kept free below the page size before the relative-path form is used. */
const DATA_SLACK = 512;

export interface MountRequest {
  fsType: 'overlay';
  target: string;
  /** Options left after the Nydus and Kata ones are dropped, in their order. */
  options: string[];
}

/**
 * Check the four arguments `overlay <target> -o <options>` and drop the Nydus and Kata options.
 * Throws ERR_INVALID_ARG for a wrong type, an empty target, a missing `-o` or no options left.
 */
export function parseMountArgs(args: readonly string[]): MountRequest {
  if (args.length !== 4) throw new NydusError('ERR_INVALID_ARG', `Expected 4 arguments, got ${args.length}`);
  const [fsType, target, flag, optionText] = args as [string, string, string, string];
  if (fsType !== 'overlay')
    throw new NydusError(
      'ERR_INVALID_ARG',
      `Invalid filesystem type "${fsType}", only "overlay" is supported`,
    );
  if (target === '') throw new NydusError('ERR_INVALID_ARG', 'Empty mount target');
  if (flag !== '-o')
    throw new NydusError('ERR_INVALID_ARG', `Expected "-o" before the options, got "${flag}"`);
  const options = optionText
    .split(',')
    .filter((o) => o !== '' && !DROPPED_PREFIXES.some((p) => o.startsWith(p)));
  if (options.length === 0)
    throw new NydusError(
      'ERR_INVALID_ARG',
      'No mount options left after dropping the Nydus and Kata options',
    );
  return { fsType, target, options };
}

/** Split options into mount(2) flags and the overlay data string (see the file comment). */
export function mountFlags(options: readonly string[]): { flags: number; data: string } {
  let flags = 0;
  const data: string[] = [];
  for (const o of options) {
    const f = FLAG_WORDS.get(o);
    if (f !== undefined) flags |= f;
    else if (!DEFAULT_WORDS.has(o)) data.push(o);
  }
  return { flags, data: data.join(',') };
}

/** Path keys of overlay data whose values may be rewritten relative to a common parent. */
const PATH_KEYS = ['lowerdir', 'upperdir', 'workdir'] as const;

/** The lowerdir list's separator; `\:` is an escaped colon inside one path. */
function splitLowerdirs(value: string): string[] {
  return value.split(/(?<!\\):/);
}

/** The deepest directory that is a proper parent of every path ('/' when there is none). */
export function commonParent(paths: readonly string[]): string {
  let common: string[] | undefined;
  for (const p of paths) {
    const parts = p.split(sep).filter((s) => s !== '');
    const parent = parts.slice(0, -1);
    if (common === undefined) common = parent;
    else {
      let n = 0;
      while (n < common.length && n < parent.length && common[n] === parent[n]) n++;
      common = common.slice(0, n);
    }
  }
  return `/${(common ?? []).join('/')}`;
}

/**
 * When `data` is at least page size - 512 bytes, the same data with lowerdir, upperdir and
 * workdir relative to their longest common parent, and that parent (the mount must be made
 * from it). Otherwise, or when the paths are not all absolute or share only '/', undefined.
 */
export function compactData(data: string, pageSize: number): { data: string; cwd: string } | undefined {
  if (data.length < pageSize - DATA_SLACK) return undefined;
  const parts = data.split(',');
  const paths: string[] = [];
  for (const part of parts) {
    const eq = part.indexOf('=');
    const key = part.slice(0, eq);
    if (eq < 0 || !(PATH_KEYS as readonly string[]).includes(key)) continue;
    const value = part.slice(eq + 1);
    paths.push(...(key === 'lowerdir' ? splitLowerdirs(value) : [value]));
  }
  if (paths.length === 0 || !paths.every((p) => isAbsolute(p))) return undefined;
  const cwd = commonParent(paths);
  if (cwd === '/') return undefined;
  const rel = (p: string): string => relative(cwd, p);
  const rewritten = parts.map((part) => {
    const eq = part.indexOf('=');
    const key = part.slice(0, eq);
    if (eq < 0 || !(PATH_KEYS as readonly string[]).includes(key)) return part;
    const value = part.slice(eq + 1);
    if (key === 'lowerdir') return `${key}=${splitLowerdirs(value).map(rel).join(':')}`;
    return `${key}=${rel(value)}`;
  });
  return { data: rewritten.join(','), cwd };
}

interface Libc {
  mount(source: string, target: string, fsType: string, flags: number, data: string | null): number;
  getpagesize(): number;
  strerror(errnum: number): string;
  errno(): number;
}

function libc(): Libc {
  const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
  const lib = koffi.load('libc.so.6');
  const mount = lib.func(
    'int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const char *data)',
  ) as Libc['mount'];
  const getpagesize = lib.func('int getpagesize()') as Libc['getpagesize'];
  const strerror = lib.func('const char *strerror(int)') as Libc['strerror'];
  return { mount, getpagesize, strerror, errno: () => koffi.errno() };
}

function errnoName(errno: number): string {
  for (const [name, value] of Object.entries(osConstants.errno)) if (value === errno) return name;
  return `errno ${errno}`;
}

/** Mount the overlay a request describes (see the file comment). */
export function mountOverlay(req: MountRequest): void {
  const c = libc();
  const { flags, data: fullData } = mountFlags(req.options);
  const pageSize = c.getpagesize();
  let data = fullData;
  const compact = compactData(fullData, pageSize);
  if (compact !== undefined) {
    try {
      process.chdir(compact.cwd);
    } catch (e) {
      throw new NydusError('ERR_IO', `Cannot change into "${compact.cwd}": ${errorText(e)}`, { cause: e });
    }
    data = compact.data;
  }
  if (Buffer.byteLength(data) >= pageSize)
    throw new NydusError(
      'ERR_INVALID_ARG',
      `The overlay mount data is ${Buffer.byteLength(data)} bytes, more than fits in one page (${pageSize})`,
    );
  if (c.mount(req.fsType, req.target, req.fsType, flags, data === '' ? null : data) !== 0) {
    const errno = c.errno();
    throw new NydusError(
      'ERR_IO',
      `Mounting overlay on "${req.target}" failed: ${errnoName(errno)} (${c.strerror(errno)})`,
    );
  }
}

/** The program: returns the exit code. */
export function main(args: readonly string[]): number {
  if (args.length === 1 && (args[0] === '--help' || args[0] === '-h')) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (args.length === 1 && (args[0] === '--version' || args[0] === '-V')) {
    process.stdout.write(`${buildInfo(BINARY)}\n`);
    return 0;
  }
  if (args.length !== 4) {
    process.stderr.write(USAGE);
    return 1;
  }
  try {
    mountOverlay(parseMountArgs(args));
    return 0;
  } catch (e) {
    const msg = isNydusError(e) ? e.message : errorText(e);
    process.stderr.write(`${BINARY}: error: ${msg}\n`);
    return 1;
  }
}

/** Run only as the program itself (a test may import the functions above). */
function isEntry(): boolean {
  const script = process.argv[1];
  if (script === undefined) return false;
  try {
    return realpathSync(script) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntry()) process.exitCode = main(process.argv.slice(2));
