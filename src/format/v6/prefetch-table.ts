import { need, putU32 } from './bytes.js';

/**
 * RAFS v6 prefetch table (rafs-format.md 3.6): u32 nids, one per matched prefetch pattern, right
 * after the blob table, no padding. `size / 4` entries; readers stop at the first 0.
 */

export const PREFETCH_ENTRY_SIZE = 4;

export function decodePrefetchTable(buf: Buffer, off: number, size: number): number[] {
  const count = Math.floor(size / PREFETCH_ENTRY_SIZE);
  need(buf, off, count * PREFETCH_ENTRY_SIZE, 'prefetch table');
  const nids: number[] = [];
  for (let i = 0; i < count; i++) {
    const nid = buf.readUInt32LE(off + i * PREFETCH_ENTRY_SIZE);
    if (nid === 0) break;
    nids.push(nid);
  }
  return nids;
}

export function encodePrefetchTable(nids: readonly number[]): Buffer {
  const out = Buffer.alloc(nids.length * PREFETCH_ENTRY_SIZE);
  nids.forEach((nid, i) => putU32(out, i * PREFETCH_ENTRY_SIZE, nid, 'prefetch nid'));
  return out;
}
