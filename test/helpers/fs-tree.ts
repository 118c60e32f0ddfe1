import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chownSync,
  linkSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { getAttributeSync, listAttributesSync, setAttributeSync } from '@napi-rs/xattr';

export { IS_ROOT } from './env.js';
import { IS_ROOT } from './env.js';

/** One path's facts, everything a filesystem round trip must preserve. */
export interface PathFacts {
  type: string;
  mode: string;
  uid: number;
  gid: number;
  size: number;
  mtime: string;
  nlink: number;
  rdev: string;
  target?: string;
  xattrs: Record<string, string>;
  sha256?: string;
  /** For regular files with nlink > 1: the smallest path of its hardlink group. */
  linkGroup?: string;
}

const TYPES: [number, string][] = [
  [0o140000, 'socket'],
  [0o120000, 'symlink'],
  [0o100000, 'file'],
  [0o060000, 'block'],
  [0o040000, 'dir'],
  [0o020000, 'char'],
  [0o010000, 'fifo'],
];

/** Xattr names kept by builds (rafs-format.md 7). */
const KEPT = /^(user\.|security\.|trusted\.|system\.posix_acl_(access|default)$)/;

/**
 * Snapshot a directory tree: path (hex of the raw bytes, so non-UTF-8 names compare exactly)
 * -> facts. The root's own entry is recorded as "" unless `skipRoot`.
 */
export function snapshot(
  root: string,
  opts: { skipRoot?: boolean; skipSockets?: boolean; mtimes?: boolean } = {},
): Map<string, PathFacts> {
  const out = new Map<string, PathFacts>();
  const inodes = new Map<bigint, string>();
  const walk = (rel: Buffer): void => {
    const p = Buffer.concat([Buffer.from(root), rel]);
    const st = lstatSync(p, { bigint: true });
    const mode = Number(st.mode);
    const type = TYPES.find(([m]) => (mode & 0o170000) === m)?.[1] ?? 'unknown';
    const key = rel.toString('hex');
    if (!(type === 'socket' && opts.skipSockets === true) && !(rel.length === 0 && opts.skipRoot === true)) {
      const facts: PathFacts = {
        type,
        mode: (mode & 0o7777).toString(8),
        uid: Number(st.uid),
        gid: Number(st.gid),
        size: type === 'file' || type === 'symlink' ? Number(st.size) : 0,
        mtime: opts.mtimes === false ? '' : `${st.mtimeNs}`,
        nlink: type === 'dir' ? 0 : Number(st.nlink),
        rdev: type === 'char' || type === 'block' ? `${st.rdev}` : '0',
        xattrs: {},
      };
      if (type === 'symlink')
        facts.target = (readlinkSync(p, { encoding: 'buffer' }) as Buffer).toString('hex');
      if (type === 'file') facts.sha256 = createHash('sha256').update(readFileSync(p)).digest('hex');
      // The xattr binding takes string paths: names that are not UTF-8 are generated without xattrs.
      const ps = p.toString();
      if (type !== 'symlink' && Buffer.from(ps).equals(p)) {
        for (const name of listAttributesSync(ps)) {
          if (!KEPT.test(name)) continue;
          facts.xattrs[name] = (getAttributeSync(ps, name) ?? Buffer.alloc(0)).toString('hex');
        }
      }
      if (type === 'file' && st.nlink > 1n) {
        const first = inodes.get(st.ino);
        if (first === undefined) inodes.set(st.ino, key);
        facts.linkGroup = first ?? key;
      }
      out.set(key, facts);
    }
    if (type === 'dir') {
      const names = (readdirSync(p, { encoding: 'buffer' }) as Buffer[]).sort((x, y) => Buffer.compare(x, y));
      for (const n of names) walk(Buffer.concat([rel, Buffer.from('/'), n]));
    }
  };
  walk(Buffer.alloc(0));
  return out;
}

/** A readable list of differences between two snapshots (empty when equal). */
export function diffSnapshots(a: Map<string, PathFacts>, b: Map<string, PathFacts>, limit = 20): string[] {
  const out: string[] = [];
  const show = (k: string): string => Buffer.from(k, 'hex').toString();
  for (const [k, fa] of a) {
    const fb = b.get(k);
    if (fb === undefined) out.push(`missing ${show(k)}`);
    else if (JSON.stringify(fa) !== JSON.stringify(fb))
      out.push(`${show(k)}: ${JSON.stringify(fa)} != ${JSON.stringify(fb)}`);
    if (out.length >= limit) return out;
  }
  for (const k of b.keys()) if (!a.has(k)) out.push(`extra ${show(k)}`);
  return out.slice(0, limit);
}

