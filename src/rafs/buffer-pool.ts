/**
 * Chunk-sized buffers kept for reuse. A daemon streaming a big file decompresses one chunk
 * (typically 1 MiB) after another; a new buffer for each is memory the garbage collector
 * must find and free, and V8 answers that much outside-heap allocation with a full collection
 * every few dozen megabytes. Reusing a few buffers keeps that work away.
 *
 * Only sizes from a quarter of the slot size up to the slot size are served: smaller ones
 * would waste most of a slot, larger ones are rare (merged reads) and allocated plainly.
 */
export class BufferPool {
  /** Bytes of every pooled buffer. */
  readonly slotSize: number;
  readonly #free: Buffer[] = [];
  readonly #keep: number;
  /** Slots allocated so far. */
  created = 0;
  /** Takes answered with a slot given back earlier. */
  reused = 0;

  /** `keep`: how many free buffers are held at most; the rest are left to the collector. */
  constructor(slotSize: number, keep: number) {
    this.slotSize = slotSize;
    this.#keep = keep;
  }

  /** Whether a buffer of `size` bytes is served from the pool. */
  serves(size: number): boolean {
    return size <= this.slotSize && size >= this.slotSize >> 2;
  }

  /** A slot (slotSize bytes, contents undefined). */
  take(): Buffer {
    const slot = this.#free.pop();
    if (slot !== undefined) {
      this.reused++;
      return slot;
    }
    this.created++;
    return Buffer.allocUnsafeSlow(this.slotSize);
  }

  /** Give a slot back; nothing may use it afterwards. */
  give(slot: Buffer): void {
    if (slot.length === this.slotSize && this.#free.length < this.#keep) this.#free.push(slot);
  }

  /** Free slots held now. */
  get idle(): number {
    return this.#free.length;
  }
}
