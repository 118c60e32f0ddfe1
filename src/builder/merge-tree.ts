import { NydusError } from '../errors/errors.js';
import { isDir } from '../format/flags.js';
import { compareNames, sortEntries, type BuildEntry, type BuildInode, type BuildTree } from './tree.js';
import { isOverlayOpaqueDir, markerOf, xattrsWithoutOpaque, type WhiteoutSpec } from './whiteout.js';

/**
 * Layering: put one tree on top of another with the semantics of the kernel's overlayfs and of
 * the OCI image spec (rafs-format.md 2.11, whiteout.ts). In every upper directory:
 *
 * 1. removal markers drop the same-named lower entry, an opaque directory drops all lower
 *    children;
 * 2. the remaining upper entries replace same-named lower entries: a directory over a directory
 *    merges recursively and takes the upper attributes, anything else replaces outright (an upper
 *    non-directory hides a lower directory and vice versa);
 * 3. markers never reach the result, and the overlayfs opaque xattr is stripped.
 *
 * Sharing: the result owns a fresh inode for every directory that an upper layer touched; lower
 * subtrees the upper does not touch, and all non-directory inodes, are shared with the inputs
 * (so hardlinks within a layer stay one inode). Neither input is modified.
 */
export function applyLayer(lower: BuildTree, upper: BuildTree, spec: WhiteoutSpec): BuildTree {
  return { root: overlay(lower.root, upper.root, spec) };
}

/**
 * All layers of an image, bottom first, merged into one tree. The bottom layer is put on an empty
 * tree with the same rules, so its own markers are dropped (they have nothing to remove) and its
 * overlayfs opaque xattrs are stripped, as the kernel shows a single-layer overlay; upstream's
 * `merge` keeps the bottom's markers as ordinary entries instead (rafs-format.md 2.11), which only
 * matters for a bottom layer that carries markers, and the kernel view is what an image promises.
 * The root takes the attributes of the topmost layer.
 */
export function mergeTrees(layers: readonly BuildTree[], spec: WhiteoutSpec): BuildTree {
  if (layers.length === 0) throw new NydusError('ERR_INVALID_ARG', 'Cannot merge zero layers');
  let root = overlay(undefined, layers[0]!.root, spec);
  for (let i = 1; i < layers.length; i++) root = overlay(root, layers[i]!.root, spec);
  return { root };
}

interface Task {
  /** Lower directory at this path, absent when the upper directory is new (or replaces a non-dir). */
  lower: BuildInode | undefined;
  upper: BuildInode;
  /** The result directory, whose children this task fills in. */
  out: BuildInode;
}

function overlay(lower: BuildInode | undefined, upper: BuildInode, spec: WhiteoutSpec): BuildInode {
  if (!isDir(upper.mode))
    throw new NydusError('ERR_INVALID_ARG', 'Cannot apply a layer whose root is not a directory');
  if (lower !== undefined && !isDir(lower.mode))
    throw new NydusError('ERR_INVALID_ARG', 'Cannot apply a layer onto a tree whose root is not a directory');
  const root = copyDir(upper, spec);
  // An explicit stack: trees can be deeper than the JavaScript call stack.
  const stack: Task[] = [{ lower, upper, out: root }];
  while (stack.length > 0) {
    const { lower: l, upper: u, out } = stack.pop()!;
    let opaque = isOverlayOpaqueDir(u, spec);
    const removed = new Set<string>();
    const kept: BuildEntry[] = [];
    for (const e of u.children ?? []) {
      const m = markerOf(e, spec);
      if (m === undefined) kept.push(e);
      else if (m.kind === 'opaque') opaque = true;
      else removed.add(key(m.target));
    }
    const lowerKids =
      l === undefined || opaque ? [] : (l.children ?? []).filter((e) => !removed.has(key(e.name)));
    const upperKids = sortEntries(kept);
    const merged: BuildEntry[] = [];
    let i = 0;
    let j = 0;
    while (i < lowerKids.length || j < upperKids.length) {
      const le = lowerKids[i];
      const ue = upperKids[j];
      const c = le === undefined ? 1 : ue === undefined ? -1 : compareNames(le.name, ue.name);
      if (c < 0) {
        merged.push(le!);
        i++;
        continue;
      }
      const lowerHere = c === 0 ? le!.inode : undefined;
      if (c === 0) i++;
      j++;
      if (!isDir(ue!.inode.mode)) {
        merged.push(ue!);
        continue;
      }
      const child = copyDir(ue!.inode, spec);
      merged.push({ name: ue!.name, inode: child });
      stack.push({
        lower: lowerHere !== undefined && isDir(lowerHere.mode) ? lowerHere : undefined,
        upper: ue!.inode,
        out: child,
      });
    }
    out.children = merged;
  }
  return root;
}

/** A fresh directory inode with the upper attributes; its children are filled in later. */
function copyDir(upper: BuildInode, spec: WhiteoutSpec): BuildInode {
  return { ...upper, xattrs: xattrsWithoutOpaque(upper, spec), children: [] };
}

/** Names as map keys: latin1 maps every byte to one code unit, so distinct names stay distinct. */
function key(name: Buffer): string {
  return name.toString('latin1');
}
