/**
 * Whether a buffer moves with a message (an ArrayBuffer: listed for transfer) or is shared by
 * both threads (a SharedArrayBuffer). The buffers that go back and forth for every batch are
 * shared: a buffer moved into a thread counts there as new external memory, and V8 answers
 * every few tens of MiB of that with a garbage collection (dozens per build on the main thread).
 */
export function movable(b: ArrayBufferLike): b is ArrayBuffer {
  return !(b instanceof SharedArrayBuffer);
}

/** A buffer of `n` bytes both threads can use without moving it (see `movable`). */
export function sharedBuffer(n: number): Buffer {
  return Buffer.from(new SharedArrayBuffer(n));
}
