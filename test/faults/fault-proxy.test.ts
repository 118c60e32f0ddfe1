import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Agent, request } from 'undici';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { prng } from '../helpers/prng.js';

/** The fault proxy itself, in front of a plain node:http server: each fault does what it says. */

const BODY = (() => {
  const rnd = prng(5);
  const b = Buffer.alloc(64 * 1024);
  for (let i = 0; i < b.length; i++) b[i] = Math.floor(rnd() * 256);
  return b;
})();

async function withProxy(body: (p: FaultProxy, agent: Agent) => Promise<void>): Promise<void> {
  const upstream: Server = createServer((req, res) => {
    if (req.url === '/blob') {
      res.writeHead(200, { 'content-length': BODY.length, 'x-upstream': 'yes' });
      res.end(req.method === 'HEAD' ? undefined : BODY);
    } else {
      res.writeHead(404, { 'content-length': 0 }).end();
    }
  });
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
  const port = (upstream.address() as AddressInfo).port;
  const proxy = await startFaultProxy({ upstream: `http://127.0.0.1:${port}` });
  const agent = new Agent({ bodyTimeout: 1000, headersTimeout: 1000 });
  try {
    await body(proxy, agent);
  } finally {
    await agent.close();
    await proxy.close();
    await new Promise<void>((resolve) => upstream.close(() => resolve()));
  }
}

async function get(
  p: FaultProxy,
  agent: Agent,
  method: 'GET' | 'HEAD' = 'GET',
): Promise<{ status: number; body: Buffer; headers: Record<string, unknown> }> {
  const r = await request(`${p.url}/blob`, { method, dispatcher: agent });
  return { status: r.statusCode, headers: r.headers, body: Buffer.from(await r.body.arrayBuffer()) };
}

test('fault proxy: relays faithfully without a fault; counts requests; HEAD keeps the length', async () => {
  await withProxy(async (p, agent) => {
    const r = await get(p, agent);
    assert.equal(r.status, 200);
    assert.deepEqual(r.body, BODY);
    assert.equal(r.headers['x-upstream'], 'yes');
    const h = await get(p, agent, 'HEAD');
    assert.equal(h.headers['content-length'], String(BODY.length));
    assert.equal(h.body.length, 0);
    assert.equal(p.counters.requests, 2);
    assert.equal(p.counters.matched, 1, 'only GET matches by default');
    assert.equal(p.counters.injected, 0);
  });
});

test('fault proxy: a 5xx burst answers the next K requests with 503, then relays again; 429 carries Retry-After', async () => {
  await withProxy(async (p, agent) => {
    p.set({ kind: 'status', status: 503, count: 2 });
    assert.equal((await get(p, agent)).status, 503);
    assert.equal((await get(p, agent)).status, 503);
    assert.deepEqual((await get(p, agent)).body, BODY);
    assert.equal(p.counters.byKind.status, 2);
    p.set({ kind: 'status', status: 429, retryAfter: 1, count: 1 });
    const r = await get(p, agent);
    assert.equal(r.status, 429);
    assert.equal(r.headers['retry-after'], '1');
    assert.equal(p.counters.injected, 3);
  });
});

test('fault proxy: a flipped byte changes exactly one byte of the body', async () => {
  await withProxy(async (p, agent) => {
    p.set({ kind: 'flip', at: 100 });
    const r = await get(p, agent);
    assert.equal(r.body.length, BODY.length);
    const diff = [...r.body.keys()].filter((i) => r.body[i] !== BODY[i]);
    assert.deepEqual(diff, [100]);
  });
});

test('fault proxy: reset and truncated bodies fail the client; a stall past its body timeout fails it; a trickle arrives whole', async () => {
  await withProxy(async (p, agent) => {
    for (const kind of ['reset', 'truncate'] as const) {
      p.set({ kind });
      await assert.rejects(get(p, agent), kind);
      assert.equal(p.counters.byKind[kind], 1);
    }
    p.set({ kind: 'stall', ms: 3000 });
    await assert.rejects(
      get(p, agent),
      (e: unknown) => (e as { code?: string }).code === 'UND_ERR_BODY_TIMEOUT',
    );
    p.set({ kind: 'stall', ms: 100 });
    assert.deepEqual((await get(p, agent)).body, BODY);
    p.set({ kind: 'trickle', bytesPerSecond: 512 * 1024 });
    assert.deepEqual((await get(p, agent)).body, BODY);
    assert.ok(p.counters.bytesOut > 0);
  });
});

test('fault proxy: rate and count select the requests hit; set(undefined) switches the fault off at run time', async () => {
  await withProxy(async (p, agent) => {
    p.set({ kind: 'flip', rate: 0.5 });
    let hit = 0;
    for (let i = 0; i < 40; i++) if (!(await get(p, agent)).body.equals(BODY)) hit++;
    assert.equal(hit, p.counters.injected);
    assert.ok(hit > 0 && hit < 40, `${hit} of 40 hit at rate 0.5`);
    p.set({ kind: 'flip', count: 3 });
    const before = p.counters.injected;
    for (let i = 0; i < 5; i++) await get(p, agent);
    assert.equal(p.counters.injected - before, 3);
    p.set({ kind: 'flip' });
    p.set(undefined);
    assert.deepEqual((await get(p, agent)).body, BODY);
    p.resetCounters();
    assert.equal(p.counters.requests, 0);
  });
});
