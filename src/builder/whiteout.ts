import { NydusError } from '../errors/errors.js';
import { isDir, S_IFCHR, S_IFMT } from '../format/flags.js';
import type { BuildEntry, BuildInode } from './tree.js';

/**
 * Whiteouts: how a layer says "this name from the layers below is gone" (rafs-format.md 2.11).
 * RAFS has no on-disk whiteout; the builder interprets the markers when it puts a layer on top of
 * another and never writes them out.
 *
 * | spec        | removal of NAME                   | opaque directory (drop all lower children) |
 * |-------------|-----------------------------------|--------------------------------------------|
 * | `oci`       | an entry named `.wh.NAME`         | an entry `.wh..wh..opq` inside it          |
 * | `overlayfs` | a char device 0/0 named NAME      | xattr `trusted.overlay.opaque` = `y`       |
 * | `none`      | nothing is interpreted            | nothing is interpreted                     |
 *
 * Markers apply only to the layers below: a marker and an entry of the same name in the same
 * layer means "replace", so removals are processed before the layer's own entries. Under `oci`
 * every name starting with `.wh.` is a marker (the spec reserves the prefix), whatever its type.
 */
export type WhiteoutSpec = 'oci' | 'overlayfs' | 'none';

export const WHITEOUT_SPECS: readonly WhiteoutSpec[] = ['oci', 'overlayfs', 'none'];

export const OCI_WHITEOUT_PREFIX = Buffer.from('.wh.');
export const OCI_OPAQUE_NAME = Buffer.from('.wh..wh..opq');
export const OVERLAY_OPAQUE_XATTR = Buffer.from('trusted.overlay.opaque');
/** The only value of the opaque xattr that makes a directory opaque (as the kernel reads it). */
export const OVERLAY_OPAQUE_VALUE = Buffer.from('y');

/** What a marker entry asks for; the marker itself never reaches a built image. */
export type WhiteoutMarker = { kind: 'removal'; target: Buffer } | { kind: 'opaque' };

export function parseWhiteoutSpec(s: string): WhiteoutSpec {
  const v = s.toLowerCase();
  if ((WHITEOUT_SPECS as readonly string[]).includes(v)) return v as WhiteoutSpec;
  throw new NydusError(
    'ERR_INVALID_ARG',
    `Invalid whiteout spec "${s}": expected one of ${WHITEOUT_SPECS.join(', ')}`,
  );
}

/** An overlayfs whiteout: a character device with device number 0/0. */
export function isOverlayWhiteoutInode(inode: BuildInode): boolean {
  return (inode.mode & S_IFMT) === S_IFCHR && inode.rdev === 0;
}

/** Whether a directory entry is a marker under `spec` (see the table above), and what it asks. */
export function markerOf(entry: BuildEntry, spec: WhiteoutSpec): WhiteoutMarker | undefined {
  return markerOfNode(entry.name, entry.inode.mode, entry.inode.rdev, spec);
}

/** `markerOf` from the raw facts, for sources that have not built an inode yet. */
export function markerOfNode(
  name: Buffer,
  mode: number,
  rdev: number,
  spec: WhiteoutSpec,
): WhiteoutMarker | undefined {
  switch (spec) {
    case 'oci':
      if (name.equals(OCI_OPAQUE_NAME)) return { kind: 'opaque' };
      if (startsWith(name, OCI_WHITEOUT_PREFIX))
        return { kind: 'removal', target: name.subarray(OCI_WHITEOUT_PREFIX.length) };
      return undefined;
    case 'overlayfs':
      return (mode & S_IFMT) === S_IFCHR && rdev === 0 ? { kind: 'removal', target: name } : undefined;
    case 'none':
      return undefined;
  }
}

export function isMarker(entry: BuildEntry, spec: WhiteoutSpec): boolean {
  return markerOf(entry, spec) !== undefined;
}

/** An overlayfs-opaque directory: xattr `trusted.overlay.opaque` with the value `y`. */
export function isOverlayOpaqueDir(inode: BuildInode, spec: WhiteoutSpec): boolean {
  if (spec !== 'overlayfs' || !isDir(inode.mode)) return false;
  return inode.xattrs.some(
    (x) => x.name.equals(OVERLAY_OPAQUE_XATTR) && x.value.equals(OVERLAY_OPAQUE_VALUE),
  );
}

/**
 * The xattrs of a directory with the overlayfs opaque marker removed (the same array when it has
 * none). Only the marker form (`y`) is stripped: any other value is ordinary data.
 */
export function xattrsWithoutOpaque(inode: BuildInode, spec: WhiteoutSpec): BuildInode['xattrs'] {
  if (!isOverlayOpaqueDir(inode, spec)) return inode.xattrs;
  return inode.xattrs.filter((x) => !x.name.equals(OVERLAY_OPAQUE_XATTR));
}

function startsWith(name: Buffer, prefix: Buffer): boolean {
  return name.length >= prefix.length && name.subarray(0, prefix.length).equals(prefix);
}
