import { createReadStream } from 'node:fs';
import { basename } from 'node:path';
import { createHash } from 'node:crypto';
import { errorText, FormatError, NydusError } from '../errors/errors.js';
import { detectRafsVersion, parseBootstrap } from '../format/bootstrap.js';
import { extractInlineBootstrap, isLikelyInlineMetaBlob } from '../format/blob/blob-layout.js';
import { BlobFeature } from '../format/flags.js';
import type { Bootstrap } from '../format/model.js';
import { FileBlobReader } from '../storage/localfs.js';
import { mapFile } from '../util/mmap.js';

/** Bootstraps larger than this are refused rather than read into memory. */
export const MAX_BOOTSTRAP_SIZE = 1 << 30;

export interface LoadedBootstrap {
  bootstrap: Bootstrap;
  /** Set when the file was a data blob with inline metadata: that blob's index, id and file. */
  inlineBlob?: { index: number; blobId: string; path: string };
  /** Whether the bootstrap's bytes are a mapping of the file (`LoadOptions.map`), not a copy in memory. */
  mapped?: boolean;
}

export interface LoadOptions {
  /**
   * Map a bootstrap file into memory (util/mmap.ts) instead of reading it, where that is
   * possible: only the pages used are then in memory, and they are the page cache's. For a
   * long-lived reader such as the daemon (upstream nydusd maps v6 bootstraps too). A data blob
   * with inline metadata is still read.
   */
  map?: boolean;
}

const HEX64 = /^[0-9a-f]{64}$/;

async function sha256OfFile(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/**
 * Load a bootstrap from a file that is either a RAFS bootstrap or a data blob with inline
 * metadata (`--blob-inline-meta`, as nydusify, buildkit and nerdctl produce). For the latter the
 * placeholder blob id inside is replaced by the blob's real id: its file name when that is a
 * sha256 hex digest, else the sha256 of the file.
 */
export async function loadBootstrapFile(path: string, opts: LoadOptions = {}): Promise<LoadedBootstrap> {
  let reader: FileBlobReader;
  try {
    reader = await FileBlobReader.open(path);
  } catch (e) {
    throw new NydusError('ERR_IO', `Cannot read bootstrap "${path}": ${errorText(e)}`, { cause: e });
  }
  try {
    const size = reader.size;
    if (size === 0) throw new FormatError(`File "${path}" is empty, not a RAFS bootstrap`);
    const head = await reader.read(0, Math.min(size, 2048));
    if (detectRafsVersion(head) !== undefined) {
      if (size > MAX_BOOTSTRAP_SIZE)
        throw new FormatError(`Bootstrap "${path}" is too large (${size} bytes)`);
      // Mapped through the reader's descriptor: its size is what the reader saw when it opened it.
      const map = opts.map === true ? mapFile(reader.fd, size) : null;
      if (map !== null) return { bootstrap: parseBootstrap(map), mapped: true };
      return { bootstrap: parseBootstrap(await reader.read(0, size)) };
    }
    if (size >= 512 && isLikelyInlineMetaBlob(await reader.read(size - 512, 512))) {
      const boot = await extractInlineBootstrap((o, l) => reader.read(o, l), size);
      if (boot === undefined)
        throw new FormatError(`Blob "${path}" carries no inline RAFS metadata (no image.boot section)`);
      const bootstrap = parseBootstrap(boot);
      const name = basename(path);
      const blobId = HEX64.test(name) ? name : await sha256OfFile(path);
      let index = bootstrap.blobs.findIndex((b) => (b.features & BlobFeature.INLINED_FS_META) !== 0);
      if (index < 0 && bootstrap.blobs.length === 1) index = 0;
      if (index < 0)
        throw new FormatError(`Blob "${path}" has inline metadata but no blob in it is marked as inline`);
      bootstrap.setBlobId(index, blobId);
      return { bootstrap, inlineBlob: { index, blobId, path } };
    }
    throw new FormatError(`File "${path}" is neither a RAFS bootstrap nor a data blob with inline metadata`);
  } finally {
    await reader.close();
  }
}
