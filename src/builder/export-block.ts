import { open } from 'node:fs/promises';
import { NydusError } from '../errors/errors.js';
import type { RafsImage } from '../rafs/image.js';

/**
 * `nydus-image export --block`: a raw EROFS disk image of a RAFS v6 filesystem with its data.
 * The bootstrap is EROFS metadata already; its device table gives each blob a place in one flat
 * block address space (`mapped_blkaddr`, rafs-format.md 3.4). Writing every blob's uncompressed
 * data at that place makes a single file the kernel mounts with `mount -t erofs -o loop` (it
 * reads extra devices from their mapped addresses when no `device=` option is given).
 * Returns the image size.
 */
export async function exportBlock(
  image: RafsImage,
  bootstrap: Buffer,
  output: string,
  onProgress?: (bytes: number) => void,
): Promise<number> {
  const b = image.bootstrap;
  if (b.superblock.version !== 6)
    throw new NydusError('ERR_INVALID_ARG', 'Only RAFS v6 images can be exported as block devices');
  let end = bootstrap.length;
  for (const blob of b.blobs) {
    if (blob.mappedBlkaddr === 0 && blob.uncompressedSize > 0) {
      throw new NydusError(
        'ERR_UNSUPPORTED',
        `Blob ${blob.blobId} has no mapped block address (an image from nydus-image 2.2.0 or older)`,
      );
    }
    const start = blob.mappedBlkaddr * 4096;
    if (start < end)
      throw new NydusError(
        'ERR_FORMAT',
        `Blob ${blob.blobId} is mapped at ${start}, overlapping data before it (${end})`,
      );
    end = start + blob.uncompressedSize;
  }
  const fh = await open(output, 'w');
  let written = 0;
  try {
    await fh.write(bootstrap, 0, bootstrap.length, 0);
    // Every distinct chunk is written once at its place in its blob's uncompressed space.
    const done = new Set<string>();
    for (const c of b.allChunks()) {
      const key = `${c.blobIndex}:${c.uncompressedOffset}`;
      if (done.has(key)) continue;
      done.add(key);
      const blob = b.blobs[c.blobIndex];
      if (blob === undefined)
        throw new NydusError('ERR_FORMAT', `Chunk refers to missing blob ${c.blobIndex}`);
      const data = await image.readChunk(c, { verify: true });
      await fh.write(data, 0, data.length, blob.mappedBlkaddr * 4096 + c.uncompressedOffset);
      written += data.length;
      onProgress?.(written);
    }
    await fh.truncate(end);
  } finally {
    await fh.close();
  }
  return end;
}
