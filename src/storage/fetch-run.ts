import { NydusError } from '../errors/errors.js';
import type { ChunkInfo } from '../format/model.js';

/**
 * The bookkeeping of the blob device's chunk fetching: chunk bytes with their pins, in-flight
 * chunks that readers join, and how a run of chunks is fetched (priority, merging).
 */

/** Upper bound on one merged backend read of an on-demand request. */
export const MAX_MERGED_READ = 4 * 1024 * 1024;

/** Key of a chunk in the in-flight and recent maps. */
export function chunkKey(c: ChunkInfo): string {
  return `${c.blobIndex}:${c.index}:${c.compressedOffset}`;
}

/**
 * A chunk's bytes and whether they were checked against its digest. When the bytes live in a
 * pool slot, the slot goes back to the pool once no reader or cache write holds them (`pins`)
 * and the recent-chunk memory has let them go (`kept`).
 */
export interface Fetched {
  data: Buffer;
  verified: boolean;
  slot: Buffer | undefined;
  pins: number;
  kept: boolean;
}

export function fetched(data: Buffer, verified: boolean, slot?: Buffer): Fetched {
  return { data, verified, slot, pins: 0, kept: false };
}

/** Whether a reader put `data` at the start of `slot` (it may answer with a buffer of its own). */
export function landedIn(data: Buffer | undefined, slot: Buffer): boolean {
  return data !== undefined && data.buffer === slot.buffer && data.byteOffset === slot.byteOffset;
}

/** Priority of the fetches of one run; prefetch runs are low until an on-demand read joins them. */
export interface Priority {
  low: boolean;
  /** Wakes the run from the low-priority gate (set while it waits there). */
  wake: (() => void) | undefined;
}

/** One chunk being fetched: every reader that needs it awaits the same promise. */
export interface Flight {
  readonly promise: Promise<Fetched>;
  readonly resolve: (f: Fetched) => void;
  readonly reject: (e: unknown) => void;
  settled: boolean;
  readonly prio: Priority;
  /** Readers waiting for it: each gets a pin on the bytes when it settles. */
  waiters: number;
  /** The bytes, once settled with them (the flight stays joinable while they are being cached). */
  got: Fetched | undefined;
}

export function newFlight(prio: Priority): Flight {
  let resolve: ((f: Fetched) => void) | undefined;
  let reject: ((e: unknown) => void) | undefined;
  const promise = new Promise<Fetched>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // Every flight is awaited by its claimer; this only keeps an early failure from counting as unhandled.
  promise.catch(() => undefined);
  return { promise, resolve: resolve!, reject: reject!, settled: false, prio, waiters: 0, got: undefined };
}

/** A chunk a run claimed: the run fetches it and settles its flight. */
export interface Claim {
  readonly c: ChunkInfo;
  readonly key: string;
  readonly flight: Flight;
}

export interface RunMode {
  /** Prefetch: wait at the gate while on-demand reads wait for the backend. */
  readonly low: boolean;
  readonly signal: AbortSignal | undefined;
  /** Largest merged backend read. */
  readonly maxMerge: number;
  /** Resolve only once fetched chunks are stored in the cache. */
  readonly awaitStored: boolean;
  /** A read someone asked for: counted in the cache's request statistics. */
  readonly asked: boolean;
}

export const ON_DEMAND: RunMode = {
  low: false,
  signal: undefined,
  maxMerge: MAX_MERGED_READ,
  awaitStored: false,
  asked: true,
};

/** The background fetch of a file's next chunks: on-demand priority, but nobody asked yet. */
export const READ_AHEAD: RunMode = { ...ON_DEMAND, asked: false };

/** Prefetch into the cache: low priority, merged reads of any size, done once stored. */
export function prefetchMode(signal: AbortSignal | undefined): RunMode {
  return { low: true, signal, maxMerge: Number.MAX_SAFE_INTEGER, awaitStored: true, asked: false };
}

export function cancelled(): NydusError {
  return new NydusError('ERR_IO', 'Prefetch was cancelled');
}
