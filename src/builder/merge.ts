import { NydusError } from '../errors/errors.js';
import { isDir, isReg } from '../format/flags.js';
import type { BlobInfo, Bootstrap } from '../format/model.js';
import type { Logger } from '../log/logger.js';
import { resolvePrefetch } from './build.js';
import { mergeTrees } from './merge-tree.js';
import { treeFromBootstrap, type BuildInode, type BuildTree } from './tree.js';
import { writeV5Bootstrap } from './v5-writer.js';
import { writeV6Bootstrap } from './v6-writer.js';

export interface MergeOptions {
  /** Per source layer: replaces the ids of that layer's own blob(s) (`--blob-digests`). */
  blobDigests?: readonly string[];
  /** Per source layer: blob sizes to record (`--blob-sizes`). */
  blobSizes?: readonly number[];
  /** Per source layer: ToC digests and sizes to record (`--blob-toc-digests`, `--blob-toc-sizes`). */
  blobTocDigests?: readonly string[];
  blobTocSizes?: readonly number[];
  prefetchPatterns: readonly string[];
  log: Logger;
}

/** Thrown when the layers cannot form one filesystem (exit code 2 upstream). */
export class InconsistentFilesystemError extends NydusError {
  constructor(message: string) {
    super('ERR_INVALID_ARG', message);
    this.name = 'InconsistentFilesystemError';
  }
}

function regularFiles(tree: BuildTree): Set<BuildInode> {
  const out = new Set<BuildInode>();
  const stack = [tree.root];
  while (stack.length > 0) {
    const d = stack.pop()!;
    for (const e of d.children ?? []) {
      if (isReg(e.inode.mode)) out.add(e.inode);
      else if (isDir(e.inode.mode)) stack.push(e.inode);
    }
  }
  return out;
}

/**
 * `nydus-image merge`: overlay per-layer bootstraps (bottom first) into one bootstrap, applying
 * OCI whiteouts, with one blob table for all layers (blobs deduplicated by id, unreferenced ones
 * dropped). Returns the bootstrap bytes.
 */
export function mergeBootstraps(layers: readonly Bootstrap[], o: MergeOptions): Buffer {
  if (layers.length === 0)
    throw new NydusError('ERR_INVALID_ARG', 'merge needs at least one source bootstrap');
  const first = layers[0]!.superblock;
  const table: BlobInfo[] = [];
  const byId = new Map<string, number>();
  const trees: BuildTree[] = [];
  layers.forEach((b, li) => {
    const sb = b.superblock;
    if (sb.version !== first.version)
      throw new InconsistentFilesystemError(
        `Layer ${li} is RAFS v${sb.version}, layer 0 is v${first.version}`,
      );
    if (sb.chunkSize !== first.chunkSize)
      throw new InconsistentFilesystemError(
        `Layer ${li} has chunk size 0x${sb.chunkSize.toString(16)}, layer 0 0x${first.chunkSize.toString(16)}`,
      );
    if (sb.digester !== first.digester)
      throw new InconsistentFilesystemError(
        `Layer ${li} uses digester ${sb.digester}, layer 0 ${first.digester}`,
      );
    if (first.version === 5 && sb.compressor !== first.compressor) {
      throw new InconsistentFilesystemError(
        `RAFS v5 layers must share one compressor: layer ${li} uses ${sb.compressor}, layer 0 ${first.compressor}`,
      );
    }
    // A layer's own blob is the last of its table (earlier entries come from its parents/dicts).
    const own = b.blobs.length - 1;
    const remap = b.blobs.map((blob, i) => {
      let info: BlobInfo = blob;
      if (i === own) {
        const id = o.blobDigests?.[li];
        if (id !== undefined) info = { ...info, blobId: id.replace(/^sha256:/, '') };
        const size = o.blobSizes?.[li];
        if (size !== undefined) info = { ...info, compressedSize: size };
        const tocDigest = o.blobTocDigests?.[li];
        if (tocDigest !== undefined)
          info = { ...info, tocDigest: Buffer.from(tocDigest.replace(/^sha256:/, ''), 'hex') };
        const tocSize = o.blobTocSizes?.[li];
        if (tocSize !== undefined) info = { ...info, tocSize };
      }
      const known = byId.get(info.blobId);
      if (known !== undefined) return known;
      const at = table.push({ ...info, index: table.length }) - 1;
      byId.set(info.blobId, at);
      return at;
    });
    const tree = treeFromBootstrap(b, li);
    for (const f of regularFiles(tree))
      f.chunks = (f.chunks ?? []).map((c) => ({ ...c, blobIndex: remap[c.blobIndex]! }));
    trees.push(tree);
  });
  const tree = mergeTrees(trees, 'oci');
  // Drop blobs no chunk of the merged tree references.
  const used = new Set<number>();
  const files = regularFiles(tree);
  for (const f of files) for (const c of f.chunks ?? []) used.add(c.blobIndex);
  const finalIndex = new Map<number, number>();
  const blobs: BlobInfo[] = [];
  for (const b of table)
    if (used.has(b.index)) finalIndex.set(b.index, blobs.push({ ...b, index: blobs.length }) - 1);
  for (const f of files)
    f.chunks = (f.chunks ?? []).map((c) => ({ ...c, blobIndex: finalIndex.get(c.blobIndex)! }));
  const top = layers[layers.length - 1]!.superblock;
  const spec = {
    tree,
    chunkSize: first.chunkSize,
    compressor: top.compressor,
    digester: first.digester,
    explicitUidGid: layers.some((l) => l.superblock.explicitUidGid),
    blobs,
    prefetch: resolvePrefetch(tree, o.prefetchPatterns, o.log),
  };
  return first.version === 6 ? writeV6Bootstrap(spec) : writeV5Bootstrap(spec);
}
