import { FormatError } from '../errors/errors.js';
import type { Bootstrap } from './model.js';
import { RafsV5Bootstrap, RAFS_V5_MAGIC } from './v5/bootstrap.js';
import { EROFS_MAGIC, EROFS_SUPER_OFFSET, RafsV6Bootstrap } from './v6/bootstrap.js';

/** Which RAFS version a buffer holds, from its magic numbers; undefined when neither. */
export function detectRafsVersion(buf: Buffer): 5 | 6 | undefined {
  if (buf.length >= 8 && buf.readUInt32LE(0) === RAFS_V5_MAGIC) return 5;
  if (buf.length >= EROFS_SUPER_OFFSET + 4 && buf.readUInt32LE(EROFS_SUPER_OFFSET) === EROFS_MAGIC) return 6;
  return undefined;
}

/** Parse a RAFS v5 or v6 bootstrap held in memory. */
export function parseBootstrap(buf: Buffer): Bootstrap {
  switch (detectRafsVersion(buf)) {
    case 5:
      return RafsV5Bootstrap.parse(buf);
    case 6:
      return RafsV6Bootstrap.parse(buf);
    default:
      throw new FormatError(
        `Not a RAFS bootstrap: no RAFS v5 magic at offset 0 nor EROFS magic at offset ${EROFS_SUPER_OFFSET}`,
      );
  }
}
