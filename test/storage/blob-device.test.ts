import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compress } from '../../src/codec/compress.js';
import { digest } from '../../src/codec/digest.js';
import { NydusError } from '../../src/errors/errors.js';
import { ChunkFlag } from '../../src/format/flags.js';
import type { BlobInfo, ChunkInfo } from '../../src/format/model.js';
import { BlobDevice, NOTHING_TO_RELEASE } from '../../src/storage/blob-device.js';
import type { BlobReader, BlobSource } from '../../src/storage/blob-source.js';
import type { CachedBlob, ChunkCache } from '../../src/storage/chunk-cache.js';
import { blobInfo, MemoryBlobSource } from '../helpers/memory-blobs.js';
import { prng } from '../helpers/prng.js';

/**
 * The blob device driven directly, over blobs held in memory: single flight, merged reads,
 * failures that stay with the reads needing them, the prefetch gate, the cache and pinned bytes.
 */

const CHUNK = 64 * 1024;

/** Bytes from a small alphabet, so that they compress. */
function chunkBytes(seed: number): Buffer {
  const rnd = prng(seed);
  const b = Buffer.alloc(CHUNK);
  for (let i = 0; i < CHUNK; i++) b[i] = 0x61 + Math.floor(rnd() * 4);
  return b;
}

interface TestBlob {
  blob: BlobInfo;
  data: Buffer;
  chunks: ChunkInfo[];
  raw: Buffer[];
}

/** A blob of `count` chunks of random bytes, stored zstd-compressed or as they are. */
function makeBlob(count: number, compressed: boolean, seed = 1): TestBlob {
  const raw: Buffer[] = [];
  const stored: Buffer[] = [];
  const chunks: ChunkInfo[] = [];
  let offset = 0;
  for (let i = 0; i < count; i++) {
    const bytes = chunkBytes(seed * 100 + i);
    const packed = compressed ? compress('zstd', bytes) : bytes;
    raw.push(bytes);
    stored.push(packed);
    chunks.push({
      id: digest('blake3', bytes),
      blobIndex: 0,
      flags: compressed ? ChunkFlag.COMPRESSED : 0,
      compressedOffset: offset,
      compressedSize: packed.length,
      uncompressedOffset: i * CHUNK,
      uncompressedSize: CHUNK,
      fileOffset: i * CHUNK,
      index: i,
      crc32: 0,
    });
    offset += packed.length;
  }
  const data = Buffer.concat(stored);
  const blob = blobInfo(0, 'b'.repeat(64), {
    chunkSize: CHUNK,
    chunkCount: count,
    compressor: compressed ? 'zstd' : 'none',
    compressedSize: data.length,
    uncompressedSize: count * CHUNK,
  });
  return { blob, data, chunks, raw };
}

/**
 * A backend over one in-memory blob whose reads can be held back (`hold`) until `releaseAll`,
 * and made to fail while they touch a byte range (`failing`).
 */
class GatedSource implements BlobSource {
  readonly reads: { offset: number; length: number }[] = [];
  hold = false;
  failing: { from: number; to: number } | undefined;
  readonly #data: Buffer;
  #held: (() => void)[] = [];

  constructor(data: Buffer) {
    this.#data = data;
  }

  open(): Promise<BlobReader> {
    const data = this.#data;
    return Promise.resolve({
      size: data.length,
      read: async (offset: number, length: number): Promise<Buffer> => {
        this.reads.push({ offset, length });
        if (this.hold) await new Promise<void>((resolve) => this.#held.push(resolve));
        const f = this.failing;
        if (f !== undefined && offset < f.to && offset + length > f.from)
          throw new NydusError('ERR_IO', `backend read ${offset}+${length} failed`);
        return data.subarray(offset, offset + length);
      },
      close: () => Promise.resolve(),
    });
  }

  /** Reads waiting to be let through. */
  get waiting(): number {
    return this.#held.length;
  }

  releaseAll(): void {
    const held = this.#held;
    this.#held = [];
    for (const r of held) r();
  }
}

/** Let queued promise callbacks and immediates run. */
async function settle(turns = 5): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

/** Wait until `cond` holds, turning the event loop (no clock involved). */
async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 10_000 && !cond(); i++) await new Promise<void>((resolve) => setImmediate(resolve));
  assert.ok(cond(), 'condition never became true');
}

