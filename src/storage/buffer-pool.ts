/**
 * Buffers for chunk data, kept for reuse. A daemon reading files decodes one chunk after
 * another; a new buffer for each is memory outside V8's heap that only a collection frees, and
 * V8 answers that much outside allocation with a full collection every few dozen megabytes
 * while glibc keeps the freed memory. Reusing buffers keeps both away.
 *
 * Slots come in power-of-two classes from 4 KiB up to the largest slot (the chunk size), so a
 * buffer of n bytes takes at most about 2n. Each class keeps a bounded number of free slots.
 */
export class BufferPool {
  /** Bytes of the largest slot. */
  readonly slotSize: number;
  /** Free slots by slot size. */
  readonly #free = new Map<number, Buffer[]>();
  readonly #keepBytes: number;
  /** Slots allocated so far. */
  created = 0;
  /** Takes answered with a slot given back earlier. */
  reused = 0;

  /** `keepBytes`: free slots each class holds at most, in bytes (at least two slots). */
  constructor(slotSize: number, keepBytes: number) {
    this.slotSize = slotSize;
    this.#keepBytes = keepBytes;
  }

  /** Whether a buffer of `size` bytes is served from the pool. */
  serves(size: number): boolean {
    return size > 0 && size <= this.slotSize;
  }

  /** The slot size that holds `size` bytes. */
  #classOf(size: number): number {
    let c = MIN_SLOT;
    while (c < size) c *= 2;
    return Math.min(c, this.slotSize);
  }

  /** A slot of at least `size` bytes (contents undefined); use its prefix. */
  take(size: number): Buffer {
    const cls = this.#classOf(size);
    const slot = this.#free.get(cls)?.pop();
    if (slot !== undefined) {
      this.reused++;
      return slot;
    }
    this.created++;
    return Buffer.allocUnsafeSlow(cls);
  }

  /** Give a slot back; nothing may use it afterwards. */
  give(slot: Buffer): void {
    const cls = slot.length;
    if (cls !== this.#classOf(cls)) return;
    let list = this.#free.get(cls);
    if (list === undefined) {
      list = [];
      this.#free.set(cls, list);
    }
    if (list.length < Math.max(2, Math.floor(this.#keepBytes / cls))) list.push(slot);
  }

  /** Free slots held now, all classes. */
  get idle(): number {
    let n = 0;
    for (const l of this.#free.values()) n += l.length;
    return n;
  }
}

/** The smallest slot: one page. */
const MIN_SLOT = 4096;
