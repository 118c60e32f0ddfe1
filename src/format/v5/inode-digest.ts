import type { Digester } from '../../codec/algorithms.js';
import { digest } from '../../codec/digest.js';
import { S_IFDIR, S_IFLNK, S_IFMT, S_IFREG } from '../flags.js';

/**
 * The v5 inode digest, a Merkle tree over the file system (rafs-format.md 6.2), with H the
 * image's digester:
 *
 * - regular file: H(chunk id 0 ‖ chunk id 1 ‖ ...), chunk ids in file order (empty file: H(""))
 * - symlink: H(target bytes)
 * - directory: H(digest of child 0 ‖ ...), children in index order, every hardlink occurrence
 *   included (empty directory: H(""))
 * - any other type: H("")
 *
 * `parts` are those inputs for the type given by `mode`: the 32-byte chunk ids of a regular
 * file, the single target of a symlink, the 32-byte child digests of a directory. They are
 * ignored for other types.
 */
export function v5InodeDigest(algo: Digester, mode: number, parts: readonly Uint8Array[]): Buffer {
  switch (mode & S_IFMT) {
    case S_IFREG:
    case S_IFLNK:
    case S_IFDIR:
      return digest(algo, ...parts);
    default:
      return digest(algo);
  }
}