/** A chunk cache in memory: what the device stores and finds again. */
class MemoryChunkCache implements ChunkCache {
  readonly validate = false;
  readonly storesData = true;
  readonly stored = new Map<number, Buffer>();
  requests = 0;
  hits = 0;

  openBlob(): Promise<CachedBlob | undefined> {
    const stored = this.stored;
    return Promise.resolve({
      isReady: (index: number) => stored.has(index),
      canStore: () => true,
      read: (c: ChunkInfo) => Promise.resolve(stored.get(c.index)),
      write: (c: ChunkInfo, data: Buffer) => {
        stored.set(c.index, Buffer.from(data));
        return Promise.resolve();
      },
      invalidate: (c: ChunkInfo) => {
        stored.delete(c.index);
        return Promise.resolve();
      },
    });
  }

  noteRequest(chunks: number, hits: number): void {
    this.requests += chunks;
    this.hits += hits;
  }

  noteBackendRead(): void {}
}

test('concurrent reads of one chunk make one backend read and all get its bytes', async () => {
  const t = makeBlob(4, true);
  const src = new GatedSource(t.data);
  src.hold = true;
  const dev = new BlobDevice([t.blob], src, { chunkSize: CHUNK, recentBytes: 0 });
  const reads = Array.from({ length: 16 }, () => dev.readChunks([t.chunks[1]!]));
  await until(() => src.waiting === 1);
  src.releaseAll();
  const got = await Promise.all(reads);
  for (const g of got) {
    assert.equal(g.chunks.length, 1);
    assert.deepEqual(g.chunks[0]!.data, t.raw[1]);
    g.release();
  }
  assert.equal(src.reads.length, 1);
  assert.equal(dev.backendReads, 1);
  assert.equal(dev.backendBytes, t.chunks[1]!.compressedSize);
  // Settled and not kept anywhere: the next read fetches it again.
  src.hold = false;
  assert.deepEqual(await dev.readChunk(t.chunks[1]!), t.raw[1]);
  assert.equal(src.reads.length, 2);
  await dev.close();
});

test('contiguous chunks are fetched with one merged backend read, a gap starts another', async () => {
  const t = makeBlob(6, true);
  const src = new GatedSource(t.data);
  const dev = new BlobDevice({ blobs: [t.blob] }, src, { chunkSize: CHUNK, recentBytes: 0 });
  const want = [0, 1, 2, 4, 5].map((i) => t.chunks[i]!);
  const got = await dev.readChunks(want, { verify: true });
  assert.deepEqual(
    got.chunks.map((g) => g.data),
    [0, 1, 2, 4, 5].map((i) => t.raw[i]),
  );
  // Nothing pooled: nothing to release.
  assert.equal(got.release, NOTHING_TO_RELEASE);
  const c = t.chunks;
  assert.deepEqual(src.reads, [
    { offset: 0, length: c[3]!.compressedOffset },
    { offset: c[4]!.compressedOffset, length: t.data.length - c[4]!.compressedOffset },
  ]);
  await dev.close();
});

test('a failed backend read fails only the reads needing its chunks, with one shared error; a later read retries', async () => {
  const t = makeBlob(4, false);
  const src = new GatedSource(t.data);
  const c = t.chunks;
  src.failing = { from: c[2]!.compressedOffset, to: c[2]!.compressedOffset + 1 };
  src.hold = true;
  const dev = new BlobDevice([t.blob], src, { chunkSize: CHUNK, recentBytes: 0 });
  const a = dev.readChunks([c[2]!]);
  const b = dev.readChunks([c[0]!]);
  const joined = dev.readChunks([c[2]!]);
  await until(() => src.waiting === 2);
  src.releaseAll();
  const [ra, rb, rj] = await Promise.allSettled([a, b, joined]);
  assert.equal(ra.status, 'rejected');
  assert.equal(rj.status, 'rejected');
  assert.ok(ra.status === 'rejected' && ra.reason instanceof NydusError && ra.reason.code === 'ERR_IO');
  assert.equal(rj.status === 'rejected' ? rj.reason : undefined, ra.reason, 'the very same error');
  assert.ok(rb.status === 'fulfilled');
  assert.deepEqual(rb.value.chunks[0]!.data, t.raw[0]);
  assert.equal(src.reads.length, 2);
  // The backend is back: the failed chunk is fetched again.
  src.hold = false;
  src.failing = undefined;
  assert.deepEqual(await dev.readChunk(c[2]!), t.raw[2]);
  assert.equal(src.reads.length, 3);
  await dev.close();
});

