import { FormatError } from '../errors/errors.js';

/**
 * PAX extended header records: "<len> <key>=<value>\n", where len counts the whole record in
 * decimal. Keys are handled as latin1 (so raw xattr-name bytes survive); values are raw bytes (GNU tar and the kernel's xattrs need binary
 * values, e.g. `SCHILY.xattr.security.capability`).
 */
export interface PaxRecord {
  key: string;
  value: Buffer;
}

export const PAX_XATTR_PREFIX = 'SCHILY.xattr.';

export function encodePaxRecords(records: readonly PaxRecord[]): Buffer {
  const parts: Buffer[] = [];
  for (const { key, value } of records) {
    const body = Buffer.concat([Buffer.from(` ${key}=`, 'latin1'), value, Buffer.from('\n')]);
    // The length prefix counts its own digits: grow until stable.
    let len = body.length + 1;
    while (String(len).length + body.length !== len) len = String(len).length + body.length;
    parts.push(Buffer.from(String(len), 'ascii'), body);
  }
  return Buffer.concat(parts);
}

/** Upper bound on one PAX header's size; larger ones are refused as malformed. */
export const MAX_PAX_SIZE = 1 << 20;

export function decodePaxRecords(buf: Buffer, at = 0): PaxRecord[] {
  const out: PaxRecord[] = [];
  let pos = 0;
  while (pos < buf.length) {
    if (buf[pos] === 0) break; // trailing NUL padding
    const sp = buf.indexOf(0x20, pos);
    if (sp < 0 || sp - pos > 20) throw new FormatError('Malformed PAX record length', at + pos);
    const len = Number(buf.toString('ascii', pos, sp));
    if (!Number.isInteger(len) || len <= sp - pos + 1 || pos + len > buf.length) {
      throw new FormatError('Malformed PAX record length', at + pos);
    }
    const rec = buf.subarray(sp + 1, pos + len);
    if (rec[rec.length - 1] !== 0x0a)
      throw new FormatError('PAX record does not end with a newline', at + pos);
    const eq = rec.indexOf(0x3d);
    if (eq <= 0) throw new FormatError('PAX record has no key', at + pos);
    out.push({
      key: rec.toString('latin1', 0, eq),
      value: Buffer.from(rec.subarray(eq + 1, rec.length - 1)),
    });
    pos += len;
  }
  return out;
}