function touch(p: string | Buffer, iso: string): void {
  execFileSync('touch', ['-h', '-d', iso, p.toString()]);
}

/**
 * Generate a tree with every kind of entry the issue lists. Device nodes, odd owners and
 * trusted/security xattrs need root; callers skip (or fail under CI) without it.
 */
export async function makeEveryEntryTree(dir: string, opts: { bigDir?: number } = {}): Promise<void> {
  const j = (...p: string[]): string => join(dir, ...p);
  mkdirSync(j('a', 'b', 'c'), { recursive: true });
  writeFileSync(j('empty'), '');
  const big = Buffer.alloc(3 * 1024 * 1024 + 12345);
  for (let i = 0; i < big.length; i += 4096) big.writeUInt32LE((i * 2654435761) >>> 0, i);
  writeFileSync(j('a', 'large'), big);
  writeFileSync(j('a', 'text'), 'hello nydus\n'.repeat(5000));
  // holes: a sparse file with data at both ends
  execFileSync('truncate', ['-s', '5M', j('sparse')]);
  execFileSync('dd', [
    'if=/dev/urandom',
    `of=${j('sparse')}`,
    'bs=1000',
    'count=3',
    'conv=notrunc',
    'status=none',
  ]);
  execFileSync('dd', [
    'if=/dev/urandom',
    `of=${j('sparse')}`,
    'bs=1000',
    'count=2',
    'seek=5000',
    'conv=notrunc',
    'status=none',
  ]);
  symlinkSync('a/text', j('sym-file'));
  symlinkSync('a/b', j('sym-dir'));
  symlinkSync('/does/not/exist', j('sym-dangling'));
  symlinkSync('t'.repeat(3000), j('sym-long'));
  linkSync(j('a', 'text'), j('a', 'b', 'hardlink'));
  linkSync(j('a', 'text'), j('hardlink2'));
  execFileSync('mkfifo', [j('fifo')]);
  await new Promise<void>((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(j('socket'), () => {
      // close the server but keep the socket node: unref and forget it
      srv.unref();
      resolve();
    });
  });
  writeFileSync(j('setuid'), 'x');
  execFileSync('chmod', ['4755', j('setuid')]);
  writeFileSync(j('setgid'), 'y');
  execFileSync('chmod', ['2751', j('setgid')]);
  mkdirSync(j('sticky'));
  execFileSync('chmod', ['1777', j('sticky')]);
  const weird = Buffer.concat([
    Buffer.from(dir),
    Buffer.from('/bad-'),
    Buffer.from([0xff, 0xfe, 0x80]),
    Buffer.from('.bin'),
  ]);
  writeFileSync(weird, 'not utf-8 name');
  writeFileSync(j('n'.repeat(255)), '255');
  let deep = j('deep');
  for (let i = 0; i < 40; i++) deep = join(deep, `level-${i}`);
  mkdirSync(deep, { recursive: true });
  writeFileSync(join(deep, 'bottom'), 'deep');
  const wide = j('wide');
  mkdirSync(wide);
  for (let i = 0; i < (opts.bigDir ?? 10000); i++)
    writeFileSync(join(wide, `entry-${i.toString().padStart(5, '0')}`), i % 7 === 0 ? `${i}` : '');
  setAttributeSync(j('a', 'text'), 'user.note', 'a note');
  setAttributeSync(j('a'), 'user.dir', Buffer.from([0, 1, 2, 255]));
  if (IS_ROOT) {
    execFileSync('mknod', [j('char'), 'c', '1', '3']);
    execFileSync('mknod', [j('block'), 'b', '259', '70000']);
    chownSync(j('a', 'large'), 123456, 654321);
    chownSync(j('setgid'), 1000, 50);
    execFileSync('chown', ['-h', '4242:4343', j('sym-file')]);
    setAttributeSync(
      j('setuid'),
      'security.capability',
      Buffer.from('0100000200200000000000000000000000000000', 'hex'),
    );
    setAttributeSync(j('a', 'large'), 'trusted.t', 'trusted value');
  }
  for (const [p, t] of [
    [j('a', 'text'), '2021-02-03 04:05:06.123456789'],
    [j('empty'), '1999-12-31 23:59:59.999999999'],
    [j('sym-file'), '2010-01-01 00:00:00.5'],
    [j('a', 'b', 'c'), '2005-05-05 05:05:05.000000005'],
  ] as const) {
    touch(p, t);
  }
  utimesSync(j('fifo'), 1234567890, 1234567890);
}