test('when several chunks of a read fail, the first failure in chunk order is reported', async () => {
  const t = makeBlob(4, false);
  const c = t.chunks;
  // Chunk 0 comes back corrupt, chunk 2 cannot be fetched; chunk 1 is left out so they are two backend reads.
  const data = Buffer.from(t.data);
  data[c[0]!.compressedOffset + 7] = data[c[0]!.compressedOffset + 7]! ^ 1;
  const src = new GatedSource(data);
  src.failing = { from: c[2]!.compressedOffset, to: c[2]!.compressedOffset + 1 };
  const dev = new BlobDevice([t.blob], src, { chunkSize: CHUNK, recentBytes: 0 });
  await assert.rejects(dev.readChunks([c[0]!, c[2]!], { verify: true }), (e: unknown) => {
    assert.ok(e instanceof NydusError);
    assert.equal(e.code, 'ERR_DIGEST');
    assert.match(e.message, new RegExp(`Chunk 0 of blob ${t.blob.blobId}`));
    return true;
  });
  await assert.rejects(dev.readChunks([c[2]!, c[0]!], { verify: true }), { code: 'ERR_IO' });
  await dev.close();
});

test('prefetch waits while an on-demand read is waiting for the backend, unless an on-demand read needs its chunk', async () => {
  const t = makeBlob(6, true);
  const c = t.chunks;
  const src = new GatedSource(t.data);
  src.hold = true;
  const dev = new BlobDevice([t.blob], src, { chunkSize: CHUNK, recentBytes: 0 });
  const demand = dev.readChunks([c[0]!]);
  await until(() => src.waiting === 1);
  const prefetch = dev.prefetchChunks([c[2]!, c[3]!]);
  await settle();
  assert.equal(src.reads.length, 1, 'prefetch holds back while the on-demand read waits');
  src.releaseAll();
  (await demand).release();
  await until(() => src.waiting === 1);
  assert.deepEqual(src.reads[1], {
    offset: c[2]!.compressedOffset,
    length: c[4]!.compressedOffset - c[2]!.compressedOffset,
  });
  src.releaseAll();
  await prefetch;

  // A prefetch waiting at the gate is woken when an on-demand read needs one of its chunks.
  const demand2 = dev.readChunks([c[0]!]);
  await until(() => src.waiting === 1);
  const prefetch2 = dev.prefetchChunks([c[5]!]);
  await settle();
  assert.equal(src.reads.length, 3);
  const joining = dev.readChunks([c[5]!]);
  await until(() => src.waiting === 2);
  assert.deepEqual(src.reads[3], { offset: c[5]!.compressedOffset, length: c[5]!.compressedSize });
  src.releaseAll();
  const [d2, j] = await Promise.all([demand2, joining, prefetch2]);
  assert.deepEqual(j.chunks[0]!.data, t.raw[5]);
  d2.release();
  j.release();
  assert.equal(src.reads.length, 4);
  await dev.close();
});

test('prefetch stops at the gate when its signal aborts', async () => {
  const t = makeBlob(3, false);
  const src = new GatedSource(t.data);
  src.hold = true;
  const dev = new BlobDevice([t.blob], src, { chunkSize: CHUNK });
  const demand = dev.readChunks([t.chunks[0]!]);
  await until(() => src.waiting === 1);
  const ac = new AbortController();
  const prefetch = dev.prefetchChunks([t.chunks[2]!], ac.signal);
  await settle();
  ac.abort();
  await assert.rejects(prefetch, /Prefetch was cancelled/);
  src.releaseAll();
  (await demand).release();
  assert.equal(src.reads.length, 1);
  await dev.close();
});

