import { FormatError } from '../../errors/errors.js';
import { fieldString, need, putString, putU32, putZeros } from './bytes.js';
import { DEVICE_SLOT_SIZE, DEVICE_TABLE_OFFSET } from './superblock.js';

/**
 * EROFS device slot (rafs-format.md 3.4): B slots of 128 bytes at 1408. Slot i describes blob
 * index i, which EROFS calls device id i + 1 (device 0 is the bootstrap itself).
 *
 * | off | type     | field                                            |
 * |-----|----------|--------------------------------------------------|
 * | 0   | 64 bytes | blob id (ASCII, exactly 64 chars for RAFS)       |
 * | 64  | u32      | blocks = blob uncompressed_size / 4096, != 0     |
 * | 68  | u32      | mapped_blkaddr (flat block-device address space) |
 * | 72  | 56 bytes | reserved                                         |
 */

export const BLOB_ID_FIELD_SIZE = 64;

export interface DeviceSlot {
  readonly blobId: string;
  readonly blocks: number;
  readonly mappedBlkaddr: number;
}

export function deviceSlotOffset(index: number): number {
  return DEVICE_TABLE_OFFSET + index * DEVICE_SLOT_SIZE;
}

export function decodeDeviceSlot(buf: Buffer, off: number): DeviceSlot {
  need(buf, off, DEVICE_SLOT_SIZE, 'device slot');
  return {
    blobId: fieldString(buf, off, BLOB_ID_FIELD_SIZE),
    blocks: buf.readUInt32LE(off + 64),
    mappedBlkaddr: buf.readUInt32LE(off + 68),
  };
}

export function encodeDeviceSlot(slot: DeviceSlot, buf: Buffer, off: number): void {
  putString(buf, off, slot.blobId, BLOB_ID_FIELD_SIZE, 'device slot blob id');
  putU32(buf, off + 64, slot.blocks, 'device slot blocks');
  putU32(buf, off + 68, slot.mappedBlkaddr, 'device slot mapped_blkaddr');
  putZeros(buf, off + 72, 56, 'device slot reserved');
}

/** Reader checks of rafs-format.md 3.16 for slot `index` at `off`. */
export function checkDeviceSlot(slot: DeviceSlot, index: number, off: number): void {
  if (slot.blobId.length !== BLOB_ID_FIELD_SIZE) {
    throw new FormatError(
      `Device slot ${index}: blob id "${slot.blobId}" has ${slot.blobId.length} chars, expected ${BLOB_ID_FIELD_SIZE}`,
      off,
    );
  }
  if (slot.blocks === 0) throw new FormatError(`Device slot ${index}: blocks is 0`, off + 64);
}
