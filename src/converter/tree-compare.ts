import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { getAttributeSync, listAttributesSync } from '@napi-rs/xattr';
import { errorText } from '../errors/errors.js';

/**
 * What `nydusify check`'s filesystem rule compares of every path of two trees: type and mode,
 * owner, size (not of directories), device number, link target, xattrs and a sha256 of the data
 * of regular files.
 */
export interface NodeFacts {
  mode: number;
  uid: number;
  gid: number;
  size: number | undefined;
  rdev: number;
  link: string | undefined;
  xattrs: Record<string, string>;
  sha256: string | undefined;
}

const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;
const S_IFBLK = 0o060000;

async function fileHash(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(path, { highWaterMark: 1 << 20 })) h.update(c as Buffer);
  return h.digest('hex');
}

function xattrsOf(path: string): Record<string, string> {
  const out: Record<string, string> = {};
  let names: string[];
  try {
    names = listAttributesSync(path);
  } catch {
    return out;
  }
  for (const n of names.sort()) {
    const v = getAttributeSync(path, n);
    if (v !== null) out[n] = Buffer.from(v).toString('base64');
  }
  return out;
}

/** The facts of one path (never following a symlink). */
export async function factsOf(path: string): Promise<NodeFacts> {
  const st = await lstat(path);
  const type = st.mode & S_IFMT;
  return {
    mode: st.mode,
    uid: st.uid,
    gid: st.gid,
    size: type === S_IFDIR ? undefined : st.size,
    rdev: type === S_IFCHR || type === S_IFBLK ? st.rdev : 0,
    link: type === S_IFLNK ? await readlink(path) : undefined,
    xattrs: xattrsOf(path),
    sha256: type === S_IFREG ? await fileHash(path) : undefined,
  };
}

/** Every path below `root` ("" for the root itself), sorted. */
export async function listTree(root: string): Promise<string[]> {
  const out: string[] = [''];
  const walk = async (rel: string): Promise<void> => {
    const names = (await readdir(rel === '' ? root : join(root, rel))).sort();
    for (const n of names) {
      const r = rel === '' ? n : `${rel}/${n}`;
      out.push(r);
      const st = await lstat(join(root, r));
      if (st.isDirectory()) await walk(r);
    }
  };
  await walk('');
  return out;
}

function describe(k: keyof NodeFacts, v: unknown): string {
  if (k === 'mode' && typeof v === 'number') return `0${v.toString(8)}`;
  return JSON.stringify(v);
}

/**
 * The differences between two trees, one line each (`/path: what differs`), capped at `max`
 * lines (a last line says how many more there were).
 */
export async function compareTrees(expected: string, actual: string, max = 200): Promise<string[]> {
  const diffs: string[] = [];
  let more = 0;
  const note = (s: string): void => {
    if (diffs.length < max) diffs.push(s);
    else more++;
  };
  const [want, have] = await Promise.all([listTree(expected), listTree(actual)]);
  const haveSet = new Set(have);
  const wantSet = new Set(want);
  for (const p of want) if (!haveSet.has(p)) note(`/${p}: missing in the Nydus image`);
  for (const p of have) if (!wantSet.has(p)) note(`/${p}: not in the source image`);
  for (const p of want) {
    if (!haveSet.has(p)) continue;
    let a: NodeFacts;
    let b: NodeFacts;
    try {
      [a, b] = await Promise.all([factsOf(join(expected, p)), factsOf(join(actual, p))]);
    } catch (e) {
      note(`/${p}: cannot be read: ${errorText(e)}`);
      continue;
    }
    // The root's own mode and owner come from the runtime's mountpoint, not from the layers.
    const keys: (keyof NodeFacts)[] =
      p === '' ? [] : ['mode', 'uid', 'gid', 'size', 'rdev', 'link', 'xattrs', 'sha256'];
    for (const k of keys) {
      const x = a[k];
      const y = b[k];
      if (JSON.stringify(x) !== JSON.stringify(y))
        note(`/${p}: ${k} differs: source ${describe(k, x)}, nydus ${describe(k, y)}`);
    }
  }
  if (more > 0) diffs.push(`... and ${more} more difference(s)`);
  return diffs;
}