test('fetched chunks are stored in the cache and later served from it with no backend read', async () => {
  const t = makeBlob(4, true);
  const src = new MemoryBlobSource([[t.blob.blobId, t.data]]);
  const cache = new MemoryChunkCache();
  const dev = new BlobDevice([t.blob], src, { chunkSize: CHUNK, cache, recentBytes: 0 });
  assert.equal(await dev.isChunkCached(t.chunks[1]!), false);
  (await dev.readChunks(t.chunks.slice(0, 2))).release();
  await dev.prefetchChunks(t.chunks.slice(2));
  assert.equal(src.reads, 2);
  await dev.close();
  for (const c of t.chunks) assert.equal(await dev.isChunkCached(c), true);

  const again = new BlobDevice([t.blob], src, { chunkSize: CHUNK, cache, recentBytes: 0 });
  const got = await again.readChunks(t.chunks, { verify: true });
  assert.deepEqual(
    got.chunks.map((g) => g.data),
    t.raw,
  );
  got.release();
  assert.equal(src.reads, 2, 'all from the cache');
  assert.equal(again.backendReads, 0);
  assert.equal(cache.requests, 2 + 4);
  assert.equal(cache.hits, 4);
  await again.close();
});

test('with reused buffers, chunk bytes stay pinned until released, then go back to the pool', async () => {
  const t = makeBlob(4, true);
  const src = new MemoryBlobSource([[t.blob.blobId, t.data]]);
  const dev = new BlobDevice([t.blob], src, { chunkSize: CHUNK, reuseBuffers: true, recentBytes: 0 });
  const a = await dev.readChunks(t.chunks);
  assert.notEqual(a.release, NOTHING_TO_RELEASE);
  const idleBefore = dev.bufferPool!.idle;
  // Another read of other bytes while the first is held must not take its buffers.
  const copy = await dev.readChunk(t.chunks[0]!);
  assert.deepEqual(
    a.chunks.map((g) => g.data),
    t.raw,
  );
  assert.deepEqual(copy, t.raw[0]);
  a.release();
  a.release(); // a second release changes nothing
  assert.ok(dev.bufferPool!.idle >= idleBefore + 4, `idle slots ${dev.bufferPool!.idle}`);
  const b = await dev.readChunks(t.chunks);
  assert.deepEqual(
    b.chunks.map((g) => g.data),
    t.raw,
  );
  b.release();
  assert.ok(dev.bufferPool!.reused >= 4);
  await dev.close();
});

test('chunk records the blob cannot hold are refused', async () => {
  const t = makeBlob(2, false);
  const dev = new BlobDevice([t.blob], new MemoryBlobSource([[t.blob.blobId, t.data]]), { chunkSize: CHUNK });
  const past = { ...t.chunks[1]!, compressedOffset: t.data.length - 10 };
  await assert.rejects(dev.readChunks([past]), /points past the end of blob/);
  await assert.rejects(dev.readChunks([{ ...past, blobIndex: 3 }]), /blob index 3, which does not exist/);
  await assert.rejects(
    dev.prefetchChunks([t.chunks[0]!, { ...t.chunks[1]!, blobIndex: 1 }]),
    /mixes chunks of different blobs/,
  );
  await dev.close();
});

/** A backend over one in-memory blob that also reads at once (as a local file in the page cache does) while `now`. */
class NowSource extends GatedSource {
  now = true;
  nowReads = 0;
  readonly #bytes: Buffer;

  constructor(data: Buffer) {
    super(data);
    this.#bytes = data;
  }

