import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BufferPool } from '../../src/storage/buffer-pool.js';

test('BufferPool: power-of-two slots from 4 KiB to the largest, reused, with a bounded free list', () => {
  const pool = new BufferPool(1 << 20, 64 << 10);
  assert.equal(pool.serves(0), false);
  assert.equal(pool.serves(1), true);
  assert.equal(pool.serves((1 << 20) + 1), false);
  assert.equal(pool.take(1).length, 4096);
  assert.equal(pool.take(4097).length, 8192);
  assert.equal(pool.take((1 << 20) - 5).length, 1 << 20);
  assert.equal(pool.created, 3);
  const a = pool.take(5000);
  pool.give(a);
  assert.equal(pool.take(6000), a, 'a slot given back is taken again');
  assert.equal(pool.reused, 1);
  // 64 KiB in all: sixteen 4 KiB slots are kept, and one 1 MiB slot (a class keeps one slot
  // even over the budget).
  for (let i = 0; i < 20; i++) pool.give(Buffer.allocUnsafeSlow(4096));
  for (let i = 0; i < 5; i++) pool.give(Buffer.allocUnsafeSlow(1 << 20));
  assert.equal(pool.idle, 17);
  assert.equal(pool.idleBytes, (64 << 10) + (1 << 20));
  // Over the budget: a slot of a class with free slots is dropped, the first of a class kept.
  pool.take(4096);
  pool.give(Buffer.allocUnsafeSlow(4096));
  pool.give(Buffer.allocUnsafeSlow(8192));
  pool.give(Buffer.allocUnsafeSlow(8192));
  assert.equal(pool.idle, 17);
  assert.equal(pool.idleBytes, (68 << 10) + (1 << 20));
  // A buffer of no class size is not kept.
  pool.give(Buffer.allocUnsafeSlow(5000));
  assert.equal(pool.idle, 17);
  // Drained: every free slot goes, and the next take allocates.
  assert.equal(pool.drain(), (68 << 10) + (1 << 20));
  assert.equal(pool.idle, 0);
  assert.equal(pool.idleBytes, 0);
  const created = pool.created;
  pool.take(4096);
  assert.equal(pool.created, created + 1);
});

test('BufferPool: a largest slot that is not a power of two is its own class', () => {
  const pool = new BufferPool(100_000, 1 << 20);
  assert.equal(pool.take(70_000).length, 100_000);
  assert.equal(pool.take(60_000).length, 65_536);
});
