/**
 * Buffers for chunk data, kept for reuse. A daemon reading files decodes one chunk after
 * another; a new buffer for each is memory outside V8's heap that only a collection frees, and
 * V8 answers that much outside allocation with a full collection every few dozen megabytes
 * while glibc keeps the freed memory. Reusing buffers keeps both away.
 *
 * Slots come in power-of-two classes from 4 KiB up to the largest slot (the chunk size), so a
 * buffer of n bytes takes at most about 2n. Free slots are kept up to a byte budget shared by
 * all classes (each class may keep one slot beyond it), so an idle daemon holds little.
 */
export class BufferPool {
  /** Bytes of the largest slot. */
  readonly slotSize: number;
  /** Free slots by slot size. */
  readonly #free = new Map<number, Buffer[]>();
  readonly #keepBytes: number;
  #idleBytes = 0;
  /** Slots allocated so far. */
  created = 0;
  /** Takes answered with a slot given back earlier. */
  reused = 0;
  /** Slots given back beyond the budget, let go. */
  dropped = 0;

  /** `keepBytes`: bytes of free slots the pool holds at most, all classes together. */
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
      this.#idleBytes -= cls;
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
    if (list.length === 0 || this.#idleBytes + cls <= this.#keepBytes) {
      list.push(slot);
      this.#idleBytes += cls;
    } else {
      this.dropped++;
      freeNow(slot);
    }
  }

  /** Free slots held now, all classes. */
  get idle(): number {
    let n = 0;
    for (const l of this.#free.values()) n += l.length;
    return n;
  }

  /** Free every slot held now (`freeNow`); returns their bytes. */
  drain(): number {
    const bytes = this.#idleBytes;
    for (const list of this.#free.values()) for (const slot of list.splice(0)) freeNow(slot);
    this.#idleBytes = 0;
    return bytes;
  }

  /** Bytes of the free slots held now. */
  get idleBytes(): number {
    return this.#idleBytes;
  }
}

/** The smallest slot: one page. */
const MIN_SLOT = 4096;

/**
 * Give a slot's memory back now rather than at a later full collection: V8 collects an old
 * array buffer only in a full collection, which external memory triggers only after some 64 MiB
 * more, so dropped slots would pile up to that much. Detaching the buffer (`transfer`, an
 * ArrayBuffer method behind `--harmony-rab-gsab-transfer` in Node 20; the nydusd entry sets it)
 * frees its memory at once; without it the slot is left to the collector.
 */
function freeNow(slot: Buffer): void {
  const ab = slot.buffer as ArrayBuffer & { transfer?: (length: number) => ArrayBuffer };
  if (typeof ab.transfer === 'function' && slot.byteOffset === 0 && ab.byteLength === slot.length)
    ab.transfer(0);
}