  override async open(): Promise<BlobReader> {
    const r = await super.open();
    return {
      ...r,
      readNow: (offset: number, length: number, into?: Buffer): Buffer | undefined => {
        if (!this.now || offset + length > this.#bytes.length) return undefined;
        this.nowReads++;
        const out =
          into !== undefined && into.length >= length ? into.subarray(0, length) : Buffer.alloc(length);
        this.#bytes.copy(out, 0, offset, offset + length);
        return out;
      },
    };
  }
}

test('readChunkNow serves a read at once from a reader that reads without waiting, as readChunks would', async () => {
  for (const compressed of [true, false]) {
    const t = makeBlob(6, compressed);
    const src = new NowSource(t.data);
    const dev = new BlobDevice([t.blob], src, { chunkSize: CHUNK, reuseBuffers: true });
    // The reader is not open yet: nothing can be served at once.
    assert.equal(dev.readChunkNow(t.chunks[0]!), undefined);
    const first = await dev.readChunks([t.chunks[5]!]);
    first.release();
    const got = dev.readChunkNow(t.chunks[1]!, { verify: true });
    assert.ok(got !== undefined);
    assert.deepEqual(
      got.chunks.map((g) => g.data),
      [t.raw[1]],
    );
    // Read at once, counted like any backend read.
    assert.equal(src.nowReads, 1);
    assert.equal(dev.backendReads, 2);
    // A second reader of the pinned chunk shares it.
    const shared = dev.readChunkNow(t.chunks[1]!);
    assert.equal(shared?.chunks[0]!.data, got.chunks[0]!.data);
    shared?.release();
    got.release();
    // Now in the recent memory: served again with no backend read, and readChunks finds it too.
    const again = dev.readChunkNow(t.chunks[1]!, { verify: true });
    assert.deepEqual(again?.chunks[0]!.data, t.raw[1]);
    again?.release();
    (await dev.readChunks([t.chunks[1]!])).release();
    assert.equal(src.nowReads, 1);
    assert.equal(src.reads.length, 1);
    await dev.close();
  }
});

test('readChunkNow leaves to readChunks what it cannot serve at once, and every failure', async () => {
  for (const compressed of [true, false]) {
    const t = makeBlob(4, compressed);
    const src = new NowSource(t.data);
    const dev = new BlobDevice([t.blob], src, { chunkSize: CHUNK, reuseBuffers: true, recentBytes: 0 });
    (await dev.readChunks([t.chunks[0]!])).release();
    const idle = dev.bufferPool!.idle;
    // Bytes not there without waiting.
    src.now = false;
    assert.equal(dev.readChunkNow(t.chunks[1]!), undefined);
    src.now = true;
    // A chunk in flight is joined by readChunks, not read twice.
    src.hold = true;
    const pending = dev.readChunks([t.chunks[2]!]);
    await until(() => src.waiting === 1);
    assert.equal(dev.readChunkNow(t.chunks[2]!), undefined);
    src.releaseAll();
    (await pending).release();
    src.hold = false;
    // A corrupt chunk: nothing at once, and readChunks words the failure.
    const bad = { ...t.chunks[3]!, id: Buffer.alloc(32, 7) };
    assert.equal(dev.readChunkNow(bad, { verify: true }), undefined);
    await assert.rejects(dev.readChunks([bad], { verify: true }), /has digest/);
    // A chunk record past the end of the blob, the same.
    const past = { ...t.chunks[1]!, compressedOffset: t.data.length - 10 };
    assert.equal(dev.readChunkNow(past), undefined);
    await assert.rejects(dev.readChunks([past]), /points past the end of blob/);
    // Buffers taken on the way went back to the pool, and only reads made were counted.
    assert.ok(dev.bufferPool!.idle >= idle, `idle slots ${dev.bufferPool!.idle} < ${idle}`);
    assert.equal(dev.backendReads, 2 + 1);
    await dev.close();
  }
});

test('readChunkNow is not used with a cache that stores chunks', async () => {
  const t = makeBlob(2, true);
  const dev = new BlobDevice([t.blob], new NowSource(t.data), {
    chunkSize: CHUNK,
    cache: new MemoryChunkCache(),
  });
  (await dev.readChunks([t.chunks[0]!])).release();
  assert.equal(dev.readChunkNow(t.chunks[1]!), undefined);
  await dev.close();
});

test('readChunkNow leaves a chunk that would decode more than 2 MiB here to readChunks', async () => {
  const big = Buffer.alloc((2 << 20) + 4096, 0x61);
  const packed = compress('zstd', big);
  const c: ChunkInfo = {
    id: digest('blake3', big),
    blobIndex: 0,
    flags: ChunkFlag.COMPRESSED,
    compressedOffset: 0,
    compressedSize: packed.length,
    uncompressedOffset: 0,
    uncompressedSize: big.length,
    fileOffset: 0,
    index: 0,
    crc32: 0,
  };
  const blob = blobInfo(0, 'b'.repeat(64), {
    chunkSize: 4 << 20,
    chunkCount: 1,
    compressor: 'zstd',
    compressedSize: packed.length,
    uncompressedSize: big.length,
  });
  const src = new NowSource(packed);
  const dev = new BlobDevice([blob], src, { chunkSize: 4 << 20, recentBytes: 0 });
  (await dev.readChunks([c])).release();
  assert.equal(dev.readChunkNow(c), undefined);
  assert.equal(src.nowReads, 0);
  const got = await dev.readChunks([c], { verify: true });
  assert.ok(got.chunks[0]!.data.equals(big));
  await dev.close();
});

test('readChunkNow of the last read of a chunk does not keep it in the recent memory', async () => {
  const t = makeBlob(3, true);
  const src = new NowSource(t.data);
  const dev = new BlobDevice([t.blob], src, { chunkSize: CHUNK, reuseBuffers: true });
  (await dev.readChunks([t.chunks[2]!])).release();
  assert.equal(dev.memory.recentChunks, 1);
  // A first part of chunk 0: kept for the reads that follow.
  const part = dev.readChunkNow(t.chunks[0]!);
  assert.deepEqual(part?.chunks[0]!.data, t.raw[0]);
  part?.release();
  assert.equal(dev.memory.recentChunks, 2);
  // Its last part: served from the memory, which lets it go; the bytes stay valid while pinned.
  const idle = dev.bufferPool!.idle;
  const rest = dev.readChunkNow(t.chunks[0]!, {}, true);
  assert.equal(dev.memory.recentChunks, 1);
  assert.equal(dev.memory.recentBytes, CHUNK);
  assert.equal(src.nowReads, 1);
  // A chunk read whole at once is not kept at all (and takes a slot other than the pinned one).
  const whole = dev.readChunkNow(t.chunks[1]!, { verify: true }, true);
  assert.deepEqual(whole?.chunks[0]!.data, t.raw[1]);
  assert.deepEqual(rest?.chunks[0]!.data, t.raw[0]);
  whole?.release();
  rest?.release();
  assert.ok(dev.bufferPool!.idle > idle, 'the slots went back to the pool');
  assert.equal(dev.memory.recentChunks, 1);
  assert.equal(src.nowReads, 2);
  assert.equal(dev.backendReads, 3);
  await dev.close();
});

test('done lets chunks go from the recent memory; pinned bytes stay valid until released', async () => {
  const t = makeBlob(3, true);
  const dev = new BlobDevice([t.blob], new GatedSource(t.data), { chunkSize: CHUNK, reuseBuffers: true });
  const held = await dev.readChunks([t.chunks[0]!]);
  assert.equal(dev.memory.recentChunks, 1);
  dev.done([t.chunks[0]!, t.chunks[1]!]);
  assert.equal(dev.memory.recentChunks, 0);
  assert.equal(dev.memory.recentBytes, 0);
  // Other chunks take slots meanwhile: not the one still pinned.
  const other = await dev.readChunks([t.chunks[1]!, t.chunks[2]!]);
  assert.deepEqual(held.chunks[0]!.data, t.raw[0]);
  held.release();
  other.release();
  // Read again: fetched again.
  const reads = dev.backendReads;
  (await dev.readChunks([t.chunks[0]!])).release();
  assert.equal(dev.backendReads, reads + 1);
  await dev.close();
});

test('releaseIdle lets go of the recent chunks and the free pool buffers; bytes still pinned stay valid', async () => {
  const t = makeBlob(3, true);
  const dev = new BlobDevice([t.blob], new GatedSource(t.data), { chunkSize: CHUNK, reuseBuffers: true });
  assert.equal(dev.releaseIdle(), 0, 'nothing held yet');
  const uses = dev.uses;
  (await dev.readChunks([t.chunks[0]!, t.chunks[1]!])).release();
  const held = await dev.readChunks([t.chunks[2]!]);
  assert.equal(dev.uses, uses + 2, 'each read counts once');
  assert.equal(dev.memory.recentChunks, 3);
  assert.ok(dev.releaseIdle() >= 3 * CHUNK);
  assert.equal(dev.memory.recentChunks, 0);
  assert.equal(dev.memory.recentBytes, 0);
  assert.equal(dev.bufferPool!.idle, 0, 'no free buffer kept');
  assert.equal(dev.bufferPool!.idleBytes, 0);
  // The pinned chunk's bytes are untouched; once released, its slot waits in the pool again.
  assert.deepEqual(held.chunks[0]!.data, t.raw[2]);
  held.release();
  assert.equal(dev.bufferPool!.idle, 1);
  // Read again: fetched again, same bytes.
  const reads = dev.backendReads;
  const again = await dev.readChunks([t.chunks[0]!]);
  assert.deepEqual(again.chunks[0]!.data, t.raw[0]);
  again.release();
  assert.equal(dev.backendReads, reads + 1);
  await dev.close();
});
